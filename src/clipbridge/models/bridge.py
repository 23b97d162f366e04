"""The bridge: the report's ``FeatureToLatent`` MLP, generalized.

Report: 4 Linear layers, hidden width 1024, ReLU between, input the L2-normalized 1024-d CLIP
RN50 embedding, output the generator's 512-d z. Here depth, width, activation and target space
are parameters. The network predicts in a *normalized* latent space: its raw output ``u`` is
mapped to ``latent = mean + std * u`` with the target space's mean (``w_avg`` for W / W+, 0 for
z) and per-dimension std, so that zero output is the mean face and every target space starts
from the same scale.
"""

from __future__ import annotations

import torch
from torch import nn

from clipbridge.errors import BadValueError, UnknownNameError

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "lrelu": lambda: nn.LeakyReLU(0.2), "silu": nn.SiLU}
TARGETS = ("z", "w", "w+")


class Bridge(nn.Module):
    """``embedding [N, in_dim] -> latent [N, num_ws, latent_dim]`` float32.

    ``num_ws`` is 1 for ``z`` and ``w``, and the generator's ``num_ws`` for ``w+`` (of which
    the network predicts ``predict_ws``, default all).
    """

    def __init__(self,
        in_dim: int,                     # embedding size (1024 for CLIP RN50)
        latent_dim: int,                 # z_dim for target 'z', w_dim otherwise
        depth: int = 4,                  # number of Linear layers (report: 4); 1 = linear map
        width: int = 1024,               # hidden width (report: 1024)
        activation: str = "relu",        # one of ACTIVATIONS (report: relu)
        target: str = "z",               # 'z' (report) | 'w' | 'w+'
        num_ws: int = 1,                 # style vectors predicted when target == 'w+'
        latent_mean: torch.Tensor | None = None,  # [latent_dim] centre of the target space; None = 0
        latent_std: torch.Tensor | None = None,   # [latent_dim] scale of the target space; None = 1
        predict_ws: list[int] | None = None,      # w+ only: the ws indices predicted; the others stay at latent_mean; None = all
    ):
        super().__init__()
        if depth < 1:
            raise BadValueError(f"bridge depth must be >= 1, got {depth}")
        if activation not in ACTIVATIONS:
            raise UnknownNameError(f"unknown activation '{activation}'; available: {sorted(ACTIVATIONS)}")
        if target not in TARGETS:
            raise UnknownNameError(f"unknown target '{target}'; available: {list(TARGETS)}")
        if predict_ws is not None and (target != "w+" or not predict_ws or not set(predict_ws) <= set(range(num_ws))):
            raise BadValueError(f"predict_ws {predict_ws} needs target 'w+' and indices in [0, {num_ws})")
        self.init_kwargs = dict(in_dim=in_dim, latent_dim=latent_dim, depth=depth, width=width,
                                activation=activation, target=target, num_ws=num_ws,
                                predict_ws=None if predict_ws is None else sorted(predict_ws))
        self.target = target
        self.num_ws = num_ws if target == "w+" else 1
        self.predict_ws = list(range(self.num_ws)) if predict_ws is None else sorted(predict_ws)
        self.num_out = len(self.predict_ws)
        self.latent_dim = latent_dim
        dims = [in_dim] + [width] * (depth - 1) + [self.num_out * latent_dim]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(nn.Linear(a, b))
            if i < depth - 1:
                layers.append(ACTIVATIONS[activation]())
        self.net = nn.Sequential(*layers)
        self.register_buffer("latent_mean", torch.zeros(latent_dim) if latent_mean is None else latent_mean.detach().float().clone())
        self.register_buffer("latent_std", torch.ones(latent_dim) if latent_std is None else latent_std.detach().float().clone())

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        assert emb.ndim == 2, f"embedding must be [N, D], got {tuple(emb.shape)}"
        u = self.net(emb).view(emb.shape[0], self.num_out, self.latent_dim)
        if self.num_out < self.num_ws:  # the unpredicted ws stay at the mean (u = 0)
            full = u.new_zeros(emb.shape[0], self.num_ws, self.latent_dim)
            full[:, self.predict_ws] = u
            u = full
        return self.latent_mean + self.latent_std * u


def to_ws(G, latent: torch.Tensor, target: str) -> torch.Tensor:
    """Bridge output ``[N, num_out, dim]`` -> the generator's ``ws [N, num_ws, w_dim]``."""
    if target == "z":
        return G.mapping(latent[:, 0], None)
    if target == "w":
        return latent.expand(-1, G.num_ws, -1)
    if latent.shape[1] != G.num_ws:
        raise ValueError(f"w+ latent has {latent.shape[1]} vectors, generator expects {G.num_ws}")
    return latent
