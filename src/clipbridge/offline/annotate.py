"""Measured attributes of face images, and the categorical words captions are written from.

:func:`annotate` measures, per image (``[N, 3, H, W]`` float in ``[-1, 1]``, any size):

- head yaw and pitch (degrees) from dlib's 68 landmarks, after removing roll (eye line made
  horizontal). Yaw: a cylinder head model; the nose tip's offset from the middle of the jaw
  contour (landmarks 0 and 16, the silhouette at ear height) over the contour's half width is
  ``sin(yaw)``. **Positive yaw = the face turns toward the image's right side** (the nose tip
  moves right); a horizontal flip negates it. Pitch: the nose tip's height between the eye line
  and the chin, ``t = (y_nose - y_eyes) / (y_chin - y_eyes)``, falls as the head tilts up
  (the tip protrudes toward the camera); ``pitch = atan((PITCH_NEUTRAL_RATIO - t) /
  NOSE_DEPTH_RATIO)``. **Positive pitch = looking up.** Both are geometric estimates good to
  some degrees, not a head-pose regressor.
- mouth openness: mean inner-lip gap (landmark pairs 61-67, 62-66, 63-65) / mouth width (48-54).
- face size (box width / image width) and position (box centre / image size, in ``[0, 1]``).
- colours as mean RGB in ``[0, 1]``: skin (two cheek discs placed from landmarks), hair (a band
  above the forehead, over the jaw's width), background (the image's top, left and right border
  strips), and brightness (mean Rec. 601 luma of the whole image).
- age (years) and female probability from :class:`clipbridge.models.attributes.AttributeModel`.

:func:`categorical` turns an :class:`Annotation` into the fixed vocabularies of
:data:`VOCABULARY`. The thresholds below were chosen from the distributions measured on 200
faces of the pretrained DCGAN (64 px, seed 0; ``python benchmarks/attributes.py`` prints them
again), so that categories split those faces and their words match what the faces show.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import numpy as np
import torch

from clipbridge.models.attributes import AttributeModel, Landmarks, detect
from clipbridge.offline.captions import ATTRIBUTES

# --- measurement geometry -------------------------------------------------------------------
PITCH_NEUTRAL_RATIO = 0.33   # (nose - eyes) / (chin - eyes) taken as level: the DCGAN median (0.334)
NOSE_DEPTH_RATIO = 0.30      # nose-tip protrusion / eye-to-chin height (anthropometric estimate)
CHEEK_RADIUS = 0.07          # cheek disc radius / jaw width (landmarks 0-16)
HAIR_BAND = (0.8, 0.4)       # hair band spans brow_y - 0.8 * h .. brow_y - 0.4 * h, h = chin - brow
BORDER_WIDTH = 1 / 16        # background border strip width / image side

# --- category thresholds (from the DCGAN distributions; module doc) --------------------------
YAW_DEGREES = 15.0           # |yaw| above this: 'looking left' / 'looking right'
PITCH_DEGREES = 10.0         # |pitch| above this: 'looking up' / 'looking down'
MOUTH_OPEN = 0.12            # mouth openness above this: 'open'
SKIN_LIGHTNESS = (30.0, 55.0)  # cheek CIELAB L*: below 30 'dark', below 55 'medium', else 'light'
LIGHTING = (0.25, 0.40)      # mean luma below 0.25: 'dark', below 0.40: 'dim', else 'bright'
AGE_BRACKETS = ((13, "child"), (20, "teenager"), (30, "twenties"), (40, "thirties"),
                (50, "forties"), (60, "fifties"), (70, "sixties"), (math.inf, "seventies"))
NEUTRAL_CHROMA = 0.08        # max - min of RGB below this: an achromatic colour
BLACK_VALUE = 0.20           # HSV value below this: 'black'
WHITE_VALUE = 0.75           # achromatic with HSV value above this: 'white'
BROWN_VALUE = 0.55           # red/orange/yellow hue with HSV value below this: 'brown'
HAIR_BLACK_VALUE = 0.25      # hair HSV value below this: 'black'
HAIR_GREY_CHROMA = 0.05      # hair chroma below this (and value >= HAIR_GREY_VALUE): 'grey'
HAIR_GREY_VALUE = 0.35       # grey/white hair is light; darker achromatic hair is 'black'
HAIR_BLOND_HUES = (25, 60)   # hue range (degrees) of blond hair ...
HAIR_BLOND_VALUE = 0.55      # ... with HSV value above this
HAIR_RED_HUES = (340, 25)    # hue range (degrees, wrapping through 0) of red hair ...
HAIR_RED_SATURATION = 0.45   # ... with saturation above this
HUE_NAMES = ((15, "red"), (40, "orange"), (70, "yellow"), (170, "green"), (260, "blue"),
             (290, "purple"), (345, "pink"), (360, "red"))  # upper hue bound (degrees), name

# Every value :func:`categorical` may return per key (besides None = unknown; for 'tilt' None
# also means level). Directions are the viewer's: 'looking right' = toward the image's right.
# Defined once, in captions.py, which writes captions from these words.
VOCABULARY = ATTRIBUTES
assert VOCABULARY["age_bracket"] == tuple(name for _, name in AGE_BRACKETS)

RGB = tuple[float, float, float]
NAN_RGB: RGB = (math.nan, math.nan, math.nan)


@dataclass(frozen=True)
class Annotation:
    """Measurements of one image. Face-dependent fields are NaN when no face was detected.

    Attributes:
        face_found:      dlib detected a face.
        yaw:             degrees, + = face turns toward the image's right.
        pitch:           degrees, + = looking up.
        mouth_openness:  inner-lip gap / mouth width (0 = closed).
        face_size:       face box width / image width.
        face_x, face_y:  face box centre / image width, height.
        skin_rgb:        mean RGB in [0, 1] of the cheek discs.
        hair_rgb:        mean RGB in [0, 1] of the band above the forehead (NaN if off-image).
        background_rgb:  mean RGB in [0, 1] of the top, left and right border strips.
        brightness:      mean luma in [0, 1] of the whole image.
        age:             years (AttributeModel).
        female_prob:     in [0, 1] (AttributeModel).
        fallback:        age and female_prob came from the whole image (no face detected).
    """

    face_found: bool
    yaw: float
    pitch: float
    mouth_openness: float
    face_size: float
    face_x: float
    face_y: float
    skin_rgb: RGB
    hair_rgb: RGB
    background_rgb: RGB
    brightness: float
    age: float
    female_prob: float
    fallback: bool

    @property
    def mouth_open(self) -> bool | None:
        """``mouth_openness > MOUTH_OPEN``; None when no face."""
        return None if math.isnan(self.mouth_openness) else self.mouth_openness > MOUTH_OPEN


# --- colour statistics (pure functions, reused by the layer-group study) ---------------------

def _to_unit(img: torch.Tensor) -> torch.Tensor:
    """``[..., 3, H, W]`` in ``[-1, 1]`` -> float32 in ``[0, 1]``."""
    if img.ndim < 3 or img.shape[-3] != 3:
        raise ValueError(f"images must be [..., 3, H, W], got {tuple(img.shape)}")
    return (img.detach().float().clamp(-1, 1) + 1) / 2


def border_mask(height: int, width: int, strip: float = BORDER_WIDTH, bottom: bool = False,
                device: torch.device | str = "cpu") -> torch.Tensor:
    """``[H, W]`` bool mask of the border strips (``ceil(strip * side)`` pixels wide).

    The bottom strip is excluded unless ``bottom``: in portraits it holds neck and clothing.
    """
    mask = torch.zeros(height, width, dtype=torch.bool, device=device)
    h, w = math.ceil(strip * height), math.ceil(strip * width)
    mask[:h] = True
    mask[:, :w] = True
    mask[:, width - w:] = True
    if bottom:
        mask[height - h:] = True
    return mask


def region_mean(img: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean RGB of the pixels in ``mask``.

    Args:
        img: ``[..., 3, H, W]`` float in ``[-1, 1]``.
        mask: ``[H, W]`` or ``[..., H, W]`` bool, broadcast against ``img``'s leading dims.

    Returns:
        ``[..., 3]`` float32 RGB in ``[0, 1]``; NaN where the mask is empty.
    """
    x = _to_unit(img)
    m = mask.to(x.device, torch.float32).unsqueeze(-3)
    return ((x * m).sum((-2, -1)) / m.sum((-2, -1))).float()


def border_mean(img: torch.Tensor, strip: float = BORDER_WIDTH, bottom: bool = False) -> torch.Tensor:
    """Mean RGB of the border strips (:func:`border_mask`): ``[..., 3, H, W]`` in ``[-1, 1]``
    -> ``[..., 3]`` float32 RGB in ``[0, 1]``."""
    return region_mean(img, border_mask(*img.shape[-2:], strip, bottom, img.device))


def brightness(img: torch.Tensor) -> torch.Tensor:
    """Mean Rec. 601 luma: ``[..., 3, H, W]`` in ``[-1, 1]`` -> ``[...]`` float32 in ``[0, 1]``."""
    x = _to_unit(img)
    weights = torch.tensor([0.299, 0.587, 0.114], device=x.device).view(3, 1, 1)
    return (x * weights).sum(-3).mean((-2, -1))


def disc_mask(height: int, width: int, centre: np.ndarray, radius: float) -> torch.Tensor:
    """``[H, W]`` bool: pixel centres within ``radius`` of ``centre`` = (x, y) input pixels."""
    ys, xs = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    return (xs - float(centre[0])) ** 2 + (ys - float(centre[1])) ** 2 <= radius ** 2


def box_mask(height: int, width: int, x0: float, y0: float, x1: float, y1: float) -> torch.Tensor:
    """``[H, W]`` bool: pixel centres inside ``[x0, x1) x [y0, y1)`` (input pixels)."""
    ys, xs = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    return (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)


# --- landmark geometry ---------------------------------------------------------------------

def _derolled(points: np.ndarray) -> np.ndarray:
    """``[68, 2]`` landmarks rotated about the eyes' midpoint so the eye line is horizontal."""
    left, right = points[36:42].mean(0), points[42:48].mean(0)
    angle = math.atan2(right[1] - left[1], right[0] - left[0])
    c, s = math.cos(-angle), math.sin(-angle)
    centre = (left + right) / 2
    return (points - centre) @ np.array([[c, s], [-s, c]], dtype=np.float64) + centre


def head_pose(points: np.ndarray) -> tuple[float, float]:
    """(yaw, pitch) in degrees from ``[68, 2]`` landmarks (conventions: module doc)."""
    p = _derolled(points.astype(np.float64))
    nose, jaw_l, jaw_r = p[30], p[0], p[16]
    half_width = (jaw_r[0] - jaw_l[0]) / 2
    sin_yaw = (nose[0] - (jaw_l[0] + jaw_r[0]) / 2) / half_width
    eyes_y = p[36:48, 1].mean()
    t = (nose[1] - eyes_y) / (p[8, 1] - eyes_y)
    yaw = math.degrees(math.asin(min(1.0, max(-1.0, sin_yaw))))
    pitch = math.degrees(math.atan((PITCH_NEUTRAL_RATIO - t) / NOSE_DEPTH_RATIO))
    return yaw, pitch


def mouth_openness(points: np.ndarray) -> float:
    """Mean inner-lip gap over mouth width from ``[68, 2]`` landmarks."""
    gap = np.linalg.norm(points[[61, 62, 63]] - points[[67, 66, 65]], axis=1).mean()
    return float(gap / np.linalg.norm(points[54] - points[48]))


def face_regions(points: np.ndarray, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(cheek mask, hair mask), each ``[H, W]`` bool, from ``[68, 2]`` landmarks.

    Cheeks: discs of radius ``CHEEK_RADIUS * jaw width`` centred at the mean of landmarks
    (1, 31, 41) and (15, 35, 46): below the eye, between the nose wing and the jaw contour.
    Hair: ``HAIR_BAND`` above the highest brow point, between jaw landmarks 0 and 16.
    """
    jaw_width = float(np.linalg.norm(points[16] - points[0]))
    radius = CHEEK_RADIUS * jaw_width
    cheeks = (disc_mask(height, width, points[[1, 31, 41]].mean(0), radius)
              | disc_mask(height, width, points[[15, 35, 46]].mean(0), radius))
    brow_y = float(points[17:27, 1].min())
    face_h = float(points[8, 1]) - brow_y
    top, bottom = (brow_y - f * face_h for f in HAIR_BAND)
    hair = box_mask(height, width, float(points[0, 0]), top, float(points[16, 0]), bottom)
    return cheeks, hair


# --- the batch annotator --------------------------------------------------------------------

def annotate(images: torch.Tensor, fallback: bool = False) -> list[Annotation]:
    """Measure every image of a batch.

    Args:
        images: ``[N, 3, H, W]`` float in ``[-1, 1]``, any size (detection upscales small ones).
        fallback: when no face is detected, still estimate age and gender from the whole image
            (:class:`AttributeModel` ``fallback``), flagged in ``Annotation.fallback``.

    Returns:
        ``N`` :class:`Annotation`.
    """
    det = detect(images)
    marks = Landmarks()(det)
    attrs = AttributeModel(fallback=fallback)(det)
    height, width = images.shape[-2:]
    backgrounds = border_mean(images).tolist()
    lumas = brightness(images).tolist()
    out = []
    for i in range(images.shape[0]):
        face = {"yaw": math.nan, "pitch": math.nan, "mouth_openness": math.nan,
                "face_size": math.nan, "face_x": math.nan, "face_y": math.nan,
                "skin_rgb": NAN_RGB, "hair_rgb": NAN_RGB}
        if marks.face_found[i]:
            points = marks.points[i]
            x0, y0, x1, y1 = marks.box[i].tolist()
            cheeks, hair = face_regions(points, height, width)
            face["yaw"], face["pitch"] = head_pose(points)
            face["mouth_openness"] = mouth_openness(points)
            face["face_size"] = (x1 - x0) / width
            face["face_x"], face["face_y"] = (x0 + x1) / 2 / width, (y0 + y1) / 2 / height
            face["skin_rgb"] = tuple(region_mean(images[i], cheeks).tolist())
            face["hair_rgb"] = tuple(region_mean(images[i], hair).tolist())
        out.append(Annotation(face_found=bool(marks.face_found[i]), **face,
                              background_rgb=tuple(backgrounds[i]), brightness=lumas[i],
                              age=float(attrs.age[i]), female_prob=float(attrs.female_prob[i]),
                              fallback=bool(attrs.fallback[i])))
    return out


# --- words ---------------------------------------------------------------------------------

def _hsv(rgb: RGB) -> tuple[float, float, float, float]:
    """(hue degrees, saturation, value, chroma) of an RGB in [0, 1]."""
    h, s, v = colorsys.rgb_to_hsv(*rgb)
    return h * 360.0, s, v, max(rgb) - min(rgb)


def lightness(rgb: RGB) -> float:
    """CIELAB L* (0 black .. 100 white) of an sRGB colour in [0, 1]."""
    c = np.asarray(rgb, dtype=np.float64)
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    y = float(linear @ np.array([0.2126, 0.7152, 0.0722]))
    return 116 * math.cbrt(y) - 16 if y > (6 / 29) ** 3 else y * (29 / 3) ** 3


def skin_tone_name(rgb: RGB) -> str | None:
    """'dark' | 'medium' | 'light' from the skin colour's L* (:data:`SKIN_LIGHTNESS`); None if NaN.

    The colour is measured under the image's lighting, so shade darkens the measured tone. The
    individual typology angle (ITA) of dermatology was tried and rejected: in these dim images it
    put 116 of 155 DCGAN faces in its darkest classes, pale faces in grey shade among them.
    """
    if math.isnan(rgb[0]):
        return None
    return _threshold_word(lightness(rgb), SKIN_LIGHTNESS, ("dark", "medium", "light"))


def colour_name(rgb: RGB) -> str | None:
    """Name a (background) colour with one word of ``VOCABULARY['background']``; None if NaN."""
    if math.isnan(rgb[0]):
        return None
    hue, _, value, chroma = _hsv(rgb)
    if value < BLACK_VALUE:
        return "black"
    if chroma < NEUTRAL_CHROMA:
        return "white" if value > WHITE_VALUE else "grey"
    name = next(n for bound, n in HUE_NAMES if hue < bound)
    if name in ("red", "orange", "yellow") and value < BROWN_VALUE:
        return "brown"
    return name


def hair_name(rgb: RGB) -> str | None:
    """Name a hair colour with one word of ``VOCABULARY['hair_color']``; None if NaN."""
    if math.isnan(rgb[0]):
        return None
    hue, saturation, value, chroma = _hsv(rgb)
    if value < HAIR_BLACK_VALUE:
        return "black"
    if chroma < HAIR_GREY_CHROMA:
        return "grey" if value >= HAIR_GREY_VALUE else "black"
    reddish = hue >= HAIR_RED_HUES[0] or hue < HAIR_RED_HUES[1]
    if reddish and saturation > HAIR_RED_SATURATION:
        return "red"
    if HAIR_BLOND_HUES[0] <= hue < HAIR_BLOND_HUES[1] and value > HAIR_BLOND_VALUE:
        return "blond"
    return "brown"


def _threshold_word(value: float, thresholds: tuple[float, ...], words: tuple[str, ...]) -> str | None:
    """``words[k]`` for the first ``value < thresholds[k]``, else the last word; None if NaN."""
    if math.isnan(value):
        return None
    return next((w for t, w in zip(thresholds, words) if value < t), words[-1])


def categorical(a: Annotation) -> dict[str, str | None]:
    """The caption words of an annotation: one value of :data:`VOCABULARY` per key, or None.

    Without a face, every key but 'background' and 'lighting' is None (and 'age_bracket' and
    'gender' too, unless ``a.fallback`` supplied them).
    """
    pose = tilt = None
    if a.face_found:
        pose = ("looking right" if a.yaw > YAW_DEGREES else
                "looking left" if a.yaw < -YAW_DEGREES else "facing the camera")
        tilt = ("looking up" if a.pitch > PITCH_DEGREES else
                "looking down" if a.pitch < -PITCH_DEGREES else None)
    open_ = a.mouth_open
    return {
        "pose": pose,
        "tilt": tilt,
        "mouth": None if open_ is None else ("open" if open_ else "closed"),
        "skin_tone": skin_tone_name(a.skin_rgb),
        "hair_color": hair_name(a.hair_rgb),
        "background": colour_name(a.background_rgb),
        "lighting": _threshold_word(a.brightness, LIGHTING, VOCABULARY["lighting"]),
        "age_bracket": _threshold_word(a.age, tuple(t for t, _ in AGE_BRACKETS[:-1]),
                                       VOCABULARY["age_bracket"]),
        "gender": None if math.isnan(a.female_prob) else ("woman" if a.female_prob >= 0.5 else "man"),
    }
