"""Stage ``models``: materialize the active profile's generator and encoder, write provenance.

Outputs: ``data/models/generator.pt`` and ``data/models/encoder.pt`` (DVC-cached, our own
format) and ``results/provenance.json`` (committed): what every later number rests on, with
the stand-ins and placeholders named, read by the paper.
"""

from __future__ import annotations

import platform

import torch

from clipbridge import config, paths, registry
from clipbridge.io import write_json
from clipbridge.stages import run


def main(p: config.Params) -> None:
    gen = registry.materialize_generator(p.active.generator, paths.MODELS / "generator.pt", p.models.mirror)
    enc = registry.materialize_encoder(p.active.encoder, paths.MODELS / "encoder.pt", p.models.seed, p.models.mirror)
    write_json(paths.RESULTS / "provenance.json", {
        "profile": p.profile,
        "generator": gen,
        "encoder": enc,
        "lpips": "LPIPS-rand" if p.profile == "offline" else "LPIPS",
        "torch": torch.__version__.split("+")[0],
        "python": platform.python_version(),
    })


if __name__ == "__main__":
    run(main)
