"""Stage ``ablate``: one ablation cell and seed (params ``ablate``; DVC ``matrix`` over cells x seeds).

``python -m clipbridge.stages.ablate CELL SEED`` trains a bridge with the headline recipe
(``train``) changed as the cell says, for ``ablate.steps`` steps with ``train.seed = SEED``,
on the cell's generator, and scores it on that generator's test split (image metrics).
Output (committed): ``results/ablate/<cell>/seed<seed>.csv``, the image metrics of every test
face in split order (paired comparisons; a DVC plot, so the stage stays in DVC's run-cache, which
queued sweeps need); the ``ablations`` stage aggregates the cells into tables.

Several processes: ``torchrun --nproc_per_node=N -m clipbridge.stages.ablate CELL SEED`` trains
the bridge data-parallel (see clipbridge.distributed); rank 0 alone scores it and writes.
"""

from __future__ import annotations

import torch

from clipbridge import config, distributed, paths, registry
from clipbridge.bridge import invert
from clipbridge.bridge.evaluate import Scorer, synthesize
from clipbridge.errors import UnknownNameError
from clipbridge.io import from_uint8, write_csv
from clipbridge.stages import load_split, profile_metric, run
from clipbridge.stages.train import train_and_save


def result_file(cell: str, seed: int):
    return paths.RESULTS / "ablate" / cell / f"seed{seed}.csv"


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
    with torch.no_grad():
        recon = synthesize(G, invert.bridge_ws(G, encoder, bridge, images), p.evaluate.batch)
    write_csv(result_file(cell_name, cfg.seed),
              Scorer(images, profile_metric(p), p.evaluate.batch, attributes=False)(recon))


if __name__ == "__main__":
    run(main)
