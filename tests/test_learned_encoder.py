"""The study's learned CNN encoder (image -> latent) and the shared data-dependent output init."""

from types import SimpleNamespace

import pytest
import torch
from helpers import _dcgan, dcgan_faces

from clipbridge import config
from clipbridge.bridge.train import batch_loss, build_bridge
from clipbridge.errors import BadValueError, UnknownNameError
from clipbridge.models.bridge import Bridge
from clipbridge.models.learned_encoder import LearnedEncoder, rescale_output


def images(n: int, r: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, r, r, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("target,num_ws,want", [("z", 1, 1), ("w", 10, 1), ("w+", 10, 10)])
def test_output_shapes(target, num_ws, want):
    m = LearnedEncoder(32, 16, channels=8, target=target, num_ws=num_ws)
    assert m(images(3, 32)).shape == (3, want, 16)
    assert m.num_ws == want and m.target == target and m.latent_dim == 16


def test_parameter_count_at_64_px():
    z = LearnedEncoder(64, 100)
    assert n_params(z) == 3_330_468  # the docstring's number
    assert n_params(LearnedEncoder(64, 100, target="w+", num_ws=10)) == 3_792_168
    convs = [m for m in z.trunk if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 32, 32, 64, 64, 128, 128, 256, 256]
    assert z.output_layer.in_features == 512 and z.output_layer.out_features == 100


def test_zero_output_is_the_mean_latent():
    mean, std = torch.randn(16), torch.rand(16) + 0.5
    m = LearnedEncoder(8, 16, channels=4, target="w+", num_ws=3, latent_mean=mean, latent_std=std)
    torch.nn.init.zeros_(m.output_layer.weight)
    torch.nn.init.zeros_(m.output_layer.bias)
    assert torch.equal(m(images(2, 8)), mean.expand(2, 3, 16))


def test_deterministic_under_a_seed_and_rebuilt_from_init_kwargs():
    x = images(2, 16)
    torch.manual_seed(0)
    a = LearnedEncoder(16, 8, channels=4)
    torch.manual_seed(0)
    b = LearnedEncoder(16, 8, channels=4)
    assert torch.equal(a(x), b(x)) and torch.equal(a(x), a(x))
    torch.manual_seed(1)
    assert not torch.allclose(LearnedEncoder(16, 8, channels=4)(x), a(x))
    c = LearnedEncoder(**a.init_kwargs)
    c.load_state_dict(a.state_dict(), strict=True)
    assert torch.equal(c(x), a(x))


@pytest.mark.parametrize("std", [1.0, 0.3])
def test_rescale_output_sets_the_initial_spread(std):
    torch.manual_seed(0)
    m = LearnedEncoder(32, 16, channels=8)
    x = images(16, 32)
    before = rescale_output(m, x, std)
    assert before < 0.2  # PyTorch's default init: the dead zone the rescale avoids
    with torch.no_grad():
        u = m.output_layer(m.features(x)) - m.output_layer.bias
    assert abs(u.std().item() - std) <= 1e-4 * std


def test_rescale_output_is_build_bridges_init():
    cfg = config.Train(depth=2, width=16, target="z", init_output_std=1.0)
    emb = torch.nn.functional.normalize(torch.randn(32, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    latents = torch.randn(10, 1, 4, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    want = build_bridge(SimpleNamespace(num_ws=1), 8, cfg, latents, emb_sample=emb)
    torch.manual_seed(0)
    got = Bridge(8, 4, depth=2, width=16)
    rescale_output(got, emb, 1.0, layer=got.net[-1])
    assert torch.equal(got.net[-1].weight, want.net[-1].weight)


def test_trains_with_the_bridge_loss():
    """batch_loss accepts it in place of a bridge; gradients reach the first and last layers."""
    G = _dcgan()
    faces = dcgan_faces(2, seed=3)
    z = torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(0)
    m = LearnedEncoder(64, G.z_dim)
    rescale_output(m, faces, 1.0)
    cfg = config.Train(loss_rgb=1.0, loss_latent=1.0)
    terms = batch_loss(G, m, faces, faces, z[:, None], cfg, lpips=None)
    assert set(terms) == {"rgb", "latent", "total"}
    terms["total"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
    first = m.trunk[0]
    for p in (first.weight, first.bias, m.output_layer.weight, m.output_layer.bias):
        assert p.grad.abs().sum() > 0


def test_bad_images_are_one_line():
    m = LearnedEncoder(64, 8, channels=4)
    for x in (images(2, 32), torch.zeros(2, 64, 64), torch.zeros(2, 3, 64, 64, dtype=torch.uint8),
              torch.zeros(2, 1, 64, 64)):
        with pytest.raises(BadValueError) as info:
            m(x)
        msg = str(info.value)
        assert "[N, 3, 64, 64]" in msg and str(tuple(x.shape)) in msg and "\n" not in msg


def test_bad_arguments_list_choices():
    for res in (48, 4, 0):
        with pytest.raises(BadValueError, match="power of two"):
            LearnedEncoder(res, 8)
    with pytest.raises(UnknownNameError, match=r"available: \['z', 'w', 'w\+'\]"):
        LearnedEncoder(64, 8, target="s")
    with pytest.raises(BadValueError, match="latent_std"):
        LearnedEncoder(64, 8, latent_std=torch.ones(9))
    with pytest.raises(BadValueError, match="channels"):
        LearnedEncoder(64, 8, channels=0)
