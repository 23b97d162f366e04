"""Diagnostic (printed, not a test): the first training steps of a bridge, step by step.

Replays what ``clipbridge.bridge.train.train`` does for a given width and seed on a generator's
training split (the same initialization and the same batches), printing the batch loss and the
bridge's gradient norm at chosen steps, and how many units of each hidden ReLU fire for some of
the first 1,024 training embeddings at initialization. A run whose loss jumps up in its first
steps and whose gradient then vanishes has left the generator where its output no longer responds
to the bridge: the ``ablations`` stage calls such a seed stalled. Needs ``dvc repro dataset@NAME``.

    python benchmarks/bridge_first_steps.py --generator dcgan64 --width 4096 1024 --seeds 0 1
"""

from __future__ import annotations

import argparse
import dataclasses

import torch

from clipbridge import config, paths, registry
from clipbridge.io import from_uint8, seed_everything
from clipbridge.stages import load_split
from clipbridge.bridge.train import batch_loss, build_bridge, target_latents

SHOW = (1, 2, 3, 5, 10, 25, 50)


def alive_fractions(bridge, emb: torch.Tensor) -> list[float]:
    """Per hidden ReLU: the share of its units positive for at least one row of ``emb``."""
    out, h = [], emb
    with torch.no_grad():
        for layer in bridge.net:
            h = layer(h)
            if isinstance(layer, torch.nn.ReLU):
                out.append((h > 0).any(0).float().mean().item())
    return out


def replay(G, data: dict, cfg: config.Train, batch: int) -> None:
    seed_everything(cfg.seed)
    torch.manual_seed(cfg.seed)                       # as train_bridge.train
    latents = target_latents(G, data, cfg.target)
    bridge = build_bridge(G, data["emb"].shape[1], cfg, latents, emb_sample=data["emb"][:1024])
    alive = ", ".join(f"{a:.3f}" for a in alive_fractions(bridge, data["emb"][:1024]))
    print(f"width {cfg.width} seed {cfg.seed}: ReLU units alive at init {alive}")
    opt = torch.optim.Adam(bridge.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    for step in range(1, max(SHOW) + 1):
        idx = torch.randint(data["emb"].shape[0], (batch,), generator=gen)
        terms = batch_loss(G, bridge, data["emb"][idx], from_uint8(data["images"][idx]), latents[idx], cfg, None)
        opt.zero_grad(set_to_none=True)
        terms["total"].backward()
        grad = torch.sqrt(sum(q.grad.pow(2).sum() for q in bridge.parameters() if q.grad is not None))
        opt.step()
        if step in SHOW:
            print(f"  step {step:3d}  loss {terms['total'].item():.4f}  grad norm {grad.item():.3g}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--generator", default="dcgan64")
    ap.add_argument("--width", type=int, nargs="+", default=[4096, 1024])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = ap.parse_args()
    p = config.load()
    if p.train.loss_lpips > 0:
        raise SystemExit("params.yaml: train.loss_lpips > 0; this replay covers the RGB (+ latent) loss only")
    G = registry.load_generator(paths.generator_file(args.generator))
    data = load_split(args.generator, "train")
    for width in args.width:
        for seed in args.seeds:
            replay(G, data, dataclasses.replace(p.train, width=width, seed=seed), p.train.batch_for(args.generator))


if __name__ == "__main__":
    main()
