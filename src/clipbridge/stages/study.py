"""Stage ``study``: one run of the encoder study (params ``encoders``; DVC ``matrix``).

``python -m clipbridge.stages.study GENERATOR ROW SEED`` trains, with ``train``'s recipe and
``train.seed = SEED``, until the validation curve plateaus (:mod:`clipbridge.bridge.study`). ROW:

- an encoder of ``encoders.encoders``: the bridge on that encoder's fixed embeddings of the
  dataset's faces (stage ``embed``);
- ``learned``: the learned encoder, a CNN from the image to the latent trained end to end with
  the bridge's loss, at the learning rate that stage ``learned_lr`` chose on the validation faces;
- ``fresh-<row>`` for a row of ``encoders.fresh``: the same model trained on new faces drawn from
  the generator at every step (embeddings computed on the fly).

Outputs (committed, so that a fresh clone's ``dvc repro`` finds them current), in
``results/encoders/runs/<generator>/<row>/seed<seed>/``: ``curve.csv`` (train / val MSE per
``encoders.eval_every`` steps), ``scores.csv`` (the kept model on every test face, attributes
included), ``scores_at.csv`` (image metrics at the ``encoders.score_at`` steps) and ``run.json``
(where it stopped, the step it kept, the learning rate, how many faces it saw).
"""

from __future__ import annotations

import dataclasses

import torch

from clipbridge import config, paths, registry
from clipbridge.bridge.evaluate import Scorer
from clipbridge.bridge.study import FRESH_PREFIX, LEARNED, FreshFaces, learned_model, reconstruct, train_run
from clipbridge.bridge.train import build_bridge, target_latents
from clipbridge.errors import MissingFileError, UnknownNameError
from clipbridge.io import from_uint8, read_json, seed_everything, write_csv, write_json
from clipbridge.models.encoders import build_encoder, embed
from clipbridge.stages import load_split, profile_lpips, profile_metric, run
from clipbridge.stages.dataset import SPLITS

INIT_SAMPLE = 1024   # training inputs whose outputs set the initial output spread (as train does)


def lr_file(generator: str):
    return paths.STUDY_RUNS / generator / "learned_lr.json"


def parse_row(cfg: config.Encoders, row: str) -> tuple[str, bool]:
    """ROW -> (encoder name or ``learned``, trained on fresh faces?); unknown rows list the valid ones."""
    fresh = row.startswith(FRESH_PREFIX)
    base = row[len(FRESH_PREFIX):] if fresh else row
    valid = list(cfg.encoders) + [LEARNED] + [FRESH_PREFIX + r for r in cfg.fresh]
    if row not in valid:
        raise UnknownNameError(f"params.yaml: unknown encoder study row '{row}'; available: {valid}")
    return base, fresh


def inputs_of(p: config.Params, generator: str, base: str, fresh: bool, data: dict):
    """Each split's model inputs (``{split: [N, ...]}``) and the encoder a fresh run embeds with."""
    if base == LEARNED:
        n = {"train": len(data["train"]["images"]) if not fresh else INIT_SAMPLE}
        return {s: from_uint8(data[s]["images"][:n.get(s)]) for s in SPLITS}, None
    if fresh:
        enc = build_encoder(base, seed=p.models.seed, mirror=p.models.mirror).to(p.device)
        n = {"train": INIT_SAMPLE}
        return {s: embed(enc, data[s]["images"][:n.get(s)], p.dataset.batch, f"{base} {s}") for s in SPLITS}, enc
    path = paths.embedding_file(generator, base)
    if not path.is_file():
        raise MissingFileError(f"{path}: embeddings missing (run `dvc repro embed`)")
    emb = torch.load(path, map_location="cpu", weights_only=True)
    return {s: emb[s] for s in SPLITS}, None


def main(p: config.Params, generator: str, row: str, seed: str) -> None:
    cfg, seed = p.encoders, int(seed)
    base, fresh = parse_row(cfg, row)
    seed_everything(seed)
    recipe = dataclasses.replace(p.train, seed=seed)
    if base == LEARNED:
        recipe = dataclasses.replace(recipe, lr=read_json(lr_file(generator))["lr"])
    G = registry.load_generator(paths.generator_file(generator)).to(p.device)
    data = {s: load_split(generator, s) for s in SPLITS}
    inputs, enc = inputs_of(p, generator, base, fresh, data)
    latents = target_latents(G, data["train"], recipe.target)
    torch.manual_seed(seed)   # the initialization train() would draw for this seed
    model = (learned_model(G, recipe, cfg, latents, inputs["train"][:256]) if base == LEARNED else
             build_bridge(G, inputs["train"].shape[1], recipe, latents, None, emb_sample=inputs["train"][:INIT_SAMPLE]))
    train_data = {**data["train"], "emb": inputs["train"]}
    val_data = {**data["val"], "emb": inputs["val"]}
    targets = from_uint8(data["test"]["images"]).to(p.device)
    metric = profile_metric(p)
    quick, scored_at = Scorer(targets, metric, p.evaluate.batch, attributes=False), []

    def score(step: int, m) -> None:
        scored_at.extend({"step": step, **r} for r in quick(reconstruct(G, m, inputs["test"], p.evaluate.batch, p.device)))

    sampler = FreshFaces(G, None if enc is None else enc, recipe.target, 10_000 + seed, p.device) if fresh else None
    batch = p.train.batch_for(generator)
    lpips = profile_lpips(p).to(p.device) if recipe.loss_lpips > 0 else None
    model, curve, summary = train_run(G, model, train_data, val_data, recipe, cfg, p.device, batch, score,
                                      f"study {generator} {row} seed {seed}", next_batch=sampler, lpips=lpips)
    final = Scorer(targets, metric, p.evaluate.batch, attributes=p.evaluate.attributes)
    out = paths.study_results(generator, row, seed)
    write_csv(out / "curve.csv", curve)
    write_csv(out / "scores.csv", final(reconstruct(G, model, inputs["test"], p.evaluate.batch, p.device)))
    write_csv(out / "scores_at.csv", scored_at)
    write_json(out / "run.json", {**summary, "generator": generator, "row": row, "encoder": base, "fresh": fresh,
                                  "seed": seed, "lr": recipe.lr, "batch": batch,
                                  "faces_seen": sampler.faces_seen if fresh else len(data["train"]["images"]),
                                  "parameters": sum(t.numel() for t in model.parameters())})


if __name__ == "__main__":
    run(main)
