"""Perceptual distances (LPIPS v0.1 and its variants) and the one builder that picks a variant.

Protocol (DESIGN.md): LPIPS v0.1 with an AlexNet trunk. The offline profile cannot download the
trunk's ImageNet weights and builds it randomly initialized from a fixed seed: that variant is
*LPIPS-rand*, not comparable with published LPIPS, labelled so wherever it appears, and used as a
loss only. The reported metric of the offline profile is *ST-LPIPS* (trained shift-tolerant
AlexNet and heads from the ``stlpips-pytorch`` wheel, :mod:`clipbridge.models.stlpips`), which no
method optimizes.
"""

from __future__ import annotations

import torch

from clipbridge.errors import UnknownNameError
from clipbridge.metrics import perceptual_input
from clipbridge.models.stlpips import STLPIPS


class LPIPS(torch.nn.Module):
    """LPIPS distance, ``[N, 3, H, W] x2 in [-1, 1] -> [N]``, at the protocol's size.

    Inputs are resized by :func:`clipbridge.metrics.perceptual_input` (side clamped to 64-256 px).

    ``random_trunk=True`` (offline profile) builds the AlexNet trunk randomly initialized after
    ``torch.manual_seed(seed)``: LPIPS-rand. The linear heads are the package's v0.1 weights.
    Build it with :func:`build_lpips`, which takes the variant's name from params.
    """

    def __init__(self, random_trunk: bool, seed: int = 0):
        super().__init__()
        import warnings

        import lpips

        self.label = "LPIPS-rand" if random_trunk else "LPIPS"
        state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        with warnings.catch_warnings():  # torchvision's 'pretrained' deprecation, raised inside lpips
            warnings.simplefilter("ignore", UserWarning)
            self.net = lpips.LPIPS(net="alex", version="0.1", pnet_rand=random_trunk, verbose=False)
        torch.random.set_rng_state(state)
        self.net.eval().requires_grad_(False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, y = perceptual_input(x, y)
        return self.net(x, y, normalize=False).flatten()


LPIPS_VARIANTS = ("LPIPS-rand", "LPIPS", "ST-LPIPS")


def build_lpips(variant: str, seed: int, device: str | torch.device = "cpu") -> torch.nn.Module:
    """The one LPIPS builder, ``[N, 3, H, W] x2 in [-1, 1] -> [N]`` with a ``label``.

    ``variant`` is a profile's ``lpips`` or ``metric``: 'LPIPS-rand' = random AlexNet trunk
    seeded by ``seed``; 'LPIPS' = ImageNet trunk, pretrained profile; 'ST-LPIPS' = the trained
    shift-tolerant AlexNet of ``stlpips-pytorch`` (:mod:`clipbridge.models.stlpips`; ``seed``
    unused), a learned metric no method optimizes.
    """
    if variant not in LPIPS_VARIANTS:
        raise UnknownNameError(f"unknown LPIPS variant '{variant}'; available: {list(LPIPS_VARIANTS)}")
    if variant == "ST-LPIPS":
        return STLPIPS().to(device)
    return LPIPS(random_trunk=variant == "LPIPS-rand", seed=seed).to(device)


