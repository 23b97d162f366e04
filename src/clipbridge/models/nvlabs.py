"""Safe import of NVlabs StyleGAN2 pickles into :class:`clipbridge.models.stylegan2.Generator`.

NVlabs pickles (stylegan2-ada-pytorch, and the StyleGAN2 networks of the stylegan3 repository)
hold ``torch_utils.persistence`` objects: each network is reduced to
``_reconstruct_persistent_obj(meta)`` where ``meta`` carries the source code of its module
(``module_src``), ``class_name`` and ``state`` (the module ``__dict__``: ``_parameters``,
``_buffers``, ``_modules``, ``_init_args``, ``_init_kwargs``, ...). Their loader ``exec``s
``module_src``. Ours never imports, calls or executes anything named by the file:

* :class:`_SafeUnpickler.find_class` maps a short whitelist to functions written here that
  rebuild tensors (storages are read back with ``torch.load(weights_only=True)``), to
  ``collections.OrderedDict`` and to inert stand-ins for the persistence objects, ``EasyDict``
  and numpy scalars; every other global becomes an inert placeholder that only records its
  name (so the discriminator, augmentation pipeline etc. load without running anything).
* From ``G_ema`` we keep only its constructor kwargs and its parameters and buffers, build our
  Generator from the kwargs and copy the tensors with a strict key and shape check.

Also: :data:`REGISTRY` of the official StyleGAN2 FFHQ pickles and :func:`resolve_weights`.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import urllib.request
from pathlib import Path

import numpy as np
import torch

from clipbridge.errors import MissingFileError, UnknownNameError
from clipbridge.io import ModelFileError, atomic_path, sha256_of
from clipbridge.models.stylegan2 import Generator, copy_state_strict

_NGC = "https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan2/versions/1/files"

# Official StyleGAN2 FFHQ generators (stylegan3 repository README, "StyleGAN2 pre-trained
# models"). num_ws = 2 * log2(resolution) - 2. sha256 None = not published, not pinned here;
# the pipeline pins the hash of what it downloads (dvc.lock).
REGISTRY: dict[str, dict] = {
    "sg2-ffhq-256": dict(url=f"{_NGC}/stylegan2-ffhq-256x256.pkl", resolution=256, num_ws=14, sha256=None),
    "sg2-ffhq-512": dict(url=f"{_NGC}/stylegan2-ffhq-512x512.pkl", resolution=512, num_ws=16, sha256=None),
    "sg2-ffhq-1024": dict(url=f"{_NGC}/stylegan2-ffhq-1024x1024.pkl", resolution=1024, num_ws=18, sha256=None),
}

# Generator kwargs found in NVlabs pickles that do not change the computation on our side.
_IGNORED_SYNTHESIS_KWARGS = ("fp16_channels_last", "fused_modconv_default")
_GENERATOR_ARGS = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")


# --------------------------------------------------------------------------------------------
# Restricted unpickler


class _Persistent:
    """Stand-in for a ``torch_utils.persistence`` object: keeps ``meta``, runs nothing."""

    def __init__(self, meta):
        meta = meta if isinstance(meta, dict) else {}
        self.class_name = meta.get("class_name")
        self.module_src = meta.get("module_src") if isinstance(meta.get("module_src"), str) else ""
        self.state = meta.get("state") if isinstance(meta.get("state"), dict) else {}

    def __setstate__(self, state):
        raise pickle.UnpicklingError("unexpected state after a persistent object")


class _EasyDict(dict):
    """Stand-in for ``dnnlib.util.EasyDict`` (a dict subclass): a plain dict."""


class _Opaque:
    """Inert placeholder for any global not on the whitelist: records its arguments only."""

    qualname = "?"

    def __new__(cls, *args, **kwargs):
        obj = super().__new__(cls)
        obj.args = args
        return obj

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.state = state

    def __setitem__(self, key, value):
        pass

    def append(self, value):
        pass

    def extend(self, values):
        pass


def _load_storage(data: bytes):
    """Storage pickled by ``torch.storage``: a nested ``torch.save`` payload, read weights-only."""
    return torch.load(io.BytesIO(data), weights_only=True)


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    """Tensor view of a storage; gradient flags and hooks in the file are ignored."""
    if not isinstance(storage, torch.storage.TypedStorage):
        raise pickle.UnpicklingError(f"tensor data is a {type(storage).__name__}, not a storage")
    return torch.empty(0, dtype=storage.dtype).set_(storage._untyped_storage, storage_offset, size, stride)


def _rebuild_parameter(data, *_ignored):
    """A pickled Parameter becomes its plain tensor."""
    return data


def _numpy_scalar(dtype, data=None):
    """numpy scalar from its raw bytes (non-object dtypes only)."""
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
        raise pickle.UnpicklingError(f"unsupported numpy scalar of dtype {dtype!r}")
    return np.frombuffer(data, dtype=dtype)[0]


_WHITELIST = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _Persistent,
    ("dnnlib.util", "EasyDict"): _EasyDict,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
}


class _SafeUnpickler(pickle.Unpickler):
    """Resolves globals only to the whitelist above or to fresh inert :class:`_Opaque` classes."""

    def find_class(self, module: str, name: str):
        if (module, name) in _WHITELIST:
            return _WHITELIST[(module, name)]
        return type(name, (_Opaque,), {"qualname": f"{module}.{name}"})

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("persistent ids are not used by NVlabs pickles")


# --------------------------------------------------------------------------------------------
# Reading a pickle


def _sniff(path: Path) -> None:
    """Raise ModelFileError if the file's first bytes are clearly not a binary pickle."""
    with open(path, "rb") as f:
        head = f.read(1024)
    if not head:
        raise ModelFileError(f"{path}: empty file")
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head")) or b"<html" in text:
        raise ModelFileError(f"{path}: looks like an HTML page (a login or redirect page saved instead "
                              f"of the network?), not a pickle; download it again")
    if head.startswith(b"PK\x03\x04"):
        raise ModelFileError(f"{path}: a zip archive (a torch.save file?), not an NVlabs pickle; "
                              f"use clipbridge.models.stylegan2.load_checkpoint for our own checkpoints")
    if head[0] != 0x80:
        raise ModelFileError(f"{path}: not a pickle (first bytes {head[:8]!r})")


def _plain(value, where: str, path: Path):
    """Constructor kwargs -> plain Python values (dict, list, tuple, str, int, float, bool, None)."""
    if isinstance(value, dict):
        return {k: _plain(v, f"{where}.{k}", path) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v, where, path) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise ModelFileError(f"{path}: unsupported value in G_ema constructor kwargs at {where}: "
                          f"{getattr(value, 'qualname', type(value).__name__)}")


def _tensors(obj: _Persistent, prefix: str, path: Path) -> dict[str, torch.Tensor]:
    """Parameters and persistent buffers of a persistent module tree, keyed like state_dict()."""
    state = obj.state
    skip = set(state.get("_non_persistent_buffers_set") or ())
    out = {}
    for field in ("_parameters", "_buffers"):
        for name, value in (state.get(field) or {}).items():
            if value is None or (field == "_buffers" and name in skip):
                continue
            if not isinstance(value, torch.Tensor):
                raise ModelFileError(f"{path}: {prefix}{name} is a {type(value).__name__}, not a tensor")
            out[prefix + name] = value
    for name, child in (state.get("_modules") or {}).items():
        if child is None:
            continue
        if not isinstance(child, _Persistent):
            raise ModelFileError(f"{path}: submodule {prefix}{name} is not an NVlabs persistent "
                                  f"network ({getattr(child, 'qualname', type(child).__name__)})")
        out.update(_tensors(child, f"{prefix}{name}.", path))
    return out


def _stylegan3_config(G: _Persistent, kwargs: dict) -> str | None:
    """'-t' or '-r' if G_ema is a StyleGAN3 generator, else None."""
    srcs = [G.module_src] + [c.module_src for c in (G.state.get("_modules") or {}).values()
                             if isinstance(c, _Persistent)]
    if not any("SynthesisInput" in s or "filtered_lrelu" in s for s in srcs):
        return None
    flat = {**kwargs, **(kwargs.get("synthesis_kwargs") or {})}
    return "-r" if flat.get("use_radial_filters") or flat.get("conv_kernel") == 1 else "-t"


def _generator_kwargs(G: _Persistent, init_kwargs: dict, path: Path) -> dict:
    """Our Generator kwargs from G_ema's init_args and (plain) init_kwargs, either NVlabs repo."""
    args = G.state.get("_init_args") or ()
    kwargs = dict(init_kwargs)
    if len(args) > len(_GENERATOR_ARGS):
        raise ModelFileError(f"{path}: G_ema has {len(args)} positional constructor args, expected at most "
                              f"{len(_GENERATOR_ARGS)}")
    kwargs.update(zip(_GENERATOR_ARGS, _plain(list(args), "init_args", path)))
    synthesis = dict(kwargs.pop("synthesis_kwargs", None) or {})
    # The stylegan3 repository passes synthesis kwargs flat: Generator(..., **synthesis_kwargs).
    for key in list(kwargs):
        if key not in _GENERATOR_ARGS and key != "mapping_kwargs":
            synthesis[key] = kwargs.pop(key)
    for key in _IGNORED_SYNTHESIS_KWARGS:
        synthesis.pop(key, None)
    kwargs["synthesis_kwargs"] = synthesis
    return kwargs


def load_nvlabs(path: str | os.PathLike, sha256: str | None = None,
                device: str | torch.device = "cpu") -> Generator:
    """NVlabs StyleGAN2 ``.pkl`` -> our :class:`Generator` holding its ``G_ema`` (eval mode).

    Nothing from the file is executed (see the module docstring). ``sha256`` (hex) is checked
    first when given. Raises :class:`ModelFileError`, one line naming the file, for: a missing
    file, a hash mismatch (expected and actual), an HTML page or other non-pickle, a truncated
    or corrupt pickle, no ``G_ema``, a StyleGAN3 (``-t``/``-r``) or other unsupported network,
    and constructor kwargs or tensors that do not match our architecture (missing, unexpected
    and mismatched keys listed).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such file")
    if sha256 is not None:
        actual = sha256_of(path)
        if actual != sha256.lower():
            raise ModelFileError(f"{path}: sha256 mismatch: expected {sha256.lower()}, actual {actual}")
    _sniff(path)
    try:
        with open(path, "rb") as f:
            data = _SafeUnpickler(f).load()
    except (EOFError, pickle.UnpicklingError) as e:
        raise ModelFileError(f"{path}: truncated or corrupt pickle ({e})") from e
    except Exception as e:
        detail = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise ModelFileError(f"{path}: corrupt pickle ({type(e).__name__}: {detail})") from e

    if isinstance(data, tuple) and data and all(isinstance(x, _Opaque) for x in data):
        raise ModelFileError(f"{path}: a TensorFlow-era pickle ({data[0].qualname}); convert it with "
                              f"NVlabs legacy.py first")
    if not isinstance(data, dict) or "G_ema" not in data:
        found = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise ModelFileError(f"{path}: no 'G_ema' network in the pickle (found {found})")
    G_ema = data["G_ema"]
    if not isinstance(G_ema, _Persistent):
        raise ModelFileError(f"{path}: G_ema is not an NVlabs persistent network "
                              f"({getattr(G_ema, 'qualname', type(G_ema).__name__)})")
    init_kwargs = _plain(dict(G_ema.state.get("_init_kwargs") or {}), "init_kwargs", path)
    config = _stylegan3_config(G_ema, init_kwargs)
    if config is not None:
        raise ModelFileError(f"{path}: a StyleGAN3 ({config}) generator; only StyleGAN2 networks are "
                              f"supported (stylegan2-ada-pytorch, or stylegan2-* pickles of the stylegan3 repo)")
    if G_ema.class_name != "Generator":
        raise ModelFileError(f"{path}: G_ema is a {G_ema.class_name!r}, expected a StyleGAN2 'Generator'")
    kwargs = _generator_kwargs(G_ema, init_kwargs, path)
    try:
        G = Generator(**kwargs)
    except (TypeError, ValueError, KeyError) as e:
        raise ModelFileError(f"{path}: wrong architecture: G_ema kwargs {kwargs} do not build a "
                              f"StyleGAN2 Generator ({e})") from e
    copy_state_strict(G, _tensors(G_ema, "", path), path)
    return G.to(device).eval()


# --------------------------------------------------------------------------------------------
# Registry


def resolve_weights(name: str, mirror_dir: str | os.PathLike | None = None,
                    dest: str | os.PathLike | None = None, timeout: float = 60.0) -> Path:
    """Path of the registered pickle ``name``: from ``mirror_dir`` if there, else downloaded.

    Looks for ``mirror_dir/<file name of the URL>``; otherwise downloads the URL to ``dest``
    (a file path) through a temp file renamed on success. The hash is checked when the
    registry knows it. Raises KeyError for an unknown name (listing the choices) and
    FileNotFoundError (one line: mirror path tried, URL and the network error) when neither works.
    """
    if name not in REGISTRY:
        raise UnknownNameError(f"unknown generator weights {name!r}; available: {sorted(REGISTRY)}")
    entry = REGISTRY[name]
    filename = entry["url"].rsplit("/", 1)[-1]
    mirrored = Path(mirror_dir) / filename if mirror_dir is not None else None
    if mirrored is not None and mirrored.is_file():
        _check_hash(mirrored, entry["sha256"])
        return mirrored
    tried = f"mirror {mirrored} absent" if mirrored is not None else "no mirror_dir given"
    if dest is None:
        raise MissingFileError(f"{name}: {tried} and no download dest given (url {entry['url']})")
    dest = Path(dest)
    try:
        with atomic_path(dest) as tmp, open(tmp, "wb") as out, \
                urllib.request.urlopen(entry["url"], timeout=timeout) as response:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                out.write(chunk)
            out.flush()
            _check_hash(tmp, entry["sha256"], shown=dest)
    except OSError as e:
        raise MissingFileError(f"{name}: {tried} and download of {entry['url']} to {dest} failed ({e})") from e
    return dest


def _check_hash(path: Path, expected: str | None, shown: Path | None = None) -> None:
    if expected is not None and (actual := sha256_of(path)) != expected:
        raise ModelFileError(f"{shown or path}: sha256 mismatch: expected {expected}, actual {actual}")
