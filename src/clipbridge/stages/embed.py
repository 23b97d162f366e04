"""Stage ``embed``: one encoder's embeddings of one generator's dataset faces (encoder study).

``python -m clipbridge.stages.embed GENERATOR ENCODER`` (DVC ``matrix`` over
``encoders.generators`` x ``encoders.encoders``) embeds the ``dataset`` stage's uint8 faces of
every split with :func:`clipbridge.models.encoders.build_encoder` (seeded by ``models.seed``).
Output (DVC-cached): ``data/embeddings/<generator>/<encoder>.pt`` = ``{train, val, test:
[N, D] float32 unit rows, meta}``.
"""

from __future__ import annotations

from clipbridge import config, paths
from clipbridge.io import save_torch
from clipbridge.models.encoders import build_encoder, embed
from clipbridge.stages import load_split, run
from clipbridge.stages.dataset import SPLITS


def main(p: config.Params, generator: str, encoder: str) -> None:
    enc = build_encoder(encoder, seed=p.models.seed, mirror=p.models.mirror).to(p.device)
    out = {split: embed(enc, load_split(generator, split)["images"], p.dataset.batch, f"{encoder} {generator} {split}")
           for split in SPLITS}
    out["meta"] = {"encoder": encoder, "label": enc.label, "embed_dim": int(out["train"].shape[1])}
    if hasattr(enc, "found_total"):   # dlib-face: faces its detector found (the others: the whole frame)
        out["meta"]["detector_found"] = [enc.found_total, enc.seen_total]
    save_torch(out, paths.embedding_file(generator, encoder))


if __name__ == "__main__":
    run(main)
