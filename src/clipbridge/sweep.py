"""Run the items of a matrix stage as queued DVC experiments on N workers, then collect them.

``make sweep JOBS=N`` runs ``python -m clipbridge.sweep --jobs N``, which is plain DVC:

1. ``dvc repro <upstream>``: the stages the matrix depends on (models, datasets) are brought up to
   date once, in the workspace, so that every experiment finds them in the cache;
2. ``dvc exp run --queue <item>`` for every item of the matrix stage (``ablate@<cell>-<seed>``)
   whose outputs are out of date, then ``dvc queue start -j N``; each experiment runs in its own
   temporary copy of the workspace, and DVC stores each run in its run-cache;
3. wait until the queue has run them; a failed experiment stops the sweep with its name (its log:
   ``dvc queue logs NAME``);
4. ``dvc repro`` in the workspace: every item is restored from the run-cache (DVC prints "is cached
   - skipping run"), and the stages that use them (the ``ablations`` tables, figures, paper
   numbers) run as usual, so the workspace ends as ``dvc repro`` alone would leave it, with the
   same ``dvc.lock``. The sweep's experiments are then removed: their results are in the
   workspace.

Workers import each experiment's own copy of the code (``PYTHONPATH=src``, relative to the
experiment's directory, ahead of the editable install that points at the workspace) and share the
machine's cores (``OMP_NUM_THREADS`` = cores // N). A wider sweep is a larger matrix in
params.yaml (README, "Add an ablation"); the queue runs on one machine, and several machines share
results through a DVC remote (README, "Scaling up").
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from tqdm import tqdm

QUEUED = re.compile(r"Queued experiment '([^']+)'")
ACTIVE = {"Queued", "Running"}


class SweepError(RuntimeError):
    pass


def dvc(*args: str, env: dict | None = None, echo: bool = False) -> str:
    """``dvc *args`` with this interpreter's DVC; its output (also shown as it comes when
    ``echo``), or SweepError with its last lines."""
    cmd = [sys.executable, "-m", "dvc", *args]
    if echo:
        with subprocess.Popen(cmd, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as proc:
            lines = []
            for line in proc.stdout:
                sys.stdout.write(line)
                lines.append(line)
        code, out = proc.returncode, "".join(lines)
    else:
        run = subprocess.run(cmd, env=env, text=True, capture_output=True)
        code, out = run.returncode, run.stdout + run.stderr * bool(run.returncode)
    if code:
        tail = "\n".join(out.strip().splitlines()[-5:])
        raise SweepError(f"'dvc {' '.join(args)}' failed (exit {code})" + (f":\n{tail}" if tail else ""))
    return out


def plan(root: str | Path, stage: str) -> tuple[list[str], list[str]]:
    """The matrix items of ``stage`` (``stage@...``) and the stages upstream of them, by name."""
    import networkx as nx
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        items = [s for s in repo.index.stages if s.addressing.startswith(f"{stage}@")]
        upstream = set().union(*(nx.descendants(repo.index.graph, s) for s in items)) - set(items)
        return [s.addressing for s in items], sorted(s.addressing for s in upstream)


def queue_status(root: str | Path) -> dict[str, str]:
    """Experiment name -> status ("Queued", "Running", "Success", "Failed", ...) of DVC's queue."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return {t.get("name") or t["rev"][:7]: t["status"] for t in repo.experiments.celery_queue.status()}


def worker_env(jobs: int) -> dict[str, str]:
    threads = str(max(1, (os.cpu_count() or 1) // jobs))
    return {**os.environ, "PYTHONPATH": "src", "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}


def run(jobs: int, stage: str = "ablate", root: str | Path = ".", poll_seconds: float = 2.0) -> None:
    """The sweep (module docstring). Its last line names the matrix items the final ``dvc repro``
    ran itself instead of taking them from the queue (none when all succeeded)."""
    if jobs < 1:
        raise SweepError(f"--jobs must be at least 1, got {jobs}")
    t0 = time.perf_counter()
    items, upstream = plan(root, stage)
    if not items:
        raise SweepError(f"dvc.yaml has no matrix stage '{stage}' (no '{stage}@...' stages)")
    busy = [name for name, status in queue_status(root).items() if status in ACTIVE]
    if busy:
        raise SweepError(f"DVC's experiment queue already holds unfinished experiments {busy}: "
                         f"wait for them or remove them (dvc queue remove --queued)")
    if upstream:
        print(f"sweep: dvc repro {' '.join(upstream)}", flush=True)
        dvc("repro", *upstream, echo=True)
    stale = sorted(json.loads(dvc("status", "--json", *items) or "{}"))
    names: list[str] = []
    if stale:
        print(f"sweep: {len(stale)} of {len(items)} '{stage}' items to run on {jobs} worker(s)", flush=True)
        try:
            for item in stale:
                names += QUEUED.findall(dvc("exp", "run", "--queue", item))
            # after queueing: a worker that finds the queue empty exits at once
            dvc("queue", "start", "-j", str(jobs), env=worker_env(jobs))
            _wait(root, names, poll_seconds)
        except BaseException:
            _abandon(root, names)
            raise
    collected = dvc("repro", echo=True)
    ran = sorted(set(re.findall(rf"Running stage '({re.escape(stage)}@[^']+)'", collected)))
    if names:
        dvc("exp", "remove", *names)          # also clears them from `dvc queue status`
    seconds = time.perf_counter() - t0
    print(f"sweep: {len(stale)} items, {jobs} worker(s), {seconds:.0f} s wall; results collected"
          + (f"; ran here instead of from the queue: {ran}" if ran else ""), flush=True)


def _wait(root, names: list[str], poll_seconds: float) -> None:
    with tqdm(total=len(names), desc="sweep", unit="exp") as bar:
        while True:
            status = queue_status(root)
            mine = {n: status.get(n, "Missing") for n in names}
            bar.update(sum(s not in ACTIVE for s in mine.values()) - bar.n)
            failed = sorted(n for n, s in mine.items() if s not in ACTIVE | {"Success"})
            if failed:
                raise SweepError(f"experiment(s) {failed} ended {mine[failed[0]]!r}; "
                                 f"see 'dvc queue logs {failed[0]}'")
            if all(s == "Success" for s in mine.values()):
                return
            time.sleep(poll_seconds)


def _abandon(root, names: list[str]) -> None:
    """Kill the sweep's running experiments and drop its queued ones (others' are left alone)."""
    status = queue_status(root)
    for verb, state in (("kill", "Running"), ("remove", "Queued")):
        mine = [n for n in names if status.get(n) == state]
        if mine:
            subprocess.run([sys.executable, "-m", "dvc", "queue", verb, *mine], capture_output=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m clipbridge.sweep", description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", "-j", type=int, default=1, help="queue workers (default 1)")
    ap.add_argument("--stage", default="ablate", help="matrix stage whose items are queued (default ablate)")
    args = ap.parse_args(argv)
    try:
        run(args.jobs, args.stage)
    except SweepError as e:
        print(f"sweep: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
