"""CLIP image encoder wrapper: images in [-1, 1] of any size -> L2-normalized embeddings.

Preprocessing is the model's own (resize to its input size, normalize with the weights'
mean/std), done with differentiable tensor ops so that losses can flow through the encoder.
The encoder is frozen (eval mode, no gradients to its parameters).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


def preprocess(x: torch.Tensor, size: int, mean, std, interpolation: str = "bicubic") -> torch.Tensor:
    """CLIP's image transform as differentiable tensor ops.

    ``x [N, 3, H, W]`` float in [-1, 1], any size -> ``[N, 3, size, size]`` normalized with
    ``mean``/``std`` (RGB in [0, 1]): centre crop to a square (CLIP's shortest-side resize then
    centre crop), resize with ``interpolation`` (antialiased when shrinking), normalize.
    """
    if x.ndim != 4 or x.shape[1] != 3 or not x.is_floating_point():
        raise ValueError(f"images must be float [N, 3, H, W] in [-1, 1], got {tuple(x.shape)} {x.dtype}")
    h, w = x.shape[-2:]
    if h != w:
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        x = x[..., top:top + s, left:left + s]
    x = (x + 1) / 2
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode=interpolation, align_corners=False,
                          antialias=x.shape[-1] > size)
    mean = torch.as_tensor(mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.as_tensor(std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


TextEncoder = Callable[[nn.Module, list[str]], torch.Tensor]
"""``(model, texts) -> [N, embed_dim]`` L2-normalized float32: a CLIP's text path, given to
:class:`ClipEncoder` by whoever builds it (:mod:`clipbridge.registry`)."""


def open_clip_text(tokenizer) -> TextEncoder:
    """The text path of an open_clip model: ``tokenizer`` (list[str] -> int64 tokens), then
    ``model.encode_text``, L2-normalized."""
    def encode(model: nn.Module, texts: list[str]) -> torch.Tensor:
        tokens = tokenizer(texts).to(model.logit_scale.device)
        return F.normalize(model.encode_text(tokens).float(), dim=-1)
    return encode


class ClipEncoder(nn.Module):
    """Frozen CLIP image (and, when meaningful, text) encoder.

    ``encode_image(x [N, 3, H, W] in [-1, 1]) -> [N, embed_dim]`` L2-normalized float32.
    ``encode_text(texts) -> [N, embed_dim]`` L2-normalized float32, through ``text_encoder``
    (``text_encoder(model, texts)``); None for a placeholder whose text tower is meaningless.
    """

    def __init__(self, model: nn.Module, image_size: int, mean, std, label: str,
                 text_encoder: TextEncoder | None, interpolation: str = "bicubic"):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.image_size = image_size
        self.interpolation = interpolation
        self.label = label                  # human-readable name used in every table and figure
        self.text_encoder = text_encoder
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    @property
    def has_text(self) -> bool:
        """False for a placeholder whose text tower is meaningless."""
        return self.text_encoder is not None

    def train(self, mode: bool = True):
        return super().train(False)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, 3, H, W]`` in [-1, 1] -> the model's normalized ``[N, 3, S, S]`` (differentiable)."""
        return preprocess(x, self.image_size, self.mean.flatten(), self.std.flatten(), self.interpolation)

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model.encode_image(self.preprocess(x)).float(), dim=-1)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        if self.text_encoder is None:
            raise ValueError(f"encoder '{self.label}' has no meaningful text tower")
        return self.text_encoder(self.model, texts).float()
