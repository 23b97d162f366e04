"""Distillation speed and recipe comparison on this machine's CPU.

    PYTHONPATH=src .venv/bin/python benchmarks/distill.py                 # ms/step of a few recipes
    PYTHONPATH=src .venv/bin/python benchmarks/distill.py --compare 3     # + 3-minute training runs

``--compare MINUTES`` trains every recipe of :data:`RECIPES` from scratch for that much wall
time (``time_budget_seconds``) and prints steps done and held-out PSNR (64 z) at the end. Wall
time is sensitive to other load on the machine: compare rows of one invocation only.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import torch

from clipbridge.config import DistillConfig
from clipbridge.offline.distill import build_student, distill_loss, heldout_psnr, heldout_z, train, \
    teacher_images, training_z
from clipbridge.models.dcgan import from_package

BASE = DistillConfig()
RECIPES = {
    "default": {},
    "batch 16": dict(batch=16),
    "batch 32": dict(batch=32),
    "wider (base 4096)": dict(channel_base=4096),
    "no multiscale": dict(loss_multiscale=0.0),
    "lr 2e-3": dict(lr=2e-3),
    "lr 2e-3, batch 16": dict(lr=2e-3, batch=16),
    "naive (map 8x lr 0.01, L2, b8)": dict(mapping_layers=8, mapping_lr_multiplier=0.01, loss_multiscale=0.0,
                                          loss_l1=0.0, loss_l2=1.0, batch=8, beta1=0.9, beta2=0.999, lr=2e-3),
}
SPEED = {
    "default": {},
    "default, fused modconv": dict(fused_modconv=True),
    "default, 2 threads": dict(threads=2),
    "batch 16": dict(batch=16),
    "batch 32": dict(batch=32),
    "wider (base 4096)": dict(channel_base=4096),
    "w_dim 512, base 8192, max 256": dict(w_dim=512, channel_base=8192, channel_max=256),
}


def step_ms(cfg: DistillConfig, teacher, reps: int = 6) -> float:
    """Median wall ms of one training step (teacher forward + student forward/backward + Adam)."""
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    G = build_student(cfg)
    opt = torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    times = []
    for step in range(reps + 2):
        t0 = time.perf_counter()
        z = training_z(cfg, step)
        loss, _ = distill_loss(cfg, G, teacher_images(teacher, z, cfg.img_resolution), z)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    torch.set_num_threads(threads)
    times = sorted(times[2:])
    return 1000 * times[len(times) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--compare", type=float, default=0.0, metavar="MINUTES",
                    help="also train each recipe for MINUTES of wall time and report held-out PSNR")
    ap.add_argument("--recipes", nargs="*", default=None, help="subset of recipe names for --compare")
    ap.add_argument("--threads", type=int, default=BASE.threads or torch.get_num_threads(),
                    help="torch threads for the ms/step table (--compare uses each recipe's own)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    teacher = from_package()[0]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if not args.compare:
        for name, kw in SPEED.items():
            cfg = dataclasses.replace(BASE, **kw)
            n = sum(p.numel() for p in build_student(cfg).parameters())
            ms = step_ms(cfg, teacher)
            print(f"{name:36s} {n / 1e6:5.2f}M params  batch {cfg.batch:3d}  {ms:7.0f} ms/step  "
                  f"{ms / cfg.batch:5.1f} ms/image", flush=True)
        return
    z = heldout_z(64, BASE.seed)
    print(f"{'recipe':36s} {'steps':>6s} {'ms/step':>8s} {'PSNR dB':>8s}  (after {args.compare:g} min)")
    for name in args.recipes or list(RECIPES):
        cfg = dataclasses.replace(BASE, **RECIPES[name], time_budget_seconds=60 * args.compare,
                                  eval_every=0, log_every=10**9, steps=BASE.steps)
        with tempfile.TemporaryDirectory() as tmp:
            G, state = train(cfg, Path(tmp) / "ckpt.pt", resume=False, teacher=teacher)
        ms = 1000 * state["seconds"] / max(state["step"], 1)
        print(f"{name:36s} {state['step']:6d} {ms:8.0f} {heldout_psnr(G, teacher, z):8.2f}", flush=True)


if __name__ == "__main__":
    main()
