"""Inversion by optimization (src/clipbridge/bridge/invert.py) and the evaluation helpers around it."""

import pytest
import torch

from clipbridge import config
from clipbridge.bridge import invert
from clipbridge.bridge.evaluate import across_seeds, summarize
from clipbridge.models.stylegan2 import Generator


@pytest.fixture(scope="module")
def G():
    torch.manual_seed(0)
    return Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=16, img_channels=3,
                     mapping_kwargs={"num_layers": 2}, synthesis_kwargs={"channel_base": 256, "channel_max": 16}
                     ).eval().requires_grad_(False)


def _target(G, seed=1, n=3):
    z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return G.synthesis(G.mapping(z, None), noise_mode="const")


@pytest.mark.parametrize("space", ["w", "w+"])
def test_optimization_reduces_the_error_and_records_steps(G, space):
    target = _target(G)
    start = invert.mean_ws(G, 3)
    cfg = config.OptimConfig(steps=30, lr=0.1, lpips_weight=0.0)
    ws, rec = invert.optimize(G, target, start, space, cfg, record_at=(0, 10, 30))
    assert ws.shape == start.shape and sorted(rec) == [0, 10, 30]
    assert torch.equal(rec[0], start)

    def err(w):
        return (G.synthesis(w, noise_mode="const") - target).pow(2).mean().item()

    assert err(ws) < 0.7 * err(start)
    if space == "w":  # one vector broadcast to every style input
        assert torch.equal(ws, ws[:, :1].expand_as(ws))


def test_images_are_optimized_independently_of_their_batch(G):
    target = _target(G, n=4)
    cfg = config.OptimConfig(steps=5, lr=0.1, lpips_weight=0.0)
    both, _ = invert.optimize(G, target, invert.mean_ws(G, 4), "w+", cfg)
    alone, _ = invert.optimize(G, target[:2], invert.mean_ws(G, 2), "w+", cfg)
    assert torch.allclose(both[:2], alone, atol=1e-5)


def test_w_plus_is_refused_without_a_style_space():
    from clipbridge.models.dcgan import DCGANGenerator

    with pytest.raises(ValueError, match="no W\\+ space"):
        invert.check_space(DCGANGenerator(ngf=8), "w+")
    with pytest.raises(ValueError, match="available"):
        invert.check_space(DCGANGenerator(ngf=8), "s")


def test_summaries_skip_missing_attributes_and_spread_over_seeds():
    rows = [{"mse": 1.0, "psnr": 6.0, "ssim": 0.1, "lpips": 0.5, "age_error": float("nan")},
            {"mse": 3.0, "psnr": 2.0, "ssim": 0.3, "lpips": 0.7, "age_error": 4.0}]
    s = summarize(rows)
    assert s["mse"] == pytest.approx(2.0) and s["age_error"] == 4.0 and s["age_error_n"] == 1
    seeds = across_seeds([{"psnr": 10.0}, {"psnr": 12.0}])
    assert seeds["psnr"] == pytest.approx(11.0) and seeds["psnr_std"] == pytest.approx(2 ** 0.5)
