"""Diagnostic (printed, not a test): is an attribute in the offline CLIP's image embedding at all?

Zero-shot accuracy measures image *and* text alignment; a linear probe on the image embedding
alone separates "the image tower never learned it" from "the text side does not match it".
Trains a multinomial logistic probe (L-BFGS, L2 1e-3, classes weighted by inverse frequency) per
attribute on the first 4,096 captioned training faces of ``clip_data`` and scores it on the 1,024
test faces (faces whose attribute was not measured are left out), for the committed offline CLIP
and for the same architecture at its random initialization. Beside the probe's plain and balanced
accuracy it prints the balanced zero-shot accuracy with the training prompts and with the held-out
paraphrases, read from ``results/clip/metrics.json`` (over every test face whose attribute is
measured; ``n test`` counts the probe's faces, whose value the probe saw in training): a probe well above a zero-shot score means
the image embedding holds the attribute and the text side does not reach it. A last table asks
the text side alone: for each attribute, how many values' held-out paraphrase prompts lie nearest (cosine of the class means) to their own
value's training prompts, in the locked MiniLM space and after the trained projection, and in
MiniLM's space how well each value's direction (its class mean minus the mean over values) agrees
between the two wordings (cosine, averaged over values): near zero, what a projection learns to
separate in the training wordings does not separate the paraphrases. Needs
``dvc repro clip_data`` (or ``dvc pull``) first.

    python benchmarks/clip_probe.py
"""

from __future__ import annotations

import collections

import torch
import torch.nn.functional as F

from clipbridge import config, paths
from clipbridge.offline import captions
from clipbridge.offline import clip_eval, clip_model
from clipbridge.io import from_uint8, read_json
from clipbridge.stages.clip import CHECKPOINT
from clipbridge.stages.clip_data import CLIP_DATA

ATTRIBUTES = ("gender", "age_bracket", "mouth", "pose", "tilt", "lighting", "background")
N_TRAIN = 4096


def embed(model, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return clip_model.encode_images(model.eval(), from_uint8(images))


def probe(x: torch.Tensor, y: torch.Tensor, x_test: torch.Tensor, classes: int) -> torch.Tensor:
    """Predicted classes of ``x_test`` from a logistic probe fitted on ``(x, y)``."""
    w = torch.zeros(x.shape[1], classes, requires_grad=True)
    b = torch.zeros(classes, requires_grad=True)
    weight = 1 / torch.bincount(y, minlength=classes).float().clamp(min=1)
    opt = torch.optim.LBFGS([w, b], max_iter=200)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w * 10 + b, y, weight=weight) + 1e-3 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return (x_test @ w * 10 + b).argmax(1)


def main() -> None:
    p = config.load()
    train = torch.load(CLIP_DATA / "train.pt", weights_only=True)
    test = torch.load(CLIP_DATA / "test.pt", weights_only=True)
    trained, _ = clip_model.load_checkpoint(CHECKPOINT)
    torch.manual_seed(p.clip.seed)                       # the random init the clip stage measures
    models = {"trained": trained, "random init": clip_model.build_model(clip_model.config_from_params(p.clip))}
    measured = read_json(paths.RESULTS / "clip" / "metrics.json")   # the clip stage's zero-shot scores
    print(f"{'':25s} {'probe':>9s} {'probe':>9s} {'zero-shot':>9s} {'zero-shot':>10s}")
    print(f"{'model':12s} {'attribute':12s} {'acc':>9s} {'balanced':>9s} {'training':>9s} "
          f"{'paraphrase':>10s} {'majority':>9s} {'n test':>7s}")
    for name, model in models.items():
        e_train, e_test = embed(model, train["images"][:N_TRAIN]), embed(model, test["images"])
        for attr in ATTRIBUTES:
            y_train = [a[attr] for a in train["attrs"][:N_TRAIN]]
            index = {v: i for i, v in enumerate(sorted({v for v in y_train if v is not None}))}
            rows = [i for i, v in enumerate(y_train) if v is not None]
            rows_test = [i for i, a in enumerate(test["attrs"]) if a[attr] in index]
            y = torch.tensor([index[y_train[i]] for i in rows])
            y_test = torch.tensor([index[test["attrs"][i][attr]] for i in rows_test])
            pred = probe(e_train[rows], y, e_test[rows_test], len(index))
            majority = collections.Counter(y.tolist()).most_common(1)[0][0]
            zs = measured[name.replace(" ", "_")]
            print(f"{name:12s} {attr:12s} {(pred == y_test).float().mean().item():9.3f} "
                  f"{clip_eval.balanced_accuracy(pred.tolist(), y_test.tolist()):9.3f} "
                  f"{zs[f'zs_{attr}_train_balanced']:9.3f} {zs[f'zs_{attr}_paraphrase_balanced']:10.3f} "
                  f"{(y_test == majority).float().mean().item():9.3f} {len(rows_test):7d}")
    text_side(trained)


def class_means(model, attr: str, paraphrased: bool, projected: bool) -> torch.Tensor:
    """[C, D] normalized mean of each value's normalized prompt embeddings: the zero-shot
    classifier when ``projected``, else the same in the locked MiniLM's pooled space."""
    if projected:
        return clip_eval.zero_shot_classifier(model, attr, paraphrased)[1]
    with torch.no_grad():
        return torch.stack([F.normalize(F.normalize(clip_model.pooled_text(model, prompts), dim=-1).mean(0), dim=-1)
                            for prompts in captions.zero_shot_prompts(attr, paraphrased).values()])


def text_side(model) -> None:
    """Per attribute: values whose paraphrase prompts are nearest their own training prompts, and
    the agreement of the value directions of the two wordings in MiniLM's space."""
    print(f"\n{'':19s} {'nearest own value':>17s}  {'direction':>9s}")
    print(f"{'attribute':12s} {'values':>6s} {'MiniLM':>7s} {'projected':>9s}  {'cosine':>9s}")
    for attr, values in captions.ATTRIBUTES.items():
        means = {(para, proj): class_means(model, attr, para, proj) for para in (False, True) for proj in (False, True)}
        hits = [int(((means[True, proj] @ means[False, proj].T).argmax(1) == torch.arange(len(values))).sum())
                for proj in (False, True)]
        train, para = means[False, False], means[True, False]
        agree = F.cosine_similarity(train - train.mean(0), para - para.mean(0), dim=1).mean()
        print(f"{attr:12s} {len(values):6d} {hits[0]:7d} {hits[1]:9d}  {agree.item():9.3f}")

if __name__ == "__main__":
    main()
