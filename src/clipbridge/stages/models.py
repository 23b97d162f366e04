"""Stages ``generator`` (DVC ``foreach`` over ``params.generators``) and ``encoder``: materialize models.

``python -m clipbridge.stages.models generator NAME`` writes ``data/models/generator-<name>.pt``
and ``results/provenance/generator-<name>.json``; ``python -m clipbridge.stages.models encoder``
writes the profile's ``data/models/encoder.pt`` and ``results/provenance/profile.json``.
Model files are DVC-cached in our own format; the provenance records (committed) say what every
later number rests on, stand-ins and placeholders named, and are read by the paper.
"""

from __future__ import annotations

import platform
import zipfile
from pathlib import Path

import torch

from clipbridge import config, paths, registry
from clipbridge.errors import UnknownNameError
from clipbridge.io import ModelFileError, read_json, write_json
from clipbridge.stages import run

PROVENANCE = paths.RESULTS / "provenance"


def generator_record(name: str):
    return PROVENANCE / f"generator-{name}.json"


def load_provenance(p: config.Params) -> dict:
    """``{profile, encoder, lpips, ..., generators: {name: record}}`` for the active params."""
    prov = read_json(PROVENANCE / "profile.json")
    prov["generators"] = {g: read_json(generator_record(g)) for g in p.generators}
    return prov


def check_mirror_encoder(p: config.Params) -> None:
    """A mirror's CLIP weights must be a state dict: OpenAI's own ``RN50.pt`` is a TorchScript
    archive (code plus tensors), which ``torch.load(weights_only=True)`` refuses and which is not
    run here. Say so in one line, with what to put there instead (README, "Switching to
    pretrained weights")."""
    entry = registry.encoder_entry(p.active.encoder)
    if not p.models.mirror or entry.pretrained is None or entry.arch == "offline":
        return
    path = Path(p.models.mirror) / f"{entry.arch}-{entry.pretrained}.pt"
    if path.is_file() and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            if any("/code/" in n or n.startswith("code/") for n in z.namelist()):
                raise ModelFileError(
                    f"{path}: a TorchScript archive (OpenAI's own {entry.arch}.pt), whose code is not run here; "
                    f"put the model's state dict there instead (README, 'Switching to pretrained weights')")


def main(p: config.Params, what: str, name: str | None = None) -> None:
    if what == "generator":
        meta = registry.materialize_generator(name, paths.generator_file(name), p.models.mirror)
        write_json(generator_record(name), meta)
    elif what == "encoder":
        check_mirror_encoder(p)
        enc = registry.materialize_encoder(p.active.encoder, paths.ENCODER, p.models.seed, p.models.mirror)
        write_json(PROVENANCE / "profile.json", {
            "profile": p.profile, "encoder": enc, "lpips": p.active.lpips,
            "torch": torch.__version__.split("+")[0], "python": platform.python_version(),
        })
    else:
        raise UnknownNameError(f"unknown models target '{what}'; available: ['generator', 'encoder']")


if __name__ == "__main__":
    run(main)
