"""Seconds per training step of the offline CLIP, with and without the cached text features.

    PYTHONPATH=src python benchmarks/clip_train.py [--batches 64 128] [--steps 3] [--slip 0]
        [--precisions fp32 bf16]

One step = what :func:`clipbridge.offline.clip_train.train` does per step (forward, ClipLoss,
backward, AdamW). "cached": the locked MiniLM's pooled caption features are looked up, as
``train`` does; "uncached": each step also tokenizes its captions and runs the locked MiniLM.
``--precisions``: the forward's numerics (:func:`clipbridge.offline.clip_model.autocast`; bf16 on CPU
also uses the plain attention kernel). Prints one line per (batch, precision, mode): median
seconds per step over ``--steps`` timed steps (after one warm-up step) and images per second.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time

import torch

from clipbridge.offline import clip_model
from clipbridge.offline.captions import ATTRIBUTES, caption


def step_seconds(model, head, optimizer, images, texts, cache, *, slip_weight: float,
                 steps: int, precision: str) -> float:
    """Median wall seconds of ``steps`` optimizer steps (after one warm-up step).

    images: [B, 3, 64, 64] in [-1, 1]; texts: B captions; cache: [B, 384] pooled features of
    ``texts`` or None to recompute them every step.
    """
    generator = torch.Generator().manual_seed(0)
    times = []
    for _ in range(steps + 1):
        started = time.perf_counter()
        pooled = cache if cache is not None else clip_model.pooled_text(model, texts)
        with clip_model.autocast(images.device, precision):
            losses = clip_model.training_losses(model, head, images, pooled, slip_weight=slip_weight,
                                        aug=clip_model.Augment(), generator=generator)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        optimizer.step()
        if images.is_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per setting")
    parser.add_argument("--slip", type=float, default=0.0, help="slip_weight (0 = CLIP only)")
    parser.add_argument("--precisions", nargs="+", default=["fp32"], choices=clip_model.PRECISIONS)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    cfg = clip_model.OfflineClipConfig()
    torch.manual_seed(0)
    model = clip_model.build_model(cfg).to(args.device)
    model.visual.train()
    head = clip_model.slip_head(cfg).to(args.device)
    trainable = [p for p in (*model.parameters(), *head.parameters()) if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    print(f"config {cfg}")
    print(f"trainable parameters {sum(p.numel() for p in model.parameters() if p.requires_grad):,}"
          f" (+ SLIP head {sum(p.numel() for p in head.parameters()):,}); device {args.device},"
          f" torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f}")
    rng = random.Random(0)
    for batch in args.batches:
        images = torch.rand(batch, 3, cfg.image_size, cfg.image_size, device=args.device) * 2 - 1
        texts = [caption({k: rng.choice(v) for k, v in ATTRIBUTES.items()}, rng)
                 for _ in range(batch)]
        cache = clip_model.pooled_text(model, texts)
        for precision in args.precisions:
            for mode in ("cached", "uncached"):
                sec = step_seconds(model, head, optimizer, images, texts,
                                   cache if mode == "cached" else None, slip_weight=args.slip,
                                   steps=args.steps, precision=precision)
                print(f"batch {batch:4d}  {precision}  text {mode:8s}  slip {args.slip:g}  "
                      f"{sec:7.3f} s/step  {batch / sec:8.1f} images/s", flush=True)


if __name__ == "__main__":
    main()
