"""The encoder study: is the bridge the limit, or what it is given?

One *run* trains a model that turns a face into a generator latent, on one generator's faces,
with the headline recipe (``train``: the report's bridge, loss, batch and constant learning
rate) and :func:`clipbridge.bridge.train.train` itself, changed in three ways only:

- the input: a fixed embedding of each face by one encoder (:mod:`clipbridge.models.encoders`),
  or the image itself for the learned encoder (:mod:`clipbridge.models.learned_encoder`), trained
  end to end with the bridge's loss;
- the length: it stops when validation MSE stops improving (:func:`plateaued`), at most
  ``encoders.max_steps``, and keeps the model of the best validation MSE;
- optionally the data: :class:`FreshFaces` draws a new batch of faces from the generator at every
  step instead of the dataset's fixed training faces.

With the same seed, a run's model at step k equals the headline bridge trained for k steps (same
initialization, same batches, constant learning rate), so the runs' scores at ``score_at`` steps
sit beside the ablations (300 steps) and the headline (1,000 steps).

Two baselines need no training: the training face whose embedding is nearest by cosine
(:func:`nearest_latents`) and a ridge probe of the latent from the embedding (:func:`probe_r2`).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable

import numpy as np
import torch

from clipbridge import config
from clipbridge.bridge.evaluate import synthesize
from clipbridge.bridge.train import Batch, target_latents, train
from clipbridge.errors import BadValueError
from clipbridge.io import from_uint8, to_uint8
from clipbridge.models.bridge import to_ws
from clipbridge.models.learned_encoder import LearnedEncoder, rescale_output
from clipbridge.offline.clip_eval import ridge_r2

LEARNED = "learned"          # the row of the learned encoder
FRESH_PREFIX = "fresh-"      # rows trained on fresh faces: fresh-<encoder> / fresh-learned
PROBE_ALPHA_GRID = tuple(10.0 ** k for k in range(-3, 4))  # x encoders.probe_alpha, chosen on the val faces


def plateaued(history: list[tuple[int, float]], window: float, tol: float, min_steps: int) -> bool:
    """The stopping rule. ``history``: ``(step, val_mse)`` in step order. True when the last step
    is at least ``min_steps`` and the best value of the last ``window`` of steps improves on the
    best value before them by less than ``tol`` (relative): the curve has flattened (or turned up)."""
    if not history or history[-1][0] < min_steps:
        return False
    start = history[-1][0] * (1.0 - window)
    before = [v for s, v in history if s <= start]
    recent = [v for s, v in history if s > start]
    if not before or not recent:
        return False
    best_before = min(before)
    return best_before - min(recent) < tol * best_before


@dataclasses.dataclass
class Monitor:
    """``on_log`` for :func:`clipbridge.bridge.train.train`: keeps the model of the best
    validation MSE, calls ``score(step, model)`` at ``score_at`` steps and stops on :func:`plateaued`."""

    cfg: config.Encoders
    score: Callable[[int, torch.nn.Module], None]
    history: list[tuple[int, float]] = dataclasses.field(default_factory=list)
    best_step: int = 0
    best_val: float = math.inf
    best_state: dict | None = None
    stopped: bool = False

    def __call__(self, step: int, model: torch.nn.Module, val: float) -> bool:
        self.history.append((step, val))
        if val < self.best_val:
            self.best_step, self.best_val = step, val
            self.best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        if step in self.cfg.score_at:
            self.score(step, model)
        self.stopped = plateaued(self.history, self.cfg.plateau_window, self.cfg.plateau_tol, self.cfg.min_steps)
        return self.stopped

    def summary(self) -> dict:
        return {"steps_run": self.history[-1][0], "best_step": self.best_step, "best_val_mse": self.best_val,
                "plateaued": self.stopped}


def check_schedule(cfg: config.Encoders) -> None:
    """The steps the study scores and checks must be steps the curve logs."""
    bad = [s for s in cfg.score_at if s % cfg.eval_every or s > cfg.max_steps]
    if bad or cfg.min_steps > cfg.max_steps or not 0 < cfg.plateau_window < 1:
        raise BadValueError(f"params.yaml: encoders.score_at {bad} must be multiples of eval_every "
                            f"({cfg.eval_every}) within max_steps, min_steps <= max_steps and 0 < plateau_window < 1")


class FreshFaces:
    """``next_batch`` for :func:`~clipbridge.bridge.train.train`: a new batch of faces every step.

    z ~ N(0, I) from its own seeded stream, rendered by ``G`` with constant noise and rounded to
    uint8 as the dataset's faces are; the model's input is ``encode(image)`` ([-1, 1] float in,
    ``[B, D]`` out), or the image itself when ``encode`` is None (the learned encoder).
    """

    def __init__(self, G, encode: Callable[[torch.Tensor], torch.Tensor] | None, target: str, seed: int, device):
        self.G, self.encode, self.target, self.device = G, encode, target, device
        self.gen = torch.Generator().manual_seed(seed)
        self.faces_seen = 0

    @torch.no_grad()
    def __call__(self, size: int) -> Batch:
        z = torch.randn(size, self.G.z_dim, generator=self.gen)
        ws = self.G.mapping(z.to(self.device), None)
        images = to_uint8(self.G.synthesis(ws, noise_mode="const")).cpu()
        x = from_uint8(images)
        inputs = x if self.encode is None else self.encode(x.to(self.device)).cpu()
        self.faces_seen += size
        return inputs, images, target_latents(self.G, {"z": z, "ws": ws.cpu()}, self.target)


def train_run(G, model, train_data: dict, val_data: dict, recipe: config.Train, cfg: config.Encoders, device,
              batch: int, score: Callable[[int, torch.nn.Module], None], desc: str,
              next_batch: Callable[[int], Batch] | None = None, lpips=None) -> tuple[torch.nn.Module, list[dict], dict]:
    """Train ``model`` (None: a bridge built by the recipe) until the curve plateaus; return the
    model of the best validation MSE, the curve and the :class:`Monitor` summary. ``lpips``: the
    profile's LPIPS, needed when the recipe has an LPIPS term (a missing one is an error, not a
    silently dropped loss)."""
    check_schedule(cfg)
    if recipe.loss_lpips > 0 and lpips is None:
        raise BadValueError(f"encoder study: train.loss_lpips is {recipe.loss_lpips} but no LPIPS network was given")
    run_cfg = dataclasses.replace(recipe, steps=cfg.max_steps, log_every=cfg.eval_every)
    monitor = Monitor(cfg, score)
    model, curve = train(G, train_data, val_data, run_cfg, device, lpips, batch, None, desc,
                         model=model, next_batch=next_batch, on_log=monitor)
    model.load_state_dict(monitor.best_state)
    return model.eval(), curve, monitor.summary()


def learned_model(G, recipe: config.Train, cfg: config.Encoders, train_latents: torch.Tensor,
                  sample: torch.Tensor) -> LearnedEncoder:
    """The learned encoder in the recipe's target space (centred and scaled as the bridge's), its
    last layer rescaled so its first outputs spread like ``recipe.init_output_std``."""
    flat = train_latents.reshape(-1, train_latents.shape[-1])
    z = recipe.target == "z"
    model = LearnedEncoder(G.img_resolution, flat.shape[1], cfg.learned.channels, recipe.target, num_ws=G.num_ws,
                           latent_mean=torch.zeros(flat.shape[1]) if z else G.w_avg.detach().cpu(),
                           latent_std=torch.ones(flat.shape[1]) if z else flat.std(0).clamp_min(1e-3))
    if recipe.init_output_std is not None:
        rescale_output(model, sample, recipe.init_output_std)
    return model


@torch.no_grad()
def reconstruct(G, model, inputs: torch.Tensor, batch: int, device) -> torch.Tensor:
    """``inputs [N, ...]`` -> ``G``'s images ``[N, 3, R, R]`` of ``model``'s latents, in batches."""
    ws = torch.cat([to_ws(G, model(inputs[i:i + batch].to(device)), model.target)
                    for i in range(0, inputs.shape[0], batch)])
    return synthesize(G, ws, batch)


def nearest_latents(train_emb: torch.Tensor, query_emb: torch.Tensor, train_latents: torch.Tensor) -> torch.Tensor:
    """Retrieval without training: for each query ``[Q, D]`` the latent of the training face
    (``train_emb [N, D]``, ``train_latents [N, ...]``) whose embedding is nearest by cosine."""
    if train_emb.shape[1] != query_emb.shape[1] or train_emb.shape[0] != train_latents.shape[0]:
        raise BadValueError(f"nearest neighbour: embeddings {tuple(train_emb.shape)} / {tuple(query_emb.shape)} "
                            f"and latents {tuple(train_latents.shape)} do not match")
    a = torch.nn.functional.normalize(train_emb.double(), dim=-1)
    b = torch.nn.functional.normalize(query_emb.double(), dim=-1)
    return train_latents[(b @ a.T).argmax(dim=1)]


def probe_r2(emb: dict[str, torch.Tensor], latents: dict[str, torch.Tensor], alpha: float) -> dict:
    """How much of the latent a linear map recovers from the embedding: a ridge probe fit on the
    training faces, its strength chosen on the validation faces from ``alpha`` x
    :data:`PROBE_ALPHA_GRID`, scored on the test faces. ``emb`` / ``latents``: split -> ``[N, D]`` /
    ``[N, K]`` -> ``{r2, alpha, val_r2}``."""
    scores = {a * alpha: ridge_r2(emb["train"], latents["train"], emb["val"], latents["val"], a * alpha)
              for a in PROBE_ALPHA_GRID}
    best = max(scores, key=lambda a: (scores[a], -a))
    return {"r2": ridge_r2(emb["train"], latents["train"], emb["test"], latents["test"], best),
            "alpha": best, "val_r2": scores[best]}


def seed_spread(values: list[float]) -> dict:
    """Mean and sample std of per-seed values (std NaN for one seed)."""
    v = np.asarray(values, dtype=np.float64)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else math.nan, "n_seeds": int(v.size)}
