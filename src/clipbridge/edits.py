"""Layer-group study: what each group of style layers controls, reproduced and measured.

The seed report perturbed the W+ style vectors of a 512 px StyleGAN2 (16 vectors) group by group,
``w[:, a:b] += k * 0.03 * randn(1, b - a, 512)`` for steps ``k < 50``, looked at steps 0, 15, 30,
45, and described what changed: groups [0,4) head pose and hair, [4,8) facial features (and
wrinkles), [8,12) skin tone, [12,16) background colour. This module

1. reproduces that experiment as it was (:func:`report_strip`: one face, one random offset per
   group, the report's step, step count and shown steps);
2. measures it (:func:`measure`): many faces x seeded offset draws x groups x offset magnitudes,
   each edited image compared with its unedited face (:data:`MEASURES`), summarized per
   (group, magnitude) with 95% bootstrap CIs over faces (:func:`summarize`);
3. tests each of the report's four claims on those numbers with one written rule
   (:data:`CLAIMS`, :func:`judge`, rule text :data:`VERDICT_RULE`).

Layers and groups
-----------------
A *layer* is one unit that can receive an offset. For StyleGAN2 generators it is one W+ vector
(``ws[:, i]``, ``i < num_ws``). A *group* is a named half-open range ``[start, stop)`` of layers,
read from params (``edits.groups[<generator>]``, ordered coarse to fine).

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
last group changes the background colour". Our by-resolution groups (:func:`resolution_groups`)
give the shared vector to the block whose conv0 reads it; the last group also holds the final
toRGB vector. At 64 px: ``4-8px`` [0,3), ``16px`` [3,5), ``32px`` [5,7), ``64px`` [7,10).

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
  deviation of w over ``w_std_samples`` mapped z: ``m`` is in units of the spread of w.
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

Measures
--------
See :data:`MEASURES`. Face measures need dlib to find a face in both the unedited and the edited
image; rows where it does not are excluded from those measures and counted (``n_excluded``).
Colours are mean sRGB of a region converted to CIELAB (D65) and compared as Delta E 1976. The
low-frequency share of a change ``delta = edited - unedited`` is
``||g * delta||^2 / ||delta||^2`` with ``g`` a circular Gaussian low-pass of standard deviation
``LOWPASS_SIGMA * image side`` pixels (applied in the Fourier domain), whose half-power frequency
is ``sqrt(ln 2) / (2 pi LOWPASS_SIGMA) = 4.2`` cycles per image: a uniform colour shift has share
1, a pose change of a sharp face much less.

Verdicts
--------
Each claim (:data:`CLAIMS`) names a group by position and the measures it is about. Groups are
ranked by each measure's change per unit of RMS pixel change (``per_rms`` in :func:`summarize`:
a difference between two magnitudes, so the measurement floor cancels), and the rule
:data:`VERDICT_RULE` turns the ranking and the 95% CIs into supported / mixed / not supported.
The same claims judged on the raw means are kept as ``verdicts_raw``.

Everything here is importable without dlib, lpips or matplotlib (loaded where used), so
:mod:`clipbridge.config` can import :class:`EditsConfig` cheaply.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

import numpy as np
import torch

from clipbridge import paths
from clipbridge.models.dcgan import BN_LAYERS, DCGANGenerator

LOWPASS_SIGMA = 1 / 32          # Gaussian low-pass sigma / image side (half power at 4.2 cycles/image)
LPIPS_MIN_SIDE = 64             # AlexNet needs >= 64 px: smaller images are upsampled for LPIPS
LPIPS_MAX_SIDE = 256            # the protocol's LPIPS size: larger images are downsampled
STRIP_MAX_SIDE = 128            # strip images are area-downsampled to this for the figure
BN_RESOLUTIONS = sorted(BN_LAYERS)  # DCGAN layer index -> resolution (4, 8, 16, 32)

# Streams: SeedSequence(seed, spawn_key=(key,)) per purpose, so changing one count leaves the others.
_FACES, _DIRECTIONS, _STRIP, _BOOTSTRAP, _WSTD = range(5)

DEFAULT_GROUPS: dict[str, dict[str, list[int]]] = {
    # W+ index ranges [start, stop), coarse to fine; toRGB sharing: module docstring.
    "sg2-64": {"4-8px": [0, 3], "16px": [3, 5], "32px": [5, 7], "64px": [7, 10]},
    "sg2-ffhq-512": {"ws0-4": [0, 4], "ws4-8": [4, 8], "ws8-12": [8, 12], "ws12-16": [12, 16]},
    # DCGAN BatchNorm layers: 0 = 4 px, 1 = 8 px, 2 = 16 px, 3 = 32 px.
    "dcgan64": {"4px": [0, 1], "8px": [1, 2], "16px": [2, 3], "32px": [3, 4]},
}
DEFAULT_UNIT_SCALE: dict[str, float] = {"dcgan64": 0.2}  # module docstring, "Offsets and units"


@dataclass(frozen=True)
class EditsConfig:
    """The layer-group study (params.yaml section ``edits``). Units: module docstring."""

    seed: int = 0                       # faces, offset directions, strip, bootstrap (separate streams)
    n_faces: int = 64                   # faces per generator; only z whose unedited face dlib finds
    n_draws: int = 2                    # random offset directions per face and group
    magnitudes: list[float] = field(default_factory=lambda: [0.45, 0.9, 1.35])  # offsets, in sigma_w
                                        # (W+) or log channel scale (DCGAN); = the report's steps 15/30/45
    verdict_magnitude: float | None = None  # magnitude the claims are judged at; None = the largest
    w_std_samples: int = 2048           # z mapped to estimate the per-dimension std of w (W+ unit)
    batch: int = 64                     # images per generator / measurement call
    bootstrap: int = 2000               # bootstrap resamples of faces for the 95% CIs
    lpips_seed: int = 0                 # seed of LPIPS-rand's random AlexNet trunk (offline profile)
    strip_step: float = 0.03            # the report's step, read in the units of `magnitudes`
    strip_steps: int = 50               # the report's step count
    strip_show: list[int] = field(default_factory=lambda: [0, 15, 30, 45])  # steps shown (report)
    groups: dict[str, dict[str, list[int]]] = field(default_factory=lambda: {
        g: {k: list(v) for k, v in d.items()} for g, d in DEFAULT_GROUPS.items()})
                                        # generator -> group name -> [start, stop) layers, coarse to fine
    unit_scale: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_UNIT_SCALE))
                                        # generator -> offset units per magnitude unit; absent = 1

    def __post_init__(self) -> None:
        src = f"{paths.PARAMS}: edits"
        checks = [
            (self.n_faces >= 1, f"{src}.n_faces must be >= 1, got {self.n_faces}"),
            (self.n_draws >= 1, f"{src}.n_draws must be >= 1, got {self.n_draws}"),
            (self.batch >= 1, f"{src}.batch must be >= 1, got {self.batch}"),
            (self.bootstrap >= 1, f"{src}.bootstrap must be >= 1, got {self.bootstrap}"),
            (self.w_std_samples >= 2, f"{src}.w_std_samples must be >= 2, got {self.w_std_samples}"),
            (len(self.magnitudes) > 0 and all(m >= 0 for m in self.magnitudes),
             f"{src}.magnitudes must be a non-empty list of numbers >= 0, got {self.magnitudes}"),
            (len(set(self.magnitudes)) == len(self.magnitudes), f"{src}.magnitudes has duplicates: {self.magnitudes}"),
            (self.verdict_magnitude is None or self.verdict_magnitude in self.magnitudes,
             f"{src}.verdict_magnitude {self.verdict_magnitude} is not one of magnitudes {self.magnitudes}"),
            (self.strip_steps >= 1 and len(self.strip_show) > 0
             and all(0 <= k < self.strip_steps for k in self.strip_show),
             f"{src}.strip_show {self.strip_show} must be non-empty steps in [0, strip_steps={self.strip_steps})"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)
        for gen, scale in self.unit_scale.items():
            if not scale > 0:
                raise ValueError(f"{src}.unit_scale.{gen} must be > 0, got {scale}")
        for gen, groups in self.groups.items():
            for name, rng in groups.items():
                if len(rng) != 2 or not 0 <= rng[0] < rng[1]:
                    raise ValueError(f"{src}.groups.{gen}.{name} = {rng} is not a half-open range "
                                     f"[start, stop) with 0 <= start < stop")

    @property
    def judged_magnitude(self) -> float:
        return max(self.magnitudes) if self.verdict_magnitude is None else self.verdict_magnitude

    def scale_of(self, generator: str) -> float:
        return float(self.unit_scale.get(generator, 1.0))


# --------------------------------------------------------------------------------------------
# Layers, groups, offsets


def is_dcgan(G: torch.nn.Module) -> bool:
    return isinstance(G, DCGANGenerator)


def num_layers(G: torch.nn.Module) -> int:
    """Layers that can take an offset: ``num_ws`` (W+) or the DCGAN's 4 BatchNorm scales."""
    return len(BN_RESOLUTIONS) if is_dcgan(G) else int(G.num_ws)


def space_name(G: torch.nn.Module) -> str:
    return "BatchNorm channel scales" if is_dcgan(G) else "W+"


def groups_for(cfg: EditsConfig, generator: str, G: torch.nn.Module) -> dict[str, tuple[int, int]]:
    """Validated groups of ``generator`` from params: name -> (start, stop), in params order.

    Raises ValueError (one line naming params.yaml and the valid range) when the generator has
    no groups, fewer than two, or a range outside ``[0, num_layers(G)]``.
    """
    src = f"{paths.PARAMS}: edits.groups"
    n = num_layers(G)
    unit = "BatchNorm layer indices (0 = 4 px .. 3 = 32 px)" if is_dcgan(G) else "W+ indices"
    if generator not in cfg.groups:
        raise ValueError(f"{src} has no entry for generator '{generator}'; available: {sorted(cfg.groups)} "
                         f"(give half-open ranges of {unit} within [0, {n}])")
    groups = cfg.groups[generator]
    if len(groups) < 2:
        raise ValueError(f"{src}.{generator} needs at least 2 groups to compare, got {len(groups)}")
    out = {}
    for name, rng in groups.items():
        if len(rng) != 2 or not 0 <= rng[0] < rng[1] <= n:
            raise ValueError(f"{src}.{generator}.{name} = {list(rng)} is not a non-empty half-open range of "
                             f"{unit}; valid: 0 <= start < stop <= {n}")
        out[name] = (int(rng[0]), int(rng[1]))
    return out


def resolution_groups(G: torch.nn.Module, n_groups: int = 4) -> dict[str, tuple[int, int]]:
    """W+ groups by synthesis block, coarsest blocks merged until ``n_groups`` remain.

    Each block gets the vectors its convolutions read (the vector shared with the previous block's
    toRGB goes to the block whose conv0 reads it); the last block also gets the final toRGB
    vector. Names are ``'{res}px'`` or ``'{lo}-{hi}px'``. At 64 px: 4-8px [0,3), 16px [3,5),
    32px [5,7), 64px [7,10) (the params default of sg2-64).
    """
    slices = G.synthesis.ws_slices()
    blocks = []  # [(resolutions, start, stop)]
    for res, (start, stop) in slices.items():
        num_conv = getattr(G.synthesis, f"b{res}").num_conv
        blocks.append(([res], start, start + num_conv))
    blocks[-1] = (blocks[-1][0], blocks[-1][1], G.num_ws)
    while len(blocks) > n_groups:
        (r0, a, _), (r1, _, b) = blocks[0], blocks[1]
        blocks[:2] = [(r0 + r1, a, b)]
    return {(f"{r[0]}px" if len(r) == 1 else f"{r[0]}-{r[-1]}px"): (a, b) for r, a, b in blocks}


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
def synthesize(G: torch.nn.Module, ws: torch.Tensor, group: tuple[int, int] | None = None, direction=None,
               magnitude: float = 0.0, unit=None) -> torch.Tensor:
    """Images ``[N, 3, R, R]`` float32 of ``ws`` (``[N, num_ws, w_dim]``), optionally edited.

    With ``group``: the offset ``magnitude * unit * direction`` (:func:`draw_direction`,
    :func:`offset_unit`) on that group. StyleGAN2 runs with constant noise and unfused modulation
    (the same path for every batch size), so magnitude 0 reproduces the unedited image of the same
    batch bit for bit.
    """
    if is_dcgan(G):
        scales = None if group is None else offset_scales(group, direction, magnitude * unit, ws.device)
        return G.synthesis(ws, channel_scales=scales)
    if group is not None:
        ws = offset_ws(ws, group, direction, magnitude, unit)
    return G.synthesis(ws, noise_mode="const", fused_modconv=False)


def _device(G: torch.nn.Module) -> torch.device:
    return next(G.parameters()).device


def _stream(seed: int, key: int) -> torch.Generator:
    state = np.random.SeedSequence(seed, spawn_key=(key,)).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 ^ int(state[1]))


@torch.no_grad()
def w_std(G: torch.nn.Module, n: int, seed: int, batch: int = 256) -> torch.Tensor | None:
    """Per-dimension std ``[w_dim]`` of w over ``n`` mapped z (on G's device); None for the DCGAN."""
    if is_dcgan(G):
        return None
    device = _device(G)
    gen = _stream(seed, _WSTD)
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
    gen = _stream(seed, _STRIP)
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


# --------------------------------------------------------------------------------------------
# Measurements


class Measure(NamedTuple):
    key: str
    label: str          # short label for tables and figures
    unit: str
    digits: int
    face: bool          # needs a dlib face in both images
    effect: bool        # an effect size (normalized by the RMS change for rankings)


MEASURES: tuple[Measure, ...] = (
    # mean 68-landmark displacement / inter-ocular distance of the unedited face; then the same
    # after a least-squares similarity alignment (in-plane pose and size removed: feature shape)
    Measure("geometry", "landmarks", "/ IOD", 3, True, True),
    Measure("shape", "feature shape", "/ IOD", 3, True, True),
    Measure("yaw", "|d yaw|", "deg", 2, True, True),
    Measure("pitch", "|d pitch|", "deg", 2, True, True),
    Measure("pose", "head pose", "deg", 2, True, True),                 # sqrt(d yaw^2 + d pitch^2)
    Measure("skin", "skin colour", "dE", 2, True, True),                # each image's cheek discs (face_regions)
    Measure("hair", "hair colour", "dE", 2, True, True),                # band above the brows (NaN where off-image)
    Measure("background", "background colour", "dE", 2, False, True),   # top/left/right border strips
    Measure("age", "|d age|", "years", 2, True, True),                  # AttributeModel
    Measure("gender_flip", "gender flip", "rate", 3, True, True),       # female_prob crosses 0.5
    Measure("identity", "identity change", "1 - cos", 3, True, True),   # dlib 128-d descriptors
    Measure("lowfreq", "low-freq. share", "share", 3, False, False),    # change's energy below ~4 cycles/image
    Measure("lpips", "LPIPS", "", 3, False, False),                     # LPIPS-rand offline (label in metrics)
    Measure("rms", "RMS change", "[-1,1]", 4, False, False),            # sqrt(mean squared pixel change)
)
MEASURE = {m.key: m for m in MEASURES}


class Claim(NamedTuple):
    key: str
    position: int       # the claimed group: index in the params order (-1 = last)
    text: str           # what the report says the group controls
    measures: tuple[str, ...]  # the parts tested


CLAIMS: tuple[Claim, ...] = (
    Claim("pose_hair", 0, "head pose and hair", ("pose", "hair")),
    Claim("features", 1, "facial features", ("shape",)),
    Claim("skin", 2, "skin tone (and wrinkles, read as apparent age)", ("skin", "age")),
    Claim("background", -1, "background colour", ("background",)),
)

VERDICT_RULE = (
    "Each claim names a group (the first, second, third or last of the study's groups) and one or more "
    "measures. For each measure, groups are ranked by the measure's change per unit of overall image change: "
    "its increase from the smallest to the judged magnitude divided by the increase of the RMS pixel change, "
    "over the same faces and offset directions (from the unedited image when only one magnitude is measured). "
    "So a group that changes everything more does not win every claim, and the measurement floor (dlib "
    "jitter under any small change) cancels. A part is supported when the claimed group "
    "ranks first and its 95% bootstrap CI lies above the runner-up's; mixed when it ranks first with "
    "overlapping CIs, or lower with a CI overlapping the top group's; not supported otherwise. A claim is "
    "supported (not supported) when all its parts are, mixed otherwise; not tested when no part can be "
    "measured (fewer than four groups, or no face found).")


@dataclass(frozen=True)
class FaceAnalysis:
    """Per-image measurements of a batch of ``N`` images (numpy; NaN where no face).

    found [N] bool; points [N, 68, 2]; yaw, pitch, age, female [N]; desc [N, 128];
    skin, hair, background [N, 3] CIELAB.
    """

    found: np.ndarray
    points: np.ndarray
    yaw: np.ndarray
    pitch: np.ndarray
    age: np.ndarray
    female: np.ndarray
    desc: np.ndarray
    skin: np.ndarray
    hair: np.ndarray
    background: np.ndarray

    def take(self, idx) -> "FaceAnalysis":
        return FaceAnalysis(**{k: v[idx] for k, v in self.__dict__.items()})


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """``[..., 3]`` sRGB in [0, 1] -> CIELAB (D65, L* in 0..100), float64; NaN propagates."""
    c = np.asarray(rgb, dtype=np.float64)
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124564, 0.3575761, 0.1804375],
                  [0.2126729, 0.7151522, 0.0721750],
                  [0.0193339, 0.1191920, 0.9503041]])
    xyz = lin @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


class Analyzer:
    """Loads the dlib and age/gender models once; :meth:`__call__` measures a batch of images."""

    def __init__(self) -> None:
        from clipbridge.models.attributes import AttributeModel, Identity, Landmarks

        self.landmarks = Landmarks()
        self.attributes = AttributeModel()
        self.identity = Identity()

    def __call__(self, images: torch.Tensor) -> FaceAnalysis:
        """images: ``[N, 3, H, W]`` float in [-1, 1] (any device)."""
        from clipbridge.annotate import border_mean, face_regions, head_pose, region_mean
        from clipbridge.models.attributes import detect

        images = images.detach().float().cpu()
        n, _, height, width = images.shape
        det = detect(images)
        marks = self.landmarks(det)
        attrs = self.attributes(det)
        desc = self.identity(det)
        yaw, pitch = np.full(n, np.nan), np.full(n, np.nan)
        skin, hair = np.full((n, 3), np.nan), np.full((n, 3), np.nan)
        for i in np.flatnonzero(marks.face_found):
            yaw[i], pitch[i] = head_pose(marks.points[i])
            cheeks, band = face_regions(marks.points[i], height, width)
            skin[i] = region_mean(images[i], cheeks).numpy()
            hair[i] = region_mean(images[i], band).numpy()
        return FaceAnalysis(found=marks.face_found.copy(), points=marks.points.astype(np.float64), yaw=yaw,
                            pitch=pitch, age=attrs.age.astype(np.float64), female=attrs.female_prob.astype(np.float64),
                            desc=desc.astype(np.float64), skin=srgb_to_lab(skin), hair=srgb_to_lab(hair),
                            background=srgb_to_lab(border_mean(images).numpy()))


def inter_ocular(points: np.ndarray) -> np.ndarray:
    """``[N, 68, 2]`` -> ``[N]`` distance between the eye centres (landmarks 36-41, 42-47)."""
    return np.linalg.norm(points[:, 36:42].mean(1) - points[:, 42:48].mean(1), axis=-1)


def similarity_residual(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Mean landmark distance after the least-squares similarity (rotation, scale, shift) of
    ``src`` onto ``dst``: ``[N, K, 2]`` x2 -> ``[N]``. Removes in-plane pose and size, keeps shape."""
    s = src[..., 0] + 1j * src[..., 1]
    d = dst[..., 0] + 1j * dst[..., 1]
    s = s - s.mean(1, keepdims=True)
    dc = d - d.mean(1, keepdims=True)
    c = (np.conj(s) * dc).sum(1, keepdims=True) / np.maximum((np.abs(s) ** 2).sum(1, keepdims=True), 1e-12)
    return np.abs(c * s - dc).mean(1)


def lowfreq_share(delta: torch.Tensor, sigma: float = LOWPASS_SIGMA) -> torch.Tensor:
    """Energy share of ``delta [N, C, H, W]`` passed by a circular Gaussian low-pass of std
    ``sigma * side`` pixels: ``||g * delta||^2 / ||delta||^2`` -> ``[N]`` float64 (NaN when delta = 0)."""
    _, _, h, w = delta.shape
    x = delta.double()
    fy = torch.fft.fftfreq(h, device=x.device, dtype=torch.float64)[:, None]
    fx = torch.fft.fftfreq(w, device=x.device, dtype=torch.float64)[None, :]
    gain = torch.exp(-2 * math.pi ** 2 * ((sigma * h * fy) ** 2 + (sigma * w * fx) ** 2))
    power = torch.fft.fft2(x).abs().square()
    total = power.sum((1, 2, 3))
    low = (power * gain.square()).sum((1, 2, 3))
    return torch.where(total > 0, low / total.clamp_min(1e-300), torch.full_like(total, math.nan))


def compare(base: FaceAnalysis, edit: FaceAnalysis, base_img: torch.Tensor, edit_img: torch.Tensor,
            lpips: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> dict[str, np.ndarray]:
    """Every :data:`MEASURES` entry per image pair -> ``{key: [N] float64}`` plus
    ``face_found_edit`` and ``face_pair`` ([N] bool). Face measures are NaN unless ``face_pair``.

    base / edit: analyses of the unedited and edited images (row i of each belongs together);
    base_img, edit_img: ``[N, 3, H, W]`` in [-1, 1].
    """
    pair = base.found & edit.found
    out: dict[str, np.ndarray] = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        _face_measures(base, edit, out)
    for m in MEASURES:
        if m.face and m.key in out:
            out[m.key] = np.where(pair, out[m.key], np.nan)
    delta = edit_img.float() - base_img.float()
    out["lowfreq"] = lowfreq_share(delta).cpu().numpy()
    with torch.no_grad():
        out["lpips"] = lpips(edit_img.float(), base_img.float()).double().cpu().numpy()
    out["rms"] = delta.double().square().mean((1, 2, 3)).sqrt().cpu().numpy()
    out["face_found_edit"] = edit.found.copy()
    out["face_pair"] = pair
    return out


def _face_measures(base: FaceAnalysis, edit: FaceAnalysis, out: dict) -> None:
    iod = inter_ocular(base.points)
    out["geometry"] = np.linalg.norm(edit.points - base.points, axis=-1).mean(1) / iod
    out["shape"] = similarity_residual(np.nan_to_num(edit.points), np.nan_to_num(base.points)) / iod
    dyaw, dpitch = np.abs(edit.yaw - base.yaw), np.abs(edit.pitch - base.pitch)
    out["yaw"], out["pitch"], out["pose"] = dyaw, dpitch, np.hypot(dyaw, dpitch)
    out["skin"] = np.linalg.norm(edit.skin - base.skin, axis=-1)
    out["hair"] = np.linalg.norm(edit.hair - base.hair, axis=-1)
    out["background"] = np.linalg.norm(edit.background - base.background, axis=-1)
    out["age"] = np.abs(edit.age - base.age)
    out["gender_flip"] = ((edit.female >= 0.5) != (base.female >= 0.5)).astype(np.float64)
    cos = (edit.desc * base.desc).sum(-1) / (np.linalg.norm(edit.desc, axis=-1) * np.linalg.norm(base.desc, axis=-1))
    out["identity"] = 1.0 - cos


def lpips_for(resolution: int, random_trunk: bool, seed: int, device) -> torch.nn.Module:
    """The profile's LPIPS at the protocol size (>= 64 px for AlexNet, <= 256 px)."""
    from clipbridge.metrics import LPIPS

    size = LPIPS_MIN_SIDE if resolution < LPIPS_MIN_SIDE else (LPIPS_MAX_SIDE if resolution > LPIPS_MAX_SIDE else None)
    return LPIPS(random_trunk=random_trunk, seed=seed, size=size).to(device)


@torch.no_grad()
def study_faces(G: torch.nn.Module, n: int, seed: int, batch: int,
                max_candidates: int | None = None) -> tuple[torch.Tensor, int]:
    """ws ``[n, num_ws, w_dim]`` (on G's device) of the first ``n`` z (faces stream of ``seed``)
    whose unedited image has a dlib face, and how many of them have one.

    At most ``max_candidates`` (None = ``4 n``) z are tried; when too few have a face the set is
    filled with the first faceless ones (their face measures are then excluded, and counted).
    """
    device = _device(G)
    gen = _stream(seed, _FACES)
    limit = 4 * n if max_candidates is None else max_candidates
    with_face, without, tried = [], [], 0
    while len(with_face) < n and tried < limit:
        z = torch.randn(min(batch, limit - tried), G.z_dim, generator=gen).to(device)
        tried += z.shape[0]
        ws = G.mapping(z, None)
        found = faces_found(synthesize(G, ws))
        for i in range(ws.shape[0]):
            (with_face if found[i] else without).append(ws[i])
    n_found = min(n, len(with_face))
    chosen = (with_face[:n] + without)[:n]
    return torch.stack(chosen), n_found


def faces_found(images: torch.Tensor) -> np.ndarray:
    """``[N]`` bool: dlib finds a face (detection only, cheap)."""
    from clipbridge.models.attributes import detect

    return detect(images.detach().float().cpu()).face_found


@torch.no_grad()
def measure(G: torch.nn.Module, ws: torch.Tensor, groups: dict[str, tuple[int, int]], magnitudes: list[float],
            n_draws: int, seed: int, unit, lpips, analyzer: Analyzer,
            batch: int = 64, progress: bool = True) -> list[dict]:
    """Faces x draws x groups x magnitudes edited and compared with the unedited faces.

    ws: ``[F, num_ws, w_dim]`` the faces (:func:`study_faces`). Direction of (face f, draw d,
    group g) comes from the directions stream of ``seed`` drawn in the fixed order (d, g) for all
    faces at once, so it does not depend on ``batch``; it is reused for every magnitude.
    ``unit``: :func:`offset_unit`. Returns one row per edited image: ``face, draw, group,
    magnitude, face_found_base, face_found_edit`` and every :data:`MEASURES` key (NaN where excluded).
    """
    from tqdm import tqdm

    n_faces = ws.shape[0]
    gen = _stream(seed, _DIRECTIONS)
    directions = {(d, g): draw_direction(G, n_faces, rng, gen) for d in range(n_draws) for g, rng in groups.items()}
    rows = []
    total = n_faces * n_draws * len(groups) * len(magnitudes)
    bar = tqdm(total=total, desc="edits", unit="img", disable=not progress, dynamic_ncols=True)
    for lo in range(0, n_faces, batch):
        sl = slice(lo, min(lo + batch, n_faces))
        base_img = synthesize(G, ws[sl])
        base = analyzer(base_img)
        for (d, g), direction in directions.items():
            dir_b = [t[sl] for t in direction] if is_dcgan(G) else direction[sl]
            for m in magnitudes:
                img = synthesize(G, ws[sl], groups[g], dir_b, m, unit)
                res = compare(base, analyzer(img), base_img, img, lpips)
                for i in range(img.shape[0]):
                    row = {"face": lo + i, "draw": d, "group": g, "magnitude": m,
                           "face_found_base": bool(base.found[i]), "face_found_edit": bool(res["face_found_edit"][i])}
                    row.update({k.key: float(res[k.key][i]) for k in MEASURES})
                    rows.append(row)
                bar.update(img.shape[0])
    bar.close()
    return rows


# --------------------------------------------------------------------------------------------
# Summaries and verdicts


def _cells(rows: list[dict], groups: list[str], magnitudes: list[float], n_faces: int, n_draws: int) -> dict:
    """Rows -> ``{key: [F, D, G, M] float64}`` for every measure and the face-found flags (NaN = no row)."""
    keys = [m.key for m in MEASURES] + ["face_found_base", "face_found_edit"]
    arr = {k: np.full((n_faces, n_draws, len(groups), len(magnitudes)), np.nan) for k in keys}
    gi = {g: i for i, g in enumerate(groups)}
    mi = {m: i for i, m in enumerate(magnitudes)}
    for r in rows:
        at = (r["face"], r["draw"], gi[r["group"]], mi[r["magnitude"]])
        for k in keys:
            arr[k][at] = float(r[k])
    return arr


def _ratio_ci(num: np.ndarray, den: np.ndarray, weights: np.ndarray) -> dict:
    """Cluster-bootstrap ratio of sums: num, den ``[F]`` per-face sums, weights ``[B, F]`` resample
    counts -> ``{mean, lo, hi}`` (NaN when den sums to 0)."""
    total = den.sum()
    if not total > 0:
        return {"mean": math.nan, "lo": math.nan, "hi": math.nan}
    boot_den = weights @ den
    boot = np.where(boot_den > 0, (weights @ num) / np.where(boot_den > 0, boot_den, 1.0), np.nan)
    lo, hi = np.nanpercentile(boot, [2.5, 97.5]) if np.isfinite(boot).any() else (math.nan, math.nan)
    return {"mean": float(num.sum() / total), "lo": float(lo), "hi": float(hi)}


def summarize(rows: list[dict], groups: list[str], magnitudes: list[float], n_faces: int, n_draws: int,
              bootstrap: int, seed: int) -> dict:
    """Per (group, magnitude): every measure's mean and 95% CI, and its change per unit of RMS change.

    Means pool the valid rows (ratio of sums over faces); CIs resample faces (the independent
    unit; a face's draws stay together) ``bootstrap`` times with the bootstrap stream of ``seed``,
    the same resamples for every cell.

    ``per_rms`` (effect measures only) is the measure's increase per unit increase of the RMS
    pixel change, from the smallest measured magnitude to this one, over the images (same face
    and direction) valid at both: ``sum(m_hi - m_lo) / sum(rms_hi - rms_lo)``. At the smallest
    magnitude the reference is the unedited image (every measure 0): ``sum(m) / sum(rms)``.
    Taking the difference cancels the measurement floor (dlib landmarks, age and pose jitter by a
    roughly constant amount under any small change), which a plain ratio would credit most to
    the group that changes the image least.

    Returns ``{group: {str(magnitude): {"raw": {key: {mean, lo, hi, n}}, "per_rms": {key: {mean,
    lo, hi, n, from}}, "face_found_rate": {...}, "n_excluded": int, "n": int}}}``.
    """
    arr = _cells(rows, groups, magnitudes, n_faces, n_draws)
    ref = int(np.argmin(magnitudes))
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_BOOTSTRAP,)))
    weights = rng.multinomial(n_faces, np.full(n_faces, 1.0 / n_faces), size=bootstrap).astype(np.float64)
    out: dict = {}
    for gi, g in enumerate(groups):
        out[g] = {}
        for mi, mag in enumerate(magnitudes):
            cell: dict = {"raw": {}, "per_rms": {}}
            rms = arr["rms"][:, :, gi, mi]
            base_m = magnitudes[ref] if mi != ref else 0.0
            for m in MEASURES:
                v = arr[m.key][:, :, gi, mi]
                ok = np.isfinite(v)
                num = np.where(ok, v, 0.0).sum(1)
                cell["raw"][m.key] = {**_ratio_ci(num, ok.sum(1).astype(np.float64), weights), "n": int(ok.sum())}
                if m.effect:
                    dv, dr = v, rms
                    if mi != ref:
                        dv, dr = v - arr[m.key][:, :, gi, ref], rms - arr["rms"][:, :, gi, ref]
                    both = np.isfinite(dv) & np.isfinite(dr)
                    cell["per_rms"][m.key] = {**_ratio_ci(np.where(both, dv, 0.0).sum(1),
                                                          np.where(both, dr, 0.0).sum(1), weights),
                                              "n": int(both.sum()), "from": base_m}
            found = arr["face_found_edit"][:, :, gi, mi]
            present = np.isfinite(found)
            cell["face_found_rate"] = _ratio_ci(np.where(present, found, 0).sum(1),
                                                present.sum(1).astype(np.float64), weights)
            cell["n"] = int(present.sum())
            pair = (found == 1) & (arr["face_found_base"][:, :, gi, mi] == 1)
            cell["n_excluded"] = int(present.sum() - pair.sum())
            out[g][_mag_key(mag)] = cell
    return out


def _mag_key(m: float) -> str:
    return f"{m:g}"


def part_verdict(values: dict[str, dict], claimed: str) -> str:
    """Verdict of one measure: ``values`` = group -> {mean, lo, hi}; rule in :data:`VERDICT_RULE`."""
    finite = {g: v for g, v in values.items() if math.isfinite(v["mean"])}
    if claimed not in finite or len(finite) < 2:
        return "not tested"
    ranked = sorted(finite, key=lambda g: finite[g]["mean"], reverse=True)
    c = finite[claimed]
    if ranked[0] == claimed:
        runner = finite[ranked[1]]
        return "supported" if c["lo"] > runner["hi"] else "mixed"
    return "mixed" if c["hi"] >= finite[ranked[0]]["lo"] else "not supported"


def combine(verdicts: list[str]) -> str:
    """All parts supported -> supported; all not supported -> not supported; else mixed
    (untestable parts ignored; none testable -> not tested)."""
    tested = [v for v in verdicts if v != "not tested"]
    if not tested:
        return "not tested"
    return tested[0] if all(v == tested[0] for v in tested) else "mixed"


def judge(summary: dict, groups: list[str], magnitude: float, key: str = "per_rms") -> dict:
    """Each of :data:`CLAIMS` judged at ``magnitude`` on ``summary[g][mag][key]``.

    Returns ``{claim: {verdict, group, text, parts: {measure: {verdict, ranking: [groups, best
    first], values: {group: {mean, lo, hi}}}}}}``; claims whose group position does not exist
    (fewer than four groups) are 'not tested'.
    """
    out = {}
    mk = _mag_key(magnitude)
    for claim in CLAIMS:
        if len(groups) < 4:
            out[claim.key] = {"verdict": "not tested", "group": None, "text": claim.text, "parts": {}}
            continue
        g = groups[claim.position]
        parts = {}
        for mkey in claim.measures:
            values = {h: {k: summary[h][mk][key][mkey][k] for k in ("mean", "lo", "hi")} for h in groups}
            finite = [h for h in groups if math.isfinite(values[h]["mean"])]
            parts[mkey] = {"verdict": part_verdict(values, g), "values": values,
                           "ranking": sorted(finite, key=lambda h: values[h]["mean"], reverse=True)}
        out[claim.key] = {"verdict": combine([p["verdict"] for p in parts.values()]), "group": g,
                          "text": claim.text, "parts": parts}
    return out


# --------------------------------------------------------------------------------------------
# The whole study


def run_study(G: torch.nn.Module, groups: dict[str, tuple[int, int]], cfg: EditsConfig, lpips,
              unit_scale: float = 1.0, progress: bool = True) -> dict:
    """Faces, strip, measurement, summaries and verdicts of one generator.

    Returns ``{rows, summary, verdicts, verdicts_raw, verdicts_by_magnitude, strip [G, S, 3, R, R],
    settings, n, seconds}``; everything seeded from ``cfg.seed``. ``unit_scale``: offset units
    per magnitude unit (:meth:`EditsConfig.scale_of`).
    """
    t0 = time.perf_counter()
    analyzer = Analyzer()
    sigma = w_std(G, cfg.w_std_samples, cfg.seed)
    unit = offset_unit(G, sigma, unit_scale)
    ws, n_found = study_faces(G, cfg.n_faces, cfg.seed, cfg.batch)
    strip = report_strip(G, ws[:1], groups, cfg.strip_step, cfg.strip_show, cfg.seed, unit)
    rows = measure(G, ws, groups, cfg.magnitudes, cfg.n_draws, cfg.seed, unit, lpips, analyzer,
                   batch=cfg.batch, progress=progress)
    names = list(groups)
    summary = summarize(rows, names, cfg.magnitudes, cfg.n_faces, cfg.n_draws, cfg.bootstrap, cfg.seed)
    mag = cfg.judged_magnitude
    settings: dict = {
        "space": space_name(G), "groups": {g: list(r) for g, r in groups.items()},
        "group_order": names,  # coarse to fine (JSON objects are written with sorted keys)
        "magnitudes": list(cfg.magnitudes),
        "verdict_magnitude": mag, "n_draws": cfg.n_draws, "bootstrap": cfg.bootstrap, "seed": cfg.seed,
        "magnitude_unit": (f"{unit_scale:g} x std of the log channel scale" if sigma is None
                           else f"{unit_scale:g} x per-dimension std of w (sigma_w)"),
        "unit_scale": unit_scale,
        "w_std_mean": None if sigma is None else float(sigma.mean()),
        "w_std_samples": cfg.w_std_samples,
        "report_raw_step_in_magnitude_units": (None if sigma is None
                                               else float(cfg.strip_step / (unit_scale * sigma.mean()))),
        "strip": {"step": cfg.strip_step, "steps": cfg.strip_steps, "show": list(cfg.strip_show)},
        "lowpass_sigma_of_side": LOWPASS_SIGMA,
        "lowpass_half_power_cycles_per_image": math.sqrt(math.log(2)) / (2 * math.pi * LOWPASS_SIGMA),
        "resolution": int(G.img_resolution),
        "rule": VERDICT_RULE,
    }
    n = {"faces": cfg.n_faces, "faces_with_face": n_found, "draws": cfg.n_draws, "images": len(rows),
         "excluded_face_rows": sum(c["n_excluded"] for g in summary.values() for c in g.values())}
    return {
        "rows": rows, "summary": summary, "strip": strip, "settings": settings, "n": n,
        "verdicts": judge(summary, names, mag, "per_rms"),
        "verdicts_raw": judge(summary, names, mag, "raw"),
        "verdicts_by_magnitude": {_mag_key(m): {c: v["verdict"] for c, v in judge(summary, names, m).items()}
                                  for m in cfg.magnitudes},
        "seconds": time.perf_counter() - t0,
    }
