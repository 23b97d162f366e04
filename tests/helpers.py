"""Helpers shared by several test files (imported as a plain module: tests/ is on sys.path)."""

import os
import re
import shutil
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
# What a temporary copy of the repository needs to run the pipeline (everything else is made).
SMOKE_COPY = ["src", "paper/main.tex", "paper/refs.bib", "dvc.yaml", "params.yaml", "data/faces"]

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


LATEX_CAPITALIZED = {"Delta"}   # LaTeX's own capitalized commands that generated tables use


def used_macros(tex: str) -> set[str]:
    """Capitalized control words: our generated macros (LaTeX's own commands are lower case)."""
    return set(MACRO_USE.findall(tex)) - LATEX_CAPITALIZED


def defined_macros(generated_dir: Path) -> set[str]:
    return {m for f in Path(generated_dir).glob("*.tex") for m in MACRO_DEF.findall(f.read_text())}


GRAPHICS_PATH = re.compile(r"\\graphicspath\{((?:\{[^}]*\})+)\}")


def figure_path(root: Path, name: str, tex: str | None = None) -> Path | None:
    """Where LaTeX finds ``\\includegraphics{name}`` through paper/main.tex's ``\\graphicspath``."""
    tex = (Path(root) / "paper/main.tex").read_text() if tex is None else tex
    dirs = re.findall(r"\{([^}]*)\}", GRAPHICS_PATH.search(tex).group(1))
    for d in dirs:
        path = Path(root) / "paper" / d / name
        if path.is_file():
            return path
    return None


def graphics(tex: str) -> list[str]:
    return GRAPHICS.findall(tex)


BODY_INPUT = re.compile(r"\\input\{(generated/[^}]+)\}")


def paper_body(root: Path) -> str:
    """paper/main.tex with the generated files its body inputs (tables, and the figure floats
    that name generators) appended: the text whose macros and figures must exist. The preamble's
    inputs define macros and are not included."""
    tex = (Path(root) / "paper/main.tex").read_text()
    body = tex.split("\\begin{document}", 1)[1]
    return tex + "".join((Path(root) / "paper" / name).read_text() for name in BODY_INPUT.findall(body))


def merge_params(base: dict, over: dict) -> dict:
    """Deep merge; a mapping holding ``__replace__: true`` replaces the base's instead."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and v.get("__replace__"):
            out[k] = {kk: vv for kk, vv in v.items() if kk != "__replace__"}
        else:
            out[k] = merge_params(base.get(k, {}), v) if isinstance(v, dict) else v
    return out


def smoke_copy(root: Path, repo_root: Path = ROOT) -> dict[str, str]:
    """Copy ``SMOKE_COPY`` of the repository to ``root`` with ``tests/smoke-params.yaml`` merged
    into its params.yaml. Returns the environment for commands run there (its own ``src``
    first on PYTHONPATH, this venv's executables first on PATH; no DVC analytics)."""
    root, repo_root = Path(root), Path(repo_root)
    for item in SMOKE_COPY:
        src, dst = repo_root / item, root / item
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
    params = yaml.safe_load((root / "params.yaml").read_text())
    over = yaml.safe_load((repo_root / "tests" / "smoke-params.yaml").read_text())
    (root / "params.yaml").write_text(yaml.safe_dump(merge_params(params, over), sort_keys=False))
    return {**os.environ, "PYTHONPATH": str(root / "src"), "DVC_NO_ANALYTICS": "1",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def dvc(args: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    """``dvc *args`` in ``cwd`` with this interpreter's DVC; output captured as text."""
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, env=env,
                          capture_output=True, text=True)


# Names that contain digits and are not results (checked by tests/test_paper.py).
NAMES_WITH_DIGITS = re.compile(
    r"StyleGAN2|RN50|all-MiniLM-L6-v2|LPIPS v0\.1|DigiFace-1M|e4e|clip2latent|SHA-256|L2-normalized|L1 |"
    r"\$R\^2|\$\[-1,1\]\$|PSNR \$=10\\log_\{10\}\(4/\\mathrm\{MSE\}\)\$")
NON_PROSE = re.compile(r"%.*$|\\(?:cite|ref|label|input|includegraphics|texttt|bibliography|bibliographystyle)"
                       r"(?:\[[^\]]*\])?\{[^}]*\}", re.M)


def typed_digits(tex: str) -> list[str]:
    """Lines of the document body with a digit typed into prose (numbers must be generated macros)."""
    body = tex.split("\\begin{document}", 1)[1].replace("\\%", "")
    found = []
    for line in body.splitlines():
        text = NAMES_WITH_DIGITS.sub("", NON_PROSE.sub("", line))
        if re.search(r"\d", text):
            found.append(line.strip())
    return found
