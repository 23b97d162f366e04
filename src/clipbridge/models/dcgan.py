"""The pretrained DCGAN face generator of ``gan-face-generate`` (DigiFace-1M, 64x64, z in R^100).

The network is re-declared here with the package's layer layout (``main.{i}``), so its
``weights.tar`` loads name for name with ``torch.load(weights_only=True)``; none of the
package's code is imported or executed. Wrapped in the generator interface shared by every
generator of this project (``z_dim``, ``w_dim``, ``num_ws``, ``w_avg``, ``mapping``,
``synthesis``; images in [-1, 1]). The DCGAN has no style space: ``mapping`` is the identity,
``num_ws`` is 1, and ``w_avg`` is the mean of z, i.e. zero.

For the layer-ladder check (DESIGN.md, "Layer groups") the four BatchNorm layers are exposed
by resolution (4, 8, 16, 32 px): ``synthesis(ws, channel_scales={res: [N, C]})`` multiplies the
BatchNorm output at that resolution by a per-channel scale, a style in the StyleSpace sense.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn

from clipbridge.errors import BadValueError, MissingFileError
from clipbridge.io import sha256_of

#: Layer indices of ``main`` whose BatchNorm output has the given spatial resolution.
BN_LAYERS = {4: 1, 8: 4, 16: 7, 32: 10}


def package_weights() -> Path:
    """Path of ``gan_face_generate/weights.tar`` in the installed package (not imported)."""
    spec = importlib.util.find_spec("gan_face_generate")
    if spec is None or not spec.submodule_search_locations:
        raise MissingFileError("package 'gan-face-generate' is not installed (see requirements-nodeps.txt)")
    path = Path(list(spec.submodule_search_locations)[0]) / "weights.tar"
    if not path.is_file():
        raise MissingFileError(f"{path}: DCGAN weights missing from the installed package")
    return path


class DCGANGenerator(nn.Module):
    """DCGAN generator, ``z [N, z_dim] -> image [N, 3, 64, 64]`` in [-1, 1]; BatchNorm in eval mode."""

    def __init__(self,
        z_dim: int = 100,      # latent size
        ngf: int = 64,         # feature maps of the last hidden layer (x8, x4, x2, x1 from 4 to 32 px)
        img_channels: int = 3, # output channels
    ):
        super().__init__()
        self.z_dim = z_dim
        self.w_dim = z_dim
        self.num_ws = 1
        self.has_style_space = False       # no W / W+: a bridge can target z only
        self.meta: dict = {}
        self.img_resolution = 64
        self.img_channels = img_channels
        self.init_kwargs = dict(z_dim=z_dim, ngf=ngf, img_channels=img_channels)
        chans = [z_dim, ngf * 8, ngf * 4, ngf * 2, ngf]
        layers: list[nn.Module] = []
        for i, (cin, cout) in enumerate(zip(chans[:-1], chans[1:])):
            stride, pad = (1, 0) if i == 0 else (2, 1)
            layers += [nn.ConvTranspose2d(cin, cout, 4, stride, pad, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(ngf, img_channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)
        self.register_buffer("w_avg", torch.zeros(z_dim))
        self.eval()

    def train(self, mode: bool = True):
        # The pretrained BatchNorm statistics are part of the model: never switch to batch stats.
        return super().train(False)

    def mapping(self, z: torch.Tensor, c=None, truncation_psi: float = 1.0) -> torch.Tensor:
        """``z [N, z_dim] -> ws [N, 1, z_dim]`` (identity; truncation toward ``w_avg`` = 0)."""
        assert z.ndim == 2 and z.shape[1] == self.z_dim, f"z must be [N, {self.z_dim}], got {tuple(z.shape)}"
        w = self.w_avg + truncation_psi * (z - self.w_avg)
        return w.unsqueeze(1)

    def synthesis(self, ws: torch.Tensor, channel_scales: dict[int, torch.Tensor] | None = None, **_) -> torch.Tensor:
        """``ws [N, 1, z_dim] -> image [N, 3, 64, 64]`` float32 in [-1, 1].

        ``channel_scales``: optional ``{resolution: [N, C]}`` multipliers applied after the
        BatchNorm at that resolution (keys from :data:`BN_LAYERS`).
        """
        assert ws.ndim == 3 and ws.shape[1:] == (1, self.z_dim), f"ws must be [N, 1, {self.z_dim}], got {tuple(ws.shape)}"
        x = ws[:, 0, :, None, None]
        scale_at = {BN_LAYERS[r]: s for r, s in (channel_scales or {}).items()}
        for i, layer in enumerate(self.main):
            x = layer(x)
            if i in scale_at:
                x = x * scale_at[i][:, :, None, None]
        return x

    def forward(self, z: torch.Tensor, c=None, truncation_psi: float = 1.0, **kwargs) -> torch.Tensor:
        return self.synthesis(self.mapping(z, c, truncation_psi), **kwargs)


def from_package() -> tuple[DCGANGenerator, str]:
    """The pretrained DCGAN and the sha256 of the weights file it came from."""
    path = package_weights()
    state = torch.load(path, map_location="cpu", weights_only=True)
    if "netG_state_dict" not in state:
        raise BadValueError(f"{path}: no 'netG_state_dict' in the DCGAN weights file")
    G = DCGANGenerator()
    sd = dict(state["netG_state_dict"])
    sd["w_avg"] = G.w_avg
    G.load_state_dict(sd, strict=True)
    return G, sha256_of(path)
