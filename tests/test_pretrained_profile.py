"""The report's own setup runs through the pipeline and the paper builds for it.

Profile ``pretrained`` with an NVlabs FFHQ generator and OpenAI's CLIP RN50, read from a mirror
directory this test writes itself: a tiny NVlabs-format pickle (256 px, 4 channels) and an RN50
state dict with random weights. Nothing is downloaded; LPIPS-rand stands in for LPIPS, whose
ImageNet trunk would be. The pipeline runs at smoke scale, then ``make paper``'s LaTeX command.
"""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from helpers import dvc, merge_params, smoke_copy
from test_nvlabs import EasyDict, MAPPING, write_nvlabs_pickle

GENERATOR = "sg2-ffhq-256"
TINY = dict(z_dim=8, c_dim=0, w_dim=8, img_resolution=256, img_channels=3)
TINY_SYNTHESIS = dict(channel_base=1024, channel_max=4, num_fp16_res=0, conv_clamp=256, architecture="skip",
                      resample_filter=[1, 3, 3, 1], use_noise=True, activation="lrelu")


def write_mirror(mirror: Path, marker: Path) -> None:
    """The two files a mirror directory of the pretrained profile holds, with tiny / random weights."""
    import open_clip
    import torch

    from clipbridge.models.nvlabs import REGISTRY
    from clipbridge.models.stylegan2 import Generator

    mirror.mkdir()
    torch.manual_seed(0)
    G = Generator(**TINY, mapping_kwargs=MAPPING, synthesis_kwargs=TINY_SYNTHESIS).eval()
    kwargs = EasyDict(**TINY, mapping_kwargs=EasyDict(MAPPING), synthesis_kwargs=EasyDict(TINY_SYNTHESIS))
    write_nvlabs_pickle(mirror / REGISTRY[GENERATOR]["url"].rsplit("/", 1)[-1], G, marker, init_kwargs=kwargs)
    clip = open_clip.create_model("RN50", pretrained=None)
    torch.save({k: v.half() for k, v in clip.state_dict().items()}, mirror / "RN50-openai.pt")


@pytest.mark.skipif(shutil.which("latexmk") is None, reason="LaTeX missing: `make latex-deps` installs it")
def test_report_setup_runs_and_its_paper_builds(tmp_path, repo_root):
    marker = tmp_path / "EXECUTED"
    write_mirror(tmp_path / "mirror", marker)
    root = tmp_path / "repo"
    env = smoke_copy(root, Path(repo_root))
    params = yaml.safe_load((root / "params.yaml").read_text())
    params = merge_params(params, {
        "profile": "pretrained", "generators": [GENERATOR], "models": {"mirror": str(tmp_path / "mirror")},
        "profiles": {"pretrained": {"lpips": "LPIPS-rand", "lpips_metric": "LPIPS-rand"}},
        "dataset": {"n_train": 16, "n_val": 8, "n_test": 8},
        "train": {"batch_by_generator": {"__replace__": True}, "batch": 8},
        "evaluate": {"n_opt": 2, "batch": 8},
        "ablate": {"cells": {"__replace__": True, "report-ffhq": {"generator": GENERATOR},
                             "target-wplus": {"generator": GENERATOR, "target": "w+"}}},
        # the report's four groups of W+ on the 14 style vectors of a 256 px StyleGAN2
        "edits": {"groups": {GENERATOR: {"ws0-4": [0, 4], "ws4-8": [4, 8], "ws8-12": [8, 12], "ws12-14": [12, 14]}}},
        # the encoder study on the report's generator (the offline CLIP is not in this profile)
        "encoders": {"generators": [GENERATOR], "encoders": ["pixels-16"], "fresh": ["pixels-16"]},
    })
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=root, env=env, check=True)
    assert dvc(["init", "-q"], root, env).returncode == 0
    run = dvc(["repro"], root, env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert not marker.exists(), "code from the pickle was executed"

    numbers = (root / "paper/generated/numbers.tex").read_text()
    assert "\\OfflineClipfalse" in numbers and "\\OfflineProfilefalse" in numbers
    figures = (root / "paper/generated/bridge_figures.tex").read_text()
    assert f"speed_quality_{GENERATOR}.pdf" in figures and "dcgan64" not in figures
    study = (root / "paper/generated/encoders.tex").read_text()
    assert GENERATOR in study and "dcgan64" not in study
    latex = subprocess.run(["latexmk", "-pdf", "-interaction=nonstopmode", "-halt-on-error", "main.tex"],
                           cwd=root / "paper", env=env, capture_output=True, text=True)
    log = (root / "paper/main.log").read_text(errors="replace")
    assert latex.returncode == 0, log[-3000:]
    assert not re.search(r"LaTeX Warning: (Reference|Citation) .* undefined|There were undefined references|"
                         r"Float too large", log), log[-3000:]
    assert (root / "paper/main.pdf").stat().st_size > 0
