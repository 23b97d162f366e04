"""Training the bridge on (embedding, image, latent) triples of generated faces.

Loss = ``loss_rgb`` * MSE(G(bridge(emb)), image) (the report's RGB loss)
     + ``loss_lpips`` * LPIPS(G(bridge(emb)), image)
     + ``loss_latent`` * MSE(bridge(emb), latent) in the bridge's normalized space.
Gradients flow through the frozen generator into the bridge only.

Data parallel (``torchrun``, see :mod:`clipbridge.distributed`): every rank draws the same global
batch, forwards its shard through one DDP-wrapped :class:`_BridgeLoss` and scales the per-row
mean by ``mean_scale``; the validation set is sharded too and logged values are global means.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from tqdm import tqdm

from clipbridge import config, distributed
from clipbridge.errors import BadValueError
from clipbridge.io import from_uint8
from clipbridge.models.bridge import Bridge, to_ws
from clipbridge.models.lpips import LPIPS


def target_latents(G, data: dict, target: str) -> torch.Tensor:
    """The known latent of each generated face in the bridge's target space ``[N, num_ws, dim]``."""
    if target == "z":
        return data["z"][:, None, :]
    if target == "w":
        return data["ws"][:, :1, :]
    return data["ws"]


def build_bridge(G, emb_dim: int, cfg: config.Train, train_latents: torch.Tensor,
                 predict_ws: list[int] | None = None, emb_sample: torch.Tensor | None = None) -> Bridge:
    """A bridge whose normalized space is centred on the target space's mean, scaled by its std.

    With ``cfg.init_output_std`` and ``emb_sample [n, D]`` given, the last layer's initial
    weights are rescaled (data-dependent init) so the initial outputs have that std across the
    sample in the normalized space. PyTorch's default init gives ~0.03, which on the DCGAN lies in
    a dead zone around z = 0 where the generator's output and gradient are exactly constant
    (every first-layer unit is cut off by its ReLU), so a bridge that starts there never learns.
    """
    if cfg.target != "z" and not getattr(G, "has_style_space", True):
        raise BadValueError(f"generator '{G.meta.get('name', type(G).__name__)}' has no W / W+ space "
                         f"(mapping is the identity, one latent): only train.target 'z' applies")
    flat = train_latents.reshape(-1, train_latents.shape[-1])
    mean = torch.zeros(flat.shape[1]) if cfg.target == "z" else G.w_avg.detach().cpu()
    std = torch.ones(flat.shape[1]) if cfg.target == "z" else flat.std(0).clamp_min(1e-3)
    bridge = Bridge(emb_dim, flat.shape[1], cfg.depth, cfg.width, cfg.activation, cfg.target,
                    num_ws=G.num_ws, latent_mean=mean, latent_std=std, predict_ws=predict_ws)
    if cfg.init_output_std is not None and emb_sample is not None:
        last = bridge.net[-1]
        with torch.no_grad():
            spread = (bridge.net(emb_sample) - last.bias).std()
            last.weight.mul_(cfg.init_output_std / spread.clamp_min(1e-8))
    return bridge


def batch_loss(G, bridge: Bridge, emb, images, latents, cfg: config.Train, lpips: LPIPS | None) -> dict:
    """Weighted loss terms for one batch; ``images`` float in [-1, 1]."""
    pred = bridge(emb)
    out = G.synthesis(to_ws(G, pred, cfg.target), noise_mode="const")
    terms = {"rgb": (out - images).pow(2).mean()}
    if lpips is not None:
        terms["lpips"] = lpips(out, images).mean()
    if cfg.loss_latent > 0:
        terms["latent"] = ((pred - latents) / bridge.latent_std).pow(2).mean()
    weights = {"rgb": cfg.loss_rgb, "lpips": cfg.loss_lpips, "latent": cfg.loss_latent}
    terms["total"] = sum(weights[k] * v for k, v in terms.items())
    return terms


class _BridgeLoss(torch.nn.Module):
    """:func:`batch_loss` as a module holding the bridge, so that DDP wraps exactly one forward.

    G and LPIPS are frozen (``requires_grad`` False), so DDP averages the bridge's gradients only.
    """

    def __init__(self, G, bridge: Bridge, cfg: config.Train, lpips: LPIPS | None):
        super().__init__()
        self.G, self.bridge, self.lpips, self.cfg = G, bridge, lpips, cfg

    def forward(self, emb, images, latents) -> dict:
        return batch_loss(self.G, self.bridge, emb, images, latents, self.cfg, self.lpips)


Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
"""One global training batch: (model inputs [B, ...], images uint8 [B, 3, R, R], target latents [B, n, dim])."""


def train(G, train_data: dict, val_data: dict, cfg: config.Train, device: str, lpips: LPIPS | None,
          batch: int, predict_ws: list[int] | None = None, desc: str = "train bridge",
          model: torch.nn.Module | None = None, next_batch: Callable[[int], Batch] | None = None,
          on_log: Callable[[int, torch.nn.Module, float], bool] | None = None) -> tuple[Bridge, list[dict]]:
    """Train a bridge; return it and its curve rows (step, train losses, val RGB MSE, seconds).

    ``lpips``: the profile's LPIPS, used only when ``cfg.loss_lpips > 0``; ``batch``: images
    per step (per generator, :meth:`config.Train.batch_for`). ``device``: this process's device
    (under torchrun the one :func:`clipbridge.distributed.init` returned).

    The model's inputs are ``train_data["emb"]`` / ``val_data["emb"]``. Defaults train the
    headline recipe; the encoder study (:mod:`clipbridge.bridge.study`) changes three things:
    ``model``, another network with the bridge's interface (built and initialized by the caller;
    default :func:`build_bridge`); ``next_batch(size)``, which returns a fresh global batch
    (default: ``size`` random rows of ``train_data``); ``on_log(step, model, val_mse)``, called at
    every curve row, which stops training by returning True.

    Under torchrun every rank draws the same global batch of ``batch`` rows and trains on its
    shard; the result equals a one-process run up to the order of float sums, and every rank
    returns the same bridge and curve (global means). G and LPIPS are expected frozen (as
    ``registry.load_generator`` and :class:`LPIPS` leave them): DDP averages the gradients of
    every parameter that requires one.
    """
    distributed.require_group()
    torch.manual_seed(cfg.seed)
    lat_train = target_latents(G, train_data, cfg.target)
    if model is None:
        model = build_bridge(G, train_data["emb"].shape[1], cfg, lat_train, predict_ws,
                             emb_sample=train_data["emb"][:1024])
    bridge = model.to(device)
    lpips = lpips if cfg.loss_lpips > 0 else None
    opt = torch.optim.Adam(bridge.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)     # the same global batches on every rank
    n = train_data["emb"].shape[0]
    total = min(batch, n)
    rows, scale = distributed.shard_slice(total), distributed.mean_scale(total)
    step_loss = distributed.wrap(_BridgeLoss(G, bridge, cfg, lpips), device)
    curve, t0 = [], time.perf_counter()
    val_rows = distributed.shard_slice(val_data["emb"].shape[0])
    val_emb = val_data["emb"][val_rows].to(device)
    val_img = from_uint8(val_data["images"][val_rows]).to(device)
    running: dict[str, float] = {}
    for step in tqdm(range(1, cfg.steps + 1), desc=desc, unit="step", disable=not distributed.is_main()):
        if next_batch is None:
            idx = torch.randint(n, (total,), generator=gen)[rows]
            inputs, images, latents = train_data["emb"][idx], train_data["images"][idx], lat_train[idx]
        else:
            inputs, images, latents = (t[rows] for t in next_batch(total))
        terms = step_loss(inputs.to(device), from_uint8(images).to(device), latents.to(device))
        opt.zero_grad(set_to_none=True)
        (terms["total"] * scale).backward()
        opt.step()
        for k, v in terms.items():
            running[k] = running.get(k, 0.0) + v.item()
        if step % cfg.log_every == 0 or step == cfg.steps:
            k = step % cfg.log_every or cfg.log_every
            with torch.no_grad():
                val = (G.synthesis(to_ws(G, bridge(val_emb), cfg.target), noise_mode="const") - val_img).pow(2).mean()
            curve.append({"step": step, **{f"train_{key}": distributed.all_reduce_mean(v, len(inputs)) / k
                                           for key, v in running.items()},
                          "val_rgb": distributed.all_reduce_mean(val, len(val_emb)),
                          "seconds": round(time.perf_counter() - t0, 3)})
            running = {}
            if on_log is not None and on_log(step, bridge, curve[-1]["val_rgb"]):
                break
    return bridge.eval(), curve


def train_on_one_photo(G, bridge: Bridge, emb: torch.Tensor, image: torch.Tensor, steps: int, lr: float,
                       ) -> list[dict]:
    """The report's own experiment: ``bridge`` trained on one photo (``emb [1, D]``, ``image
    [1, 3, R, R]`` in [-1, 1]) with Adam and the RGB loss. Returns the curve ``{step, rgb}``
    (step 0 = before training); ``bridge`` is trained in place."""
    opt = torch.optim.Adam(bridge.parameters(), lr=lr)
    curve = []
    for step in range(steps + 1):
        out = G.synthesis(to_ws(G, bridge(emb), bridge.target), noise_mode="const")
        loss = (out - image).pow(2).mean()
        curve.append({"step": step, "rgb": loss.item()})
        if step == steps:
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return curve
