"""Does a CPU of another kind make the same dataset bytes? (README, "The encoder study"; issue 25.6)

Renders the first ``--faces`` test faces of a generator from their stored ``ws`` and computes the
offline CLIP's embeddings of them, in float32 (as the ``dataset`` stage does) and in float64 (then
rounded to uint8 / float32), under several of PyTorch's CPU code paths on this machine
(``ATEN_CPU_CAPABILITY``, ``ONEDNN_MAX_CPU_ISA``, ``MKL_ENABLE_INSTRUCTIONS``, each in a subprocess), and prints one MD5
digest per path and precision with the seconds it took. Equal digests across paths mean the bytes
do not depend on the CPU's instruction set. Prints figures; asserts nothing.

Measured in session 12 (AMD EPYC, AVX-512): ``dcgan64`` float64 digests agree in all four modes,
float32 ones differ in three; ``sg2-64`` float64 digests differ as well, because
``models/stylegan2.py`` (like NVlabs' code) casts the latents and activations to float32 whatever
the input's dtype, so float64 rendering of the student needs it to follow the input's dtype.

Needs the pipeline's ``data/models`` and ``data/dataset/<generator>`` (``dvc repro dataset@dcgan64``).
``PYTHONPATH=src python benchmarks/cpu_determinism.py [--generator dcgan64] [--faces 256]``
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time

MODES = {  # name -> environment of the subprocess
    "default": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "sse4.1": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41"},
    "mkl-avx2": {"MKL_ENABLE_INSTRUCTIONS": "AVX2"},   # the BLAS's own dispatch (float64 matmuls)
}


def digests(generator: str, faces: int, batch: int = 64) -> dict:
    """``{precision: {"images": md5, "images_s": s, "emb": md5, "emb_s": s}}`` on this process's code path."""
    import torch

    from clipbridge import paths, registry
    from clipbridge.io import from_uint8, to_uint8
    from clipbridge.stages import load_split

    G = registry.load_generator(paths.generator_file(generator))
    enc = registry.load_encoder(paths.ENCODER)
    ws = load_split(generator, "test")["ws"][:faces]
    out = {}
    for dtype in (torch.float32, torch.float64):
        g, e = G.to(dtype), enc.to(dtype)
        with torch.no_grad():
            t = time.perf_counter()
            img = torch.cat([to_uint8(g.synthesis(ws[i:i + batch].to(dtype), noise_mode="const").float())
                             for i in range(0, len(ws), batch)])
            t_img = time.perf_counter() - t
            t = time.perf_counter()
            emb = torch.cat([e.encode_image(from_uint8(img[i:i + batch]).to(dtype)).float()
                             for i in range(0, len(img), batch)])
            t_emb = time.perf_counter() - t
        out[str(dtype).removeprefix("torch.")] = {
            "images": hashlib.md5(img.numpy().tobytes()).hexdigest()[:12], "images_s": round(t_img, 1),
            "emb": hashlib.md5(emb.numpy().tobytes()).hexdigest()[:12], "emb_s": round(t_emb, 1)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--generator", default="dcgan64")
    ap.add_argument("--faces", type=int, default=256)
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)   # the subprocess
    args = ap.parse_args()
    if args.one:
        print(json.dumps(digests(args.generator, args.faces)))
        return
    print(f"{args.generator}, first {args.faces} test faces; digest (seconds) per code path and precision")
    print(f"{'path':8s} {'precision':9s} {'images':>20s} {'CLIP embeddings':>20s}")
    for name, env in MODES.items():
        run = subprocess.run([sys.executable, __file__, "--one", "--generator", args.generator,
                              "--faces", str(args.faces)], env={**os.environ, **env},
                             capture_output=True, text=True, check=True)
        for precision, d in json.loads(run.stdout.strip().splitlines()[-1]).items():
            print(f"{name:8s} {precision:9s} {d['images']:>13s} ({d['images_s']:4.1f}) {d['emb']:>13s} ({d['emb_s']:4.1f})")


if __name__ == "__main__":
    main()
