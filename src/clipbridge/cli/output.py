"""What the command line shows and writes: the progress line, notes, the staging directory that
makes a command's outputs appear all at once, and the PNG / latent writers and panel grids."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from clipbridge.cli.errors import CliError

PANEL_MIN = 256          # side-by-side and strip panels are enlarged (nearest neighbour) to at least this


# ------------------------------------------------------------------------------ progress


class Phases:
    """A status line naming the phase a command is in, shown only when the command runs for over a
    second (and stderr is a terminal); long phases get their own bar from :meth:`steps`."""

    def __init__(self, quiet: bool):
        from tqdm.auto import tqdm

        self.quiet = quiet
        self.bar = tqdm(total=None, desc="clipbridge", delay=1.0, leave=False, disable=True if quiet else None,
                        bar_format="{desc} [{elapsed}]", file=sys.stderr)

    def __call__(self, name: str) -> None:
        self.bar.set_description_str(f"clipbridge: {name}")

    def steps(self, total: int, desc: str, unit: str = "step"):
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit=unit, delay=1.0, leave=False,
                    disable=True if self.quiet else None, file=sys.stderr)

    def close(self) -> None:
        self.bar.close()


def note(args, text: str) -> None:
    """A note for the user on stdout (written around any progress bar)."""
    from tqdm.auto import tqdm

    if not args.quiet:
        tqdm.write(f"note: {text}", file=sys.stdout)


# ------------------------------------------------------------------------------ staging


class Staging:
    """A hidden temporary directory for a command's outputs, moved into ``out`` on success.

    Created next to the outputs (inside ``out`` when it exists, else in its nearest existing
    ancestor), so the final move is a rename on the same file system.
    """

    def __init__(self, out: Path):
        self.out = out
        if out.exists() and not out.is_dir():
            raise CliError(f"{out}: output path exists and is not a directory")
        anchor = out
        while not anchor.exists():
            anchor = anchor.parent
        if not anchor.is_dir():
            raise CliError(f"{out}: cannot create the output directory: {anchor} is not a directory")
        try:
            self.dir = Path(tempfile.mkdtemp(prefix=".clipbridge-", dir=anchor))
        except OSError as exc:
            raise CliError(f"{out}: output directory is not writable ({exc.strerror or exc})") from None
        umask = os.umask(0)
        os.umask(umask)
        self.dir.chmod(0o777 & ~umask)    # mkdtemp makes it private; the output directory should not be

    def path(self, name: str) -> Path:
        return self.dir / name

    def commit(self) -> list[str]:
        """Move every staged file into ``out``; return their names."""
        names = sorted(p.name for p in self.dir.iterdir())
        try:
            if self.out.exists():
                for name in names:
                    os.replace(self.dir / name, self.out / name)
                self.dir.rmdir()
            else:
                self.out.parent.mkdir(parents=True, exist_ok=True)
                os.rename(self.dir, self.out)
        except OSError as exc:
            raise CliError(f"{self.out}: cannot move the outputs into place ({exc.strerror or exc})") from None
        return names

    def discard(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "Staging":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:  # any failure, before or during commit: nothing partial stays
            self.discard()


# ------------------------------------------------------------------------------ writers


def latent_record(files, ws, **extra) -> dict:
    """What ``latent.pt`` holds: ``ws [N, num_ws, w_dim]`` float32 and the model files (a :class:`ModelFiles`)."""
    return {"kind": "latent", "ws": ws.detach().float().cpu().contiguous(), "generator": files.name,
            "generator_file": str(files.generator), "bridge_file": str(files.bridge), **extra}


def save_latent(record: dict, path: Path) -> None:
    """``torch.save`` through memory: the same bytes for the same content (see io.save_torch)."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save(record, buf)
    path.write_bytes(buf.getvalue())


def save_png(array, path: Path) -> None:
    from PIL import Image

    Image.fromarray(array).save(path, format="PNG")


def uint8(images):
    """``[N, 3, R, R]`` in [-1, 1] -> list of ``[R, R, 3]`` uint8 numpy arrays."""
    from clipbridge.io import to_uint8

    return [a.numpy() for a in to_uint8(images.detach().float().cpu()).permute(0, 2, 3, 1)]


def grid(rows: list[list]):
    """Rows of equal-size ``[R, R, 3]`` uint8 panels -> one image, enlarged by an integer factor
    (nearest neighbour) so a panel is at least :data:`PANEL_MIN` px, 2 px white gutters."""
    import numpy as np

    r = rows[0][0].shape[0]
    k = max(1, -(-PANEL_MIN // r))
    gap = 2
    h = len(rows) * (r * k + gap) - gap
    w = max(len(row) for row in rows) * (r * k + gap) - gap
    out = np.full((h, w, 3), 255, dtype=np.uint8)
    for i, row in enumerate(rows):
        for j, panel in enumerate(row):
            big = panel.repeat(k, axis=0).repeat(k, axis=1)
            out[i * (r * k + gap):i * (r * k + gap) + r * k, j * (r * k + gap):j * (r * k + gap) + r * k] = big
    return out
