"""``clipbridge``: the command line for a person with a face photo.

Subcommands (``clipbridge <command> --help`` for each):

- ``invert PHOTO --out DIR``: read the photo, find and align the face (dlib 68 landmarks;
  ``--no-align`` = centre crop), crop it to the generator's resolution, encode it with the CLIP
  image encoder, bridge the embedding to the generator's latent, optionally refine it with
  ``--refine N`` optimization steps; write the crop, the reconstruction, a side-by-side image
  and the latent.
- ``edit PHOTO --out DIR``: invert, then the report's edit strip: for each layer group
  (``--group``, default all groups of params ``edits.groups[<generator>]``) one random offset
  direction, applied ``k * --strength`` for steps ``k < --steps`` (:func:`clipbridge.edits.offsets.report_strip`).
- ``text PROMPT --out DIR``: bridge a CLIP *text* embedding to a face (the clip2latent idea,
  without its prior: the bridge was trained on image embeddings of the same joint space).

Models: the generator, encoder and bridge the pipeline wrote (``paths.generator_file(name)``,
``paths.ENCODER``, ``paths.bridge_file(name, 0)``), or any files given with ``--generator-file``,
``--encoder-file``, ``--bridge-file``. The generator name defaults to the first of params.yaml's
``generators`` (the headline). params.yaml is read by :func:`clipbridge.config.load`, the reader
every stage uses; where it does not exist the command still runs on the model files alone (then
pass ``--generator`` or ``--generator-file``), with the defaults of its sections.

Failures: every expected failure prints one line ``error: <file>: <problem>`` on stderr and
exits with 1 (bad input, model or output) or 2 (bad command line); an unexpected one (a bug)
prints one line too and exits with 3 (``--debug`` shows its traceback). Outputs are written into
a hidden temporary directory and moved into ``--out`` only when everything succeeded, so a
failure leaves no partial output. Same input, options and seed give byte-identical files on CPU.

This module is the command line and its entry point :func:`main`; the commands are in
:mod:`clipbridge.cli.commands`, settings and model loading in :mod:`clipbridge.cli.models`,
progress and writers in :mod:`clipbridge.cli.output`, the photo-to-face path in
:mod:`clipbridge.cli.photo`.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from clipbridge.cli.commands import cmd_edit, cmd_invert, cmd_text
from clipbridge.cli.errors import EXIT_BUG, EXIT_INPUT, EXIT_INTERRUPTED, EXIT_USAGE, CliError

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


def _common_options() -> argparse.ArgumentParser:
    """The options of every command: output and run, models."""
    from clipbridge import paths

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
                   help="params.yaml profile to read (its LPIPS variant); default: its `profile`")
    m.add_argument("--params", type=Path, default=paths.PARAMS, metavar="PATH",
                   help=f"params file (default: {paths.PARAMS})")
    m.add_argument("--generator-file", type=Path, metavar="PATH",
                   help="generator model file (default: data/models/generator-<NAME>.pt)")
    m.add_argument("--encoder-file", type=Path, metavar="PATH", help=f"CLIP encoder file (default: {paths.ENCODER})")
    m.add_argument("--bridge-file", type=Path, metavar="PATH",
                   help="bridge file (default: data/bridge/<NAME>/seed0.pt)")
    return common


def _face_options() -> argparse.ArgumentParser:
    """The options of the photo commands (invert, edit)."""
    from clipbridge.cli import photo

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
    return face


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="clipbridge", formatter_class=argparse.RawDescriptionHelpFormatter,
                     description="Invert, edit and imagine faces through a CLIP -> StyleGAN bridge.",
                     epilog=EXAMPLES)
    sub = parser.add_subparsers(dest="command", metavar="{invert,edit,text}")
    common, face = _common_options(), _face_options()
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


# ------------------------------------------------------------------------------ entry point


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    from clipbridge.cli.photo import PhotoError

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
