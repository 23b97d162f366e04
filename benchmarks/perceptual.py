"""How the perceptual distances read known distortions of real generated faces (printed, not asserted).

``PYTHONPATH=src python benchmarks/perceptual.py [--n 8]``: on ``n`` ``dcgan64`` faces, the mean
distance of each face to itself blurred (3x3 box, reflect padding), with noise 0.1 (clamped), moved
one pixel right (edge column repeated) and to another face, for every LPIPS variant that installs
offline (ST-LPIPS, the reported metric; LPIPS-rand, the loss).
"""

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers import dcgan_faces  # noqa: E402

from clipbridge.bridge.evaluate import shift_one_pixel  # noqa: E402
from clipbridge.models.lpips import build_lpips  # noqa: E402


def distortions(faces: torch.Tensor) -> dict[str, torch.Tensor]:
    blur = F.avg_pool2d(F.pad(faces, (1, 1, 1, 1), mode="reflect"), 3, stride=1)
    noise = (faces + 0.1 * torch.randn(faces.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    return {"identical": faces, "blur 3x3": blur, "noise 0.1": noise, "1-px shift": shift_one_pixel(faces),
            "another face": faces.roll(1, 0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=8)
    args = parser.parse_args()
    faces = dcgan_faces(args.n)
    cases = distortions(faces)
    print(f"{'metric':<12}" + "".join(f"{k:>14}" for k in cases))
    for variant in ("ST-LPIPS", "LPIPS-rand"):
        metric = build_lpips(variant, seed=0)
        with torch.no_grad():
            row = [metric(faces, x).mean().item() for x in cases.values()]
        print(f"{variant:<12}" + "".join(f"{v:>14.4f}" for v in row))


if __name__ == "__main__":
    main()
