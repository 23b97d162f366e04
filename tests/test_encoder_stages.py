"""The encoder study's stages answer bad input with one line: an unknown row lists the valid ones,
missing embeddings name the file and the stage that writes them."""

import dataclasses

import pytest

from clipbridge import config, paths
from clipbridge.errors import MissingFileError, UnknownNameError
from clipbridge.stages import study


def params():
    return dataclasses.replace(config.load(), encoders=config.Encoders(encoders=["clip-offline", "pixels-16"],
                                                                        fresh=["learned"]))


def test_rows_are_encoders_learned_and_fresh_rows():
    cfg = params().encoders
    assert study.parse_row(cfg, "pixels-16") == ("pixels-16", False)
    assert study.parse_row(cfg, "learned") == ("learned", False)
    assert study.parse_row(cfg, "fresh-learned") == ("learned", True)
    with pytest.raises(UnknownNameError) as info:
        study.parse_row(cfg, "fresh-pixels-16")          # not in encoders.fresh
    msg = str(info.value.args[0])
    assert "\n" not in msg and "'fresh-pixels-16'" in msg and "fresh-learned" in msg and "pixels-16" in msg


def test_missing_embeddings_name_the_file_and_the_stage(tmp_path, monkeypatch):
    p = params()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MissingFileError, match=r"data/embeddings/dcgan64/pixels-16\.pt: embeddings missing .*embed"):
        study.inputs_of(p, "dcgan64", "pixels-16", False, {})
    assert not paths.study_results("dcgan64", "pixels-16", 0).exists()    # nothing written


def ci(mean, lo, hi, n=16):
    return {"mean": mean, "lo": lo, "hi": hi, "n": n, "excludes_zero": lo > 0 or hi < 0}


def test_generated_answer_reads_only_what_the_intervals_support():
    from clipbridge.report.encoders import abstract_text

    p = params()
    headroom = {"encoder_headroom": {**ci(1.2, 1.0, 1.4), "n_faces": 8, "best": "pixels-16"},
                "bridge_headroom": {**ci(0.2, 0.1, 0.3), "n_faces": 8, "best": "width-4096"}}
    comps = {"headline_row": "clip-offline",
             "spans": {f"at_{p.ablate.steps}": {**headroom, "headroom_difference": ci(1.0, 0.7, 1.3)}},
             "vs_headline": {"learned": ci(0.3, -0.2, 0.8)},
             "fresh_vs_fixed": {"fresh-learned": {**ci(1.0, 0.5, 1.5), "seeds": [0]}}}
    text = abstract_text(p, comps)
    assert "the encoder, not the bridge, limits it" in text
    assert "best other encoder (pixels 16x16)" in text and "bridge (width-4096)" in text
    assert "intervals over the 8 test faces and the seeds" in text  # the sample is named
    assert "minus the CLIP bridge" in text                        # the headline row, by its kind
    assert "(its interval includes 0)" in text                     # the learned encoder's interval covers 0
    assert "CNN 1.00~dB [0.50, 1.50] (better)" in text
    comps["spans"][f"at_{p.ablate.steps}"]["headroom_difference"] = ci(-0.1, -0.6, 0.4)
    assert "limits it" not in abstract_text(p, comps)


def test_headroom_is_the_best_other_row_over_the_reference():
    import numpy as np

    from clipbridge import stats
    from clipbridge.stages.encoders import headroom

    rng = np.random.default_rng(0)
    ref = rng.normal(17, 1, 64)
    faces = {"ref": ref, "better": ref + 0.5 + rng.normal(0, 0.3, 64), "worse": ref - 1 + rng.normal(0, 0.3, 64)}
    w = stats.cluster_weights(64, 400, np.random.default_rng(1))
    h = headroom(faces, "ref", w)
    assert h["best"] == "better" and h["lo"] < 0.5 < h["hi"] and h["excludes_zero"]
    assert abs(h["mean"] - (faces["better"] - ref).mean()) < 1e-9
    # every other row is worse: the headroom is negative, not clipped at zero
    low = headroom({"ref": ref, "worse": faces["worse"]}, "ref", w)
    assert low["hi"] < 0 and low["best"] == "worse"


def test_seed_noise_widens_an_interval_and_can_make_a_difference_undecidable():
    import math

    from clipbridge.stages.encoders import Z_CI, seed_sd, with_seed_noise

    assert math.isclose(seed_sd((0.3, 3), (0.4, 1)), math.sqrt(0.09 / 3 + 0.16))
    assert seed_sd((float("nan"), 1), (0.0, 1)) == 0.0             # one seed, no training: nothing to add
    faces = ci(0.3, 0.2, 0.45)
    same = with_seed_noise(faces, 0.0)
    assert (same["lo"], same["hi"], same["excludes_zero"]) == (0.2, 0.45, True)
    wide = with_seed_noise(faces, 0.2)                              # seeds spread more than the faces do
    assert wide["lo"] < 0 < 0.3 < 0.45 < wide["hi"] and not wide["excludes_zero"]
    assert (wide["face_lo"], wide["face_hi"]) == (0.2, 0.45)        # the faces-only interval is kept
    assert math.isclose(0.3 - wide["lo"], math.hypot(0.1, Z_CI * 0.2))


def test_bridge_cells_find_the_stalled_seed_from_the_committed_table(monkeypatch):
    """The bridge axis comes from the ablations stage's committed table and per-face scores: the
    stalled seed is the one whose leaving-out gives the table's PSNR; a table its scores do not
    give is refused in one line."""
    import numpy as np

    from clipbridge.config import AblationCell
    from clipbridge.errors import BadValueError
    from clipbridge.stages import encoders

    rng = np.random.default_rng(0)
    scores = {s: rng.normal(17.0, 2.0, 16) for s in range(3)}
    scores[1] = np.full(16, 9.3)                                   # seed 1 collapsed
    table = [{"cell": "width-4096", "generator": "dcgan64", "n_stalled": 1, "psnr_std": 0.05,
              "psnr": float(np.mean([scores[0].mean(), scores[2].mean()]))},
             {"cell": "depth-8", "generator": "sg2-64", "n_stalled": 0, "psnr_std": 0.1, "psnr": 0.0}]

    def read_csv(path):
        if path == encoders.ABLATIONS_TABLE:
            return table
        return [{"index": i, "psnr": float(v)} for i, v in enumerate(scores[int(path.stem.removeprefix("seed"))])]

    monkeypatch.setattr(encoders, "read_csv", read_csv)
    p = dataclasses.replace(params(), ablate=dataclasses.replace(
        params().ablate, seeds=[0, 1, 2], cells={"width-4096": AblationCell(generator="dcgan64", width=4096),
                                                 "depth-8": AblationCell(generator="sg2-64", depth=8)}))
    [cell] = encoders.bridge_cells(p, "dcgan64")                    # the other generator's cell is not read
    assert cell["cell"] == "width-4096" and cell["n_seeds"] == 2 and cell["psnr_std"] == 0.05
    assert np.allclose(cell["face_psnr"], (scores[0] + scores[2]) / 2)
    table[0]["psnr"] += 0.01
    with pytest.raises(BadValueError, match=r"table\.csv: cell 'width-4096' does not match"):
        encoders.bridge_cells(p, "dcgan64")
