"""Stage ``evaluate``: every method on the test split.

Outputs (committed): ``results/evaluate/metrics.json`` ({method: means, sem, ms/image, device}),
``results/evaluate/per_image.csv``; DVC-cached: ``data/evaluate/samples.pt`` (the first faces'
reconstructions per method, for the figures).
"""

from __future__ import annotations

import platform

import torch

from clipbridge import config, paths, registry
from clipbridge.evaluate import bridge_method, evaluate_method, mean_latent_method, summarize
from clipbridge.io import from_uint8, save_torch, seed_everything, write_csv, write_json
from clipbridge.metrics import LPIPS
from clipbridge.stages import run
from clipbridge.stages.train import BRIDGE, load_split

SAMPLES = paths.DATA / "evaluate" / "samples.pt"
N_SAMPLES = 16


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def main(p: config.Params) -> None:
    seed_everything(p.evaluate.seed)
    G = registry.load_generator(paths.MODELS / "generator.pt").to(p.device)
    encoder = registry.load_encoder(paths.MODELS / "encoder.pt").to(p.device)
    bridge = registry.load_bridge(BRIDGE).to(p.device)
    images = from_uint8(load_split("test")["images"]).to(p.device)
    lpips = LPIPS(random_trunk=p.profile == "offline", seed=p.evaluate.lpips_seed).to(p.device)
    methods = {"mean_latent": mean_latent_method(G), "bridge": bridge_method(G, encoder, bridge)}
    summary, per_image, samples = {}, [], {"input": images[:N_SAMPLES].cpu()}
    for name, method in methods.items():
        rows, ms, recon = evaluate_method(method, images, lpips, p.evaluate.batch)
        summary[name] = {**summarize(rows), "ms_per_image": ms, "n_images": len(rows)}
        per_image += [{"method": name, **r} for r in rows]
        samples[name] = recon[:N_SAMPLES]
    write_json(paths.RESULTS / "evaluate" / "metrics.json", {
        "generator": p.active.generator, "encoder": registry.encoder_entry(p.active.encoder).label,
        "lpips_variant": lpips.label, "device": device_name(p.device), "methods": summary,
    })
    write_csv(paths.RESULTS / "evaluate" / "per_image.csv", per_image)
    save_torch(samples, SAMPLES)


if __name__ == "__main__":
    run(main)
