"""Inverting images into a generator's latent space: the bridge, optimization, and both.

- :func:`bridge_ws`: image -> CLIP embedding -> bridge -> ``ws`` (one forward pass each).
- :func:`optimize`: projector-style optimization of a latent so that ``G.synthesis`` matches
  the target, from the mean latent (the quality ceiling of the evaluation) or from the bridge's
  output (bridge + refine). Two spaces:

  - ``w``: one vector broadcast to every style input (for a generator without W+, such as
    the DCGAN, this is its only latent: z);
  - ``w+``: one vector per style input (only where ``num_ws > 1``).

  The optimized variable is the latent in a *normalized* space, ``ws = mean + std * u``, with
  ``mean = w_avg`` and ``std`` the per-dimension spread of the generator's w (1 for the DCGAN's
  z), so one learning rate fits every generator. Loss = ``mse_weight`` * MSE +
  ``lpips_weight`` * LPIPS; Adam with a cosine ramp-down. As in the NVlabs projector, noise is
  added to the latent early on (``noise`` x std, decaying to 0 over ``noise_ramp`` of the steps):
  besides exploring, it moves the DCGAN's start ``z = 0`` out of its dead zone, where the
  generator's gradient is exactly zero (``tests/test_dcgan.py``). No noise-input optimization
  (evaluation uses constant noise).
"""

from __future__ import annotations

import torch

from clipbridge.config import OptimConfig
from clipbridge.errors import BadValueError, UnknownNameError
from clipbridge.models.bridge import to_ws
from clipbridge.schedule import lr_at

SPACES = ("w", "w+")


def has_w_plus(G) -> bool:
    return G.num_ws > 1


def check_space(G, space: str) -> None:
    if space not in SPACES:
        raise UnknownNameError(f"unknown latent space '{space}'; available: {list(SPACES)}")
    if space == "w+" and not has_w_plus(G):
        name = getattr(G, "meta", {}).get("name", type(G).__name__)
        raise BadValueError(f"generator '{name}' has one latent (num_ws = 1): no W+ space; use 'w'")


@torch.no_grad()
def latent_std(G, n: int = 2048, seed: int = 0) -> torch.Tensor:
    """``[w_dim]`` per-dimension std of ``G.mapping(z)`` over ``n`` seeded z (ones if mapping is the identity)."""
    device = G.w_avg.device
    z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(seed)).to(device)
    return G.mapping(z, None)[:, 0].std(0).clamp_min(1e-3)


def bridge_ws(G, encoder, bridge, images: torch.Tensor) -> torch.Tensor:
    """``images [N, 3, H, W]`` in [-1, 1] -> ``ws [N, num_ws, w_dim]`` through the encoder and bridge."""
    return to_ws(G, bridge(encoder.encode_image(images)), bridge.target)


def mean_ws(G, n: int) -> torch.Tensor:
    """``[n, num_ws, w_dim]``: the mean latent for every image."""
    return G.w_avg.detach()[None, None, :].expand(n, G.num_ws, -1).clone()


def optimize(G, target: torch.Tensor, ws_init: torch.Tensor, space: str, cfg: OptimConfig,
             lpips=None, std: torch.Tensor | None = None, record_at: tuple[int, ...] = (),
             progress=None) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """Optimize a latent from ``ws_init`` so ``G.synthesis`` reproduces ``target``.

    target: ``[N, 3, R, R]`` in [-1, 1]; ws_init: ``[N, num_ws, w_dim]`` (for ``w`` its first
    vector is the start). ``lpips``: a module ``(x, y) -> [N]`` or None (then its weight is
    ignored). ``std``: ``[w_dim]`` scale of the normalized space (default :func:`latent_std`).
    ``record_at``: step counts whose ``ws`` are also returned (detached, on the same device).
    ``progress``: optional callable ``(step)`` after each step. Each image's loss is summed
    over the batch, so images are optimized independently of the batch they share.
    Returns the final ``ws [N, num_ws, w_dim]`` and ``{step: ws}``.
    """
    check_space(G, space)
    std = latent_std(G) if std is None else std
    mean = G.w_avg.detach()
    start = ws_init.detach() if space == "w+" else ws_init.detach()[:, :1]
    u = ((start - mean) / std).clone().requires_grad_(True)
    opt = torch.optim.Adam([u], lr=cfg.lr, betas=(0.9, 0.999))
    recorded: dict[int, torch.Tensor] = {}

    def current() -> torch.Tensor:
        w = mean + std * u
        return w if space == "w+" else w.expand(-1, G.num_ws, -1)

    if 0 in record_at:
        recorded[0] = current().detach().clone()
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg.steps, cfg.lr, "cosine", warmup=0)
        scale = cfg.noise * max(0.0, 1.0 - step / max(1e-8, cfg.noise_ramp * cfg.steps)) ** 2
        w = current()
        if scale > 0:  # row i's noise depends on (seed, step, i) only, not on the rest of the batch
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
            w = w + scale * std * torch.randn(w.shape, generator=gen).to(w.device)
        img = G.synthesis(w, noise_mode="const")
        loss = cfg.mse_weight * (img - target).pow(2).flatten(1).mean(1)
        if lpips is not None and cfg.lpips_weight > 0:
            loss = loss + cfg.lpips_weight * lpips(img, target)
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()
        if step + 1 in record_at:
            recorded[step + 1] = current().detach().clone()
        if progress is not None:
            progress(step + 1)
    return current().detach(), recorded
