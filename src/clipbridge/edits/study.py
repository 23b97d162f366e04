"""Layer-group study: what each group of style layers controls, reproduced and measured.

The seed report described what perturbing each group of a StyleGAN2's W+ vectors changes (head
pose and hair, facial features, skin tone, background colour; :mod:`clipbridge.edits.offsets`).
:func:`run_study` does, per generator:

1. the report's experiment as it was (:func:`clipbridge.edits.offsets.report_strip`);
2. the measurement (:func:`measure`): many faces (:func:`study_faces`) x seeded offset draws x
   groups x offset magnitudes, each edited image compared with its unedited face
   (:mod:`clipbridge.edits.measures`);
3. the summaries with 95% bootstrap CIs over faces, on the common face set (the (face, draw)
   slots measured in every group), the face-loss rate per group and magnitude, and the verdict on
   each of the report's four claims from paired group differences under two normalizations (per
   unit of RMS change and raw; supported only where both agree) (:mod:`clipbridge.edits.verdicts`).

Settings: :class:`clipbridge.config.EditsConfig` (params ``edits``; layer groups only from ``edits.groups``).
"""

from __future__ import annotations

import math
import time

import torch

from clipbridge.config import EditsConfig
from clipbridge.edits.measures import LOWPASS_SIGMA, MEASURES, Analyzer, compare, faces_found
from clipbridge.edits.offsets import (STREAM_DIRECTIONS, STREAM_FACES, device_of, draw_direction, is_dcgan,
                                      offset_unit, report_strip, space_name, stream, synthesize_edit, w_std)
from clipbridge.edits.verdicts import COMMON_SET, NORMALIZATIONS, VERDICT_RULE, judge, mag_key, summarize, tabulate

@torch.no_grad()
def study_faces(G: torch.nn.Module, n: int, seed: int, batch: int,
                max_candidates: int | None = None) -> tuple[torch.Tensor, int]:
    """ws ``[n, num_ws, w_dim]`` (on G's device) of the first ``n`` z (faces stream of ``seed``)
    whose unedited image has a dlib face, and how many of them have one.

    At most ``max_candidates`` (None = ``4 n``) z are tried; when too few have a face the set is
    filled with the first faceless ones (their face measures are then excluded, and counted).
    """
    device = device_of(G)
    gen = stream(seed, STREAM_FACES)
    limit = 4 * n if max_candidates is None else max_candidates
    with_face, without, tried = [], [], 0
    while len(with_face) < n and tried < limit:
        z = torch.randn(min(batch, limit - tried), G.z_dim, generator=gen).to(device)
        tried += z.shape[0]
        ws = G.mapping(z, None)
        found = faces_found(synthesize_edit(G, ws))
        for i in range(ws.shape[0]):
            (with_face if found[i] else without).append(ws[i])
    n_found = min(n, len(with_face))
    chosen = (with_face[:n] + without)[:n]
    return torch.stack(chosen), n_found


@torch.no_grad()
def measure(G: torch.nn.Module, ws: torch.Tensor, groups: dict[str, tuple[int, int]], magnitudes: list[float],
            n_draws: int, seed: int, unit, lpips, analyzer: Analyzer,
            batch: int = 64, progress: bool = True) -> list[dict]:
    """Faces x draws x groups x magnitudes edited and compared with the unedited faces.

    ws: ``[F, num_ws, w_dim]`` the faces (:func:`study_faces`). Direction of (face f, draw d,
    group g) comes from the directions stream of ``seed`` drawn in the fixed order (d, g) for all
    faces at once, so it does not depend on ``batch``; it is reused for every magnitude.
    ``unit``: :func:`~clipbridge.edits.offsets.offset_unit`. Returns one row per edited image: ``face, draw, group,
    magnitude, face_found_base, face_found_edit`` and every :data:`MEASURES` key (NaN where excluded).
    """
    from tqdm import tqdm

    n_faces = ws.shape[0]
    gen = stream(seed, STREAM_DIRECTIONS)
    directions = {(d, g): draw_direction(G, n_faces, rng, gen) for d in range(n_draws) for g, rng in groups.items()}
    rows = []
    total = n_faces * n_draws * len(groups) * len(magnitudes)
    bar = tqdm(total=total, desc="edits", unit="img", disable=not progress, dynamic_ncols=True)
    for lo in range(0, n_faces, batch):
        sl = slice(lo, min(lo + batch, n_faces))
        base_img = synthesize_edit(G, ws[sl])
        base = analyzer(base_img)
        for (d, g), direction in directions.items():
            dir_b = [t[sl] for t in direction] if is_dcgan(G) else direction[sl]
            for m in magnitudes:
                img = synthesize_edit(G, ws[sl], groups[g], dir_b, m, unit)
                res = compare(base, analyzer(img), base_img, img, lpips)
                for i in range(img.shape[0]):
                    row = {"face": lo + i, "draw": d, "group": g, "magnitude": m,
                           "face_found_base": bool(base.found[i]), "face_found_edit": bool(res["face_found_edit"][i])}
                    row.update({k.key: float(res[k.key][i]) for k in MEASURES})
                    rows.append(row)
                bar.update(img.shape[0])
    bar.close()
    return rows


def run_study(G: torch.nn.Module, groups: dict[str, tuple[int, int]], cfg: EditsConfig, lpips,
              unit_scale: float = 1.0, progress: bool = True) -> dict:
    """Faces, strip, measurement, summaries and verdicts of one generator.

    Returns ``{rows, summary, verdicts, verdicts_by_normalization, verdicts_by_magnitude, face_loss,
    strip [G, S, 3, R, R], settings, n, seconds}`` (verdicts: :func:`clipbridge.edits.verdicts.judge`;
    ``verdicts_by_normalization``: ``{per_rms, raw, combined: {claim: verdict}}``; ``face_loss``:
    ``{group: {magnitude: {mean, lo, hi, n, of}}}``); everything seeded from ``cfg.seed``. ``unit_scale``: offset units
    per magnitude unit (:meth:`EditsConfig.scale_of`).
    """
    t0 = time.perf_counter()
    analyzer = Analyzer()
    sigma = w_std(G, cfg.w_std_samples, cfg.seed)
    unit = offset_unit(G, sigma, unit_scale)
    ws, n_found = study_faces(G, cfg.n_faces, cfg.seed, cfg.batch)
    strip = report_strip(G, ws[:1], groups, cfg.strip_step, cfg.strip_show, cfg.seed, unit)
    rows = measure(G, ws, groups, cfg.magnitudes, cfg.n_draws, cfg.seed, unit, lpips, analyzer,
                   batch=cfg.batch, progress=progress)
    names = list(groups)
    table = tabulate(rows, names, cfg.magnitudes, cfg.n_faces, cfg.n_draws, cfg.bootstrap, cfg.seed)
    summary = summarize(table)
    mag = cfg.judged_magnitude
    settings: dict = {
        "space": space_name(G), "groups": {g: list(r) for g, r in groups.items()},
        "group_order": names,  # coarse to fine (JSON objects are written with sorted keys)
        "magnitudes": list(cfg.magnitudes),
        "verdict_magnitude": mag, "n_draws": cfg.n_draws, "bootstrap": cfg.bootstrap, "seed": cfg.seed,
        "magnitude_unit": (f"{unit_scale:g} x std of the log channel scale" if sigma is None
                           else f"{unit_scale:g} x per-dimension std of w (sigma_w)"),
        "unit_scale": unit_scale,
        "w_std_mean": None if sigma is None else float(sigma.mean()),
        "w_std_samples": cfg.w_std_samples,
        "report_raw_step_in_magnitude_units": (None if sigma is None
                                               else float(cfg.strip_step / (unit_scale * sigma.mean()))),
        "strip": {"step": cfg.strip_step, "steps": cfg.strip_steps, "show": list(cfg.strip_show)},
        "lowpass_sigma_of_side": LOWPASS_SIGMA,
        "lowpass_half_power_cycles_per_image": math.sqrt(math.log(2)) / (2 * math.pi * LOWPASS_SIGMA),
        "resolution": int(G.img_resolution),
        "rule": VERDICT_RULE,
        "face_measures_on": COMMON_SET,
        "normalizations": list(NORMALIZATIONS),
    }
    n = {"faces": cfg.n_faces, "faces_with_face": n_found, "draws": cfg.n_draws, "images": len(rows),
         "excluded_face_rows": sum(c["n_excluded"] for g in summary.values() for c in g.values()),
         "lost_face_rows": sum(c["face_loss_rate"]["n"] for g in summary.values() for c in g.values())}
    verdicts = judge(table, mag)
    return {
        "rows": rows, "summary": summary, "strip": strip, "settings": settings, "n": n,
        "verdicts": verdicts,
        "verdicts_by_normalization": {("combined" if k == "verdict" else k): {c: v[k] for c, v in verdicts.items()}
                                      for k in (*NORMALIZATIONS, "verdict")},
        "verdicts_by_magnitude": {mag_key(m): {c: v["verdict"] for c, v in judge(table, m).items()}
                                  for m in cfg.magnitudes},
        "face_loss": {g: {mk: c["face_loss_rate"] for mk, c in cells.items()} for g, cells in summary.items()},
        "seconds": time.perf_counter() - t0,
    }
