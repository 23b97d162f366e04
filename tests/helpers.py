"""Helpers shared by several test files (imported as a plain module: tests/ is on sys.path)."""

import re
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]

MACRO_USE = re.compile(r"\\([A-Z][A-Za-z]+)")
MACRO_DEF = re.compile(r"\\newcommand\{\\([A-Za-z]+)\}")
GRAPHICS = re.compile(r"\\includegraphics(?:\[[^\]]*\])?\{([^}]+)\}")


def load_photo(name: str) -> torch.Tensor:
    """``[1, 3, H, W]`` float in [-1, 1] of ``data/faces/<name>``."""
    array = np.array(Image.open(ROOT / "data" / "faces" / name).convert("RGB"))
    return torch.from_numpy(array).permute(2, 0, 1)[None].float() / 127.5 - 1


@lru_cache(maxsize=None)
def _dcgan():
    from clipbridge.models.dcgan import from_package

    return from_package()[0]


def dcgan_faces(n: int, seed: int = 0) -> torch.Tensor:
    """``n`` pretrained-DCGAN faces ``[n, 3, 64, 64]`` in [-1, 1] from z drawn with ``seed``."""
    G = _dcgan()
    z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return G(z)


def used_macros(tex: str) -> set[str]:
    """Capitalized control words: our generated macros (LaTeX's own commands are lower case)."""
    return set(MACRO_USE.findall(tex))


def defined_macros(generated_dir: Path) -> set[str]:
    return {m for f in Path(generated_dir).glob("*.tex") for m in MACRO_DEF.findall(f.read_text())}


def graphics(tex: str) -> list[str]:
    return GRAPHICS.findall(tex)
