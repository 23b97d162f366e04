"""Paired statistics (clipbridge.stats) and the evaluation's per-face helpers, on tiny inputs."""

import math

import numpy as np
import pytest
import torch

from clipbridge import stats
from clipbridge.bridge.evaluate import face_values, partners, shift_one_pixel


def test_paired_difference_finds_a_consistent_shift_and_not_noise():
    rng = np.random.default_rng(0)
    b = rng.normal(20.0, 3.0, size=64)                 # faces differ a lot from each other ...
    a = b + 0.5 + rng.normal(0.0, 0.1, size=64)        # ... but a beats b on every face by ~0.5
    d = stats.paired_difference(a, b, 500, np.random.default_rng(1))
    assert d["mean"] == pytest.approx(0.5, abs=0.05) and d["lo"] > 0.4 and d["hi"] < 0.6 and d["excludes_zero"]
    noise = stats.paired_difference(b + rng.normal(0.0, 1.0, size=64), b, 500, np.random.default_rng(1))
    assert noise["lo"] < 0 < noise["hi"] and not noise["excludes_zero"]


def test_paired_difference_uses_only_faces_defined_in_both():
    a = np.array([1.0, np.nan, 3.0, 5.0])
    b = np.array([0.0, 1.0, np.nan, 4.0])
    d = stats.paired_difference(a, b, 100, np.random.default_rng(0))
    assert d["n"] == 2 and d["mean"] == pytest.approx(1.0) and d["lo"] == d["hi"] == pytest.approx(1.0)
    empty = stats.paired_difference([np.nan], [1.0], 100, np.random.default_rng(0))
    assert empty["n"] == 0 and math.isnan(empty["mean"]) and not empty["excludes_zero"]


def test_gap_closed_is_a_ratio_of_means_with_an_interval():
    floor, ceiling = np.full(10, 10.0), np.full(10, 20.0)
    method = np.array([12.0, 18.0] * 5)                 # mean 15: half the gap
    g = stats.gap_closed(method, floor, ceiling, 300, np.random.default_rng(0))
    assert g["mean"] == pytest.approx(0.5) and 0.2 < g["lo"] < 0.5 < g["hi"] < 0.8 and g["n"] == 10
    assert math.isnan(stats.gap_closed(method, ceiling, ceiling, 10, np.random.default_rng(0))["mean"])


def test_face_values_average_seeds_per_face_and_mark_missing():
    rows = [{"method": "bridge", "index": 0, "psnr": 10.0}, {"method": "bridge", "index": 0, "psnr": 12.0},
            {"method": "bridge", "index": 1, "psnr": float("nan")}, {"method": "opt", "index": 1, "psnr": 30.0},
            {"method": "bridge", "index": 5, "psnr": 99.0}]          # beyond n: not counted
    v = face_values(rows, "bridge", "psnr", 3)
    assert v[0] == 11.0 and np.isnan(v[1]) and np.isnan(v[2])


def test_instrument_perturbations():
    x = torch.arange(2 * 3 * 2 * 4, dtype=torch.float32).reshape(2, 3, 2, 4)
    s = shift_one_pixel(x)
    assert torch.equal(s[..., 1:], x[..., :-1]) and torch.equal(s[..., 0], x[..., 0])
    p = partners(7, seed=3)
    assert sorted(p.tolist()) == list(range(7)) and all(p[i] != i for i in range(7))
    assert torch.equal(p, partners(7, seed=3))
