"""ST-LPIPS (clipbridge.models.stlpips): equal to the package's own network, ranks distortions
sensibly on DCGAN faces, and rejects a file that is not its weights with one line naming it."""

import sys
import types

import pytest
import torch
import torch.nn.functional as F
from helpers import dcgan_faces

from clipbridge.errors import MissingFileError, UnknownNameError
from clipbridge.io import ModelFileError
from clipbridge.models.lpips import LPIPS, build_lpips
from clipbridge.models import stlpips
from clipbridge.models.stlpips import STLPIPS, package_weights


@pytest.fixture(scope="module")
def metric() -> STLPIPS:
    return build_lpips("ST-LPIPS", seed=0)


def _package_network() -> torch.nn.Module:
    """The package's own ST-LPIPS (alex). Its modules import IPython and torchsummary without
    using them: stub modules stand in for them during this import only."""
    stubs = {"IPython": types.ModuleType("IPython"), "torchsummary": types.ModuleType("torchsummary")}
    stubs["IPython"].embed = stubs["torchsummary"].summary = None
    with pytest.MonkeyPatch.context() as mp:  # undoes these two entries only, not the import's others
        for name, module in stubs.items():
            mp.setitem(sys.modules, name, module)
        from stlpips_pytorch import stlpips as package

        return package.LPIPS(net="alex", variant="shift_tolerant", verbose=False).eval()


def test_equals_package_network(metric):
    ref = _package_network()
    assert metric.label == "ST-LPIPS" and not metric.training
    assert all(not p.requires_grad for p in metric.parameters())
    g = torch.Generator().manual_seed(0)
    for side in (64, 80):  # sides the input policy leaves alone, so both see the same pixels
        x = torch.rand(3, 3, side, side, generator=g) * 2 - 1
        y = torch.rand(3, 3, side, side, generator=g) * 2 - 1
        with torch.no_grad():
            expected = ref(x, y).flatten()
        got = metric(x, y)
        assert got.shape == (3,) and got.dtype == torch.float32
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_ranks_distortions_on_faces(metric):
    faces = dcgan_faces(4)
    blurred = F.avg_pool2d(F.pad(faces, (1, 1, 1, 1), mode="reflect"), 3, stride=1)
    other = faces.roll(1, 0)
    same, blur, far = metric(faces, faces), metric(faces, blurred), metric(faces, other)
    assert same.abs().max() < 1e-6
    assert (blur > 0.01).all() and (far > blur).all()



def test_input_policy_matches_lpips(metric):
    """The common input policy (metrics.perceptual_input): a 32 px pair is scored as its
    antialiased 64 px upsampling."""
    small = F.interpolate(dcgan_faces(4), size=32, mode="area")
    up = F.interpolate(small, size=64, mode="bilinear", align_corners=False, antialias=True)
    torch.testing.assert_close(metric(small, small.roll(1, 0)), metric(up, up.roll(1, 0)), rtol=0, atol=1e-6)


def _bad_file(tmp_path, sd, name="bad.pth"):
    path = tmp_path / name
    torch.save(sd, path)
    return path


@pytest.mark.parametrize("corrupt", ["garbage", "shape", "missing", "buffer", "not_dict"])
def test_bad_weights_file_is_one_line(tmp_path, corrupt):
    sd = torch.load(package_weights(), map_location="cpu", weights_only=True)
    if corrupt == "garbage":
        path = tmp_path / "bad.pth"
        path.write_bytes(b"not a torch file" * 10)
    elif corrupt == "shape":
        sd["lin2.model.1.weight"] = torch.zeros(1, 256, 1, 1)
        path = _bad_file(tmp_path, sd)
    elif corrupt == "missing":
        del sd["net.slice5.13.bias"]
        path = _bad_file(tmp_path, sd)
    elif corrupt == "buffer":
        sd["net.slice1.1.filt"] = torch.full_like(sd["net.slice1.1.filt"], 1 / 9)  # box, not binomial
        path = _bad_file(tmp_path, sd)
    else:
        path = _bad_file(tmp_path, [sd["lin0.model.1.weight"]])
    with pytest.raises(ModelFileError) as err:
        STLPIPS(path)
    msg = str(err.value)
    assert msg.startswith(str(path)) and "\n" not in msg


def test_missing_package_and_unknown_variant(monkeypatch):
    monkeypatch.setattr(stlpips, "PACKAGE", "no_such_package_for_stlpips")
    with pytest.raises(MissingFileError, match="stlpips-pytorch"):
        STLPIPS()
    with pytest.raises(UnknownNameError, match="ST-LPIPS"):
        build_lpips("ST-LPIPS-vgg", seed=0)
