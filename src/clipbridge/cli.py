"""``clipbridge``: the command line for a person with a face photo.

Subcommands (``clipbridge <command> --help`` for each):

- ``invert PHOTO --out DIR``: read the photo, find and align the face (dlib 68 landmarks;
  ``--no-align`` = centre crop), crop it to the generator's resolution, encode it with the CLIP
  image encoder, bridge the embedding to the generator's latent, optionally refine it with
  ``--refine N`` optimization steps; write the crop, the reconstruction, a side-by-side image
  and the latent.
- ``edit PHOTO --out DIR``: invert, then the report's edit strip: for each layer group
  (``--group``, default all groups of params ``edits.groups[<generator>]``) one random offset
  direction, applied ``k * --strength`` for steps ``k < --steps`` (:func:`clipbridge.edits.report_strip`).
- ``text PROMPT --out DIR``: bridge a CLIP *text* embedding to a face (the clip2latent idea,
  without its prior: the bridge was trained on image embeddings of the same joint space).

Models: the generator, encoder and bridge the pipeline wrote (``paths.generator_file(name)``,
``paths.ENCODER``, ``paths.bridge_file(name, 0)``), or any files given with ``--generator-file``,
``--encoder-file``, ``--bridge-file``. The generator name defaults to the first of params.yaml's
``generators`` (the headline), or the older single ``profiles.<profile>.generator`` key.
params.yaml is read as plain YAML, section by section, so the command also runs where only the
model files exist (then pass ``--generator`` or ``--generator-file``).

Failures: every expected failure prints one line ``error: <file>: <problem>`` on stderr and
exits with 1 (bad input, model or output) or 2 (bad command line); an unexpected one (a bug)
prints one line too and exits with 3 (``--debug`` shows its traceback). Outputs are written into
a hidden temporary directory and moved into ``--out`` only when everything succeeded, so a
failure leaves no partial output. Same input, options and seed give byte-identical files on CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path

EXIT_INPUT, EXIT_USAGE, EXIT_BUG, EXIT_INTERRUPTED = 1, 2, 3, 130
PANEL_MIN = 256          # side-by-side and strip panels are enlarged (nearest neighbour) to at least this

EXAMPLES = """\
examples:
  clipbridge invert my_face.jpg --out out/me                 # bridge only (one forward pass)
  clipbridge invert my_face.jpg --out out/me --refine 50     # bridge + 50 optimization steps
  clipbridge invert face_crop.png --out out/crop --no-align  # an already cropped face
  clipbridge edit my_face.jpg --out out/edit                 # the report's strip, every layer group
  clipbridge edit my_face.jpg --out out/edit --group 16px --strength 0.05 --steps 40
  clipbridge text "a smiling face looking left" --out out/text
  clipbridge invert my_face.jpg --out out/sg2 --generator sg2-64 --device cuda

Models come from `make repro` (data/models/, data/bridge/); run commands from the repository
root or pass --params and the --*-file options. Exit status: 0 ok, 1 bad input / model / output,
2 bad command line, 3 a bug."""


class CliError(Exception):
    """An expected failure: one line ``<file>: <problem>``, exit status ``code``."""

    def __init__(self, message: str, code: int = EXIT_INPUT):
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line as one :class:`CliError` line (exit status 2)."""

    def error(self, message: str):
        raise CliError(f"{self.prog}: {message} (see --help)", EXIT_USAGE)


# ------------------------------------------------------------------------------ command line


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


_positive_int.__name__ = "non-negative integer"


def _zoom(text: str) -> float | None:
    if text == "auto":
        return None
    value = float(text)
    if not 0 < value < 100:
        raise ValueError(text)
    return value


_zoom.__name__ = "zoom ('auto' or a number > 0)"


def _wrap(text: str) -> str:
    import textwrap

    return textwrap.fill(text, 92)


def build_parser() -> argparse.ArgumentParser:
    from clipbridge import paths, photo

    parser = _Parser(prog="clipbridge", formatter_class=argparse.RawDescriptionHelpFormatter,
                     description="Invert, edit and imagine faces through a CLIP -> StyleGAN bridge.",
                     epilog=EXAMPLES)
    sub = parser.add_subparsers(dest="command", metavar="{invert,edit,text}")

    common = _Parser(add_help=False)
    g = common.add_argument_group("output and run")
    g.add_argument("--out", required=True, type=Path, metavar="DIR",
                   help="output directory (created; files of the same name in it are replaced)")
    g.add_argument("--device", default="cpu", help="torch device: cpu (default), cuda, cuda:1, mps")
    g.add_argument("--seed", type=_positive_int, default=0, help="seed of every random choice (default 0)")
    g.add_argument("--quiet", action="store_true", help="no progress bars and notes")
    g.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
    m = common.add_argument_group("models")
    m.add_argument("--generator", metavar="NAME",
                   help="generator name (default: the first of params.yaml's `generators`)")
    m.add_argument("--profile", metavar="NAME",
                   help="params.yaml profile to read (LPIPS variant, old `generator` key); default: its `profile`")
    m.add_argument("--params", type=Path, default=paths.PARAMS, metavar="PATH",
                   help=f"params file (default: {paths.PARAMS})")
    m.add_argument("--generator-file", type=Path, metavar="PATH",
                   help="generator model file (default: data/models/generator-<NAME>.pt)")
    m.add_argument("--encoder-file", type=Path, metavar="PATH", help=f"CLIP encoder file (default: {paths.ENCODER})")
    m.add_argument("--bridge-file", type=Path, metavar="PATH",
                   help="bridge file (default: data/bridge/<NAME>/seed0.pt)")

    face = _Parser(add_help=False)
    f = face.add_argument_group("photo")
    f.add_argument("photo", type=Path, metavar="PHOTO", help="face photo: JPEG, PNG, WebP, BMP, TIFF or GIF")
    f.add_argument("--no-align", dest="align", action="store_false",
                   help="centre-crop the photo instead of finding and aligning the face")
    f.add_argument("--zoom", type=_zoom, default=None, metavar="Z",
                   help="crop size relative to the FFHQ framing; 'auto' (default) measures the "
                        "generator's own framing on its samples")
    f.add_argument("--background", choices=["white", "black"], default="white",
                   help="what transparent pixels are composited over (default white)")
    f.add_argument("--max-pixels", type=_positive_int, default=photo.MAX_PIXELS, metavar="N",
                   help=f"refuse photos with more pixels (decompression bombs; default {photo.MAX_PIXELS:,})")
    f.add_argument("--refine", type=_positive_int, default=0, metavar="N",
                   help="optimization steps after the bridge (default 0: bridge only)")

    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("invert", parents=[face, common], formatter_class=fmt, epilog=EXAMPLES,
                       help="photo -> aligned face -> CLIP -> bridge -> generator",
                       description=_wrap(
                           "Invert a face photo: writes input.png (the aligned crop), reconstruction.png, "
                           "side_by_side.png (input | bridge [| refined]) and latent.pt ({ws [1, num_ws, w_dim], "
                           "...})."))
    p.set_defaults(run=cmd_invert)
    p = sub.add_parser("edit", parents=[face, common], formatter_class=fmt, epilog=EXAMPLES,
                       help="invert, then the report's layer-group edit strip",
                       description=_wrap(
                           "Invert a face photo, then edit it layer group by layer group as the report did: per "
                           "group one random offset direction, step k adds k * STRENGTH (in units of the spread "
                           "of w; DCGAN: of the log channel scale). Writes input.png, reconstruction.png, "
                           "strip.png (a row per group, a column per shown step), strip.json and latent.pt."))
    p.add_argument("--group", action="append", metavar="NAME",
                   help="layer group of params.yaml edits.groups[<generator>] (repeatable; default: all)")
    p.add_argument("--strength", type=float, default=None, metavar="S",
                   help="offset per step (default: edits.strip_step, the report's 0.03)")
    p.add_argument("--steps", type=_positive_int, default=None, metavar="K",
                   help="steps (default: edits.strip_steps, the report's 50); shown steps scale with K "
                        "(the report's 0/15/30/45 of 50)")
    p.set_defaults(run=cmd_edit)
    p = sub.add_parser("text", parents=[common], formatter_class=fmt, epilog=EXAMPLES,
                       help="bridge a text prompt's CLIP embedding to a face",
                       description=_wrap(
                           "Bridge a CLIP text embedding to a face (the clip2latent idea without its prior: the "
                           "bridge was trained on image embeddings). Writes face.png and latent.pt."))
    p.add_argument("prompt", metavar="PROMPT", help='e.g. "a smiling face looking left"')
    p.set_defaults(run=cmd_text)
    return parser


# ------------------------------------------------------------------------------ progress


class Phases:
    """A status line naming the phase a command is in, shown only when the command runs for over a
    second (and stderr is a terminal); long phases get their own bar from :meth:`steps`."""

    def __init__(self, quiet: bool):
        from tqdm.auto import tqdm

        self.quiet = quiet
        self.bar = tqdm(total=None, desc="clipbridge", delay=1.0, leave=False, disable=True if quiet else None,
                        bar_format="{desc} [{elapsed}]", file=sys.stderr)

    def __call__(self, name: str) -> None:
        self.bar.set_description_str(f"clipbridge: {name}")

    def steps(self, total: int, desc: str, unit: str = "step"):
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit=unit, delay=1.0, leave=False,
                    disable=True if self.quiet else None, file=sys.stderr)

    def close(self) -> None:
        self.bar.close()


def _note(args, text: str) -> None:
    """A note for the user on stdout (written around any progress bar)."""
    from tqdm.auto import tqdm

    if not args.quiet:
        tqdm.write(f"note: {text}", file=sys.stdout)


# ------------------------------------------------------------------------------ output


class Staging:
    """A hidden temporary directory for a command's outputs, moved into ``out`` on success.

    Created next to the outputs (inside ``out`` when it exists, else in its nearest existing
    ancestor), so the final move is a rename on the same file system.
    """

    def __init__(self, out: Path):
        self.out = out
        if out.exists() and not out.is_dir():
            raise CliError(f"{out}: output path exists and is not a directory")
        anchor = out
        while not anchor.exists():
            anchor = anchor.parent
        if not anchor.is_dir():
            raise CliError(f"{out}: cannot create the output directory: {anchor} is not a directory")
        try:
            self.dir = Path(tempfile.mkdtemp(prefix=".clipbridge-", dir=anchor))
        except OSError as exc:
            raise CliError(f"{out}: output directory is not writable ({exc.strerror or exc})") from None
        umask = os.umask(0)
        os.umask(umask)
        self.dir.chmod(0o777 & ~umask)    # mkdtemp makes it private; the output directory should not be

    def path(self, name: str) -> Path:
        return self.dir / name

    def commit(self) -> list[str]:
        """Move every staged file into ``out``; return their names."""
        names = sorted(p.name for p in self.dir.iterdir())
        try:
            if self.out.exists():
                for name in names:
                    os.replace(self.dir / name, self.out / name)
                self.dir.rmdir()
            else:
                self.out.parent.mkdir(parents=True, exist_ok=True)
                os.rename(self.dir, self.out)
        except OSError as exc:
            raise CliError(f"{self.out}: cannot move the outputs into place ({exc.strerror or exc})") from None
        return names

    def discard(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "Staging":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:  # any failure, before or during commit: nothing partial stays
            self.discard()


def _save_latent(record: dict, path: Path) -> None:
    """``torch.save`` through memory: the same bytes for the same content (see io.save_torch)."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save(record, buf)
    path.write_bytes(buf.getvalue())


def _save_png(array, path: Path) -> None:
    from PIL import Image

    Image.fromarray(array).save(path, format="PNG")


def _uint8(images):
    """``[N, 3, R, R]`` in [-1, 1] -> list of ``[R, R, 3]`` uint8 numpy arrays."""
    from clipbridge.io import to_uint8

    return [a.numpy() for a in to_uint8(images.detach().float().cpu()).permute(0, 2, 3, 1)]


def _grid(rows: list[list]):
    """Rows of equal-size ``[R, R, 3]`` uint8 panels -> one image, enlarged by an integer factor
    (nearest neighbour) so a panel is at least :data:`PANEL_MIN` px, 2 px white gutters."""
    import numpy as np

    r = rows[0][0].shape[0]
    k = max(1, -(-PANEL_MIN // r))
    gap = 2
    h = len(rows) * (r * k + gap) - gap
    w = max(len(row) for row in rows) * (r * k + gap) - gap
    out = np.full((h, w, 3), 255, dtype=np.uint8)
    for i, row in enumerate(rows):
        for j, panel in enumerate(row):
            big = panel.repeat(k, axis=0).repeat(k, axis=1)
            out[i * (r * k + gap):i * (r * k + gap) + r * k, j * (r * k + gap):j * (r * k + gap) + r * k] = big
    return out


# ------------------------------------------------------------------------------ settings and models


@dataclasses.dataclass
class Settings:
    """What the CLI takes from params.yaml (read as plain YAML; each part optional)."""
    source: Path
    found: bool                     # the params file exists
    generator: str | None           # default generator name
    lpips_random: bool              # LPIPS-rand (offline) or LPIPS with ImageNet weights
    lpips_seed: int
    opt: object                     # invert.OptimConfig for --refine (params evaluate.opt)
    edits: object                   # edits.EditsConfig (params edits)


def read_settings(path: Path, profile: str | None) -> Settings:
    import yaml

    from clipbridge.edits import EditsConfig
    from clipbridge.invert import OptimConfig

    raw: dict = {}
    found = path.is_file()
    if found:
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise CliError(f"{path}: not a readable params file ({str(exc).splitlines()[0]})") from None
        if not isinstance(raw, dict):
            raise CliError(f"{path}: expected a mapping at the top level")
    elif profile is not None:
        raise CliError(f"{path}: params file not found (needed by --profile)")
    profiles = raw.get("profiles") or {}
    profile = profile or raw.get("profile") or "offline"
    if profiles and profile not in profiles:
        raise CliError(f"{path}: unknown profile '{profile}'; available: {sorted(profiles)}", EXIT_USAGE)
    prof = profiles.get(profile) or {}
    gens = raw.get("generators")
    generator = gens[0] if isinstance(gens, list) and gens else prof.get("generator")

    def section(cls, value, where):
        try:
            return cls(**(value or {}))
        except (TypeError, ValueError) as exc:
            raise CliError(f"{path}: bad section '{where}' ({str(exc).splitlines()[0]})") from None

    evaluate = raw.get("evaluate") or {}
    return Settings(
        source=path, found=found, generator=generator,
        lpips_random=prof.get("lpips", "LPIPS-rand" if profile == "offline" else "LPIPS") == "LPIPS-rand",
        lpips_seed=int(evaluate.get("lpips_seed", 0)),
        opt=section(OptimConfig, evaluate.get("opt"), "evaluate.opt"),
        edits=section(EditsConfig, raw.get("edits"), "edits"),
    )


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
            where = f"{settings.source} has no `generators` list" if settings.found else f"{settings.source} not found"
            raise CliError(f"{where}: cannot choose a generator; pass --generator NAME (available: "
                           f"{sorted(registry.GENERATORS)}) or --generator-file PATH, or run from the repository root",
                           EXIT_USAGE)
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
    from clipbridge.registry import ModelFileError

    try:
        return load()
    except (ModelFileError, FileNotFoundError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CliError(msg if msg.startswith(str(path)) else f"{path}: {msg}") from None
    except MemoryError:
        raise CliError(f"{path}: not enough memory to load this {what} file") from None
    except Exception as exc:  # noqa: BLE001 - e.g. a checkpoint with the right keys and wrong contents
        text = str(exc).strip().splitlines()
        detail = f"{type(exc).__name__}: {text[0][:160]}" if text else type(exc).__name__
        raise CliError(f"{path}: not a usable {what} file ({detail})") from None


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


# ------------------------------------------------------------------------------ the face


def read_face(args, phases: Phases):
    """The decoded photo and, when aligning, its landmarks (before any model is loaded)."""
    from clipbridge import photo

    phases("read photo")
    pic = photo.read_photo(args.photo, max_pixels=args.max_pixels, background=args.background)
    points = None
    if args.align:
        phases("find face")
        points = photo.find_landmarks(pic.rgb)
        if points is None:
            raise CliError(f"{args.photo}: no face found (dlib frontal face detector); {photo.NO_FACE_HINT}")
    return pic, points


def crop_face(args, pic, points, G, phases: Phases):
    """``[1, 3, R, R]`` in [-1, 1] and the ``[R, R, 3]`` uint8 crop at the generator's resolution."""
    import numpy as np
    import torch

    from clipbridge import photo
    from clipbridge.io import from_uint8

    res = int(G.img_resolution)
    for n in pic.notes:
        _note(args, n)
    h, w = pic.rgb.shape[:2]
    if points is None:
        crop, _ = photo.centre_crop(pic.rgb, res)
        _note(args, f"centre crop, no alignment: {w}x{h} -> {res}x{res}")
    else:
        zoom = args.zoom
        if zoom is None:
            phases("measure framing")
            zoom, found = photo.generator_zoom(G)
            n = photo.FRAMING_SAMPLES
            if found >= photo.FRAMING_MIN_FACES:
                _note(args, f"crop zoom {zoom:.2f}: the framing of the generator's own faces ({found} of {n} samples)")
            else:
                _note(args, f"crop zoom 1.00 (FFHQ framing): too few of the generator's samples have a detectable "
                            f"face ({found} of {n}) to measure its framing")
        crop = photo.sample_square(pic.rgb, photo.crop_square(points, zoom), res)
        _note(args, f"face aligned from 68 landmarks: {w}x{h} -> {res}x{res}")
    image = from_uint8(torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1)[None])
    return image, crop


def infer_ws(args, settings: Settings, G, encoder, bridge, image, phases: Phases, device):
    """Bridge ``ws`` and, with ``--refine``, the refined ``ws`` (else None)."""
    import torch

    from clipbridge import invert

    phases("encode + bridge")
    with torch.no_grad():
        ws = invert.bridge_ws(G, encoder, bridge, image.to(device))
    if not args.refine:
        return ws, None
    phases("refine")
    space = "w+" if invert.has_w_plus(G) else "w"
    cfg = dataclasses.replace(settings.opt, steps=args.refine)
    lpips = None
    if cfg.lpips_weight > 0:
        from clipbridge.metrics import LPIPS

        lpips = LPIPS(random_trunk=settings.lpips_random, seed=settings.lpips_seed).to(device)  # upsamples < 64 px
    with phases.steps(args.refine, f"refine ({space})") as bar:
        refined, _ = invert.optimize(G, image.to(device), ws, space, cfg, lpips, invert.latent_std(G),
                                     progress=lambda step: bar.update(1))
    return ws, refined


def _synth(G, ws):
    import torch

    with torch.no_grad():
        return G.synthesis(ws, noise_mode="const").float().cpu()


def _latent_record(files: ModelFiles, ws, **extra) -> dict:
    return {"kind": "latent", "ws": ws.detach().float().cpu().contiguous(), "generator": files.name,
            "generator_file": str(files.generator), "bridge_file": str(files.bridge), **extra}


# ------------------------------------------------------------------------------ commands


def _prologue(args):
    device = check_device(args.device)
    settings = read_settings(args.params, args.profile)
    files = resolve_files(args, settings)
    return device, settings, files


@contextmanager
def _photo_run(args, files, device):
    """What every photo command does first: read the face, open the staging directory (failing
    fast on an unwritable --out, before the models load) and load the generator. Yields
    ``(phases, staging, pic, points, G)``; the caller writes into ``staging`` and commits it."""
    phases = Phases(args.quiet)
    try:
        pic, points = read_face(args, phases)
        with Staging(args.out) as staging:
            phases("load models")
            yield phases, staging, pic, points, load_generator(files, device)
    finally:
        phases.close()


def cmd_invert(args) -> list[str]:
    device, settings, files = _prologue(args)
    with _photo_run(args, files, device) as (phases, staging, pic, points, G):
        image, crop = crop_face(args, pic, points, G, phases)
        phases("load encoder + bridge")
        encoder, bridge = load_encoder_and_bridge(files, G, device)
        ws, refined = infer_ws(args, settings, G, encoder, bridge, image, phases, device)
        phases("write")
        bridged = _uint8(_synth(G, ws))[0]
        final = bridged if refined is None else _uint8(_synth(G, refined))[0]
        _save_png(crop, staging.path("input.png"))
        _save_png(final, staging.path("reconstruction.png"))
        if refined is not None:
            _save_png(bridged, staging.path("bridge.png"))
        _save_png(_grid([[crop, bridged] + ([] if refined is None else [final])]), staging.path("side_by_side.png"))
        _save_latent(_latent_record(files, ws if refined is None else refined, photo=str(args.photo),
                                    align=args.align, refine_steps=args.refine, seed=args.seed),
                     staging.path("latent.pt"))
        names = staging.commit()
    return names


def _shown_steps(edits_cfg, steps: int) -> list[int]:
    """The report's shown steps (params strip_show of strip_steps) scaled to ``steps``."""
    if steps == edits_cfg.strip_steps:
        return list(edits_cfg.strip_show)
    shown = sorted({min(steps - 1, round(k * steps / edits_cfg.strip_steps)) for k in edits_cfg.strip_show})
    return shown or [0]


def cmd_edit(args) -> list[str]:
    import numpy as np

    from clipbridge import edits

    device, settings, files = _prologue(args)
    cfg = settings.edits
    strength = cfg.strip_step if args.strength is None else args.strength
    steps = cfg.strip_steps if args.steps is None else args.steps
    if steps < 1:
        raise CliError(f"--steps: must be at least 1, got {steps}", EXIT_USAGE)
    with _photo_run(args, files, device) as (phases, staging, pic, points, G):
        if files.name is None:
            raise CliError(f"{files.generator}: the file does not name its generator, so its layer groups are "
                           f"unknown; pass --generator NAME", EXIT_USAGE)
        try:
            groups = edits.groups_for(cfg, files.name, G)
        except ValueError as exc:
            raise CliError(str(exc)) from None
        chosen = args.group or list(groups)
        unknown = [g for g in chosen if g not in groups]
        if unknown:
            raise CliError(f"{settings.source}: no layer group {unknown} for generator '{files.name}' in "
                           f"edits.groups; available: {list(groups)}", EXIT_USAGE)
        image, crop = crop_face(args, pic, points, G, phases)
        phases("load encoder + bridge")
        encoder, bridge = load_encoder_and_bridge(files, G, device)
        ws, refined = infer_ws(args, settings, G, encoder, bridge, image, phases, device)
        face_ws = ws if refined is None else refined
        phases("edit")
        shown = _shown_steps(cfg, steps)
        scale = cfg.scale_of(files.name)
        unit = edits.offset_unit(G, edits.w_std(G, cfg.w_std_samples, cfg.seed), scale)
        rows = []
        with phases.steps(len(chosen), "edit strip", unit="group") as bar:
            for name in chosen:
                index = list(groups).index(name)   # a group's direction does not depend on which others are shown
                seed = int(np.random.SeedSequence([args.seed, index]).generate_state(1)[0])
                strip = edits.report_strip(G, face_ws, {name: groups[name]}, strength, shown, seed, unit)
                rows.append(_uint8(strip[0]))
                bar.update(1)
        phases("write")
        _save_png(crop, staging.path("input.png"))
        _save_png(_uint8(_synth(G, face_ws))[0], staging.path("reconstruction.png"))
        _save_png(_grid(rows), staging.path("strip.png"))
        legend = {
            "generator": files.name, "space": edits.space_name(G),
            "unit": f"{scale:g} x " + ("std of the log channel scale" if edits.is_dcgan(G)
                                       else "per-dimension std of w (sigma_w)"),
            "rows": [{"group": g, "layers": list(groups[g])} for g in chosen],
            "columns": [{"step": k, "magnitude": round(k * strength, 9)} for k in shown],
            "strength": strength, "steps": steps, "seed": args.seed, "refine_steps": args.refine,
            "photo": str(args.photo),
        }
        staging.path("strip.json").write_text(json.dumps(legend, indent=2, sort_keys=True) + "\n")
        _save_latent(_latent_record(files, face_ws, photo=str(args.photo), align=args.align,
                                    refine_steps=args.refine, seed=args.seed), staging.path("latent.pt"))
        names = staging.commit()
    if not args.quiet:
        for g in chosen:
            print(f"strip row {chosen.index(g)}: group {g} {list(groups[g])}; columns: steps {shown}")
    return names


def cmd_text(args) -> list[str]:
    import torch

    from clipbridge.models.bridge import to_ws

    prompt = args.prompt.strip()
    if not prompt:
        raise CliError("PROMPT: empty text prompt", EXIT_USAGE)
    device, settings, files = _prologue(args)
    phases = Phases(args.quiet)
    try:
        with Staging(args.out) as staging:
            phases("load models")
            G = load_generator(files, device)
            phases("load encoder + bridge")
            encoder, bridge = load_encoder_and_bridge(files, G, device)
            phases("encode + bridge")
            try:
                with torch.no_grad():
                    emb = encoder.encode_text([prompt]).to(device)
            except ValueError as exc:  # a placeholder encoder without a text tower, or a prompt too long
                msg = str(exc).splitlines()[0]
                raise CliError(f"{files.encoder}: {msg}" if "text tower" in msg else f"PROMPT: {msg}") from None
            with torch.no_grad():
                ws = to_ws(G, bridge(emb), bridge.target)
            phases("write")
            _save_png(_uint8(_synth(G, ws))[0], staging.path("face.png"))
            _save_latent(_latent_record(files, ws, prompt=prompt, seed=args.seed), staging.path("latent.pt"))
            names = staging.commit()
    finally:
        phases.close()
    return names


# ------------------------------------------------------------------------------ entry point


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    from clipbridge.photo import PhotoError

    args = None
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help
            return int(exc.code or 0)
        if args.command is None:
            raise CliError("clipbridge: choose a command: invert, edit or text (see --help)", EXIT_USAGE)
        with warnings.catch_warnings():
            if not args.debug:
                warnings.simplefilter("ignore")   # library chatter would break the one-line error contract
            import torch

            torch.manual_seed(args.seed)
            names = args.run(args)
        if not args.quiet:
            print(f"wrote {args.out}: {', '.join(names)}")
        return 0
    except (CliError, PhotoError) as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return getattr(exc, "code", EXIT_INPUT)
    except KeyboardInterrupt:
        print("error: interrupted; no outputs written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - a bug: one line unless --debug
        if args is not None and args.debug:
            raise
        where = getattr(args, "photo", None) or "clipbridge"
        print(f"error: {where}: unexpected {type(exc).__name__}: {_one_line(exc)[:300]} "
              f"(a bug; rerun with --debug for the traceback)", file=sys.stderr)
        return EXIT_BUG


if __name__ == "__main__":
    sys.exit(main())
