"""One module per DVC stage: read params once, call pure functions, write outputs atomically."""

from __future__ import annotations

import sys
from collections.abc import Callable

from clipbridge import config


def run(stage: Callable[..., None]) -> None:
    """Run ``stage(params, *argv)``; expected failures become one line on stderr and exit status 1.

    Extra command-line arguments are the stage's DVC ``foreach`` / ``matrix`` item (for example
    the generator name in ``python -m clipbridge.stages.train dcgan64``).
    """
    from clipbridge.registry import ModelFileError

    try:
        stage(config.load(), *sys.argv[1:])
    except (config.ConfigError, ModelFileError, FileNotFoundError, KeyError, ValueError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {msg}", file=sys.stderr)
        sys.exit(1)


def load_split(generator: str, split: str) -> dict:
    """One dataset split of ``generator`` (written by the ``dataset`` stage)."""
    import torch

    from clipbridge import paths

    path = paths.dataset_split(generator, split)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: dataset split missing (run `dvc repro dataset@{generator}`)")
    return torch.load(path, map_location="cpu", weights_only=True)


def profile_lpips(p: config.Params):
    """The profile's LPIPS (LPIPS-rand offline), seeded by ``evaluate.lpips_seed``."""
    from clipbridge.metrics import LPIPS

    return LPIPS(random_trunk=p.active.lpips == "LPIPS-rand", seed=p.evaluate.lpips_seed).to(p.device)


def predict_ws(p: config.Params, generator: str, groups: list[str] | None) -> list[int] | None:
    """W+ indices of the named layer groups of ``generator`` (``edits.groups``); None = all."""
    if groups is None:
        return None
    defined = p.edits.groups.get(generator, {})
    missing = [g for g in groups if g not in defined]
    if missing:
        raise KeyError(f"params.yaml: layer group(s) {missing} not defined for '{generator}' in edits.groups; "
                       f"available: {sorted(defined)}")
    return sorted({i for g in groups for i in range(*defined[g])})
