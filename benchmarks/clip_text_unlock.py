"""Experiment (printed, not a test, changes no checkpoint): does unlocking MiniLM's last layer let
the offline CLIP read held-out wordings?

The committed offline CLIP keeps its text transformer locked (issue 5's design); with held-out
paraphrases it reads the mouth near chance, and ``clip_probe.py`` shows MiniLM's open/closed
direction differs between the training and the held-out wordings. This script keeps the trained
image tower frozen, caches the committed model's image embeddings of ``--faces`` training faces and
MiniLM's hidden states before its last layer for ``--captions-per-face`` of their captions, then
trains a copy of that last layer (and the text projection, from its trained value) with the CLIP
loss against the frozen image embeddings. It prints balanced zero-shot accuracy per attribute on
the 1,024 test faces, training prompts and held-out paraphrases, for the committed (locked) text
side and for the unlocked one. Needs ``dvc repro clip_data``.

    python benchmarks/clip_text_unlock.py --faces 16384 --steps 1500
"""

from __future__ import annotations

import argparse
import copy
import random
import time

import torch
import torch.nn.functional as F
from tqdm import tqdm
from transformers.masking_utils import create_bidirectional_mask

from clipbridge.offline import captions
from clipbridge.offline import clip_eval, clip_model
from clipbridge.io import from_uint8
from clipbridge.stages.clip import CHECKPOINT
from clipbridge.stages.clip_data import CLIP_DATA


def tokens(model, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    ids = clip_model.tokenizer()(texts)
    mask = (ids != model.text.config.pad_token_id).long()
    used = int(mask.sum(1).max())
    return ids[:, :used], mask[:, :used]


def before_last(model, texts: list[str], batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """MiniLM hidden states entering its last layer [N, T, 384] and the attention masks [N, T]."""
    states, masks, width = [], [], 0
    with torch.no_grad():
        for i in range(0, len(texts), batch):
            ids, mask = tokens(model, texts[i:i + batch])
            out = model.text.transformer(input_ids=ids, attention_mask=mask, output_hidden_states=True)
            states.append(out.hidden_states[-2])
            masks.append(mask)
            width = max(width, ids.shape[1])
    pad = [(F.pad(s, (0, 0, 0, width - s.shape[1])), F.pad(m, (0, width - m.shape[1]))) for s, m in zip(states, masks)]
    return torch.cat([s for s, _ in pad]), torch.cat([m for _, m in pad])


def text_embed(model, layer, proj, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Last layer, mean pooling over real tokens, projection, L2 normalization."""
    h = layer(hidden, attention_mask=create_bidirectional_mask(
        config=model.text.transformer.config, inputs_embeds=hidden, attention_mask=mask))
    h = h[0] if isinstance(h, tuple) else h
    m = mask.unsqueeze(-1).float()
    return F.normalize(proj((h * m).sum(1) / m.sum(1)), dim=-1)


def zero_shot(model, layer, proj, img: torch.Tensor, attrs: list[dict]) -> dict[str, tuple[float, float]]:
    out = {}
    with torch.no_grad():
        for attr in captions.ATTRIBUTES:
            rows = [i for i, a in enumerate(attrs) if a.get(attr) is not None]
            truth = [attrs[i][attr] for i in rows]
            scores = []
            for paraphrased in (False, True):
                prompts = captions.zero_shot_prompts(attr, paraphrased)
                weights = torch.stack([F.normalize(text_embed(model, layer, proj, *before_last(model, p)).mean(0), dim=-1)
                                       for p in prompts.values()])
                names = list(prompts)
                guess = (img[rows] @ weights.T).argmax(1).tolist()
                scores.append(clip_eval.balanced_accuracy([names[g] for g in guess], truth))
            out[attr] = (scores[0], scores[1])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=int, default=16384)
    ap.add_argument("--captions-per-face", type=int, default=2)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr-layer", type=float, default=2e-5)
    ap.add_argument("--lr-proj", type=float, default=1e-4)
    args = ap.parse_args()
    torch.manual_seed(0)
    model, _ = clip_model.load_checkpoint(CHECKPOINT)
    model.eval()
    train = torch.load(CLIP_DATA / "train.pt", weights_only=True)
    test = torch.load(CLIP_DATA / "test.pt", weights_only=True)
    t0 = time.perf_counter()
    with torch.no_grad():
        embed = lambda x: torch.cat([clip_model.encode_images(model, from_uint8(x[i:i + 256]))  # noqa: E731
                                     for i in range(0, len(x), 256)])
        img_train, img_test = embed(train["images"][:args.faces]), embed(test["images"])
    rng = random.Random(0)
    texts, owner = [], []
    for i in range(args.faces):
        for c in rng.sample(train["captions"][i], args.captions_per_face):
            texts.append(c)
            owner.append(i)
    hidden, mask = before_last(model, texts)
    owner_t = torch.tensor(owner)
    print(f"cached {len(texts)} captions and {args.faces} image embeddings in {time.perf_counter() - t0:.0f} s")

    layer0, proj0 = model.text.transformer.encoder.layer[-1], model.text.proj
    ids, m = tokens(model, texts[:64])
    with torch.no_grad():   # the cached path reproduces the model's own text embeddings
        ref = clip_model.encode_texts(model, texts[:64])
        got = text_embed(model, layer0, proj0, hidden[:64, :ids.shape[1]], mask[:64, :ids.shape[1]])
    print(f"cached path vs encode_texts: max |difference| {(ref - got).abs().max().item():.2e}")
    before = zero_shot(model, layer0, proj0, img_test, test["attrs"])

    layer, proj = copy.deepcopy(layer0).train(), copy.deepcopy(proj0)
    opt = torch.optim.AdamW([{"params": layer.parameters(), "lr": args.lr_layer},
                             {"params": proj.parameters(), "lr": args.lr_proj}], weight_decay=0.05)
    scale = model.logit_scale.exp().detach()
    for step in tqdm(range(args.steps), desc="unlocked last layer", unit="step"):
        idx = torch.randint(len(texts), (args.batch,))
        used = int(mask[idx].sum(1).max())
        txt = text_embed(model, layer, proj, hidden[idx, :used], mask[idx, :used])
        img = img_train[owner_t[idx]]
        logits = scale * img @ txt.T
        same = (owner_t[idx, None] == owner_t[None, idx]).float()
        target = same / same.sum(1, keepdim=True)
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 250 == 0:
            tqdm.write(f"step {step} loss {loss.item():.3f}")
    layer.eval()
    after = zero_shot(model, layer, proj, img_test, test["attrs"])
    print(f"\n{'attribute':12s} {'locked train':>12s} {'locked para':>12s} {'unlocked train':>14s} {'unlocked para':>13s}")
    for attr in captions.ATTRIBUTES:
        print(f"{attr:12s} {before[attr][0]:12.3f} {before[attr][1]:12.3f} {after[attr][0]:14.3f} {after[attr][1]:13.3f}")
    mean = lambda d, k: sum(v[k] for v in d.values()) / len(d)  # noqa: E731
    print(f"{'mean':12s} {mean(before, 0):12.3f} {mean(before, 1):12.3f} {mean(after, 0):14.3f} {mean(after, 1):13.3f}")


if __name__ == "__main__":
    main()
