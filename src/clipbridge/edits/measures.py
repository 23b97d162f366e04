"""What an edit changed: per-image measures of an edited image against its unedited face.

:func:`compare` turns the analyses of an unedited and an edited batch (:class:`Analyzer`,
:class:`FaceAnalysis`) into every :data:`MEASURES` entry per image pair.

Face measures need dlib to find a face in both the unedited and the edited image; rows where it
does not are excluded from those measures (NaN here; counted as ``n_excluded`` and
``face_loss_rate`` in :func:`clipbridge.edits.verdicts.summarize`, which compares groups only on
the (face, draw) slots measured in every group: the common face set). Colours are mean sRGB of a region converted to
CIELAB (D65) and compared as Delta E 1976. The low-frequency share of a change
``delta = edited - unedited`` is ``||g * delta||^2 / ||delta||^2`` with ``g`` a circular Gaussian
low-pass of standard deviation ``LOWPASS_SIGMA * image side`` pixels (applied in the Fourier
domain), whose half-power frequency is ``sqrt(ln 2) / (2 pi LOWPASS_SIGMA) = 4.2`` cycles per
image: a uniform colour shift has share 1, a pose change of a sharp face much less.
dlib, lpips and matplotlib are imported where used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np
import torch

LOWPASS_SIGMA = 1 / 32          # Gaussian low-pass sigma / image side (half power at 4.2 cycles/image)


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
        from clipbridge.offline.annotate import border_mean, face_regions, head_pose, region_mean
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
    from clipbridge.models.attributes import inter_ocular

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


def faces_found(images: torch.Tensor) -> np.ndarray:
    """``[N]`` bool: dlib finds a face (detection only, cheap)."""
    from clipbridge.models.attributes import detect

    return detect(images.detach().float().cpu()).face_found

