"""Stage ``figures``: render the bridge study's figures from the pipeline's outputs into results/figures/bridge/.

The offline CLIP's training curve and a text -> image retrieval grid (the profile's encoder on the
captioned test faces of ``clip_data``); per generator: its training curve, its reconstructions and
its speed/quality plane; across cells: the depth and target-space ablations. (The layer-group figures come from the ``edits``
stage, the student's grid from ``distill``.)
"""

from __future__ import annotations

import torch

from clipbridge import config, paths, registry
from clipbridge.errors import BadValueError
from clipbridge.io import from_uint8, read_csv, read_json, write_csv
from clipbridge.offline import captions
from clipbridge.report import figures
from clipbridge.stages import run
from clipbridge.stages.clip_data import CLIP_DATA
from clipbridge.stages.evaluate import out_dir, samples_file
from clipbridge.stages.models import load_provenance
from clipbridge.stages.train import curve_file


def caption_suffix(prov: dict, generator: str) -> str:
    """Which generator and encoder a figure rests on, stand-ins and placeholders named."""
    return f"{generator} generator, {prov['encoder']['label']}"


OUT = paths.FIGURES / "bridge"


def retrieval_rows(encoder, test: dict, queries: list[str], k: int) -> list[dict]:
    """For each ``attribute=value`` query: its held-out paraphrase prompt, the ``k`` test faces
    whose image embeddings are closest to the prompt's, whether each one's measured attribute has
    that value, and the share of all test faces that have it."""
    images = from_uint8(test["images"])
    with torch.no_grad():
        emb = torch.cat([encoder.encode_image(images[i:i + 256]) for i in range(0, len(images), 256)])
    rows = []
    for q in queries:
        attribute, _, value = q.partition("=")
        prompts = captions.zero_shot_prompts(attribute, paraphrased=True)
        if value not in prompts:
            raise BadValueError(f"params.yaml figures.retrieval: {q!r}: '{attribute}' has the values {list(prompts)}")
        with torch.no_grad():
            scores = emb @ encoder.encode_text([prompts[value][0]])[0]
        top = scores.topk(k).indices
        truth = [a[attribute] == value for a in test["attrs"]]
        rows.append({"query": prompts[value][0], "images": images[top], "match": [truth[i] for i in top.tolist()],
                     "base_rate": sum(truth) / len(truth)})
    return rows


def main(p: config.Params) -> None:
    figures.setup_style()
    prov = load_provenance(p)
    figures.clip_curve(read_csv(paths.RESULTS / "clip" / "curve.csv"), OUT / "clip_curve.pdf",
                       "offline CLIP (locked MiniLM text tower, ViT image tower)")
    encoder = registry.load_encoder(paths.ENCODER)
    test = torch.load(CLIP_DATA / "test.pt", map_location="cpu", weights_only=True)
    rows = retrieval_rows(encoder, test, p.figures.retrieval, p.figures.retrieval_k)
    write_csv(OUT / "clip_retrieval.csv", [   # the figure's row labels, for the paper's text
        {"query": q, "prompt": r["query"], "k": len(r["match"]),
         "precision": sum(bool(m) for m in r["match"]) / len(r["match"]), "base_rate": r["base_rate"]}
        for q, r in zip(p.figures.retrieval, rows, strict=True)])
    figures.clip_retrieval(rows, OUT / "clip_retrieval.pdf", f"text -> image retrieval, {prov['encoder']['label']}, "
                           f"held-out wording, {len(test['attrs'])} test faces of {', '.join(sorted(set(test['generator'])))}")
    for g in p.generators:
        suffix = caption_suffix(prov, g)
        figures.loss_curve(read_csv(curve_file(g, p.train.seeds[0])), OUT / f"loss_curve_{g}.pdf",
                           suffix)
        ev = read_json(out_dir(g) / "metrics.json")
        samples = torch.load(samples_file(g), map_location="cpu", weights_only=True)
        figures.reconstruction_grid(samples, OUT / f"reconstructions_{g}.pdf", p.figures.n_grid, suffix, ev["w_label"])
        figures.speed_quality(read_csv(out_dir(g) / "speed_quality.csv"), ev["subset"],
                              OUT / f"speed_quality_{g}.pdf", suffix, ev["w_label"])
    rows = read_csv(paths.RESULTS / "ablations" / "table.csv")
    figures.ablation_axis(rows, "depth", OUT / "ablation_depth.pdf", p.active.metric)
    figures.ablation_axis(rows, "target", OUT / "ablation_target.pdf", p.active.metric)


if __name__ == "__main__":
    run(main)
