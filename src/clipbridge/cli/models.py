"""What the command line reads before it works: its settings from params.yaml (through
:func:`clipbridge.config.load`, the reader every stage uses), the device, and the model files,
each failure one :class:`~clipbridge.cli.errors.CliError` line naming the file."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from clipbridge.cli.errors import EXIT_USAGE, CliError


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


# ------------------------------------------------------------------------------ settings


@dataclasses.dataclass(frozen=True)
class Settings:
    """What the CLI takes from params.yaml's :class:`~clipbridge.config.Params` (defaults when
    the file does not exist, so the command also runs where only the model files do)."""
    source: Path
    generator: str | None           # default generator name: the first of `generators`; None = no params file
    lpips: str                      # the profile's LPIPS loss variant (models.lpips.build_lpips): LPIPS-rand offline
    lpips_seed: int                 # evaluate.lpips_seed
    opt: object                     # invert.OptimConfig for --refine (params evaluate.opt)
    edits: object                   # edits.EditsConfig (params edits)


def read_settings(path: Path, profile: str | None) -> Settings:
    """The settings of params file ``path`` and ``profile`` (default: the file's ``profile``)."""
    from clipbridge import config
    from clipbridge.config import EditsConfig, OptimConfig

    if not path.is_file():
        if profile is not None:
            raise CliError(f"{path}: params file not found (needed by --profile)")
        return Settings(source=path, generator=None, lpips="LPIPS-rand", lpips_seed=0,
                        opt=OptimConfig(), edits=EditsConfig())
    try:
        p = config.load(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"{path}: not a readable params file ({_first_line(exc)})") from None
    except ValueError as exc:  # config.ConfigError, or a section's own check (edits)
        msg = _first_line(exc)
        raise CliError(msg if msg.startswith(str(path)) else f"{path}: {msg}") from None
    profile = profile or p.profile
    if profile not in p.profiles:
        raise CliError(f"{path}: unknown profile '{profile}'; available: {sorted(p.profiles)}", EXIT_USAGE)
    return Settings(source=path, generator=p.headline, lpips=p.profiles[profile].lpips,
                    lpips_seed=p.evaluate.lpips_seed, opt=p.evaluate.opt, edits=p.edits)


def check_device(spec: str):
    import torch

    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        raise CliError(f"--device {spec}: not a torch device (e.g. cpu, cuda, cuda:1, mps)", EXIT_USAGE) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CliError(f"--device {spec}: CUDA is not available on this machine; use --device cpu", EXIT_USAGE)
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise CliError(f"--device {spec}: no such GPU; this machine has {torch.cuda.device_count()}", EXIT_USAGE)
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise CliError(f"--device {spec}: MPS is not available on this machine; use --device cpu", EXIT_USAGE)
    if device.type not in ("cpu", "cuda", "mps"):
        raise CliError(f"--device {spec}: unsupported device type '{device.type}'; use cpu, cuda or mps", EXIT_USAGE)
    return device


# ------------------------------------------------------------------------------ model files


@dataclasses.dataclass
class ModelFiles:
    name: str | None
    generator: Path
    encoder: Path
    bridge: Path


def _missing(path: Path, flag: str) -> CliError:
    return CliError(f"{path}: model file not found; run `make repro` to build the models, or pass {flag} PATH")


def resolve_files(args, settings: Settings) -> ModelFiles:
    """Model file paths from the options and params; each must exist (checked here, cheaply)."""
    from clipbridge import paths, registry

    name = args.generator
    if name is None and args.generator_file is None:
        name = settings.generator
        if name is None:
            raise CliError(f"{settings.source} not found: cannot choose a generator; pass --generator NAME "
                           f"(available: {sorted(registry.GENERATORS)}) or --generator-file PATH, or run from the "
                           f"repository root", EXIT_USAGE)
    gen_file = args.generator_file or paths.generator_file(name)
    if not gen_file.exists():
        if args.generator_file is None and name not in registry.GENERATORS:
            raise CliError(f"{gen_file}: unknown generator '{name}'; available: {sorted(registry.GENERATORS)}",
                           EXIT_USAGE)
        raise _missing(gen_file, "--generator-file")
    if name is None and args.bridge_file is None:  # the default bridge path needs the name the file holds
        name = _generator_name(gen_file)
        if name is None:
            raise CliError(f"{gen_file}: the file does not name its generator; pass --generator NAME or "
                           f"--bridge-file PATH", EXIT_USAGE)
    files = ModelFiles(name, gen_file, args.encoder_file or paths.ENCODER,
                       args.bridge_file or paths.bridge_file(name, 0))
    for path, flag in ((files.encoder, "--encoder-file"), (files.bridge, "--bridge-file")):
        if not path.exists():
            raise _missing(path, flag)
    return files


def _generator_name(path: Path) -> str | None:
    """The ``meta.name`` a generator file records, read without loading its weights."""
    import torch

    from clipbridge import registry

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - not a zip checkpoint: the full read below reports the problem
        obj = None
    if not isinstance(obj, dict):
        obj = _guard(path, "generator", lambda: registry.read_model_file(path, ("dcgan", "stylegan2")))
    meta = obj.get("meta")
    return meta.get("name") if isinstance(meta, dict) and isinstance(meta.get("name"), str) else None


def _guard(path: Path, what: str, load):
    """Run a loader; any failure is one line naming the file (a bad model file is bad input)."""
    from clipbridge.io import ModelFileError

    try:
        return load()
    except (ModelFileError, FileNotFoundError) as exc:
        msg = _first_line(exc)
        raise CliError(msg if msg.startswith(str(path)) else f"{path}: {msg}") from None
    except MemoryError:
        raise CliError(f"{path}: not enough memory to load this {what} file") from None
    except Exception as exc:  # noqa: BLE001 - e.g. a checkpoint with the right keys and wrong contents
        text = str(exc).strip().splitlines()
        detail = f"{type(exc).__name__}: {text[0][:160]}" if text else type(exc).__name__
        raise CliError(f"{path}: not a usable {what} file ({detail})") from None


# ------------------------------------------------------------------------------ loading


def load_generator(files: ModelFiles, device):
    from clipbridge import registry

    G = _guard(files.generator, "generator", lambda: registry.load_generator(files.generator)).to(device)
    held = getattr(G, "meta", {}).get("name")
    if files.name is None:
        files.name = held
    elif held is not None and held != files.name:
        raise CliError(f"{files.generator}: holds generator '{held}', not '{files.name}' "
                       f"(pass --generator {held}, or another --generator-file)")
    return G


def load_encoder_and_bridge(files: ModelFiles, G, device):
    """The CLIP encoder and the bridge, checked to fit each other and generator ``G``."""
    from clipbridge import registry

    encoder = _guard(files.encoder, "encoder", lambda: registry.load_encoder(files.encoder)).to(device)
    bridge = _guard(files.bridge, "bridge", lambda: registry.load_bridge(files.bridge)).to(device)
    kw = bridge.init_kwargs
    emb = getattr(encoder, "meta", {}).get("embed_dim")
    if emb is not None and kw["in_dim"] != emb:
        raise CliError(f"{files.bridge}: the bridge takes {kw['in_dim']}-d embeddings but the encoder "
                       f"{files.encoder} gives {emb}-d ones: they were not trained together")
    need = G.z_dim if kw["target"] == "z" else G.w_dim
    num_ws = getattr(bridge, "num_ws", getattr(bridge, "num_out", 1))
    if kw["latent_dim"] != need or (kw["target"] == "w+" and num_ws != G.num_ws):
        shape = f"{num_ws} x {kw['latent_dim']}" if kw["target"] == "w+" else f"{kw['latent_dim']}-d"
        want = f"{G.num_ws} x {need}" if kw["target"] == "w+" else f"{need}-d"
        raise CliError(f"{files.bridge}: the bridge predicts {shape} {kw['target']} latents, generator "
                       f"'{files.name}' ({files.generator}) needs {want}: it was trained for another generator")
    return encoder, bridge
