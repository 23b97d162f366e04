"""Reading photos safely (modes, EXIF, bad files) and the FFHQ-style face alignment."""

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from clipbridge.cli import photo
from clipbridge.models.attributes import Landmarks
from helpers import ROOT

ASTRONAUT = ROOT / "data" / "faces" / "astronaut.png"
HOPPER = ROOT / "data" / "faces" / "grace_hopper.jpg"


def pattern(w: int = 40, h: int = 30) -> np.ndarray:
    """An asymmetric ``[h, w, 3]`` uint8 test image (no two flips or rotations alike)."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), (x * y) % 256], -1).astype(np.uint8)


def png_with_size(width: int, height: int) -> bytes:
    """A 1x1 PNG whose IHDR claims ``width x height`` (CRC fixed): a decompression bomb header."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def eye_geometry(points: np.ndarray) -> tuple[float, np.ndarray]:
    """Angle (degrees) of the eye line and the eyes' midpoint."""
    left, right = points[36:42].mean(0), points[42:48].mean(0)
    d = right - left
    return float(np.degrees(np.arctan2(d[1], d[0]))), (left + right) / 2


# ------------------------------------------------------------------------------- reading


def test_rgb_png_and_lossless_webp_round_trip(tmp_path):
    rgb = pattern()
    for fmt, kwargs in (("png", {}), ("webp", {"lossless": True}), ("bmp", {}), ("tiff", {})):
        path = tmp_path / f"p.{fmt}"
        Image.fromarray(rgb).save(path, **kwargs)
        got = photo.read_photo(path)
        assert got.rgb.dtype == np.uint8 and got.rgb.shape == (30, 40, 3)
        assert np.array_equal(got.rgb, rgb), fmt
        assert got.notes == ()


@pytest.mark.parametrize("orientation", [2, 3, 4, 5, 6, 7, 8])
def test_exif_orientation_is_applied(tmp_path, orientation):
    upright = pattern()
    # store the pixels as a camera would: the inverse of the transpose a viewer applies
    inverse = {2: 2, 3: 3, 4: 4, 5: 5, 6: 8, 7: 7, 8: 6}[orientation]
    stored = Image.fromarray(upright).transpose(photo._TRANSPOSE[inverse])
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "rotated.png"
    stored.save(path, exif=exif.tobytes())
    got = photo.read_photo(path)
    assert np.array_equal(got.rgb, upright)
    assert any("EXIF orientation" in n for n in got.notes)


def test_exif_rotated_jpeg(tmp_path):
    upright = np.zeros((60, 40, 3), dtype=np.uint8)
    upright[:20] = (255, 0, 0)                      # red band on top of the upright photo
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # the camera's pixels
    exif = Image.Exif()
    exif[0x0112] = 6                                 # "rotate 90 CW to view"
    path = tmp_path / "phone.jpg"
    stored.save(path, quality=95, exif=exif.tobytes())
    got = photo.read_photo(path).rgb
    assert got.shape == (60, 40, 3)
    assert got[:15, :, 0].mean() > 200 and got[30:, :, 0].mean() < 50


def test_transparency_over_white_or_black(tmp_path):
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., :3] = (200, 10, 10)
    rgba[:4, :, 3] = 255                             # top half opaque, bottom transparent
    path = tmp_path / "a.png"
    Image.fromarray(rgba, "RGBA").save(path)
    white = photo.read_photo(path)
    black = photo.read_photo(path, background="black")
    assert (white.rgb[:4] == (200, 10, 10)).all() and (black.rgb[:4] == (200, 10, 10)).all()
    assert (white.rgb[4:] == 255).all() and (black.rgb[4:] == 0).all()
    assert any("over white" in n for n in white.notes) and any("over black" in n for n in black.notes)
    la = tmp_path / "la.png"
    Image.fromarray(rgba[..., [0, 3]], "LA").save(la)
    assert (photo.read_photo(la).rgb[4:] == 255).all()
    pal = Image.fromarray(rgba[..., :3]).convert("P")
    pal.info["transparency"] = 0
    pal.save(tmp_path / "p.png", transparency=0)
    assert photo.read_photo(tmp_path / "p.png", background="black").rgb.shape == (8, 8, 3)
    opaque = tmp_path / "opaque.png"
    Image.fromarray(np.dstack([rgba[..., :3], np.full((8, 8), 255, np.uint8)]), "RGBA").save(opaque)
    assert photo.read_photo(opaque).notes == ()      # an unused alpha channel is not worth a note
    with pytest.raises(ValueError, match="available"):
        photo.read_photo(path, background="grey")


def test_greyscale_16_bit_float_cmyk(tmp_path):
    grey = (np.arange(48, dtype=np.uint8).reshape(6, 8) * 5)
    Image.fromarray(grey, "L").save(tmp_path / "l.png")
    got = photo.read_photo(tmp_path / "l.png").rgb
    assert np.array_equal(got, np.repeat(grey[..., None], 3, 2))
    deep = np.array([[0, 257, 257 * 100, 65535]], dtype=np.uint16)
    Image.fromarray(deep).save(tmp_path / "i16.png")
    assert Image.open(tmp_path / "i16.png").mode.startswith("I")
    got = photo.read_photo(tmp_path / "i16.png")
    assert got.rgb[0, :, 0].tolist() == [0, 1, 100, 255] and "16-bit" in got.notes[0]
    Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), "F").save(tmp_path / "f.tiff")
    assert photo.read_photo(tmp_path / "f.tiff").rgb[0, :, 1].tolist() == [0, 128, 255]
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    red = photo.read_photo(tmp_path / "cmyk.jpg").rgb.reshape(-1, 3).mean(0)
    assert red[0] > 200 and red[1] < 60 and red[2] < 60
    Image.fromarray(grey > 100).save(tmp_path / "bits.png")
    assert set(np.unique(photo.read_photo(tmp_path / "bits.png").rgb)) <= {0, 255}


def test_multi_frame_gif_uses_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    got = photo.read_photo(tmp_path / "a.gif")
    assert got.rgb[0, 0, 0] > 200 and "2 frames" in got.notes[0]


def bad_files(tmp_path) -> dict:
    """name -> (path, words the one-line error must contain)."""
    buf = io.BytesIO()
    Image.fromarray(pattern(64, 64)).save(buf, "JPEG")
    jpeg = buf.getvalue()
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
    png = buf.getvalue()
    files = {
        "missing": (tmp_path / "absent.jpg", None, "file not found"),
        "directory": (tmp_path / "adir", None, "directory"),
        "empty": (tmp_path / "empty.jpg", b"", "empty file"),
        "text": (tmp_path / "notes.jpg", b"these are not the pixels you are looking for\n" * 20, "not an image"),
        "truncated_jpeg": (tmp_path / "cut.jpg", jpeg[: len(jpeg) // 2], "truncated or corrupt"),
        "truncated_png": (tmp_path / "cut.png", png[: len(png) // 2], "truncated or corrupt"),
        "bomb_pil": (tmp_path / "bomb.png", png_with_size(200_000, 200_000), "decompression bomb"),
        "bomb_ours": (tmp_path / "bomb2.png", png_with_size(12_000, 12_000), "decompression bomb"),
        "zero_size": (tmp_path / "zero.png", png_with_size(0, 5), "zero size"),
        "eps": (tmp_path / "vector.eps", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "not an image"),
    }
    (tmp_path / "adir").mkdir()
    for path, data, _ in files.values():
        if data is not None:
            path.write_bytes(data)
    return {k: (p, words) for k, (p, _, words) in files.items()}


def test_bad_files_give_one_line_naming_the_file(tmp_path):
    for name, (path, words) in bad_files(tmp_path).items():
        with pytest.raises(photo.PhotoError) as err:
            photo.read_photo(path)
        msg = str(err.value)
        assert msg.startswith(f"{path}: ") and "\n" not in msg, (name, msg)
        assert words in msg, (name, msg)


def test_pixel_limit_is_configurable(tmp_path):
    path = tmp_path / "big.png"
    Image.new("RGB", (1500, 1000), (255, 255, 255)).save(path)   # 1.5 Mpx, a few KB on disk
    assert path.stat().st_size < 20_000
    with pytest.raises(photo.PhotoError, match=r"1500x1000 = 1,500,000 pixels is over the limit of 1,000,000"):
        photo.read_photo(path, max_pixels=1_000_000)
    assert photo.read_photo(path, max_pixels=2_000_000).rgb.shape == (1000, 1500, 3)


# ------------------------------------------------------------------------------- geometry


def test_crop_square_follows_similarity_transforms():
    points = Landmarks()(torch.from_numpy(np.array(Image.open(HOPPER))).permute(2, 0, 1)[None].float() / 127.5 - 1)
    p = points.points[0].astype(np.float64)
    sq = photo.crop_square(p)
    side = np.linalg.norm(sq[1] - sq[0])
    assert np.allclose(np.linalg.norm(sq[3] - sq[0]), side) and np.isclose(np.dot(sq[1] - sq[0], sq[3] - sq[0]), 0)
    angle, scale, shift = np.radians(25), 1.7, np.array([13.0, -4.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    assert np.allclose(photo.crop_square(p @ rot.T + shift), sq @ rot.T + shift, atol=1e-6)
    half = photo.crop_square(p, zoom=0.5)
    assert np.isclose(np.linalg.norm(half[1] - half[0]), side / 2)
    assert np.allclose(half.mean(0), sq.mean(0))
    assert (sq[2] - sq[0])[1] > 0 and (sq[1] - sq[0])[0] > 0   # upright: x right, y down


def test_sample_square_identity_and_centre_crop():
    rgb = np.random.default_rng(1).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    corners = np.array([[0, 0], [24, 0], [24, 24], [0, 24]], dtype=np.float64)
    assert np.array_equal(photo.sample_square(rgb, corners, 24), rgb)
    wide = np.random.default_rng(2).integers(0, 256, (20, 36, 3), dtype=np.uint8)
    crop, square = photo.centre_crop(wide, 20)
    assert np.array_equal(crop, wide[:, 8:28]) and square[0].tolist() == [8, 0]
    off = photo.sample_square(rgb, corners + 100, 8)        # entirely outside: edge pixels repeated
    assert np.all(off == rgb[-1, -1])


@pytest.mark.parametrize("name", ["astronaut.png", "grace_hopper.jpg"])
def test_real_photo_aligns(name):
    face = photo.prepare_face(ROOT / "data" / "faces" / name, 64)
    assert face.image.shape == (1, 3, 64, 64) and face.image.dtype == torch.float32
    assert -1 <= face.image.min() and face.image.max() <= 1
    assert face.landmarks is not None and face.crop.shape == (64, 64, 3)
    # in the aligned crop the eyes are level and centred, where the FFHQ geometry puts them
    again = Landmarks()(torch.from_numpy(face.crop).permute(2, 0, 1)[None].float() / 127.5 - 1)
    assert again.face_found[0]
    angle, mid = eye_geometry(again.points[0])
    assert abs(angle) < 4 and abs(mid[0] - 32) < 2.5
    assert torch.equal(photo.load_face(ROOT / "data" / "faces" / name, 64), face.image)


def test_alignment_undoes_rotation_and_scale(tmp_path):
    rgb = np.array(Image.open(ASTRONAUT).convert("RGB"))
    ref = photo.prepare_face(ASTRONAUT, 64).crop.astype(np.float32)
    turned = Image.fromarray(rgb).rotate(20, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=(128, 128, 128))
    turned = turned.resize((turned.width * 2, turned.height * 2), Image.Resampling.BICUBIC)  # > DETECT_MAX_SIDE
    path = tmp_path / "turned.png"
    turned.save(path)
    got = photo.prepare_face(path, 64).crop.astype(np.float32)
    assert np.abs(got - ref).mean() < 12        # same crop within resampling and landmark noise
    noface = photo.prepare_face(path, 64, align=False).crop.astype(np.float32)
    assert np.abs(noface - ref).mean() > 2 * np.abs(got - ref).mean()


def test_no_face_is_a_clear_error(tmp_path):
    path = tmp_path / "wall.png"
    Image.fromarray(pattern(300, 200)).save(path)
    with pytest.raises(photo.PhotoError, match=r"no face found .*--no-align"):
        photo.load_face(path, 32)
    assert photo.load_face(path, 32, align=False).shape == (1, 3, 32, 32)


def test_dcgan_framing_is_measured():
    from helpers import _dcgan

    zoom, found = photo.generator_zoom(_dcgan(), n=16)
    assert found >= 8 and 0.65 < zoom < 0.9       # its faces fill more of the frame than FFHQ's
