"""Generators and encoders by name, like open_clip's model configs.

Every model the pipeline uses is materialized by the ``models`` stage into one file in our own
checkpoint format ``{kind, state_dict, init_kwargs, meta}`` and loaded back with
:func:`load_generator` / :func:`load_encoder` through ``torch.load(weights_only=True)``: no file
ever runs code. A name that is not registered is an error listing the valid names.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from clipbridge.io import atomic_path


@dataclass(frozen=True)
class GeneratorEntry:
    kind: str                 # 'dcgan' | 'stylegan2'
    resolution: int           # output size in pixels
    num_ws: int               # style vectors (1 = no W+)
    source: str               # where the weights come from, as stated in the paper
    stand_in: bool            # True when not the paper's FFHQ StyleGAN2 (labelled in every output)
    description: str


@dataclass(frozen=True)
class EncoderEntry:
    arch: str                 # open_clip architecture name
    pretrained: str | None    # open_clip pretrained tag; None = randomly initialized from params seed
    placeholder: bool         # True = carries no learned information (labelled in every output)
    label: str                # name used in tables and figures


GENERATORS: dict[str, GeneratorEntry] = {
    "dcgan64": GeneratorEntry(
        kind="dcgan", resolution=64, num_ws=1, stand_in=True,
        source="gan-face-generate 1.1.1 (pretrained DCGAN, DigiFace-1M)",
        description="pretrained DCGAN face generator, z in R^100, no style space",
    ),
}

ENCODERS: dict[str, EncoderEntry] = {
    "rn50-random": EncoderEntry(arch="RN50", pretrained=None, placeholder=True,
                                label="random-init CLIP (placeholder)"),
    "rn50-openai": EncoderEntry(arch="RN50", pretrained="openai", placeholder=False,
                                label="OpenAI CLIP RN50"),
}


class ModelFileError(ValueError):
    """A model file is missing, unreadable, or not in the expected format."""


def _lookup(table: dict, name: str, what: str):
    if name not in table:
        raise KeyError(f"unknown {what} '{name}'; available: {sorted(table)}")
    return table[name]


def generator_entry(name: str) -> GeneratorEntry:
    return _lookup(GENERATORS, name, "generator")


def encoder_entry(name: str) -> EncoderEntry:
    return _lookup(ENCODERS, name, "encoder")


def save_atomic(obj: dict, path: Path) -> None:
    """``torch.save`` to a temp file beside ``path``, then rename: no partial file on failure."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def read_model_file(path: Path, kinds: tuple[str, ...]) -> dict:
    """Load one of our model files safely and check its kind."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: model file not found (run `dvc repro models`)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to parse is reported as one line
        raise ModelFileError(f"{path}: not a readable model file ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})") from None
    if not isinstance(obj, dict) or obj.get("kind") not in kinds or "state_dict" not in obj:
        raise ModelFileError(f"{path}: not a clipbridge model file of kind {list(kinds)}")
    return obj


# ----------------------------------------------------------------------------- generators

def materialize_generator(name: str, out: Path, mirror: str | None = None) -> dict:
    """Write generator ``name`` to ``out`` in our format; return its provenance record."""
    entry = generator_entry(name)
    if entry.kind == "dcgan":
        from clipbridge.models.dcgan import from_package

        G, digest = from_package()
        meta = {"name": name, "source_sha256": digest, **asdict(entry)}
    else:  # pragma: no cover - other kinds are registered by later stages
        raise KeyError(f"generator '{name}' of kind '{entry.kind}' cannot be materialized by this version")
    save_atomic({"kind": entry.kind, "state_dict": G.state_dict(), "init_kwargs": G.init_kwargs, "meta": meta}, out)
    return meta


def load_generator(path: Path) -> torch.nn.Module:
    """A generator from one of our model files, in eval mode, gradients off."""
    obj = read_model_file(path, ("dcgan",))
    from clipbridge.models.dcgan import DCGANGenerator

    G = DCGANGenerator(**obj["init_kwargs"])
    try:
        G.load_state_dict(obj["state_dict"], strict=True)
    except RuntimeError as exc:
        raise ModelFileError(f"{path}: weights do not match the architecture ({str(exc).splitlines()[0]})") from None
    G.meta = obj.get("meta", {})
    return G.eval().requires_grad_(False)


# ----------------------------------------------------------------------------- encoders

def _open_clip_model(arch: str, pretrained: str | None):
    import open_clip

    return open_clip.create_model(arch, pretrained=pretrained, device="cpu")


def materialize_encoder(name: str, out: Path, seed: int, mirror: str | None = None) -> dict:
    """Write encoder ``name`` to ``out``. A placeholder keeps only its (random) image tower."""
    import open_clip

    entry = encoder_entry(name)
    pretrained = entry.pretrained
    if pretrained is not None and mirror:
        local = Path(mirror) / f"{entry.arch}-{pretrained}.pt"
        pretrained = str(local) if local.is_file() else pretrained
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    model = _open_clip_model(entry.arch, pretrained)
    torch.random.set_rng_state(state)
    sd = model.visual.state_dict() if entry.placeholder else model.state_dict()
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    cfg = open_clip.get_pretrained_cfg(entry.arch, entry.pretrained) if entry.pretrained else {}
    meta = {
        "name": name, "arch": entry.arch, "pretrained": entry.pretrained, "placeholder": entry.placeholder,
        "label": entry.label, "image_size": int(size), "seed": seed,
        "mean": list(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)), "std": list(cfg.get("std", open_clip.OPENAI_DATASET_STD)),
        "embed_dim": int(model.text_projection.shape[1] if hasattr(model, "text_projection") else model.visual.output_dim),
    }
    save_atomic({"kind": "open_clip", "state_dict": sd, "init_kwargs": {"arch": entry.arch}, "meta": meta}, out)
    return meta


def load_encoder(path: Path):
    """A frozen :class:`~clipbridge.models.clip.ClipEncoder` from one of our model files."""
    import open_clip

    from clipbridge.models.clip import ClipEncoder

    obj = read_model_file(path, ("open_clip",))
    meta = obj["meta"]
    model = _open_clip_model(obj["init_kwargs"]["arch"], None)
    target = model.visual if meta["placeholder"] else model
    try:
        target.load_state_dict(obj["state_dict"], strict=True)
    except RuntimeError as exc:
        raise ModelFileError(f"{path}: weights do not match {meta['arch']} ({str(exc).splitlines()[0]})") from None
    tok = None if meta["placeholder"] else open_clip.get_tokenizer(meta["arch"])
    enc = ClipEncoder(model, meta["image_size"], meta["mean"], meta["std"], meta["label"],
                      has_text=not meta["placeholder"], tokenizer=tok)
    enc.meta = meta
    return enc


# ----------------------------------------------------------------------------- bridges

def load_bridge(path: Path):
    """A trained :class:`~clipbridge.models.bridge.Bridge` from the ``train`` stage's file."""
    from clipbridge.models.bridge import Bridge

    obj = read_model_file(path, ("bridge",))
    bridge = Bridge(**obj["init_kwargs"])
    try:
        bridge.load_state_dict(obj["state_dict"], strict=True)
    except RuntimeError as exc:
        raise ModelFileError(f"{path}: weights do not match the bridge config ({str(exc).splitlines()[0]})") from None
    return bridge.eval().requires_grad_(False)
