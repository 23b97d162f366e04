"""Layer-group study (src/clipbridge/edits.py, stage edits): offsets, strip, measures, verdicts."""

import dataclasses
import json
import math
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from clipbridge import edits
from clipbridge.edits import (DEFAULT_GROUPS, EditsConfig, draw_direction, groups_for, offset_scales, offset_ws,
                              offset_unit, report_strip, resolution_groups, synthesize)
from clipbridge.io import save_torch
from clipbridge.models.stylegan2 import Generator

TINY_GROUPS = {"4px": [0, 1], "8px": [1, 3], "16px": [3, 5], "rgb": [5, 6]}  # 16 px: 6 ws
SMOKE = EditsConfig(n_faces=2, n_draws=1, magnitudes=[1.0], w_std_samples=16, batch=8, bootstrap=50,
                    groups={"tiny": TINY_GROUPS, "dcgan64": DEFAULT_GROUPS["dcgan64"]})


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
    return edits.Analyzer()


@pytest.fixture(scope="module")
def lpips():
    return edits.lpips_for(64, random_trunk=True, seed=0, device="cpu")


def _face_ws(dcgan, n: int = 3) -> torch.Tensor:
    ws, found = edits.study_faces(dcgan, n, seed=0, batch=8)
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
    unit = offset_unit(G, edits.w_std(G, 16, 0), 1.0)
    group = (1, 3)
    d = draw_direction(G, 2, group, torch.Generator().manual_seed(0))
    base = synthesize(G, ws)
    assert torch.equal(synthesize(G, ws, group, d, 0.0, unit), base)
    assert not torch.equal(synthesize(G, ws, group, d, 1.0, unit), base)
    # a batch's images depend on the batch size only to float rounding (unfused modulation)
    assert torch.allclose(synthesize(G, ws[:1]), base[:1], atol=1e-5)


def test_magnitude_zero_gives_zero_measures(dcgan, analyzer, lpips):
    ws = _face_ws(dcgan, 2)
    base = synthesize(dcgan, ws)
    a = analyzer(base)
    out = edits.compare(a, analyzer(base.clone()), base, base.clone(), lpips)
    assert out["face_pair"].all()
    for m in edits.MEASURES:
        if m.key == "lowfreq":
            assert np.isnan(out[m.key]).all()                    # no change: no spectrum to share
        else:
            assert np.allclose(out[m.key], 0.0, atol=1e-6), m.key


def test_default_groups_partition_their_generators():
    assert resolution_groups(tiny_generator(64)) == {k: tuple(v) for k, v in DEFAULT_GROUPS["sg2-64"].items()}
    cfg = EditsConfig()
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
    unit = offset_unit(G, edits.w_std(G, 16, 0))
    strip = report_strip(G, ws, groups, cfg.strip_step, cfg.strip_show, seed=0, unit=unit)
    assert strip.shape == (4, len(cfg.strip_show), 3, 16, 16)
    base = synthesize(G, ws)[0]
    for row in strip:
        assert torch.allclose(row[0], base, atol=1e-5)
        assert not torch.equal(row[-1], base)
    # step k moves k * step along one direction: the change grows with k
    change = (strip - base).flatten(2).norm(dim=2)
    assert (change[:, 1:] > change[:, :-1]).all()


def test_lowfreq_share_and_alignment_and_colour():
    flat = torch.ones(1, 3, 32, 32) * 0.1                          # a uniform colour shift
    checker = (torch.arange(32)[:, None] + torch.arange(32)[None, :]) % 2 * 2.0 - 1.0
    assert edits.lowfreq_share(flat).item() == pytest.approx(1.0)
    assert edits.lowfreq_share(checker.expand(1, 3, 32, 32)).item() < 1e-6
    pts = np.random.default_rng(0).normal(size=(2, 68, 2))
    c, s = math.cos(0.3), math.sin(0.3)
    moved = 1.7 * pts @ np.array([[c, -s], [s, c]]) + np.array([5.0, -2.0])
    assert np.allclose(edits.similarity_residual(moved, pts), 0.0, atol=1e-9)
    assert (edits.similarity_residual(pts[::-1], pts) > 0.1).all()
    lab = edits.srgb_to_lab(np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]))
    assert np.allclose(lab, [[100, 0, 0], [0, 0, 0]], atol=0.01)


def test_same_seed_gives_identical_numbers(dcgan, analyzer, lpips):
    groups = groups_for(SMOKE, "dcgan64", dcgan)

    def once():
        ws = _face_ws(dcgan, 2)
        rows = edits.measure(dcgan, ws, groups, [0.5], 1, 0, 0.2, lpips, analyzer, batch=8, progress=False)
        return rows, edits.summarize(rows, list(groups), [0.5], 2, 1, 50, 0)

    (r1, s1), (r2, s2) = once(), once()
    assert json.dumps(r1) == json.dumps(r2) and json.dumps(s1) == json.dumps(s2)
    assert len(r1) == 2 * 4 and {r["group"] for r in r1} == set(groups)
    assert all(r["face_found_base"] for r in r1)


def test_summary_excludes_faceless_rows_and_counts_them():
    rows = []
    for face in range(4):
        for g in ("a", "b"):
            row = {"face": face, "draw": 0, "group": g, "magnitude": 1.0, "face_found_base": True,
                   "face_found_edit": not (g == "b" and face == 0)}
            row.update({m.key: (math.nan if (m.face and not row["face_found_edit"]) else float(face + 1))
                        for m in edits.MEASURES})
            rows.append(row)
    s = edits.summarize(rows, ["a", "b"], [1.0], 4, 1, 200, 0)
    a, b = s["a"]["1"], s["b"]["1"]
    assert a["n_excluded"] == 0 and b["n_excluded"] == 1 and b["n"] == 4
    assert a["raw"]["pose"]["mean"] == pytest.approx(2.5) and a["raw"]["pose"]["n"] == 4
    assert b["raw"]["pose"]["mean"] == pytest.approx(3.0) and b["raw"]["pose"]["n"] == 3   # faces 2, 3, 4
    assert b["raw"]["background"]["n"] == 4                                               # needs no face
    assert b["face_found_rate"]["mean"] == pytest.approx(0.75)
    assert a["per_rms"]["pose"]["mean"] == pytest.approx(1.0)                             # pose == rms here
    lo, hi = a["raw"]["pose"]["lo"], a["raw"]["pose"]["hi"]
    assert 1.0 <= lo < 2.5 < hi <= 4.0


# --------------------------------------------------------------------------------------------
# verdicts


def _vals(**groups):
    return {g: {"mean": m, "lo": lo, "hi": hi} for g, (m, lo, hi) in groups.items()}


def test_verdict_rule():
    v = _vals(a=(5.0, 4.0, 6.0), b=(3.0, 2.0, 3.5), c=(1.0, 0.5, 1.5))
    assert edits.part_verdict(v, "a") == "supported"                 # first, CI clear of the runner-up
    v = _vals(a=(5.0, 3.0, 6.0), b=(4.0, 2.0, 4.5), c=(1.0, 0.5, 1.5))
    assert edits.part_verdict(v, "a") == "mixed"                     # first, CIs overlap
    assert edits.part_verdict(v, "b") == "mixed"                     # second, tied with the top
    assert edits.part_verdict(v, "c") == "not supported"
    v["a"]["mean"] = math.nan
    assert edits.part_verdict(v, "a") == "not tested"
    assert edits.combine(["supported", "supported"]) == "supported"
    assert edits.combine(["supported", "not supported"]) == "mixed"
    assert edits.combine(["not supported", "not tested"]) == "not supported"
    assert edits.combine(["not tested"]) == "not tested"


def test_judge_reads_the_claimed_groups_in_order():
    groups = ["g0", "g1", "g2", "g3"]
    big = {"pose": 0, "hair": 0, "shape": 1, "skin": 2, "age": 3, "background": 3}  # measure -> winning group

    def cell(g):
        return {"per_rms": {k: {"mean": 10.0 if groups.index(g) == w else 1.0, "lo": 9.0 if groups.index(g) == w
                                else 0.5, "hi": 11.0 if groups.index(g) == w else 1.5} for k, w in big.items()}}

    summary = {g: {"2": cell(g)} for g in groups}
    out = edits.judge(summary, groups, 2.0)
    assert {k: v["verdict"] for k, v in out.items()} == {
        "pose_hair": "supported", "features": "supported", "skin": "mixed", "background": "supported"}
    assert out["skin"]["parts"]["age"]["verdict"] == "not supported" and out["background"]["group"] == "g3"
    assert all(v["verdict"] == "not tested" for v in edits.judge(summary, groups[:3], 2.0).values())


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
    assert set(metrics["verdicts"]) == {c.key for c in edits.CLAIMS}
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
        assert f"\\newcommand{{\\{prefix}Verdict{claim}}}" in tex
    assert "\\toprule" in tex and "\\bottomrule" in tex
    if name == "dcgan64":  # real faces: face measures are measured and the verdicts are decided
        assert metrics["n"]["faces_with_face"] == 2
        assert all(v["verdict"] != "not tested" for v in metrics["verdicts"].values())
    assert not list(tmp_path.rglob(".*.tmp")) and not list(tmp_path.rglob(".*.pdf"))  # no temp files left
