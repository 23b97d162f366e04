"""`make verify` (clipbridge.verify): a rerun within tolerance passes, an edited metric fails."""

import json
import os
import subprocess

from clipbridge import verify

from conftest import GIT_IDENTITY


def _repo(tmp_path, env):
    (tmp_path / "results" / "evaluate").mkdir(parents=True)
    metrics = {"psnr": 18.19, "ssim": 0.451, "n_images": 256, "verdict": "supported",
               "ms_per_image": 6.7, "per_face": [17.0, 19.5]}
    (tmp_path / "results" / "evaluate" / "metrics.json").write_text(json.dumps(metrics))
    (tmp_path / "results" / "evaluate" / "per_image.csv").write_text("index,psnr,lpips\n0,17.0,0.05\n1,19.5,0.04\n")
    (tmp_path / "dvc.lock").write_text(LOCK.format(train_dep="aa.dir"))
    for cmd in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "results"]):
        subprocess.run(["git", *cmd], cwd=tmp_path, env=env, check=True)
    return metrics


LOCK = """schema: '2.0'
stages:
  dataset:
    cmd: python -m make_faces
    outs:
    - path: data/dataset
      md5: aa.dir
  train:
    cmd: python -m train
    deps:
    - path: data/dataset
      md5: {train_dep}
    - path: src/train.py
      md5: cc
    outs:
    - path: data/bridge.pt
      md5: dd
"""


def _rewrite(tmp_path, **changes):
    path = tmp_path / "results" / "evaluate" / "metrics.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_verify_passes_within_tolerance_and_ignores_timings(tmp_path):
    env = {**os.environ, **GIT_IDENTITY}
    _repo(tmp_path, env)
    _rewrite(tmp_path, psnr=18.19 + 0.04, ms_per_image=9.9)   # PSNR within 0.05 dB; wall time differs
    report, total, skipped = verify.verify(tmp_path)
    assert [s for _, s, _ in report] == ["ok", "ok"]
    assert skipped == 1 and total == 12
    assert verify.main(["--root", str(tmp_path)]) == 0


def test_verify_fails_on_an_edited_metric_a_verdict_or_a_missing_file(tmp_path, capsys):
    env = {**os.environ, **GIT_IDENTITY}
    _repo(tmp_path, env)
    _rewrite(tmp_path, psnr=18.30)
    assert verify.main(["--root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "MISS" in out and "psnr: 18.19 -> 18.3" in out
    _rewrite(tmp_path, psnr=18.19, verdict="not supported")
    report, _, _ = verify.verify(tmp_path)
    assert ("results/evaluate/metrics.json", "MISS", ["verdict: 'supported' -> 'not supported'"]) in report
    (tmp_path / "results" / "evaluate" / "per_image.csv").unlink()
    report, _, _ = verify.verify(tmp_path)
    assert ("results/evaluate/per_image.csv", "missing", ["not in the workspace"]) in report


def test_tolerances_by_key():
    assert verify.close("psnr", 20.0, 20.049) and not verify.close("psnr", 20.0, 20.06)
    assert verify.close("lpips_sem", 0.1, 0.104) and not verify.close("ssim", 0.5, 0.506)
    assert not verify.close("gap_closed", 0.44, 0.4401)     # other floats: relative 1e-4
    assert verify.is_timing("train_seconds") and not verify.is_timing("psnr")


def test_verify_fails_when_a_stage_recorded_another_version_of_its_input(tmp_path, capsys):
    """A stage that ran on an older dataset than the one dvc.lock says the dataset stage made: a
    fresh clone's `dvc repro --allow-missing` would re-run it, so the lock check misses."""
    assert verify.lock_mismatches(LOCK.format(train_dep="aa.dir")) == {}
    assert verify.lock_mismatches(LOCK.format(train_dep="old.dir")) == {"data/dataset": ["train"]}
    env = {**os.environ, **GIT_IDENTITY}
    _repo(tmp_path, env)
    (tmp_path / "dvc.lock").write_text(LOCK.format(train_dep="old.dir"))
    assert verify.main(["--root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "stale  data/dataset: recorded by 1 stage(s)" in out and "1 stage inputs differ" in out
