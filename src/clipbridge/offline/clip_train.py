"""Training the offline CLIP (:mod:`clipbridge.offline.clip_model`): image tower, text projection
and SLIP head, contrastively, with resumable checkpoints, a CSV curve and data parallelism.

:func:`train` is the whole recipe; its pieces: :func:`_start` builds the model, optimizer and
the seeded generator every random draw comes from, :func:`_resume` continues an interrupted run,
:func:`_loop` runs the steps (:func:`_step` is one) and :meth:`_Run.save` writes the checkpoint
and the resume state.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import inspect
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from clipbridge import distributed
from clipbridge.io import ModelFileError, read_checkpoint, save_torch
from clipbridge.offline.clip_eval import recalls, same_caption
# open_clip's ClipLoss and CustomTextCLIP through clip_model, which sets the offline switches first
from clipbridge.offline.clip_model import (CHECKPOINT_FORMAT, Augment, ClipLoss, CustomTextCLIP,
                                           OfflineClipConfig, autocast, build_model,
                                           check_precision, encode_images, load_trained,
                                           pooled_text, project_text, save_checkpoint, slip_head,
                                           text_weights_sha256, trained_state_dict,
                                           training_losses)
from clipbridge.schedule import lr_at

STATE_FORMAT = "clipbridge.offline_clip.train_state/1"


def state_path(ckpt_path: str | Path) -> Path:
    """Where :func:`train` keeps its resume state: ``x.pt`` -> ``x.state.pt``."""
    ckpt_path = Path(ckpt_path)
    return ckpt_path.with_name(ckpt_path.stem + ".state" + ckpt_path.suffix)


class _StepLosses(nn.Module):
    """The model and the SLIP head as one module whose forward is :func:`training_losses`, so
    that DistributedDataParallel sees every trained parameter used in one forward call.

    head: None when the SLIP term is off (DDP requires every wrapped parameter to get a
    gradient).
    """

    def __init__(self, model: CustomTextCLIP, head: nn.Module | None):
        super().__init__()
        self.model = model
        self.head = head

    def forward(self, x: Tensor, pooled: Tensor, **kwargs) -> dict[str, Tensor]:
        return training_losses(self.model, self.head, x, pooled, **kwargs)


def caption_table(captions: Sequence[Sequence[str]]) -> tuple[list[str], Tensor, Tensor]:
    """Distinct caption strings, [N, K] int64 index table (-1 = padding), [N] caption counts."""
    if any(len(c) == 0 for c in captions):
        raise ValueError("every image needs at least one caption")
    distinct = list(dict.fromkeys(s for caps in captions for s in caps))
    index = {s: i for i, s in enumerate(distinct)}
    width = max(len(c) for c in captions)
    table = torch.full((len(captions), width), -1, dtype=torch.long)
    for i, caps in enumerate(captions):
        table[i, :len(caps)] = torch.tensor([index[s] for s in caps])
    return distinct, table, torch.tensor([len(c) for c in captions])


DATA_BYTES = ("images_sha256", "captions_sha256")   # the data's rendering (platform-dependent)


def _sha256(x: Tensor) -> str:
    return hashlib.sha256(x.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def _fingerprint(images: Tensor, captions: Sequence[Sequence[str]], args: Mapping,
                 latents: Tensor | None = None) -> dict:
    """What a resumed run must share with the interrupted one: data hashes and arguments.

    ``latents_sha256`` (when the faces' latents are given) names *which* faces: seeded ``randn``
    on the CPU, the same on every machine. The image and caption hashes (:data:`DATA_BYTES`) name
    their rendering, which a CPU of another kind changes at rounding boundaries (a few pixels by
    one level, a few annotator labels): a resumed run needs them equal, a finished one does not."""
    text = hashlib.sha256("\x1e".join("\x1f".join(c) for c in captions).encode()).hexdigest()
    out = dict(args, images_sha256=_sha256(images), captions_sha256=text)
    if latents is not None:
        out["latents_sha256"] = _sha256(latents)
    return out


def same_recipe(done: Mapping, now: Mapping) -> bool:
    """Whether a finished run's fingerprint names the same recipe as ``now``: the same arguments
    and the same faces (``latents_sha256`` in both), whatever their rendering; without latents,
    the same bytes too."""
    if "latents_sha256" not in now:
        return dict(done) == dict(now)
    keys = (set(done) | set(now)) - set(DATA_BYTES)
    return all(done.get(k) == now.get(k) for k in keys)


def same_bytes(done: Mapping, images: Tensor, captions: Sequence[Sequence[str]]) -> bool:
    """Whether a finished run trained on exactly these image and caption bytes."""
    now = _fingerprint(images, captions, {})
    return all(done.get(k) == now[k] for k in DATA_BYTES)


VAL_COLUMNS = ("val_clip_loss", "val_i2t_r1", "val_t2i_r1")


@torch.no_grad()
def _validate(model: CustomTextCLIP, images: Tensor, pooled: Tensor, same: Tensor, batch: int,
              precision: str) -> dict[str, float]:
    """Held-out curve values: the CLIP loss over consecutive batches of ``batch`` faces (one
    caption each) and image->text / text->image recall@1 among all of them.

    images: [M, 3, H, W] in [-1, 1]; pooled: [M, 384] their captions' locked text features;
    same: [M, M] bool from :func:`clipbridge.offline.clip_eval.same_caption`.
    """
    device = model.logit_scale.device
    was_training = model.visual.training
    model.visual.eval()
    with autocast(device, precision):
        img = torch.cat([encode_images(model, images[i:i + 256].to(device)).float()
                         for i in range(0, len(images), 256)])
        txt = project_text(model, pooled.to(device)).float()
    model.visual.train(was_training)
    scale = model.logit_scale.exp().float()
    losses = [float(ClipLoss()(img[i:i + batch], txt[i:i + batch], scale))
              for i in range(0, len(img) - batch + 1, batch)]
    recall = recalls(img, txt, same.to(device), ks=(1,))
    return dict(val_clip_loss=float(np.mean(losses)) if losses else float("nan"),
                val_i2t_r1=recall["i2t_r1"], val_t2i_r1=recall["t2i_r1"])


def _open_curve(path: Path | None, resume_step: int
                ) -> tuple[TextIO, csv.DictWriter] | tuple[None, None]:
    """Open the curve CSV for appending, keeping only rows up to ``resume_step``."""
    if path is None:
        return None, None
    header = ["step", "loss", "clip_loss", "slip_loss", "lr", "seconds", *VAL_COLUMNS]
    rows = []
    if resume_step and path.is_file():
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "w", newline="")
    writer = csv.DictWriter(f, fieldnames=header, restval="", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return f, writer



def train(images: Tensor, captions: Sequence[Sequence[str]], cfg: OfflineClipConfig, *,
          steps: int, batch: int = 128, lr: float = 5e-4, weight_decay: float = 0.05,
          warmup: int = 100, schedule: str = "cosine", slip_weight: float = 0.0,
          slip_temperature: float = 0.1, aug: Augment = Augment(),
          ckpt_path: str | Path | None = None, ckpt_every: int = 500,
          ckpt_seconds: float = 900.0, resume: bool = True, until: int | None = None,
          curve_csv: str | Path | None = None, log_every: int = 10, seed: int = 0,
          precision: str = "fp32", val: tuple[Tensor, Sequence[str]] | None = None,
          eval_every: int = 0, device: str | torch.device = "cpu",
          progress: bool = True, latents: Tensor | None = None) -> CustomTextCLIP:
    """Train the offline CLIP's image tower and text projection contrastively.

    images:   [N, 3, H, W] float32 in [-1, 1] (kept where they are; batches move to ``device``).
    captions: N lists of captions; each step uses one caption per image, drawn at random.
    cfg:      architecture. steps: total optimizer steps; batch: images per step (<= N).
    lr, weight_decay, warmup, schedule: AdamW (decay on matrices only) with ``lr_at``.
    slip_weight, slip_temperature, aug: the SLIP term (0 disables it), see training_losses.
    ckpt_path: where :func:`~clipbridge.offline.clip_model.save_checkpoint` writes the model (None: no checkpoints); the
              resume state (fp32 weights, SLIP head, optimizer, RNG, step) goes to
              ``state_path(ckpt_path)``. Both are written every ``ckpt_every`` steps, every
              ``ckpt_seconds`` seconds, at the end, at ``until`` and on KeyboardInterrupt.
    resume:   continue from the state file when present; the data and arguments must match,
              and the result equals an uninterrupted run (on the same device). Without a state
              file, a checkpoint at ``ckpt_path`` that finished ``steps`` with the same arguments
              on the same faces (``latents``; :func:`same_recipe`, its ``meta.fingerprint``) is
              returned as it is, untrained further, even where this machine renders those faces
              a few pixel levels differently (:func:`same_bytes` tells).
    until:    stop after this many steps (checkpointing), to be resumed later.
    curve_csv: step, loss, clip_loss, slip_loss, lr, seconds every ``log_every`` steps.
    seed:     all randomness (init, batches, caption choice, augmentation) derives from it.
    precision: "fp32" or "bf16" (see :func:`clipbridge.offline.clip_model.autocast`); part of the fingerprint unless fp32
              (so that fp32 checkpoints made before the option existed stay reusable).
    val:      held-out (images [M, 3, H, W] in [-1, 1], M captions): every ``eval_every``
              steps and at the end the curve gets ``val_clip_loss``, ``val_i2t_r1`` and
              ``val_t2i_r1`` (:func:`_validate`). It only watches: nothing is selected by it, and
              it draws no random numbers, so it does not change the trained model.
    device:   this process's device; under torchrun the one ``clipbridge.distributed.init``
              returned for this rank.
    Returns the model (eval mode, on ``device``).

    Data parallel: in a process group of W ranks (``torchrun --nproc_per_node=W``, after
    :func:`clipbridge.distributed.init`) every rank draws the same global batch of ``batch``
    faces from the same seeded generator and forwards its shard of it (``batch`` and ``steps``
    mean the same as in one process); DDP averages the gradients and the contrastive losses
    gather the embeddings of all ranks, so the run equals a one-process run up to the order of
    floating-point sums. Rank 0 alone writes the checkpoint, state and curve; every rank
    resumes from the same state file (which a run of any W can continue).
    """
    if images.ndim != 4 or images.shape[1] != 3 or len(images) != len(captions):
        raise ValueError(f"need images [N, 3, H, W] and N caption lists, got "
                         f"{tuple(images.shape)} and {len(captions)}")
    if not 1 < batch <= len(images):
        raise ValueError(f"batch {batch} must be in [2, {len(images)}]")
    distributed.require_group()
    args = dict(config=dataclasses.asdict(cfg), steps=steps, batch=batch, lr=lr,
                weight_decay=weight_decay, warmup=warmup, schedule=schedule,
                slip_weight=slip_weight, slip_temperature=slip_temperature,
                aug=dataclasses.asdict(aug), seed=seed)
    check_precision(precision)
    if precision != "fp32":
        args["precision"] = precision
    run = _start(cfg, args, _fingerprint(images, captions, args, latents), ckpt_path, device)
    if resume and _resume(run, steps):
        return run.model.eval()
    # State after the last completed step: what a checkpoint holds, so that a run interrupted
    # mid-step resumes exactly where an uninterrupted run would be.
    run.rng_state = run.generator.get_state()
    stop = steps if until is None else min(until, steps)
    if run.step >= stop:  # nothing left to train; rewrite the checkpoint (DVC removes it before a run)
        run.save()
        return run.model.eval()
    rows = distributed.shard_slice(batch) if distributed.world_size() > 1 else None  # this rank's rows
    _loop(run, images, captions, stop, rows, val, device=device, batch=batch, precision=precision,
          lr_args=(steps, lr, schedule, warmup), eval_every=eval_every, log_every=log_every,
          ckpt_every=ckpt_every, ckpt_seconds=ckpt_seconds, curve_csv=curve_csv, progress=progress,
          losses_kwargs=dict(slip_weight=slip_weight, aug=aug, slip_temperature=slip_temperature))
    run.save()
    distributed.barrier()             # every rank returns once rank 0's checkpoint is written
    return run.model.eval()



def train_options(c) -> dict:
    """The keyword arguments of :func:`train` that params.yaml's ``clip`` section
    (:class:`clipbridge.config.Clip`) sets: its fields named like one (``steps``, ``batch``,
    ``lr``, ..., ``seed``, ``precision``, ``eval_every``), by name; the others keep their
    defaults here (the section restates none of them)."""
    names = [n for n, p in inspect.signature(train).parameters.items() if p.kind is p.KEYWORD_ONLY]
    return {name: getattr(c, name) for name in names if hasattr(c, name)}

@dataclass
class _Run:
    """One training run: what it trains, its progress, and where and what it saves."""
    model: CustomTextCLIP
    head: nn.Module
    optimizer: torch.optim.Optimizer
    generator: torch.Generator         # every random draw of the run (CPU)
    cfg: OfflineClipConfig
    args: dict                         # the training arguments the checkpoint's meta records
    fingerprint: dict                  # what a resumed run must share (see _fingerprint)
    device_label: str                  # what trained it (for a resumed run: its last chunk)
    ckpt_path: Path | None
    main: bool                         # this process writes the files (rank 0)
    step: int = 0
    seconds: float = 0.0
    rng_state: Tensor | None = None    # the generator's state after the last completed step
    updating: bool = False             # the weights are mid-update (not those of ``step``)

    def save(self) -> None:
        """Write the checkpoint and the resume state (rank 0, when there is a ``ckpt_path``)."""
        if self.ckpt_path is None or not self.main:
            return
        save_checkpoint(self.model, self.cfg, self.ckpt_path, self.step,
                        meta=dict(train=self.args, seconds=self.seconds,
                                  fingerprint=self.fingerprint, device=self.device_label))
        save_torch(dict(format=STATE_FORMAT, state_dict=trained_state_dict(self.model),
                        head=self.head.state_dict(), optimizer=self.optimizer.state_dict(),
                        generator=self.rng_state, step=self.step, seconds=self.seconds,
                        fingerprint=self.fingerprint), state_path(self.ckpt_path))


def _start(cfg: OfflineClipConfig, args: dict, fingerprint: dict, ckpt_path: str | Path | None,
           device: str | torch.device) -> _Run:
    """A fresh run: the model and SLIP head initialized from ``args["seed"]`` (in a forked
    global RNG), AdamW with weight decay on matrices only, and the seeded batch generator."""
    seed, weight_decay = args["seed"], args["weight_decay"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(cfg)
        head = slip_head(cfg)
    model.to(device)
    head.to(device)
    trainable = [p for p in (*model.parameters(), *head.parameters()) if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [dict(params=[p for p in trainable if p.ndim >= 2], weight_decay=weight_decay),
         dict(params=[p for p in trainable if p.ndim < 2], weight_decay=0.0)], lr=args["lr"])
    world = distributed.world_size()
    device_label = distributed.device_name(device) + (f", {world} processes" if world > 1 else "")
    return _Run(model, head, optimizer, torch.Generator().manual_seed(seed), cfg, args,
                fingerprint, device_label, Path(ckpt_path) if ckpt_path is not None else None,
                distributed.is_main())


def _resume(run: _Run, steps: int) -> bool:
    """Continue from the run's state file, if there is one (its fingerprint must match exactly).
    Without one, load a checkpoint that finished ``steps`` with the same recipe
    (:func:`same_recipe`) and text weights and return True: the run is done."""
    if run.ckpt_path is None:
        return False
    state_file = state_path(run.ckpt_path)
    if state_file.is_file():
        state = read_checkpoint(state_file, kind_key="format", kinds=(STATE_FORMAT,),
                                what="torch checkpoint",
                                required=("state_dict", "head", "optimizer", "generator", "step",
                                          "seconds", "fingerprint"))
        differ = sorted(k for k in run.fingerprint
                        if state["fingerprint"].get(k) != run.fingerprint[k])
        if differ:
            raise ModelFileError(f"{state_file}: made by a run with other {differ}; delete it "
                                 f"or pass resume=False")
        load_trained(run.model, state["state_dict"], state_file)
        run.head.load_state_dict(state["head"])
        run.optimizer.load_state_dict(state["optimizer"])
        run.generator.set_state(state["generator"])
        run.step, run.seconds = int(state["step"]), float(state["seconds"])
    elif run.ckpt_path.is_file():
        done = read_checkpoint(run.ckpt_path, kind_key="format", kinds=(CHECKPOINT_FORMAT,),
                               what="torch checkpoint", required=("state_dict", "step"))
        if (same_recipe(done.get("meta", {}).get("fingerprint") or {}, run.fingerprint)
                and int(done["step"]) >= steps
                and done.get("text_weights_sha256") == text_weights_sha256()):
            load_trained(run.model, done["state_dict"], run.ckpt_path)
            return True
    return False


def _step(run: _Run, step_losses: nn.Module, data: tuple[Tensor, Tensor, Tensor, Tensor],
          rows: slice | None, *, device: str | torch.device, batch: int, precision: str,
          lr_args: tuple, losses_kwargs: dict) -> tuple[dict[str, float], float]:
    """One optimizer step on a batch drawn from ``run.generator``: the batch's images, one
    caption each, then (inside the losses) the SLIP views. data: (images [N, 3, H, W], caption
    table [N, K], caption counts [N], pooled text cache [C, 384]). Returns (losses, lr)."""
    images, table, counts, cache = data
    started = time.monotonic()
    idx = torch.randperm(len(images), generator=run.generator)[:batch]    # the global batch
    pick = (torch.rand(batch, generator=run.generator) * counts[idx]).long()
    mine = idx if rows is None else idx[rows]                             # this rank's rows
    x = images[mine].to(device)
    pooled = cache[table[mine, pick if rows is None else pick[rows]].to(device)]
    rate = lr_at(run.step, *lr_args)
    with autocast(device, precision):
        losses = step_losses(x, pooled, **losses_kwargs, generator=run.generator, rows=rows,
                             total=batch)
    run.optimizer.zero_grad(set_to_none=True)
    losses["loss"].backward()
    run.updating = True
    for group in run.optimizer.param_groups:
        group["lr"] = rate
    run.optimizer.step()
    with torch.no_grad():
        run.model.logit_scale.clamp_(0, math.log(100))   # CLIP's cap on the temperature
    run.step += 1
    run.rng_state, run.updating = run.generator.get_state(), False
    run.seconds += time.monotonic() - started
    return {k: float(v.detach()) for k, v in losses.items()}, rate


def _loop(run: _Run, images: Tensor, captions: Sequence[Sequence[str]], stop: int,
          rows: slice | None, val: tuple[Tensor, Sequence[str]] | None, *, batch: int,
          precision: str, lr_args: tuple, eval_every: int, log_every: int, ckpt_every: int,
          ckpt_seconds: float, curve_csv: str | Path | None, progress: bool,
          losses_kwargs: dict, device: str | torch.device) -> None:
    """Train until step ``stop``, writing the curve and saving as :func:`train` says; on
    KeyboardInterrupt save first when the weights are those of a completed step."""
    model, head, steps = run.model, run.head, lr_args[0]
    distinct, table, counts = caption_table(captions)
    cache = pooled_text(model, distinct)                 # [num distinct captions, 384]
    watch = val is not None and eval_every > 0 and run.main
    if watch:
        val_images, val_captions = val
        val_pooled, val_same = pooled_text(model, val_captions), same_caption(val_captions)
    curve_file, curve = _open_curve(Path(curve_csv) if curve_csv and run.main else None, run.step)
    model.visual.train()
    head.train()
    # One process: the module itself. Several: DDP over it, created once and kept for the loop.
    step_losses = distributed.wrap(
        _StepLosses(model, head if losses_kwargs["slip_weight"] else None), device)
    last_save = time.monotonic()
    bar = tqdm(total=stop, initial=run.step, desc="offline clip",
               disable=not (progress and run.main))
    try:
        while run.step < stop:
            values, rate = _step(run, step_losses, (images, table, counts, cache), rows,
                                 device=device, batch=batch, precision=precision,
                                 lr_args=lr_args, losses_kwargs=losses_kwargs)
            step = run.step
            if watch and (step % eval_every == 0 or step == steps):
                values.update(_validate(model, val_images, val_pooled, val_same, batch, precision))
            if curve is not None and (step % log_every == 0 or step == stop
                                      or VAL_COLUMNS[0] in values):
                curve.writerow(dict(step=step, **values, lr=rate, seconds=round(run.seconds, 3)))
                curve_file.flush()
            bar.update(1)
            bar.set_postfix(loss=f"{values['loss']:.3f}", lr=f"{rate:.2e}")
            if step % ckpt_every == 0 or time.monotonic() - last_save > ckpt_seconds:
                run.save()
                last_save = time.monotonic()
    except KeyboardInterrupt:
        if not run.updating:          # weights are consistent with `step`: keep the progress
            run.save()
        raise
    finally:
        bar.close()
        if curve_file is not None:
            curve_file.close()
