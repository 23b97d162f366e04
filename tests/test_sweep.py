"""The queued sweep (``make sweep``): the ablation matrix run as DVC queued experiments on 2
workers gives the same bridges and the same table as running its stages one by one (with the
same number of torch threads), and leaves the workspace up to date with no experiments behind."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from clipbridge.sweep import worker_env
from helpers import dvc



def _ok(run: subprocess.CompletedProcess) -> str:
    assert run.returncode == 0, f"{run.args}\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    return run.stdout


def _outputs(root: Path) -> dict[str, bytes]:
    """The ablation table and every cell's trained bridge."""
    files = [root / "results/ablations/table.csv", *sorted((root / "data/ablate").glob("*/bridge.pt"))]
    return {str(f.relative_to(root)): f.read_bytes() for f in files}


def test_queued_sweep_on_two_workers_equals_the_stages_run_one_by_one(tmp_path, smoke_repo):
    origin, env = smoke_repo
    root = tmp_path / "repo"
    shutil.copytree(origin, root, symlinks=True)
    env = {**env, "PYTHONPATH": str(root / "src")}
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["ablate"]["steps"] += 1            # every cell out of date; no run-cache entry for it
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _ok(subprocess.run(["git", "add", "-A"], cwd=root, env=env, capture_output=True, text=True))
    _ok(subprocess.run(["git", "commit", "-q", "-m", "ablate.steps + 1"], cwd=root, env=env,
                       capture_output=True, text=True))
    items = [f"ablate@{cell}-{seed}" for cell in params["ablate"]["cells"] for seed in params["ablate"]["seeds"]]
    assert set(json.loads(_ok(dvc(["status", "--json", *items], root, env)))) == set(items)

    out = _ok(subprocess.run([sys.executable, "-m", "clipbridge.sweep", "--jobs", "2"], cwd=root,
                             env=env, capture_output=True, text=True))
    assert f"sweep: {len(items)} items, 2 worker(s)" in out, out
    assert "instead of from the queue" not in out, out            # all came from the workers
    assert json.loads(_ok(dvc(["status", "--json"], root, env))) == {}
    assert _ok(dvc(["exp", "list", "--name-only"], root, env)).strip() == ""   # experiments removed
    assert "No experiment tasks" in _ok(dvc(["queue", "status"], root, env))
    table = (root / "results/ablations/table.csv").read_text().splitlines()
    assert len(table) == 1 + len(params["ablate"]["cells"])
    assert all(f",{params['ablate']['steps']}," in row for row in table[1:])
    swept = _outputs(root)

    # the same stages, one by one, with the torch threads of a worker (float sums depend on them)
    threads = {k: worker_env(2)[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    _ok(dvc(["repro", "--force", "--single-item", *items], root, {**env, **threads}))
    _ok(dvc(["repro", "ablations"], root, env))
    assert _outputs(root) == swept
