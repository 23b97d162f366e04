"""Data-parallel training under ``torchrun``: small helpers that do nothing in a plain process.

A training loop written with these helpers runs unchanged as ``python -m ...`` (one process, CPU
or one GPU) and as ``torchrun --nproc_per_node=N -m ...`` (N processes, PyTorch
DistributedDataParallel over gloo on CPU or nccl on CUDA, several machines with torchrun's
``--nnodes`` / ``--rdzv-endpoint``). The recipe, as :func:`clipbridge.offline.clip_train.train`,
:func:`clipbridge.bridge.train.train` and :func:`clipbridge.offline.distill.train` follow it:

1. ``device = init(requested)`` once at the start of the stage (``requested`` from params);
   :func:`cleanup` at the end.
2. Shared randomness (which rows form the global batch, their captions, augmentation draws)
   comes from one ``torch.Generator`` seeded identically on every rank, or from draws that are
   a pure function of (seed, step) like the student's z, so every rank sees the same global
   batch; per-sample noise that should differ between ranks comes from :func:`seed_rank`.
3. Each rank takes its rows ``shard_slice(B)`` of the global batch of ``B`` rows, so the global
   batch and the step count stay those of ``params.yaml`` at any world size.
4. The module whose ``forward`` computes the loss is wrapped with :func:`wrap` (DDP when the
   world size is above 1: gradients are averaged over ranks during ``backward``). Frozen
   modules it calls (a generator, LPIPS) keep ``requires_grad`` False.
5. Losses that couple rows of the batch (contrastive losses) and batch statistics (StyleGAN's
   running W average) see the whole global batch through :func:`gather_rows`. A per-row loss
   averaged over this rank's rows is multiplied by :func:`mean_scale` (1 for equal shards), so
   that DDP's average is the gradient of the mean over the global batch;
   :func:`all_reduce_mean` weighted by rows gives the global value for logging (validation
   sets are sharded the same way).
6. Only :func:`is_main` writes files (checkpoints, curves, metrics); every rank reads the same
   resume state, so a resumed run continues identically on every rank. Decisions taken from
   local state, such as a wall-clock time budget, go through :func:`any_rank` so that every
   rank stops at the same step.

Nothing happens at import. Ranks and world size come from the process group once :func:`init`
has made it, else from torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), else
they are 0 and 1; collectives refuse to run in a torchrun process that has not called
:func:`init` (each rank would otherwise train alone and all of them would write the outputs).
"""

from __future__ import annotations

import os
import platform
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from clipbridge.errors import BadValueError
from clipbridge.io import seed_everything

BACKENDS = {"cpu": "gloo", "cuda": "nccl"}     # device type -> process-group backend


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    try:
        return int(value) if value not in (None, "") else default
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def device_name(device: str | torch.device) -> str:
    """What a device is, for reports: the GPU's name, or the CPU with its thread count."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def is_initialized() -> bool:
    """Whether a default process group exists in this process."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Number of training processes: the process group's size, else torchrun's ``WORLD_SIZE``,
    else 1."""
    return dist.get_world_size() if is_initialized() else _env_int("WORLD_SIZE", 1)


def rank() -> int:
    """This process's global rank in ``[0, world_size())``: 0 in a plain process."""
    return dist.get_rank() if is_initialized() else _env_int("RANK", 0)


def local_rank() -> int:
    """This process's rank on its machine (torchrun's ``LOCAL_RANK``): its GPU index."""
    return _env_int("LOCAL_RANK", 0)


def is_main() -> bool:
    """True on the one process that writes files (global rank 0; always true in a plain process)."""
    return rank() == 0


def require_group() -> None:
    """Fail early in a torchrun process that has no process group yet (no-op otherwise)."""
    if world_size() > 1 and not is_initialized():
        raise RuntimeError(f"this process is rank {rank()} of {world_size()} (torchrun's "
                           f"environment) but no process group exists; call "
                           f"clipbridge.distributed.init(device) first")


def init(device: str | torch.device = "cpu") -> torch.device:
    """Join the torchrun process group, if there is one, and return this rank's device.

    device: the requested device, as in ``params.yaml``. In a plain process (``WORLD_SIZE``
            unset or 1) nothing is initialized and ``torch.device(device)`` is returned, whatever
            its type. Under torchrun it must be ``cpu`` (backend gloo) or ``cuda`` (backend nccl;
            rank k of a machine takes ``cuda:k``, its LOCAL_RANK, and ``"cuda:K"`` is accepted
            only for K = LOCAL_RANK: one GPU cannot serve several ranks). Calling it again is
            harmless.
    Rendezvous (``MASTER_ADDR``, ``MASTER_PORT``, ``RANK``, ``WORLD_SIZE``) comes from torchrun.
    """
    requested = torch.device(device)
    if world_size() <= 1 and not is_initialized():
        return requested
    if requested.type not in BACKENDS:
        raise BadValueError(f"device {str(requested)!r}: data-parallel training supports the device "
                         f"types {sorted(BACKENDS)}")
    if requested.type == "cuda":
        index = local_rank()
        if requested.index is not None and requested.index != index:
            raise BadValueError(f"device {str(requested)!r} names one GPU but this is local rank "
                             f"{index} of a torchrun job; use 'cuda' (rank k takes cuda:k)")
        if index >= torch.cuda.device_count():
            raise BadValueError(f"local rank {index} needs cuda:{index} but this machine has "
                             f"{torch.cuda.device_count()} GPUs; use --nproc_per_node <= "
                             f"{torch.cuda.device_count()}")
        requested = torch.device("cuda", index)
        torch.cuda.set_device(requested)
    if not is_initialized():
        dist.init_process_group(backend=BACKENDS[requested.type])
    elif dist.get_backend() != BACKENDS[requested.type]:
        raise BadValueError(f"device {str(requested)!r} needs the {BACKENDS[requested.type]} backend "
                         f"but the process group uses {dist.get_backend()}")
    return requested


def cleanup() -> None:
    """Leave the process group (no-op without one). :func:`rank` still reports torchrun's rank."""
    if is_initialized():
        dist.destroy_process_group()


@contextmanager
def session(device: str | torch.device = "cpu") -> Iterator[torch.device]:
    """``with session(p.device) as device:`` = :func:`init` ... :func:`cleanup`."""
    resolved = init(device)
    try:
        yield resolved
    finally:
        cleanup()


def rank_seed(seed: int, rank_: int | None = None) -> int:
    """The seed of rank ``rank_`` (default: this rank) for per-sample noise.

    Rank 0 keeps ``seed`` itself, so a plain process seeds exactly as before; other ranks get a
    seed mixed from (seed, rank) by numpy's SeedSequence, so neighbouring seeds of a sweep do not
    share streams across ranks (``seed + rank`` would: seed 0 rank 1 = seed 1 rank 0).
    """
    r = rank() if rank_ is None else rank_
    if r == 0:
        return int(seed)
    return int(np.random.SeedSequence((int(seed), r)).generate_state(1, dtype=np.uint32)[0])


def seed_rank(seed: int) -> int:
    """Seed python, numpy and torch's global RNGs with :func:`rank_seed` and return that seed.

    For randomness that should differ between ranks (dropout, noise per sample). Randomness that
    must agree on every rank (which rows form the batch) belongs in a ``torch.Generator`` seeded
    with ``seed`` itself.
    """
    s = rank_seed(seed)
    seed_everything(s)
    return s


def shard_slice(total: int, rank_: int | None = None, world: int | None = None) -> slice:
    """Rows of a global batch of ``total`` rows that rank ``rank_`` of ``world`` processes.

    Contiguous and in rank order, so concatenating the shards of ranks 0..world-1 gives the
    batch back; sizes differ by at most one (the first ``total % world`` ranks take one more).
    A plain process gets ``slice(0, total)``. Every rank needs at least one row.
    """
    r = rank() if rank_ is None else rank_
    w = world_size() if world is None else world
    if not 0 <= r < w:
        raise ValueError(f"rank {r} is not in [0, {w})")
    if total < w:
        raise ValueError(f"a global batch of {total} rows cannot be split over {w} processes: "
                         f"every rank needs at least one row (batch >= nproc_per_node x nnodes)")
    base, extra = divmod(total, w)
    start = r * base + min(r, extra)
    return slice(start, start + base + (r < extra))


def shard(x: Tensor, total: int | None = None) -> Tensor:
    """This rank's rows of ``x`` ([total, ...] -> [rows of shard_slice(total), ...]); a view."""
    return x[shard_slice(len(x) if total is None else total)]


def mean_scale(total: int) -> float:
    """Factor for this rank's mean-over-its-rows loss of a global batch of ``total`` rows.

    DDP averages gradients over ranks; with shards of unequal size the average of per-shard
    means is not the global mean. ``loss_here.mean() * mean_scale(total)`` makes it so:
    rows_here * world / total (exactly 1 in a plain process and for equal shards).
    """
    s = shard_slice(total)
    return (s.stop - s.start) * world_size() / total


def _sizes(total: int, world: int) -> list[int]:
    return [(s.stop - s.start) for s in (shard_slice(total, r, world) for r in range(world))]


class _GatherRows(torch.autograd.Function):
    """all_gather of uneven row shards whose backward sums the gradient over ranks."""

    @staticmethod
    def forward(ctx, x: Tensor, total: int) -> Tensor:
        world, me = dist.get_world_size(), dist.get_rank()
        sizes = _sizes(total, world)
        if x.shape[0] != sizes[me]:
            raise ValueError(f"rank {me} holds {x.shape[0]} rows, but its shard of {total} rows "
                             f"over {world} ranks has {sizes[me]}")
        longest = max(sizes)
        padded = x.new_zeros((longest, *x.shape[1:]))
        padded[:x.shape[0]] = x
        parts = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded.contiguous())
        ctx.rows = shard_slice(total, me, world)
        return torch.cat([p[:n] for p, n in zip(parts, sizes)])

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rows], None


def gather_rows(x: Tensor, total: int | None = None) -> Tensor:
    """Concatenate every rank's shard of a global batch, differentiably: [b, ...] -> [total, ...].

    x:     this rank's rows, [len(shard_slice(total)), ...] (any dtype the backend gathers).
    total: rows of the global batch (default ``x.shape[0] * world_size()``, equal shards).
    Returns the global batch in row order, on every rank; in a plain process ``x`` itself.
    Gradient: the gradient of the gathered rows is summed over ranks and this rank's rows of it
    flow back into ``x``. That is exactly right when every rank computes the same global loss
    from the gathered rows and DDP averages parameter gradients over ranks (W copies of the
    loss, summed, then divided by W): the update equals one process's on the whole batch, for
    parameters reached through ``x`` and for those used directly in the loss alike.
    """
    if world_size() <= 1:
        return x
    require_group()
    total = x.shape[0] * world_size() if total is None else int(total)
    return _GatherRows.apply(x, total)


def wrap(module: nn.Module, device: str | torch.device | None = None, **ddp_kwargs) -> nn.Module:
    """``module`` itself in a plain process; else DistributedDataParallel(module).

    module: already on ``device``; its ``forward`` must touch every parameter that requires grad
            (or pass ``find_unused_parameters=True``). DDP copies rank 0's parameters and
            buffers to every rank when it wraps. device: for CUDA, the rank's GPU
            (``device_ids``). ddp_kwargs: passed to DistributedDataParallel.
    Wrap once, before the loop, and keep the wrapper referenced until ``backward`` returns:
    DDP averages gradients from hooks that die with it (``wrap(m)(x).backward()`` on a
    temporary silently leaves every rank with its own gradient). Call the wrapper, not the
    module, in the forward whose loss is backpropagated.
    """
    if world_size() <= 1:
        return module
    require_group()
    device = torch.device(device) if device is not None else next(module.parameters()).device
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids, **ddp_kwargs)


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (the module itself otherwise): what checkpoints save."""
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


def _reduce_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_mean(value: float | Tensor, weight: float = 1.0) -> float:
    """Weighted mean of a scalar over ranks, for logging: sum(w_r v_r) / sum(w_r).

    value: a Python number or a one-element tensor (detached; any device). weight: this rank's
    weight, e.g. its number of rows, so that per-shard means of unequal shards average to the
    global mean. A plain process returns ``float(value)``. Every rank must call it.
    """
    v = float(value.detach()) if isinstance(value, Tensor) else float(value)
    if world_size() <= 1:
        return v
    require_group()
    t = torch.tensor([v * weight, weight], dtype=torch.float64, device=_reduce_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t[0] / t[1])


def any_rank(flag: bool) -> bool:
    """True on every rank if ``flag`` is true on any rank (``flag`` itself in a plain process).

    For decisions that must agree across ranks but are taken from local state, such as a
    wall-clock time budget: a rank that stops alone leaves the others waiting in a collective.
    Every rank must call it.
    """
    if world_size() <= 1:
        return bool(flag)
    require_group()
    t = torch.tensor([1.0 if flag else 0.0], device=_reduce_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def barrier() -> None:
    """Wait until every rank gets here (no-op in a plain process)."""
    if world_size() <= 1:
        return
    require_group()
    if dist.get_backend() == "nccl":
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()
