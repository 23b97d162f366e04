"""Distil a StyleGAN2 student from the pretrained DCGAN teacher (the offline profile's ``sg2-64``).

The same z (``[N, 100]``, N(0, I)) goes into the teacher (:mod:`clipbridge.models.dcgan`) and
into the student (:class:`clipbridge.models.stylegan2.Generator`, 'skip' architecture); the
student learns to reproduce the teacher's image with pixel losses on its final output and on
every intermediate toRGB output (the running 'skip' image at 4, 8, ... px) against the
area-downsampled teacher, optionally LPIPS-rand. The W average is tracked as in StyleGAN (the
mapping runs in training mode), so truncation works on the student.

Exact resume: the training z of step ``s`` is drawn from its own numpy PCG64 stream
(``SeedSequence(seed, spawn_key=(0, s))``), the held-out z from ``spawn_key=(1,)``
(independent streams; torch's CPU generator keeps only 32 bits of a seed), the
checkpoint holds weights, EMA weights, optimizer state, the curve and the torch RNG state, so a
run interrupted at a checkpoint and resumed gives bit-identical weights on CPU.

Data parallel (``torchrun``, see :mod:`clipbridge.distributed`): every rank takes its shard of
the step's z, the loss is a per-row mean scaled by ``mean_scale``, the W average moves with the
mean w of the whole global batch (gathered), and the EMA, optimizer and resume state stay
identical on every rank; rank 0 alone writes the checkpoint and the curve.

Checkpoints are written with :func:`clipbridge.models.stylegan2.save_checkpoint` (atomic):
``state_dict`` is the evaluated model (the EMA student when ``ema_beta > 0``), loadable with
:func:`~clipbridge.models.stylegan2.load_checkpoint`; the extras are ``step``, ``seconds``,
``config``, ``student`` (raw weights when EMA is on), ``optimizer``, ``rng``, ``curve``.
Settings: :class:`clipbridge.config.DistillConfig` (params ``distill``). dlib, lpips and matplotlib
are imported where used.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from clipbridge import distributed, schedule
from clipbridge.config import DistillConfig
from clipbridge.errors import BadValueError
from clipbridge.io import ModelFileError, write_csv
from clipbridge.metrics import psnr
from clipbridge.models.stylegan2 import Generator, load_checkpoint, save_checkpoint

TEACHER_RESOLUTION = 64
Z_DIM = 100
TRAIN_KEY, HELDOUT_KEY = 0, 1  # SeedSequence spawn keys: training z (0, step), held-out z (1,)


# --------------------------------------------------------------------------------------------
# Building blocks


def build_student(cfg: DistillConfig) -> Generator:
    """The untrained student (seeded with ``cfg.seed``), in training mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        G = Generator(
            z_dim=Z_DIM, c_dim=0, w_dim=cfg.w_dim, img_resolution=cfg.img_resolution, img_channels=3,
            mapping_kwargs=dict(num_layers=cfg.mapping_layers, lr_multiplier=cfg.mapping_lr_multiplier),
            synthesis_kwargs=dict(channel_base=cfg.channel_base, channel_max=cfg.channel_max,
                                  use_noise=cfg.use_noise))
    return G.train()


def _normal(seed: int, key: tuple[int, ...], n: int, device) -> torch.Tensor:
    """``[n, 100]`` float32 N(0, I) from numpy's PCG64 seeded by SeedSequence(seed, spawn_key=key)."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))
    return torch.from_numpy(rng.standard_normal((n, Z_DIM), dtype=np.float32)).to(device)


def training_z(cfg: DistillConfig, step: int, device: str | torch.device = "cpu") -> torch.Tensor:
    """z of training step ``step``: ``[batch, 100]`` float32, a pure function of (seed, step)."""
    return _normal(cfg.seed, (TRAIN_KEY, step), cfg.batch, device)


def heldout_z(n: int, seed: int = 0, device: str | torch.device = "cpu") -> torch.Tensor:
    """``n`` held-out z ``[n, 100]``, from a stream independent of every training step's."""
    return _normal(seed, (HELDOUT_KEY,), n, device)


@torch.no_grad()
def teacher_images(teacher: torch.nn.Module, z: torch.Tensor, resolution: int = TEACHER_RESOLUTION) -> torch.Tensor:
    """Teacher faces ``[N, 3, resolution, resolution]`` in [-1, 1] (area-downsampled from 64 px)."""
    img = teacher(z)
    if resolution != img.shape[-1]:
        img = F.adaptive_avg_pool2d(img, resolution)
    return img


def synthesis_pyramid(G: Generator, ws: torch.Tensor, fused_modconv: bool = False,
                      noise_mode: str = "const") -> dict[int, torch.Tensor]:
    """The running 'skip' image after every block: ``{res: [N, 3, res, res]}``; the last is G's output.

    Same computation as ``G.synthesis(ws)``, keeping the intermediate toRGB sums.
    ws: [N, num_ws, w_dim].
    """
    x = img = None
    out = {}
    for res, (start, stop) in G.synthesis.ws_slices().items():
        x, img = getattr(G.synthesis, f"b{res}")(x, img, ws[:, start:stop], noise_mode=noise_mode,
                                                 fused_modconv=fused_modconv)
        out[res] = img
    return out


def lr_at(cfg: DistillConfig, step: int) -> float:
    """Linear warmup over ``warmup_steps``, then cosine from ``lr`` to ``lr * lr_final`` at ``steps``."""
    return schedule.lr_at(step, cfg.steps, cfg.lr, "cosine", cfg.warmup_steps, cfg.lr_final)


def distill_loss(cfg: DistillConfig, G: Generator, target: torch.Tensor, z: torch.Tensor,
                 lpips: torch.nn.Module | None = None, total: int | None = None
                 ) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted loss of the student on ``z [N, 100]`` against ``target [N, 3, R, R]`` -> (loss, terms).

    Every term is a mean over rows (and pixels), as is every logged value. In training mode
    the mapping's ``w_avg`` moves towards the mean w of the global batch: under data
    parallelism ``z`` is this rank's shard of ``total`` rows (default: equal shards) and the w
    of all ranks are gathered, so every rank tracks the same average as one process would.
    """
    ws = G.mapping(z, None, update_w_avg=False)
    if G.training:
        G.mapping.track_w_avg(distributed.gather_rows(ws[:, 0].detach(), total))
    pyramid = synthesis_pyramid(G, ws, cfg.fused_modconv)
    img = pyramid[G.img_resolution]
    terms: dict[str, torch.Tensor] = {}
    if cfg.loss_l1:
        terms["l1"] = (img - target).abs().mean()
    if cfg.loss_l2:
        terms["l2"] = (img - target).square().mean()
    if cfg.loss_multiscale:
        terms["multiscale"] = sum((pyramid[r] - F.adaptive_avg_pool2d(target, r)).abs().mean()
                                  for r in pyramid if r < G.img_resolution)
    if cfg.loss_lpips:
        terms["lpips"] = lpips(img, target).mean()
    if not terms:
        raise BadValueError("distill: every loss weight is 0; set loss_l1, loss_l2, loss_multiscale or loss_lpips")
    weights = {"l1": cfg.loss_l1, "l2": cfg.loss_l2, "multiscale": cfg.loss_multiscale, "lpips": cfg.loss_lpips}
    loss = sum(weights[k] * v for k, v in terms.items())
    with torch.no_grad():
        logged = {f"loss_{k}": float(v) for k, v in terms.items()}
        logged["psnr_train"] = float(psnr(img.detach(), target).mean())
    return loss, logged


class _DistillLoss(torch.nn.Module):
    """:func:`distill_loss` on the student's shard of a global batch of ``cfg.batch`` rows, as one
    module whose forward DDP wraps (the LPIPS-rand network is frozen)."""

    def __init__(self, cfg: DistillConfig, G: Generator, lpips: torch.nn.Module | None):
        super().__init__()
        self.cfg, self.G, self.lpips = cfg, G, lpips

    def forward(self, z: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        return distill_loss(self.cfg, self.G, target, z, self.lpips, self.cfg.batch)


@torch.no_grad()
def heldout_psnr(G: Generator, teacher: torch.nn.Module, z: torch.Tensor, batch: int = 64) -> float:
    """Mean PSNR (dB) of ``G`` (eval mode, w_avg untouched) vs the teacher on ``z [n, 100]``."""
    was_training = G.training
    G.eval()
    vals = []
    for i in range(0, z.shape[0], batch):
        zb = z[i:i + batch]
        vals.append(psnr(G(zb, noise_mode="const"), teacher_images(teacher, zb, G.img_resolution)))
    G.train(was_training)
    return float(torch.cat(vals).mean())


# --------------------------------------------------------------------------------------------
# Training


def _ema_update(G_ema: Generator, G: Generator, beta: float) -> None:
    with torch.no_grad():
        for pe, p in zip(G_ema.parameters(), G.parameters()):
            pe.lerp_(p, 1 - beta)
        for be, b in zip(G_ema.buffers(), G.buffers()):
            be.copy_(b)


def _resume(path: Path, cfg: DistillConfig, G: Generator, G_ema: Generator,
            opt: torch.optim.Optimizer) -> dict:
    """Load a training checkpoint into G, G_ema, opt; return its payload. Errors name the file."""
    loaded, payload = load_checkpoint(path)
    saved = payload.get("config")
    if not isinstance(saved, dict) or "optimizer" not in payload or "step" not in payload:
        raise ModelFileError(f"{path}: not a distillation checkpoint (no config/optimizer/step)")
    arch = ("img_resolution", "w_dim", "mapping_layers", "channel_base", "channel_max", "use_noise")
    changed = [k for k in arch if saved.get(k) != getattr(cfg, k)]
    if changed:
        raise ModelFileError(f"{path}: checkpoint architecture differs from the config in {changed}; "
                              f"delete it or restore those values")
    G_ema.load_state_dict(loaded.state_dict())
    G.load_state_dict(payload["student"] if payload.get("student") is not None else loaded.state_dict())
    G.to(torch.float32)
    try:
        opt.load_state_dict(payload["optimizer"])
    except (ValueError, KeyError) as e:
        raise ModelFileError(f"{path}: optimizer state does not fit the student ({e})") from e
    for p in G.parameters():  # restore the first moments that _save leaves out when beta1 = 0
        state = opt.state.get(p)
        if state and "exp_avg" not in state:
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
    if "rng" in payload:
        torch.set_rng_state(payload["rng"])
    return payload


def _save(path: Path, cfg: DistillConfig, G: Generator, G_ema: Generator, opt, step: int,
          seconds: float, curve: list[dict], device) -> None:
    """Write the training state. With ``beta1 = 0`` Adam's first moment is the last gradient,
    overwritten exactly (``lerp`` with weight 1) before its next use, so it is not stored: the
    file is 8 bytes per parameter (+4 with EMA) and resume stays bit-exact. ``meta.device``: the
    device of the run that wrote it (only a run that trains writes), for the paper's provenance."""
    optimizer = opt.state_dict()
    if cfg.beta1 == 0:
        optimizer["state"] = {k: {n: t for n, t in v.items() if n != "exp_avg"} for k, v in optimizer["state"].items()}
    model = G_ema if cfg.ema_beta > 0 else G
    save_checkpoint(path, model, step=step, seconds=seconds, config=dataclasses.asdict(cfg),
                    student=G.state_dict() if cfg.ema_beta > 0 else None,
                    optimizer=optimizer, rng=torch.get_rng_state(), curve=curve,
                    meta={"device": distributed.device_name(device)})


def train(cfg: DistillConfig, ckpt_path: str | Path, curve_csv: str | Path | None = None,
          device: str = "cpu", resume: bool = True,
          teacher: torch.nn.Module | None = None, stop_at_step: int | None = None) -> tuple[Generator, dict]:
    """Distil the student; checkpoint to ``ckpt_path``; return (model in eval mode, state).

    Trains from the checkpoint's step (when ``resume`` and the file exists) up to ``cfg.steps``,
    or until ``cfg.time_budget_seconds`` of wall time in this call have passed (then it stops
    with a checkpoint, so the next call continues). The model returned is the EMA student when
    ``cfg.ema_beta > 0``, else the trained weights. ``state``: ``step``, ``seconds`` (wall time
    over all calls), ``curve`` (list of row dicts, also written to ``curve_csv``), ``done``.
    ``teacher`` None = the pretrained DCGAN (:func:`clipbridge.models.dcgan.from_package`).
    ``stop_at_step``: also stop (with a checkpoint) once this step is reached (tests, chaining).
    Resuming checks that the architecture fields of ``cfg`` match the checkpoint's; the other
    fields (steps, lr, losses, budget) may change between calls, e.g. to extend a run.

    Under torchrun (after :func:`clipbridge.distributed.init`; ``device`` = this rank's) every
    rank trains on its rows of each step's ``cfg.batch`` z and evaluates its rows of the
    held-out z; the curve holds global means, the time budget stops all ranks at the same
    step, every rank resumes from the same checkpoint and rank 0 alone writes. The result
    equals a one-process run up to the order of float sums.
    """
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _train(cfg, Path(ckpt_path), curve_csv, device, resume, teacher, stop_at_step)
    finally:
        torch.set_num_threads(threads)


def _train(cfg: DistillConfig, ckpt_path: Path, curve_csv, device, resume, teacher, stop_at_step):
    from tqdm import tqdm

    distributed.require_group()
    main = distributed.is_main()
    if teacher is None:
        from clipbridge.models.dcgan import from_package
        teacher = from_package()[0]
    teacher = teacher.to(device).eval().requires_grad_(False)
    G = build_student(cfg).to(device)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    opt = torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=1e-8)
    lpips = None
    if cfg.loss_lpips:
        from clipbridge.models.lpips import build_lpips
        lpips = build_lpips("LPIPS-rand", cfg.lpips_seed, device)

    step, seconds_before, curve = 0, 0.0, []
    if resume and ckpt_path.exists():
        payload = _resume(ckpt_path, cfg, G, G_ema, opt)
        step, seconds_before, curve = int(payload["step"]), float(payload["seconds"]), list(payload["curve"])
    seconds = seconds_before
    z_eval = distributed.shard(heldout_z(cfg.eval_n, cfg.seed, device)) if cfg.eval_every else None
    rows, scale = distributed.shard_slice(cfg.batch), distributed.mean_scale(cfg.batch)
    step_loss = distributed.wrap(_DistillLoss(cfg, G, lpips), device)

    def write_curve() -> None:
        if main and curve_csv is not None and curve:
            keys = list(dict.fromkeys(k for row in curve for k in row))
            write_csv(curve_csv, [{k: row.get(k, "") for k in keys} for row in curve])

    def save() -> None:
        if main:
            _save(ckpt_path, cfg, G, G_ema, opt, step, seconds, curve, device)
        write_curve()

    start = last_ckpt = time.perf_counter()
    bar = tqdm(total=cfg.steps, initial=step, desc="distill", unit="step", dynamic_ncols=True, disable=not main)
    while step < cfg.steps:
        lr = lr_at(cfg, step)
        for group in opt.param_groups:
            group["lr"] = lr
        z = training_z(cfg, step, device)[rows]
        target = teacher_images(teacher, z, cfg.img_resolution)
        loss, terms = step_loss(z, target)
        opt.zero_grad(set_to_none=True)
        (loss * scale).backward()
        opt.step()
        if cfg.ema_beta > 0:
            _ema_update(G_ema, G, cfg.ema_beta)
        step += 1
        now = time.perf_counter()
        seconds = seconds_before + now - start
        evaluate_now = cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.steps)
        if step % cfg.log_every == 0 or evaluate_now:
            global_mean = {k: distributed.all_reduce_mean(v, len(z)) for k, v in {"loss": loss, **terms}.items()}
            row = {"step": step, **global_mean, "lr": lr, "seconds": round(seconds, 2)}
            if evaluate_now:
                row["psnr_heldout"] = distributed.all_reduce_mean(
                    heldout_psnr(G_ema if cfg.ema_beta > 0 else G, teacher, z_eval), len(z_eval))
            curve.append(row)
            bar.set_postfix(loss=f"{row['loss']:.4f}", psnr=f"{row['psnr_train']:.2f}")
        bar.update(1)
        out_of_time = bool(step == stop_at_step or (cfg.time_budget_seconds and distributed.any_rank(
            now - start >= cfg.time_budget_seconds)))     # every rank stops at the same step
        if step == cfg.steps or out_of_time or now - last_ckpt >= cfg.checkpoint_every_seconds:
            save()
            last_ckpt = time.perf_counter()
        if out_of_time:
            break
    bar.close()
    if not ckpt_path.exists():  # nothing to train (steps = 0)
        save()
    write_curve()
    distributed.barrier()       # every rank returns once rank 0's checkpoint is written
    model = (G_ema if cfg.ema_beta > 0 else G).eval()
    return model, {"step": step, "seconds": seconds, "curve": curve, "done": step >= cfg.steps}


# --------------------------------------------------------------------------------------------
# Evaluation


@torch.no_grad()
def hierarchy_check(G: Generator, z: torch.Tensor, groups: dict[str, tuple[int, int]], sigma: float = 1.0,
                     seed: int = 0, batch: int = 64) -> dict:
    """Perturb the coarse vs the fine ws group by the same random offset; measure what moves.

    z: [n, 100]. groups: the student's layer groups, name -> half-open W+ range ``(start, stop)``
    ordered coarse to fine (params ``edits.groups``, validated by the caller); the first is
    perturbed as ``coarse``, the last as ``fine`` (at 64 px: [0, 3) and [7, 10)). The offset
    ``d ~ N(0, I) * sigma * std(w)`` (per-dim std of the student's w on ``z``) is drawn once per
    image and added to every w of the group. ``geometry``: mean dlib
    68-landmark displacement / inter-ocular distance over images with a face before and after;
    ``colour``: mean L2 change of the image's mean RGB (in [0, 1]). Returns both per group and
    ``coarse_moves_landmarks_more`` (geometry coarse > fine) and ``fine_is_more_colour``
    (colour/geometry of fine > that of coarse); geometry NaN and the two flags None when dlib
    finds no face pair in a group.
    """
    from clipbridge.models.attributes import Landmarks, inter_ocular

    G.eval()
    landmarks = Landmarks()
    ws = torch.cat([G.mapping(z[i:i + batch], None) for i in range(0, z.shape[0], batch)])
    std = ws[:, 0].std(0)
    gen = torch.Generator().manual_seed(seed)
    offset = (torch.randn(ws.shape[0], 1, ws.shape[2], generator=gen) * sigma * std.cpu()).to(ws.device)

    def render(w):
        return torch.cat([G.synthesis(w[i:i + batch], noise_mode="const") for i in range(0, w.shape[0], batch)]).cpu()

    base = render(ws)
    lm0 = landmarks(base)
    out = {"sigma": sigma, "n": int(z.shape[0])}
    ranges = list(groups.values())
    for name, (a, b) in (("coarse", ranges[0]), ("fine", ranges[-1])):
        moved = ws.clone()
        moved[:, a:b] += offset
        img = render(moved)
        lm1 = landmarks(img)
        both = lm0.face_found & lm1.face_found
        disp = np.linalg.norm(lm1.points[both] - lm0.points[both], axis=-1).mean(1) / inter_ocular(lm0.points[both])
        colour = ((img.mean((2, 3)) - base.mean((2, 3))) / 2).norm(dim=1)
        out[name] = {"ws": [a, b], "geometry": float(disp.mean()) if both.any() else float("nan"),
                     "colour": float(colour.mean()), "n_faces": int(both.sum())}
    c, f = out["coarse"], out["fine"]
    known = not (math.isnan(c["geometry"]) or math.isnan(f["geometry"]))  # else no face: undecided (None)
    out["coarse_moves_landmarks_more"] = bool(c["geometry"] > f["geometry"]) if known else None
    out["fine_is_more_colour"] = (bool(f["colour"] / max(f["geometry"], 1e-8) > c["colour"] / max(c["geometry"], 1e-8))
                                  if known else None)
    return out


@torch.no_grad()
def evaluate(G: Generator, teacher: torch.nn.Module, groups: dict[str, tuple[int, int]], n: int = 1000,
             seed: int = 0, batch: int = 64, lpips_seed: int = 0, n_hierarchy: int = 200, sigma: float = 1.0) -> dict:
    """Student vs teacher on ``n`` held-out z (stream :func:`heldout_z` with ``seed``).

    Returns ``psnr``, ``lpips_rand``, ``ssim`` (means), ``face_rate_student`` /
    ``face_rate_teacher`` (dlib detection rate), ``n``, and ``hierarchy`` (see
    :func:`hierarchy_check` of ``groups``, on the first ``n_hierarchy`` z). Images compared at the
    student's resolution (the teacher area-downsampled if smaller).
    """
    from clipbridge.metrics import ssim
    from clipbridge.models.lpips import build_lpips
    from clipbridge.models.attributes import detect

    G.eval()
    device = next(G.parameters()).device
    z = heldout_z(n, seed, device)
    lpips = build_lpips("LPIPS-rand", lpips_seed, device)
    vals = {"psnr": [], "lpips_rand": [], "ssim": []}
    found_s, found_t = [], []
    for i in range(0, n, batch):
        zb = z[i:i + batch]
        s = G(zb, noise_mode="const")
        t = teacher_images(teacher, zb, G.img_resolution)
        vals["psnr"].append(psnr(s, t))
        vals["lpips_rand"].append(lpips(s, t))
        vals["ssim"].append(ssim(s, t))
        found_s.append(torch.from_numpy(detect(s.cpu()).face_found))
        found_t.append(torch.from_numpy(detect(t.cpu()).face_found))
    out = {k: float(torch.cat(v).mean()) for k, v in vals.items()}
    out.update(n=n, face_rate_student=float(torch.cat(found_s).float().mean()),
               face_rate_teacher=float(torch.cat(found_t).float().mean()))
    out["hierarchy"] = hierarchy_check(G, z[:n_hierarchy], groups, sigma=sigma, seed=seed, batch=batch)
    return out


def teacher_student_grid(G: Generator, teacher: torch.nn.Module, z: torch.Tensor, out_pdf: str | Path,
                         title: str | None = None) -> None:
    """Figure: teacher (top row) and student (bottom row) on the same ``z [n, 100]``; vector PDF."""
    from clipbridge.report import figures

    figures.setup_style()
    G.eval()
    with torch.no_grad():
        rows = {"teacher": teacher_images(teacher, z, G.img_resolution).cpu(),
                "student": G(z, noise_mode="const").cpu()}
    figures.image_grid(rows, Path(out_pdf), z.shape[0], title)
