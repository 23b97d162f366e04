"""Cost of the encoder study on this machine: embedding speed per encoder, seconds per training step
per kind of run, and the study's projected CPU minutes at ``params.yaml``'s settings.

Embeds ``--faces`` seeded faces of the generator with each encoder of ``encoders.encoders``, then
times ``--steps`` training steps (after 3 warm-up steps) of: the bridge on fixed embeddings, the
learned encoder on fixed images, and the bridge on fresh faces embedded on the fly by the headline
encoder. Projection: every run at ``encoders.max_steps`` (an upper bound: runs stop when their
validation curve flattens). About a minute on 2 CPU cores.

    PYTHONPATH=src python benchmarks/encoder_study.py
    PYTHONPATH=src python benchmarks/encoder_study.py --generator dcgan64 --steps 20 --faces 128
"""

import argparse
import dataclasses
import time

import torch

from clipbridge import config, registry
from clipbridge.bridge.study import FreshFaces, learned_model
from clipbridge.bridge.train import build_bridge, target_latents, train
from clipbridge.io import from_uint8, to_uint8
from clipbridge.models.encoders import build_encoder, embed


@torch.no_grad()
def faces(G, n: int, seed: int) -> dict:
    z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(seed))
    ws = G.mapping(z, None)
    return {"z": z, "ws": ws, "images": to_uint8(G.synthesis(ws, noise_mode="const"))}


def seconds_per_step(G, model, data: dict, recipe, batch: int, steps: int, next_batch=None) -> float:
    """Mean wall seconds of ``steps`` training steps (3 warm-up steps not counted)."""
    run = dataclasses.replace(recipe, steps=3, log_every=3)
    train(G, data, data, run, "cpu", None, batch, model=model, next_batch=next_batch, desc="warm-up")
    run = dataclasses.replace(recipe, steps=steps, log_every=steps)
    start = time.perf_counter()
    train(G, data, {k: v[:16] for k, v in data.items()}, run, "cpu", None, batch, model=model,
          next_batch=next_batch, desc="timed")
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", default=None, help="default: the first of encoders.generators")
    parser.add_argument("--faces", type=int, default=256)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    p = config.load()
    cfg = p.encoders
    g = args.generator or cfg.generators[0]
    G, _ = registry.build_generator(g, p.models.mirror)
    data = faces(G, args.faces, 0)
    batch = p.train.batch_for(g)
    latents = target_latents(G, data, p.train.target)
    print(f"generator {g}, {args.faces} faces, batch {batch}, {torch.get_num_threads()} torch threads")
    print(f"{'encoder':<22}{'dim':>6}{'images/s':>10}{'s/step':>9}")
    step_s = {}
    for name in cfg.encoders:
        enc = build_encoder(name, seed=p.models.seed, mirror=p.models.mirror)
        start = time.perf_counter()
        emb = embed(enc, data["images"], p.dataset.batch, name)
        rate = len(emb) / (time.perf_counter() - start)
        torch.manual_seed(0)
        bridge = build_bridge(G, emb.shape[1], p.train, latents, None, emb_sample=emb)
        step_s[name] = seconds_per_step(G, bridge, {**data, "emb": emb}, p.train, batch, args.steps)
        print(f"{name:<22}{emb.shape[1]:>6}{rate:>10.1f}{step_s[name]:>9.3f}")
    images = from_uint8(data["images"])
    torch.manual_seed(0)
    cnn = learned_model(G, p.train, cfg, latents, images[:64])
    step_s["learned"] = seconds_per_step(G, cnn, {**data, "emb": images}, p.train, batch, args.steps)
    print(f"{'learned (CNN)':<22}{'':>6}{'':>10}{step_s['learned']:>9.3f}")
    head = cfg.encoders[0]
    enc = build_encoder(head, seed=p.models.seed, mirror=p.models.mirror)
    emb = embed(enc, data["images"], p.dataset.batch, head)
    torch.manual_seed(0)
    bridge = build_bridge(G, emb.shape[1], p.train, latents, None, emb_sample=emb)
    fresh = FreshFaces(G, enc, p.train.target, 1, "cpu")
    step_s[f"fresh-{head}"] = seconds_per_step(G, bridge, {**data, "emb": emb}, p.train, batch, args.steps, fresh)
    print(f"{'fresh-' + head:<22}{'':>6}{'':>10}{step_s['fresh-' + head]:>9.3f}")
    runs = {name: len(cfg.seeds) for name in list(cfg.encoders) + ["learned"]}
    runs.update({f"fresh-{r}": len(cfg.fresh_seeds) for r in cfg.fresh})
    minutes = sum(n * cfg.max_steps * step_s.get(r, step_s["learned"] if "learned" in r else step_s[head]) / 60
                  for r, n in runs.items())
    lr_minutes = len(cfg.learned.lrs) * cfg.learned.select_steps * step_s["learned"] / 60
    print(f"projected upper bound at max_steps {cfg.max_steps}: {minutes:.0f} min of training "
          f"(+ {lr_minutes:.1f} min learning-rate selection), {sum(runs.values())} runs")


if __name__ == "__main__":
    main()
