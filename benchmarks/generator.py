"""Synthesis speed of clipbridge's StyleGAN2: parameters, ms/image and images/s.

Times ``G.synthesis(ws, noise_mode='const')`` under ``torch.inference_mode`` with the NVlabs
default channel configuration (channel_base 32768, channel_max 512) at each resolution, on
CPU and, when present, CUDA. One warm-up call at the smallest batch per resolution and device,
then each case repeats until ``--min-seconds`` have passed (at least once, at most
``--max-repeats`` times). Default run: about 2-3 minutes on 2 CPU cores.

    PYTHONPATH=src python benchmarks/generator.py
    PYTHONPATH=src python benchmarks/generator.py --resolutions 64 --batch-sizes 1 16 --devices cpu
"""

import argparse
import time

import torch

from clipbridge.models.stylegan2 import Generator


def build(resolution: int, channel_base: int, channel_max: int, num_fp16_res: int) -> Generator:
    """NVlabs-default StyleGAN2 (z = w = 512, 8 mapping layers) at ``resolution``, eval mode."""
    return Generator(512, 0, 512, resolution, 3,
                     synthesis_kwargs=dict(channel_base=channel_base, channel_max=channel_max,
                                           num_fp16_res=num_fp16_res, conv_clamp=256)).eval()


def time_synthesis(G: Generator, batch: int, device: torch.device, min_seconds: float, max_repeats: int):
    """Seconds per synthesis call of ``batch`` images (mean over repeats) and the repeat count."""
    ws = G.mapping(torch.randn(batch, G.z_dim, device=device), None)

    def call():
        G.synthesis(ws, noise_mode="const")
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    repeats, start = 0, time.perf_counter()
    while repeats < max_repeats and (repeats == 0 or time.perf_counter() - start < min_seconds):
        call()
        repeats += 1
    return (time.perf_counter() - start) / repeats, repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolutions", type=int, nargs="+", default=[64, 256, 512])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--devices", nargs="+", default=None,
                        help="default: cpu, plus cuda when available")
    parser.add_argument("--channel-base", type=int, default=32768)
    parser.add_argument("--channel-max", type=int, default=512)
    parser.add_argument("--num-fp16-res", type=int, default=0, help="float16 blocks on CUDA (ignored on CPU)")
    parser.add_argument("--min-seconds", type=float, default=1.0, help="time budget per case after warm-up")
    parser.add_argument("--max-repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads; default: torch's choice")
    args = parser.parse_args()

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    devices = args.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
          + (f", {torch.cuda.get_device_name()}" if "cuda" in devices else ""))
    print(f"{'device':6s} {'res':>5s} {'num_ws':>6s} {'params (M)':>10s} {'batch':>5s} "
          f"{'repeats':>7s} {'ms/image':>9s} {'images/s':>9s}")
    torch.manual_seed(0)
    with torch.inference_mode():
        for resolution in args.resolutions:
            G = build(resolution, args.channel_base, args.channel_max, args.num_fp16_res)
            params = sum(p.numel() for p in G.parameters()) / 1e6
            for name in devices:
                device = torch.device(name)
                G = G.to(device)
                time_synthesis(G, min(args.batch_sizes), device, 0.0, 1)  # warm-up
                for batch in args.batch_sizes:
                    seconds, repeats = time_synthesis(G, batch, device, args.min_seconds, args.max_repeats)
                    print(f"{name:6s} {resolution:5d} {G.num_ws:6d} {params:10.2f} {batch:5d} "
                          f"{repeats:7d} {1000 * seconds / batch:9.1f} {batch / seconds:9.2f}", flush=True)


if __name__ == "__main__":
    main()
