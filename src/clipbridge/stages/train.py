"""Stage ``train``: train the bridge on the dataset's train split (params section ``train``).

Outputs: ``data/bridge/bridge.pt`` (DVC-cached, ``{kind, state_dict, init_kwargs, params}``)
and ``results/train/curve.csv`` (committed; a DVC plot of train / val loss per step).
"""

from __future__ import annotations

import dataclasses

import torch

from clipbridge import config, paths, registry
from clipbridge.io import save_torch, seed_everything, write_csv
from clipbridge.stages import run
from clipbridge.train_bridge import train

BRIDGE = paths.DATA / "bridge" / "bridge.pt"


def load_split(split: str) -> dict:
    path = paths.DATASET / f"{split}.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: dataset split missing (run `dvc repro dataset`)")
    return torch.load(path, map_location="cpu", weights_only=True)


def main(p: config.Params) -> None:
    seed_everything(p.train.seed)
    G = registry.load_generator(paths.MODELS / "generator.pt").to(p.device)
    bridge, curve = train(G, load_split("train"), load_split("val"), p.train, p.device,
                          p.evaluate.lpips_seed, random_lpips=p.profile == "offline")
    save_torch({"kind": "bridge", "state_dict": bridge.cpu().state_dict(), "init_kwargs": bridge.init_kwargs,
                          "params": dataclasses.asdict(p.train)}, BRIDGE)
    write_csv(paths.RESULTS / "train" / "curve.csv", curve)


if __name__ == "__main__":
    run(main)
