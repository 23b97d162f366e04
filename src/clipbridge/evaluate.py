"""Evaluation of inversion methods on held-out faces (protocol: DESIGN.md, metrics.py).

A *method* maps target images to reconstructed images, doing all of its own work (a bridge
encodes the image with CLIP first), so its wall time per image on the named device is the
whole cost of an inversion. Per image: MSE, PSNR, SSIM and LPIPS (LPIPS-rand in the offline
profile); per method the means with their standard errors.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from clipbridge import metrics
from clipbridge.models.bridge import to_ws

Method = Callable[[torch.Tensor], torch.Tensor]
METRICS = ("mse", "psnr", "ssim", "lpips")


def mean_latent_method(G) -> Method:
    """The floor: every face reconstructed as the generator's mean-latent image."""
    def run(images):
        ws = G.w_avg.detach()[None, None, :].expand(images.shape[0], G.num_ws, -1)
        return G.synthesis(ws, noise_mode="const")
    return run


def bridge_method(G, encoder, bridge) -> Method:
    """The bridge: image -> CLIP embedding -> latent -> image, one forward pass each."""
    def run(images):
        return G.synthesis(to_ws(G, bridge(encoder.encode_image(images)), bridge.target), noise_mode="const")
    return run


@torch.no_grad()
def evaluate_method(method: Method, images: torch.Tensor, lpips: metrics.LPIPS,
                    batch: int) -> tuple[list[dict], float, torch.Tensor]:
    """Per-image metric rows, ms per image, and the reconstructions ``[N, 3, R, R]`` in [-1, 1]."""
    rows, outs, seconds = [], [], 0.0
    for i in range(0, images.shape[0], batch):
        x = images[i:i + batch]
        t = time.perf_counter()
        y = method(x)
        seconds += time.perf_counter() - t
        vals = {"mse": metrics.mse(y, x), "psnr": metrics.psnr(y, x), "ssim": metrics.ssim(y, x), "lpips": lpips(y, x)}
        for j in range(x.shape[0]):
            rows.append({"index": i + j, **{k: float(v[j]) for k, v in vals.items()}})
        outs.append(y.cpu())
    return rows, 1000.0 * seconds / images.shape[0], torch.cat(outs)


def summarize(rows: list[dict]) -> dict:
    """Mean of each metric over images, and the standard error of the mean."""
    out = {}
    for k in METRICS:
        m, s = metrics.mean_std([r[k] for r in rows])
        out[k] = m
        out[f"{k}_sem"] = s / len(rows) ** 0.5
    return out
