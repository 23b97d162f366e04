"""Safe import of NVlabs pickles: exact weights, nothing executed, one-line errors."""

import pickle
import sys
import types
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from clipbridge.io import ModelFileError
from clipbridge.models import nvlabs
from clipbridge.models.nvlabs import REGISTRY, load_nvlabs, resolve_weights, sha256_of
from clipbridge.models.stylegan2 import Generator

KWARGS = dict(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3)
MAPPING = dict(num_layers=2, embed_features=None, layer_features=None, activation="lrelu",
               lr_multiplier=0.01, w_avg_beta=0.995)
SYNTHESIS = dict(channel_base=128, channel_max=8, num_fp16_res=0, conv_clamp=256, architecture="skip",
                 resample_filter=[1, 3, 3, 1], use_noise=True, activation="lrelu")


class EasyDict(dict):
    """Pickled as dnnlib.util.EasyDict, like the kwargs in NVlabs pickles."""


class _PersistentObject:
    """Reduces like a torch_utils.persistence object: reconstruct function + meta dict."""

    def __init__(self, meta):
        self.meta = meta

    def __reduce__(self):
        return sys.modules["torch_utils.persistence"]._reconstruct_persistent_obj, (self.meta,)


def _persistent(module, module_src, init_args=(), init_kwargs=None):
    """Mirror a torch module tree as NVlabs persistent objects (parameters, buffers, submodules)."""
    state = dict(
        training=False,
        _parameters=OrderedDict(module._parameters),
        _buffers=OrderedDict(module._buffers),
        _non_persistent_buffers_set=set(),
        _modules=OrderedDict((n, _persistent(m, module_src)) for n, m in module._modules.items()),
        _init_args=init_args,
        _init_kwargs=init_kwargs if init_kwargs is not None else {},
        weight_gain=np.float64(0.125),  # NVlabs modules keep numpy scalars in their state
    )
    return _PersistentObject(dict(type="class", version=6, module_src=module_src,
                                  class_name=type(module).__name__, state=state))


def write_nvlabs_pickle(path, G, marker, init_args=(), init_kwargs=None, class_src="", drop_g_ema=False):
    """Write ``G`` as an NVlabs-format network pickle whose code would create ``marker`` if run.

    The fake ``torch_utils.persistence`` and ``dnnlib.util`` modules exist only while dumping.
    """
    module_src = f"import pathlib\npathlib.Path({str(marker)!r}).write_text('executed')\n{class_src}"

    def _reconstruct_persistent_obj(meta):
        Path(marker).write_text("reconstruct called")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    fakes = {name: types.ModuleType(name) for name in ("torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util")}
    fakes["torch_utils.persistence"]._reconstruct_persistent_obj = _reconstruct_persistent_obj
    fakes["dnnlib.util"].EasyDict = EasyDict
    if init_kwargs is None:
        init_kwargs = EasyDict(**KWARGS, mapping_kwargs=EasyDict(MAPPING), synthesis_kwargs=EasyDict(SYNTHESIS))
    net = _persistent(G, module_src, init_args, init_kwargs)
    data = dict(G=net, D=_persistent(torch.nn.Linear(2, 2), module_src), G_ema=net, augment_pipe=None,
                training_set_kwargs=EasyDict(path="ffhq.zip", resolution=16))
    if drop_g_ema:
        del data["G_ema"]
    saved = {name: sys.modules.get(name) for name in fakes}
    sys.modules.update(fakes)
    EasyDict.__module__ = "dnnlib.util"
    try:
        path.write_bytes(pickle.dumps(data, protocol=4))
    finally:
        EasyDict.__module__ = __name__
        for name, module in saved.items():
            if module is None:
                del sys.modules[name]
            else:
                sys.modules[name] = module


def reference_generator(seed=0):
    torch.manual_seed(seed)
    G = Generator(**KWARGS, mapping_kwargs=MAPPING, synthesis_kwargs=SYNTHESIS)
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.normal_(0, 0.3)
        G.mapping.w_avg.normal_()
    return G.eval()


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "EXECUTED"
    yield path
    assert not path.exists(), "code from the pickle was executed"


def test_weights_load_exactly_and_nothing_runs(tmp_path, marker):
    G = reference_generator()
    path = tmp_path / "network-snapshot.pkl"
    write_nvlabs_pickle(path, G, marker)
    loaded = load_nvlabs(path, sha256=sha256_of(path))
    assert "torch_utils" not in sys.modules and "dnnlib" not in sys.modules
    assert loaded.init_kwargs == dict(**KWARGS, mapping_kwargs=MAPPING, synthesis_kwargs=SYNTHESIS)
    ref = G.state_dict()
    assert list(loaded.state_dict()) == list(ref)
    assert all(torch.equal(v, ref[k]) for k, v in loaded.state_dict().items())
    z = torch.randn(2, 8)
    assert torch.equal(loaded(z, None), G(z, None))


def test_stylegan3_repo_layout_loads(tmp_path, marker):
    """stylegan3's StyleGAN2 Generator: positional args, synthesis kwargs flat, extra keys."""
    G = reference_generator(seed=1)
    path = tmp_path / "stylegan2-ffhq-16x16.pkl"
    flat = dict(mapping_kwargs=dict(MAPPING), **SYNTHESIS, fused_modconv_default="inference_only")
    write_nvlabs_pickle(path, G, marker, init_args=tuple(KWARGS.values()), init_kwargs=flat)
    loaded = load_nvlabs(path)
    z = torch.randn(2, 8)
    assert torch.equal(loaded(z, None), G(z, None))


def _error(path, **kwargs):
    with pytest.raises(ModelFileError) as info:
        load_nvlabs(path, **kwargs)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message
    return message


def test_html_page_is_recognized(tmp_path):
    path = tmp_path / "ffhq.pkl"
    path.write_text("<!DOCTYPE html>\n<html><head><title>Sign in</title></head></html>")
    assert "looks like an HTML page" in _error(path)


def test_truncated_pickle(tmp_path, marker):
    path = tmp_path / "cut.pkl"
    write_nvlabs_pickle(path, reference_generator(), marker)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert "truncated or corrupt pickle" in _error(path)


def test_not_a_pickle_and_missing_file(tmp_path):
    path = tmp_path / "x.pkl"
    path.write_bytes(b"GIF89a....")
    assert "not a pickle" in _error(path)
    assert "no such file" in _error(tmp_path / "absent.pkl")


def test_no_g_ema(tmp_path, marker):
    path = tmp_path / "no-ema.pkl"
    write_nvlabs_pickle(path, reference_generator(), marker, drop_g_ema=True)
    assert "no 'G_ema'" in _error(path) and "augment_pipe" in _error(path)


def test_wrong_architecture(tmp_path, marker):
    path = tmp_path / "wrong.pkl"
    kwargs = dict(**KWARGS, mapping_kwargs=MAPPING, synthesis_kwargs=dict(SYNTHESIS, channel_max=4))
    write_nvlabs_pickle(path, reference_generator(), marker, init_kwargs=kwargs)
    message = _error(path)
    assert "shape mismatch" in message and "synthesis.b16.conv0.affine.bias [8] vs [4]" in message
    kwargs = dict(**KWARGS, mapping_kwargs=dict(MAPPING, num_layers=3), synthesis_kwargs=SYNTHESIS)
    write_nvlabs_pickle(path, reference_generator(), marker, init_kwargs=kwargs)
    assert "missing [mapping.fc2.bias, mapping.fc2.weight]" in _error(path)
    kwargs = dict(**KWARGS, mapping_kwargs=MAPPING, synthesis_kwargs=dict(SYNTHESIS, magnitude_ema_beta=0.99))
    write_nvlabs_pickle(path, reference_generator(), marker, init_kwargs=kwargs)
    assert "wrong architecture" in _error(path)


def test_hash_mismatch(tmp_path, marker):
    path = tmp_path / "net.pkl"
    write_nvlabs_pickle(path, reference_generator(), marker)
    actual = sha256_of(path)
    message = _error(path, sha256="0" * 64)
    assert f"expected {'0' * 64}, actual {actual}" in message


@pytest.mark.parametrize("config, extra", [("-t", {}), ("-r", dict(conv_kernel=1, use_radial_filters=True))])
def test_stylegan3_is_refused(tmp_path, marker, config, extra):
    path = tmp_path / f"stylegan3{config}.pkl"
    kwargs = dict(**KWARGS, mapping_kwargs={}, **extra)
    write_nvlabs_pickle(path, reference_generator(), marker, init_kwargs=kwargs,
                        class_src="class SynthesisInput(torch.nn.Module):\n    pass\n")
    assert f"StyleGAN3 ({config})" in _error(path)


def test_registry_entries():
    assert set(REGISTRY) == {"sg2-ffhq-256", "sg2-ffhq-512", "sg2-ffhq-1024"}
    for entry in REGISTRY.values():
        assert entry["url"].startswith("https://") and entry["url"].endswith(f"{entry['resolution']}.pkl")
        assert entry["num_ws"] == 2 * int(np.log2(entry["resolution"])) - 2
        assert entry["sha256"] is None or len(entry["sha256"]) == 64
    assert REGISTRY["sg2-ffhq-512"]["num_ws"] == 16


def test_resolve_weights_mirror_and_failure(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "stylegan2-ffhq-512x512.pkl").write_bytes(b"\x80\x04N.")
    assert resolve_weights("sg2-ffhq-512", mirror) == mirror / "stylegan2-ffhq-512x512.pkl"

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(nvlabs.urllib.request, "urlopen", offline)
    dest = tmp_path / "weights" / "sg2-ffhq-256.pkl"
    with pytest.raises(FileNotFoundError) as info:
        resolve_weights("sg2-ffhq-256", mirror, dest=dest)
    message = str(info.value)
    assert "stylegan2-ffhq-256x256.pkl absent" in message and "network is unreachable" in message
    assert list(dest.parent.iterdir()) == []  # no partial download left behind
    with pytest.raises(KeyError, match="available"):
        resolve_weights("sg2-ffhq-128", mirror)
