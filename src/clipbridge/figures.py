"""Paper figures: one function per figure, one style, vector PDF, colour-blind-safe palette.

Each function takes already-computed data and an output path; the paper's LaTeX names the
function that made each figure in a comment next to its ``\\includegraphics``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402
import torch  # noqa: E402

from clipbridge.io import atomic_path  # noqa: E402

PALETTE = sns.color_palette("colorblind")
METHOD_LABELS = {"input": "input", "mean_latent": "mean latent", "bridge": "bridge"}


def setup_style() -> None:
    sns.set_theme(context="paper", style="whitegrid", palette=PALETTE, font_scale=0.9)
    plt.rcParams.update({"pdf.fonttype": 42, "figure.dpi": 150, "savefig.bbox": "tight"})


def save(fig, path: Path) -> None:
    """Save as PDF without a creation date, so the same data gives the same bytes."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="pdf", metadata={"CreationDate": None, "ModDate": None})
    plt.close(fig)


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def loss_curve(curve: list[dict], out: Path, title: str) -> None:
    """Bridge training curve: train RGB MSE and held-out RGB MSE per step (log scale)."""
    fig, ax = plt.subplots(figsize=(3.4, 2.3))
    steps = [r["step"] for r in curve]
    ax.plot(steps, [r["train_rgb"] for r in curve], label="train RGB MSE", color=PALETTE[0])
    ax.plot(steps, [r["val_rgb"] for r in curve], label="held-out RGB MSE", color=PALETTE[1])
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("MSE on [-1, 1]")
    ax.set_title(title, fontsize=8)
    ax.legend(frameon=False)
    save(fig, out)


def clip_curve(curve: list[dict], out: Path, title: str) -> None:
    """Offline CLIP training: total, contrastive and SLIP losses per step."""
    fig, ax = plt.subplots(figsize=(3.4, 2.3))
    steps = [r["step"] for r in curve]
    for i, (key, label) in enumerate((("loss", "total"), ("clip_loss", "CLIP (contrastive)"), ("slip_loss", "SLIP (SimCLR)"))):
        if key in curve[0]:
            ax.plot(steps, [r[key] for r in curve], label=label, color=PALETTE[i])
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title, fontsize=8)
    ax.legend(frameon=False)
    save(fig, out)


def image_grid(rows: dict[str, torch.Tensor], out: Path, n: int, title: str | None = None) -> None:
    """One labelled row per entry of ``rows`` (label -> images ``[N, 3, H, W]`` in [-1, 1]), ``n`` columns."""
    n = min([n] + [imgs.shape[0] for imgs in rows.values()])
    fig, axes = plt.subplots(len(rows), n, figsize=(0.8 * n, 0.85 * len(rows)), squeeze=False)
    for r, (label, imgs) in enumerate(rows.items()):
        imgs = ((imgs[:n].clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy()
        for c in range(n):
            ax = axes[r][c]
            ax.imshow(imgs[c], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            if c == 0:
                ax.set_ylabel(label, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=8)
    fig.subplots_adjust(wspace=0.03, hspace=0.03)
    save(fig, out)


def reconstruction_grid(samples: dict[str, torch.Tensor], out: Path, n: int, title: str) -> None:
    """Rows: input and each method's reconstruction of the same held-out faces (columns)."""
    keys = [k for k in METHOD_LABELS if k in samples] + [k for k in samples if k not in METHOD_LABELS]
    image_grid({METHOD_LABELS.get(k, k): samples[k] for k in keys}, out, n, title)
