"""The committed paper: every macro it uses is generated, every figure it includes exists."""

from pathlib import Path

import pytest

from helpers import defined_macros, figure_path, graphics, paper_body, typed_digits, used_macros


def lock_entries(root: Path):
    """``(stage, "deps" | "outs", entry)`` for every file or directory dvc.lock records."""
    import yaml

    for name, stage in yaml.safe_load((root / "dvc.lock").read_text())["stages"].items():
        for kind in ("deps", "outs"):
            for entry in stage.get(kind, []):
                yield name, kind, entry


def test_committed_paper_is_complete(repo_root):
    root = Path(repo_root)
    tex = paper_body(root)
    missing = used_macros(tex) - defined_macros(root / "paper/generated")
    assert not missing, f"undefined macros: {sorted(missing)}"
    for name in graphics(tex):
        assert figure_path(root, name) is not None, f"missing figure {name}"


def test_no_number_is_typed_into_the_text(repo_root):
    tex = (Path(repo_root) / "paper/main.tex").read_text()
    assert typed_digits(tex) == [], "numbers in the paper must come from paper/generated/ macros"


def test_a_typed_result_is_caught():
    tex = "\\begin{document}\nThe bridge reaches 17.7~dB on \\texttt{dcgan64} (\\cite{x2}).\n% 12 in a comment\n"
    assert typed_digits(tex) == ["The bridge reaches 17.7~dB on \\texttt{dcgan64} (\\cite{x2})."]
    assert typed_digits(tex.replace("17.7", "\\PsnrBridge{}")) == []


def test_appendix_hashes_are_the_ones_dvc_lock_records(repo_root):
    """paper/generated/repro_table.tex fingerprints every committed checkpoint with its dvc.lock MD5."""
    import re

    root = Path(repo_root)
    rows = re.findall(r"\\texttt\{([^}]+)\} & \\texttt\{([0-9a-f]{12})\}",
                      (root / "paper/generated/repro_table.tex").read_text())
    locked = {entry["path"]: entry["md5"] for _, kind, entry in lock_entries(root) if kind == "outs"}
    checkpoints = {path for path in locked if path.startswith("checkpoints/")}
    assert {path.replace("\\_", "_") for path, _ in rows} == checkpoints, rows
    for path, prefix in rows:
        path = path.replace("\\_", "_")
        assert path in locked, f"{path} is not an output in dvc.lock"
        assert locked[path].startswith(prefix), f"{path}: paper says {prefix}, dvc.lock {locked[path]}"


def test_committed_files_are_the_ones_dvc_lock_records(repo_root):
    """Every git-tracked file dvc.lock names (code, params-free deps, committed results, generated
    TeX, checkpoints) has the hash dvc.lock records: the committed results and paper were made by
    the committed code (`dvc status` would show nothing to rerun for them)."""
    import subprocess

    from clipbridge.io import md5_of

    root = Path(repo_root)
    tracked = set(subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True,
                                 check=True).stdout.splitlines())
    if not tracked:
        pytest.skip("not a git checkout")
    stale = []
    for name, _, entry in lock_entries(root):
        if entry["path"] in tracked and not entry["md5"].endswith(".dir"):
            if md5_of(root / entry["path"]) != entry["md5"]:
                stale.append(f"{name}: {entry['path']}")
    assert not stale, f"files that differ from dvc.lock (run dvc repro / dvc commit): {sorted(set(stale))}"


def test_every_input_dvc_lock_records_is_its_makers_output(repo_root):
    """The committed dvc.lock is consistent: each stage recorded, for every input another stage
    makes, the hash that stage's recorded output has. Otherwise a fresh clone's `make repro`
    (`dvc repro --allow-missing`) re-runs the stages that ran on another version of an input."""
    from clipbridge.verify import lock_mismatches

    stale = lock_mismatches((Path(repo_root) / "dvc.lock").read_text())
    assert not stale, f"stages that recorded another version of an input: {stale}"


def test_clip_sentences_say_what_the_numbers_say():
    from clipbridge.stages.numbers import clip_run_tex

    clip = {"precision": "bf16", "train_device": "CPU (x86_64, 2 threads)", "train_seconds": 9000.0,
            "trained": {"zs_age_bracket_classes": 8, "zs_age_bracket_paraphrase_balanced": 0.13,
                        "zs_pose_classes": 3, "zs_pose_paraphrase_balanced": 0.6}}
    retrieval = [{"prompt": "a brightly lit face", "k": 6.0, "precision": 0.83, "base_rate": 0.3},
                 {"prompt": "facing to the left", "k": 6.0, "precision": 0.17, "base_rate": 0.4}]
    tex = clip_run_tex(clip, retrieval)
    assert ("{precision among the 6 nearest faces is above the base rate for 1 of the 2 prompts; "
            "not for ``facing to the left'' (0.17 against 0.40)}") in tex
    # age: 0.13 against chance 1/8 is the least above chance (pose: 0.6 against 1/3)
    assert "\\newcommand{\\ClipWeakestAttribute}{age bracket}" in tex
    assert "\\newcommand{\\ClipWeakestChance}{0.125}" in tex
    assert "\\newcommand{\\ClipTrainHours}{2.5}" in tex and "{bfloat16 autocast}" in tex
    all_above = clip_run_tex(clip, retrieval[:1])
    assert "for 1 of the 1 prompts}" in all_above and "not for" not in all_above


def test_a_stalled_ablation_seed_is_named_and_marked():
    from clipbridge.stages.ablations import stalled, stalled_note

    assert stalled([{"val_rgb": 0.64}, {"val_rgb": 0.64}])         # flat: no step improved it
    assert stalled([{"val_rgb": 0.30}, {"val_rgb": 0.50}])         # worse at the end
    assert not stalled([{"val_rgb": 0.40}, {"val_rgb": 0.09}])
    rows = [{"cell": "width-4096", "generator": "dcgan64", "n_seeds": 3, "n_stalled": 1, "stalled_psnr": "9.33"},
            {"cell": "depth-1", "generator": "dcgan64", "n_seeds": 3, "n_stalled": 0, "stalled_psnr": ""}]
    note = stalled_note(rows)
    assert "\\texttt{width-4096} on \\texttt{dcgan64}, 1 of 3 seeds (PSNR 9.33 dB)" in note and "depth-1" not in note
    assert "over the other seeds" in note
    assert stalled_note(rows[1:]) == "No seed stalled."


def test_ablation_cells_set_stalled_seeds_apart_and_pair_faces(monkeypatch):
    """A stalled seed is left out of its cell's mean and the cell's difference from the reference
    is paired per face, with an interval that excludes 0 only for a real difference."""
    from types import SimpleNamespace

    import numpy as np

    from clipbridge.config import AblationCell, Train
    from clipbridge.stages import ablations

    rng = np.random.default_rng(0)
    faces = rng.normal(17.0, 2.0, size=64)                     # the test faces differ a lot ...
    per_seed = {("report-dcgan64", s): faces + rng.normal(0, 0.05, 64) for s in range(3)}
    per_seed |= {("width-4096", s): faces + 0.3 + rng.normal(0, 0.05, 64) for s in range(3)}  # ... +0.3 dB each
    per_seed[("width-4096", 0)] = np.full(64, 9.3)             # a collapsed seed
    def read_csv(path):
        if path.name == "curve.csv":                           # data/ablate/<cell>-<seed>/curve.csv
            stalled = path.parent.name == "width-4096-0"
            return [{"val_rgb": 0.6}, {"val_rgb": 0.6 if stalled else 0.1}]
        cell, seed = path.parent.name, int(path.stem.removeprefix("seed"))   # results/ablate/<cell>/seed<k>.csv
        return [{"index": i, "psnr": float(v), "ssim": 0.4, "lpips": 0.1} for i, v in enumerate(per_seed[(cell, seed)])]

    monkeypatch.setattr(ablations, "read_csv", read_csv)
    cells = {"report-dcgan64": AblationCell(generator="dcgan64"),
             "width-4096": AblationCell(generator="dcgan64", width=4096)}
    p = SimpleNamespace(train=Train(), ablate=SimpleNamespace(cells=cells, seeds=[0, 1, 2], steps=300,
                                                              bootstrap=500, bootstrap_seed=0))
    rows = ablations.cell_rows(p)
    ablations.add_differences(p, rows)
    wide = rows[1]
    assert wide["n_stalled"] == 1 and wide["stalled_psnr"] == "9.30" and wide["n_seeds"] == 3
    assert abs(wide["psnr"] - (faces.mean() + 0.3)) < 0.05   # the mean of the two seeds that trained
    assert wide["reference"] == "report-dcgan64" and 0.25 < wide["delta_lo"] < 0.3 < wide["delta_hi"] < 0.35
    assert rows[0]["delta_psnr"] is None                       # the reference row itself
    assert "against 1024: 0.30~dB" in ablations.axis_summary(p, rows, "width")


def test_findings_answer_both_questions_from_the_numbers(monkeypatch):
    from types import SimpleNamespace

    from clipbridge.stages import numbers

    ci = {"mean": 1.5, "lo": 1.2, "hi": 1.8, "n": 256, "excludes_zero": True}
    ev = {"n_opt": 256, "n_test": 256, "w_label": "z",
          "comparison": {"floor": "mean_image", "bridge_vs_floor": {"psnr": ci},
                         "gap_closed_bridge_vs_mean_image": {"mean": 0.3, "lo": 0.25, "hi": 0.35}}}
    rows = [{"cell": "depth-8", "generator": "dcgan64", "delta_psnr": -0.5, "delta_lo": -0.7, "delta_hi": -0.3},
            {"cell": "width-4096", "generator": "dcgan64", "delta_psnr": 0.2, "delta_lo": 0.1, "delta_hi": 0.3},
            {"cell": "report-dcgan64", "generator": "dcgan64", "delta_psnr": ""}]
    verdicts = {"verdicts": {"a": {"verdict": "supported"}, "b": {"verdict": "mixed"}}}
    monkeypatch.setattr(numbers, "read_json", lambda path: verdicts)
    p = SimpleNamespace(headline="dcgan64", generators=["dcgan64", "sg2-64"])
    text = numbers.findings(p, {"dcgan64": ev}, rows, {"psnr": 21.84})
    assert "all 256 test faces" in text and "1.50~dB [1.20, 1.80]" in text and "30 [25, 35]\\%" in text
    assert "Of the 2 ablation cells, 1 beat" in text and "1 fall below" in text and "width-4096" in text
    assert "1 of 2 on \\texttt{dcgan64} and 1 of 2 on \\texttt{sg2-64} (a student 21.84~dB" in text


def test_cost_of_optimizing_every_test_face_is_computed_from_the_measured_time():
    from clipbridge.stages.numbers import opt_cost_text

    ev = {"methods": {"opt_w": {"ms_per_image": 30000.0}}, "comparison": {"ceiling": "opt_w"}, "n_test": 100,
          "n_opt": 10, "w_label": "z", "device": "CPU (x86_64, 2 threads)"}
    text = opt_cost_text({"dcgan64": ev})
    assert text.startswith("about 50~min for all 100 test faces of \\texttt{dcgan64} (against 5~min for its 10;")
    assert "CPU (x86\\_64, 2 threads)" in text
