"""Data-parallel training: the torchrun helpers, and DDP on 2 CPU processes equals one process.

Run by pytest; torchrun also runs this file as the training script of the 2-process run
(``python -m torch.distributed.run --nproc_per_node=2 tests/test_distributed.py JOB``).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from clipbridge import distributed
from clipbridge.offline import clip_model, clip_train
from test_offline_clip import TINY, coloured_faces

# A global batch of 15 over 2 ranks: uneven shards of 8 and 7 rows. SLIP on, so both
# contrastive losses (CLIP and NT-Xent) and the augmentation draws cross the shard boundary.
ARGS = dict(steps=4, batch=15, lr=2e-3, warmup=1, schedule="cosine", slip_weight=0.5, seed=3,
            log_every=1, progress=False)


def test_shards_partition_the_batch_in_rank_order():
    for world in range(1, 5):
        for total in range(world, 21):
            slices = [distributed.shard_slice(total, r, world) for r in range(world)]
            assert slices[0].start == 0 and slices[-1].stop == total
            assert all(a.stop == b.start for a, b in zip(slices, slices[1:]))   # contiguous
            sizes = [s.stop - s.start for s in slices]
            assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
            assert slices == [distributed.shard_slice(total, r, world) for r in range(world)]
    assert distributed.shard_slice(15, 0, 2) == slice(0, 8)
    assert distributed.shard_slice(15, 1, 2) == slice(8, 15)
    rows = torch.arange(15)
    shards = [rows[distributed.shard_slice(15, r, 2)] for r in range(2)]
    assert torch.equal(torch.cat(shards), rows)
    with pytest.raises(ValueError, match="at least one row"):
        distributed.shard_slice(3, 0, 4)
    with pytest.raises(ValueError, match=r"rank 2 is not in \[0, 2\)"):
        distributed.shard_slice(8, 2, 2)
    # the per-shard mean scaled by mean_scale, averaged over ranks, is the global mean
    losses = torch.rand(15, generator=torch.Generator().manual_seed(0))
    means = []
    for r in range(2):
        with pytest.MonkeyPatch.context() as env:
            env.setenv("WORLD_SIZE", "2")
            env.setenv("RANK", str(r))
            means.append(float(losses[distributed.shard_slice(15)].mean())
                         * distributed.mean_scale(15))
    assert sum(means) / 2 == pytest.approx(float(losses.mean()), rel=1e-6)


def test_helpers_are_no_ops_in_a_plain_process(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert distributed.init("cpu") == torch.device("cpu") and not distributed.is_initialized()
    assert (distributed.world_size(), distributed.rank(), distributed.is_main()) == (1, 0, True)
    assert distributed.shard_slice(16) == slice(0, 16) and distributed.mean_scale(15) == 1.0
    x = torch.randn(5, 3, requires_grad=True)
    assert distributed.gather_rows(x) is x and torch.equal(distributed.shard(x), x)
    module = torch.nn.Linear(3, 2)
    assert distributed.wrap(module) is module and distributed.unwrap(module) is module
    assert distributed.all_reduce_mean(torch.tensor(2.5), weight=7) == 2.5
    assert distributed.any_rank(True) is True and distributed.any_rank(False) is False
    distributed.barrier()
    distributed.cleanup()
    # rank 0 keeps the seed (one process seeds as before); other ranks get unrelated seeds
    assert distributed.rank_seed(7) == 7 and distributed.seed_rank(7) == 7
    others = {distributed.rank_seed(s, r) for s in range(4) for r in range(1, 4)}
    assert len(others) == 12 and not others & set(range(4))


def test_torchrun_environment_without_init_is_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert distributed.world_size() == 2 and not distributed.is_main()
    with pytest.raises(RuntimeError, match="call clipbridge.distributed.init"):
        distributed.gather_rows(torch.zeros(2, 3))
    with pytest.raises(RuntimeError, match="call clipbridge.distributed.init"):
        clip_train.train(*_data(), TINY, **ARGS)


class _Contrastive(torch.nn.Module):
    """A toy contrastive loss: rows mapped by a linear layer, logits between all rows of the
    global batch times a learned scale (a parameter used in the loss, not through the rows)."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.lin = torch.nn.Linear(4, 3)
        with torch.no_grad():
            for p in self.lin.parameters():
                p.copy_(torch.randn(p.shape, generator=g))
        self.scale = torch.nn.Parameter(torch.tensor(1.5))

    def forward(self, x: torch.Tensor, total: int) -> torch.Tensor:
        f = distributed.gather_rows(torch.nn.functional.normalize(self.lin(x), dim=-1), total)
        logits = self.scale * f @ f.roll(1, 0).T
        return torch.nn.functional.cross_entropy(logits, torch.arange(total))


def _contrastive_grads(total: int = 15) -> dict[str, torch.Tensor]:
    """Gradients of the toy loss on a fixed global batch of ``total`` rows, this rank's shard
    forwarded through DDP (one process: the whole batch)."""
    x = torch.randn(total, 4, generator=torch.Generator().manual_seed(1))
    module = _Contrastive()
    ddp = distributed.wrap(module)    # held until backward is done: its hooks average gradients
    ddp(distributed.shard(x), total).backward()
    return {k: p.grad for k, p in module.named_parameters()}


def _data():
    x, _, caps = coloured_faces(32)
    return x, caps


def _torchrun(job: Path, nproc: int, script: str = __file__) -> None:
    """Run ``script JOB`` as ``nproc`` torchrun ranks (free port: ``--standalone``); assert success."""
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(clip_model.__file__).parents[2]),
                                          os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          f"--nproc_per_node={nproc}", script, str(job)],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]


def _worker(job: Path) -> None:
    """One rank of the torchrun job described by ``job`` (a torch file of train arguments)."""
    torch.set_num_threads(1)
    spec = torch.load(job, weights_only=True)
    with distributed.session("cpu") as device:
        assert distributed.world_size() == spec["world"]
        model = clip_train.train(*_data(), TINY, **spec["args"], device=device,
                         ckpt_path=spec["ckpt"], curve_csv=spec["curve"])
        torch.save(clip_model.trained_state_dict(model), f"{spec['out']}.rank{distributed.rank()}.pt")
        torch.save(_contrastive_grads(), f"{spec['out']}.grads{distributed.rank()}.pt")
        # logging helpers: shards of 8 and 7 rows with means 0 and 1 average to 7/15
        r = distributed.rank()
        assert distributed.all_reduce_mean(float(r), weight=8 - r) == 7 / 15
        assert distributed.any_rank(r == 1) and not distributed.any_rank(False)
        distributed.barrier()


def _curve(path: Path) -> torch.Tensor:
    """[rows, 4]: step, loss, clip_loss, slip_loss of a training curve CSV."""
    lines = path.read_text().splitlines()
    assert lines[0].startswith("step,loss,clip_loss,slip_loss,")
    return torch.tensor([[float(v) for v in line.split(",")[:4]] for line in lines[1:]])


def _without_key_projection(state: dict) -> dict:
    """Parameters with the attention key projection's rows removed (see the test below)."""
    w = TINY.width
    return {k: torch.cat([v[:w], v[2 * w:]]) if ".attn.in_proj_" in k else v
            for k, v in state.items()}


def _model(state: dict):
    model = clip_model.build_model(TINY)
    model.load_state_dict(state, strict=False)
    return model


def test_ddp_on_two_cpu_processes_equals_one_process(tmp_path):
    """The same global batch of 15 trained 4 steps in 1 process and as 2 gloo ranks (which stop
    after 2 steps and resume from rank 0's state) gives the same model.

    Not bit-identical: each rank's forward runs on its 8 or 7 rows and the weight gradients are
    summed per shard, then across ranks, where one process sums all 15 rows in one reduction:
    float32 sums in another order, ~1e-7 apart after 4 steps. The exception is the attention
    key projection (bias, and weight along directions shared by all tokens): softmax ignores a
    shift common to all keys, so its exact gradient is 0 and the computed one is rounding noise,
    which Adam normalizes into lr-sized steps that differ between the two runs (up to 7e-4 here,
    with no effect on any output). So the key rows are compared through the embeddings instead.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                      # as each rank: same kernels, same sum order
    try:
        x, caps = _data()
        init = clip_model.trained_state_dict(clip_train.train(x, caps, TINY, **{**ARGS, "steps": 0}))
        one = clip_train.train(x, caps, TINY, **ARGS, ckpt_path=tmp_path / "one.pt",
                       curve_csv=tmp_path / "one.csv")
        one = clip_model.trained_state_dict(one)
    finally:
        torch.set_num_threads(threads)
    ckpt, curve = tmp_path / "ddp.pt", tmp_path / "ddp.csv"
    for until in (2, None):                       # interrupted after 2 steps, then resumed
        job = tmp_path / f"job-{until}.pt"
        torch.save(dict(world=2, args={**ARGS, "until": until}, ckpt=str(ckpt), curve=str(curve),
                        out=str(tmp_path / f"until-{until}")), job)
        _torchrun(job, 2)
        if until:
            assert clip_model.load_checkpoint(ckpt)[1]["step"] == until
            assert clip_train.state_path(ckpt).is_file()
    rank0 = torch.load(tmp_path / "until-None.rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "until-None.rank1.pt", weights_only=True)
    saved, info = clip_model.load_checkpoint(ckpt)
    assert info["step"] == ARGS["steps"]
    # gather_rows + DDP give the gradient of the global loss, both for parameters reached
    # through the gathered rows and for those used directly in the loss (checked here on a toy
    # loss, since Adam would hide a wrong scale of the former)
    grads = _contrastive_grads()
    for r in (0, 1):
        ddp = torch.load(tmp_path / f"until-None.grads{r}.pt", weights_only=True)
        for k, g in grads.items():
            assert torch.allclose(ddp[k], g, rtol=1e-5, atol=1e-7), (r, k)
    for k in one:
        assert torch.equal(rank0[k], rank1[k]), k           # DDP keeps the replicas identical
        assert torch.equal(saved.state_dict()[k], rank0[k]), k   # rank 0 wrote its weights
    a, b, start = map(_without_key_projection, (one, rank0, init))
    moved = max(float((a[k] - start[k]).abs().max()) for k in a)
    assert moved > 1e-3                                      # training did move the weights
    for k in a:
        assert float((a[k] - b[k]).abs().max()) < 1e-6, k
    with torch.no_grad():
        e_one, e_ddp, e_init = (clip_model.encode_images(_model(s), x) for s in (one, rank0, init))
    assert float((e_one - e_init).abs().max()) > 1e-2
    assert float((e_one - e_ddp).abs().max()) < 1e-5
    c_one, c_ddp = _curve(tmp_path / "one.csv"), _curve(curve)
    assert c_one.shape == c_ddp.shape == (ARGS["steps"], 4)   # one writer: no duplicated rows
    assert torch.equal(c_one[:, 0], c_ddp[:, 0])
    assert torch.allclose(c_one, c_ddp, rtol=0, atol=1e-5)


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
