"""Stage ``ablate``: one ablation cell and seed (params ``ablate``; DVC ``matrix`` over cells x seeds).

``python -m clipbridge.stages.ablate CELL SEED`` trains a bridge with the headline recipe
(``train``) changed as the cell says, for ``ablate.steps`` steps with ``train.seed = SEED``,
on the cell's generator, and scores it on that generator's test split (image metrics).
Output (committed): ``results/ablate/<cell>/seed<seed>.json`` (summary and the per-face PSNR, for
paired comparisons); the ``ablations`` stage aggregates the cells into tables.

Several processes: ``torchrun --nproc_per_node=N -m clipbridge.stages.ablate CELL SEED`` trains
the bridge data-parallel (see clipbridge.distributed); rank 0 alone scores it and writes.
"""

from __future__ import annotations

import dataclasses

from clipbridge import config, distributed, paths, registry
from clipbridge.bridge import invert
from clipbridge.bridge.evaluate import Scorer, summarize, timed
from clipbridge.errors import UnknownNameError
from clipbridge.io import finite, from_uint8, write_json
from clipbridge.stages import load_split, profile_metric, run
from clipbridge.stages.train import train_and_save


def result_file(cell: str, seed: int):
    return paths.RESULTS / "ablate" / cell / f"seed{seed}.json"


def main(p: config.Params, cell_name: str, seed: str) -> None:
    if cell_name not in p.ablate.cells:
        raise UnknownNameError(f"params.yaml: unknown ablation cell '{cell_name}'; available: {sorted(p.ablate.cells)}")
    cell = p.ablate.cells[cell_name]
    cfg = cell.train_config(p.train, p.ablate.steps, int(seed))
    work = paths.ablate_dir(cell_name, seed)
    with distributed.session(p.device) as device:   # no-op unless launched by torchrun
        G, bridge = train_and_save(p, cell.generator, cfg, work / "bridge.pt", work / "curve.csv",
                                   f"ablate {cell_name} seed {seed}", device)
    if not distributed.is_main():
        return
    bridge = bridge.to(p.device)
    encoder = registry.load_encoder(paths.ENCODER).to(p.device)
    images = from_uint8(load_split(cell.generator, "test")["images"]).to(p.device)
    _, recon, ms = timed(G, lambda x: invert.bridge_ws(G, encoder, bridge, x), images, p.evaluate.batch)
    rows = Scorer(images, profile_metric(p), p.evaluate.batch, attributes=False)(recon)
    write_json(result_file(cell_name, cfg.seed), finite({
        "cell": cell_name, "generator": cell.generator, "seed": cfg.seed, "steps": cfg.steps,
        "config": dataclasses.asdict(cfg), "ms_per_image": ms, **summarize(rows),
        "per_image_psnr": [r["psnr"] for r in rows],  # test faces in split order: paired comparisons
    }))


if __name__ == "__main__":
    run(main)
