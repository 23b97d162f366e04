"""The encoder study's pieces on tiny inputs: the stopping rule, the best-model monitor, fresh faces,
nearest-neighbour retrieval, the ridge probe and the span of an axis."""

import numpy as np
import pytest
import torch

from clipbridge import config
from clipbridge.bridge import study
from clipbridge.errors import BadValueError
from clipbridge.models.dcgan import DCGANGenerator
from clipbridge.stats import span, span_difference


@pytest.fixture(scope="module")
def tiny_dcgan():
    torch.manual_seed(0)
    return DCGANGenerator(ngf=8).eval().requires_grad_(False)


def curve(values, every=100):
    return [(every * (i + 1), v) for i, v in enumerate(values)]


def test_plateau_waits_for_min_steps_and_stops_on_a_flat_or_rising_curve():
    falling = curve([1.0 / (i + 1) for i in range(20)])                # still improving fast
    assert not study.plateaued(falling, 0.2, 0.01, 1000)
    flat = curve([1.0, 0.5] + [0.4] * 18)
    assert not study.plateaued(flat[:5], 0.2, 0.01, 1000)               # before min_steps
    assert study.plateaued(flat, 0.2, 0.01, 1000)
    rising = curve([1.0, 0.5, 0.4, 0.41, 0.42, 0.43, 0.44, 0.45, 0.46, 0.47])
    assert study.plateaued(rising, 0.2, 0.01, 1000)                      # overfitting: best is behind
    slow = curve([1.0 - 0.02 * i for i in range(10)])                   # 2% per 100 steps over the window
    assert not study.plateaued(slow, 0.2, 0.01, 1000)


def test_monitor_keeps_the_best_model_scores_at_steps_and_stops():
    cfg = config.Encoders(score_at=[200], min_steps=300, eval_every=100, plateau_window=0.5, plateau_tol=0.01)
    scored = []
    m = study.Monitor(cfg, lambda step, model: scored.append((step, float(model.weight.detach().sum()))))
    lin = torch.nn.Linear(2, 1, bias=False)
    vals = [0.5, 0.3, 0.2, 0.25, 0.26, 0.27]
    stops = []
    for i, v in enumerate(vals):
        with torch.no_grad():
            lin.weight.fill_(i)
        stops.append(m(100 * (i + 1), lin, v))
    assert scored == [(200, 2.0)]
    assert m.best_step == 300 and m.best_val == 0.2 and float(m.best_state["weight"].sum()) == 4.0
    assert stops.index(True) == 5   # step 600: (300, 600] holds nothing below the 0.2 of step 300
    assert m.summary()["plateaued"]


def test_schedule_check_rejects_scores_between_logged_steps():
    with pytest.raises(BadValueError, match="score_at"):
        study.check_schedule(config.Encoders(score_at=[250], eval_every=100))
    study.check_schedule(config.Encoders(score_at=[300, 1000], eval_every=100))


def test_nearest_latents_returns_the_latent_of_the_most_similar_training_face():
    train = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    latents = torch.arange(3.0)[:, None, None] * torch.ones(3, 1, 4)
    query = torch.tensor([[0.1, 0.9], [5.0, 0.2], [-1.0, -0.1]])
    out = study.nearest_latents(train, query, latents)
    assert out[:, 0, 0].tolist() == [1.0, 0.0, 2.0]
    with pytest.raises(BadValueError, match="nearest neighbour"):
        study.nearest_latents(train, torch.zeros(2, 3), latents)


def test_probe_recovers_a_linear_latent_and_not_noise():
    g = torch.Generator().manual_seed(0)
    emb = {s: torch.randn(n, 8, generator=g) for s, n in (("train", 400), ("val", 100), ("test", 100))}
    mix = torch.randn(8, 5, generator=g)
    lin = study.probe_r2(emb, {s: e @ mix for s, e in emb.items()}, 1.0)
    assert lin["r2"] > 0.99 and lin["alpha"] in [a * 1.0 for a in study.PROBE_ALPHA_GRID]
    noise = study.probe_r2(emb, {s: torch.randn(len(e), 5, generator=g) for s, e in emb.items()}, 1.0)
    assert noise["r2"] < 0.05


def test_fresh_faces_are_new_every_call_and_reproducible(tiny_dcgan):
    G = tiny_dcgan
    a = study.FreshFaces(G, None, "z", seed=3, device="cpu")
    x1, img1, lat1 = a(4)
    x2, _, lat2 = a(4)
    assert x1.shape == (4, 3, G.img_resolution, G.img_resolution) and img1.dtype == torch.uint8
    assert lat1.shape == (4, 1, G.z_dim) and not torch.equal(lat1, lat2) and a.faces_seen == 8
    b = study.FreshFaces(G, lambda x: x.flatten(1)[:, :6], "z", seed=3, device="cpu")
    y1, _, _ = b(4)
    assert torch.equal(y1, x1.flatten(1)[:, :6])                        # same stream, encoded input


def test_span_reranks_rows_and_the_difference_of_spans_is_paired():
    rng = np.random.default_rng(0)
    base = rng.normal(20, 2, size=64)                                   # per-face difficulty, shared
    wide = {"a": base + 3.0, "b": base, "c": base + 1.0}
    narrow = {"x": base + 0.2, "y": base}
    w = np.random.default_rng(1).multinomial(64, np.full(64, 1 / 64), size=500).astype(float)
    s1, s2 = span(wide, w), span(narrow, w)
    assert (s1["best"], s1["worst"]) == ("a", "b") and s1["mean"] == pytest.approx(3.0)
    assert s1["lo"] == pytest.approx(3.0) and s2["mean"] == pytest.approx(0.2)
    d = span_difference(s1, s2)
    assert d["mean"] == pytest.approx(2.8) and d["excludes_zero"]


def test_a_recipe_with_an_lpips_term_needs_the_network(tiny_dcgan):
    import dataclasses

    recipe = dataclasses.replace(config.Train(), loss_lpips=1.0)
    with pytest.raises(BadValueError, match="loss_lpips"):
        study.train_run(tiny_dcgan, None, {}, {}, recipe, config.Encoders(), "cpu", 4, lambda s, m: None, "x")
