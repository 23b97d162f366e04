"""Generators and encoders by name, like open_clip's model configs.

Every model the pipeline uses is materialized by the ``models`` stage into one file in our own
checkpoint format ``{kind, state_dict, init_kwargs, meta}`` and loaded back with
:func:`load_generator` / :func:`load_encoder` through :func:`clipbridge.io.read_checkpoint`
(``torch.load(weights_only=True)``): no file ever runs code. A name that is not registered is an
error listing the valid names.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
import shutil
from pathlib import Path

import torch

from clipbridge.errors import UnknownNameError
from clipbridge.io import ModelFileError, atomic_path, read_checkpoint, save_torch, sha256_of
from clipbridge.models.nvlabs import REGISTRY as NVLABS


@dataclass(frozen=True)
class GeneratorEntry:
    kind: str                 # 'dcgan' | 'stylegan2'
    resolution: int           # output size in pixels
    num_ws: int               # style vectors (1 = no W+)
    source: str               # where the weights come from, as stated in the paper
    stand_in: bool            # True when not the paper's FFHQ StyleGAN2 (labelled in every output)
    description: str
    checkpoint: str | None = None  # our own checkpoint file (stylegan2 kind); None = not from a checkpoint
    downloads: bool = False   # True: weights come from the network (pretrained profile only)


@dataclass(frozen=True)
class EncoderEntry:
    arch: str                 # open_clip architecture name, or 'offline' for the CLIP trained here
    pretrained: str | None    # open_clip pretrained tag, or the offline checkpoint path; None = random init
    placeholder: bool         # True = carries no learned information (labelled in every output)
    label: str                # name used in tables and figures


GENERATORS: dict[str, GeneratorEntry] = {
    "dcgan64": GeneratorEntry(
        kind="dcgan", resolution=64, num_ws=1, stand_in=True,
        source="gan-face-generate 1.1.1 (pretrained DCGAN, DigiFace-1M)",
        description="pretrained DCGAN face generator, z in R^100, no style space",
    ),
    "sg2-64": GeneratorEntry(
        kind="stylegan2", resolution=64, num_ws=10, stand_in=True,
        source="our StyleGAN2 distilled from dcgan64 by the distill stage",
        description="StyleGAN2 64x64 student of the DCGAN, z in R^100, W+ with 10 style vectors",
        checkpoint="checkpoints/sg2-64.pt",
    ),
    **{name: GeneratorEntry(
        kind="stylegan2", resolution=e["resolution"], num_ws=e["num_ws"], stand_in=False,
        source=f"NVlabs StyleGAN2 FFHQ {e['resolution']}x{e['resolution']} ({e['url']})",
        description=f"NVlabs StyleGAN2 trained on FFHQ, {e['num_ws']} style vectors", downloads=True,
    ) for name, e in NVLABS.items()},
}

ENCODERS: dict[str, EncoderEntry] = {
    "rn50-random": EncoderEntry(arch="RN50", pretrained=None, placeholder=True,
                                label="random-init CLIP (placeholder)"),
    "rn50-openai": EncoderEntry(arch="RN50", pretrained="openai", placeholder=False,
                                label="OpenAI CLIP RN50"),
    "clip-offline": EncoderEntry(arch="offline", pretrained="checkpoints/clip-offline.pt", placeholder=False,
                                 label="offline CLIP (ViT, 64 px, trained here)"),
}


def _lookup(table: dict, name: str, what: str):
    if name not in table:
        raise UnknownNameError(f"unknown {what} '{name}'; available: {sorted(table)}")
    return table[name]


def generator_entry(name: str) -> GeneratorEntry:
    return _lookup(GENERATORS, name, "generator")


def encoder_entry(name: str) -> EncoderEntry:
    return _lookup(ENCODERS, name, "encoder")


def read_model_file(path: Path, kinds: tuple[str, ...]) -> dict:
    """One of our model files (:func:`clipbridge.io.read_checkpoint`), of one of ``kinds``."""
    return read_checkpoint(path, kind_key="kind", kinds=kinds, required=("state_dict",),
                           what="model file", hint="run `dvc repro models`")


# ----------------------------------------------------------------------------- generators

def build_generator(name: str, mirror: str | None = None) -> tuple[torch.nn.Module, dict]:
    """Generator ``name`` from its source, in eval mode, and its provenance record.

    ``dcgan64``: the installed package's weights. ``sg2-64``: the committed distilled checkpoint.
    NVlabs names: the pickle from ``mirror`` if there, else downloaded into ``data/downloads/``.
    """
    entry = generator_entry(name)
    if entry.kind == "dcgan":
        from clipbridge.models.dcgan import from_package

        G, digest = from_package()
    elif name in NVLABS:
        from clipbridge.models import nvlabs

        path = nvlabs.resolve_weights(name, mirror, dest=Path("data/downloads") / f"{name}.pkl")
        G, digest = nvlabs.load_nvlabs(path), sha256_of(path)
    else:
        from clipbridge.models.stylegan2 import load_checkpoint

        path = Path(entry.checkpoint)
        G, _ = load_checkpoint(path)
        digest = sha256_of(path)
    G.meta = {"name": name, "source_sha256": digest, **asdict(entry)}
    return G.eval().requires_grad_(False), G.meta


def materialize_generator(name: str, out: Path, mirror: str | None = None) -> dict:
    """Write generator ``name`` to ``out`` in our format; return its provenance record."""
    G, meta = build_generator(name, mirror)
    entry = generator_entry(name)
    save_torch({"kind": entry.kind, "state_dict": G.state_dict(), "init_kwargs": G.init_kwargs, "meta": meta}, out)
    return meta


def load_generator(path: Path) -> torch.nn.Module:
    """A generator from one of our model files, in eval mode, gradients off."""
    obj = read_model_file(path, ("dcgan", "stylegan2"))
    if obj["kind"] == "dcgan":
        from clipbridge.models.dcgan import DCGANGenerator as cls
    else:
        from clipbridge.models.stylegan2 import Generator as cls
    try:
        G = cls(**obj["init_kwargs"])
    except TypeError as exc:
        raise ModelFileError(f"{path}: bad constructor arguments ({exc})") from None
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
    """Write encoder ``name`` to ``out``. A placeholder keeps only its (random) image tower;
    the offline CLIP is a copy of its committed checkpoint (trained part only)."""
    import open_clip

    entry = encoder_entry(name)
    if entry.arch == "offline":
        from clipbridge.offline import clip_model

        src = Path(entry.pretrained)
        model, info = clip_model.load_checkpoint(src)  # validates the file before copying it
        with atomic_path(out) as tmp:
            shutil.copyfile(src, tmp)
        return {"name": name, "arch": "ViT (offline CLIP)", "pretrained": str(src), "placeholder": False,
                "label": entry.label, "image_size": info["config"].image_size, "seed": seed,
                "embed_dim": info["config"].embed_dim, "step": info["step"], "source_sha256": sha256_of(src)}
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
    save_torch({"kind": "open_clip", "state_dict": sd, "init_kwargs": {"arch": entry.arch}, "meta": meta}, out)
    return meta


def _is_offline_clip(path: Path) -> bool:
    from clipbridge.offline import clip_model

    try:
        obj = read_checkpoint(path, mmap=True)
    except ModelFileError:  # read_model_file reports unreadable files
        return False
    return obj.get("format") == clip_model.CHECKPOINT_FORMAT


def load_encoder(path: Path):
    """A frozen :class:`~clipbridge.models.clip.ClipEncoder` from one of our model files."""
    import open_clip

    from clipbridge.models.clip import ClipEncoder, open_clip_text

    path = Path(path)
    if path.is_file() and _is_offline_clip(path):
        from clipbridge.offline import clip_model

        model, info = clip_model.load_checkpoint(path)
        cfg = info["config"]
        enc = ClipEncoder(model, cfg.image_size, cfg.image_mean, cfg.image_std, encoder_entry("clip-offline").label,
                          text_encoder=clip_model.encode_texts, interpolation="bilinear")
        enc.meta = {"name": "clip-offline", "step": info["step"], "embed_dim": cfg.embed_dim}
        return enc
    obj = read_model_file(path, ("open_clip",))
    meta = obj["meta"]
    model = _open_clip_model(obj["init_kwargs"]["arch"], None)
    target = model.visual if meta["placeholder"] else model
    try:
        target.load_state_dict(obj["state_dict"], strict=True)
    except RuntimeError as exc:
        raise ModelFileError(f"{path}: weights do not match {meta['arch']} ({str(exc).splitlines()[0]})") from None
    text = None if meta["placeholder"] else open_clip_text(open_clip.get_tokenizer(meta["arch"]))
    enc = ClipEncoder(model, meta["image_size"], meta["mean"], meta["std"], meta["label"], text_encoder=text)
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
