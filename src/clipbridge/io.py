"""Small shared helpers for stages: seeding, atomic writes, JSON/CSV output."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import random
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch


def _digest(path: Path | str, h) -> str:
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_of(path: Path | str) -> str:
    """Hex SHA-256 of a file's bytes."""
    return _digest(path, hashlib.sha256())


def md5_of(path: Path | str) -> str:
    """Hex MD5 of a file's bytes: the hash ``dvc.lock`` records for a file output."""
    return _digest(path, hashlib.md5())


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextmanager
def atomic_path(path: Path | str):
    """Yield a temp path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix or ".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_torch(obj, path: Path | str) -> None:
    """``torch.save`` atomically, with the same bytes for the same content.

    Serializing through memory gives the archive a fixed inner name (a file's archive is named
    after the file, and a temp file's name is random), so unchanged outputs keep their DVC hash.
    """
    buf = io.BytesIO()
    torch.save(obj, buf)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


def write_text(path: Path | str, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: Path | str, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: Path | str):
    return json.loads(Path(path).read_text())


def write_csv(path: Path | str, rows: list[dict]) -> None:
    """Rows of equal keys -> CSV with a header (written atomically)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] -> uint8 [0, 255] (round to nearest)."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def from_uint8(x: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 in [-1, 1]."""
    return x.float() / 127.5 - 1.0
