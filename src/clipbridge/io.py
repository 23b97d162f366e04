"""Small shared helpers for stages: seeding, atomic writes, JSON/CSV output, the checkpoint reader."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import random
import tempfile
from contextlib import contextmanager
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from clipbridge.errors import BadValueError


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


class ModelFileError(BadValueError):
    """A model or checkpoint file is missing, unreadable, of the wrong kind, or does not fit.

    The message is one line that starts with the file's path (a ``ValueError``, and an
    :class:`~clipbridge.errors.InputError` that entry points print as that line).
    """


def read_checkpoint(path: Path | str, *, required: Sequence[str] = (), kind_key: str | None = None,
                    kinds: Sequence[str] = (), what: str = "checkpoint", hint: str = "",
                    map_location: str | torch.device = "cpu", mmap: bool = False) -> dict:
    """The one way to read our torch files: ``torch.load(weights_only=True)`` (no file runs code).

    Returns the file's dict. Raises :class:`ModelFileError`, one line naming the file, when the
    file is missing (``hint`` says how to make it), unreadable (``what`` names what it should
    be), not a dict, has ``obj[kind_key]`` outside ``kinds`` (when ``kind_key`` is given), or
    lacks one of the ``required`` keys. Checks of the content (shapes, constructor arguments)
    are the caller's.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such file" + (f" ({hint})" if hint else ""))
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as exc:  # noqa: BLE001 - any failure to parse is reported as one line
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise ModelFileError(f"{path}: not a readable {what} ({type(exc).__name__}: {first})") from None
    if not isinstance(obj, dict):
        raise ModelFileError(f"{path}: wrong file type: not a clipbridge {what} "
                             f"(a {type(obj).__name__}, not a dict)")
    if kind_key is not None and obj.get(kind_key) not in kinds:
        raise ModelFileError(f"{path}: wrong file type: not a clipbridge {what} of {kind_key} "
                             f"{list(kinds)} (found {obj.get(kind_key)!r})")
    missing = [k for k in required if k not in obj]
    if missing:
        raise ModelFileError(f"{path}: missing entries {missing}")
    return obj


def write_text(path: Path | str, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: Path | str, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def finite(obj, digits: int | None = None):
    """NaN / inf -> None recursively, numpy scalars -> floats (JSON has neither); tuples -> lists.

    ``digits``: also round every float to that many significant digits (None = keep them all).
    """
    if isinstance(obj, dict):
        return {k: finite(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v, digits) for v in obj]
    if isinstance(obj, (float, np.floating)):
        if not math.isfinite(obj):
            return None
        return float(obj) if digits is None else float(f"{obj:.{digits}g}")
    return obj


def read_json(path: Path | str):
    return json.loads(Path(path).read_text())


def write_csv(path: Path | str, rows: list[dict]) -> None:
    """Rows of equal keys -> CSV with a header (written atomically)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _csv_value(text: str):
    """A CSV field as a float when it reads as a number, else the string."""
    try:
        return float(text)
    except ValueError:
        return text


def read_csv(path: Path) -> list[dict]:
    """Rows of a CSV; numeric fields as floats, others as strings."""
    with open(path, newline="") as f:
        return [{k: _csv_value(v) for k, v in row.items()} for row in csv.DictReader(f)]


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] -> uint8 [0, 255] (round to nearest)."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def from_uint8(x: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 in [-1, 1]."""
    return x.float() / 127.5 - 1.0
