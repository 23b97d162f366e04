import pytest
import torch

from clipbridge import config, registry
from clipbridge.io import ModelFileError
from clipbridge.models.dcgan import BN_LAYERS, DCGANGenerator, from_package
from helpers import dcgan_faces


@pytest.fixture(scope="module")
def G():
    return from_package()[0]


def test_interface_and_range(G):
    assert (G.z_dim, G.w_dim, G.num_ws, G.img_resolution) == (100, 100, 1, 64)
    assert torch.equal(G.w_avg, torch.zeros(100))
    z = torch.randn(4, 100, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ws = G.mapping(z)
        img = G.synthesis(ws)
    assert ws.shape == (4, 1, 100) and img.shape == (4, 3, 64, 64)
    assert img.min() >= -1 and img.max() <= 1
    assert img.std() > 0.2  # a real face image, not a constant


def test_deterministic_and_batch_independent(G):
    z = torch.randn(4, 100, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b, single = G(z), G(z), G(z[:1])
    assert torch.equal(a, b)
    assert torch.allclose(a[:1], single, atol=1e-5)  # eval-mode BatchNorm: no batch statistics


def test_truncation_zero_gives_mean_face(G):
    z = torch.randn(3, 100)
    with torch.no_grad():
        img = G(z, truncation_psi=0.0)
    assert torch.allclose(img[0], img[1]) and torch.allclose(img[0], img[2])


def test_unit_channel_scales_change_nothing_and_others_do(G):
    z = torch.randn(2, 100, generator=torch.Generator().manual_seed(2))
    ws = G.mapping(z)
    chans = {4: 512, 8: 256, 16: 128, 32: 64}
    with torch.no_grad():
        base = G.synthesis(ws)
        ones = G.synthesis(ws, channel_scales={r: torch.ones(2, c) for r, c in chans.items()})
        moved = G.synthesis(ws, channel_scales={32: torch.full((2, 64), 1.5)})
    assert set(BN_LAYERS) == set(chans)
    assert torch.equal(base, ones)
    assert (moved - base).abs().mean() > 1e-3


def test_materialized_file_round_trip(tmp_path, G):
    path = tmp_path / "g.pt"
    meta = registry.materialize_generator("dcgan64", path)
    assert meta["num_ws"] == 1 and len(meta["source_sha256"]) == 64
    G2 = registry.load_generator(path)
    for k, v in G.state_dict().items():
        assert torch.equal(v, G2.state_dict()[k]), k


def test_unknown_generator_lists_names():
    with pytest.raises(KeyError, match="available"):
        registry.generator_entry("stylegan9")


def test_bad_model_files(tmp_path):
    html = tmp_path / "g.pt"
    html.write_text("<html>login</html>")
    with pytest.raises(ModelFileError, match=f"{html}: not a readable model file"):
        registry.load_generator(html)
    other = tmp_path / "o.pt"
    torch.save({"kind": "bridge", "state_dict": {}}, other)
    with pytest.raises(ModelFileError, match="not a clipbridge model file"):
        registry.load_generator(other)
    wrong = tmp_path / "w.pt"
    torch.save({"kind": "dcgan", "state_dict": DCGANGenerator(ngf=8).state_dict(), "init_kwargs": {}}, wrong)
    with pytest.raises(ModelFileError, match="do not match"):
        registry.load_generator(wrong)


def test_bridge_to_w_on_dcgan_is_refused(G):
    from clipbridge.config import Train
    from clipbridge.bridge.train import build_bridge

    with pytest.raises(ValueError, match="has no W / W\\+ space"):
        build_bridge(G, 8, Train(target="w+", depth=1), torch.zeros(4, 1, 100))
    assert build_bridge(G, 8, Train(target="z", depth=1), torch.zeros(4, 1, 100)).num_out == 1


def test_bridge_init_leaves_the_dead_zone_around_z0(G):
    """At z ~ 0 every first-layer unit of the DCGAN is cut off: constant image, zero gradient.
    The data-dependent init puts the bridge's first outputs where the generator responds."""
    from clipbridge.config import Train
    from clipbridge.bridge.train import build_bridge

    z = (0.01 * torch.randn(4, 100)).requires_grad_(True)
    G(z).sum().backward()
    assert z.grad.abs().max() == 0  # the dead zone

    emb = torch.nn.functional.normalize(torch.randn(64, 32, generator=torch.Generator().manual_seed(0)), dim=1)
    torch.manual_seed(1)
    bridge = build_bridge(G, 32, Train(depth=2, width=16), torch.zeros(4, 1, 100), emb_sample=emb)
    out = bridge(emb)
    assert 0.9 < out.detach().std().item() < 1.1
    G(out[:, 0]).pow(2).mean().backward()
    assert bridge.net[0].weight.grad.abs().max() > 0


def test_optimization_from_z0_needs_the_projector_noise(G):
    """From the mean latent z = 0 the DCGAN gives no gradient: without the early latent noise
    optimization cannot move; with it, it reconstructs."""
    import dataclasses

    from clipbridge.bridge import invert

    target = dcgan_faces(4, seed=3)
    start = invert.mean_ws(G, 4)
    cfg = config.OptimConfig(steps=40, lr=0.05, lpips_weight=0.0)
    still, _ = invert.optimize(G, target, start, "w", dataclasses.replace(cfg, noise=0.0))
    moved, _ = invert.optimize(G, target, start, "w", cfg)
    assert torch.equal(still, start)

    def err(ws):
        return (G.synthesis(ws) - target).pow(2).mean().item()

    assert err(moved) < 0.8 * err(start)
