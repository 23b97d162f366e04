"""Image encoders by name for the encoder study: face image in [-1, 1] -> unit embedding.

The study asks whether the bridge or its encoder limits reconstruction, so every encoder here
feeds the same bridge recipe. Each is a frozen :class:`ImageEncoder`:
``forward(x [N, 3, H, W] float32 in [-1, 1], H == W) -> [N, embed_dim]`` float32 with
L2-normalized rows (the bridge recipe takes unit vectors, as CLIP gives). Inputs are checked by
:func:`check_images` (one :class:`~clipbridge.errors.BadValueError` line naming the encoder).

``EncoderSpec.information`` says what the embedding can know about a face:

- ``trained``: weights learned from data (a CLIP, dlib's face recognition network);
- ``random-init``: a trained architecture at random initialization (a no-information floor for
  the learned weights: what the architecture alone gives);
- ``none``: no learned parameters at all (the pixels themselves).
"""

from __future__ import annotations

import itertools
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from clipbridge import registry
from clipbridge.errors import BadValueError, UnknownNameError
from clipbridge.io import from_uint8

INFORMATION = ("trained", "random-init", "none")
PIXELS_SIZE = 16            # pixels-16: side of the area-downsampled image


@dataclass(frozen=True)
class EncoderSpec:
    label: str                # name used in tables and figures
    information: str          # one of INFORMATION (see the module docstring)
    description: str


def _registry_spec(name: str) -> EncoderSpec:
    entry = registry.ENCODERS[name]
    return EncoderSpec(entry.label, "random-init" if entry.placeholder else "trained",
                       f"open_clip {entry.arch} ({entry.pretrained or 'random init'}) through the registry")


ENCODERS: dict[str, EncoderSpec] = {
    "clip-offline": EncoderSpec(registry.ENCODERS["clip-offline"].label, "trained",
                                "the offline CLIP trained by this project (committed checkpoint)"),
    "clip-offline-random": EncoderSpec("offline CLIP architecture, random init", "random-init",
                                       "the offline CLIP's ViT at random initialization (seeded)"),
    **{name: _registry_spec(name) for name in registry.ENCODERS if name != "clip-offline"},
    "dlib-face": EncoderSpec("dlib face descriptor", "trained",
                             "dlib's 128-d face recognition ResNet (the identity metric's network)"),
    "pixels-16": EncoderSpec(f"pixels {PIXELS_SIZE}x{PIXELS_SIZE}", "none",
                             f"the image area-downsampled to {PIXELS_SIZE}x{PIXELS_SIZE}, flattened"),
}


def encoder_spec(name: str) -> EncoderSpec:
    if name not in ENCODERS:
        raise UnknownNameError(f"unknown encoder '{name}'; available: {sorted(ENCODERS)}")
    return ENCODERS[name]


def check_images(x, name: str) -> None:
    """Raise a one-line :class:`BadValueError` naming encoder ``name`` unless ``x`` is a float
    tensor ``[N, 3, H, W]`` with ``H == W`` and finite values in [-1, 1] (1e-3 slack)."""
    want = f"encoder '{name}': images must be float [N, 3, H, W] with H == W, in [-1, 1]"
    if not isinstance(x, torch.Tensor):
        raise BadValueError(f"{want}; got a {type(x).__name__}")
    if not x.is_floating_point() or x.ndim != 4 or x.shape[1] != 3 or x.shape[2] != x.shape[3]:
        raise BadValueError(f"{want}; got shape {tuple(x.shape)} {x.dtype}")
    if x.numel() == 0:
        return
    lo, hi = x.min().item(), x.max().item()
    if not (-1 - 1e-3 <= lo and hi <= 1 + 1e-3):  # also catches NaN
        raise BadValueError(f"{want}; got values in [{lo}, {hi}]")


class ImageEncoder(nn.Module):
    """Frozen image encoder: ``x [N, 3, H, W]`` float32 in [-1, 1], ``H == W`` ->
    ``[N, embed_dim]`` float32, rows L2-normalized. Always in eval mode, no parameter gradients.
    Subclasses implement :meth:`encode` on checked input."""

    def __init__(self, name: str, embed_dim: int):
        super().__init__()
        self.name = name
        self.label = encoder_spec(name).label
        self.information = encoder_spec(name).information
        self.embed_dim = embed_dim
        self.training = False

    def train(self, mode: bool = True):
        return super().train(False)

    @property
    def device(self) -> torch.device:
        """Where inputs go: the first parameter's or buffer's device, else the CPU."""
        t = next(itertools.chain(self.parameters(), self.buffers()), None)
        return torch.device("cpu") if t is None else t.device

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x, self.name)
        return self.encode(x)


class ClipImageEncoder(ImageEncoder):
    """A :class:`~clipbridge.models.clip.ClipEncoder`'s image path (differentiable in ``x``)."""

    def __init__(self, name: str, clip: nn.Module, embed_dim: int):
        super().__init__(name, embed_dim)
        self.clip = clip.eval().requires_grad_(False)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.clip.encode_image(x)


class PixelEncoder(ImageEncoder):
    """The image itself: area-downsampled to ``size x size`` (exact block means when ``H`` is a
    multiple of ``size``), flattened to ``3 * size**2`` values in [-1, 1], L2-normalized. Learns
    nothing. An exactly mid-grey image (all zeros) has no direction and maps to the zero vector."""

    def __init__(self, name: str, size: int = PIXELS_SIZE):
        super().__init__(name, 3 * size * size)
        self.size = size

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        small = F.interpolate(x.float(), size=(self.size, self.size), mode="area")
        return F.normalize(small.flatten(1), dim=-1)


class DlibFaceEncoder(ImageEncoder):
    """dlib's 128-d face recognition descriptor (:class:`~clipbridge.models.attributes.Identity`),
    L2-normalized. The evaluation's identity metric uses the same network, so a bridge fed these
    embeddings is fed what it is scored on.

    Gives an embedding for every image: where dlib's HOG detector finds no face, the whole
    (upscaled) frame is the face rectangle. ``last_found`` ([N] bool of the last call),
    ``found_total`` / ``seen_total`` (running counts) record how often the detector found one.
    Runs on the CPU (not differentiable); the output goes to ``x``'s device.
    """

    def __init__(self, name: str):
        from clipbridge.models.attributes import DESCRIPTOR_DIM, Identity

        super().__init__(name, DESCRIPTOR_DIM)
        self.identity = Identity()
        self.last_found = torch.zeros(0, dtype=torch.bool)
        self.found_total = 0
        self.seen_total = 0

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        import dlib

        from clipbridge.models.attributes import Detections, detect

        det = detect(x)
        rects = [r if r is not None else dlib.rectangle(0, 0, a.shape[1] - 1, a.shape[0] - 1)
                 for a, r in zip(det.arrays, det.rects)]
        desc = self.identity(Detections(det.arrays, det.scale, det.input_size, rects))
        self.last_found = torch.from_numpy(det.face_found.copy())
        self.found_total += int(det.face_found.sum())
        self.seen_total += len(rects)
        return F.normalize(torch.from_numpy(desc).float(), dim=-1).to(x.device)


def _from_registry(name: str, seed: int, mirror: str | None) -> ImageEncoder:
    """A registry encoder, built the way the pipeline builds it: materialized, then loaded."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.pt"
        meta = registry.materialize_encoder(name, path, seed, mirror)
        clip = registry.load_encoder(path)
    return ClipImageEncoder(name, clip, int(meta["embed_dim"]))


def _offline_random(name: str, seed: int) -> ImageEncoder:
    """The offline CLIP's own architecture (config from the committed checkpoint), random init
    drawn from the global RNG seeded with ``seed`` (the caller restores it)."""
    from clipbridge.models.clip import ClipEncoder
    from clipbridge.offline import clip_model

    _, info = clip_model.load_checkpoint(Path(registry.encoder_entry("clip-offline").pretrained))
    cfg = info["config"]
    torch.manual_seed(seed)
    model = clip_model.build_model(cfg)
    clip = ClipEncoder(model, cfg.image_size, cfg.image_mean, cfg.image_std, ENCODERS[name].label,
                       text_encoder=None, interpolation="bilinear")
    return ClipImageEncoder(name, clip, cfg.embed_dim)


def build_encoder(name: str, seed: int = 0, mirror: str | None = None) -> ImageEncoder:
    """Encoder ``name`` (one of :data:`ENCODERS`), frozen, on the CPU.

    ``seed``: the initialization of random-init encoders (others ignore it); ``mirror``: where
    the registry looks for pretrained open_clip weights (``rn50-openai``) before downloading.
    Torch's global RNG is left as it was (building draws from it).
    """
    encoder_spec(name)
    state = torch.random.get_rng_state()
    try:
        enc = _build(name, seed, mirror)
    finally:
        torch.random.set_rng_state(state)
    return enc.eval().requires_grad_(False)


def _build(name: str, seed: int, mirror: str | None) -> ImageEncoder:
    if name == "clip-offline":
        clip = registry.load_encoder(Path(registry.encoder_entry(name).pretrained))
        enc = ClipImageEncoder(name, clip, int(clip.meta["embed_dim"]))
    elif name == "clip-offline-random":
        enc = _offline_random(name, seed)
    elif name in registry.ENCODERS:
        enc = _from_registry(name, seed, mirror)
    elif name == "dlib-face":
        enc = DlibFaceEncoder(name)
    else:
        enc = PixelEncoder(name)
    return enc


def embed(encoder: ImageEncoder, images_uint8: torch.Tensor, batch: int, desc: str = "embed") -> torch.Tensor:
    """``images_uint8 [N, 3, R, R]`` uint8 -> ``[N, D]`` float32 on the CPU, in batches of
    ``batch`` on the encoder's device, without gradient."""
    if not isinstance(images_uint8, torch.Tensor) or images_uint8.dtype != torch.uint8:
        raise BadValueError(f"encoder '{encoder.name}': embed takes uint8 [N, 3, R, R] images; "
                            f"got {getattr(images_uint8, 'dtype', type(images_uint8).__name__)}")
    if batch < 1:
        raise BadValueError(f"encoder '{encoder.name}': embed batch must be >= 1, got {batch}")
    chunks = [torch.zeros(0, encoder.embed_dim)]
    with torch.no_grad():
        for i in tqdm(range(0, len(images_uint8), batch), desc=desc, unit="batch"):
            x = from_uint8(images_uint8[i:i + batch]).to(encoder.device)
            chunks.append(encoder(x).float().cpu())
    return torch.cat(chunks)
