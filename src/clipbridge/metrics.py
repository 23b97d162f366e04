"""Image-reconstruction metrics: pure functions on image batches in [-1, 1].

Protocol (DESIGN.md): MSE on the [-1, 1] range (the inversion papers' "L2"),
PSNR = 10 log10(4 / MSE) (peak-to-peak range 2), SSIM on [0, 1] with an 11x11 Gaussian window
(sigma 1.5), and LPIPS v0.1 with an AlexNet trunk. The offline profile cannot download the
trunk's ImageNet weights and builds it randomly initialized from a fixed seed: that variant is
*LPIPS-rand*, not comparable with published LPIPS, and is labelled so wherever it appears.
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


class LPIPS(torch.nn.Module):
    """LPIPS distance, ``[N, 3, H, W] x2 in [-1, 1] -> [N]``, resized to ``size`` first.

    ``size=None`` keeps the input size, except that inputs smaller than :attr:`MIN_SIZE` (test
    generators of 16-32 px) are upsampled to it: AlexNet's pooling needs at least that much.

    ``random_trunk=True`` (offline profile) builds the AlexNet trunk randomly initialized after
    ``torch.manual_seed(seed)``: LPIPS-rand. The linear heads are the package's v0.1 weights.
    """

    def __init__(self, random_trunk: bool, seed: int = 0, size: int | None = None):
        super().__init__()
        import warnings

        import lpips

        self.label = "LPIPS-rand" if random_trunk else "LPIPS"
        self.size = size
        state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        with warnings.catch_warnings():  # torchvision's 'pretrained' deprecation, raised inside lpips
            warnings.simplefilter("ignore", UserWarning)
            self.net = lpips.LPIPS(net="alex", version="0.1", pnet_rand=random_trunk, verbose=False)
        torch.random.set_rng_state(state)
        self.net.eval().requires_grad_(False)

    MIN_SIZE = 64

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        _check(x, y)
        size = self.size if self.size is not None else max(x.shape[-1], self.MIN_SIZE)
        if x.shape[-1] != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
            y = F.interpolate(y, size=size, mode="bilinear", align_corners=False, antialias=True)
        return self.net(x, y, normalize=False).flatten()


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value) of a sequence of floats."""
    vals = [float(v) for v in values]
    m = sum(vals) / len(vals)
    if len(vals) < 2:
        return m, 0.0
    return m, math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1))
