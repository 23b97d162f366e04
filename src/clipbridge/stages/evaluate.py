"""Stage ``evaluate``: every inversion method on one generator's test split (DVC ``foreach``).

``python -m clipbridge.stages.evaluate NAME``. Methods:

- two floors that carry no information about the input face: ``mean_latent`` (every face as the
  mean latent's image; on the DCGAN z = 0 is a flat image in its dead zone) and ``mean_image``
  (the per-pixel mean of the training faces). The *strongest floor* is the one with the higher
  PSNR on the optimization faces;
- ``bridge``: the headline bridges, one per ``train.seeds`` (mean +- std over seeds);
- ``bridge_refine``: each seed's bridge followed by ``evaluate.refine_steps`` optimization steps
  (W+ where the generator has it, else W);
- ``opt_short``: optimization from the mean latent with the same steps and schedule as the
  refinement (the matched equal-step comparison for bridge + refine);
- ``opt_w`` / ``opt_wplus``: optimization from the mean latent for ``evaluate.opt.steps`` in W (z for
  the DCGAN) and, where the generator has it, W+: the ceiling.

One face set per comparison: the optimization methods run on the first ``evaluate.n_opt`` test
faces (``evaluate.n_opt_by_generator`` per generator), every method is scored on exactly those
faces too (``subset``), and every ratio and paired difference is computed there, over all bridge
seeds (a per-face value is the mean over seeds).
Paired differences carry a 95% bootstrap interval over faces (``evaluate.bootstrap``).
With the attribute models, the instruments' own noise is measured on the test faces
(:func:`clipbridge.bridge.evaluate.instrument_noise`).

Outputs (committed): ``results/evaluate/<name>/metrics.json`` (per method: means, standard errors,
ms/image, device; floors, gap closed, paired comparisons, instrument noise), ``per_image.csv`` and
``speed_quality.csv`` (PSNR / LPIPS against ms per image along the optimization runs);
DVC-cached: ``data/evaluate/<name>/samples.pt`` (the first faces' reconstructions, for figures).
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch

from clipbridge import config, paths, registry, stats
from clipbridge.bridge import invert
from clipbridge.bridge.evaluate import (Scorer, across_seeds, face_values, instrument_noise, summarize,
                                        synthesize, timed)
from clipbridge.distributed import device_name
from clipbridge.io import finite, from_uint8, save_torch, seed_everything, write_csv, write_json
from clipbridge.stages import load_split, profile_lpips, profile_metric, run

N_SAMPLES = 8
FLOORS = ("mean_latent", "mean_image")
PAIRED_KEYS = ("psnr", "ssim", "lpips", "identity", "age_error", "gender_agree")


def out_dir(generator: str):
    return paths.RESULTS / "evaluate" / generator


def samples_file(generator: str):
    return paths.DATA / "evaluate" / generator / "samples.pt"


@dataclasses.dataclass
class Run:
    """One generator's evaluation: the models, the faces, and everything scored so far."""
    p: config.Params
    G: torch.nn.Module
    images: torch.Tensor                  # [N, 3, R, R] test faces in [-1, 1]
    lpips: torch.nn.Module                # the loss optimization uses (LPIPS-rand offline)
    metric: torch.nn.Module               # the perceptual metric every method is scored with (ST-LPIPS offline)
    scorer: Scorer
    n_opt: int
    std: torch.Tensor | None = None       # [w_dim] latent spread for optimization (invert.latent_std)
    rows: list = dataclasses.field(default_factory=list)       # per face and method (and seed)
    methods: dict = dataclasses.field(default_factory=dict)    # method -> summary on all scored faces
    subset: dict = dataclasses.field(default_factory=dict)     # method -> summary on the n_opt faces
    curve: list = dataclasses.field(default_factory=list)      # speed / quality along optimization
    samples: dict = dataclasses.field(default_factory=dict)

    def record(self, method: str, recon: torch.Tensor, ms: float, index: slice, seed=None) -> dict:
        """Score ``recon`` against the targets at ``index``; keep its rows; return its summary."""
        scored = self.scorer(recon, index)
        self.rows.extend({"method": method, "seed": "" if seed is None else seed, **r} for r in scored)
        if seed is None or seed == self.p.train.seeds[0]:
            self.samples[method] = recon[:N_SAMPLES].cpu()
        return {**summarize(scored), "ms_per_image": ms}

    def on_subset(self, method: str, seed=None) -> dict:
        """The summary of ``method``'s rows restricted to the optimization faces."""
        return summarize([r for r in self.rows if r["method"] == method and r["index"] < self.n_opt
                          and (seed is None or r["seed"] == seed)])

    def per_face(self, method: str, key: str) -> np.ndarray:
        """``[n_opt]`` per-face values of ``method`` on the optimization faces (mean over seeds)."""
        return face_values(self.rows, method, key, self.n_opt)


def floors(r: Run, train_images: torch.Tensor) -> None:
    """The two no-information floors, on every test face."""
    n = r.images.shape[0]
    _, recon, ms = timed(r.G, lambda x: invert.mean_ws(r.G, x.shape[0]), r.images, r.p.evaluate.batch)
    r.methods["mean_latent"] = r.record("mean_latent", recon, ms, slice(0, n))
    t = time.perf_counter()
    mean_image = train_images.mean(0, keepdim=True).to(r.images.device)
    ms = 1000.0 * (time.perf_counter() - t) / n
    r.methods["mean_image"] = r.record("mean_image", mean_image.expand_as(r.images).contiguous(), ms, slice(0, n))
    for f in FLOORS:
        r.subset[f] = {**r.on_subset(f), "ms_per_image": r.methods[f]["ms_per_image"]}


def bridges(r: Run, encoder, bridge_models: dict) -> dict:
    """The headline bridges on every test face; returns each seed's ws."""
    per_seed, per_seed_subset, ws_of = [], [], {}
    for s, bridge in bridge_models.items():
        with torch.no_grad():
            ws, recon, ms = timed(r.G, lambda x: invert.bridge_ws(r.G, encoder, bridge, x), r.images,
                                  r.p.evaluate.batch)
        per_seed.append({**r.record("bridge", recon, ms, slice(0, r.images.shape[0]), seed=s), "seed": s})
        per_seed_subset.append({**r.on_subset("bridge", seed=s), "ms_per_image": ms})
        ws_of[s] = ws
    r.methods["bridge"] = {**across_seeds(per_seed), "seeds": per_seed}
    r.subset["bridge"] = across_seeds(per_seed_subset)
    return ws_of


def _optimize(r: Run, name: str, ws_init, space: str, cfg, record_at, seed=None, ms_offset: float = 0.0):
    """One optimization run on the optimization faces: scored, its speed/quality curve recorded."""
    sub = slice(0, r.n_opt)
    t = time.perf_counter()
    ws, recorded = invert.optimize(r.G, r.images[sub], ws_init, space, cfg, r.lpips, r.std, tuple(record_at))
    ms = 1000.0 * (time.perf_counter() - t) / r.n_opt
    summary = r.record(name, synthesize(r.G, ws, r.p.evaluate.batch), ms_offset + ms, sub, seed=seed)
    if seed is None or seed == r.p.train.seeds[0]:
        curve_scorer = Scorer(r.images[sub], r.metric, r.p.evaluate.batch, attributes=False)
        for step, w in sorted(recorded.items()):
            s = summarize(curve_scorer(synthesize(r.G, w, r.p.evaluate.batch)))
            r.curve.append({"method": name, "step": step, "ms_per_image": ms_offset + ms * step / cfg.steps,
                            "psnr": s["psnr"], "lpips": s["lpips"]})
    return summary


def optimization(r: Run, bridge_ws: dict) -> None:
    """The ceiling (``opt_w``, ``opt_wplus``), bridge + refine per seed, and its equal-step match."""
    ev = r.p.evaluate
    r.std = invert.latent_std(r.G)
    spaces = ["w", "w+"] if invert.has_w_plus(r.G) else ["w"]
    record_at = sorted({0, *[k for k in ev.record_at if k < ev.opt.steps], ev.opt.steps})
    for space in spaces:
        name = "opt_w" if space == "w" else "opt_wplus"
        r.methods[name] = r.subset[name] = _optimize(r, name, invert.mean_ws(r.G, r.n_opt), space, ev.opt, record_at)
    short = dataclasses.replace(ev.opt, steps=ev.refine_steps)
    short_at = sorted({0, *[k for k in ev.record_at if k < ev.refine_steps], ev.refine_steps})
    r.methods["opt_short"] = r.subset["opt_short"] = _optimize(
        r, "opt_short", invert.mean_ws(r.G, r.n_opt), spaces[-1], short, short_at)
    per_seed = []
    for s, ws in bridge_ws.items():
        bridge_ms = next(x["ms_per_image"] for x in r.methods["bridge"]["seeds"] if x["seed"] == s)
        per_seed.append({**_optimize(r, "bridge_refine", ws[:r.n_opt], spaces[-1], short, short_at, seed=s,
                                     ms_offset=bridge_ms), "seed": s})
    r.methods["bridge_refine"] = r.subset["bridge_refine"] = {**across_seeds(per_seed), "seeds": per_seed}


def paired(r: Run, a: str, b: str, key: str, index: int) -> dict:
    """Per-face difference ``a - b`` on the optimization faces with its 95% bootstrap interval."""
    ev = r.p.evaluate
    return stats.paired_difference(r.per_face(a, key), r.per_face(b, key), ev.bootstrap,
                                   np.random.default_rng([ev.seed, index]))


CHANCE = {"gender_agree": "majority_gender", "age_error": "random_pairs", "identity": "random_pairs"}


def against_chance(r: Run, instrument: dict) -> dict:
    """Per attribute: each method's per-face values minus the chance level (always the commonest
    gender; random pairs of different faces), with its 95% interval, on the optimization faces."""
    ev, out = r.p.evaluate, {}
    for i, (key, source) in enumerate(CHANCE.items()):
        level = instrument[source] if source == "majority_gender" else instrument[source].get(key)
        if level is None:
            continue
        out[key] = {"chance": level}
        for j, m in enumerate(r.subset):
            values = r.per_face(m, key)
            out[key][m] = stats.paired_difference(values, np.full_like(values, level), ev.bootstrap,
                                                  np.random.default_rng([ev.seed, 100 + 10 * i + j]))
    return out


def comparison(r: Run) -> dict:
    """Floors, gap closed, the equal-step comparison and the bridge against the strongest floor."""
    ev = r.p.evaluate
    best = "opt_wplus" if "opt_wplus" in r.subset else "opt_w"
    floor = max(FLOORS, key=lambda f: r.subset[f]["psnr"])
    rng = np.random.default_rng([ev.seed, 99])
    out = {"ceiling": best, "floor": floor, "floor_psnr": {f: r.subset[f]["psnr"] for f in FLOORS}}
    for m in ("bridge", "bridge_refine"):
        for f in FLOORS:
            out[f"gap_closed_{m}_vs_{f}"] = stats.gap_closed(r.per_face(m, "psnr"), r.per_face(f, "psnr"),
                                                             r.per_face(best, "psnr"), ev.bootstrap, rng)
    out["speed_ratio"] = r.subset[best]["ms_per_image"] / r.subset["bridge"]["ms_per_image"]
    out["refine_vs_opt_short"] = {k: paired(r, "bridge_refine", "opt_short", k, i)
                                  for i, k in enumerate(PAIRED_KEYS) if k in r.subset["opt_short"]}
    out["bridge_vs_floor"] = {k: paired(r, "bridge", floor, k, 10 + i)
                              for i, k in enumerate(PAIRED_KEYS) if k in r.subset[floor]}
    return out


def main(p: config.Params, generator: str) -> None:
    ev = p.evaluate
    seed_everything(ev.seed)
    G = registry.load_generator(paths.generator_file(generator)).to(p.device)
    encoder = registry.load_encoder(paths.ENCODER).to(p.device)
    bridge_models = {s: registry.load_bridge(paths.bridge_file(generator, s)).to(p.device) for s in p.train.seeds}
    images = from_uint8(load_split(generator, "test")["images"]).to(p.device)
    lpips, metric = profile_lpips(p), profile_metric(p)
    r = Run(p, G, images, lpips, metric, Scorer(images, metric, ev.batch, attributes=ev.attributes),
            min(ev.n_opt_for(generator), images.shape[0]), samples={"input": images[:N_SAMPLES].cpu()})
    floors(r, from_uint8(load_split(generator, "train")["images"]))
    optimization(r, bridges(r, encoder, bridge_models))
    instrument = instrument_noise(r.scorer, images, ev.seed) if ev.attributes else None
    entry = registry.generator_entry(generator)
    write_json(out_dir(generator) / "metrics.json", finite({
        "generator": generator, "generator_source": entry.source, "stand_in": entry.stand_in,
        "encoder": registry.encoder_entry(p.active.encoder).label, "lpips_variant": metric.label, "lpips_loss": lpips.label,
        "device": device_name(p.device), "n_test": int(images.shape[0]), "n_opt": r.n_opt,
        "w_label": "W" if getattr(G, "has_style_space", True) else "z",   # the one-vector latent's name
        "methods": r.methods, "subset": r.subset, "comparison": comparison(r),
        "instrument": instrument, "against_chance": against_chance(r, instrument) if instrument else None,
    }))
    write_csv(out_dir(generator) / "per_image.csv", [finite(row) for row in r.rows])
    write_csv(out_dir(generator) / "speed_quality.csv", r.curve)
    save_torch(r.samples, samples_file(generator))


if __name__ == "__main__":
    run(main)
