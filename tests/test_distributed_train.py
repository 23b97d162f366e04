"""The bridge and the student under torchrun: 2 CPU processes equal one, and rank 0 alone writes.

Each test runs a stage or training function in one process and as 2 gloo ranks (``python -m
torch.distributed.run --nproc_per_node=2 tests/test_distributed_train.py JOB``; this file is the
ranks' script) on a global batch of 7 rows, so the shards have 4 and 3 rows. Rank r works in its
own directory ``rank<r>/``: whatever rank 1 writes there would show. The results differ from
one process only in the order of float32 sums (see tests/test_distributed.py).
"""

import csv
import dataclasses
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

from clipbridge import config, distributed, paths, registry
from clipbridge.offline import distill as distillation
from clipbridge.config import DistillConfig
from clipbridge.offline.distill import build_student, heldout_z
from clipbridge.io import save_torch, to_uint8
from clipbridge.models.dcgan import from_package
from clipbridge.models.stylegan2 import load_checkpoint
from clipbridge.stages import distill as distill_stage
from clipbridge.stages import load_split
from clipbridge.stages import train as train_stage
from clipbridge.bridge.train import train as train_bridge

STUDENT = dict(img_resolution=16, w_dim=32, channel_base=256, channel_max=32)
# w+ with every loss term, so LPIPS and the latent loss run inside the DDP module too
BRIDGE = config.Train(depth=2, width=32, target="w+", steps=4, batch=7, lr=2e-3, loss_lpips=0.5,
                      loss_latent=0.5, log_every=2)
BRIDGE_SEED = 3
DISTILL = DistillConfig(**STUDENT, batch=7, steps=6, warmup_steps=2, log_every=1, eval_every=3, eval_n=5,
                        checkpoint_every_seconds=1e9, final_eval_n=8, final_eval_hierarchy_n=4,
                        ema_beta=0.9, loss_l2=0.5, loss_lpips=0.5)
RESUME_AT = 3


def _params() -> SimpleNamespace:
    """What the train and distill stages read of config.Params."""
    groups = {"4px": [0, 1], "8px": [1, 3], "16px": [3, 5], "16px-rgb": [5, 6]}   # the 16 px student's 6 ws
    return SimpleNamespace(device="cpu", train=BRIDGE, distill=DISTILL, edits=SimpleNamespace(groups={"sg2-64": groups}),
                           active=SimpleNamespace(lpips="LPIPS-rand"), evaluate=SimpleNamespace(lpips_seed=0))


def _launch(job: Path, kind: str, root: Path) -> None:
    # imported here: the ranks import this file too and need none of the CLIP test's imports
    from test_distributed import _torchrun

    torch.save({"kind": kind, "root": str(root)}, job)
    _torchrun(job, 2, __file__)


def _worker(job: Path) -> None:
    """One rank: runs in ``root/rank<r>`` the part of a test that ``job`` names."""
    torch.set_num_threads(1)
    spec = torch.load(job, weights_only=True)
    os.chdir(Path(spec["root"]) / f"rank{distributed.rank()}")
    if spec["kind"] == "bridge-stage":
        train_stage.main(_params(), "tiny", str(BRIDGE_SEED))
    elif spec["kind"] == "distill-train":
        teacher = from_package()[0]
        with distributed.session("cpu") as device:
            assert distributed.world_size() == 2
            distillation.train(DISTILL, "full.pt", "full.csv", device, resume=False, teacher=teacher)
            distillation.train(DISTILL, distill_stage.CHECKPOINT, device=device, resume=False,
                               teacher=teacher, stop_at_step=RESUME_AT)
    elif spec["kind"] == "distill-stage":
        distill_stage.main(_params())
    else:
        raise ValueError(spec["kind"])


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def _curve(path: Path) -> tuple[list[str], torch.Tensor]:
    """Columns other than ``seconds`` and their values [rows, columns] (NaN = empty) of a curve CSV."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    keys = [k for k in rows[0] if k != "seconds"]
    return keys, torch.tensor([[float(r[k] or "nan") for k in keys] for r in rows], dtype=torch.float64)


def _assert_close_curves(a: Path, b: Path) -> None:
    (keys_a, va), (keys_b, vb) = _curve(a), _curve(b)
    assert keys_a == keys_b and va.shape == vb.shape      # one writer: no duplicated rows
    assert torch.allclose(va, vb, rtol=1e-5, atol=1e-5, equal_nan=True), (keys_a, (va - vb).abs().amax(0))


def _assert_close_states(a: dict, b: dict, lr: float) -> None:
    """The parameters of two runs agree within 1e-5, except at a few coordinates by less than lr.

    The exception: a coordinate whose exact gradient is ~0 (1e-9 where the others are ~1e-3)
    gets an Adam step ``lr * g / (|g| + eps)`` that float32 round-off in ``g`` changes by up to
    ``lr``; the runs sum their gradients in another order. (Seen here: one weight of the student
    off by 6e-5.) What the trained model computes is compared separately, to 1e-5.
    """
    assert a.keys() == b.keys()
    diff = {k: (a[k].float() - b[k].float()).abs() for k in a}
    off = sum(int((d > 1e-5).sum()) for d in diff.values())
    assert off <= 1e-3 * sum(d.numel() for d in diff.values()), {k: float(d.max()) for k, d in diff.items()}
    assert max(float(d.max()) for d in diff.values()) < lr


def _moved(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def _bridge_inputs(dirs: list[Path]) -> None:
    """A tiny StyleGAN2 model file ``tiny`` and its train (24) / val (5) splits in each dir."""
    G = build_student(DistillConfig(**STUDENT)).eval().requires_grad_(False)
    files = {paths.generator_file("tiny"): {"kind": "stylegan2", "state_dict": G.state_dict(),
                                            "init_kwargs": G.init_kwargs, "meta": {"name": "tiny"}}}
    for split, n, seed in (("train", 24, 1), ("val", 5, 2)):
        gen = torch.Generator().manual_seed(seed)
        z = torch.randn(n, 100, generator=gen)
        with torch.no_grad():
            ws = G.mapping(z, None)
            images = to_uint8(G.synthesis(ws, noise_mode="const"))
        emb = torch.nn.functional.normalize(torch.randn(n, 16, generator=gen), dim=-1)
        files[paths.dataset_split("tiny", split)] = {"z": z, "ws": ws, "images": images, "emb": emb}
    for d in dirs:
        for path, obj in files.items():
            save_torch(obj, d / path)


def test_bridge_stage_on_two_processes_equals_one(tmp_path, monkeypatch):
    """``stages.train`` under torchrun: the bridge and its curve equal one process's; rank 0 alone
    writes them."""
    one, rank0, rank1 = (tmp_path / d for d in ("one", "rank0", "rank1"))
    _bridge_inputs([one, rank0, rank1])
    inputs = _files(rank1)
    monkeypatch.chdir(one)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                      # as each rank
    try:
        train_stage.main(_params(), "tiny", str(BRIDGE_SEED))
        G = registry.load_generator(paths.generator_file("tiny"))
        init, _ = train_bridge(G, load_split("tiny", "train"), load_split("tiny", "val"),
                               dataclasses.replace(BRIDGE, seed=BRIDGE_SEED, steps=0), "cpu", None, BRIDGE.batch)
    finally:
        torch.set_num_threads(threads)
    _launch(tmp_path / "job.pt", "bridge-stage", tmp_path)
    assert _files(rank1) == inputs                # rank 1 wrote nothing
    bridge, curve = paths.bridge_file("tiny", BRIDGE_SEED), train_stage.curve_file("tiny", BRIDGE_SEED)
    assert _files(rank0) == inputs | {str(bridge), str(curve)}
    a, b = (torch.load(d / bridge, weights_only=True) for d in (one, rank0))
    assert a["params"] == b["params"] and a["init_kwargs"] == b["init_kwargs"]
    assert _moved(a["state_dict"], init.state_dict()) > 1e-3      # training did move the weights
    _assert_close_states(a["state_dict"], b["state_dict"], BRIDGE.lr)
    emb = load_split("tiny", "val")["emb"]
    with torch.no_grad():
        latents = [registry.load_bridge(d / bridge)(emb) for d in (one, rank0)]
    assert torch.allclose(*latents, rtol=0, atol=1e-5)
    _assert_close_curves(one / curve, rank0 / curve)


def test_distillation_on_two_processes_equals_one_and_resumes(tmp_path):
    """The student on 2 ranks: uninterrupted (``distill.train``) equals one process; stopped after
    3 steps and finished by ``stages.distill`` (every rank resuming from the shared checkpoint)
    it equals the uninterrupted 2-rank run exactly; rank 0 alone writes."""
    shared = tmp_path / "shared"
    shared.mkdir()
    for r in (0, 1):                              # one checkpoint directory, as on one machine
        (tmp_path / f"rank{r}").mkdir()
        (tmp_path / f"rank{r}" / paths.CHECKPOINTS).symlink_to(shared, target_is_directory=True)
    G_one, _ = distillation.train(DISTILL, tmp_path / "one.pt", tmp_path / "one.csv", resume=False,
                                  teacher=from_package()[0])
    _launch(tmp_path / "job1.pt", "distill-train", tmp_path)
    assert load_checkpoint(shared / "sg2-64.pt")[1]["step"] == RESUME_AT
    _launch(tmp_path / "job2.pt", "distill-stage", tmp_path)
    rank0, rank1 = tmp_path / "rank0", tmp_path / "rank1"
    assert not _files(rank1) - {str(distill_stage.CHECKPOINT)}      # only the shared checkpoint is there
    outputs = {str(f) for f in (distill_stage.CURVE, distill_stage.METRICS, distill_stage.FIGURE)}
    assert {"full.pt", "full.csv"} | outputs <= _files(rank0)

    full = torch.load(rank0 / "full.pt", weights_only=True)
    resumed = torch.load(shared / "sg2-64.pt", weights_only=True)
    assert full["step"] == resumed["step"] == DISTILL.steps
    for key in ("state_dict", "student"):
        assert full[key].keys() == resumed[key].keys()
        assert all(torch.equal(full[key][k], resumed[key][k]) for k in full[key]), key
    for sa, sb in zip(full["optimizer"]["state"].values(), resumed["optimizer"]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    (keys, values), (keys_resumed, resumed_values) = _curve(rank0 / "full.csv"), _curve(rank0 / distill_stage.CURVE)
    assert keys == keys_resumed and torch.allclose(values, resumed_values, rtol=0, atol=0, equal_nan=True)

    one = torch.load(tmp_path / "one.pt", weights_only=True)
    assert _moved(one["student"], build_student(DISTILL).state_dict()) > 1e-3
    for key in ("state_dict", "student"):
        _assert_close_states(one[key], full[key], DISTILL.lr)
    G_ddp = load_checkpoint(rank0 / "full.pt")[0]
    assert G_one.mapping.w_avg.abs().max() > 0      # tracked from the gathered rows of each step
    assert torch.allclose(G_one.mapping.w_avg, G_ddp.mapping.w_avg, rtol=0, atol=1e-6)
    z = heldout_z(16)
    with torch.no_grad():
        assert torch.allclose(G_one(z), G_ddp(z), rtol=0, atol=1e-5)
    _assert_close_curves(tmp_path / "one.csv", rank0 / "full.csv")


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
