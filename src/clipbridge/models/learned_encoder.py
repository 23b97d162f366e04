"""A small feed-forward CNN from an image straight to a generator latent (pSp / e4e style [1, 2]).

The encoder study's upper reference: what a network trained end to end on the image reaches with
the bridge's recipe, with no frozen embedding in between. :class:`LearnedEncoder` has the
:class:`~clipbridge.models.bridge.Bridge`'s interface (``target``, ``num_ws``, ``latent_dim``,
``latent_mean``, ``latent_std``, ``init_kwargs``), so
:func:`clipbridge.bridge.train.batch_loss` trains it with images in place of embeddings.

[1] Richardson et al., "Encoding in Style: a StyleGAN Encoder for Image-to-Image Translation", CVPR 2021.
[2] Tov et al., "Designing an Encoder for StyleGAN Image Manipulation", SIGGRAPH 2021.
"""

from __future__ import annotations

import torch
from torch import nn

from clipbridge.errors import BadValueError, UnknownNameError
from clipbridge.models.bridge import TARGETS

HIDDEN = 512            # width of the fully connected layer before the output
MAX_CHANNELS = 512      # channel cap of the convolution stages


def _conv(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1)


class LearnedEncoder(nn.Module):
    """``x [N, 3, resolution, resolution]`` float32 in [-1, 1] -> ``latent [N, num_ws, latent_dim]``.

    ``latent = latent_mean + latent_std * u`` with ``u`` the network's raw output (normalized
    space, as in the bridge). ``num_ws`` is 1 for ``z`` and ``w``, the generator's for ``w+``.

    Layout: conv3x3 stem (3 -> channels) + ReLU; then ``log2(resolution / 4)`` stages, stage
    ``i`` (from 0) = conv3x3 stride 2 (-> ``min(channels * 2**i, 512)``) + ReLU + conv3x3 + ReLU,
    down to 4x4; flatten; Linear(-> 512) + ReLU; :attr:`output_layer` Linear(512 -> num_ws *
    latent_dim). At resolution 64, channels 32: stages of 32, 64, 128, 256 channels and
    3,330,468 parameters for latent_dim 100, target 'z' (3,792,168 for 'w+' with 10 ws).
    """

    def __init__(self,
        resolution: int,                 # input side in pixels; a power of two >= 8
        latent_dim: int,                 # z_dim for target 'z', w_dim otherwise
        channels: int = 32,              # width of the stem and the first stage (doubling, capped at 512)
        target: str = "z",               # 'z' | 'w' | 'w+' (as the bridge)
        num_ws: int = 1,                 # style vectors predicted when target == 'w+'
        latent_mean: torch.Tensor | None = None,  # [latent_dim] centre of the target space; None = 0
        latent_std: torch.Tensor | None = None,   # [latent_dim] scale of the target space; None = 1
    ):
        super().__init__()
        if resolution < 8 or resolution & (resolution - 1):
            raise BadValueError(f"learned encoder resolution must be a power of two >= 8, got {resolution}")
        if target not in TARGETS:
            raise UnknownNameError(f"unknown target '{target}'; available: {list(TARGETS)}")
        for what, value in (("latent_dim", latent_dim), ("channels", channels), ("num_ws", num_ws)):
            if value < 1:
                raise BadValueError(f"learned encoder {what} must be >= 1, got {value}")
        for what, t in (("latent_mean", latent_mean), ("latent_std", latent_std)):
            if t is not None and tuple(t.shape) != (latent_dim,):
                raise BadValueError(f"learned encoder {what} must be [{latent_dim}], got {tuple(t.shape)}")
        self.init_kwargs = dict(resolution=resolution, latent_dim=latent_dim, channels=channels,
                                target=target, num_ws=num_ws)
        self.resolution = resolution
        self.target = target
        self.num_ws = num_ws if target == "w+" else 1
        self.latent_dim = latent_dim
        layers: list[nn.Module] = [_conv(3, channels), nn.ReLU()]
        c_in = channels
        for i in range((resolution // 4).bit_length() - 1):
            c_out = min(channels * 2 ** i, MAX_CHANNELS)
            layers += [_conv(c_in, c_out, stride=2), nn.ReLU(), _conv(c_out, c_out), nn.ReLU()]
            c_in = c_out
        layers += [nn.Flatten(), nn.Linear(c_in * 16, HIDDEN), nn.ReLU()]
        self.trunk = nn.Sequential(*layers)
        self.head = nn.Linear(HIDDEN, self.num_ws * latent_dim)
        self.register_buffer("latent_mean", torch.zeros(latent_dim) if latent_mean is None else latent_mean.detach().float().clone())
        self.register_buffer("latent_std", torch.ones(latent_dim) if latent_std is None else latent_std.detach().float().clone())

    @property
    def output_layer(self) -> nn.Linear:
        """The last Linear, whose output is ``u`` flattened (see :func:`rescale_output`)."""
        return self.head

    def check_images(self, x: torch.Tensor) -> None:
        """One-line :class:`BadValueError` unless ``x`` is float ``[N, 3, resolution, resolution]``."""
        r = self.resolution
        if not x.is_floating_point() or x.ndim != 4 or tuple(x.shape[1:]) != (3, r, r):
            raise BadValueError(f"learned encoder: images must be float [N, 3, {r}, {r}] in [-1, 1]; "
                                f"got {tuple(x.shape)} {x.dtype}")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, 3, R, R]`` -> ``[N, 512]``: everything before :attr:`output_layer`."""
        self.check_images(x)
        return self.trunk(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = self.head(self.features(x)).view(x.shape[0], self.num_ws, self.latent_dim)
        return self.latent_mean + self.latent_std * u


def rescale_output(model: nn.Module, sample: torch.Tensor, std: float, layer: nn.Linear | None = None) -> float:
    """Data-dependent init: scale ``layer``'s weight (default ``model.output_layer``) in place so
    that its outputs on ``sample [n, ...]`` (``model``'s inputs), less its bias, have std ``std``
    across all rows and units. Returns the std before rescaling.

    The same init as :func:`clipbridge.bridge.train.build_bridge` (there ``layer`` is
    ``bridge.net[-1]``): PyTorch's default init gives outputs of std ~0.03, which on the DCGAN
    lie in a dead zone around z = 0 where the generator's output and gradient are constant.
    The layer's output is read with a forward hook during ``model(sample)``, so any module whose
    forward passes through ``layer`` works.
    """
    if std <= 0:
        raise BadValueError(f"rescale_output: std must be > 0, got {std}")
    layer = model.output_layer if layer is None else layer
    seen: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda mod, args, out: seen.append(out))
    try:
        with torch.no_grad():
            model(sample)
    finally:
        handle.remove()
    if len(seen) != 1:
        raise BadValueError(f"rescale_output: the output layer ran {len(seen)} times in one forward, expected 1")
    bias = 0 if layer.bias is None else layer.bias
    spread = (seen[0] - bias).std()
    with torch.no_grad():
        layer.weight.mul_(std / spread.clamp_min(1e-8))
    return spread.item()
