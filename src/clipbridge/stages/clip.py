"""Stage ``clip``: train the offline CLIP on the captioned faces and measure it.

Trains the image tower (and the text projection) of an open_clip ``CustomTextCLIP`` whose text
tower is the locked, pretrained all-MiniLM-L6-v2 (see clipbridge/offline/clip_model.py). Outputs:
``checkpoints/clip-offline.pt`` (committed: trained part only, a few MB), its training curve
``results/clip/curve.csv`` and ``results/clip/metrics.json``: retrieval recall, zero-shot
accuracy per attribute (training prompts and held-out paraphrases) and a ridge probe from the
image embedding to the generator latent, for the trained model and for the same architecture
left at its random initialization.

Interruption: the resume state ``checkpoints/clip-offline.state.pt`` (git-ignored) is written
every ``clip.ckpt_seconds``; re-running the stage continues from it and gives the same model as
an uninterrupted run. It is deleted when training completes. The finished checkpoint persists
(DVC ``persist: true``) and records its data and arguments: a re-run with the same ones (a
changed evaluation, ``dvc repro --force``) only measures it; other ones retrain from scratch, as
does deleting it.

Several processes: ``torchrun --nproc_per_node=N -m clipbridge.stages.clip`` trains the same
global batch with DDP (gloo on CPU, nccl with ``device: cuda``; see clipbridge.distributed), then
rank 0 alone measures and writes; record the outputs with ``dvc commit clip``.
"""

from __future__ import annotations

import torch

from clipbridge import config, distributed, paths
from clipbridge.io import from_uint8, write_json
from clipbridge.offline import clip_eval, clip_model, clip_train
from clipbridge.stages import run
from clipbridge.stages.clip_data import CLIP_DATA

CHECKPOINT = paths.CHECKPOINTS / "clip-offline.pt"


def measure(model, train: dict, test: dict, alpha: float) -> dict:
    """Retrieval / zero-shot on the test faces (first caption each), the latent ridge probe, and
    retrieval among as many training faces (``train_i2t_r1``, ...): the gap between the two says
    how much of its training set the model memorized."""
    test_images = from_uint8(test["images"])
    out = clip_eval.evaluate(model, test_images, test["attrs"], [c[0] for c in test["captions"]])
    n = len(test_images)
    seen = clip_eval.retrieval(model, from_uint8(train["images"][:n]), [c[0] for c in train["captions"][:n]])
    out.update({f"train_{k}": v for k, v in seen.items()})
    with torch.no_grad():
        e_train = clip_model.encode_images(model, from_uint8(train["images"][:4096]))
        e_test = clip_model.encode_images(model, test_images)
    out["probe_r2_z"] = clip_eval.ridge_r2(e_train, train["z"][:4096], e_test, test["z"], alpha)
    out["mean_pairwise_cosine"] = float((e_test @ e_test.T).mean())
    return out


def main(p: config.Params) -> None:
    c = p.clip
    distributed.seed_rank(c.seed)          # = seed_everything(c.seed) in a plain process
    train = torch.load(CLIP_DATA / "train.pt", map_location="cpu", weights_only=True)
    test = torch.load(CLIP_DATA / "test.pt", map_location="cpu", weights_only=True)
    cfg = clip_model.config_from_params(c)
    with distributed.session(p.device) as device:   # no-op unless launched by torchrun
        model = clip_train.train(
            from_uint8(train["images"]), train["captions"], cfg, **clip_train.train_options(c),
            ckpt_path=CHECKPOINT, resume=True, curve_csv=paths.RESULTS / "clip" / "curve.csv",
            val=(from_uint8(test["images"]), [caps[0] for caps in test["captions"]]), device=device,
            latents=train["z"])
    if not distributed.is_main():
        return
    clip_train.state_path(CHECKPOINT).unlink(missing_ok=True)  # finished: nothing to resume
    model = model.cpu().eval()
    torch.manual_seed(c.seed)
    random_init = clip_model.build_model(cfg)
    meta = clip_model.load_checkpoint(CHECKPOINT)[1]["meta"]
    write_json(paths.RESULTS / "clip" / "metrics.json", {
        "steps": c.steps, "batch": c.batch, "slip_weight": c.slip_weight, "precision": c.precision,
        "train_device": meta.get("device", "not recorded"), "train_seconds": meta.get("seconds"),
        # False where this machine renders the same faces a few pixel levels differently from the
        # one that trained the checkpoint (clip_train.same_bytes): it is measured on these bytes
        "trained_on_these_bytes": clip_train.same_bytes(meta.get("fingerprint") or {}, from_uint8(train["images"]),
                                                        train["captions"]),
        "trained": measure(model, train, test, c.probe_alpha),
        "random_init": measure(random_init, train, test, c.probe_alpha),
    })


if __name__ == "__main__":
    run(main)
