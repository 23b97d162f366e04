"""Learning-rate schedule shared by every training loop of the project."""

from __future__ import annotations

import math

from clipbridge.errors import UnknownNameError


def lr_at(step: int, steps: int, lr: float, schedule: str, warmup: int, final: float = 0.0) -> float:
    """Learning rate of ``step`` (0-based): linear warmup over ``warmup`` steps, then ``constant``
    or ``cosine`` from ``lr`` down to ``lr * final`` at ``steps`` (held there afterwards)."""
    if schedule not in ("constant", "cosine"):
        raise UnknownNameError(f"unknown schedule {schedule!r}; available: ['constant', 'cosine']")
    if step < warmup:
        return lr * (step + 1) / warmup
    if schedule == "constant":
        return lr
    t = min(1.0, (step - warmup) / max(1, steps - warmup))
    return lr * (final + (1 - final) * 0.5 * (1 + math.cos(math.pi * t)))
