"""Measuring the offline CLIP (:mod:`clipbridge.offline.clip_model`): retrieval recall among
faces and their captions, zero-shot attribute accuracy (plain and balanced), and a ridge probe of
what the embedding linearly encodes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from clipbridge.offline.captions import ATTRIBUTES, zero_shot_prompts
from clipbridge.offline.clip_model import CustomTextCLIP, encode_images, encode_texts


def same_caption(captions: Sequence[str], device: torch.device | str = "cpu") -> Tensor:
    """[N, N] bool: the captions of rows i and j are the same string (automatic captions repeat)."""
    ids = {s: i for i, s in enumerate(dict.fromkeys(captions))}
    cid = torch.tensor([ids[s] for s in captions], device=device)
    return cid[:, None] == cid[None, :]


def _embed_images(model: CustomTextCLIP, images: Tensor, batch: int = 256) -> Tensor:
    """[N, 3, H, W] in [-1, 1] -> [N, D] normalized embeddings, in batches, without gradient."""
    device = model.logit_scale.device
    with torch.no_grad():
        return torch.cat([encode_images(model, images[i:i + batch].to(device))
                          for i in range(0, len(images), batch)])


def _recall(sim: Tensor, hit: Tensor, k: int) -> float:
    """Fraction of rows whose top-k columns (by ``sim``) include a ``hit`` column."""
    top = sim.topk(min(k, sim.shape[1]), dim=1).indices
    return float(hit.gather(1, top).any(dim=1).float().mean())


def recalls(img: Tensor, txt: Tensor, same: Tensor, ks: Sequence[int] = (1, 5)
            ) -> dict[str, float]:
    """``i2t_r{k}`` and ``t2i_r{k}`` for each k: image->text and text->image recall@k among N
    pairs. img, txt: [N, D] normalized; same: [N, N] bool (symmetric), which items count as hits."""
    sim = img @ txt.T
    return {f"{way}_r{k}": _recall(s, same, k) for way, s in (("i2t", sim), ("t2i", sim.T))
            for k in ks}


def zero_shot_classifier(model: CustomTextCLIP, attribute: str, paraphrased: bool
                         ) -> tuple[list[str], Tensor]:
    """Class names and their text embeddings [C, D] (mean of normalized prompt embeddings,
    renormalized) for one attribute."""
    prompts = zero_shot_prompts(attribute, paraphrased)
    with torch.no_grad():
        weights = torch.stack([F.normalize(encode_texts(model, p).mean(0), dim=-1)
                               for p in prompts.values()])
    return list(prompts), weights


def balanced_accuracy(pred: Sequence, truth: Sequence) -> float:
    """Mean over the values present in ``truth`` of the share of their items predicted right."""
    hits: dict = {}
    for p, t in zip(pred, truth, strict=True):
        hits.setdefault(t, []).append(p == t)
    return float(np.mean([np.mean(h) for h in hits.values()]))


def retrieval(model: CustomTextCLIP, images: Tensor, captions: Sequence[str]) -> dict[str, float]:
    """Image->text and text->image recall@1 and @5 among N faces and their N captions.

    images: [N, 3, H, W] in [-1, 1], or their [N, D] embeddings; captions: N strings. A retrieved
    item whose caption is the same string as the query's counts as a hit.
    """
    img = images if images.ndim == 2 else _embed_images(model, images)
    with torch.no_grad():
        txt = encode_texts(model, captions)
    return recalls(img, txt, same_caption(captions, img.device))


def evaluate(model: CustomTextCLIP, images: Tensor, attrs_list: Sequence[Mapping],
             captions: Sequence[str]) -> dict[str, float]:
    """Retrieval and zero-shot metrics on held-out faces.

    images: [N, 3, H, W] float in [-1, 1]; attrs_list: N annotator dicts; captions: N strings,
    one per image. Identical caption strings count as the same caption, so retrieving any image
    whose caption equals the query's is a hit (automatic captions repeat).
    Returns floats: ``i2t_r1, i2t_r5, t2i_r1, t2i_r5`` and per attribute ``zs_{attr}_train``,
    ``zs_{attr}_paraphrase`` (accuracy over images where the attribute is known, argmax over all
    of its values), ``zs_{attr}_majority`` (accuracy of always guessing the commonest value),
    ``zs_{attr}_n``, ``zs_{attr}_classes`` (values to choose from); the same accuracies
    balanced, ``zs_{attr}_{train,paraphrase}_balanced`` (mean over the values present of the
    share of their faces classified correctly: a constant guess scores 1 / values present,
    whatever the class frequencies); plus ``zs_mean_train``, ``zs_mean_paraphrase`` and their
    ``_balanced`` versions over attributes with at least one known value.
    """
    if not len(images) == len(attrs_list) == len(captions):
        raise ValueError(f"got {len(images)} images, {len(attrs_list)} attribute dicts and "
                         f"{len(captions)} captions")
    img = _embed_images(model, images)
    out = retrieval(model, img, captions)
    means: dict[str, list[float]] = {k: [] for k in ("train", "paraphrase", "train_balanced",
                                                     "paraphrase_balanced")}
    for attr in ATTRIBUTES:
        known = [i for i, a in enumerate(attrs_list) if a.get(attr) is not None]
        out[f"zs_{attr}_n"] = float(len(known))
        if not known:
            continue
        truth = [attrs_list[i][attr] for i in known]
        out[f"zs_{attr}_majority"] = max(truth.count(v) for v in set(truth)) / len(truth)
        for kind in ("train", "paraphrase"):
            names, weights = zero_shot_classifier(model, attr, kind == "paraphrase")
            out[f"zs_{attr}_classes"] = float(len(names))
            pred = [names[p] for p in (img[known] @ weights.T).argmax(1).tolist()]
            acc = float(np.mean([p == t for p, t in zip(pred, truth)]))
            balanced = balanced_accuracy(pred, truth)
            out[f"zs_{attr}_{kind}"], out[f"zs_{attr}_{kind}_balanced"] = acc, balanced
            means[kind].append(acc)
            means[f"{kind}_balanced"].append(balanced)
    for kind, accs in means.items():
        if accs:
            out[f"zs_mean_{kind}"] = float(np.mean(accs))
    return out


def ridge_r2(emb_train: Tensor | np.ndarray, y_train: Tensor | np.ndarray,
             emb_test: Tensor | np.ndarray, y_test: Tensor | np.ndarray,
             alpha: float = 1.0) -> float:
    """Ridge probe: how linearly decodable targets (e.g. generator latents) are from embeddings.

    emb_*: [N, D], y_*: [N, K] (or [N]); fits y = (e - mean_e) W + mean_y on the train split in
    closed form, W = (E^T E + alpha I)^-1 E^T Y, in float64. Returns the test R^2 averaged
    uniformly over the K target dimensions (1 = perfect, 0 = no better than the train mean).
    """
    def as64(a):
        return torch.as_tensor(np.asarray(a.detach().cpu() if isinstance(a, Tensor) else a),
                               dtype=torch.float64)

    e_tr, e_te, y_tr, y_te = map(as64, (emb_train, emb_test, y_train, y_test))
    if y_tr.ndim == 1:
        y_tr, y_te = y_tr[:, None], y_te[:, None]
    e_mean, y_mean = e_tr.mean(0), y_tr.mean(0)
    e_c = e_tr - e_mean
    gram = e_c.T @ e_c + alpha * torch.eye(e_c.shape[1], dtype=torch.float64)
    w = torch.linalg.solve(gram, e_c.T @ (y_tr - y_mean))
    pred = (e_te - e_mean) @ w + y_mean
    sse = ((y_te - pred) ** 2).sum(0)
    sst = ((y_te - y_te.mean(0)) ** 2).sum(0)
    return float((1 - sse / sst).mean())
