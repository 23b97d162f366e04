"""Bootstrap intervals: resampling weights, ratio-of-sums and paired-difference confidence intervals.

Plumbing (numpy only) for any study that resamples independent units (faces, seeds) to put a 95%
interval on a mean. A *cluster bootstrap* resamples the independent units with replacement and keeps
each unit's dependent observations together; drawn once as a weight matrix ``[B, F]`` (how often
resample ``b`` takes unit ``f``), the same resamples can serve every statistic of a study.
"""

from __future__ import annotations

import math

import numpy as np

CI_PERCENT = 95                             # every interval here is a central 95% percentile interval
_TAILS = [(100 - CI_PERCENT) / 2, 100 - (100 - CI_PERCENT) / 2]


def cluster_weights(n: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """``[resamples, n]`` float64 resample counts: each row a multinomial draw of ``n`` of the ``n``
    units with equal probability (one bootstrap resample)."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float64)


def ratio_ci(num: np.ndarray, den: np.ndarray, weights: np.ndarray) -> dict:
    """Cluster-bootstrap ratio of sums: num, den ``[F]`` per-unit sums, weights ``[B, F]`` resample
    counts (:func:`cluster_weights`) -> ``{mean, lo, hi}``: ``sum(num) / sum(den)`` and the 2.5 /
    97.5 percentiles of the resampled ratios (NaN when den sums to 0; resamples whose den sums to 0
    are skipped)."""
    total = den.sum()
    if not total > 0:
        return {"mean": math.nan, "lo": math.nan, "hi": math.nan}
    lo, hi = _percentile_ci(_boot_ratio(num, den, weights))
    return {"mean": float(num.sum() / total), "lo": lo, "hi": hi}


def _boot_ratio(num: np.ndarray, den: np.ndarray, weights: np.ndarray) -> np.ndarray:
    boot_den = weights @ den
    return np.where(boot_den > 0, (weights @ num) / np.where(boot_den > 0, boot_den, 1.0), np.nan)


def ratio_difference_ci(num_a: np.ndarray, den_a: np.ndarray, num_b: np.ndarray, den_b: np.ndarray,
                        weights: np.ndarray) -> dict:
    """Paired cluster-bootstrap difference of two ratios of sums over the SAME units:
    ``sum(num_a) / sum(den_a) - sum(num_b) / sum(den_b)`` (each ``[F]`` per-unit sums, unit ``f`` the
    same in a and b) with the 2.5 / 97.5 percentiles of the difference computed on each resample of
    ``weights [B, F]`` (:func:`cluster_weights`): both ratios of one resample take the same units, so
    what a and b share cancels. -> ``{mean, lo, hi, excludes_zero}`` (NaN when a den sums to 0;
    resamples where either den sums to 0 are skipped)."""
    if not (den_a.sum() > 0 and den_b.sum() > 0):
        return {"mean": math.nan, "lo": math.nan, "hi": math.nan, "excludes_zero": False}
    lo, hi = _percentile_ci(_boot_ratio(num_a, den_a, weights) - _boot_ratio(num_b, den_b, weights))
    mean = num_a.sum() / den_a.sum() - num_b.sum() / den_b.sum()
    return {"mean": float(mean), "lo": lo, "hi": hi, "excludes_zero": bool(lo > 0 or hi < 0)}


def _percentile_ci(boot: np.ndarray) -> tuple[float, float]:
    boot = boot[np.isfinite(boot)]
    if boot.size == 0:
        return math.nan, math.nan
    lo, hi = np.percentile(boot, _TAILS)
    return float(lo), float(hi)


def paired_difference(a, b, resamples: int, rng: np.random.Generator) -> dict:
    """Mean of the per-unit differences ``a - b`` (``[F]`` each, the same units in the same order)
    over the units where both are defined, with the 2.5 / 97.5 percentiles of ``resamples``
    bootstrap resamples of those units -> ``{mean, lo, hi, n, excludes_zero}``."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape and a.ndim == 1, f"paired values must be equal [F], got {a.shape} vs {b.shape}"
    d = (a - b)[np.isfinite(a) & np.isfinite(b)]
    if d.size == 0:
        return {"mean": math.nan, "lo": math.nan, "hi": math.nan, "n": 0, "excludes_zero": False}
    w = cluster_weights(d.size, resamples, rng)
    lo, hi = _percentile_ci((w @ d) / d.size)
    return {"mean": float(d.mean()), "lo": lo, "hi": hi, "n": int(d.size), "excludes_zero": bool(lo > 0 or hi < 0)}


def gap_closed(method, floor, ceiling, resamples: int, rng: np.random.Generator) -> dict:
    """Share of the gap between a floor and a ceiling that a method closes, from per-unit scores
    (``[F]`` each, the same units): ``(mean(method) - mean(floor)) / (mean(ceiling) - mean(floor))``,
    with a bootstrap interval over the units -> ``{mean, lo, hi, n}`` (NaN where the gap is not
    positive)."""
    m, f, c = (np.asarray(x, dtype=np.float64) for x in (method, floor, ceiling))
    ok = np.isfinite(m) & np.isfinite(f) & np.isfinite(c)
    m, f, c = m[ok], f[ok], c[ok]
    if m.size == 0:
        return {"mean": math.nan, "lo": math.nan, "hi": math.nan, "n": 0}
    w = cluster_weights(m.size, resamples, rng)

    def ratio(sm, sf, sc):
        gap = sc - sf
        return np.where(gap > 0, (sm - sf) / np.where(gap > 0, gap, 1.0), np.nan)

    lo, hi = _percentile_ci(ratio(w @ m, w @ f, w @ c))
    return {"mean": float(ratio(m.sum(), f.sum(), c.sum())), "lo": lo, "hi": hi, "n": int(m.size)}


def span(faces: dict[str, np.ndarray], weights: np.ndarray) -> dict:
    """How far one axis of a study moves a score: its best row's mean minus its worst row's over the
    same units (``{row: [F]}``, e.g. per-face PSNR), with a bootstrap interval over the units
    (``weights [B, F]``, :func:`cluster_weights`) that re-ranks the rows in every resample.
    ``boot`` holds the resampled spans (for :func:`span_difference`)."""
    names = list(faces)
    m = np.stack([faces[k] for k in names])                    # [R, F]
    means = m.mean(1)
    boot = (weights @ m.T) / m.shape[1]                        # [B, R]
    boot = boot.max(1) - boot.min(1)
    lo, hi = _percentile_ci(boot)
    return {"mean": float(means.max() - means.min()), "lo": lo, "hi": hi,
            "best": names[int(means.argmax())], "worst": names[int(means.argmin())], "n_faces": int(m.shape[1]),
            "rows": {k: float(v) for k, v in zip(names, means)}, "boot": boot}


def span_difference(a: dict, b: dict) -> dict:
    """``a`` minus ``b`` (two :func:`span` results drawn with the same weights), with its interval."""
    lo, hi = _percentile_ci(a["boot"] - b["boot"])
    return {"mean": a["mean"] - b["mean"], "lo": lo, "hi": hi, "n": min(a["n_faces"], b["n_faces"]),
            "excludes_zero": bool(lo > 0 or hi < 0)}
