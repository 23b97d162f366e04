"""The report's four claims judged on the measured numbers: summaries with bootstrap CIs, one rule.

:func:`tabulate` puts the per-image rows of :func:`clipbridge.edits.study.measure` into arrays
with one set of cluster-bootstrap resamples of the faces (:class:`Table`); :func:`summarize`
reduces them to a mean and a 95% bootstrap CI per (group, magnitude) and measure; :func:`judge`
tests each of the report's claims (:data:`CLAIMS`) with one written rule (:data:`VERDICT_RULE`).

Every group is edited on the same faces with its own seeded offset draws, so groups are compared
*paired*: on each resample of the faces (a face's draws stay together) the claimed group's
statistic minus another group's, the 95% interval taken over those differences (not the overlap of
two marginal CIs). Each comparison is made under two normalizations, change per unit of RMS pixel
change (``per_rms``) and the raw change (``raw``); a claim is supported only where both agree.

Common face set: dlib loses the face in many strongly edited images, and in some groups more than
in others, so a face measure averaged over the images where each group kept the face would
compare groups on different, differently selected images. Every measure is therefore taken, at a
magnitude, on the (face, draw) slots where it is defined for EVERY group at that magnitude and at
the smallest magnitude (the ``per_rms`` reference): the same slots for every group and both
normalizations. The selection itself is reported, not corrected: ``face_loss_rate`` per group and
magnitude (share of edited images without a face whose unedited image has one), and ``raw_own``
(each group's face measures over the images where it kept the face, the old estimate).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from clipbridge.edits.measures import MEASURE, MEASURES
from clipbridge.edits.offsets import STREAM_BOOTSTRAP
from clipbridge.stats import cluster_weights, ratio_ci, ratio_difference_ci


class Claim(NamedTuple):
    key: str
    position: int       # the claimed group: index in the params order (-1 = last)
    text: str           # what the report says the group controls
    measures: tuple[str, ...]  # the parts tested


CLAIMS: tuple[Claim, ...] = (
    Claim("pose_hair", 0, "head pose and hair", ("pose", "hair")),
    Claim("features", 1, "facial features", ("shape",)),
    Claim("skin", 2, "skin tone (and wrinkles, read as apparent age)", ("skin", "age")),
    Claim("background", -1, "background colour", ("background",)),
)

NORMALIZATIONS = ("per_rms", "raw")

COMMON_SET = (
    "Every measure at a magnitude is taken on the (face, draw) slots where it is defined for every group at "
    "that magnitude and at the smallest one (for face measures: dlib finds the face in the unedited image and "
    "in every group's edited image), the same slots for every group and both normalizations; the selection is "
    "reported as face_loss_rate (and raw_own: each group over its own kept faces), not corrected.")

VERDICT_RULE = (
    "Each claim names a group (the first, second, third or last of the study's groups) and one or more "
    "measures. Each measure is compared between the claimed group and every other group on the common face "
    "set (" + COMMON_SET + ") under two normalizations: per_rms, the measure's increase from the smallest to "
    "the judged magnitude divided by the increase of the RMS pixel change over the same slots (from the "
    "unedited image when only one magnitude is measured), so a group that changes everything more does not "
    "win every claim and the measurement floor cancels; and raw, the measure's mean. The comparison is "
    "paired: faces are resampled (a face's draws together) and the claimed group's statistic minus the other "
    "group's is computed on the same resample; its 2.5 and 97.5 percentiles are the 95% interval. Under one "
    "normalization a part is supported when every difference's interval lies above 0, not supported when "
    "some difference's interval lies below 0, mixed otherwise; a claim is supported (not supported) when all "
    "its parts are, mixed otherwise, not tested when no part can be measured (fewer than four groups, or no "
    "face found). The claim's verdict is the per_rms and raw verdicts where they agree, mixed where they do "
    "not: supported only where both normalizations support it.")


class Table(NamedTuple):
    """The study's rows as arrays, with the bootstrap resamples every statistic shares.

    values: ``{key: [F, D, G, M] float64}`` for every :data:`MEASURES` key and ``face_found_base``,
    ``face_found_edit`` (NaN = no row); weights: ``[B, F]`` face resample counts
    (:func:`clipbridge.stats.cluster_weights`, bootstrap stream of the seed).
    """

    values: dict[str, np.ndarray]
    groups: list[str]
    magnitudes: list[float]
    weights: np.ndarray

    @property
    def ref(self) -> int:
        """Index of the smallest magnitude (the ``per_rms`` reference)."""
        return int(np.argmin(self.magnitudes))


def tabulate(rows: list[dict], groups: list[str], magnitudes: list[float], n_faces: int, n_draws: int,
             bootstrap: int, seed: int) -> Table:
    """Rows -> :class:`Table`; ``bootstrap`` face resamples drawn once from the bootstrap stream of ``seed``."""
    keys = [m.key for m in MEASURES] + ["face_found_base", "face_found_edit"]
    arr = {k: np.full((n_faces, n_draws, len(groups), len(magnitudes)), np.nan) for k in keys}
    gi = {g: i for i, g in enumerate(groups)}
    mi = {m: i for i, m in enumerate(magnitudes)}
    for r in rows:
        at = (r["face"], r["draw"], gi[r["group"]], mi[r["magnitude"]])
        for k in keys:
            arr[k][at] = float(r[k])
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(STREAM_BOOTSTRAP,)))
    return Table(arr, list(groups), list(magnitudes), cluster_weights(n_faces, bootstrap, rng))


def common_slots(t: Table, key: str, mi: int) -> np.ndarray:
    """``[F, D]`` bool: the (face, draw) slots where ``key`` and the RMS change are defined for every
    group at magnitude index ``mi`` and at the smallest magnitude (the common face set)."""
    ok = np.ones(t.values[key].shape[:2], dtype=bool)
    for k in (key, "rms"):
        for m in {mi, t.ref}:
            ok &= np.isfinite(t.values[k][:, :, :, m]).all(-1)
    return ok


def per_face(t: Table, key: str, gi: int, mi: int, norm: str, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-face sums ``(num [F], den [F])`` of group ``gi``'s statistic over ``slots``: ``raw``: the
    measure and the slot count; ``per_rms``: the measure's and the RMS change's increase from the
    smallest magnitude (from 0 at the smallest itself). The statistic is ``sum(num) / sum(den)``."""
    v = t.values[key][:, :, gi, mi]
    if norm == "raw":
        return np.where(slots, v, 0.0).sum(1), slots.sum(1).astype(np.float64)
    r = t.values["rms"][:, :, gi, mi]
    if mi != t.ref:
        v, r = v - t.values[key][:, :, gi, t.ref], r - t.values["rms"][:, :, gi, t.ref]
    return np.where(slots, v, 0.0).sum(1), np.where(slots, r, 0.0).sum(1)


def _rate(hit: np.ndarray, of: np.ndarray, weights: np.ndarray) -> dict:
    """Share of ``of`` slots that are ``hit`` (``[F, D]`` bool each) with its face-bootstrap CI."""
    return {**ratio_ci((hit & of).sum(1).astype(np.float64), of.sum(1).astype(np.float64), weights),
            "n": int((hit & of).sum()), "of": int(of.sum())}


def summarize(t: Table) -> dict:
    """Per (group, magnitude): every measure's mean and 95% CI on the common face set, raw and per RMS change.

    Means are ratios of sums over faces; CIs resample faces (the independent unit; a face's draws
    stay together) with ``t.weights``, the same resamples for every cell. ``raw``: the mean over the
    common slots (:func:`common_slots`); ``per_rms`` (effect measures only): ``sum(m - m_ref) /
    sum(rms - rms_ref)`` over the same slots, ``m_ref`` the smallest magnitude (the unedited image,
    every measure 0, at the smallest itself): the difference cancels the measurement floor (dlib
    landmarks, age and pose jitter by a roughly constant amount under any small change). ``raw_own``
    (face measures): each group over its own valid rows, the estimate before the common face set.

    Returns ``{group: {str(magnitude): {"raw": {key: {mean, lo, hi, n, faces}}, "per_rms": {key:
    {mean, lo, hi, n, faces, from}}, "raw_own": {key: {mean, lo, hi, n}}, "face_found_rate": {...},
    "face_loss_rate": {mean, lo, hi, n, of}, "n_excluded": int, "n": int}}}``.
    """
    w, out = t.weights, {}
    for gi, g in enumerate(t.groups):
        out[g] = {}
        for mi, mag in enumerate(t.magnitudes):
            cell: dict = {"raw": {}, "per_rms": {}, "raw_own": {}}
            for m in MEASURES:
                slots = common_slots(t, m.key, mi)
                n = {"n": int(slots.sum()), "faces": int(slots.any(1).sum())}
                cell["raw"][m.key] = {**ratio_ci(*per_face(t, m.key, gi, mi, "raw", slots), w), **n}
                if m.effect:
                    cell["per_rms"][m.key] = {**ratio_ci(*per_face(t, m.key, gi, mi, "per_rms", slots), w), **n,
                                              "from": t.magnitudes[t.ref] if mi != t.ref else 0.0}
                if m.face:
                    own = np.isfinite(t.values[m.key][:, :, gi, mi])
                    cell["raw_own"][m.key] = {**ratio_ci(*per_face(t, m.key, gi, mi, "raw", own), w),
                                              "n": int(own.sum())}
            found, base = t.values["face_found_edit"][:, :, gi, mi], t.values["face_found_base"][:, :, gi, mi]
            present = np.isfinite(found)
            cell["face_found_rate"] = ratio_ci(np.where(present, found, 0).sum(1), present.sum(1).astype(np.float64), w)
            cell["face_loss_rate"] = _rate(found == 0, base == 1, w)
            cell["n"] = int(present.sum())
            cell["n_excluded"] = int(present.sum() - ((found == 1) & (base == 1)).sum())
            out[g][mag_key(mag)] = cell
    return out


def mag_key(m: float) -> str:
    return f"{m:g}"


def part_verdict(differences: dict[str, dict]) -> str:
    """Verdict of one measure under one normalization from the paired differences claimed - other
    (``{other group: {mean, lo, hi}}``); rule in :data:`VERDICT_RULE`."""
    finite = [d for d in differences.values() if math.isfinite(d["mean"])]
    if not finite:
        return "not tested"
    if all(d["lo"] > 0 for d in finite):
        return "supported"
    return "not supported" if any(d["hi"] < 0 for d in finite) else "mixed"


def combine(verdicts: list[str]) -> str:
    """All parts supported -> supported; all not supported -> not supported; else mixed
    (untestable parts ignored; none testable -> not tested)."""
    tested = [v for v in verdicts if v != "not tested"]
    if not tested:
        return "not tested"
    return tested[0] if all(v == tested[0] for v in tested) else "mixed"


def agree(per_rms: str, raw: str) -> str:
    """The two normalizations' verdicts -> the claim's: the common verdict, mixed where they differ."""
    return per_rms if per_rms == raw else "mixed"


def compare_groups(t: Table, key: str, mi: int, claimed: int, norm: str, slots: np.ndarray) -> dict:
    """One part under one normalization: every group's statistic (``values``: {group: {mean, lo, hi}}),
    the ``ranking`` (best first), the paired differences claimed - other (``vs``: {group: {mean, lo,
    hi, excludes_zero}}, same resamples), the ``rival`` (the other group with the highest mean) and
    the part's ``verdict``."""
    sums = [per_face(t, key, gi, mi, norm, slots) for gi in range(len(t.groups))]
    values = {g: ratio_ci(*sums[gi], t.weights) for gi, g in enumerate(t.groups)}
    ranking = sorted((g for g in t.groups if math.isfinite(values[g]["mean"])), key=lambda g: values[g]["mean"],
                     reverse=True)
    vs = {g: ratio_difference_ci(*sums[claimed], *sums[gi], t.weights)
          for gi, g in enumerate(t.groups) if gi != claimed}
    rival = next((g for g in ranking if g != t.groups[claimed]), None)
    return {"verdict": part_verdict(vs), "ranking": ranking, "values": values, "vs": vs, "rival": rival}


def judge(t: Table, magnitude: float) -> dict:
    """Each of :data:`CLAIMS` judged at ``magnitude`` (one of ``t.magnitudes``) by :data:`VERDICT_RULE`.

    Returns ``{claim: {verdict, per_rms, raw, agree, group, text, parts: {measure: {verdict,
    sample: {slots, faces, face_loss_rate}, per_rms: <compare_groups>, raw: <compare_groups>}}}}``:
    ``verdict`` the combined verdict, ``per_rms`` / ``raw`` each normalization's, ``sample`` the
    common face set (slots = (face, draw) pairs) and the claimed group's face-loss rate. Claims whose
    group position does not exist (fewer than four groups) are 'not tested'.
    """
    mi = t.magnitudes.index(magnitude)
    out = {}
    for claim in CLAIMS:
        if len(t.groups) < 4:
            out[claim.key] = {"verdict": "not tested", "per_rms": "not tested", "raw": "not tested", "agree": True,
                              "group": None, "text": claim.text, "parts": {}}
            continue
        c = claim.position % len(t.groups)
        found, base = t.values["face_found_edit"][:, :, c, mi], t.values["face_found_base"][:, :, c, mi]
        loss = _rate(found == 0, base == 1, t.weights)
        parts = {}
        for key in claim.measures:
            slots = common_slots(t, key, mi)
            part = {n: compare_groups(t, key, mi, c, n, slots) for n in NORMALIZATIONS}
            sample = {"slots": int(slots.sum()), "faces": int(slots.any(1).sum()),
                      "face_loss_rate": loss if MEASURE[key].face else None}
            parts[key] = {"verdict": agree(part["per_rms"]["verdict"], part["raw"]["verdict"]), "sample": sample,
                          **part}
        by = {n: combine([p[n]["verdict"] for p in parts.values()]) for n in NORMALIZATIONS}
        out[claim.key] = {"verdict": agree(by["per_rms"], by["raw"]), **by, "agree": by["per_rms"] == by["raw"],
                          "group": t.groups[c], "text": claim.text, "parts": parts}
    return out
