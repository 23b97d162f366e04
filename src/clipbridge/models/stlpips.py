"""ST-LPIPS: the shift-tolerant learned perceptual metric with trained AlexNet trunk and heads.

Ghildyal & Liu, "Shift-tolerant Perceptual Similarity Metric", ECCV 2022
(github.com/abhijay9/ShiftTolerant-LPIPS). LPIPS v0.1 (Zhang et al. 2018) on an anti-aliased
AlexNet (Zhang 2019, "Making convolutional networks shift-invariant again"): the first conv has
stride 1, and every downsampling is a 3x3 binomial blur with stride 2 after reflection padding
by 2 on every side ("pad more"). Trunk and linear heads were trained together on BAPPS by the
authors; the ``stlpips-pytorch`` 0.0.2 wheel ships them as ``weights/vST0.0/alex_shift_tolerant.pth``.

The network is re-declared here with the package's layer names (``net.slice{k}.{i}``,
``lin{k}.model.1``, ``scaling_layer``), so the file loads name for name with
``torch.load(weights_only=True)``; no code of the package is imported or executed. Layers the
package builds but never uses (dropout before each head, the trunk's last max-pool and blur-pool)
are left out.

Distance of two images (v0.1): scale inputs per channel, take the five ReLU outputs of the trunk,
unit-normalize each feature vector over channels, square the difference, weight channels with
the layer's head (1x1 conv, no bias), average over space and sum over layers.

Trunk ([channels, side] for a 64 px input):
    slice1: conv 11x11 s1 p2 (3->64), blurpool, ReLU               -> relu1 [64, 30]
    slice2: maxpool 3 s1, blurpool, conv 5x5 p2 (64->192), ReLU     -> relu2 [192, 15]
    slice3: maxpool 3 s1, blurpool, conv 3x3 p1 (192->384), ReLU    -> relu3 [384, 8]
    slice4: conv 3x3 p1 (384->256), ReLU                            -> relu4 [256, 8]
    slice5: conv 3x3 p1 (256->256), ReLU                            -> relu5 [256, 8]
"""

from __future__ import annotations

import importlib.util
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from clipbridge.errors import MissingFileError
from clipbridge.io import ModelFileError, read_checkpoint, sha256_of
from clipbridge.metrics import perceptual_input

PACKAGE = "stlpips_pytorch"
WEIGHTS = "weights/vST0.0/alex_shift_tolerant.pth"
WEIGHTS_SHA256 = "b356b382f96010f77d085ee8343ecd9fd322d0a56e8de2b2d0549fafcad8b9ee"  # stlpips-pytorch 0.0.2
CHANNELS = (64, 192, 384, 256, 256)  # of relu1..relu5
SHIFT = (-0.030, -0.088, -0.188)     # LPIPS v0.1 input scaling: (x - shift) / scale, per RGB channel
SCALE = (0.458, 0.448, 0.450)


def package_weights() -> Path:
    """Path of ``alex_shift_tolerant.pth`` in the installed ``stlpips-pytorch`` (not imported),
    checked against the sha256 of the 0.0.2 wheel's file."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingFileError("package 'stlpips-pytorch' is not installed (see requirements-nodeps.txt)")
    path = Path(list(spec.submodule_search_locations)[0]) / WEIGHTS
    if not path.is_file():
        raise MissingFileError(f"{path}: ST-LPIPS weights missing from the installed package")
    actual = sha256_of(path)
    if actual != WEIGHTS_SHA256:
        raise ModelFileError(f"{path}: sha256 {actual}, expected {WEIGHTS_SHA256} (stlpips-pytorch 0.0.2)")
    return path


class BlurPool(nn.Module):
    """Anti-aliased downsampling, ``[N, C, H, W] -> [N, C, (H + 1) // 2 + 1, (W + 1) // 2 + 1]``.

    Reflection padding by 2 on every side, then the 3x3 binomial filter ``[1, 2, 1]^T [1, 2, 1] / 16``
    per channel with stride 2. ``filt`` is a buffer (it is in the weights file).
    """

    def __init__(self, channels: int):
        super().__init__()
        a = torch.tensor([1.0, 2.0, 1.0])
        k = a[:, None] * a[None, :]
        self.register_buffer("filt", (k / k.sum()).expand(channels, 1, 3, 3).contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), self.filt, stride=2, groups=x.shape[1])


def _slice(layers: dict[int, nn.Module]) -> nn.Sequential:
    """A Sequential whose children keep the package's global layer indices as names."""
    return nn.Sequential(OrderedDict((str(i), m) for i, m in layers.items()))


class ShiftTolerantAlexNet(nn.Module):
    """Anti-aliased AlexNet trunk, ``[N, 3, H, W] -> 5 ReLU maps [N, C_k, H_k, W_k]`` (module docstring)."""

    def __init__(self):
        super().__init__()
        relu = lambda: nn.ReLU(inplace=False)  # noqa: E731
        self.slice1 = _slice({0: nn.Conv2d(3, 64, 11, stride=1, padding=2), 1: BlurPool(64), 2: relu()})
        self.slice2 = _slice({3: nn.MaxPool2d(3, stride=1), 4: BlurPool(64),
                              5: nn.Conv2d(64, 192, 5, padding=2), 6: relu()})
        self.slice3 = _slice({7: nn.MaxPool2d(3, stride=1), 8: BlurPool(192),
                              9: nn.Conv2d(192, 384, 3, padding=1), 10: relu()})
        self.slice4 = _slice({11: nn.Conv2d(384, 256, 3, padding=1), 12: relu()})
        self.slice5 = _slice({13: nn.Conv2d(256, 256, 3, padding=1), 14: relu()})

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for s in (self.slice1, self.slice2, self.slice3, self.slice4, self.slice5):
            x = s(x)
            feats.append(x)
        return feats


class LinearHead(nn.Module):
    """LPIPS per-layer head: 1x1 conv, no bias, ``[N, C, h, w] -> [N, 1, h, w]``.

    Named ``model.1`` as in the file (``model.0`` was a dropout, identity at evaluation).
    """

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(OrderedDict([("1", nn.Conv2d(channels, 1, 1, bias=False))]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class ScalingLayer(nn.Module):
    """``x [N, 3, H, W] in [-1, 1] -> (x - shift) / scale`` (LPIPS v0.1 constants, buffers)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("shift", torch.tensor(SHIFT)[None, :, None, None])
        self.register_buffer("scale", torch.tensor(SCALE)[None, :, None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) / self.scale


def _unit(f: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Normalize each spatial feature vector to unit length over channels (LPIPS' eps)."""
    return f / (f.pow(2).sum(1, keepdim=True).sqrt() + eps)


class STLPIPS(nn.Module):
    """ST-LPIPS (AlexNet) distance, ``[N, 3, H, W] x2 in [-1, 1] -> [N]`` float32; eval, no grad.

    Same input policy as every LPIPS variant (:func:`clipbridge.metrics.perceptual_input`: the
    side clamped to 64-256 px by a bilinear antialiased resize).

    ``path``: the weights file; None = the installed package's (:func:`package_weights`). A file
    that is not this network's state dict raises :class:`~clipbridge.io.ModelFileError`, one
    line naming the file.
    """

    label = "ST-LPIPS"
    def __init__(self, path: Path | str | None = None):
        super().__init__()
        self.scaling_layer = ScalingLayer()
        self.net = ShiftTolerantAlexNet()
        for k, c in enumerate(CHANNELS):
            self.add_module(f"lin{k}", LinearHead(c))
        self.path = Path(path) if path is not None else package_weights()
        self._load(self.path)
        self.eval().requires_grad_(False)

    def _load(self, path: Path) -> None:
        """Load ``path`` name for name; keys, shapes and the fixed buffers must match exactly."""
        sd = read_checkpoint(path, what="ST-LPIPS state dict")
        own = self.state_dict()
        missing, extra = sorted(set(own) - set(sd)), sorted(set(sd) - set(own))
        if missing or extra:
            raise ModelFileError(f"{path}: not the ST-LPIPS AlexNet state dict "
                                 f"(missing keys {missing[:4]}, unexpected keys {extra[:4]})")
        for name, ref in own.items():
            val = sd[name]
            if not isinstance(val, torch.Tensor) or val.shape != ref.shape or not val.is_floating_point():
                found = tuple(val.shape) if isinstance(val, torch.Tensor) else type(val).__name__
                raise ModelFileError(f"{path}: '{name}' should be a float tensor {tuple(ref.shape)}, found {found}")
            if not torch.isfinite(val).all():
                raise ModelFileError(f"{path}: '{name}' has non-finite values")
            fixed = name.startswith("scaling_layer.") or name.endswith(".filt")
            if fixed and not torch.allclose(val.float(), ref, rtol=0, atol=1e-6):
                raise ModelFileError(f"{path}: fixed buffer '{name}' differs from the architecture's "
                                     "constants")
        self.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)

    def heads(self) -> list[LinearHead]:
        return [getattr(self, f"lin{k}") for k in range(len(CHANNELS))]

    @torch.no_grad()
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        assert x.shape == y.shape and x.ndim == 4 and x.shape[1] == 3, \
            f"images must be equal [N, 3, H, W], got {tuple(x.shape)} vs {tuple(y.shape)}"
        x, y = perceptual_input(x, y)
        n = x.shape[0]
        feats = self.net(self.scaling_layer(torch.cat([x, y])))
        dist = x.new_zeros(n)
        for f, head in zip(feats, self.heads()):
            d = (_unit(f[:n]) - _unit(f[n:])).pow(2)
            dist = dist + head(d).mean((1, 2, 3))
        return dist
