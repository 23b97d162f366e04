"""Stage ``train``: one headline bridge per generator and seed (params ``train``; DVC ``matrix``).

``python -m clipbridge.stages.train NAME SEED`` trains on ``NAME``'s train split with
``train.seed = SEED``. Outputs: ``data/bridge/<name>/seed<seed>.pt`` (DVC-cached,
``{kind, state_dict, init_kwargs, params}``) and ``results/train/<name>/seed<seed>.csv``
(committed; a DVC plot of train / val loss per step).

Several processes: ``torchrun --nproc_per_node=N -m clipbridge.stages.train NAME SEED`` trains
the same global batch with DDP (see clipbridge.distributed); rank 0 alone writes.
"""

from __future__ import annotations

import dataclasses

from clipbridge import config, distributed, paths, registry
from clipbridge.bridge.train import train
from clipbridge.io import save_torch, seed_everything, write_csv
from clipbridge.stages import load_split, predict_ws, profile_lpips, run


def curve_file(generator: str, seed: int):
    return paths.RESULTS / "train" / generator / f"seed{seed}.csv"


def train_and_save(p: config.Params, generator: str, cfg: config.Train, out, curve_out, desc: str, device):
    """Train one bridge with ``cfg`` on ``generator``'s faces on ``device`` (this rank's, inside a
    :func:`clipbridge.distributed.session`); rank 0 writes it and its curve. Returns (G, bridge)."""
    seed_everything(cfg.seed)
    G = registry.load_generator(paths.generator_file(generator)).to(device)
    lpips = profile_lpips(p).to(device) if cfg.loss_lpips > 0 else None
    bridge, curve = train(G, load_split(generator, "train"), load_split(generator, "val"), cfg, device,
                          lpips, cfg.batch_for(generator), predict_ws(p, generator, cfg.predict_groups), desc)
    if distributed.is_main():
        save_torch({"kind": "bridge", "state_dict": bridge.cpu().state_dict(), "init_kwargs": bridge.init_kwargs,
                    "params": dataclasses.asdict(cfg), "generator": generator}, out)
        write_csv(curve_out, curve)
    return G, bridge


def main(p: config.Params, generator: str, seed: str) -> None:
    cfg = dataclasses.replace(p.train, seed=int(seed))
    with distributed.session(p.device) as device:   # no-op unless launched by torchrun
        train_and_save(p, generator, cfg, paths.bridge_file(generator, cfg.seed), curve_file(generator, cfg.seed),
                       f"train bridge {generator} seed {seed}", device)


if __name__ == "__main__":
    run(main)
