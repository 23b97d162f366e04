"""Stage ``encoders``: the encoder study aggregated: is the bridge the limit, or its encoder?

Per generator of ``encoders.generators`` and *row* (each encoder of ``encoders.encoders``, the
learned encoder, the fresh-face rows), from the ``study`` runs:

- PSNR / SSIM / perceptual metric / identity of the kept model (lowest validation MSE) on every
  test face, mean +- std over the row's non-stalled seeds (a seed *stalled* when its last
  validation MSE is not below its first: reported apart, as in the ablations), and PSNR at the
  ``encoders.score_at`` steps;
- where the runs stopped (the plateau rule of :mod:`clipbridge.bridge.study`);
- the gap closed between ``evaluate``'s strongest floor and its ceiling, on the same optimization
  faces, with a bootstrap interval over them;
- per embedding encoder, no training: the ridge probe R^2 of the latent from the embedding and
  the nearest-neighbour retrieval (the latent of the training face nearest by cosine).

The question's statistic: how far each axis moves PSNR at the ablations' step budget. The span
of an axis is its best row's mean PSNR minus its worst's, over the same test faces, with a
bootstrap interval over the faces (the rows re-ranked in every resample). The encoder axis (every
fixed-data row of the study) is set against the bridge axis (the depth and width ablation cells
and the headline recipe, non-stalled seeds, as the ``ablations`` stage committed them); the difference of the two spans gets the same
interval. Each axis's headroom over the report's setup (its best other row minus the headline
encoder, or minus the report's recipe) is computed the same way, the best re-chosen in every
resample. Paired differences answer the rest: learned encoder against the headline encoder,
fresh faces against fixed ones, each bridge against its nearest neighbour.

Outputs (committed): ``results/encoders/table.csv`` (one row per generator and row),
``results/encoders/metrics.json`` (compact; the ``numbers`` stage copies it into the DVC metric
``results/headline.json``), ``results/encoders/comparisons.json`` (spans, paired differences, the
check that the study's headline-encoder run reproduces the headline and ablation bridges),
``results/figures/encoders/encoder_study_<generator>.pdf``, ``paper/generated/encoders.tex``
(the table, the settings and the generated text: :mod:`clipbridge.report.encoders`) and
``paper/generated/encoders_figures.tex`` (the figure floats).
"""

from __future__ import annotations

import itertools
import math
from statistics import NormalDist

import numpy as np
import torch

from clipbridge import config, paths, registry, stats
from clipbridge.bridge.evaluate import Scorer, face_values, synthesize
from clipbridge.bridge.study import FRESH_PREFIX, LEARNED, nearest_latents, probe_r2, seed_spread
from clipbridge.bridge.train import target_latents
from clipbridge.errors import BadValueError
from clipbridge.io import finite, from_uint8, read_csv, read_json, write_csv, write_json, write_text
from clipbridge.models.bridge import to_ws
from clipbridge.report.encoders import abstract_text, encoder_study, figures_tex, finding_text, label_of, present, tex
from clipbridge.report.figures import setup_style
from clipbridge.stages import load_split, profile_metric, run
from clipbridge.stages.ablate import result_file
from clipbridge.stages.ablations import is_reference, stalled
from clipbridge.stages.dataset import SPLITS
from clipbridge.stages.evaluate import out_dir
from clipbridge.stages.models import load_provenance

OUT = paths.STUDY
FIGURE_DIR = paths.FIGURES / "encoders"
ABLATIONS_TABLE = paths.RESULTS / "ablations" / "table.csv"
Z_CI = NormalDist().inv_cdf(0.5 + stats.CI_PERCENT / 200)   # normal quantile of a central CI_PERCENT interval
SHOWN = ("psnr", "ssim", "lpips", "identity")
BRIDGE_AXES = ("depth", "width")      # ablation axes that change the bridge itself


def rows_of(cfg: config.Encoders) -> list[str]:
    return list(cfg.encoders) + [LEARNED] + [FRESH_PREFIX + r for r in cfg.fresh]


def seeds_of(cfg: config.Encoders, row: str) -> list[int]:
    return cfg.fresh_seeds if row.startswith(FRESH_PREFIX) else cfg.seeds


def nanmean(values) -> float:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else math.nan


def face_matrix(rows: list[dict], key: str, n: int) -> np.ndarray:
    """``[n]`` per-face ``key`` of one run's scores, in test-split order."""
    out = np.full(n, np.nan)
    for r in rows:
        out[int(r["index"])] = r.get(key, math.nan)
    return out


def summarize_row(p: config.Params, generator: str, row: str, n_test: int) -> dict:
    """One study row over its seeds (stalled seeds apart)."""
    runs = []
    for s in seeds_of(p.encoders, row):
        d = paths.study_results(generator, row, s)
        runs.append({"seed": s, "scores": read_csv(d / "scores.csv"), "at": read_csv(d / "scores_at.csv"),
                     "run": read_json(d / "run.json"), "stalled": stalled(read_csv(d / "curve.csv"))})
    kept = [r for r in runs if not r["stalled"]] or runs
    out = {"generator": generator, "row": row, "label": label_of(row), "n_seeds": len(kept),
           "n_stalled": sum(r["stalled"] for r in runs),
           "stalled_psnr": " ".join(f"{nanmean([x['psnr'] for x in r['scores']]):.2f}" for r in runs if r["stalled"]),
           "best_step": float(np.mean([r["run"]["best_step"] for r in kept])),
           "steps_run": max(r["run"]["steps_run"] for r in kept),
           "plateaued": all(r["run"]["plateaued"] for r in kept), "lr": kept[0]["run"]["lr"],
           "faces_seen": max(r["run"]["faces_seen"] for r in kept), "parameters": kept[0]["run"]["parameters"]}
    for k in SHOWN:
        spread = seed_spread([nanmean([x.get(k, math.nan) for x in r["scores"]]) for r in kept])
        out[k], out[f"{k}_std"] = spread["mean"], spread["std"]
    out["face_psnr_by_seed"] = {r["seed"]: face_matrix(r["scores"], "psnr", n_test) for r in kept}
    out["face_psnr"] = np.nanmean(list(out["face_psnr_by_seed"].values()), axis=0)
    for step in p.encoders.score_at:
        faces = [face_matrix([x for x in r["at"] if int(x["step"]) == step], "psnr", n_test) for r in kept
                 if any(int(x["step"]) == step for x in r["at"])]
        out[f"psnr_at_{step}"] = float(np.nanmean(faces)) if faces else math.nan
        out[f"psnr_at_{step}_std"] = seed_spread([float(np.nanmean(f)) for f in faces])["std"] if faces else math.nan
        out[f"n_at_{step}"] = len(faces)
        out[f"face_psnr_at_{step}"] = np.nanmean(faces, axis=0) if faces else None
    out["per_seed"] = kept
    return out


@torch.no_grad()
def retrieval_and_probe(p: config.Params, G, generator: str, encoder: str, lat: dict, scorer: Scorer) -> dict:
    """Ridge probe R^2 and nearest-neighbour reconstruction of one embedding encoder (``lat``: each
    split's target latents)."""
    emb = torch.load(paths.embedding_file(generator, encoder), map_location="cpu", weights_only=True)
    probe = probe_r2({s: emb[s] for s in SPLITS}, {s: lat[s].reshape(len(lat[s]), -1) for s in SPLITS},
                     p.encoders.probe_alpha)
    nn = nearest_latents(emb["train"], emb["test"], lat["train"]).to(p.device)
    rows = scorer(synthesize(G, to_ws(G, nn, p.train.target), p.evaluate.batch))
    return {"probe_r2": probe["r2"], "probe_alpha": probe["alpha"], "nn_psnr": nanmean([r["psnr"] for r in rows]),
            "nn_face_psnr": face_matrix(rows, "psnr", len(rows))}


def bridge_cells(p: config.Params, generator: str) -> list[dict]:
    """The ablation cells of ``generator`` as the ``ablations`` stage committed them
    (``results/ablations/table.csv``), each with ``face_psnr``: the per-face PSNR averaged over its
    non-stalled seeds (``n_seeds``; their spread ``psnr_std``), read from the committed per-face
    scores. The stalled seeds are the ``n_stalled`` seeds whose leaving-out gives the table's PSNR
    (the mean of the other seeds' means), so this stage needs no training curve."""
    rows = []
    for row in read_csv(ABLATIONS_TABLE):
        if row["generator"] != generator or row["cell"] not in p.ablate.cells:
            continue
        faces = [read_csv(result_file(row["cell"], s)) for s in p.ablate.seeds]
        means = [float(np.mean([f["psnr"] for f in seed])) for seed in faces]
        n = len(means) - int(row["n_stalled"])
        options = [k for k in itertools.combinations(range(len(means)), n or len(means))
                   if abs(np.mean([means[i] for i in k]) - float(row["psnr"])) < 1e-6]
        if len(options) != 1:
            raise BadValueError(f"{ABLATIONS_TABLE}: cell '{row['cell']}' does not match its per-face scores in "
                                f"results/ablate (run `dvc repro ablations`)")
        rows.append({"cell": row["cell"], "generator": generator, "psnr_std": float(row["psnr_std"]),
                     "n_seeds": len(options[0]),
                     "face_psnr": np.mean([[f["psnr"] for f in faces[i]] for i in options[0]], axis=0)})
    return rows


def seed_sd(*rows: tuple[float, int]) -> float:
    """Training noise of a sum or difference of row means: each row ``(std over its seeds of the
    per-seed mean, number of seeds averaged)`` adds ``std^2 / n`` to the variance; a row without a
    finite std (one seed, or no training) adds nothing."""
    return math.sqrt(sum(s * s / n for s, n in rows if n and math.isfinite(s)))


def with_seed_noise(ci: dict, sd: float) -> dict:
    """An interval over units (the test faces) widened by training noise: each side's half-width
    and ``Z_CI * sd`` added in quadrature, ``sd`` the std over seeds of the same statistic
    (:func:`seed_sd`). The faces-only interval stays as ``face_lo`` / ``face_hi``."""
    if not (math.isfinite(sd) and math.isfinite(ci["mean"])):
        return {**ci, "seed_sd": sd}
    k = Z_CI * sd
    lo, hi = ci["mean"] - math.hypot(ci["mean"] - ci["lo"], k), ci["mean"] + math.hypot(ci["hi"] - ci["mean"], k)
    return {**ci, "face_lo": ci["lo"], "face_hi": ci["hi"], "lo": lo, "hi": hi, "seed_sd": sd,
            "excludes_zero": bool(lo > 0 or hi < 0)}


def public(d: dict) -> dict:
    return {k: v for k, v in d.items() if k != "boot"}


def headroom(faces: dict[str, np.ndarray], reference: str, weights: np.ndarray) -> dict:
    """What an axis could add over its ``reference`` row: the best other row's mean minus the
    reference's over the same units (``{row: [F]}``), the best re-chosen in every resample
    (``weights [B, F]``), so that the interval pays for choosing it on these faces."""
    names = [k for k in faces if k != reference]
    diff = np.stack([faces[k] - faces[reference] for k in names])           # [R, F]
    means = diff.mean(1)
    h = {"mean": float(means.max()), "best": names[int(means.argmax())], "reference": reference,
         "n_faces": int(diff.shape[1]), "boot": (weights @ diff.T).max(1) / diff.shape[1]}
    # its interval: the difference from an axis that adds exactly nothing
    nothing = {"mean": 0.0, "n_faces": h["n_faces"], "boot": np.zeros_like(h["boot"])}
    return {**h, **{k: v for k, v in stats.span_difference(h, nothing).items() if k != "mean"}}


def axis_spans(p: config.Params, generator: str, rows: dict[str, dict], step: int | None, head: str) -> dict:
    """Encoder axis against bridge axis, on the test faces: at ``step`` (both axes trained that
    long; None = the study's kept models, the bridge axis at the ablations' steps). Each axis's
    span (best row minus worst) and headroom over the report's setup (best row minus ``head`` on
    the encoder axis, minus the report's recipe on the bridge axis), and their differences."""
    key, sd_key, n_key = ("face_psnr", "psnr_std", "n_seeds") if step is None else \
        (f"face_psnr_at_{step}", f"psnr_at_{step}_std", f"n_at_{step}")
    enc = {r: rows[r][key] for r in rows if not r.startswith(FRESH_PREFIX) and rows[r][key] is not None}
    cells = [c for c in bridge_cells(p, generator)
             if c["cell"].split("-")[0] in BRIDGE_AXES or is_reference(p, c["cell"])]
    bridge = {c["cell"]: c["face_psnr"] for c in cells}
    if len(enc) < 2 or len(bridge) < 2:
        return {}
    noise = {**{r: (rows[r][sd_key], rows[r][n_key]) for r in enc}, **{c["cell"]: (c["psnr_std"], c["n_seeds"]) for c in cells}}
    w = stats.cluster_weights(len(next(iter(enc.values()))), p.evaluate.bootstrap,
                              np.random.default_rng([p.evaluate.seed, 23, step or 0]))
    a, b = stats.span(enc, w), stats.span(bridge, w)
    sd = {"a": seed_sd(noise[a["best"]], noise[a["worst"]]), "b": seed_sd(noise[b["best"]], noise[b["worst"]])}
    out = {"step": step, "bridge_steps": p.ablate.steps, "encoder_axis": noisy(a, sd["a"]),
           "bridge_axis": noisy(b, sd["b"]),
           "difference": with_seed_noise(stats.span_difference(a, b), math.hypot(sd["a"], sd["b"]))}
    report = [c for c in bridge if c.split("-")[0] not in BRIDGE_AXES]
    if head in enc and len(report) == 1:
        ha, hb = headroom(enc, head, w), headroom(bridge, report[0], w)
        sd_ha, sd_hb = (seed_sd(noise[h["best"]], noise[h["reference"]]) for h in (ha, hb))
        out.update(encoder_headroom=noisy(ha, sd_ha), bridge_headroom=noisy(hb, sd_hb),
                   headroom_difference=with_seed_noise(stats.span_difference(ha, hb), math.hypot(sd_ha, sd_hb)))
    return out


def noisy(ci: dict, sd: float) -> dict:
    """A span or headroom without its bootstrap draws, its interval widened by training noise."""
    return with_seed_noise(public(ci), sd)


def evaluate_faces(generator: str) -> dict:
    """``evaluate``'s strongest floor and ceiling on its optimization faces: per-face PSNR and names."""
    ev = read_json(out_dir(generator) / "metrics.json")
    rows = [{**r, "index": int(r["index"])} for r in read_csv(out_dir(generator) / "per_image.csv")]
    floor, ceiling, n = ev["comparison"]["floor"], ev["comparison"]["ceiling"], ev["n_opt"]
    return {"floor": floor, "ceiling": ceiling, "n_opt": n, "rows": rows, "n_test": ev["n_test"],
            "floor_psnr": face_values(rows, floor, "psnr", n), "ceiling_psnr": face_values(rows, ceiling, "psnr", n)}


def paired(p: config.Params, a: np.ndarray, b: np.ndarray, salt: int, sd: float = 0.0) -> dict:
    """Per-face difference ``a - b`` with its interval over the faces, widened by the training
    noise ``sd`` of the difference (:func:`seed_sd`)."""
    return with_seed_noise(stats.paired_difference(a, b, p.evaluate.bootstrap,
                                                         np.random.default_rng([p.evaluate.seed, 23, salt])), sd)


def seed_noise(row: dict, like: dict | None = None, n: int | None = None) -> tuple[float, int]:
    """``(std over seeds of the row's mean PSNR, seeds averaged)``; a one-seed row borrows the
    spread of ``like`` (the same model on the fixed faces)."""
    std = row["psnr_std"] if math.isfinite(row["psnr_std"]) or like is None else like["psnr_std"]
    return std, n or row["n_seeds"]


def reproduces(p: config.Params, generator: str, row: dict, ev: dict) -> dict:
    """Largest per-face PSNR difference between the study's run at ``train.steps`` / ``ablate.steps``
    and the headline / ablation bridge of the same seed: 0 when the study's runs are the same runs."""
    out = {}
    ref_cell = next((c for c, v in p.ablate.cells.items() if v.generator == generator and is_reference(p, c)), None)
    for what, step in (("headline", p.train.steps), ("ablation", p.ablate.steps)):
        if step not in p.encoders.score_at:
            continue
        diffs = []
        for r in row["per_seed"]:
            mine = face_matrix([x for x in r["at"] if int(x["step"]) == step], "psnr", len(row["face_psnr"]))
            if not np.isfinite(mine).any():   # the run stopped before ``step``
                continue
            if what == "headline" and r["seed"] in p.train.seeds:
                theirs = face_matrix([x for x in ev["rows"] if x["method"] == "bridge" and x["seed"] == r["seed"]],
                                     "psnr", len(mine))
            elif what == "ablation" and ref_cell and r["seed"] in p.ablate.seeds:
                theirs = face_matrix(read_csv(result_file(ref_cell, r["seed"])), "psnr", len(mine))
            else:
                continue
            ok = np.isfinite(mine) & np.isfinite(theirs)
            diffs.append(float(np.abs(mine[ok] - theirs[ok]).max()) if ok.any() else math.nan)
        if diffs:
            out[what] = {"steps": step, "max_abs_psnr_difference": max(diffs), "n_seeds": len(diffs)}
    return out


def fresh_vs_fixed(p: config.Params, fresh: dict, fixed: dict, salt: int) -> dict:
    """Fresh faces minus the fixed ones, per face, over the seeds both rows ran (kept seeds)."""
    seeds = sorted(set(fresh["face_psnr_by_seed"]) & set(fixed["face_psnr_by_seed"]))
    if not seeds:
        return {"mean": math.nan, "lo": math.nan, "hi": math.nan, "n": 0, "excludes_zero": False, "seeds": []}
    a, b = (np.nanmean([row["face_psnr_by_seed"][s] for s in seeds], axis=0) for row in (fresh, fixed))
    sd = seed_sd(seed_noise(fresh, fixed, len(seeds)), seed_noise(fixed, n=len(seeds)))
    return {**paired(p, a, b, salt, sd), "seeds": seeds}


def comparisons(p: config.Params, generator: str, rows: dict[str, dict], ev: dict) -> dict:
    head = p.active.encoder if p.active.encoder in rows else p.encoders.encoders[0]
    out = {"headline_row": head, "spans": {"kept": axis_spans(p, generator, rows, None, head)}}
    for step in p.encoders.score_at:
        if step == p.ablate.steps:
            out["spans"][f"at_{step}"] = axis_spans(p, generator, rows, step, head)
    out["vs_headline"] = {r: paired(p, rows[r]["face_psnr"], rows[head]["face_psnr"], i,
                                    seed_sd(seed_noise(rows[r], rows.get(r.removeprefix(FRESH_PREFIX))),
                                                  seed_noise(rows[head])))
                          for i, r in enumerate(rows) if r != head}
    step, pair = p.train.steps, (rows.get(LEARNED), rows[head])     # the learned encoder at the headline's steps
    out["learned_at"] = {}
    if step in p.encoders.score_at and pair[0] is not None and all(r[f"n_at_{step}"] for r in pair):
        out["learned_at"][step] = paired(p, *(r[f"face_psnr_at_{step}"] for r in pair), 400 + step,
                                         seed_sd(*((r[f"psnr_at_{step}_std"], r[f"n_at_{step}"]) for r in pair)))
    out["fresh_vs_fixed"] = {r: fresh_vs_fixed(p, rows[r], rows[r[len(FRESH_PREFIX):]], 100 + i)
                             for i, r in enumerate(rows) if r.startswith(FRESH_PREFIX)}
    out["vs_nearest_neighbour"] = {r: paired(p, rows[r]["face_psnr"], rows[r]["nn_face_psnr"], 200 + i,
                                             seed_sd(seed_noise(rows[r])))
                                   for i, r in enumerate(rows) if rows[r].get("nn_face_psnr") is not None}
    out["reproduces"] = reproduces(p, generator, rows[head], ev)
    return out


def table_row(p: config.Params, row: dict, ev: dict, salt: int, like: dict | None = None) -> dict:
    """One row of the table; its gap closed has an interval over the optimization faces widened by
    the row's spread over seeds (in units of the gap; ``like``: the fixed row a one-seed row borrows
    its spread from)."""
    n = ev["n_opt"]
    gap = stats.gap_closed(row["face_psnr"][:n], ev["floor_psnr"], ev["ceiling_psnr"], p.evaluate.bootstrap,
                           np.random.default_rng([p.evaluate.seed, 23, 300 + salt]))
    width = float(np.nanmean(ev["ceiling_psnr"]) - np.nanmean(ev["floor_psnr"]))
    gap = with_seed_noise(gap, seed_sd(seed_noise(row, like)) / width if width > 0 else math.nan)
    keep = ("generator", "row", "label", "n_seeds", "n_stalled", "stalled_psnr", "best_step", "steps_run", "plateaued",
            "lr", "faces_seen", *SHOWN, *(f"{k}_std" for k in SHOWN),
            *(f"psnr_at_{s}" for s in p.encoders.score_at), "probe_r2", "probe_alpha", "nn_psnr")
    out = {k: row.get(k, math.nan) for k in keep}
    out.update(gap_closed=gap["mean"], gap_lo=gap["lo"], gap_hi=gap["hi"], gap_faces=gap["n"],
               floor=ev["floor"], ceiling=ev["ceiling"],
               identity_same_network=row["row"].removeprefix(FRESH_PREFIX) == "dlib-face")
    return out


def compact(table: list[dict], comps: dict) -> dict:
    """The DVC metric: a handful of numbers per generator and row."""
    out = {}
    for r in table:
        out.setdefault(r["generator"], {})[r["row"]] = {
            "psnr": r["psnr"], "gap_closed": r["gap_closed"], "probe_r2": present(r["probe_r2"]),
            "nn_psnr": present(r["nn_psnr"]), "best_step": r["best_step"]}
    for g, c in comps.items():
        kept = c["spans"].get("kept") or {}
        if kept:
            out[g]["span_db"] = {"encoder": kept["encoder_axis"]["mean"], "bridge": kept["bridge_axis"]["mean"]}
    return out


def figure(p: config.Params, generator: str, table: list[dict], ev: dict) -> None:
    curves = {r["row"]: read_csv(paths.study_results(generator, r["row"], seeds_of(p.encoders, r["row"])[0]) / "curve.csv")
              for r in table}
    floor = (ev["floor"], read_json(out_dir(generator) / "metrics.json")["methods"][ev["floor"]]["psnr"])
    stand_in = load_provenance(p)["generators"].get(generator, {}).get("stand_in", True)
    encoder_study(table, curves, floor, FIGURE_DIR / f"encoder_study_{generator}.pdf",
                  f"encoder study, {generator} generator{' (stand-in)' if stand_in else ''}, "
                  f"{ev['n_test']} test faces, kept models")


def main(p: config.Params) -> None:
    setup_style()
    cfg, table, comps, texts = p.encoders, [], {}, {}
    metric = profile_metric(p)
    for generator in cfg.generators:
        G = registry.load_generator(paths.generator_file(generator)).to(p.device)
        data = {s: load_split(generator, s) for s in SPLITS}
        targets = from_uint8(data["test"]["images"]).to(p.device)
        scorer = Scorer(targets, metric, p.evaluate.batch, attributes=False)
        ev = evaluate_faces(generator)
        rows = {r: summarize_row(p, generator, r, len(targets)) for r in rows_of(cfg)}
        lat = {s: target_latents(G, data[s], p.train.target) for s in SPLITS}   # shared by every encoder
        for enc in cfg.encoders:
            rows[enc].update(retrieval_and_probe(p, G, generator, enc, lat, scorer))
        comps[generator] = comparisons(p, generator, rows, ev)
        texts[generator] = (finding_text(p, generator, rows, comps[generator]), abstract_text(p, comps[generator]))
        mine = [table_row(p, rows[r], ev, i, rows.get(r.removeprefix(FRESH_PREFIX))) for i, r in enumerate(rows)]
        figure(p, generator, mine, ev)
        table += mine
    write_csv(OUT / "table.csv", [finite(r) for r in table])
    write_json(OUT / "comparisons.json", finite(comps))
    write_json(OUT / "metrics.json", finite(compact(table, comps), digits=6))
    write_text(paths.GENERATED / "encoders.tex", tex(p, table, texts))
    write_text(paths.GENERATED / "encoders_figures.tex", figures_tex(cfg.generators))


if __name__ == "__main__":
    run(main)
