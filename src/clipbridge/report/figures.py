"""Paper figures: one function per figure, one style, vector PDF, colour-blind-safe palette.

Each function takes already-computed data and an output path; the paper's LaTeX names the
function that made each figure in a comment next to its ``\\includegraphics``.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402
import torch  # noqa: E402

from clipbridge.io import atomic_path  # noqa: E402

PALETTE = sns.color_palette("colorblind")
METHOD_LABELS = {"input": "input", "mean_latent": "mean latent", "mean_image": "mean image",
                 "bridge": "bridge", "bridge_refine": "bridge + refine", "opt_short": "optimization, matched steps",
                 "opt_w": "optimization ({w})", "opt_wplus": "optimization (W+)"}


def method_label(method: str, w_label: str = "W") -> str:
    """A method's name in figures and tables; ``w_label`` names the one-vector space ('z' on the
    DCGAN, whose only latent is z; 'W' on a StyleGAN)."""
    return METHOD_LABELS.get(method, method).format(w=w_label)


def setup_style() -> None:
    sns.set_theme(context="paper", style="whitegrid", palette=PALETTE, font_scale=0.9)
    plt.rcParams.update({"pdf.fonttype": 42, "figure.dpi": 150, "savefig.bbox": "tight"})


def save(fig, path: Path) -> None:
    """Save as PDF without a creation date, so the same data gives the same bytes."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="pdf", metadata={"CreationDate": None, "ModDate": None},
                    bbox_inches="tight", pad_inches=0.02)  # tight: row labels of image grids are not clipped
    plt.close(fig)


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
    """Offline CLIP training: total, contrastive and SLIP losses per step, and the held-out
    contrastive loss where the curve has it (``clip.eval_every``)."""
    fig, ax = plt.subplots(figsize=(3.4, 2.3))
    steps = [r["step"] for r in curve]
    for i, (key, label) in enumerate((("loss", "total"), ("clip_loss", "CLIP (contrastive)"), ("slip_loss", "SLIP (SimCLR)"))):
        if key in curve[0]:
            ax.plot(steps, [r[key] for r in curve], label=label, color=PALETTE[i])
    held_out = [r for r in curve if isinstance(r.get("val_clip_loss"), float)]
    if held_out:
        ax.plot([r["step"] for r in held_out], [r["val_clip_loss"] for r in held_out], "o-",
                markersize=2, label="CLIP, held-out faces", color=PALETTE[3])
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


def reconstruction_grid(samples: dict[str, torch.Tensor], out: Path, n: int, title: str, w_label: str = "W") -> None:
    """Rows: input and each method's reconstruction of the same held-out faces (columns)."""
    keys = [k for k in METHOD_LABELS if k in samples] + [k for k in samples if k not in METHOD_LABELS]
    image_grid({method_label(k, w_label): samples[k] for k in keys}, out, n, title)



def clip_retrieval(rows: list[dict], out: Path, title: str) -> None:
    """Text -> image retrieval: per query, the top-k test faces, each marked by whether its
    measured attribute has the queried value.

    ``rows``: ``{query, images [k, 3, H, W] in [-1, 1], match [k] bool, base_rate}``; the row
    label gives the query, its precision@k and the share of test faces with that value (chance).
    """
    k = max(r["images"].shape[0] for r in rows)
    fig, axes = plt.subplots(len(rows), k, figsize=(0.8 * k + 2.2, 0.85 * len(rows)), squeeze=False)
    for r, row in enumerate(rows):
        imgs = ((row["images"].clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy()
        for c in range(k):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            if c >= len(imgs):
                ax.axis("off")
                continue
            ax.imshow(imgs[c], interpolation="nearest")
            hit = bool(row["match"][c])
            for spine in ax.spines.values():       # matches: thick blue frame; misses: thin grey
                spine.set_visible(True)
                spine.set_color(PALETTE[0] if hit else "0.6")
                spine.set_linewidth(2.5 if hit else 0.5)
        precision = sum(bool(m) for m in row["match"]) / len(row["match"])
        axes[r][0].set_ylabel(f"{row['query']}\nP@{len(row['match'])} {precision:.2f} "
                              f"(chance {row['base_rate']:.2f})", fontsize=6, rotation=0, ha="right", va="center")
    fig.suptitle(title, fontsize=8)
    fig.subplots_adjust(wspace=0.05, hspace=0.08)
    save(fig, out)


def speed_quality(curve: list[dict], subset: dict[str, dict], out: Path, title: str, w_label: str = "W") -> None:
    """PSNR against ms per image (log): optimization runs as curves, one-shot methods as points.

    ``curve``: rows ``{method, step, ms_per_image, psnr}``; ``subset``: method -> summary on the
    same faces (the points).
    """
    fig, ax = plt.subplots(figsize=(3.6, 2.5))
    methods = list(dict.fromkeys(r["method"] for r in curve))
    for i, m in enumerate(methods):
        pts = sorted((r["ms_per_image"], r["psnr"]) for r in curve if r["method"] == m and r["ms_per_image"] > 0)
        ax.plot([x for x, _ in pts], [y for _, y in pts], marker=".", color=PALETTE[2 + i], label=method_label(m, w_label))
    for i, m in enumerate(("mean_latent", "mean_image", "bridge")):
        if m in subset:
            ax.scatter([subset[m]["ms_per_image"]], [subset[m]["psnr"]], color=PALETTE[i], marker="o", zorder=3,
                       label=method_label(m, w_label))
    ax.set_xscale("log")
    ax.set_xlabel("ms per image (log)")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(title, fontsize=8)
    ax.legend(frameon=False, fontsize=6)
    save(fig, out)


def ablation_axis(rows: list[dict], axis: str, out: Path, lpips_label: str) -> None:
    """PSNR and LPIPS (mean +- std over seeds) of the ablation cells of one axis, per generator.

    ``rows``: results/ablations/table.csv rows; a cell ``<axis>-<value>`` belongs to ``axis``,
    the reference cells (``report-*``) are drawn as the dashed line of their generator.
    """
    mine = [r for r in rows if r["cell"].split("-")[0] == axis]
    fig, axes = plt.subplots(1, 2, figsize=(5.0, 2.2))
    for ax, key, label in ((axes[0], "psnr", "PSNR (dB)"), (axes[1], "lpips", lpips_label)):
        names = [r["cell"][len(axis) + 1:] for r in mine]
        ax.errorbar(range(len(mine)), [r[key] for r in mine], yerr=[r[f"{key}_std"] for r in mine],
                    fmt="o", color=PALETTE[0], capsize=3)
        for j, ref in enumerate(r for r in rows if r["cell"].startswith("report-")
                                and r["generator"] in {m["generator"] for m in mine}):
            ax.axhline(ref[key], ls="--", color=PALETTE[1 + j], lw=1, label=f"report recipe ({ref['generator']})")
        ax.set_xticks(range(len(mine)), names)
        ax.set_xlabel(axis)
        ax.set_ylabel(label)
    axes[0].legend(frameon=False, fontsize=6)
    fig.tight_layout()
    save(fig, out)

# --- layer-group study (src/clipbridge/edits/study.py, stage edits) ---------------------------------

def edits_strip(strip: torch.Tensor, groups: list[str], steps: list[int], step: float, out: Path,
                title: str | None = None) -> None:
    """The report's layer-group experiment: ``strip [G, S, 3, H, W]`` in [-1, 1], one row per
    group (labelled ``groups``), one column per step of ``steps`` (offset ``k * step``)."""
    n_rows, n_cols = strip.shape[:2]
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(0.9 * n_cols + 0.4, 0.9 * n_rows + 0.3), squeeze=False)
    imgs = ((strip.clamp(-1, 1) + 1) / 2).permute(0, 1, 3, 4, 2).numpy()
    for r in range(n_rows):
        for c in range(n_cols):
            ax = axes[r][c]
            ax.imshow(imgs[r, c], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            if c == 0:
                ax.set_ylabel(groups[r], fontsize=7)
            if r == 0:
                ax.set_title(f"step {steps[c]} ({steps[c] * step:.2f})", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=8)
    fig.subplots_adjust(wspace=0.03, hspace=0.03)
    save(fig, out)


def edits_heatmap(values: list[list[float]], groups: list[str], measures: list[str], out: Path, title: str,
                  colorbar: str, annot: list[list[str]] | None = None) -> None:
    """Group x measure heatmap (rows ``groups``, columns ``measures``), cividis (colour-blind-safe);
    ``annot`` = the text of each cell (None = the values to 2 decimals). NaN cells are blank."""
    import numpy as np

    data = np.asarray(values, dtype=float)
    labels = annot if annot is not None else [[f"{v:.2f}" if v == v else "" for v in row] for row in data]
    fig, ax = plt.subplots(figsize=(0.55 * len(measures) + 1.6, 0.38 * len(groups) + 1.3))
    sns.heatmap(data, ax=ax, cmap="cividis", vmin=0, vmax=1, annot=np.asarray(labels, dtype=object), fmt="",
                annot_kws={"fontsize": 6}, xticklabels=measures, yticklabels=groups,
                cbar_kws={"label": colorbar, "shrink": 0.8}, linewidths=0.5, linecolor="white")
    ax.set_xticklabels(ax.get_xticklabels(), rotation=40, ha="right", fontsize=7)
    ax.set_yticklabels(ax.get_yticklabels(), rotation=0, fontsize=7)
    ax.set_xlabel("")
    ax.set_ylabel("group (coarse to fine)", fontsize=7)
    ax.set_title(title, fontsize=8)
    save(fig, out)


def edits_magnitude(curves: dict[str, dict[str, list[tuple[float, float, float, float]]]], labels: dict[str, str],
                    out: Path, title: str, xlabel: str) -> None:
    """Magnitude curves: one panel per measure (``curves[measure][group] = [(magnitude, mean, lo,
    hi), ...]``, panel title ``labels[measure]``), one line per group with its 95% CI band.

    x ticks at the measured magnitudes (at most 5 of them, thinned evenly), the x label once below
    the panels, the legend below it."""
    measures = list(curves)
    mags = sorted({p[0] for pts in curves[measures[0]].values() for p in pts}) if measures else []
    ticks = mags[::-(-len(mags) // 5)] if mags else []
    n_cols = min(4, len(measures))
    n_rows = -(-len(measures) // n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.75 * n_cols, 1.45 * n_rows + 0.3), squeeze=False)
    for k, measure in enumerate(measures):
        ax = axes[k // n_cols][k % n_cols]
        for i, (group, pts) in enumerate(curves[measure].items()):
            x, y, lo, hi = zip(*pts)
            ax.plot(x, y, marker="o", markersize=2.5, color=PALETTE[i % len(PALETTE)], label=group, linewidth=1)
            ax.fill_between(x, lo, hi, color=PALETTE[i % len(PALETTE)], alpha=0.2, linewidth=0)
        ax.set_title(labels.get(measure, measure), fontsize=7)
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.tick_params(labelsize=6)
    for k in range(len(measures), n_rows * n_cols):
        axes[k // n_cols][k % n_cols].axis("off")
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.suptitle(title, fontsize=8)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.text(0.5, 0.07, xlabel, ha="center", va="top", fontsize=6)
    fig.legend(handles, names, loc="upper center", ncol=len(names), frameon=False, fontsize=7,
               bbox_to_anchor=(0.5, 0.045))
    save(fig, out)
