"""Every registered offline generator behind one interface (the registry's contract)."""

import pytest
import torch

from clipbridge import registry
from clipbridge.bridge import invert

OFFLINE = sorted(name for name, e in registry.GENERATORS.items() if not e.downloads)


def test_the_offline_generators_are_the_two_of_the_design():
    assert OFFLINE == ["dcgan64", "sg2-64"]


@pytest.mark.parametrize("name", OFFLINE)
def test_shared_interface(name):
    G, meta = registry.build_generator(name)
    entry = registry.generator_entry(name)
    assert meta["name"] == name and len(meta["source_sha256"]) == 64
    assert (G.z_dim, G.num_ws) == (100, entry.num_ws)
    w_dim = getattr(G, "w_dim", G.z_dim)  # the DCGAN's only latent is z
    assert G.w_avg.shape == (w_dim,)
    z = torch.randn(4, G.z_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ws = G.mapping(z, None)
        assert ws.shape == (4, G.num_ws, w_dim)
        img = G.synthesis(ws, noise_mode="const")
        again = G.synthesis(G.mapping(z, None), noise_mode="const")
        mean_img = G.synthesis(invert.mean_ws(G, 1), noise_mode="const")
    assert img.shape == (4, 3, entry.resolution, entry.resolution)
    assert img.min() >= -1 and img.max() <= 1 and img.std() > 0.05  # [-1, 1], not a constant
    assert torch.equal(img, again)  # deterministic
    assert torch.isfinite(mean_img).all()
    # truncation toward w_avg: psi = 0 gives the mean latent for every z
    assert torch.allclose(G.mapping(z, None, truncation_psi=0.0), G.w_avg.expand(4, G.num_ws, -1), atol=1e-6)
    if entry.num_ws > 1:
        invert.check_space(G, "w+")
    else:
        with pytest.raises(ValueError, match="no W\\+ space"):
            invert.check_space(G, "w+")


def test_unknown_generator_lists_the_registry():
    with pytest.raises(KeyError, match="available: \\[.*'dcgan64'.*'sg2-64'"):
        registry.build_generator("stylegan9")
