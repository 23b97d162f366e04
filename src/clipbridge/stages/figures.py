"""Stage ``figures``: render the bridge study's figures from the pipeline's outputs into results/figures/bridge/.

Per generator: its training curve, its reconstructions and its speed/quality plane; across
cells: the depth and target-space ablations. (The layer-group figures come from the ``edits``
stage, the student's grid from ``distill``.)
"""

from __future__ import annotations

import torch

from clipbridge import config, figures, paths
from clipbridge.io import read_json
from clipbridge.stages import run
from clipbridge.stages.evaluate import out_dir, samples_file
from clipbridge.stages.models import load_provenance
from clipbridge.stages.train import curve_file


def caption_suffix(prov: dict, generator: str) -> str:
    """Which generator and encoder a figure rests on, stand-ins and placeholders named."""
    return f"{generator} generator, {prov['encoder']['label']}"


OUT = paths.FIGURES / "bridge"


def main(p: config.Params) -> None:
    figures.setup_style()
    prov = load_provenance(p)
    figures.clip_curve(figures.read_csv(paths.RESULTS / "clip" / "curve.csv"), OUT / "clip_curve.pdf",
                       "offline CLIP (locked MiniLM text tower, ViT image tower)")
    for g in p.generators:
        suffix = caption_suffix(prov, g)
        figures.loss_curve(figures.read_csv(curve_file(g, p.train.seeds[0])), OUT / f"loss_curve_{g}.pdf",
                           suffix)
        samples = torch.load(samples_file(g), map_location="cpu", weights_only=True)
        figures.reconstruction_grid(samples, OUT / f"reconstructions_{g}.pdf", p.figures.n_grid, suffix)
        ev = read_json(out_dir(g) / "metrics.json")
        figures.speed_quality(figures.read_csv(out_dir(g) / "speed_quality.csv"), ev["subset"],
                              OUT / f"speed_quality_{g}.pdf", suffix)
    rows = figures.read_csv(paths.RESULTS / "ablations" / "table.csv")
    figures.ablation_axis(rows, "depth", OUT / "ablation_depth.pdf", prov["lpips"])
    figures.ablation_axis(rows, "target", OUT / "ablation_target.pdf", prov["lpips"])


if __name__ == "__main__":
    run(main)
