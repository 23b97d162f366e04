import math

import torch

from clipbridge import metrics
from clipbridge.models.lpips import LPIPS


def _pair(noise=0.1, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(3, 3, 32, 32, generator=g) * 2 - 1
    y = (x + noise * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    return x, y


def test_psnr_matches_definition():
    x, y = _pair()
    m = metrics.mse(x, y)
    assert torch.allclose(metrics.psnr(x, y), 10 * torch.log10(4 / m))
    # a constant offset of 0.2 on [-1, 1] is MSE 0.04, PSNR 10*log10(100) = 20 dB
    z = torch.zeros(1, 3, 8, 8)
    assert math.isclose(float(metrics.psnr(z, z + 0.2)), 20.0, rel_tol=1e-5)


def test_ssim_identity_and_monotone():
    x, y1 = _pair(0.05)
    _, y2 = _pair(0.3)
    assert torch.allclose(metrics.ssim(x, x), torch.ones(3), atol=1e-5)
    assert (metrics.ssim(x, y1) > metrics.ssim(x, y2)).all()


def test_lpips_rand_deterministic_and_zero_on_identity():
    x, y = _pair()
    a = LPIPS(random_trunk=True, seed=0)
    b = LPIPS(random_trunk=True, seed=0)
    assert a.label == "LPIPS-rand"
    assert torch.equal(a(x, y), b(x, y))
    assert torch.allclose(a(x, x), torch.zeros(3), atol=1e-6)
    assert (a(x, y) > 0).all()
    _, far = _pair(0.5)
    assert (a(x, far) > a(x, y)).all()


def test_mean_std():
    assert metrics.mean_std([1.0, 3.0]) == (2.0, math.sqrt(2.0))
    assert metrics.mean_std([5.0]) == (5.0, 0.0)
