"""The pretrained attribute models on real public-domain photos, DCGAN faces and noise."""

from dataclasses import astuple, is_dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import dcgan_faces, load_photo

from clipbridge.models.attributes import (
    AttributeModel,
    Identity,
    Landmarks,
    detect,
    identity_cosine,
)

@pytest.fixture(scope="module")
def faces() -> torch.Tensor:
    """16 DCGAN faces ``[16, 3, 64, 64]``, seed 0."""
    return dcgan_faces(16)


@pytest.fixture(scope="module")
def noise() -> torch.Tensor:
    return torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1


def test_astronaut_is_an_adult_woman():
    r = AttributeModel()(load_photo("astronaut.png"))
    assert r.face_found[0] and not r.fallback[0]
    assert 20 <= r.age[0] <= 60
    assert r.female_prob[0] > 0.5
    x0, y0, x1, y1 = r.box[0]
    assert 0 <= x0 < x1 <= 512 and 0 <= y0 < y1 <= 512


def test_grace_hopper_is_old():
    r = AttributeModel()(load_photo("grace_hopper.jpg"))
    assert r.face_found[0] and r.age[0] >= 60


def test_noise_has_no_face_and_fallback_is_flagged(noise):
    r = AttributeModel()(noise)
    assert not r.face_found.any() and not r.fallback.any()
    assert np.isnan(r.age).all() and np.isnan(r.female_prob).all() and np.isnan(r.box).all()
    fb = AttributeModel(fallback=True)(noise)
    assert fb.fallback.all() and not fb.face_found.any()
    assert np.isfinite(fb.age).all() and ((fb.female_prob >= 0) & (fb.female_prob <= 1)).all()
    np.testing.assert_array_equal(fb.box, [[0, 0, 64, 64]] * 2)
    lm = Landmarks()(noise)
    assert not lm.face_found.any() and np.isnan(lm.points).all()
    assert np.isnan(Identity()(noise)).all()


def test_two_calls_agree_exactly(faces):
    for model in (AttributeModel(), Landmarks(), Identity()):
        a, b = model(faces), model(faces)
        for x, y in zip(*(astuple(r) if is_dataclass(r) else (r,) for r in (a, b))):
            np.testing.assert_array_equal(x, y)  # NaNs compare equal here


def test_dcgan_faces_are_found_with_plausible_attributes(faces):
    r = AttributeModel()(faces)
    assert r.face_found.mean() >= 0.6  # 155 of 200 faces (benchmarks/attributes.py)
    found = r.face_found
    assert ((r.age[found] > 0) & (r.age[found] < 100)).all()
    assert 0 < (r.female_prob[found] > 0.5).mean() < 1  # both genders among 16 faces


def test_coordinates_are_in_input_pixels(faces):
    """Landmarks of a 64 px face and of the same face given at 256 px differ by the factor 4."""
    small = Landmarks()(faces[:4])
    big = Landmarks()(F.interpolate(faces[:4], size=256, mode="bicubic", align_corners=False))
    np.testing.assert_array_equal(small.face_found, big.face_found)
    np.testing.assert_allclose(small.points * 4, big.points, atol=1e-4)
    np.testing.assert_allclose(small.box * 4, big.box, atol=1e-4)


def test_identity_cosine(faces):
    det = detect(faces)
    keep = det.face_found
    ident = Identity()
    d = ident(det)
    flipped = ident(faces.flip(-1))
    shifted = ident(torch.roll(faces, shifts=(2, 2), dims=(-2, -1)))
    assert d.shape == (16, 128) and d.dtype == np.float32
    np.testing.assert_allclose(identity_cosine(d[keep], d[keep]), 1.0, atol=1e-5)
    other = identity_cosine(d[keep], np.roll(d[keep], 1, axis=0))
    for variant in (flipped, shifted):
        both = keep & ~np.isnan(variant[:, 0])
        same = identity_cosine(d[both], variant[both])
        assert same.min() > 0.95
        assert same.mean() > other.mean() + 0.05


def test_bad_model_files_name_the_file(tmp_path):
    missing = tmp_path / "missing.dat"
    with pytest.raises(FileNotFoundError, match="missing.dat"):
        Landmarks(missing)
    junk = tmp_path / "junk.dat"
    junk.write_bytes(b"not a dlib model")
    with pytest.raises(ValueError, match="junk.dat"):
        Identity(junk)
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        AttributeModel(model_dir=tmp_path)


def test_rejects_wrong_shape():
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        detect(torch.zeros(3, 64, 64))
