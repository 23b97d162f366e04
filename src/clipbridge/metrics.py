"""Image-reconstruction metrics: pure functions on image batches in [-1, 1].

Protocol (DESIGN.md): MSE on the [-1, 1] range (the inversion papers' "L2"),
PSNR = 10 log10(4 / MSE) (peak-to-peak range 2), SSIM on [0, 1] with an 11x11 Gaussian window
(sigma 1.5). The perceptual distances (LPIPS and its variants) are networks:
:mod:`clipbridge.models.lpips`; :func:`perceptual_input` is their common input policy.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _check(x: torch.Tensor, y: torch.Tensor) -> None:
    assert x.shape == y.shape and x.ndim == 4, f"images must be equal [N, C, H, W], got {tuple(x.shape)} vs {tuple(y.shape)}"


def mse(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image mean squared error, ``[N, C, H, W] x2 -> [N]``."""
    _check(x, y)
    return (x - y).pow(2).flatten(1).mean(1)


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB for images in [-1, 1] (peak-to-peak 2, so peak^2 = 4), ``-> [N]``."""
    return 10.0 * torch.log10(4.0 / mse(x, y).clamp_min(1e-12))


def _gaussian_window(size: int, sigma: float, channels: int, device, dtype) -> torch.Tensor:
    coords = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-coords.pow(2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim(x: torch.Tensor, y: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Per-image SSIM (Wang et al. 2004) on [0, 1]-rescaled images, valid-region mean, ``-> [N]``."""
    _check(x, y)
    x = (x.float() + 1) / 2
    y = (y.float() + 1) / 2
    c = x.shape[1]
    win = _gaussian_window(window, sigma, c, x.device, x.dtype)
    conv = lambda t: F.conv2d(t, win, groups=c)  # noqa: E731
    mu_x, mu_y = conv(x), conv(y)
    sxx = conv(x * x) - mu_x.pow(2)
    syy = conv(y * y) - mu_y.pow(2)
    sxy = conv(x * y) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x.pow(2) + mu_y.pow(2) + c1) * (sxx + syy + c2))
    return s.flatten(1).mean(1)


PERCEPTUAL_MIN_SIDE = 64    # AlexNet's pooling needs >= 64 px: test generators of 16-32 px are upsampled
PERCEPTUAL_MAX_SIDE = 256   # the protocol scores at most 256 px: a 512 px generator is downsampled


def perceptual_input(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both image batches resized (bilinear, antialiased) to their side clamped to
    [PERCEPTUAL_MIN_SIDE, PERCEPTUAL_MAX_SIDE]: the input policy of every LPIPS variant."""
    _check(x, y)
    size = min(max(x.shape[-1], PERCEPTUAL_MIN_SIDE), PERCEPTUAL_MAX_SIDE)
    if x.shape[-1] != size:
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        y = F.interpolate(y, size=size, mode="bilinear", align_corners=False, antialias=True)
    return x, y


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value) of a sequence of floats."""
    vals = [float(v) for v in values]
    m = sum(vals) / len(vals)
    if len(vals) < 2:
        return m, 0.0
    return m, math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1))
