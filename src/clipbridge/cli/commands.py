"""The three commands (``invert``, ``edit``, ``text``): each takes the parsed ``args``, writes its
outputs through a :class:`~clipbridge.cli.output.Staging` directory and returns the names written."""

from __future__ import annotations

import dataclasses
import json
from contextlib import contextmanager

from clipbridge.cli.errors import EXIT_USAGE, CliError
from clipbridge.cli.models import (ModelFiles, Settings, check_device, load_encoder_and_bridge, load_generator,
                                   read_settings, resolve_files)
from clipbridge.cli.output import Phases, Staging, grid, latent_record, note, save_latent, save_png, uint8


# ------------------------------------------------------------------------------ the face


def read_face(args, phases: Phases):
    """The decoded photo and, when aligning, its landmarks (before any model is loaded)."""
    from clipbridge.cli import photo

    return photo.read_face(args.photo, args.align, max_pixels=args.max_pixels, background=args.background,
                           progress=phases)


def _zoom(args, G, phases: Phases) -> float:
    """``--zoom``, or with 'auto' the framing of the generator's own faces."""
    from clipbridge.cli import photo

    if args.zoom is not None:
        return args.zoom
    phases("measure framing")
    zoom, found = photo.generator_zoom(G)
    n = photo.FRAMING_SAMPLES
    if found >= photo.FRAMING_MIN_FACES:
        note(args, f"crop zoom {zoom:.2f}: the framing of the generator's own faces ({found} of {n} samples)")
    else:
        note(args, f"crop zoom 1.00 (FFHQ framing): too few of the generator's samples have a detectable "
                   f"face ({found} of {n}) to measure its framing")
    return zoom


def crop_face(args, pic, points, G, phases: Phases):
    """The :class:`~clipbridge.cli.photo.Face` at the generator's resolution: ``image [1, 3, R, R]``
    in [-1, 1] and ``crop [R, R, 3]`` uint8."""
    from clipbridge.cli import photo

    for n in pic.notes:
        note(args, n)
    zoom = 1.0 if points is None else _zoom(args, G, phases)
    face = photo.crop_face(pic, points, int(G.img_resolution), zoom)
    note(args, face.notes[-1])
    return face


def infer_ws(args, settings: Settings, G, encoder, bridge, image, phases: Phases, device):
    """Bridge ``ws`` and, with ``--refine``, the refined ``ws`` (else None)."""
    import torch

    from clipbridge.bridge import invert

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
        from clipbridge.models.lpips import build_lpips

        lpips = build_lpips(settings.lpips, settings.lpips_seed, device)
    with phases.steps(args.refine, f"refine ({space})") as bar:
        refined, _ = invert.optimize(G, image.to(device), ws, space, cfg, lpips, invert.latent_std(G),
                                     progress=lambda step: bar.update(1))
    return ws, refined


def synth(G, ws):
    """``ws [N, num_ws, w_dim]`` -> ``[N, 3, R, R]`` float32 on the CPU."""
    from clipbridge.bridge.evaluate import synthesize

    return synthesize(G, ws, batch=ws.shape[0]).float().cpu()


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


def _photo_latent(args, files: ModelFiles, ws) -> dict:
    return latent_record(files, ws, photo=str(args.photo), align=args.align, refine_steps=args.refine,
                         seed=args.seed)


def cmd_invert(args) -> list[str]:
    device, settings, files = _prologue(args)
    with _photo_run(args, files, device) as (phases, staging, pic, points, G):
        face = crop_face(args, pic, points, G, phases)
        phases("load encoder + bridge")
        encoder, bridge = load_encoder_and_bridge(files, G, device)
        ws, refined = infer_ws(args, settings, G, encoder, bridge, face.image, phases, device)
        phases("write")
        bridged = uint8(synth(G, ws))[0]
        final = bridged if refined is None else uint8(synth(G, refined))[0]
        save_png(face.crop, staging.path("input.png"))
        save_png(final, staging.path("reconstruction.png"))
        if refined is not None:
            save_png(bridged, staging.path("bridge.png"))
        save_png(grid([[face.crop, bridged] + ([] if refined is None else [final])]), staging.path("side_by_side.png"))
        save_latent(_photo_latent(args, files, ws if refined is None else refined), staging.path("latent.pt"))
        names = staging.commit()
    return names


def _shown_steps(edits_cfg, steps: int) -> list[int]:
    """The report's shown steps (params strip_show of strip_steps) scaled to ``steps``."""
    if steps == edits_cfg.strip_steps:
        return list(edits_cfg.strip_show)
    shown = sorted({min(steps - 1, round(k * steps / edits_cfg.strip_steps)) for k in edits_cfg.strip_show})
    return shown or [0]


def _edit_groups(args, settings: Settings, files: ModelFiles, G) -> tuple[dict, list[str]]:
    """The generator's layer groups (params edits.groups) and the ``--group`` ones chosen (default all)."""
    from clipbridge.edits import offsets as edits

    if files.name is None:
        raise CliError(f"{files.generator}: the file does not name its generator, so its layer groups are "
                       f"unknown; pass --generator NAME", EXIT_USAGE)
    try:
        groups = edits.groups_for(settings.edits, files.name, G)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    chosen = args.group or list(groups)
    unknown = [g for g in chosen if g not in groups]
    if unknown:
        raise CliError(f"{settings.source}: no layer group {unknown} for generator '{files.name}' in "
                       f"edits.groups; available: {list(groups)}", EXIT_USAGE)
    return groups, chosen


def _edit_rows(args, G, face_ws, groups: dict, chosen: list[str], strength: float, shown: list[int], unit,
               phases: Phases) -> list:
    """One strip row (``[R, R, 3]`` uint8 panels) per chosen group, its direction seeded by
    ``(--seed, the group's index)`` so it does not depend on which other groups are shown."""
    import numpy as np

    from clipbridge.edits import offsets as edits

    rows = []
    with phases.steps(len(chosen), "edit strip", unit="group") as bar:
        for name in chosen:
            index = list(groups).index(name)
            seed = int(np.random.SeedSequence([args.seed, index]).generate_state(1)[0])
            strip = edits.report_strip(G, face_ws, {name: groups[name]}, strength, shown, seed, unit)
            rows.append(uint8(strip[0]))
            bar.update(1)
    return rows


def _edit_legend(args, files: ModelFiles, G, groups, chosen, shown, strength, steps, scale) -> dict:
    """``strip.json``: what the strip's rows and columns are."""
    from clipbridge.edits import offsets as edits

    return {
        "generator": files.name, "space": edits.space_name(G),
        "unit": f"{scale:g} x " + ("std of the log channel scale" if edits.is_dcgan(G)
                                   else "per-dimension std of w (sigma_w)"),
        "rows": [{"group": g, "layers": list(groups[g])} for g in chosen],
        "columns": [{"step": k, "magnitude": round(k * strength, 9)} for k in shown],
        "strength": strength, "steps": steps, "seed": args.seed, "refine_steps": args.refine,
        "photo": str(args.photo),
    }


def cmd_edit(args) -> list[str]:
    from clipbridge.edits import offsets as edits

    device, settings, files = _prologue(args)
    cfg = settings.edits
    strength = cfg.strip_step if args.strength is None else args.strength
    steps = cfg.strip_steps if args.steps is None else args.steps
    if steps < 1:
        raise CliError(f"--steps: must be at least 1, got {steps}", EXIT_USAGE)
    with _photo_run(args, files, device) as (phases, staging, pic, points, G):
        groups, chosen = _edit_groups(args, settings, files, G)
        face = crop_face(args, pic, points, G, phases)
        phases("load encoder + bridge")
        encoder, bridge = load_encoder_and_bridge(files, G, device)
        ws, refined = infer_ws(args, settings, G, encoder, bridge, face.image, phases, device)
        face_ws = ws if refined is None else refined
        phases("edit")
        shown = _shown_steps(cfg, steps)
        scale = cfg.scale_of(files.name)
        unit = edits.offset_unit(G, edits.w_std(G, cfg.w_std_samples, cfg.seed), scale)
        rows = _edit_rows(args, G, face_ws, groups, chosen, strength, shown, unit, phases)
        phases("write")
        save_png(face.crop, staging.path("input.png"))
        save_png(uint8(synth(G, face_ws))[0], staging.path("reconstruction.png"))
        save_png(grid(rows), staging.path("strip.png"))
        legend = _edit_legend(args, files, G, groups, chosen, shown, strength, steps, scale)
        staging.path("strip.json").write_text(json.dumps(legend, indent=2, sort_keys=True) + "\n")
        save_latent(_photo_latent(args, files, face_ws), staging.path("latent.pt"))
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
            save_png(uint8(synth(G, ws))[0], staging.path("face.png"))
            save_latent(latent_record(files, ws, prompt=prompt, seed=args.seed), staging.path("latent.pt"))
            names = staging.commit()
    finally:
        phases.close()
    return names
