import pytest
import torch

from clipbridge.models.bridge import Bridge, to_ws


def test_report_bridge_layout():
    b = Bridge(1024, 512)
    linears = [m for m in b.net if isinstance(m, torch.nn.Linear)]
    assert [l.in_features for l in linears] == [1024, 1024, 1024, 1024]
    assert linears[-1].out_features == 512
    assert sum(isinstance(m, torch.nn.ReLU) for m in b.net) == 3


@pytest.mark.parametrize("target,num_out", [("z", 1), ("w", 1), ("w+", 10)])
def test_output_shapes(target, num_out):
    b = Bridge(32, 16, depth=2, width=8, target=target, num_ws=10)
    assert b(torch.randn(5, 32)).shape == (5, num_out, 16)


def test_zero_output_is_the_mean_latent():
    mean, std = torch.randn(16), torch.rand(16) + 0.5
    b = Bridge(8, 16, depth=1, target="w", latent_mean=mean, latent_std=std)
    torch.nn.init.zeros_(b.net[0].weight)
    torch.nn.init.zeros_(b.net[0].bias)
    assert torch.allclose(b(torch.randn(3, 8)), mean.expand(3, 1, 16))


def test_bad_arguments_list_choices():
    with pytest.raises(ValueError, match="available"):
        Bridge(8, 8, activation="tanhh")
    with pytest.raises(ValueError, match="available"):
        Bridge(8, 8, target="s")
    with pytest.raises(ValueError, match="depth"):
        Bridge(8, 8, depth=0)


def test_to_ws_broadcasts_w():
    class G:
        num_ws = 4

        def mapping(self, z, c):
            return z[:, None, :].repeat(1, self.num_ws, 1)

    lat = torch.randn(2, 1, 6)
    assert torch.equal(to_ws(G(), lat, "w"), lat.expand(-1, 4, -1))
    assert torch.equal(to_ws(G(), lat, "z")[:, 2], lat[:, 0])
    with pytest.raises(ValueError):
        to_ws(G(), torch.randn(2, 3, 6), "w+")


def test_predict_ws_keeps_the_other_ws_at_the_mean():
    mean = torch.randn(16)
    b = Bridge(8, 16, depth=2, width=8, target="w+", num_ws=6, latent_mean=mean, predict_ws=[4, 5])
    out = b(torch.randn(3, 8))
    assert out.shape == (3, 6, 16)
    assert torch.equal(out[:, :4], mean.expand(3, 4, 16))
    assert not torch.allclose(out[:, 4:], mean.expand(3, 2, 16))
    assert b.net[-1].out_features == 2 * 16  # only the predicted ws are outputs
    with pytest.raises(ValueError, match="predict_ws"):
        Bridge(8, 16, target="w", num_ws=6, predict_ws=[1])
    with pytest.raises(ValueError, match="predict_ws"):
        Bridge(8, 16, target="w+", num_ws=6, predict_ws=[6])
