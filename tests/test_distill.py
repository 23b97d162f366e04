"""Distillation of the StyleGAN2 student from the DCGAN teacher, on a tiny 16 px student."""

import dataclasses
import json
from types import SimpleNamespace

import pytest
import torch

from clipbridge.config import DistillConfig
from clipbridge.offline.distill import (build_student, heldout_z, lr_at, teacher_images, train,
                                        training_z)
from clipbridge.io import ModelFileError
from clipbridge.models.stylegan2 import load_checkpoint

TINY = DistillConfig(img_resolution=16, w_dim=32, channel_base=256, channel_max=32, batch=4, steps=8,
                     warmup_steps=2, log_every=1, eval_every=4, eval_n=8, checkpoint_every_seconds=1e9,
                     final_eval_n=8, final_eval_hierarchy_n=4, ema_beta=0.9)


@pytest.fixture(scope="module")
def teacher():
    from clipbridge.models.dcgan import from_package

    return from_package()[0]


def _same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_z_streams_are_pure_and_disjoint():
    assert torch.equal(training_z(TINY, 3), training_z(TINY, 3))
    assert not torch.equal(training_z(TINY, 3), training_z(TINY, 4))
    assert not torch.equal(heldout_z(4, 0), training_z(TINY, 0))
    assert lr_at(TINY, 0) < lr_at(TINY, 2) == pytest.approx(TINY.lr)
    assert lr_at(TINY, TINY.steps) == pytest.approx(TINY.lr * TINY.lr_final)


@pytest.mark.parametrize("beta1", [0.0, 0.5])  # 0: Adam's first moment is not stored
def test_resume_is_bitwise_equal_to_uninterrupted(tmp_path, teacher, beta1):
    cfg = dataclasses.replace(TINY, beta1=beta1)
    G_full, state_full = train(cfg, tmp_path / "full.pt", teacher=teacher, resume=False)
    _, half = train(cfg, tmp_path / "split.pt", teacher=teacher, resume=False, stop_at_step=3)
    assert half["step"] == 3 and not half["done"]
    G_split, state_split = train(cfg, tmp_path / "split.pt", tmp_path / "curve.csv", teacher=teacher)
    assert state_split["step"] == state_full["step"] == cfg.steps and state_split["done"]
    assert _same_state(G_full.state_dict(), G_split.state_dict())
    full = torch.load(tmp_path / "full.pt", weights_only=True)
    split = torch.load(tmp_path / "split.pt", weights_only=True)
    assert _same_state(full["student"], split["student"])
    for sa, sb in zip(full["optimizer"]["state"].values(), split["optimizer"]["state"].values()):
        assert _same_state(sa, sb)
    assert [r["loss"] for r in state_full["curve"]] == [r["loss"] for r in state_split["curve"]]
    rows = (tmp_path / "curve.csv").read_text().splitlines()
    assert rows[0].startswith("step,loss") and len(rows) == 1 + cfg.steps


def test_loss_decreases(tmp_path, teacher):
    cfg = dataclasses.replace(TINY, steps=40, warmup_steps=5, eval_every=0, ema_beta=0.0)
    _, state = train(cfg, tmp_path / "c.pt", teacher=teacher, resume=False)
    losses = [r["loss"] for r in state["curve"]]
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5


def test_checkpoint_round_trip(tmp_path, teacher):
    G, state = train(TINY, tmp_path / "c.pt", teacher=teacher, resume=False)
    loaded, payload = load_checkpoint(tmp_path / "c.pt")
    assert _same_state(G.state_dict(), loaded.state_dict())
    assert payload["step"] == TINY.steps and payload["config"] == dataclasses.asdict(TINY)
    with torch.no_grad():
        assert torch.equal(G(heldout_z(4)), loaded(heldout_z(4)))


def test_w_avg_tracked_and_truncation(tmp_path, teacher):
    assert build_student(TINY).mapping.w_avg.abs().max() == 0
    G, _ = train(TINY, tmp_path / "c.pt", teacher=teacher, resume=False)
    w_avg = G.mapping.w_avg
    assert w_avg.abs().max() > 0
    with torch.no_grad():
        imgs = G(heldout_z(3), truncation_psi=0.0)
        mean_img = G.synthesis(w_avg.expand(1, G.num_ws, -1))
    assert torch.allclose(imgs, mean_img.expand_as(imgs), atol=1e-6)


def test_teacher_downsampled_to_student_resolution(teacher):
    z = heldout_z(2)
    full, small = teacher_images(teacher, z), teacher_images(teacher, z, 16)
    assert small.shape == (2, 3, 16, 16)
    assert torch.allclose(small, torch.nn.functional.avg_pool2d(full, 4), atol=1e-6)


def test_bad_checkpoint_is_one_line_naming_file(tmp_path, teacher):
    bad = tmp_path / "c.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelFileError) as e:
        train(TINY, bad, teacher=teacher)
    assert str(bad) in str(e.value) and "\n" not in str(e.value)


def test_stage_writes_outputs(tmp_path, monkeypatch):
    from clipbridge.stages import distill as stage

    monkeypatch.chdir(tmp_path)
    groups = {"4px": [0, 1], "8px": [1, 3], "16px": [3, 5], "16px-rgb": [5, 6]}   # the 16 px student's 6 ws
    stage.main(SimpleNamespace(distill=TINY, device="cpu", edits=SimpleNamespace(groups={"sg2-64": groups})))
    for out in (stage.CHECKPOINT, stage.CURVE, stage.METRICS, stage.FIGURE):
        assert (tmp_path / out).is_file(), out
    metrics = json.loads((tmp_path / stage.METRICS).read_text())
    assert {"psnr", "lpips_rand", "ssim", "face_rate_student", "face_rate_teacher", "hierarchy", "step",
            "train_seconds", "config"} <= metrics.keys()
    assert {"coarse", "fine", "coarse_moves_landmarks_more", "fine_is_more_colour"} <= metrics["hierarchy"].keys()
    assert metrics["hierarchy"]["coarse"]["ws"] == [0, 1] and metrics["hierarchy"]["fine"]["ws"] == [5, 6]  # params'
    assert metrics["step"] == TINY.steps and metrics["face_rate_teacher"] > 0
    assert metrics["train_device"].startswith("CPU (") and metrics["eval_device"] == "cpu"  # from meta.device
    G, _ = load_checkpoint(tmp_path / stage.CHECKPOINT)
    assert G.img_resolution == 16
