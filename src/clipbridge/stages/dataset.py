"""Stage ``dataset``: seeded train / val / test faces with their latents and embeddings.

For each split: z ~ N(0, I) from a split-specific seed, ``ws = G.mapping(z)``, the image
``G.synthesis(ws)`` stored as uint8 (as a photo would be) and the encoder's L2-normalized
embedding *of that uint8 image*. One run per generator (``python -m clipbridge.stages.dataset
NAME``, DVC ``foreach``). Output ``data/dataset/<name>/{split}.pt`` (DVC-cached):
``{z [N, z_dim], ws [N, num_ws, w_dim], images uint8 [N, 3, R, R], emb [N, D]}``.
"""

from __future__ import annotations

import torch
from tqdm import tqdm

from clipbridge import config, paths, registry
from clipbridge.io import from_uint8, save_torch, to_uint8
from clipbridge.stages import run

SPLITS = ("train", "val", "test")


@torch.no_grad()
def make_split(G, enc, n: int, seed: int, batch: int, psi: float, device: str, desc: str) -> dict:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, G.z_dim, generator=g)
    ws, images, emb = [], [], []
    for i in tqdm(range(0, n, batch), desc=desc, unit="batch"):
        zb = z[i:i + batch].to(device)
        w = G.mapping(zb, None, truncation_psi=psi)
        img = to_uint8(G.synthesis(w, noise_mode="const"))
        ws.append(w.cpu())
        images.append(img.cpu())
        emb.append(enc.encode_image(from_uint8(img)).cpu())
    return {"z": z, "ws": torch.cat(ws), "images": torch.cat(images), "emb": torch.cat(emb)}


def main(p: config.Params, generator: str) -> None:
    d = p.dataset
    G = registry.load_generator(paths.generator_file(generator)).to(p.device)
    enc = registry.load_encoder(paths.ENCODER).to(p.device)
    sizes = {"train": d.n_train, "val": d.n_val, "test": d.n_test}
    for k, split in enumerate(SPLITS):
        data = make_split(G, enc, sizes[split], d.seed * 1000 + k, d.batch, d.truncation_psi, p.device,
                          f"{generator} {split}")
        save_torch(data, paths.dataset_split(generator, split))


if __name__ == "__main__":
    run(main)
