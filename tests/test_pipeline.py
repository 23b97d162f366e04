"""The whole pipeline on the smoke profile, in a temporary copy of the repository."""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import defined_macros, graphics, used_macros

COPY = ["src", "paper/main.tex", "paper/refs.bib", "dvc.yaml", "params.yaml"]


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(base[k], v) if isinstance(v, dict) else v
    return out


def _dvc(args, cwd, env):
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, env=env, capture_output=True, text=True)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, repo_root):
    root = tmp_path_factory.mktemp("repo")
    for item in COPY:
        src, dst = Path(repo_root) / item, root / item
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
    params = yaml.safe_load((root / "params.yaml").read_text())
    over = yaml.safe_load((Path(repo_root) / "tests" / "smoke-params.yaml").read_text())
    (root / "params.yaml").write_text(yaml.safe_dump(_merge(params, over), sort_keys=False))
    env = {**os.environ, "PYTHONPATH": str(root / "src"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    assert _dvc(["init", "--no-scm", "-q"], root, env).returncode == 0
    run = _dvc(["repro"], root, env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return root, env


def test_metrics_finite_and_in_range(smoke):
    root, _ = smoke
    ev = json.loads((root / "results/evaluate/metrics.json").read_text())
    assert set(ev["methods"]) >= {"mean_latent", "bridge"}
    assert ev["lpips_variant"] == "LPIPS-rand" and ev["encoder"].startswith("offline CLIP")
    clip = json.loads((root / "results/clip/metrics.json").read_text())
    for model in ("trained", "random_init"):
        assert 0 <= clip[model]["i2t_r1"] <= clip[model]["i2t_r5"] <= 1
        assert -1 <= clip[model]["mean_pairwise_cosine"] <= 1
    for method, v in ev["methods"].items():
        assert v["n_images"] == 16
        assert 0 < v["mse"] < 4 and math.isclose(v["psnr"], v["psnr"], rel_tol=0)  # finite
        assert 0 < v["psnr"] < 60 and -1 <= v["ssim"] <= 1 and 0 <= v["lpips"] < 2
        assert v["ms_per_image"] > 0


def test_curve_and_figures_written(smoke):
    root, _ = smoke
    lines = (root / "results/train/curve.csv").read_text().splitlines()
    assert lines[0].startswith("step,") and len(lines) == 1 + 3  # 12 steps logged every 4
    for fig in ("loss_curve.pdf", "reconstructions.pdf", "clip_curve.pdf"):
        data = (root / "results/figures" / fig).read_bytes()
        assert data.startswith(b"%PDF") and len(data) > 1000


def test_every_paper_macro_and_figure_is_generated(smoke):
    root, _ = smoke
    tex = (root / "paper/main.tex").read_text()
    missing = used_macros(tex) - defined_macros(root / "paper/generated")
    assert not missing, f"macros used by the paper but not generated: {sorted(missing)}"
    for name in graphics(tex):
        assert (root / "results/figures" / name).is_file(), name


def test_second_repro_is_a_noop(smoke):
    root, env = smoke
    run = _dvc(["repro"], root, env)
    assert run.returncode == 0
    assert "didn't change, skipping" in run.stdout or "up to date" in run.stdout
    assert "Running stage" not in run.stdout
