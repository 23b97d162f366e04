"""Stage ``evaluate``: every inversion method on one generator's test split (DVC ``foreach``).

``python -m clipbridge.stages.evaluate NAME``. Methods:

- ``mean_latent``: every face as the mean-latent image (the floor);
- ``bridge``: the headline bridges, one per ``train.seeds`` (mean +- std over seeds);
- ``opt_w`` / ``opt_wplus``: optimization from ``w_avg`` in W (z for the DCGAN) and, where the
  generator has it, W+ (the ceiling and its time), on the first ``evaluate.n_opt`` faces;
- ``bridge_refine``: the first seed's bridge followed by ``evaluate.refine_steps`` optimization
  steps (W+ where the generator has it, else W), on the same faces.

Outputs (committed): ``results/evaluate/<name>/metrics.json`` (per method: means, standard
errors, ms/image, device; the gap closed and the speed ratio), ``per_image.csv`` and
``speed_quality.csv`` (PSNR / LPIPS against ms per image along the optimization runs);
DVC-cached: ``data/evaluate/<name>/samples.pt`` (the first faces' reconstructions, for figures).
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch

from clipbridge import config, invert, paths, registry
from clipbridge.distributed import device_name
from clipbridge.evaluate import Scorer, across_seeds, finite, gap_closed, summarize, synthesize, timed
from clipbridge.io import from_uint8, save_torch, seed_everything, write_csv, write_json
from clipbridge.stages import load_split, profile_lpips, run

N_SAMPLES = 8


def out_dir(generator: str):
    return paths.RESULTS / "evaluate" / generator


def samples_file(generator: str):
    return paths.DATA / "evaluate" / generator / "samples.pt"


def _optimize(G, target, ws_init, space, cfg, lpips, std, record_at):
    """Optimization with its wall time; returns final ws, ``{step: ws}`` and ms per image."""
    t = time.perf_counter()
    ws, recorded = invert.optimize(G, target, ws_init, space, cfg, lpips, std, tuple(record_at))
    return ws, recorded, 1000.0 * (time.perf_counter() - t) / target.shape[0]


def equal_time_psnr(curve: list[dict], ms: float) -> float:
    """PSNR an optimization curve (rows with ms_per_image, psnr) reaches at ``ms`` per image (linear)."""
    pts = sorted((r["ms_per_image"], r["psnr"]) for r in curve)
    xs, ys = [x for x, _ in pts], [y for _, y in pts]
    return float(np.interp(ms, xs, ys))


def main(p: config.Params, generator: str) -> None:
    ev = p.evaluate
    seed_everything(ev.seed)
    G = registry.load_generator(paths.generator_file(generator)).to(p.device)
    encoder = registry.load_encoder(paths.ENCODER).to(p.device)
    bridges = {s: registry.load_bridge(paths.bridge_file(generator, s)).to(p.device) for s in p.train.seeds}
    images = from_uint8(load_split(generator, "test")["images"]).to(p.device)
    lpips = profile_lpips(p)
    scorer = Scorer(images, lpips, ev.batch, attributes=ev.attributes)
    n_opt = min(ev.n_opt, images.shape[0])
    sub = slice(0, n_opt)
    rows: list[dict] = []
    summary: dict[str, dict] = {}
    subset: dict[str, dict] = {}
    curve: list[dict] = []
    samples = {"input": images[:N_SAMPLES].cpu()}

    def record(method: str, recon: torch.Tensor, ms: float, index: slice, seed=None) -> dict:
        scored = scorer(recon, index)
        rows.extend({"method": method, "seed": "" if seed is None else seed, **r} for r in scored)
        return {**summarize(scored), "ms_per_image": ms}

    curve_scorer = Scorer(images[sub], lpips, ev.batch, attributes=False)  # the curve needs image metrics only

    def curve_points(method: str, recorded: dict, ms_total: float, steps: int, ms_offset: float = 0.0):
        for step, w in sorted(recorded.items()):
            s = summarize(curve_scorer(synthesize(G, w, ev.batch)))
            curve.append({"method": method, "step": step, "ms_per_image": ms_offset + ms_total * step / steps,
                          "psnr": s["psnr"], "lpips": s["lpips"]})

    # the floor
    mean_ws, recon, ms = timed(G, lambda x: invert.mean_ws(G, x.shape[0]), images, ev.batch)
    summary["mean_latent"] = record("mean_latent", recon, ms, slice(0, images.shape[0]))
    subset["mean_latent"] = {**summarize([r for r in rows if r["method"] == "mean_latent" and r["index"] < n_opt]),
                             "ms_per_image": ms}
    samples["mean_latent"] = recon[:N_SAMPLES].cpu()

    # the headline bridges, one per training seed
    per_seed, bridge_ws = [], {}
    for s, bridge in bridges.items():
        with torch.no_grad():
            ws, recon, ms = timed(G, lambda x: invert.bridge_ws(G, encoder, bridge, x), images, ev.batch)
        per_seed.append({**record("bridge", recon, ms, slice(0, images.shape[0]), seed=s), "seed": s})
        bridge_ws[s] = ws
        if s == p.train.seeds[0]:
            samples["bridge"] = recon[:N_SAMPLES].cpu()
            bridge_ms = ms
    summary["bridge"] = {**across_seeds(per_seed), "seeds": per_seed}
    first = p.train.seeds[0]
    subset["bridge"] = {**summarize([r for r in rows if r["method"] == "bridge" and r["seed"] == first
                                     and r["index"] < n_opt]), "ms_per_image": bridge_ms}

    # optimization from the mean latent, and bridge + refine
    std = invert.latent_std(G)
    target = images[sub]
    spaces = ["w", "w+"] if invert.has_w_plus(G) else ["w"]
    record_at = sorted({0, *[k for k in ev.record_at if k < ev.opt.steps], ev.opt.steps})
    for space in spaces:
        name = "opt_w" if space == "w" else "opt_wplus"
        ws, recorded, ms = _optimize(G, target, invert.mean_ws(G, n_opt), space, ev.opt, lpips, std, record_at)
        recon = synthesize(G, ws, ev.batch)
        summary[name] = subset[name] = record(name, recon, ms, sub)
        curve_points(name, recorded, ms, ev.opt.steps)
        samples[name] = recon[:N_SAMPLES].cpu()
    refine_space = spaces[-1]
    refine_cfg = dataclasses.replace(ev.opt, steps=ev.refine_steps)
    refine_at = sorted({0, *[k for k in ev.record_at if k < ev.refine_steps], ev.refine_steps})
    ws, recorded, ms = _optimize(G, target, bridge_ws[first][sub], refine_space, refine_cfg, lpips, std, refine_at)
    recon = synthesize(G, ws, ev.batch)
    summary["bridge_refine"] = subset["bridge_refine"] = record("bridge_refine", recon, bridge_ms + ms, sub)
    curve_points("bridge_refine", recorded, ms, ev.refine_steps, ms_offset=bridge_ms)
    samples["bridge_refine"] = recon[:N_SAMPLES].cpu()

    best = "opt_wplus" if "opt_wplus" in subset else "opt_w"
    opt_curve = [r for r in curve if r["method"] == best]
    refine_ms = subset["bridge_refine"]["ms_per_image"]
    comparison = {
        "ceiling": best,
        "gap_closed_bridge": gap_closed(subset["bridge"]["psnr"], subset["mean_latent"]["psnr"], subset[best]["psnr"]),
        "gap_closed_bridge_refine": gap_closed(subset["bridge_refine"]["psnr"], subset["mean_latent"]["psnr"],
                                               subset[best]["psnr"]),
        "speed_ratio": subset[best]["ms_per_image"] / bridge_ms,
        "refine_psnr": subset["bridge_refine"]["psnr"],
        "opt_psnr_at_refine_time": equal_time_psnr(opt_curve, refine_ms),
    }
    comparison["refine_beats_equal_time_opt"] = comparison["refine_psnr"] > comparison["opt_psnr_at_refine_time"]
    entry = registry.generator_entry(generator)
    write_json(out_dir(generator) / "metrics.json", finite({
        "generator": generator, "generator_source": entry.source, "stand_in": entry.stand_in,
        "encoder": registry.encoder_entry(p.active.encoder).label, "lpips_variant": lpips.label,
        "device": device_name(p.device), "n_test": int(images.shape[0]), "n_opt": n_opt,
        "methods": summary, "subset": subset, "comparison": comparison,
    }))
    write_csv(out_dir(generator) / "per_image.csv", [finite(r) for r in rows])
    write_csv(out_dir(generator) / "speed_quality.csv", curve)
    save_torch(samples, samples_file(generator))


if __name__ == "__main__":
    run(main)
