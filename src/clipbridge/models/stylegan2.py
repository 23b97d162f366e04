"""StyleGAN2 generator in pure PyTorch, parameter-for-parameter compatible with NVlabs.

Architecture, parameter names and buffer names follow NVlabs stylegan2-ada-pytorch
(``training/networks.py``) and the StyleGAN2 networks of the stylegan3 repository, so an
NVlabs ``G_ema`` state dict copies into :class:`Generator` name for name (see
:mod:`clipbridge.models.nvlabs`). Only plain PyTorch ops are used: nothing is compiled.

References:
    Karras et al., "Analyzing and Improving the Image Quality of StyleGAN", CVPR 2020.
    Karras et al., "Training Generative Adversarial Networks with Limited Data", NeurIPS 2020.

Style vectors (W+). ``ws`` has shape ``[N, num_ws, w_dim]``. Block ``b{res}`` reads
``ws[:, k : k + num_conv + num_torgb]`` and ``k`` then advances by ``num_conv`` only, so a
block's toRGB layer shares its vector with the next block's first conv (every block has a
toRGB in the default 'skip' architecture, only the last one in 'orig' and 'resnet'). The 4x4
block has one conv, every other block two; only the last toRGB gets a vector of its own. Hence
``num_ws = 2 * log2(img_resolution) - 2``: 10 at 64 px, 14 at 256, 16 at 512, 18 at 1024.
:meth:`SynthesisNetwork.ws_slices` gives the range each block reads.
"""

from __future__ import annotations

import copy
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F

from clipbridge.io import ModelFileError, read_checkpoint, save_torch

# name -> (function, default gain); NVlabs bias_act semantics (lrelu slope 0.2).
_ACTIVATIONS = {
    "linear": (lambda x: x, 1.0),
    "relu": (F.relu, math.sqrt(2)),
    "lrelu": (lambda x: F.leaky_relu(x, 0.2), math.sqrt(2)),
}


# --------------------------------------------------------------------------------------------
# Ops


def bias_act(
    x: torch.Tensor,
    b: torch.Tensor | None,
    act: str = "linear",
    gain: float | None = None,
    clamp: float | None = None,
) -> torch.Tensor:
    """Add a per-channel bias (dim 1), apply ``act``, scale by ``gain``, clamp to +-``clamp``.

    x: [N, C, ...] float; b: [C] or None. ``gain`` None = the activation's default gain
    (sqrt(2) for relu/lrelu, 1 for linear); ``clamp`` None = no clamping.
    """
    func, default_gain = _activation(act)
    if b is not None:
        x = x + b.to(x.dtype).reshape([1, -1] + [1] * (x.ndim - 2))
    x = func(x)
    gain = default_gain if gain is None else gain
    if gain != 1:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


def _activation(act: str):
    if act not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {act!r}; available: {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[act]


def setup_filter(taps) -> torch.Tensor:
    """Separable FIR taps (e.g. [1, 3, 3, 1]) -> normalized 2-D filter [k, k] float32, sum 1."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    if f.ndim != 1 or f.numel() == 0:
        raise ValueError(f"resample_filter must be a non-empty list of taps, got {taps!r}")
    f = torch.outer(f, f)
    return f / f.sum()


def upfirdn2d(
    x: torch.Tensor,
    f: torch.Tensor,
    up: int = 1,
    padding: tuple[int, int, int, int] = (0, 0, 0, 0),
    gain: float = 1.0,
    flip_filter: bool = False,
) -> torch.Tensor:
    """Upsample by zero insertion, pad, and convolve each channel with the FIR filter ``f``.

    Semantics of NVlabs ``upfirdn2d`` without downsampling: insert ``up - 1`` zeros after every
    pixel, pad by ``padding = (x0, x1, y0, y1)`` (negative = crop), convolve with ``f``
    (a true convolution unless ``flip_filter``), and scale by ``gain``.
    x: [N, C, H, W] float; f: [kh, kw] float32. Returns [N, C, H', W'] with
    ``H' = H * up + y0 + y1 - kh + 1``.
    """
    n, c, h, w = x.shape
    if up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(n, c, h * up, w * up)
    x0, x1, y0, y1 = padding
    x = F.pad(x, [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])
    x = x[:, :, max(-y0, 0) : x.shape[2] - max(-y1, 0), max(-x0, 0) : x.shape[3] - max(-x1, 0)]
    f = f * gain
    if not flip_filter:
        f = f.flip([0, 1])
    weight = f.to(x.dtype)[None, None].expand(c, 1, *f.shape)
    return F.conv2d(x, weight, groups=c)


def upsample2d(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """2x FIR upsampling keeping the DC gain: x [N, C, H, W] -> [N, C, 2H, 2W]."""
    kh, kw = f.shape
    padding = ((kw + 1) // 2, (kw - 2) // 2, (kh + 1) // 2, (kh - 2) // 2)
    return upfirdn2d(x, f, up=2, padding=padding, gain=4)


def conv2d_up2(x: torch.Tensor, w: torch.Tensor, f: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """Convolution with 2x upsampling: a stride-2 transposed conv, then the FIR filter ``f``.

    Equals NVlabs ``conv2d_resample(up=2, padding=k // 2, flip_weight=False)``.
    x: [N, groups * I, H, W]; w: [groups * O, I, k, k] (odd k); f: [fh, fw] float32.
    Returns [N, groups * O, 2H, 2W].
    """
    out_channels, in_per_group, k, _ = w.shape
    if groups == 1:
        w = w.transpose(0, 1)
    else:
        w = w.reshape(groups, out_channels // groups, in_per_group, k, k).transpose(1, 2)
        w = w.reshape(groups * in_per_group, out_channels // groups, k, k)
    x = F.conv_transpose2d(x, w, stride=2, groups=groups)
    fh, fw = f.shape
    p = k // 2
    padding = (
        p + (fw + 1) // 2 - (k - 1),
        p + (fw - 2) // 2 - (k - 2),
        p + (fh + 1) // 2 - (k - 1),
        p + (fh - 2) // 2 - (k - 2),
    )
    return upfirdn2d(x, f, padding=padding, gain=4)


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Scale x so that its mean square along ``dim`` is 1."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    noise: torch.Tensor | None = None,
    up: int = 1,
    resample_filter: torch.Tensor | None = None,
    demodulate: bool = True,
    fused: bool = True,
) -> torch.Tensor:
    """StyleGAN2 modulated (and optionally demodulated) convolution, "same" padding.

    x: [N, I, H, W]; weight: [O, I, k, k] (odd k); styles: [N, I]; noise: broadcastable to
    [N, O, H*up, W*up] or None; up: 1 or 2 (then ``resample_filter`` [fh, fw] is required).
    ``fused`` runs one grouped convolution with per-sample weights (fast for inference);
    otherwise the activations are scaled before and after a shared-weight convolution
    (cheaper to differentiate). Returns [N, O, H*up, W*up] in x.dtype.
    """
    n = x.shape[0]
    out_channels, in_channels, k, _ = weight.shape
    if x.dtype == torch.float16 and demodulate:
        # Pre-normalize so that the per-sample weights cannot overflow in fp16.
        weight = weight * (1 / math.sqrt(in_channels * k * k) / weight.abs().amax(dim=[1, 2, 3], keepdim=True))
        styles = styles / styles.abs().amax(dim=1, keepdim=True)

    w = None
    dcoefs = None
    if demodulate or fused:
        w = weight.unsqueeze(0) * styles.reshape(n, 1, -1, 1, 1)  # [N, O, I, k, k]
    if demodulate:
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()  # [N, O]

    def conv(inp: torch.Tensor, wt: torch.Tensor, groups: int) -> torch.Tensor:
        if up == 1:
            return F.conv2d(inp, wt, padding=k // 2, groups=groups)
        return conv2d_up2(inp, wt, resample_filter, groups=groups)

    if not fused:
        x = x * styles.to(x.dtype).reshape(n, -1, 1, 1)
        x = conv(x, weight.to(x.dtype), 1)
        if demodulate:
            x = x * dcoefs.to(x.dtype).reshape(n, -1, 1, 1)
        return x if noise is None else x + noise.to(x.dtype)

    if demodulate:
        w = w * dcoefs.reshape(n, -1, 1, 1, 1)
    x = x.reshape(1, -1, *x.shape[2:])
    x = conv(x, w.reshape(-1, in_channels, k, k).to(x.dtype), n)
    x = x.reshape(n, -1, *x.shape[2:])
    return x if noise is None else x + noise.to(x.dtype)


# --------------------------------------------------------------------------------------------
# Layers


class FullyConnectedLayer(torch.nn.Module):
    """Linear layer with equalized learning rate (runtime weight gain ``lr_multiplier / sqrt(in)``)."""

    def __init__(self,
        in_features: int,               # Input size.
        out_features: int,              # Output size.
        bias: bool = True,              # Learn an additive bias?
        activation: str = "linear",     # 'linear', 'relu' or 'lrelu' (these two with gain sqrt(2)).
        lr_multiplier: float = 1.0,     # Learning-rate multiplier: weights are stored divided by it.
        bias_init: float = 0.0,         # Initial bias value.
    ):
        super().__init__()
        _activation(activation)
        self.activation = activation
        self.weight = torch.nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = torch.nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [N, in_features] -> [N, out_features], same dtype."""
        w = self.weight.to(x.dtype) * self.weight_gain
        b = None if self.bias is None else self.bias.to(x.dtype) * self.bias_gain
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act(x.matmul(w.t()), b, act=self.activation)


class Conv2dLayer(torch.nn.Module):
    """Plain equalized-lr convolution with 2x upsampling (the resnet skip path of a block)."""

    def __init__(self,
        in_channels: int,               # Input channels.
        out_channels: int,              # Output channels.
        kernel_size: int,               # Odd kernel width and height.
        bias: bool = True,              # Learn an additive bias?
        activation: str = "linear",     # 'linear', 'relu' or 'lrelu'.
        resample_filter=(1, 3, 3, 1),   # FIR taps of the upsampling low-pass filter.
        conv_clamp: float | None = None,  # Clamp outputs to +-X; None = no clamping.
    ):
        super().__init__()
        self.activation = activation
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)
        self.act_gain = _activation(activation)[1]
        self.weight = torch.nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels])) if bias else None

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        """x: [N, in_channels, H, W] -> [N, out_channels, 2H, 2W], scaled by ``gain``."""
        w = (self.weight * self.weight_gain).to(x.dtype)
        x = conv2d_up2(x, w, self.resample_filter)
        clamp = None if self.conv_clamp is None else self.conv_clamp * gain
        return bias_act(x, self.bias, act=self.activation, gain=self.act_gain * gain, clamp=clamp)


class MappingNetwork(torch.nn.Module):
    """z [N, z_dim] (+ label c [N, c_dim]) -> ws [N, num_ws, w_dim], with truncation."""

    def __init__(self,
        z_dim: int,                     # Latent (Z) size; 0 = no latent input.
        c_dim: int,                     # Label (C) size; 0 = unconditional.
        w_dim: int,                     # Intermediate latent (W) size.
        num_ws: int | None,             # Number of W vectors to broadcast to; None = return [N, w_dim].
        num_layers: int = 8,            # Number of fully connected layers.
        embed_features: int | None = None,  # Label embedding size; None = w_dim.
        layer_features: int | None = None,  # Hidden layer size; None = w_dim.
        activation: str = "lrelu",      # Hidden activation: 'linear', 'relu' or 'lrelu'.
        lr_multiplier: float = 0.01,    # Learning-rate multiplier of the layers (1 = plain).
        w_avg_beta: float | None = 0.995,  # Decay of the tracked W average; None = do not track.
    ):
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta
        embed_features = 0 if c_dim == 0 else (w_dim if embed_features is None else embed_features)
        layer_features = w_dim if layer_features is None else layer_features
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            layer = FullyConnectedLayer(features[idx], features[idx + 1], activation=activation,
                                        lr_multiplier=lr_multiplier)
            setattr(self, f"fc{idx}", layer)
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    @torch.no_grad()
    def track_w_avg(self, w: torch.Tensor) -> None:
        """Move ``w_avg`` towards the mean of ``w [N, w_dim]`` (decay ``w_avg_beta``; no-op when
        not tracked). Training calls it through :meth:`forward`; data-parallel training calls it
        with the w of the whole global batch."""
        if self.w_avg_beta is not None:
            self.w_avg.copy_(w.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))

    def forward(
        self,
        z: torch.Tensor | None,
        c: torch.Tensor | None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        update_w_avg: bool | None = None,
    ) -> torch.Tensor:
        """z: [N, z_dim] float, c: [N, c_dim] float or None -> ws [N, num_ws, w_dim] float32.

        ``truncation_psi`` pulls the ws towards ``w_avg`` (0 = all equal to ``w_avg``) for the
        first ``truncation_cutoff`` vectors (None = all). ``update_w_avg`` None = update the
        moving average in training mode only.
        """
        x = None
        if self.z_dim > 0:
            _check_shape(z, [None, self.z_dim], "z")
            x = normalize_2nd_moment(z.to(torch.float32))
        if self.c_dim > 0:
            _check_shape(c, [None, self.c_dim], "c")
            y = normalize_2nd_moment(self.embed(c.to(torch.float32)))
            x = y if x is None else torch.cat([x, y], dim=1)
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)

        if update_w_avg is None:
            update_w_avg = self.training
        if update_w_avg:
            self.track_w_avg(x)

        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat([1, self.num_ws, 1])
        if truncation_psi != 1:
            if self.w_avg_beta is None:
                raise ValueError("truncation needs w_avg, but this mapping has w_avg_beta=None")
            if self.num_ws is None or truncation_cutoff is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                x = torch.cat([self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi),
                               x[:, truncation_cutoff:]], dim=1)
        return x


class SynthesisLayer(torch.nn.Module):
    """Modulated 3x3 conv (optionally 2x upsampling) + noise + bias + activation."""

    def __init__(self,
        in_channels: int,               # Input channels.
        out_channels: int,              # Output channels.
        w_dim: int,                     # W size (input of the affine style layer).
        resolution: int,                # Output resolution of this layer.
        kernel_size: int = 3,           # Odd convolution kernel size.
        up: int = 1,                    # 1 or 2 (2 = upsample the input first).
        use_noise: bool = True,         # Add per-pixel noise (learned strength)?
        activation: str = "lrelu",      # 'linear', 'relu' or 'lrelu'.
        resample_filter=(1, 3, 3, 1),   # FIR taps of the upsampling low-pass filter.
        conv_clamp: float | None = None,  # Clamp outputs to +-X; None = no clamping.
    ):
        super().__init__()
        self.in_channels = in_channels
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.activation = activation
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.act_gain = _activation(activation)[1]
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = torch.nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))
            self.noise_strength = torch.nn.Parameter(torch.zeros([]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "const",
                fused_modconv: bool = True, gain: float = 1.0) -> torch.Tensor:
        """x: [N, in_channels, R/up, R/up], w: [N, w_dim] -> [N, out_channels, R, R].

        noise_mode: 'random' (fresh noise), 'const' (the stored ``noise_const``) or 'none'.
        """
        if noise_mode not in ("random", "const", "none"):
            raise ValueError(f"unknown noise_mode {noise_mode!r}; available: ['random', 'const', 'none']")
        in_res = self.resolution // self.up
        _check_shape(x, [None, self.in_channels, in_res, in_res], "x")
        styles = self.affine(w)
        noise = None
        if self.use_noise and noise_mode == "random":
            noise = torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device) * self.noise_strength
        elif self.use_noise and noise_mode == "const":
            noise = self.noise_const * self.noise_strength
        x = modulated_conv2d(x, self.weight, styles, noise=noise, up=self.up,
                             resample_filter=self.resample_filter, fused=fused_modconv)
        clamp = None if self.conv_clamp is None else self.conv_clamp * gain
        return bias_act(x, self.bias, act=self.activation, gain=self.act_gain * gain, clamp=clamp)


class ToRGBLayer(torch.nn.Module):
    """Modulated 1x1 conv without demodulation: features -> image channels."""

    def __init__(self,
        in_channels: int,               # Input channels.
        out_channels: int,              # Image channels.
        w_dim: int,                     # W size (input of the affine style layer).
        kernel_size: int = 1,           # Odd convolution kernel size.
        conv_clamp: float | None = None,  # Clamp outputs to +-X; None = no clamping.
    ):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = torch.nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused_modconv: bool = True) -> torch.Tensor:
        """x: [N, in_channels, R, R], w: [N, w_dim] -> [N, out_channels, R, R]."""
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused=fused_modconv)
        return bias_act(x, self.bias, clamp=self.conv_clamp)


class SynthesisBlock(torch.nn.Module):
    """One resolution level: (const | 2x-up conv0) -> conv1 -> toRGB, 'orig'/'skip'/'resnet'."""

    def __init__(self,
        in_channels: int,               # Input channels; 0 = first block (learned 4x4 constant).
        out_channels: int,              # Output channels.
        w_dim: int,                     # W size.
        resolution: int,                # Resolution of this block.
        img_channels: int,              # Image channels.
        is_last: bool,                  # Last block (always has a toRGB)?
        architecture: str = "skip",     # 'orig', 'skip' (toRGB at every block) or 'resnet'.
        resample_filter=(1, 3, 3, 1),   # FIR taps of the upsampling low-pass filter.
        conv_clamp: float | None = None,  # Clamp conv outputs to +-X; None = no clamping.
        use_fp16: bool = False,         # Run this block in float16 when on CUDA?
        **layer_kwargs,                 # SynthesisLayer arguments (kernel_size, use_noise, activation).
    ):
        if architecture not in ("orig", "skip", "resnet"):
            raise ValueError(f"unknown architecture {architecture!r}; available: ['orig', 'skip', 'resnet']")
        super().__init__()
        self.in_channels = in_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.is_last = is_last
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.num_conv = 0
        self.num_torgb = 0
        if in_channels == 0:
            self.const = torch.nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim=w_dim, resolution=resolution, up=2,
                                        resample_filter=resample_filter, conv_clamp=conv_clamp, **layer_kwargs)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim=w_dim, resolution=resolution,
                                    resample_filter=resample_filter, conv_clamp=conv_clamp, **layer_kwargs)
        self.num_conv += 1
        if is_last or architecture == "skip":
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp)
            self.num_torgb += 1
        if in_channels != 0 and architecture == "resnet":
            self.skip = Conv2dLayer(in_channels, out_channels, kernel_size=1, bias=False,
                                    resample_filter=resample_filter)

    def forward(self, x: torch.Tensor | None, img: torch.Tensor | None, ws: torch.Tensor,
                noise_mode: str = "const", fused_modconv: bool | None = None, force_fp32: bool = False):
        """Run the block.

        x: [N, in_channels, R/2, R/2] or None for the first block; img: [N, img_channels, R/2, R/2]
        float32 or None; ws: [N, num_conv + num_torgb, w_dim]. ``fused_modconv`` None = fused in
        eval mode for batch 1, or on CUDA in float32 (NVlabs fuses in eval mode whenever float32;
        on CPU a batch runs faster unfused, same result). float16 is used only on CUDA with
        ``use_fp16`` and not ``force_fp32``. Returns (x [N, out_channels, R, R], img
        [N, img_channels, R, R] float32 or None).
        """
        _check_shape(ws, [None, self.num_conv + self.num_torgb, self.w_dim], "ws")
        w_iter = iter(ws.unbind(dim=1))
        fp16 = self.use_fp16 and not force_fp32 and ws.device.type == "cuda"
        dtype = torch.float16 if fp16 else torch.float32
        if fused_modconv is None:
            on_gpu_fp32 = ws.device.type == "cuda" and dtype == torch.float32
            fused_modconv = not self.training and (ws.shape[0] == 1 or on_gpu_fp32)
        layer_args = dict(noise_mode=noise_mode, fused_modconv=fused_modconv)

        if self.in_channels == 0:
            x = self.const.to(dtype).unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])
            x = self.conv1(x, next(w_iter), **layer_args)
        else:
            _check_shape(x, [None, self.in_channels, self.resolution // 2, self.resolution // 2], "x")
            x = x.to(dtype)
            if self.architecture == "resnet":
                y = self.skip(x, gain=math.sqrt(0.5))
                x = self.conv0(x, next(w_iter), **layer_args)
                x = self.conv1(x, next(w_iter), gain=math.sqrt(0.5), **layer_args)
                x = y + x
            else:
                x = self.conv0(x, next(w_iter), **layer_args)
                x = self.conv1(x, next(w_iter), **layer_args)

        if img is not None:
            img = upsample2d(img, self.resample_filter)
        if self.is_last or self.architecture == "skip":
            y = self.torgb(x, next(w_iter), fused_modconv=fused_modconv).to(torch.float32)
            img = y if img is None else img + y
        return x, img


class SynthesisNetwork(torch.nn.Module):
    """ws [N, num_ws, w_dim] -> image [N, img_channels, R, R] float32, roughly in [-1, 1]."""

    def __init__(self,
        w_dim: int,                     # W size.
        img_resolution: int,            # Output resolution, a power of two >= 4.
        img_channels: int,              # Image channels.
        channel_base: int = 32768,      # Channels at resolution r are min(channel_base // r, channel_max).
        channel_max: int = 512,         # Maximum number of channels in any layer.
        num_fp16_res: int = 0,          # Run the N highest resolutions in float16 (CUDA only; ignored on CPU).
        **block_kwargs,                 # SynthesisBlock/SynthesisLayer arguments: architecture,
                                        # resample_filter, conv_clamp, kernel_size, use_noise, activation.
    ):
        if img_resolution < 4 or img_resolution & (img_resolution - 1):
            raise ValueError(f"img_resolution must be a power of two >= 4, got {img_resolution}")
        super().__init__()
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        log2 = int(math.log2(img_resolution))
        self.block_resolutions = [2**i for i in range(2, log2 + 1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        if channels[img_resolution] < 1:
            raise ValueError(f"channel_base={channel_base} gives no channels at {img_resolution} px; "
                             f"need channel_base >= img_resolution")
        fp16_resolution = max(2 ** (log2 + 1 - num_fp16_res), 8)
        self.num_ws = 0
        for res in self.block_resolutions:
            is_last = res == img_resolution
            block = SynthesisBlock(channels[res // 2] if res > 4 else 0, channels[res], w_dim=w_dim,
                                   resolution=res, img_channels=img_channels, is_last=is_last,
                                   use_fp16=res >= fp16_resolution, **block_kwargs)
            self.num_ws += block.num_conv + (block.num_torgb if is_last else 0)
            setattr(self, f"b{res}", block)

    def ws_slices(self) -> dict[int, tuple[int, int]]:
        """Block resolution -> half-open range (start, stop) of the ws that block reads.

        Consecutive ranges overlap by one: a block's toRGB shares its vector with the next
        block's first conv.
        """
        slices, k = {}, 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            slices[res] = (k, k + block.num_conv + block.num_torgb)
            k += block.num_conv
        return slices

    def forward(self, ws: torch.Tensor, noise_mode: str = "const", fused_modconv: bool | None = None,
                force_fp32: bool = False) -> torch.Tensor:
        """ws: [N, num_ws, w_dim] float -> image [N, img_channels, R, R] float32.

        noise_mode: 'const' (deterministic, the default), 'random' or 'none'.
        """
        _check_shape(ws, [None, self.num_ws, self.w_dim], "ws")
        ws = ws.to(torch.float32)
        x = img = None
        for res, (start, stop) in self.ws_slices().items():
            x, img = getattr(self, f"b{res}")(x, img, ws[:, start:stop], noise_mode=noise_mode,
                                              fused_modconv=fused_modconv, force_fp32=force_fp32)
        return img


class Generator(torch.nn.Module):
    """StyleGAN2 generator: ``mapping`` (z, c -> ws) followed by ``synthesis`` (ws -> image)."""

    def __init__(self,
        z_dim: int,                     # Latent (Z) size.
        c_dim: int,                     # Label (C) size; 0 = unconditional.
        w_dim: int,                     # Intermediate latent (W) size.
        img_resolution: int,            # Output resolution, a power of two >= 4.
        img_channels: int,              # Image channels.
        mapping_kwargs: dict | None = None,    # MappingNetwork arguments; None = its defaults.
        synthesis_kwargs: dict | None = None,  # SynthesisNetwork arguments; None = its defaults.
    ):
        super().__init__()
        mapping_kwargs = dict(mapping_kwargs or {})
        synthesis_kwargs = dict(synthesis_kwargs or {})
        self.init_kwargs = copy.deepcopy(dict(
            z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=img_resolution,
            img_channels=img_channels, mapping_kwargs=mapping_kwargs, synthesis_kwargs=synthesis_kwargs))
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.synthesis = SynthesisNetwork(w_dim=w_dim, img_resolution=img_resolution,
                                          img_channels=img_channels, **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws,
                                      **mapping_kwargs)

    @property
    def w_avg(self) -> torch.Tensor:
        """``[w_dim]`` running mean of the mapping's output (``mapping.w_avg``, the NVlabs name)."""
        return self.mapping.w_avg

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, noise_mode: str = "const",
                fused_modconv: bool | None = None, force_fp32: bool = False) -> torch.Tensor:
        """z: [N, z_dim] float, c: [N, c_dim] or None -> image [N, img_channels, R, R] float32."""
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, noise_mode=noise_mode, fused_modconv=fused_modconv, force_fp32=force_fp32)


def _check_shape(t, shape: list, name: str) -> None:
    """Raise ValueError unless tensor ``t`` has ``shape`` (None entries match any size)."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name}: expected a tensor of shape {shape}, got {type(t).__name__}")
    if t.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, t.shape)):
        raise ValueError(f"{name}: expected shape {shape}, got {list(t.shape)}")


# --------------------------------------------------------------------------------------------
# Checkpoints


def _short_list(items, limit: int = 6) -> str:
    items = sorted(items)
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def _shape_of(value) -> str:
    return str(list(value.shape)) if isinstance(value, torch.Tensor) else f"<{type(value).__name__}>"


def copy_state_strict(module: torch.nn.Module, state: dict, source: str | os.PathLike) -> None:
    """Copy ``state`` (name -> tensor) into ``module``'s parameters and buffers, all or nothing.

    The key sets must be equal and every shape must match; otherwise raises
    :class:`~clipbridge.io.ModelFileError` naming ``source`` and the missing, unexpected and mismatched keys.
    Values are cast to the module's dtypes.
    """
    own = module.state_dict()
    missing = own.keys() - state.keys()
    unexpected = state.keys() - own.keys()
    mismatched = [f"{k} {_shape_of(state[k])} vs {list(own[k].shape)}"
                  for k in own.keys() & state.keys()
                  if not isinstance(state[k], torch.Tensor) or state[k].shape != own[k].shape]
    if missing or unexpected or mismatched:
        parts = [f"{label} [{_short_list(keys)}]" for label, keys in
                 (("missing", missing), ("unexpected", unexpected), ("shape mismatch (file vs model)", mismatched))
                 if keys]
        raise ModelFileError(f"{source}: weights do not fit the architecture: {'; '.join(parts)}")
    with torch.no_grad():
        for name, tensor in own.items():
            tensor.copy_(state[name])


def save_checkpoint(path: str | os.PathLike, G: Generator, **extra) -> None:
    """Write ``{state_dict, init_kwargs, **extra}`` to ``path`` atomically (temp file + rename).

    ``extra`` must hold only types that ``torch.load(weights_only=True)`` accepts (tensors,
    numbers, strings, lists, tuples, dicts), e.g. ``params=...``, ``step=...``.
    """
    clash = {"state_dict", "init_kwargs"} & extra.keys()
    if clash:
        raise ValueError(f"extra keys {sorted(clash)} are reserved")
    path = Path(path)
    payload = {"state_dict": {k: v.detach().cpu() for k, v in G.state_dict().items()},
               "init_kwargs": copy.deepcopy(G.init_kwargs), **extra}
    save_torch(payload, path)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[Generator, dict]:
    """Load a file written by :func:`save_checkpoint` -> (Generator in eval mode, payload dict).

    Reads it with :func:`clipbridge.io.read_checkpoint` (``torch.load(weights_only=True)``: the
    file cannot run code). The payload holds ``state_dict``, ``init_kwargs`` and the extras.
    Raises :class:`~clipbridge.io.ModelFileError` (one line naming the file) for a missing,
    unreadable or malformed file or mismatched weights.
    """
    path = Path(path)
    payload = read_checkpoint(path, required=("state_dict", "init_kwargs"), map_location=map_location)
    try:
        G = Generator(**payload["init_kwargs"])
    except (TypeError, ValueError) as e:
        raise ModelFileError(f"{path}: init_kwargs do not build a Generator ({e})") from e
    copy_state_strict(G, payload["state_dict"], path)
    return G.to(map_location).eval(), payload
