"""``make verify``: did a rerun reproduce the committed results?

Compares every committed result file (``results/**/*.json`` and ``*.csv``) in the workspace with its
version in a git revision (default ``HEAD``), value by value, within stated tolerances:

- strings, booleans and integers (counts, hashes, verdicts, names): exactly;
- floats: by the tolerance of the first rule in :data:`TOLERANCES` whose pattern occurs in the
  value's key (column) name, e.g. 0.05 dB for PSNR and 0.005 for SSIM / LPIPS; any other float to
  a relative 1e-4 (:data:`DEFAULT_RELATIVE`);
- wall times and devices (:data:`TIMING_KEYS`): reported, never compared, since a rerun on another
  machine or under another load cannot match them.

Then checks that ``dvc.lock`` is consistent: every input a stage records that another stage makes
carries the hash that stage's recorded output has. Only then does ``make repro`` (``dvc repro
--allow-missing``) on a fresh clone skip the stages whose cached outputs it lacks, instead of
re-running every stage downstream of an intermediate made twice.

Prints one line per file (``ok`` / ``MISS`` with the first differences / ``new`` / ``missing``),
the stages that recorded an input other than its maker's output, and a summary; exits 1 when any
value or file misses or the lock is inconsistent. ``python -m clipbridge.verify [--rev REV]``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import subprocess
import sys
from pathlib import Path

TIMING_KEYS = ("seconds", "ms_per_image", "wall", "device", "minutes", "hours", "speed")
TOLERANCES = (  # (pattern in the key, absolute tolerance), first match wins
    ("psnr", 0.05),
    ("ssim", 0.005),
    ("lpips", 0.005),
    ("mse", 0.0005),
)
DEFAULT_RELATIVE = 1e-4
SUFFIXES = (".json", ".csv")


def _number(text: str):
    """A CSV cell as int / float when it reads as one, else the string."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse(path: str, text: str):
    """A result file's content as nested dicts / lists of values."""
    if path.endswith(".json"):
        return json.loads(text)
    rows = list(csv.DictReader(io.StringIO(text)))
    return [{k: _number(v) for k, v in row.items()} for row in rows]


def is_timing(key: str) -> bool:
    return any(t in key.lower() for t in TIMING_KEYS)


def close(key: str, old: float, new: float) -> bool:
    """Whether two floats under ``key`` agree within the key's tolerance (NaN equals NaN)."""
    if math.isnan(old) or math.isnan(new):
        return math.isnan(old) and math.isnan(new)
    for pattern, tol in TOLERANCES:
        if pattern in key.lower():
            return abs(old - new) <= tol
    return abs(old - new) <= DEFAULT_RELATIVE * max(abs(old), abs(new), 1e-12)


def compare(old, new, key: str = "") -> tuple[list[str], int, int]:
    """Differences between two parsed results: (messages, values compared, timings skipped)."""
    if is_timing(key):
        return [], 0, 1
    if isinstance(old, dict) and isinstance(new, dict):
        msgs, n, skipped = [], 0, 0
        for k in sorted(set(old) | set(new), key=str):
            path = f"{key}.{k}" if key else str(k)
            if k not in old or k not in new:
                if not is_timing(str(k)):
                    msgs.append(f"{path}: only in {'the workspace' if k in new else 'the revision'}")
                continue
            m, c, s = compare(old[k], new[k], path)
            msgs, n, skipped = msgs + m, n + c, skipped + s
        return msgs, n, skipped
    if isinstance(old, list) and isinstance(new, list):
        if len(old) != len(new):
            return [f"{key}: {len(old)} entries in the revision, {len(new)} in the workspace"], 1, 0
        msgs, n, skipped = [], 0, 0
        for i, (a, b) in enumerate(zip(old, new)):
            m, c, s = compare(a, b, f"{key}[{i}]")
            msgs, n, skipped = msgs + m, n + c, skipped + s
        return msgs, n, skipped
    numeric = (int, float)
    if (isinstance(old, float) or isinstance(new, float)) and isinstance(old, numeric) \
            and isinstance(new, numeric) and not isinstance(old, bool) and not isinstance(new, bool):
        ok = close(key.rsplit(".", 1)[-1].split("[")[0], float(old), float(new))
        return ([] if ok else [f"{key}: {old!r} -> {new!r}"]), 1, 0
    return ([] if old == new else [f"{key}: {old!r} -> {new!r}"]), 1, 0


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout


def result_files(root: Path, rev: str) -> list[str]:
    """Result files committed in ``rev`` (paths relative to the repository root)."""
    listed = _git(root, "ls-tree", "-r", "--name-only", rev, "--", "results").splitlines()
    return [p for p in listed if p.endswith(SUFFIXES)]


def verify(root: Path, rev: str = "HEAD") -> tuple[list[tuple[str, str, list[str]]], int, int]:
    """Per file (path, status, differences), values compared, timings skipped."""
    report, total, skipped = [], 0, 0
    committed = result_files(root, rev)
    for path in committed:
        here = root / path
        if not here.is_file():
            report.append((path, "missing", ["not in the workspace"]))
            continue
        old = parse(path, _git(root, "show", f"{rev}:{path}"))
        new = parse(path, here.read_text())
        msgs, n, s = compare(old, new)
        total, skipped = total + n, skipped + s
        report.append((path, "MISS" if msgs else "ok", msgs))
    for here in sorted((root / "results").rglob("*")):
        rel = str(here.relative_to(root))
        if here.suffix in SUFFIXES and rel not in committed:
            report.append((rel, "new", ["not in the revision"]))
    return report, total, skipped


def lock_mismatches(lock_text: str) -> dict[str, list[str]]:
    """``{path: [stages]}``: the stages whose recorded input ``path`` has another hash than the
    output ``path`` recorded for the stage that makes it (exact paths: a directory input that
    holds several stages' outputs, like ``data/dataset``, is not compared)."""
    import yaml

    stages = yaml.safe_load(lock_text)["stages"]
    made = {out["path"]: out.get("md5") for stage in stages.values() for out in stage.get("outs", [])}
    stale: dict[str, list[str]] = {}
    for name, stage in stages.items():
        for dep in stage.get("deps", []):
            if dep["path"] in made and dep.get("md5") != made[dep["path"]]:
                stale.setdefault(dep["path"], []).append(name)
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rev", default="HEAD", help="git revision holding the committed results (default HEAD)")
    parser.add_argument("--root", default=".", type=Path, help="repository root (default .)")
    args = parser.parse_args(argv)
    try:
        report, total, skipped = verify(args.root, args.rev)
    except subprocess.CalledProcessError as exc:
        print(f"error: git {' '.join(exc.cmd[1:])}: {exc.stderr.strip()}", file=sys.stderr)
        return 1
    width = max((len(p) for p, _, _ in report), default=10)
    for path, status, msgs in report:
        print(f"{status:>7}  {path:<{width}}  {'; '.join(msgs[:3])}{' ...' if len(msgs) > 3 else ''}")
    bad = [p for p, s, _ in report if s != "ok"]
    tols = ", ".join(f"{p} {t:g}" for p, t in TOLERANCES)
    print(f"{len(report) - len(bad)} of {len(report)} result files match {args.rev} ({total} values compared; "
          f"tolerances: {tols}, other floats relative {DEFAULT_RELATIVE:g}; {skipped} timing values not compared)")
    stale = lock_mismatches((args.root / "dvc.lock").read_text())
    for path, names in sorted(stale.items()):
        print(f"  stale  {path}: recorded by {len(names)} stage(s) with another hash than its maker's "
              f"({', '.join(names[:3])}{' ...' if len(names) > 3 else ''})")
    print("dvc.lock: every recorded input is its maker's recorded output" if not stale else
          f"dvc.lock: {sum(map(len, stale.values()))} stage inputs differ from their makers' outputs "
          "(those stages ran on an older version of the input; `dvc repro` re-runs them)")
    return 1 if bad or stale else 0


if __name__ == "__main__":
    sys.exit(main())
