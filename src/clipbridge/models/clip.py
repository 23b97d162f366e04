"""CLIP image encoder wrapper: images in [-1, 1] of any size -> L2-normalized embeddings.

Preprocessing is the model's own (resize to its input size, normalize with the weights'
mean/std), done with differentiable tensor ops so that losses can flow through the encoder.
The encoder is frozen (eval mode, no gradients to its parameters).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ClipEncoder(nn.Module):
    """Frozen CLIP image (and, when meaningful, text) encoder.

    ``encode_image(x [N, 3, H, W] in [-1, 1]) -> [N, embed_dim]`` L2-normalized float32.
    """

    def __init__(self, model: nn.Module, image_size: int, mean, std, label: str, has_text: bool, tokenizer=None):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.image_size = image_size
        self.label = label                  # human-readable name used in every table and figure
        self.has_text = has_text            # False for a placeholder whose text tower is meaningless
        self.tokenizer = tokenizer
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def train(self, mode: bool = True):
        return super().train(False)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, 3, H, W]`` in [-1, 1] -> the model's normalized ``[N, 3, S, S]`` (differentiable)."""
        assert x.ndim == 4 and x.shape[1] == 3, f"images must be [N, 3, H, W], got {tuple(x.shape)}"
        h, w = x.shape[-2:]
        if h != w:  # centre crop to a square, as CLIP's own transform does after a shortest-side resize
            s = min(h, w)
            top, left = (h - s) // 2, (w - s) // 2
            x = x[..., top:top + s, left:left + s]
        if x.shape[-1] != self.image_size:
            x = F.interpolate(x, size=self.image_size, mode="bicubic", align_corners=False,
                              antialias=x.shape[-1] > self.image_size)
        x = (x + 1) / 2
        return (x - self.mean) / self.std

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model.encode_image(self.preprocess(x)).float(), dim=-1)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        if not self.has_text:
            raise ValueError(f"encoder '{self.label}' has no meaningful text tower")
        tokens = self.tokenizer(texts).to(self.mean.device)
        return F.normalize(self.model.encode_text(tokens).float(), dim=-1)
