"""One module per DVC stage: read params once, call pure functions, write outputs atomically."""

from __future__ import annotations

import sys
from collections.abc import Callable

from clipbridge import config
from clipbridge.errors import InputError, MissingFileError, UnknownNameError


def run(stage: Callable[..., None]) -> None:
    """Run ``stage(params, *argv)``; the project's expected errors (:class:`~clipbridge.errors.InputError`:
    a bad params file, a missing or malformed input file, an unknown name) become one line on
    stderr and exit status 1. Any other exception is a bug and keeps its traceback.

    Extra command-line arguments are the stage's DVC ``foreach`` / ``matrix`` item (for example
    the generator name in ``python -m clipbridge.stages.train dcgan64``).
    """
    try:
        stage(config.load(), *sys.argv[1:])
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


def load_split(generator: str, split: str) -> dict:
    """One dataset split of ``generator`` (written by the ``dataset`` stage)."""
    import torch

    from clipbridge import paths

    path = paths.dataset_split(generator, split)
    if not path.is_file():
        raise MissingFileError(f"{path}: dataset split missing (run `dvc repro dataset@{generator}`)")
    return torch.load(path, map_location="cpu", weights_only=True)


def profile_lpips(p: config.Params):
    """The profile's LPIPS *loss* (LPIPS-rand offline), seeded by ``evaluate.lpips_seed``."""
    from clipbridge.models.lpips import build_lpips

    return build_lpips(p.active.lpips, p.evaluate.lpips_seed, p.device)


def profile_metric(p: config.Params):
    """The profile's reported perceptual metric (ST-LPIPS offline): a network no method optimizes."""
    from clipbridge.models.lpips import build_lpips

    return build_lpips(p.active.metric, p.evaluate.lpips_seed, p.device)


def predict_ws(p: config.Params, generator: str, groups: list[str] | None) -> list[int] | None:
    """W+ indices of the named layer groups of ``generator`` (``edits.groups``); None = all."""
    if groups is None:
        return None
    defined = p.edits.groups.get(generator, {})
    missing = [g for g in groups if g not in defined]
    if missing:
        raise UnknownNameError(f"params.yaml: layer group(s) {missing} not defined for '{generator}' in edits.groups; "
                       f"available: {sorted(defined)}")
    return sorted({i for g in groups for i in range(*defined[g])})
