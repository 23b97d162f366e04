"""The encoder study's image encoders: shapes, unit rows, determinism, seeds, input checks."""

import pytest
import torch
import torch.nn.functional as F
from helpers import dcgan_faces

from clipbridge import registry
from clipbridge.errors import BadValueError, UnknownNameError
from clipbridge.io import from_uint8
from clipbridge.models import encoders
from clipbridge.models.attributes import detect

DIMS = {"pixels-16": 768, "dlib-face": 128, "clip-offline": 256, "clip-offline-random": 256, "rn50-random": 1024}


@pytest.fixture(scope="module")
def faces() -> torch.Tensor:
    """DCGAN faces 8-11 (seed 0) ``[4, 3, 64, 64]``: dlib's detector misses faces 9 and 10."""
    return dcgan_faces(12)[8:]


@pytest.fixture(scope="module")
def built() -> dict:
    """The cheap encoders, built once (seed 0)."""
    return {name: encoders.build_encoder(name) for name in ("pixels-16", "dlib-face", "clip-offline",
                                                            "clip-offline-random")}


def assert_unit_rows(e: torch.Tensor, n: int, dim: int):
    assert e.dtype == torch.float32 and e.shape == (n, dim)
    assert torch.isfinite(e).all()
    torch.testing.assert_close(e.norm(dim=1), torch.ones(n), atol=1e-5, rtol=0)


def assert_distinct_rows(e: torch.Tensor):
    cos = e @ e.T
    off = cos[~torch.eye(len(e), dtype=torch.bool)]
    assert off.max() < 0.999, f"two faces embed alike (max cosine {off.max():.5f})"


@pytest.mark.parametrize("name", ["pixels-16", "dlib-face", "clip-offline", "clip-offline-random"])
def test_shape_unit_rows_and_repeatability(built, faces, name):
    enc = built[name]
    assert enc.embed_dim == DIMS[name] and enc.name == name and enc.label == encoders.ENCODERS[name].label
    assert not enc.training and not any(p.requires_grad for p in enc.parameters())
    a, b = enc(faces), enc(faces)
    assert_unit_rows(a, len(faces), DIMS[name])
    assert torch.equal(a, b)
    assert_distinct_rows(a)


def test_information_tags_are_documented():
    assert {s.information for s in encoders.ENCODERS.values()} <= set(encoders.INFORMATION)
    assert encoders.ENCODERS["pixels-16"].information == "none"
    assert encoders.ENCODERS["rn50-random"].information == "random-init"
    assert encoders.ENCODERS["clip-offline-random"].information == "random-init"
    assert encoders.ENCODERS["clip-offline"].information == "trained"
    assert set(registry.ENCODERS) <= set(encoders.ENCODERS)


def test_pixels_are_block_means(built, faces):
    want = F.normalize(faces.unfold(2, 4, 4).unfold(3, 4, 4).mean((-1, -2)).flatten(1), dim=-1)
    torch.testing.assert_close(built["pixels-16"](faces), want, atol=1e-6, rtol=0)


def test_clip_offline_is_the_registry_encoder(built, faces):
    clip = registry.load_encoder(registry.encoder_entry("clip-offline").pretrained)
    assert torch.equal(built["clip-offline"](faces), clip.encode_image(faces))


def test_dlib_falls_back_to_the_whole_frame(built, faces):
    enc = built["dlib-face"]
    seen, found = enc.seen_total, enc.found_total
    e = enc(faces)
    assert torch.equal(enc.last_found, torch.from_numpy(detect(faces).face_found))
    assert enc.last_found.tolist() == [True, False, False, True]  # real misses get an embedding too
    assert (enc.seen_total - seen, enc.found_total - found) == (4, 2)
    assert_unit_rows(e, 4, 128)
    grey = enc(torch.zeros(2, 3, 64, 64))
    assert not enc.last_found.any()
    assert_unit_rows(grey, 2, 128)


def test_random_init_depends_on_the_seed_only(built, faces):
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    again = encoders.build_encoder("clip-offline-random", seed=0)
    assert torch.equal(torch.rand(3), before)  # the global RNG is restored
    other = encoders.build_encoder("clip-offline-random", seed=1)
    a = built["clip-offline-random"](faces)
    assert torch.equal(again(faces), a)
    assert not torch.allclose(other(faces), a, atol=1e-3)
    assert not torch.allclose(built["clip-offline"](faces), a, atol=1e-3)


def test_rn50_random_through_the_registry():
    torch.manual_seed(5)
    before = torch.rand(3)
    torch.manual_seed(5)
    enc = encoders.build_encoder("rn50-random", seed=0)
    assert torch.equal(torch.rand(3), before)  # the global RNG is restored
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    a = enc(x)
    assert_unit_rows(a, 2, 1024)
    assert torch.equal(enc(x), a)
    assert enc.information == "random-init" and not enc.clip.has_text


def test_embed_batches_uint8_images(built, faces):
    u8 = ((faces + 1) * 127.5).round().to(torch.uint8)
    enc = built["pixels-16"]
    out = encoders.embed(enc, u8, batch=3, desc="test")
    assert torch.equal(out, enc(from_uint8(u8)))
    assert encoders.embed(enc, u8[:0], batch=3).shape == (0, 768)
    with pytest.raises(BadValueError, match="uint8"):
        encoders.embed(enc, faces, batch=3)


def test_unknown_name_lists_the_encoders():
    with pytest.raises(UnknownNameError) as info:
        encoders.build_encoder("vgg-face")
    msg = str(info.value)
    assert "'vgg-face'" in msg and str(sorted(encoders.ENCODERS)) in msg
    assert isinstance(info.value, KeyError)


BAD = {
    "3-d": torch.zeros(2, 64, 64),
    "grey channel": torch.zeros(2, 1, 64, 64),
    "non-square": torch.zeros(2, 3, 64, 32),
    "uint8": torch.zeros(2, 3, 64, 64, dtype=torch.uint8),
    "0..255": torch.full((2, 3, 64, 64), 255.0),
    "nan": torch.full((2, 3, 64, 64), float("nan")),
}


@pytest.mark.parametrize("name", ["pixels-16", "dlib-face", "clip-offline"])
@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_images_are_one_line_naming_the_encoder(built, name, case):
    with pytest.raises(BadValueError) as info:
        built[name](BAD[case])
    msg = str(info.value)
    assert f"encoder '{name}'" in msg and "\n" not in msg
    if case == "0..255":
        assert "[255.0, 255.0]" in msg


def test_slack_of_the_range_check(built):
    built["pixels-16"](torch.full((1, 3, 16, 16), 1.0005))
    with pytest.raises(BadValueError):
        built["pixels-16"](torch.full((1, 3, 16, 16), -1.01))
