"""A face photo from disk, read safely and cropped the way the generators frame faces.

Reading (:func:`read_photo`): any JPEG / PNG / WebP (also BMP, TIFF, GIF; first frame of a
multi-frame file) -> ``[H, W, 3]`` uint8 RGB, or one :class:`PhotoError` line naming the file
and the problem. The checks, in order:

- the path exists, is a regular file and is not empty;
- only the decoders in :data:`FORMATS` are tried (PIL's other plugins, e.g. EPS through
  Ghostscript, never run on user input);
- the header's width x height is at most ``max_pixels`` *before* any pixel is decoded, so a
  decompression bomb (a few KB claiming gigapixels) is refused without allocating it;
- the whole file is decoded up front, so a truncated or corrupt file fails here, not later;
- EXIF orientation 2-8 is applied (the photo is turned upright as a viewer shows it);
- colour modes: greyscale and 1-bit are replicated to RGB; 16-bit greyscale (``I;16``, ``I``)
  is scaled to 8 bits by /257 (65535 -> 255); float (``F``) is read as [0, 1] if its maximum is
  at most 1, else as [0, 255]; CMYK / YCbCr / LAB / HSV are converted by PIL; transparency
  (an alpha channel, or a palette / colour-key ``transparency``) is composited over a white or
  black background, and the returned notes say which.

Aligning (:func:`crop_face`), an FFHQ-style crop from dlib's 68 landmarks (iBUG 300-W
indexing; points in continuous pixel coordinates, pixel column ``j`` spans ``[j, j + 1)``):

- ``e_l``, ``e_r``: the means of the two eyes' six points (36-41, 42-47), image-left first;
  ``m``: the midpoint of the mouth corners (48, 54); ``e = (e_l + e_r) / 2``.
- ``a = e_r - e_l`` (across the face) and ``d = m - e`` (down the face). Turning ``d`` by 90
  degrees, ``(d_x, d_y) -> (d_y, -d_x)``, gives a second estimate of the across direction;
  the crop's horizontal unit vector ``u`` is the normalized sum ``a + turn(d)``, so a tilted
  head is rotated upright using both the eye line and the eye-mouth line. ``v`` = ``u`` turned
  90 degrees the other way points down the face.
- half side ``s = zoom * max(2 |a|, 1.8 |d|)`` (whichever of the eye distance and the
  eye-mouth distance says the face is larger), centre ``c = e + 0.1 d`` (a little below the
  eyes). The crop is the square with corners ``c +- s u +- s v``; ``zoom = 1`` is the FFHQ
  framing, ``zoom < 1`` a tighter one (see :func:`generator_zoom`).
- Sampling: the photo is first shrunk by an integer box filter while the square stays at least
  4R pixels wide, padded by repeating its edge pixels where the square leaves it, sampled
  bicubically into an upright square of about its own pixel size (between R and 8R), then
  resized to ``R x R`` with a Lanczos filter (antialiased). Deterministic: no randomness.

Not aligning (:func:`centre_crop`): the largest centred square, Lanczos-resized to ``R x R``.

Face detection is dlib's HOG frontal detector (:mod:`clipbridge.models.attributes`) on a copy
of the photo whose longer side is at most :data:`DETECT_MAX_SIDE` px (retried once at up to
:data:`DETECT_RETRY_SIDE` px when that finds nothing); the largest face is used.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from clipbridge.errors import BadValueError
from clipbridge.io import from_uint8

FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")  # PIL decoders tried (JPEG includes multi-picture MPO)
MAX_PIXELS = 120_000_000     # default pixel limit: a 108-megapixel phone photo passes, a bomb does not
DETECT_MAX_SIDE = 1024       # longer side (px) of the copy the face detector sees first
DETECT_RETRY_SIDE = 4096     # longer side of the second try when the first finds no face
FRAMING_SAMPLES = 32         # generated faces generator_zoom measures
FRAMING_MIN_FACES = 8        # fewer detected faces than this: keep the FFHQ framing
BACKGROUNDS = {"white": (255, 255, 255), "black": (0, 0, 0)}
NO_FACE_HINT = "use --no-align to centre-crop the photo instead"

_EXIF_ORIENTATION = 0x0112
_TRANSPOSE = {  # EXIF orientation -> the transpose that shows the photo upright
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class PhotoError(BadValueError):
    """A photo cannot be used. The message is one line: ``<path>: <problem>``."""


@dataclass(frozen=True)
class Photo:
    """A decoded photo.

    Attributes:
        path: the file read.
        rgb: ``[H, W, 3]`` uint8 RGB, upright.
        format: the PIL format name (``JPEG``, ``PNG``, ...).
        notes: what was done to it besides decoding (rotation, bit depth, transparency), for
            the user; empty for a plain 8-bit RGB photo.
    """

    path: Path
    rgb: np.ndarray
    format: str
    notes: tuple[str, ...]


@dataclass(frozen=True)
class Face:
    """A face crop ready for the encoder.

    Attributes:
        image: ``[1, 3, R, R]`` float32 in [-1, 1].
        crop: ``[R, R, 3]`` uint8, the same pixels.
        photo: the photo it came from.
        landmarks: ``[68, 2]`` float32 (x, y) photo pixels; None for a centre crop.
        square: ``[4, 2]`` float32 corners (top-left, top-right, bottom-right, bottom-left) of
            the crop in photo pixels.
        notes: the photo's notes plus how the crop was made.
    """

    image: torch.Tensor
    crop: np.ndarray
    photo: Photo
    landmarks: np.ndarray | None
    square: np.ndarray
    notes: tuple[str, ...]


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:160]}" if text else type(exc).__name__


# --------------------------------------------------------------------------------- reading


def read_photo(path: str | Path, max_pixels: int = MAX_PIXELS, background: str = "white") -> Photo:
    """Decode ``path`` fully into upright 8-bit RGB; raise :class:`PhotoError` on any problem.

    ``max_pixels``: refuse images with more pixels than this (checked from the header, before
    decoding). PIL refuses on its own anything over ``2 * PIL.Image.MAX_IMAGE_PIXELS`` (about
    179 million pixels) whatever ``max_pixels`` says. ``background``: ``'white'`` or ``'black'``,
    what transparent pixels are composited over.
    """
    if background not in BACKGROUNDS:
        raise ValueError(f"unknown background '{background}'; available: {sorted(BACKGROUNDS)}")
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise PhotoError(f"{path}: file not found") from None
    except OSError as exc:
        raise PhotoError(f"{path}: cannot access the file ({exc.strerror or _short(exc)})") from None
    if path.is_dir():
        raise PhotoError(f"{path}: is a directory, not an image file")
    if not path.is_file():
        raise PhotoError(f"{path}: not a regular file")
    if st.st_size == 0:
        raise PhotoError(f"{path}: empty file (0 bytes), not an image")
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise PhotoError(f"{path}: cannot open the file ({exc.strerror or _short(exc)})") from None
    names = ", ".join(FORMATS).replace("WEBP", "WebP")
    with f, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit is checked below
        try:
            img = Image.open(f, formats=list(FORMATS))
        except Image.DecompressionBombError as exc:
            raise PhotoError(f"{path}: image dimensions are too large to decode safely, a possible "
                             f"decompression bomb ({_short(exc)})") from None
        except UnidentifiedImageError:
            f.seek(0)
            raise PhotoError(f"{path}: {_unidentified(f.read(32), names)}") from None
        except Exception as exc:  # noqa: BLE001 - a decoder may raise anything on a bad header
            raise PhotoError(f"{path}: unreadable image header ({_short(exc)})") from None
        width, height = img.size
        if width < 1 or height < 1:
            raise PhotoError(f"{path}: image has zero size ({width}x{height} pixels)")
        if width * height > max_pixels:
            raise PhotoError(f"{path}: {width}x{height} = {width * height:,} pixels is over the limit of "
                             f"{max_pixels:,} (a decompression bomb?); raise it with --max-pixels if the photo is real")
        fmt = img.format or "?"
        try:
            img.load()  # decode every pixel now: a truncated or corrupt file fails here
        except MemoryError:
            raise PhotoError(f"{path}: not enough memory to decode a {width}x{height} image") from None
        except Exception as exc:  # noqa: BLE001 - decoders raise OSError, SyntaxError, ValueError, zlib.error, ...
            raise PhotoError(f"{path}: truncated or corrupt image data ({_short(exc)})") from None
        notes: list[str] = []
        if getattr(img, "n_frames", 1) > 1:
            notes.append(f"{img.n_frames} frames in the file; the first is used")
        try:
            orientation = int(img.getexif().get(_EXIF_ORIENTATION, 1))
        except Exception:  # noqa: BLE001 - broken EXIF is ignored, the pixels are fine
            orientation = 1
            notes.append("unreadable EXIF metadata ignored")
        try:
            if orientation in _TRANSPOSE:
                img = img.transpose(_TRANSPOSE[orientation])
                notes.append(f"turned upright (EXIF orientation {orientation})")
            rgb = _to_rgb(img, background, notes)
        except MemoryError:
            raise PhotoError(f"{path}: not enough memory to convert a {width}x{height} image") from None
        except Exception as exc:  # noqa: BLE001 - an unusual mode PIL cannot convert
            raise PhotoError(f"{path}: cannot convert colour mode {img.mode} to RGB ({_short(exc)})") from None
    return Photo(path, rgb, fmt, tuple(notes))


_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
               (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"BM", "BMP"))


def _unidentified(head: bytes, names: str) -> str:
    """The problem with a file no decoder accepted, from its first bytes."""
    fmt = next((name for sig, name in _SIGNATURES if head.startswith(sig)), None)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        fmt = "WebP"
    if fmt == "PNG" and head[12:16] == b"IHDR":
        width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
        if width == 0 or height == 0:
            return f"image has zero size ({width}x{height} pixels)"
    if fmt is not None:
        return f"corrupt {fmt} header (no decoder accepts it)"
    return f"not an image in a supported format ({names})"


def _has_transparency(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info


def _to_rgb(img: Image.Image, background: str, notes: list[str]) -> np.ndarray:
    """Any PIL mode -> ``[H, W, 3]`` uint8 RGB (see the module docstring for the rules)."""
    mode = img.mode
    if mode.startswith("I") or mode == "F":
        a = np.asarray(img)
        if mode.startswith("I;16") or mode == "I":
            grey = np.clip(a.astype(np.float64), 0, 65535) / 257.0
            notes.append("16-bit greyscale scaled to 8 bits")
        else:
            a = np.nan_to_num(a.astype(np.float64))
            grey = a * 255.0 if a.max(initial=0.0) <= 1.0 else a
            notes.append("floating-point greyscale scaled to 8 bits")
        grey = np.clip(np.round(grey), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=2))
    if _has_transparency(img):
        rgba = img.convert("RGBA")
        if rgba.getextrema()[3][0] < 255:
            base = Image.new("RGBA", rgba.size, BACKGROUNDS[background] + (255,))
            rgba = Image.alpha_composite(base, rgba)
            notes.append(f"transparent pixels composited over {background}")
        rgb = rgba.convert("RGB")
    else:
        if mode in ("L", "1"):
            notes.append("greyscale replicated to RGB")
        rgb = img if mode == "RGB" else img.convert("RGB")
    return np.array(rgb, dtype=np.uint8, order="C")


# ------------------------------------------------------------------------------- alignment


def crop_square(points: np.ndarray, zoom: float = 1.0) -> np.ndarray:
    """68 landmarks ``[68, 2]`` (x, y) -> ``[4, 2]`` float64 corners of the aligned crop square.

    Corners in order top-left, top-right, bottom-right, bottom-left of the *output* image
    (see the module docstring for the geometry).
    """
    points = np.asarray(points, dtype=np.float64)
    if points.shape != (68, 2) or not np.isfinite(points).all():
        raise ValueError(f"landmarks must be finite [68, 2], got {points.shape}")
    eye_l, eye_r = points[36:42].mean(0), points[42:48].mean(0)
    eyes = (eye_l + eye_r) / 2
    mouth = (points[48] + points[54]) / 2
    across, down = eye_r - eye_l, mouth - eyes
    u = across + np.array([down[1], -down[0]])
    norm = np.linalg.norm(u)
    u = u / norm if norm > 0 else np.array([1.0, 0.0])
    v = np.array([-u[1], u[0]])
    half = zoom * max(2.0 * np.linalg.norm(across), 1.8 * np.linalg.norm(down), 0.5)
    c = eyes + 0.1 * down
    return np.stack([c - half * u - half * v, c + half * u - half * v,
                     c + half * u + half * v, c - half * u + half * v])


def sample_square(rgb: np.ndarray, square: np.ndarray, resolution: int) -> np.ndarray:
    """Resample the (possibly rotated) square ``[4, 2]`` of ``rgb [H, W, 3]`` to ``[R, R, 3]`` uint8."""
    square = np.asarray(square, dtype=np.float64)
    tl, tr, _, bl = square
    side = float(np.linalg.norm(tr - tl))
    img = Image.fromarray(rgb)
    # 1. integer box-filter shrink while the square stays >= 4R px wide (antialiasing for free)
    shrink = max(1, int(side // (4 * resolution)))
    if shrink > 1:
        img = img.reduce(shrink)          # output pixel j averages input pixels [j k, (j + 1) k)
        square = square / shrink
        tl, tr, _, bl = square
        side /= shrink
    # 2. pad by repeating edge pixels where the square (plus a bicubic margin) leaves the photo
    lo = np.floor(square.min(0)).astype(int) - 3
    hi = np.ceil(square.max(0)).astype(int) + 3
    pad_l, pad_t = max(0, -lo[0]), max(0, -lo[1])
    pad_r, pad_b = max(0, hi[0] - img.width), max(0, hi[1] - img.height)
    if pad_l or pad_t or pad_r or pad_b:
        arr = np.pad(np.asarray(img), ((pad_t, pad_b), (pad_l, pad_r), (0, 0)), mode="edge")
        img = Image.fromarray(arr)
        offset = np.array([pad_l, pad_t], dtype=np.float64)
        tl, tr, bl = tl + offset, tr + offset, bl + offset
    # 3. bicubic sampling into an upright square of about its own pixel size, then Lanczos to R
    size = int(min(8 * resolution, max(resolution, math.ceil(side))))
    ex, ey = (tr - tl) / size, (bl - tl) / size   # photo pixels per output pixel along x and y
    coeffs = (ex[0], ey[0], tl[0], ex[1], ey[1], tl[1])
    out = img.transform((size, size), Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BICUBIC)
    if size != resolution:
        out = out.resize((resolution, resolution), Image.Resampling.LANCZOS)
    return np.array(out, dtype=np.uint8, order="C")


def centre_crop(rgb: np.ndarray, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """The largest centred square of ``rgb [H, W, 3]``, Lanczos-resized -> (``[R, R, 3]`` uint8, corners ``[4, 2]``)."""
    h, w = rgb.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    img = Image.fromarray(rgb).crop((left, top, left + s, top + s))
    if s != resolution:
        img = img.resize((resolution, resolution), Image.Resampling.LANCZOS)
    square = np.array([[left, top], [left + s, top], [left + s, top + s], [left, top + s]], dtype=np.float64)
    return np.array(img, dtype=np.uint8, order="C"), square


def _downscaled(rgb: np.ndarray, max_side: int) -> tuple[np.ndarray, tuple[float, float]]:
    """``rgb`` shrunk (antialiased) so its longer side is at most ``max_side``; and (sx, sy) photo px per copy px."""
    h, w = rgb.shape[:2]
    if max(h, w) <= max_side:
        return rgb, (1.0, 1.0)
    f = max_side / max(h, w)
    size = (max(1, round(w * f)), max(1, round(h * f)))
    small = np.array(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0))
    return np.ascontiguousarray(small), (w / size[0], h / size[1])


def find_landmarks(rgb: np.ndarray) -> np.ndarray | None:
    """dlib's 68 landmarks ``[68, 2]`` float32 (photo pixels) of the largest face, or None."""
    from clipbridge.models.attributes import Landmarks

    model = Landmarks()
    h, w = rgb.shape[:2]
    tried = set()
    for max_side in (DETECT_MAX_SIDE, DETECT_RETRY_SIDE):
        small, (sx, sy) = _downscaled(rgb, max_side)
        if small.shape in tried:
            continue
        tried.add(small.shape)
        x = from_uint8(torch.from_numpy(small).permute(2, 0, 1)[None])
        found = model(x)
        if found.face_found[0]:
            return (found.points[0] * np.array([sx, sy], dtype=np.float32)).astype(np.float32)
    return None


def find_face(photo: Photo) -> np.ndarray:
    """The ``[68, 2]`` landmarks of the photo's largest face; :class:`PhotoError` naming the file when none."""
    points = find_landmarks(photo.rgb)
    if points is None:
        raise PhotoError(f"{photo.path}: no face found (dlib frontal face detector); {NO_FACE_HINT}")
    return points


def _check_crop(resolution: int, zoom: float) -> None:
    if resolution < 1:
        raise ValueError(f"resolution must be positive, got {resolution}")
    if not zoom > 0:
        raise ValueError(f"zoom must be positive, got {zoom}")


def read_face(path: str | Path, align: bool = True, *, max_pixels: int = MAX_PIXELS, background: str = "white",
              progress=None) -> tuple[Photo, np.ndarray | None]:
    """The first half of :func:`prepare_face`: the decoded photo and, when aligning, its face's
    ``[68, 2]`` landmarks (None for a centre crop). ``progress(name)`` is told each phase."""
    progress = progress or (lambda name: None)
    progress("read photo")
    photo = read_photo(path, max_pixels=max_pixels, background=background)
    if not align:
        return photo, None
    progress("find face")
    return photo, find_face(photo)


def crop_face(photo: Photo, points: np.ndarray | None, resolution: int, zoom: float = 1.0) -> Face:
    """The second half of :func:`prepare_face`: the ``R x R`` crop, aligned from ``points`` at
    ``zoom`` (the FFHQ framing is 1), or the centre crop when ``points`` is None."""
    _check_crop(resolution, zoom)
    if points is not None:
        square = crop_square(points, zoom)
        crop = sample_square(photo.rgb, square, resolution)
        how = f"face aligned from 68 landmarks (zoom {zoom:.2f})"
    else:
        crop, square = centre_crop(photo.rgb, resolution)
        how = "centre crop, no alignment"
    h, w = photo.rgb.shape[:2]
    notes = photo.notes + (f"{how}: {w}x{h} -> {resolution}x{resolution}",)
    image = from_uint8(torch.from_numpy(crop).permute(2, 0, 1)[None].contiguous())
    return Face(image, crop, photo, points, square.astype(np.float32), notes)


def prepare_face(path: str | Path, resolution: int, align: bool = True, *, zoom: float = 1.0,
                 max_pixels: int = MAX_PIXELS, background: str = "white", progress=None) -> Face:
    """Read ``path`` and crop its face to ``R x R`` (aligned, or a centre crop when ``align`` is False):
    :func:`read_face` then :func:`crop_face`."""
    _check_crop(resolution, zoom)
    photo, points = read_face(path, align, max_pixels=max_pixels, background=background, progress=progress)
    return crop_face(photo, points, resolution, zoom)


def load_face(path: str | Path, resolution: int, align: bool = True, *, zoom: float = 1.0,
              max_pixels: int = MAX_PIXELS, background: str = "white") -> torch.Tensor:
    """``[1, 3, R, R]`` float32 in [-1, 1]: the face of the photo at ``path``.

    ``align``: the FFHQ-style crop from dlib landmarks (raises :class:`PhotoError` when no face
    is found); False = the largest centred square. ``zoom``: crop size relative to the FFHQ
    framing (1.0); :func:`generator_zoom` measures the one a generator was trained on.
    ``max_pixels``, ``background``: see :func:`read_photo`. Every problem with the file is one
    :class:`PhotoError` line naming it.
    """
    return prepare_face(path, resolution, align, zoom=zoom, max_pixels=max_pixels, background=background).image


# -------------------------------------------------------------------------- generator framing


@torch.no_grad()
def generator_zoom(G, n: int = FRAMING_SAMPLES, seed: int = 0, min_faces: int = FRAMING_MIN_FACES) -> tuple[float, int]:
    """The crop zoom that frames a photo's face the way generator ``G`` frames its own faces.

    Generates ``n`` faces (z drawn with ``seed``, constant noise), finds their landmarks, and
    for each found face computes the FFHQ square's half side ``h`` (zoom 1); the generator's
    image spans ``R / 2`` on each side of the centre, so the face's zoom is ``(R / 2) / h``.
    Returns (the median zoom, faces found), or (1.0, faces found) when fewer than ``min_faces``
    faces are found (a generator whose samples do not look like faces).
    """
    from clipbridge.models.attributes import Landmarks

    device = G.w_avg.device
    z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(seed)).to(device)
    images = G.synthesis(G.mapping(z, None), noise_mode="const").float().cpu()
    found = Landmarks()(images)
    halves = [np.linalg.norm(sq[1] - sq[0]) / 2 for sq in map(crop_square, found.points[found.face_found])]
    zooms = [(images.shape[-1] / 2) / h for h in halves]
    if len(zooms) < min_faces:
        return 1.0, len(zooms)
    return float(np.median(zooms)), len(zooms)
