"""StyleGAN2 generator: shapes, W+ layout, noise, truncation, style edits, own checkpoints."""

import math

import pytest
import torch

from clipbridge.io import ModelFileError
from clipbridge.models.stylegan2 import (
    Generator,
    load_checkpoint,
    save_checkpoint,
    upsample2d,
    setup_filter,
)

Z_DIM = W_DIM = 8


def tiny(res=16, seed=0, architecture="skip", c_dim=0, **mapping):
    """A few-thousand-parameter generator with non-zero noise strengths and biases."""
    torch.manual_seed(seed)
    G = Generator(Z_DIM, c_dim, W_DIM, res, 3, mapping_kwargs=dict(num_layers=2, **mapping),
                  synthesis_kwargs=dict(channel_base=8 * res, channel_max=8, architecture=architecture))
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength") or name.endswith(".bias"):
                p.normal_(0, 0.3)
        G.mapping.w_avg.normal_()
    return G.eval()


@pytest.mark.parametrize("res", [16, 32, 64])
@pytest.mark.parametrize("architecture", ["orig", "skip", "resnet"])
def test_shapes_and_num_ws(res, architecture):
    G = tiny(res, architecture=architecture)
    assert G.num_ws == G.synthesis.num_ws == 2 * int(math.log2(res)) - 2  # 10 at 64 px
    ws = G.mapping(torch.randn(2, Z_DIM), None)
    assert ws.shape == (2, G.num_ws, W_DIM) and ws.dtype == torch.float32
    img = G.synthesis(ws)
    assert img.shape == (2, 3, res, res) and img.dtype == torch.float32 and torch.isfinite(img).all()
    # Block b{res} reads ws[k : k + num_conv + num_torgb], k advancing by num_conv: with 'skip'
    # every block has a toRGB whose vector is the next block's first; otherwise ranges abut.
    slices = list(G.synthesis.ws_slices().values())
    assert slices[0][0] == 0 and slices[-1][1] == G.num_ws
    overlap = 1 if architecture == "skip" else 0
    assert all(nxt[0] == prev[1] - overlap for prev, nxt in zip(slices, slices[1:]))


def test_num_ws_at_512_matches_report():
    G = Generator(Z_DIM, 0, W_DIM, 512, 3, synthesis_kwargs=dict(channel_base=512, channel_max=2))
    assert G.num_ws == 16


def test_nvlabs_parameter_names():
    G = tiny(16, c_dim=4, architecture="resnet")
    keys = set(G.state_dict())
    expected = {
        "mapping.embed.weight", "mapping.fc0.weight", "mapping.fc1.bias", "mapping.w_avg",
        "synthesis.b4.const", "synthesis.b4.conv1.affine.weight", "synthesis.b4.conv1.noise_const",
        "synthesis.b4.conv1.noise_strength", "synthesis.b4.resample_filter",
        "synthesis.b8.conv0.weight", "synthesis.b8.conv0.resample_filter", "synthesis.b8.skip.weight",
        "synthesis.b16.torgb.affine.bias", "synthesis.b16.torgb.weight", "synthesis.b16.torgb.bias",
    }
    assert expected <= keys
    assert "synthesis.b8.torgb.weight" not in keys  # resnet: toRGB only in the last block
    assert "synthesis.b4.conv0.weight" not in keys


def test_constant_noise_is_deterministic_and_random_is_not():
    G = tiny()
    z = torch.randn(2, Z_DIM)
    assert torch.equal(G(z, None, noise_mode="const"), G(z, None, noise_mode="const"))
    assert not torch.equal(G(z, None, noise_mode="random"), G(z, None, noise_mode="random"))
    assert not torch.equal(G(z, None, noise_mode="none"), G(z, None, noise_mode="const"))


def test_fused_and_unfused_modconv_agree():
    G = tiny(32)
    ws = G.mapping(torch.randn(3, Z_DIM), None)
    torch.testing.assert_close(G.synthesis(ws, fused_modconv=True), G.synthesis(ws, fused_modconv=False),
                               rtol=1e-5, atol=1e-5)


def test_truncation():
    G = tiny()
    z = torch.randn(3, Z_DIM)
    ws0 = G.mapping(z, None, truncation_psi=0)
    assert torch.allclose(ws0, G.mapping.w_avg.expand_as(ws0))
    ws = G.mapping(z, None)
    cut = G.mapping(z, None, truncation_psi=0.5, truncation_cutoff=2)
    torch.testing.assert_close(cut[:, :2], G.mapping.w_avg.lerp(ws[:, :2], 0.5))
    assert torch.equal(cut[:, 2:], ws[:, 2:])


def test_w_avg_tracks_in_training_mode_only():
    G = tiny()
    z = torch.randn(4, Z_DIM)
    before = G.mapping.w_avg.clone()
    w = G.mapping(z, None)[:, 0]
    assert torch.equal(G.mapping.w_avg, before)  # eval mode: untouched
    G.train()
    G.mapping(z, None)
    torch.testing.assert_close(G.mapping.w_avg, w.mean(0).lerp(before, 0.995))


def test_each_style_vector_matters_and_no_edit_changes_nothing():
    G = tiny(32)
    ws = G.mapping(torch.randn(1, Z_DIM), None)
    img = G.synthesis(ws)
    assert torch.equal(G.synthesis(ws.clone()), img)
    for i in range(G.num_ws):
        edited = ws.clone()
        edited[:, i] += 0.5 * torch.randn(W_DIM)
        assert (G.synthesis(edited) - img).abs().max() > 1e-4, f"ws[{i}] has no effect"


def test_upsampling_keeps_constant_images_constant():
    x = torch.full([1, 2, 6, 6], 0.7)
    y = upsample2d(x, setup_filter([1, 3, 3, 1]))
    assert y.shape == (1, 2, 12, 12)
    torch.testing.assert_close(y[:, :, 2:-2, 2:-2], torch.full([1, 2, 8, 8], 0.7))


def test_checkpoint_round_trip_is_bit_exact(tmp_path):
    G = tiny(32, architecture="resnet", c_dim=3, lr_multiplier=1.0)
    path = tmp_path / "sub" / "g.pt"
    save_checkpoint(path, G, step=7, params={"lr": 0.002})
    assert [p.name for p in path.parent.iterdir()] == ["g.pt"]  # no temp file left behind
    G2, payload = load_checkpoint(path)
    assert payload["step"] == 7 and payload["params"] == {"lr": 0.002}
    assert G2.init_kwargs == G.init_kwargs
    for (k1, v1), (k2, v2) in zip(G.state_dict().items(), G2.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    z, c = torch.randn(2, Z_DIM), torch.randn(2, 3)
    assert torch.equal(G(z, c), G2(z, c))


def test_bad_checkpoints_give_one_line_errors(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a checkpoint")
    mismatched = tmp_path / "mismatched.pt"
    G = tiny()
    save_checkpoint(mismatched, G)
    payload = torch.load(mismatched, weights_only=True)
    payload["init_kwargs"]["synthesis_kwargs"]["channel_max"] = 4
    torch.save(payload, mismatched)
    cases = {garbage: "not a readable checkpoint", mismatched: "shape mismatch (file vs model) [synthesis.b16.conv0.affine.bias [8] vs [4]",
             tmp_path / "absent.pt": "no such file"}
    for path, expected in cases.items():
        with pytest.raises(ModelFileError) as info:
            load_checkpoint(path)
        message = str(info.value)
        assert message.startswith(str(path)) and expected in message and "\n" not in message


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fp16_on_cuda_close_to_fp32():
    G = Generator(Z_DIM, 0, W_DIM, 32, 3, synthesis_kwargs=dict(channel_base=512, channel_max=32,
                                                                num_fp16_res=2, conv_clamp=256))
    G = G.cuda().eval()
    ws = G.mapping(torch.randn(4, Z_DIM, device="cuda"), None)
    torch.testing.assert_close(G.synthesis(ws), G.synthesis(ws, force_fp32=True), rtol=0, atol=0.05)


def test_training_mode_backpropagates_to_every_parameter():
    G = tiny(16, c_dim=2, architecture="resnet").train()
    img = G(torch.randn(2, Z_DIM), torch.randn(2, 2))
    img.square().mean().backward()
    no_grad = [n for n, p in G.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []
