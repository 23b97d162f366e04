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
    span = {"encoder_axis": {**ci(3.0, 2.0, 4.0), "n_faces": 8}, "bridge_axis": {**ci(0.5, 0.2, 0.9), "n_faces": 8}}
    comps = {"headline_row": "clip-offline",
             "spans": {f"at_{p.ablate.steps}": {**span, "difference": ci(2.5, 1.4, 3.5)}},
             "vs_headline": {"learned": ci(0.3, -0.2, 0.8)},
             "fresh_vs_fixed": {"fresh-learned": {**ci(1.0, 0.5, 1.5), "seeds": [0]}}}
    text = abstract_text(p, comps)
    assert "the encoder is the larger lever" in text
    assert "intervals over the 8 test faces" in text             # the sample is named
    assert "minus the CLIP bridge" in text                        # the headline row, by its kind
    assert "not distinguishable" in text                          # the learned encoder's interval covers 0
    assert "CNN 1.0~dB [0.5, 1.5]" in text
    comps["spans"][f"at_{p.ablate.steps}"]["difference"] = ci(-0.1, -0.6, 0.4)
    assert "larger lever" not in abstract_text(p, comps)


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
