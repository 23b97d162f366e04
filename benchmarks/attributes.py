"""Speed and detection rates of the face attribute models, and the annotation distributions.

On ``--n`` DCGAN faces (64 px, upscaled to 256 for detection) prints ms/image of
:class:`AttributeModel`, :class:`Landmarks`, :class:`Identity` (each including dlib detection)
and full :func:`annotate`, and their detection rates. On ``--calib`` faces prints the measured
quantiles and the :func:`categorical` distributions that the thresholds of
``clipbridge.offline.annotate`` were chosen from.

Usage (from the repository root):  PYTHONPATH=src python benchmarks/attributes.py [--n 64] [--calib 200]
"""

from __future__ import annotations

import argparse
import math
import time
from collections import Counter

import numpy as np
import torch

from clipbridge.offline.annotate import VOCABULARY, annotate, categorical, lightness
from clipbridge.models.attributes import AttributeModel, Identity, Landmarks
from clipbridge.models.dcgan import from_package


def dcgan_faces(n: int, seed: int) -> torch.Tensor:
    """``n`` DCGAN faces ``[n, 3, 64, 64]`` in [-1, 1] from ``z ~ N(0, I)`` seeded by ``seed``."""
    G, _ = from_package()
    z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return G(z)


def timed(fn, images: torch.Tensor) -> tuple[object, float]:
    """(result, ms per image) of ``fn(images)`` after a warm-up call on one image."""
    fn(images[:1])
    start = time.perf_counter()
    out = fn(images)
    return out, (time.perf_counter() - start) * 1000 / images.shape[0]


def speed(n: int, seed: int) -> None:
    images = dcgan_faces(n, seed)
    print(f"speed on {n} DCGAN faces 64 px (upscaled to 256), torch threads {torch.get_num_threads()}:")
    for name, fn, found in [
        ("AttributeModel", AttributeModel(), lambda r: r.face_found),
        ("Landmarks", Landmarks(), lambda r: r.face_found),
        ("Identity", Identity(), lambda r: ~np.isnan(r[:, 0])),
        ("annotate", annotate, lambda r: np.array([a.face_found for a in r])),
    ]:
        result, ms = timed(fn, images)
        print(f"  {name:15s} {ms:7.1f} ms/image   face found {found(result).mean():.1%}")


def _quantiles(name: str, values: list[float]) -> None:
    v = np.array([x for x in values if not math.isnan(x)])
    q = np.percentile(v, [5, 25, 50, 75, 95])
    print(f"  {name:15s} n={len(v):3d}  p5 {q[0]:7.3f}  p25 {q[1]:7.3f}  median {q[2]:7.3f}  "
          f"p75 {q[3]:7.3f}  p95 {q[4]:7.3f}")


def distributions(n: int, seed: int) -> None:
    notes = annotate(dcgan_faces(n, seed))
    found = [a for a in notes if a.face_found]
    print(f"\nmeasurements on {n} DCGAN faces (seed {seed}); face found in {len(found)}:")
    _quantiles("yaw (deg)", [a.yaw for a in found])
    _quantiles("pitch (deg)", [a.pitch for a in found])
    _quantiles("mouth openness", [a.mouth_openness for a in found])
    _quantiles("skin L*", [lightness(a.skin_rgb) for a in found])
    _quantiles("brightness", [a.brightness for a in notes])
    _quantiles("age (years)", [a.age for a in found])
    _quantiles("female prob", [a.female_prob for a in found])
    _quantiles("face size", [a.face_size for a in found])
    words = [categorical(a) for a in notes]
    print(f"categories on all {n} (None = unknown, or level for tilt):")
    for key in VOCABULARY:
        counts = Counter(w[key] for w in words)
        print(f"  {key:12s} " + ", ".join(f"{k}: {c}" for k, c in counts.most_common()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64, help="faces timed")
    parser.add_argument("--calib", type=int, default=200, help="faces for the distributions (0 = skip)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the latents")
    args = parser.parse_args()
    speed(args.n, args.seed)
    if args.calib:
        distributions(args.calib, args.seed)


if __name__ == "__main__":
    main()
