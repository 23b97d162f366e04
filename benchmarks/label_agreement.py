"""Diagnostic (printed, not a test): how far do the caption labels agree with themselves?

The offline CLIP learns from labels the annotators measure on 64 px faces (clipbridge.offline.annotate).
A label that changes when the face is mirrored, or moved by one pixel, is partly noise, and no
encoder can be expected to predict it better than it agrees with itself. For the first ``--n``
test faces of ``clip_data`` this annotates the face, its mirror image and a copy shifted one
pixel to the right, and prints per attribute the share of faces whose label is the same (for
the mirror, 'looking left' and 'looking right' swap), next to the share of the commonest label;
and for the age estimate (years) the correlation and mean absolute difference. Needs
``dvc repro clip_data`` (or ``dvc pull``) first.

    python benchmarks/label_agreement.py [--n 512]
"""

from __future__ import annotations

import argparse
import collections

import numpy as np
import torch

from clipbridge.offline.annotate import annotate, categorical
from clipbridge.offline.captions import ATTRIBUTES
from clipbridge.io import from_uint8
from clipbridge.stages.clip_data import CLIP_DATA

MIRRORED = {"looking left": "looking right", "looking right": "looking left"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=512, help="test faces to annotate")
    args = parser.parse_args()
    images = from_uint8(torch.load(CLIP_DATA / "test.pt", weights_only=True)["images"][:args.n])
    base = annotate(images)
    variants = {"mirror": annotate(images.flip(-1)), "shift 1 px": annotate(images.roll(1, -1))}
    print(f"{args.n} test faces; a label is compared where both annotations have one")
    print(f"{'attribute':12s} {'variant':11s} {'agree':>6s} {'majority':>8s} {'n':>5s}")
    for attr in ATTRIBUTES:
        for name, other in variants.items():
            pairs = [(categorical(a)[attr], categorical(b)[attr]) for a, b in zip(base, other)]
            pairs = [(u, MIRRORED.get(v, v) if name == "mirror" else v) for u, v in pairs
                     if u is not None and v is not None]
            if not pairs:
                continue
            agree = np.mean([u == v for u, v in pairs])
            majority = collections.Counter(u for u, _ in pairs).most_common(1)[0][1] / len(pairs)
            print(f"{attr:12s} {name:11s} {agree:6.3f} {majority:8.3f} {len(pairs):5d}")
    age = np.array([a.age for a in base])
    for name, other in variants.items():
        age_other = np.array([a.age for a in other])
        ok = ~np.isnan(age) & ~np.isnan(age_other)
        print(f"age (years)  {name:11s} correlation {np.corrcoef(age[ok], age_other[ok])[0, 1]:.3f}  "
              f"mean |difference| {np.abs(age[ok] - age_other[ok]).mean():.1f}  "
              f"(std of the age {age[ok].std():.1f}, n {int(ok.sum())})")


if __name__ == "__main__":
    main()
