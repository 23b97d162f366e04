"""Layer-group study (src/clipbridge/edits/study.py, stage edits): offsets, strip, measures, verdicts."""

import dataclasses
import json
import math
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from clipbridge import config, paths, stats
from clipbridge.edits import measures, offsets, study, verdicts
from clipbridge.edits.offsets import (draw_direction, groups_for, offset_scales, offset_unit, offset_ws, report_strip,
                                      synthesize_edit)
from clipbridge.config import EditsConfig
from clipbridge.io import save_torch
from clipbridge.models.lpips import build_lpips
from clipbridge.models.stylegan2 import Generator

PARAMS = config.load(Path(__file__).resolve().parents[1] / paths.PARAMS).edits   # the one definition of the groups
TINY_GROUPS = {"4px": [0, 1], "8px": [1, 3], "16px": [3, 5], "rgb": [5, 6]}  # 16 px: 6 ws
SMOKE = EditsConfig(n_faces=2, n_draws=1, magnitudes=[1.0], w_std_samples=16, batch=8, bootstrap=50,
                    groups={"tiny": TINY_GROUPS, "dcgan64": PARAMS.groups["dcgan64"]})


def tiny_generator(resolution: int = 16, seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    G = Generator(z_dim=8, c_dim=0, w_dim=16, img_resolution=resolution, img_channels=3,
                  mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=max(128, resolution), channel_max=16))
    return G.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def dcgan():
    from clipbridge.models.dcgan import from_package

    return from_package()[0]


@pytest.fixture(scope="module")
def analyzer():
    return measures.Analyzer()


@pytest.fixture(scope="module")
def lpips():
    return build_lpips("LPIPS-rand", 0)


def _face_ws(dcgan, n: int = 3) -> torch.Tensor:
    ws, found = study.study_faces(dcgan, n, seed=0, batch=8)
    assert found == n, "the DCGAN should give detectable faces"
    return ws


# --------------------------------------------------------------------------------------------
# offsets


def test_offset_changes_only_its_group():
    G = tiny_generator()
    ws = G.mapping(torch.randn(3, 8), None)
    gen = torch.Generator().manual_seed(0)
    d = draw_direction(G, 3, (1, 3), gen)
    assert d.shape == (3, 2, 16)
    before = ws.clone()
    moved = offset_ws(ws, (1, 3), d, 0.5, torch.full((16,), 2.0))
    assert torch.equal(moved[:, [0, 3, 4, 5]], ws[:, [0, 3, 4, 5]])
    assert torch.allclose(moved[:, 1:3] - ws[:, 1:3], d)          # 0.5 * 2.0 * d
    assert torch.equal(ws, before)                                 # the input is not modified


def test_dcgan_offset_scales_only_its_layers(dcgan):
    d = draw_direction(dcgan, 2, (1, 3), torch.Generator().manual_seed(0))
    assert [t.shape for t in d] == [(2, 256), (2, 128)]          # 8 px and 16 px BatchNorms
    scales = offset_scales((1, 3), d, 0.3)
    assert sorted(scales) == [8, 16]
    assert torch.allclose(scales[8].log(), 0.3 * d[0], atol=1e-6)


@pytest.mark.parametrize("which", ["sg2", "dcgan"])
def test_magnitude_zero_gives_the_unedited_image(which, dcgan):
    G = tiny_generator() if which == "sg2" else dcgan
    ws = G.mapping(torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(1)), None)
    unit = offset_unit(G, offsets.w_std(G, 16, 0), 1.0)
    group = (1, 3)
    d = draw_direction(G, 2, group, torch.Generator().manual_seed(0))
    base = synthesize_edit(G, ws)
    assert torch.equal(synthesize_edit(G, ws, group, d, 0.0, unit), base)
    assert not torch.equal(synthesize_edit(G, ws, group, d, 1.0, unit), base)
    # a batch's images depend on the batch size only to float rounding (unfused modulation)
    assert torch.allclose(synthesize_edit(G, ws[:1]), base[:1], atol=1e-5)


def test_magnitude_zero_gives_zero_measures(dcgan, analyzer, lpips):
    ws = _face_ws(dcgan, 2)
    base = synthesize_edit(dcgan, ws)
    a = analyzer(base)
    out = measures.compare(a, analyzer(base.clone()), base, base.clone(), lpips)
    assert out["face_pair"].all()
    for m in measures.MEASURES:
        if m.key == "lowfreq":
            assert np.isnan(out[m.key]).all()                    # no change: no spectrum to share
        else:
            assert np.allclose(out[m.key], 0.0, atol=1e-6), m.key


def test_params_groups_partition_their_generators():
    cfg = PARAMS
    G = tiny_generator(64)   # sg2-64's groups are by resolution: each starts at a block's first W+ vector
    starts = {start for start, _ in G.synthesis.ws_slices().values()}
    assert {a for a, _ in groups_for(cfg, "sg2-64", G).values()} <= starts
    for name, G in (("sg2-64", tiny_generator(64)), ("sg2-ffhq-512", tiny_generator(512))):
        groups = groups_for(cfg, name, G)
        covered = [i for a, b in groups.values() for i in range(a, b)]
        assert covered == list(range(G.num_ws)), name           # disjoint, ordered, complete
    assert G.num_ws == 16 and list(groups.values()) == [(0, 4), (4, 8), (8, 12), (12, 16)]  # the report's


def test_bad_groups_raise_one_line_naming_params():
    G = tiny_generator()  # 6 ws
    bad = dataclasses.replace(SMOKE, groups={"tiny": {"coarse": [0, 3], "fine": [3, 7]}})
    with pytest.raises(ValueError, match=r"^params\.yaml: edits\.groups\.tiny\.fine = \[3, 7\] .* "
                                         r"valid: 0 <= start < stop <= 6$") as e:
        groups_for(bad, "tiny", G)
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match=r"params\.yaml: edits\.groups has no entry for generator 'other'"):
        groups_for(SMOKE, "other", G)
    with pytest.raises(ValueError, match=r"params\.yaml: edits\.groups\.x\.a = \[2, 2\] is not a half-open range"):
        EditsConfig(groups={"x": {"a": [2, 2]}})
    with pytest.raises(ValueError, match=r"params\.yaml: edits\.verdict_magnitude"):
        EditsConfig(magnitudes=[0.5], verdict_magnitude=1.0)


# --------------------------------------------------------------------------------------------
# strip and measures


def test_strip_shape_and_first_column_is_the_unedited_face():
    G = tiny_generator()
    cfg = SMOKE
    groups = groups_for(cfg, "tiny", G)
    ws = G.mapping(torch.randn(1, 8), None)
    unit = offset_unit(G, offsets.w_std(G, 16, 0))
    strip = report_strip(G, ws, groups, cfg.strip_step, cfg.strip_show, seed=0, unit=unit)
    assert strip.shape == (4, len(cfg.strip_show), 3, 16, 16)
    base = synthesize_edit(G, ws)[0]
    for row in strip:
        assert torch.allclose(row[0], base, atol=1e-5)
        assert not torch.equal(row[-1], base)
    # step k moves k * step along one direction: the change grows with k
    change = (strip - base).flatten(2).norm(dim=2)
    assert (change[:, 1:] > change[:, :-1]).all()


def test_lowfreq_share_and_alignment_and_colour():
    flat = torch.ones(1, 3, 32, 32) * 0.1                          # a uniform colour shift
    checker = (torch.arange(32)[:, None] + torch.arange(32)[None, :]) % 2 * 2.0 - 1.0
    assert measures.lowfreq_share(flat).item() == pytest.approx(1.0)
    assert measures.lowfreq_share(checker.expand(1, 3, 32, 32)).item() < 1e-6
    pts = np.random.default_rng(0).normal(size=(2, 68, 2))
    c, s = math.cos(0.3), math.sin(0.3)
    moved = 1.7 * pts @ np.array([[c, -s], [s, c]]) + np.array([5.0, -2.0])
    assert np.allclose(measures.similarity_residual(moved, pts), 0.0, atol=1e-9)
    assert (measures.similarity_residual(pts[::-1], pts) > 0.1).all()
    lab = measures.srgb_to_lab(np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]))
    assert np.allclose(lab, [[100, 0, 0], [0, 0, 0]], atol=0.01)


def test_same_seed_gives_identical_numbers(dcgan, analyzer, lpips):
    groups = groups_for(SMOKE, "dcgan64", dcgan)

    def once():
        ws = _face_ws(dcgan, 2)
        rows = study.measure(dcgan, ws, groups, [0.5], 1, 0, 0.2, lpips, analyzer, batch=8, progress=False)
        return rows, verdicts.summarize(verdicts.tabulate(rows, list(groups), [0.5], 2, 1, 50, 0))

    (r1, s1), (r2, s2) = once(), once()
    assert json.dumps(r1) == json.dumps(r2) and json.dumps(s1) == json.dumps(s2)
    assert len(r1) == 2 * 4 and {r["group"] for r in r1} == set(groups)
    assert all(r["face_found_base"] for r in r1)


def _rows(values, faces=4, groups=("a", "b"), draws=1, found=lambda face, draw, g: True,
          rms=lambda face, draw, g: 1.0):
    """Rows of a tiny study at one magnitude: ``values(face, draw, group)`` for every measure."""
    rows = []
    for face in range(faces):
        for draw in range(draws):
            for g in groups:
                row = {"face": face, "draw": draw, "group": g, "magnitude": 1.0, "face_found_base": True,
                       "face_found_edit": found(face, draw, g)}
                v = values(face, draw, g)
                row.update({m.key: (math.nan if (m.face and not row["face_found_edit"]) else float(v))
                            for m in measures.MEASURES})
                row["rms"] = rms(face, draw, g)
                rows.append(row)
    return rows


def test_summary_uses_the_common_face_set_and_counts_lost_faces():
    rows = _rows(lambda face, draw, g: face + 1, found=lambda face, draw, g: not (g == "b" and face == 0))
    t = verdicts.tabulate(rows, ["a", "b"], [1.0], 4, 1, 200, 0)
    s = verdicts.summarize(t)
    a, b = s["a"]["1"], s["b"]["1"]
    assert a["n_excluded"] == 0 and b["n_excluded"] == 1 and b["n"] == 4
    # face measures of every group on the faces both groups kept (2, 3, 4), not each group's own
    assert a["raw"]["pose"]["mean"] == pytest.approx(3.0) and a["raw"]["pose"]["n"] == 3
    assert b["raw"]["pose"]["mean"] == pytest.approx(3.0) and b["raw"]["pose"]["faces"] == 3
    assert a["raw_own"]["pose"]["mean"] == pytest.approx(2.5) and a["raw_own"]["pose"]["n"] == 4
    assert b["raw"]["background"]["n"] == 4                                               # needs no face
    assert b["face_found_rate"]["mean"] == pytest.approx(0.75)
    assert b["face_loss_rate"]["mean"] == pytest.approx(0.25) and b["face_loss_rate"]["n"] == 1
    assert a["face_loss_rate"]["mean"] == 0.0 and a["face_loss_rate"]["of"] == 4
    assert a["per_rms"]["pose"]["mean"] == pytest.approx(3.0)                             # rms 1 per image
    lo, hi = a["raw"]["pose"]["lo"], a["raw"]["pose"]["hi"]
    assert 2.0 <= lo < 3.0 < hi <= 4.0


def test_common_face_set_measures_every_group_on_the_same_faces():
    """b's edit loses the face in draw 0 of faces 6 and 7, where a's pose change is largest. Over
    each group's own kept faces a and b tie; on the common face set (the slots both kept) a is
    smaller, and b's loss rate says what was dropped."""
    def pose(face, draw, g):
        return 2.0 if g == "b" else (1.0 if face < 6 else 5.0)

    rows = _rows(pose, faces=8, draws=2, found=lambda face, draw, g: not (g == "b" and face >= 6 and draw == 0))
    t = verdicts.tabulate(rows, ["a", "b"], [1.0], 8, 2, 200, 0)
    slots = verdicts.common_slots(t, "pose", 0)
    assert slots.shape == (8, 2) and slots.sum() == 14 and not slots[6:, 0].any()
    s = verdicts.summarize(t)
    a, b = s["a"]["1"], s["b"]["1"]
    assert a["raw_own"]["pose"]["mean"] == pytest.approx(2.0) == b["raw_own"]["pose"]["mean"]
    assert a["raw_own"]["pose"]["n"] == 16 and b["raw_own"]["pose"]["n"] == 14
    assert a["raw"]["pose"]["mean"] == pytest.approx(22 / 14) and a["raw"]["pose"]["n"] == 14
    assert b["raw"]["pose"]["mean"] == pytest.approx(2.0) and b["raw"]["pose"]["faces"] == 8
    assert b["face_loss_rate"]["mean"] == pytest.approx(2 / 16) and a["face_loss_rate"]["mean"] == 0.0
    assert a["raw"]["background"]["n"] == 16                         # needs no face: every slot


def test_paired_group_difference_finds_a_real_difference_and_covers_zero_for_none():
    rng = np.random.default_rng(0)
    face_effect = rng.normal(5.0, 3.0, size=(30, 1))             # large between-face spread, shared
    noise = rng.normal(0.0, 0.1, size=(3, 30, 2))                 # 30 faces x 2 draws, per group
    num_a, num_b, den = (face_effect + 0.3 + noise[0]).sum(1), (face_effect + noise[1]).sum(1), np.full(30, 2.0)
    w = stats.cluster_weights(30, 500, np.random.default_rng(1))
    d = stats.ratio_difference_ci(num_a, den, num_b, den, w)
    assert d["excludes_zero"] and 0.2 < d["lo"] < 0.3 < d["hi"] < 0.4            # paired: spread cancels
    marg = [stats.ratio_ci(n, den, w) for n in (num_a, num_b)]
    assert marg[0]["lo"] < marg[1]["hi"]                          # the marginal CIs overlap all the same
    null = stats.ratio_difference_ci((face_effect + noise[2]).sum(1), den, num_b, den, w)
    assert null["lo"] < 0 < null["hi"] and not null["excludes_zero"]
    assert math.isnan(stats.ratio_difference_ci(num_a, np.zeros(30), num_b, den, w)["mean"])


# --------------------------------------------------------------------------------------------
# verdicts


def _diffs(**groups):
    return {g: {"mean": m, "lo": lo, "hi": hi} for g, (m, lo, hi) in groups.items()}


def test_verdict_rule():
    assert verdicts.part_verdict(_diffs(b=(2.0, 1.0, 3.0), c=(4.0, 3.0, 5.0))) == "supported"
    assert verdicts.part_verdict(_diffs(b=(1.0, -0.5, 2.0), c=(4.0, 3.0, 5.0))) == "mixed"   # tied with b
    assert verdicts.part_verdict(_diffs(b=(-2.0, -3.0, -1.0), c=(4.0, 3.0, 5.0))) == "not supported"
    assert verdicts.part_verdict(_diffs(b=(math.nan, math.nan, math.nan))) == "not tested"
    assert verdicts.combine(["supported", "supported"]) == "supported"
    assert verdicts.combine(["supported", "not supported"]) == "mixed"
    assert verdicts.combine(["not supported", "not tested"]) == "not supported"
    assert verdicts.combine(["not tested"]) == "not tested"
    assert verdicts.agree("supported", "supported") == "supported"
    assert verdicts.agree("supported", "not supported") == "mixed"
    assert verdicts.agree("not supported", "not supported") == "not supported"


GROUPS4 = ["g0", "g1", "g2", "g3"]
WINNER = {"pose": 0, "hair": 0, "shape": 1, "skin": 2, "age": 3, "background": 3}  # measure -> winning group


def _study_rows(n_faces: int = 12, rms_of=lambda gi: 1.0, seed: int = 0) -> list[dict]:
    """Two magnitudes; every measure 1 (+ noise) except the winner group's claimed measures at 10
    (x magnitude); RMS change ``rms_of(group index) * magnitude``."""
    rng = np.random.default_rng(seed)
    rows = []
    for face in range(n_faces):
        for gi, g in enumerate(GROUPS4):
            for mag in (1.0, 2.0):
                row = {"face": face, "draw": 0, "group": g, "magnitude": mag, "face_found_base": True,
                       "face_found_edit": True}
                row.update({m.key: mag * (1.0 + 0.1 * rng.random()) for m in measures.MEASURES})
                row.update({k: mag * 10.0 for k, w in WINNER.items() if w == gi})
                row["rms"] = rms_of(gi) * mag
                rows.append(row)
    return rows


def test_judge_reads_the_claimed_groups_in_order():
    t = verdicts.tabulate(_study_rows(), GROUPS4, [1.0, 2.0], 12, 1, 200, 0)
    out = verdicts.judge(t, 2.0)
    assert {k: v["verdict"] for k, v in out.items()} == {
        "pose_hair": "supported", "features": "supported", "skin": "mixed", "background": "supported"}
    age = out["skin"]["parts"]["age"]
    assert age["per_rms"]["verdict"] == age["raw"]["verdict"] == "not supported" and out["background"]["group"] == "g3"
    assert age["raw"]["rival"] == "g3" and age["raw"]["vs"]["g3"]["hi"] < 0
    assert out["features"]["parts"]["shape"]["sample"] == {"slots": 12, "faces": 12,
                                                          "face_loss_rate": out["features"]["parts"]["shape"]
                                                          ["sample"]["face_loss_rate"]}
    t3 = verdicts.tabulate([r for r in _study_rows() if r["group"] != "g3"], GROUPS4[:3], [1.0, 2.0], 12, 1, 50, 0)
    assert all(v["verdict"] == "not tested" for v in verdicts.judge(t3, 2.0).values())


def test_claim_is_supported_only_where_both_normalizations_agree():
    # g1 changes the whole image 20x more: it wins every raw comparison, the claimed groups win per RMS
    t = verdicts.tabulate(_study_rows(rms_of=lambda gi: 20.0 if gi == 1 else 1.0), GROUPS4, [1.0, 2.0], 12, 1, 200, 0)
    out = verdicts.judge(t, 2.0)
    bg = out["background"]
    assert bg["per_rms"] == "supported" and bg["raw"] == "supported" and bg["verdict"] == "supported" and bg["agree"]
    t = verdicts.tabulate([{**r, **({"background": r["magnitude"] * 30.0} if r["group"] == "g1" else {})}
                           for r in _study_rows(rms_of=lambda gi: 20.0 if gi == 1 else 1.0)],
                          GROUPS4, [1.0, 2.0], 12, 1, 200, 0)
    bg = verdicts.judge(t, 2.0)["background"]
    assert bg["per_rms"] == "supported" and bg["raw"] == "not supported"
    assert bg["verdict"] == "mixed" and not bg["agree"]
    part = bg["parts"]["background"]
    assert part["raw"]["rival"] == "g1" and part["per_rms"]["vs"]["g1"]["lo"] > 0


# --------------------------------------------------------------------------------------------
# the stage


def _write_generator(path, G, kind):
    save_torch({"kind": kind, "state_dict": G.state_dict(), "init_kwargs": G.init_kwargs, "meta": {}}, path)


@pytest.mark.parametrize("name", ["tiny", "dcgan64"])
def test_stage_writes_every_output(tmp_path, monkeypatch, name, dcgan):
    from clipbridge import paths
    from clipbridge.stages import edits as stage

    monkeypatch.chdir(tmp_path)
    if name == "tiny":
        _write_generator(paths.generator_file(name), tiny_generator(), "stylegan2")
    else:
        _write_generator(paths.generator_file(name), dcgan, "dcgan")
    stage.main(SimpleNamespace(edits=SMOKE, device="cpu", active=SimpleNamespace(lpips="LPIPS-rand")), name)
    d = tmp_path / "results" / "edits" / name
    metrics = json.loads((d / "metrics.json").read_text())
    assert "NaN" not in (d / "metrics.json").read_text()
    assert set(metrics["verdicts"]) == {c.key for c in verdicts.CLAIMS}
    assert set(metrics["verdicts_by_normalization"]) == {"per_rms", "raw", "combined"}
    assert set(metrics["face_loss"]) == set(metrics["settings"]["group_order"])
    assert all(set(v) == {"1"} for v in metrics["face_loss"].values())
    assert metrics["n"]["images"] == 2 * 4 and metrics["settings"]["lpips_variant"] == "LPIPS-rand"
    assert len((d / "per_image.csv").read_text().splitlines()) == 1 + 2 * 4
    assert (d / "magnitude.csv").read_text().startswith("magnitude,geometry_")
    for fig in ("strip", "heatmap", "magnitude"):
        assert (tmp_path / "results" / "figures" / f"edits_{fig}_{name}.pdf").stat().st_size > 1000
    tex = (tmp_path / "paper" / "generated" / f"edits_{name}.tex").read_text()
    names = re.findall(r"\\newcommand\{\\([^}]*)\}", tex)
    assert names and all(n.isalpha() for n in names) and len(names) == len(set(names))
    prefix = "EditsTiny" if name == "tiny" else "EditsDcganSixFour"
    for claim in ("PoseHair", "Features", "Skin", "Background"):
        for suffix in ("", "Group", "PerRms", "Raw", "Agree", "FaceLoss", "Evidence"):
            assert f"\\newcommand{{\\{prefix}Verdict{claim}{suffix}}}" in tex
    for suffix in ("PoseDiffPerRms", "PoseDiffRaw", "PoseRivalRaw", "PoseFaces", "PoseSlots", "HairPerRms"):
        assert f"\\newcommand{{\\{prefix}VerdictPoseHair{suffix}}}" in tex
    assert f"\\newcommand{{\\{prefix}FaceLossMax}}" in tex
    assert "\\toprule" in tex and "\\bottomrule" in tex
    if name == "dcgan64":  # real faces: face measures are measured and the verdicts are decided
        assert metrics["n"]["faces_with_face"] == 2
        assert all(v["verdict"] != "not tested" for v in metrics["verdicts"].values())
    assert not list(tmp_path.rglob(".*.tmp")) and not list(tmp_path.rglob(".*.pdf"))  # no temp files left
