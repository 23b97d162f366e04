"""Offsets on groups of style layers: layers, groups, directions, units, edited images, the report's strip.

The seed report perturbed the W+ style vectors of a 512 px StyleGAN2 (16 vectors) group by group,
``w[:, a:b] += k * 0.03 * randn(1, b - a, 512)`` for steps ``k < 50``, looked at steps 0, 15, 30,
45, and described what changed: groups [0,4) head pose and hair, [4,8) facial features (and
wrinkles), [8,12) skin tone, [12,16) background colour. :func:`report_strip` reproduces that
experiment as it was (one face, one random offset per group, the report's step, step count and
shown steps); :func:`synthesize_edit` makes the edited images the study measures
(:mod:`clipbridge.edits.measures`).

Layers and groups
-----------------
A *layer* is one unit that can receive an offset. For StyleGAN2 generators it is one W+ vector
(``ws[:, i]``, ``i < num_ws``). A *group* is a named half-open range ``[start, stop)`` of layers,
read from params (``edits.groups[<generator>]``, ordered coarse to fine; :func:`groups_for`). The
groups are defined there and nowhere else.

**toRGB sharing.** In NVlabs StyleGAN2 (our :class:`~clipbridge.models.stylegan2.SynthesisNetwork`)
block ``b{res}`` reads ``ws[k : k + num_conv + num_torgb]`` and ``k`` then advances by ``num_conv``
only, so the vector of a block's toRGB is also the vector of the next block's first conv
(:meth:`~clipbridge.models.stylegan2.SynthesisNetwork.ws_slices`). At 64 px (10 vectors) index 0
drives b4.conv1; 1 b4.torgb + b8.conv0; 2 b8.conv1; 3 b8.torgb + b16.conv0; 4 b16.conv1; 5
b16.torgb + b32.conv0; 6 b32.conv1; 7 b32.torgb + b64.conv0; 8 b64.conv1; 9 b64.torgb. A group
that starts at a block's first conv therefore also re-colours the previous (coarser) block's
toRGB output, and toRGB is a modulated 1x1 convolution: its style re-mixes the block's features
into RGB, i.e. a colour change at that block's (coarse) scale. The report's groups have this
property too (index 13 feeds b256.torgb, 15 the final toRGB), which matters when reading "the
last group changes the background colour". The params groups of sg2-64 are by resolution: each
gives the shared vector to the block whose conv0 reads it, and the last group also holds the final
toRGB vector: ``4-8px`` [0,3), ``16px`` [3,5), ``32px`` [5,7), ``64px`` [7,10).

For the DCGAN (no W+), a layer is the per-channel scale after one BatchNorm
(:data:`clipbridge.models.dcgan.BN_LAYERS`), index ``i`` = resolution ``4 * 2**i``: 0 = 4 px,
1 = 8 px, 2 = 16 px, 3 = 32 px; ``synthesis(ws, channel_scales=...)`` multiplies that BatchNorm's
output, a style in the StyleSpace sense.

Offsets and units
-----------------
An offset direction ``d ~ N(0, I)`` is drawn per face, draw and group, independently for every
layer of the group (as the report's ``randn(1, 4, 512)``), and reused across magnitudes, so a
magnitude curve follows one direction. Magnitude ``m`` means:

- W+: ``ws[:, a:b] += m * s * d * sigma_w``, ``sigma_w [w_dim]`` = the per-dimension standard
  deviation of w over ``w_std_samples`` mapped z (:func:`w_std`): ``m`` is in units of the spread of w.
- DCGAN: ``scale_c = exp(m * s * d_c)``, so ``m * s`` is the standard deviation of the log
  channel scale.

``s`` is ``edits.unit_scale[<generator>]`` (absent = 1). The DCGAN has no distribution of styles
to take a unit from, and one log unit is far stronger than one sigma_w (in a pilot with ``s = 1``
the largest default magnitude left dlib no face in most edited DCGAN images). Its default
``s = 0.2`` was chosen so that the mean RMS image change per magnitude is of the same order as
sg2-64's (both are in ``metrics.json``: ``summary.<group>.<magnitude>.raw.rms``), which keeps the
report's strip and the measured magnitudes in a regime where faces survive the edit.

**The report's step.** The report added ``0.03 * randn`` in raw W units of its FFHQ generator. Raw
W units differ between generators (our 64 px student's w has another scale, the DCGAN has no w),
so we read ``step`` in the normalized units above: step ``k`` is magnitude ``0.03 k``, and the
report's shown steps 15 / 30 / 45 are magnitudes 0.45 / 0.90 / 1.35 (the default measured
magnitudes). This equals the report's raw offsets when ``sigma_w = 1`` in every dimension; each run records
the mean ``sigma_w`` of its generator (``metrics.json``: ``settings.w_std_mean``) so the raw step
of any generator is known.

Random streams
--------------
Each purpose draws from its own stream, ``SeedSequence(seed, spawn_key=(key,))`` with the keys
below, so changing one count (faces, draws, resamples) leaves the other streams unchanged.
"""

from __future__ import annotations

import numpy as np
import torch

from clipbridge import paths
from clipbridge.errors import BadValueError
from clipbridge.models.dcgan import BN_LAYERS, DCGANGenerator

STRIP_MAX_SIDE = 128            # strip images are area-downsampled to this for the figure
BN_RESOLUTIONS = sorted(BN_LAYERS)  # DCGAN layer index -> resolution (4, 8, 16, 32)

# Stream keys: SeedSequence(seed, spawn_key=(key,)) per purpose (module docstring, "Random streams").
STREAM_FACES, STREAM_DIRECTIONS, STREAM_STRIP, STREAM_BOOTSTRAP, STREAM_WSTD = range(5)


def is_dcgan(G: torch.nn.Module) -> bool:
    return isinstance(G, DCGANGenerator)


def num_layers(G: torch.nn.Module) -> int:
    """Layers that can take an offset: ``num_ws`` (W+) or the DCGAN's 4 BatchNorm scales."""
    return len(BN_RESOLUTIONS) if is_dcgan(G) else int(G.num_ws)


def space_name(G: torch.nn.Module) -> str:
    return "BatchNorm channel scales" if is_dcgan(G) else "W+"


def groups_for(cfg, generator: str, G: torch.nn.Module) -> dict[str, tuple[int, int]]:
    """Validated groups of ``generator`` from params: name -> (start, stop), in params order.

    Raises ValueError (one line naming params.yaml and the valid range) when the generator has
    no groups, fewer than two, or a range outside ``[0, num_layers(G)]``.
    """
    src = f"{paths.PARAMS}: edits.groups"
    n = num_layers(G)
    unit = "BatchNorm layer indices (0 = 4 px .. 3 = 32 px)" if is_dcgan(G) else "W+ indices"
    if generator not in cfg.groups:
        raise BadValueError(f"{src} has no entry for generator '{generator}'; available: {sorted(cfg.groups)} "
                         f"(give half-open ranges of {unit} within [0, {n}])")
    groups = cfg.groups[generator]
    if len(groups) < 2:
        raise BadValueError(f"{src}.{generator} needs at least 2 groups to compare, got {len(groups)}")
    out = {}
    for name, rng in groups.items():
        if len(rng) != 2 or not 0 <= rng[0] < rng[1] <= n:
            raise BadValueError(f"{src}.{generator}.{name} = {list(rng)} is not a non-empty half-open range of "
                             f"{unit}; valid: 0 <= start < stop <= {n}")
        out[name] = (int(rng[0]), int(rng[1]))
    return out




def layer_sizes(G: torch.nn.Module) -> list[int]:
    """Offset size of each layer: ``w_dim`` per W+ vector, channels per DCGAN BatchNorm."""
    if is_dcgan(G):
        return [G.main[BN_LAYERS[r]].num_features for r in BN_RESOLUTIONS]
    return [int(G.w_dim)] * int(G.num_ws)


def draw_direction(G: torch.nn.Module, n: int, group: tuple[int, int], generator: torch.Generator):
    """Unit-variance offset directions for ``n`` images (CPU, from ``generator``).

    W+: ``[n, stop - start, w_dim]`` float32 N(0, 1). DCGAN: list of ``[n, C_l]`` for each layer
    of the group.
    """
    sizes = layer_sizes(G)[group[0]:group[1]]
    if is_dcgan(G):
        return [torch.randn(n, c, generator=generator) for c in sizes]
    return torch.randn(n, group[1] - group[0], sizes[0], generator=generator)


def offset_ws(ws: torch.Tensor, group: tuple[int, int], direction: torch.Tensor, magnitude: float,
              w_std: torch.Tensor) -> torch.Tensor:
    """New ``ws`` with ``ws[:, a:b] += magnitude * direction * w_std``; other vectors untouched.

    ws: [N, num_ws, w_dim]; direction: [N, b - a, w_dim]; w_std: [w_dim]. Returns a new tensor on
    ``ws.device``.
    """
    a, b = group
    assert ws.ndim == 3 and direction.shape == (ws.shape[0], b - a, ws.shape[2]), \
        f"ws {tuple(ws.shape)} and direction {tuple(direction.shape)} do not fit group {group}"
    out = ws.clone()
    out[:, a:b] += magnitude * direction.to(ws.device, ws.dtype) * w_std.to(ws.device, ws.dtype)
    return out


def offset_scales(group: tuple[int, int], direction: list[torch.Tensor], magnitude: float,
                  device: torch.device | str = "cpu") -> dict[int, torch.Tensor]:
    """DCGAN channel scales ``{resolution: exp(magnitude * d) [N, C]}`` for the group's layers."""
    a, b = group
    assert len(direction) == b - a, f"{len(direction)} direction tensors for group {group}"
    return {BN_RESOLUTIONS[i]: torch.exp(magnitude * d.to(device)) for i, d in zip(range(a, b), direction)}


def offset_unit(G: torch.nn.Module, sigma: torch.Tensor | None, scale: float = 1.0):
    """What magnitude 1 means: W+ ``scale * sigma`` (``[w_dim]``, sigma = :func:`w_std`); DCGAN
    ``scale`` (the std of the log channel scale, a float)."""
    return float(scale) if is_dcgan(G) else sigma * scale


@torch.no_grad()
def synthesize_edit(G: torch.nn.Module, ws: torch.Tensor, group: tuple[int, int] | None = None, direction=None,
                    magnitude: float = 0.0, unit=None) -> torch.Tensor:
    """Images ``[N, 3, R, R]`` float32 of ``ws`` (``[N, num_ws, w_dim]``), optionally edited.

    With ``group``: the offset ``magnitude * unit * direction`` (:func:`draw_direction`,
    :func:`offset_unit`) on that group. StyleGAN2 runs with constant noise and unfused modulation
    (the same path for every batch size), so magnitude 0 reproduces the unedited image of the same
    batch bit for bit.

    Not :func:`clipbridge.bridge.evaluate.synthesize` (plain batched rendering of ws for scoring):
    this one applies the study's offsets (W+ vectors or DCGAN channel scales) and uses
    ``fused_modconv=False``, so an edited image and its unedited face differ only by the edit, never
    by the fused / unfused numerical path.
    """
    if is_dcgan(G):
        scales = None if group is None else offset_scales(group, direction, magnitude * unit, ws.device)
        return G.synthesis(ws, channel_scales=scales)
    if group is not None:
        ws = offset_ws(ws, group, direction, magnitude, unit)
    return G.synthesis(ws, noise_mode="const", fused_modconv=False)


def device_of(G: torch.nn.Module) -> torch.device:
    return next(G.parameters()).device


def stream(seed: int, key: int) -> torch.Generator:
    """CPU torch generator of stream ``key`` (``STREAM_*``) of ``seed``."""
    state = np.random.SeedSequence(seed, spawn_key=(key,)).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 ^ int(state[1]))


@torch.no_grad()
def w_std(G: torch.nn.Module, n: int, seed: int, batch: int = 256) -> torch.Tensor | None:
    """Per-dimension std ``[w_dim]`` of w over ``n`` mapped z (on G's device); None for the DCGAN."""
    if is_dcgan(G):
        return None
    device = device_of(G)
    gen = stream(seed, STREAM_WSTD)
    z = torch.randn(n, G.z_dim, generator=gen)
    w = torch.cat([G.mapping(z[i:i + batch].to(device), None)[:, 0] for i in range(0, n, batch)])
    return w.std(0)


# --------------------------------------------------------------------------------------------
# The report's strip


@torch.no_grad()
def report_strip(G: torch.nn.Module, ws: torch.Tensor, groups: dict[str, tuple[int, int]], step: float,
                 show: list[int], seed: int, unit) -> torch.Tensor:
    """The report's experiment: one face, one random direction per group, images at steps ``show``.

    ws: ``[1, num_ws, w_dim]`` (the face). Step ``k`` is magnitude ``k * step`` along the group's
    direction (drawn from the strip stream of ``seed``; ``unit``: :func:`offset_unit`). Returns
    ``[n_groups, len(show), 3, R, R]`` float32 on CPU; column ``k = 0`` is the unedited face.
    """
    assert ws.shape[0] == 1, f"the strip edits one face, got ws {tuple(ws.shape)}"
    gen = stream(seed, STREAM_STRIP)
    rows = []
    for group in groups.values():
        d = draw_direction(G, 1, group, gen)
        d = [t.expand(len(show), -1) for t in d] if is_dcgan(G) else d.expand(len(show), -1, -1)
        mags = torch.tensor([k * step for k in show], dtype=torch.float32)
        wsb = ws.expand(len(show), -1, -1)
        if is_dcgan(G):
            scales = {BN_RESOLUTIONS[i]: torch.exp(mags[:, None] * unit * t).to(ws.device)
                      for i, t in zip(range(*group), d)}
            img = G.synthesis(wsb, channel_scales=scales)
        else:
            a, b = group
            moved = wsb.clone()
            moved[:, a:b] += (mags[:, None, None] * d).to(ws.device) * unit
            img = G.synthesis(moved, noise_mode="const", fused_modconv=False)
        rows.append(img.float().cpu())
    return torch.stack(rows)

