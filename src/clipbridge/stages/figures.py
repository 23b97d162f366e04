"""Stage ``figures``: render every paper figure from the pipeline's outputs into results/figures/."""

from __future__ import annotations

import torch

from clipbridge import config, figures, paths
from clipbridge.io import read_json
from clipbridge.stages import run
from clipbridge.stages.evaluate import SAMPLES


def caption_suffix(prov: dict) -> str:
    """Which generator and encoder a figure rests on, stand-ins and placeholders named."""
    return f"{prov['generator']['name']} generator, {prov['encoder']['label']}"


def main(p: config.Params) -> None:
    figures.setup_style()
    prov = read_json(paths.RESULTS / "provenance.json")
    figures.loss_curve(figures.read_csv(paths.RESULTS / "train" / "curve.csv"), paths.FIGURES / "loss_curve.pdf",
                       caption_suffix(prov))
    figures.clip_curve(figures.read_csv(paths.RESULTS / "clip" / "curve.csv"), paths.FIGURES / "clip_curve.pdf",
                       "offline CLIP (locked MiniLM text tower, ViT image tower)")
    samples = torch.load(SAMPLES, map_location="cpu", weights_only=True)
    figures.reconstruction_grid(samples, paths.FIGURES / "reconstructions.pdf", p.figures.n_grid, caption_suffix(prov))


if __name__ == "__main__":
    run(main)
