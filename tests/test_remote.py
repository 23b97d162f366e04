"""A shared DVC cache: push the smoke pipeline's results to a remote, pull them into a fresh clone,
and find nothing to re-run there. The remote is a local directory; S3, GCS and SSH remotes behave
the same way (README, "Scaling up")."""

import json
import os
import subprocess
from pathlib import Path


from helpers import dvc


def _ok(run: subprocess.CompletedProcess) -> str:
    assert run.returncode == 0, f"{run.args}\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    return run.stdout


def _git(args: list[str], cwd: Path, env: dict) -> str:
    return _ok(subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True))


def _cached_files(root: Path) -> dict[str, bytes]:
    """Every file under ``root/data``, where the DVC-cached outputs live (not DVC's .gitignore, not
    the committed photos of data/faces)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / "data").rglob("*"))
            if p.is_file() and p.name != ".gitignore" and "faces" not in p.relative_to(root / "data").parts}


def test_fresh_clone_pulls_the_shared_cache_and_has_nothing_to_rerun(tmp_path, smoke_repo):
    origin, env = smoke_repo                                   # the smoke pipeline, already run
    clone, remote = tmp_path / "clone", tmp_path / "remote"
    _ok(dvc(["remote", "add", "-d", "shared", str(remote)], origin, env))
    _ok(dvc(["push"], origin, env))
    assert any(p.is_file() for p in remote.rglob("*"))
    _git(["add", "-A"], origin, env)
    _git(["commit", "-q", "-m", "smoke pipeline, remote 'shared'"], origin, env)
    produced = _cached_files(origin)
    assert produced, "the smoke pipeline wrote no DVC-cached outputs under data/"

    _git(["clone", "-q", str(origin), str(clone)], tmp_path, env)
    clone_env = {**env, "PYTHONPATH": str(clone / "src")}
    assert not _cached_files(clone)                           # git carries no cached outputs
    missing = json.loads(_ok(dvc(["status", "--json"], clone, clone_env)))
    assert missing, "a clone without the cache should have outputs to restore"
    _ok(dvc(["pull"], clone, clone_env))

    assert json.loads(_ok(dvc(["status", "--json"], clone, clone_env))) == {}
    assert "Data and pipelines are up to date" in _ok(dvc(["status"], clone, clone_env))
    assert _cached_files(clone) == produced                  # the same bytes, not recomputed
    repro = _ok(dvc(["repro"], clone, clone_env))
    assert "Running stage" not in repro, repro
    assert _git(["status", "--porcelain"], clone, clone_env) == ""   # nothing rewritten
    assert os.listdir(remote)


def test_fresh_clone_without_the_cache_has_nothing_to_rerun_under_allow_missing(tmp_path, smoke_repo):
    """`make repro` on a fresh clone (no remote, no cache): `dvc repro --allow-missing` skips every
    stage whose recorded inputs are unchanged and only lacks its cached outputs, rewrites no
    committed file, and the clone's dvc.lock records every input as its maker's output."""
    from clipbridge.verify import lock_mismatches

    origin, env = smoke_repo
    _git(["add", "-A"], origin, env)
    _git(["commit", "-q", "--allow-empty", "-m", "smoke pipeline"], origin, env)
    clone = tmp_path / "fresh"
    _git(["clone", "-q", str(origin), str(clone)], tmp_path, env)
    clone_env = {**env, "PYTHONPATH": str(clone / "src")}
    assert not _cached_files(clone)
    assert lock_mismatches((clone / "dvc.lock").read_text()) == {}
    repro = _ok(dvc(["repro", "--allow-missing"], clone, clone_env))
    assert "Running stage" not in repro and "didn't change, skipping" in repro, repro
    assert _git(["status", "--porcelain"], clone, clone_env) == ""
    assert not _cached_files(clone)                           # nothing rebuilt
