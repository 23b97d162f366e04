"""Stage ``clip_data``: generated faces, measured by the annotators, captioned for the offline CLIP.

For each split (train, test) the faces are drawn equally from ``clip_data.generators`` with
split-specific seeds, annotated (dlib landmarks, colour statistics, age and gender models), and
captioned with ``captions_per_image`` varied captions. Outputs: ``data/clip/{train,test}.pt``
(DVC-cached: uint8 images, latents, per-face categorical attributes, captions, generator name)
and ``results/clip/captions.json`` (committed: how often each attribute value occurs, and
examples), which the paper reports.
"""

from __future__ import annotations

from collections import Counter

import torch
from tqdm import tqdm

from clipbridge import config, paths, registry
from clipbridge.io import from_uint8, save_torch, seed_everything, to_uint8, write_json
from clipbridge.offline.annotate import annotate, categorical
from clipbridge.offline.captions import ATTRIBUTES, captions_for
from clipbridge.stages import run

CLIP_DATA = paths.DATA / "clip"


@torch.no_grad()
def captioned_faces(generators: dict, n: int, seed: int, batch: int, per_image: int, desc: str) -> dict:
    """``n`` faces split evenly over ``generators`` (name -> G), annotated and captioned."""
    names = list(generators)
    counts = [n // len(names) + (i < n % len(names)) for i in range(len(names))]
    images, zs, attrs, gens = [], [], [], []
    for k, (name, count) in enumerate(zip(names, counts)):
        G = generators[name]
        g = torch.Generator().manual_seed(seed * 1000 + k)
        z = torch.randn(count, G.z_dim, generator=g)
        for i in tqdm(range(0, count, batch), desc=f"{desc} {name}", unit="batch"):
            img = to_uint8(G(z[i:i + batch], noise_mode="const"))
            images.append(img)
            attrs += [categorical(a) for a in annotate(from_uint8(img))]
        zs.append(z)
        gens += [name] * count
    caps = [captions_for(a, per_image, seed=seed * 1_000_003 + i) for i, a in enumerate(attrs)]
    return {"images": torch.cat(images), "z": torch.cat(zs), "attrs": attrs, "captions": caps, "generator": gens}


def caption_stats(data: dict) -> dict:
    stats = {}
    for attr in ATTRIBUTES:
        c = Counter(a[attr] if a[attr] is not None else "unknown" for a in data["attrs"])
        stats[attr] = dict(sorted(c.items()))
    return {"n_faces": len(data["attrs"]), "by_generator": dict(Counter(data["generator"])),
            "attributes": stats, "examples": [c[0] for c in data["captions"][:8]]}


def main(p: config.Params) -> None:
    c = p.clip_data
    seed_everything(c.seed)
    generators = {name: registry.build_generator(name, p.models.mirror)[0] for name in c.generators}
    stats = {}
    for k, (split, n) in enumerate((("train", c.n_train), ("test", c.n_test))):
        data = captioned_faces(generators, n, c.seed * 10 + k + 1, c.batch, c.captions_per_image, split)
        save_torch(data, CLIP_DATA / f"{split}.pt")
        stats[split] = caption_stats(data)
    write_json(paths.RESULTS / "clip" / "captions.json", stats)


if __name__ == "__main__":
    run(main)
