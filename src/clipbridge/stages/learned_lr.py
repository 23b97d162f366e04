"""Stage ``learned_lr``: the learned encoder's learning rate, chosen on the validation faces.

``python -m clipbridge.stages.learned_lr GENERATOR`` (DVC ``foreach`` over ``encoders.generators``)
trains the learned encoder of the encoder study for ``encoders.learned.select_steps`` steps at each
rate of ``encoders.learned.lrs`` (seed ``encoders.seeds[0]``, the dataset's training faces) and keeps
the rate of the lowest final validation MSE. A rate too high can push the DCGAN's input into its
dead zone for good, so the choice is measured, not assumed. Output (committed):
``results/encoders/runs/<generator>/learned_lr.json`` = ``{lr, candidates: [{lr, val_mse}], steps, seed}``.
"""

from __future__ import annotations

import dataclasses

import torch

from clipbridge import config, paths, registry
from clipbridge.bridge.study import learned_model
from clipbridge.bridge.train import target_latents, train
from clipbridge.io import from_uint8, seed_everything, write_json
from clipbridge.stages import load_split, profile_lpips, run
from clipbridge.stages.study import lr_file


def main(p: config.Params, generator: str) -> None:
    cfg = p.encoders
    seed = cfg.seeds[0]
    G = registry.load_generator(paths.generator_file(generator)).to(p.device)
    data = {s: load_split(generator, s) for s in ("train", "val")}
    images = {s: from_uint8(d["images"]) for s, d in data.items()}
    latents = target_latents(G, data["train"], p.train.target)
    lpips = profile_lpips(p).to(p.device) if p.train.loss_lpips > 0 else None
    candidates = []
    for lr in cfg.learned.lrs:
        seed_everything(seed)
        recipe = dataclasses.replace(p.train, seed=seed, lr=lr, steps=cfg.learned.select_steps,
                                     log_every=cfg.learned.select_steps)
        torch.manual_seed(seed)
        model = learned_model(G, recipe, cfg, latents, images["train"][:256])
        _, curve = train(G, {**data["train"], "emb": images["train"]}, {**data["val"], "emb": images["val"]},
                         recipe, p.device, lpips, p.train.batch_for(generator), None,
                         f"learned encoder {generator} lr {lr:g}", model=model)
        candidates.append({"lr": lr, "val_mse": curve[-1]["val_rgb"]})
    best = min(candidates, key=lambda c: c["val_mse"])
    write_json(lr_file(generator), {"lr": best["lr"], "candidates": candidates,
                                    "steps": cfg.learned.select_steps, "seed": seed})


if __name__ == "__main__":
    run(main)
