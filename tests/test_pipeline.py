"""The whole pipeline on the smoke profile, in a temporary copy of the repository."""

import json

import pytest

from helpers import defined_macros, figure_path, graphics, paper_body, used_macros
from helpers import dvc as _dvc


@pytest.fixture(scope="module")
def smoke(smoke_repo):
    return smoke_repo


GENERATORS = ("dcgan64", "sg2-64")


def test_metrics_finite_and_in_range(smoke):
    root, _ = smoke
    for g in GENERATORS:
        ev = json.loads((root / f"results/evaluate/{g}/metrics.json").read_text())
        assert ev["generator"] == g and ev["encoder"].startswith("offline CLIP")
        assert ev["lpips_variant"] == "ST-LPIPS" and ev["lpips_loss"] == "LPIPS-rand"  # scored by what no method optimizes
        methods = {"mean_latent", "mean_image", "bridge", "bridge_refine", "opt_short", "opt_w"}
        assert methods <= set(ev["methods"]) and set(ev["subset"]) == set(ev["methods"])  # one face set for all
        assert ("opt_wplus" in ev["methods"]) == (g == "sg2-64")  # only the student has W+
        assert ev["methods"]["bridge"]["n_seeds"] == 2 and len(ev["methods"]["bridge"]["seeds"]) == 2
        assert ev["subset"]["bridge"]["n_seeds"] == 2 and ev["subset"]["bridge_refine"]["n_seeds"] == 2
        for method, v in ev["methods"].items():
            n = 16 if method in ("mean_latent", "mean_image", "bridge") else 4  # optimization: n_opt faces
            assert v.get("n_images", n) == n
            assert 0 < v["mse"] < 4 and 0 < v["psnr"] < 60 and -1 <= v["ssim"] <= 1 and 0 <= v["lpips"] < 2
            assert v["ms_per_image"] > 0
        c = ev["comparison"]
        assert c["speed_ratio"] > 0 and c["ceiling"] == ("opt_wplus" if g == "sg2-64" else "opt_w")
        assert c["floor"] in ("mean_latent", "mean_image")
        assert c["floor_psnr"][c["floor"]] == max(c["floor_psnr"].values())
        for key in ("bridge_vs_floor", "refine_vs_opt_short"):
            d = c[key]["psnr"]
            assert d["n"] == 4 and d["lo"] <= d["mean"] <= d["hi"]
        inst = ev["instrument"]
        assert {"mirror", "shift", "random_pairs", "majority_gender"} <= set(inst)
        assert inst["majority_gender"] is None or 0.5 <= inst["majority_gender"] <= 1
        curve = (root / f"results/evaluate/{g}/speed_quality.csv").read_text().splitlines()
        assert curve[0] == "method,step,ms_per_image,psnr,lpips" and len(curve) > 4
    clip = json.loads((root / "results/clip/metrics.json").read_text())
    assert clip["train_device"].startswith("CPU (") and clip["train_seconds"] > 0
    for model in ("trained", "random_init"):
        assert 0 <= clip[model]["i2t_r1"] <= clip[model]["i2t_r5"] <= 1
        assert 0 <= clip[model]["train_i2t_r1"] <= clip[model]["train_i2t_r5"] <= 1
        assert -1 <= clip[model]["mean_pairwise_cosine"] <= 1


def test_ablation_cells_aggregate_into_tables(smoke):
    root, _ = smoke
    rows = (root / "results/ablations/table.csv").read_text().splitlines()
    assert rows[0].startswith("cell,generator,n_seeds,steps,n_stalled,stalled_psnr,psnr,psnr_std")
    assert rows[0].endswith("reference,delta_psnr,delta_lo,delta_hi")
    assert sorted(r.split(",")[0] for r in rows[1:]) == sorted(
        ["report-dcgan64", "depth-1", "report-sg2", "target-wplus", "groups-fine"])
    tex = (root / "paper/generated/ablation_tables.tex").read_text()
    for table in ("Depth", "Target", "Groups"):
        assert f"\\newcommand{{\\AblationTable{table}}}" in tex
    assert "\\newcommand{\\AblationStalledNote}" in tex
    faces = (root / "results/ablate/groups-fine/seed0.csv").read_text().splitlines()
    assert faces[0].startswith("index,") and len(faces) == 1 + 16            # one row per test face
    assert "groups-fine,sg2-64" in "\n".join(rows) and "16px-rgb" in tex     # the predicted group is shown


def test_photos_through_every_method(smoke):
    root, _ = smoke
    for g in GENERATORS:
        m = json.loads((root / f"results/photos/{g}/metrics.json").read_text())
        assert m["photos"] == ["astronaut.png", "grace_hopper.jpg"]
        assert {"mean_latent", "bridge", "bridge_refine", "opt_w", "report_one_photo"} <= set(m["methods"])
        assert set(m["report_rgb_after"]) == set(m["photos"])


def test_curve_and_figures_written(smoke):
    root, _ = smoke
    lines = (root / "results/train/dcgan64/seed0.csv").read_text().splitlines()
    assert lines[0].startswith("step,") and len(lines) == 1 + 3  # 12 steps logged every 4
    figs = [f"bridge/{f}_{g}.pdf" for f in ("loss_curve", "reconstructions", "speed_quality") for g in GENERATORS]
    figs += ["bridge/clip_curve.pdf", "bridge/ablation_depth.pdf", "bridge/ablation_target.pdf",
             "photos_dcgan64.pdf", "teacher_student.pdf"]
    for fig in figs:
        data = (root / "results/figures" / fig).read_bytes()
        assert data.startswith(b"%PDF") and len(data) > 1000, fig


def test_every_paper_macro_and_figure_is_generated(smoke):
    root, _ = smoke
    tex = paper_body(root)
    missing = used_macros(tex) - defined_macros(root / "paper/generated")
    assert not missing, f"macros used by the paper but not generated: {sorted(missing)}"
    for name in graphics(tex):
        assert figure_path(root, name) is not None, name


def test_metrics_show_fits_a_terminal(smoke):
    """Only compact headline files are DVC metrics: `dvc metrics show` stays under ~150 columns."""
    root, env = smoke
    run = _dvc(["metrics", "show", "--json"], root, env)
    assert run.returncode == 0, run.stderr

    def leaves(obj) -> int:
        return sum(leaves(v) for v in obj.values()) if isinstance(obj, dict) else 1

    shown = json.loads(run.stdout)
    data = {f: d["data"] for rev in shown.values() for f, d in rev["data"].items()}
    assert list(data) == ["results/headline.json"]
    assert 10 < leaves(data) <= 150, leaves(data)


def test_second_repro_is_a_noop(smoke):
    root, env = smoke
    run = _dvc(["repro"], root, env)
    assert run.returncode == 0
    assert "didn't change, skipping" in run.stdout or "up to date" in run.stdout
    assert "Running stage" not in run.stdout
