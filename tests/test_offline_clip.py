"""The offline CLIP: pretrained locked text tower, trained image tower, checkpoints, training."""

import csv
import random

import pytest
import torch
import torch.nn.functional as F

from clipbridge.io import ModelFileError
from clipbridge.offline import clip_eval, clip_model, clip_train
from clipbridge.offline.captions import ATTRIBUTES, caption, zero_shot_prompts
from clipbridge.schedule import lr_at

TINY = clip_model.OfflineClipConfig(embed_dim=32, image_size=32, patch_size=8, width=64,
                                    layers=2, heads=2, slip_dim=16)
COLOURS = {"red": (1.0, -1.0, -1.0), "green": (-1.0, 1.0, -1.0), "blue": (-1.0, -1.0, 1.0),
           "yellow": (1.0, 1.0, -1.0)}
FAST = dict(batch=16, lr=2e-3, warmup=0, progress=False)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return clip_model.build_model(TINY)


def coloured_faces(n: int, seed: int = 0):
    """n 32x32 images: a background colour from COLOURS around a grey face-sized block,
    with attribute dicts knowing only the background and two captions each."""
    g = torch.Generator().manual_seed(seed)
    names = [list(COLOURS)[i % len(COLOURS)] for i in range(n)]
    bg = torch.tensor([COLOURS[c] for c in names]).view(n, 3, 1, 1)
    x = (0.8 * bg + 0.1 * torch.randn(n, 3, 32, 32, generator=g)).clamp(-1, 1)
    x[:, :, 8:24, 10:22] = 0.2 * torch.randn(n, 3, 1, 1, generator=g)
    attrs = [{**dict.fromkeys(ATTRIBUTES), "background": c} for c in names]
    rng = random.Random(seed)
    return x, attrs, [[caption(a, rng) for _ in range(2)] for a in attrs]


def test_minilm_dir_and_config_checks():
    assert (clip_model.minilm_dir() / "model.safetensors").is_file()
    with pytest.raises(ValueError, match="divisible"):
        clip_model.OfflineClipConfig(width=100, heads=3)


def test_embeddings_shapes_norms_and_gradients(model):
    x = torch.rand(3, 3, 48, 40, requires_grad=True) * 2 - 1
    x.retain_grad()
    img = clip_model.encode_images(model, x)
    assert img.shape == (3, TINY.embed_dim) and img.dtype == torch.float32
    assert torch.allclose(img.norm(dim=-1), torch.ones(3), atol=1e-5)
    img.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0      # preprocessing is differentiable
    txt = clip_model.encode_texts(model, ["a photo of a woman.", "a man looking left."])
    assert txt.shape == (2, TINY.embed_dim)
    assert torch.allclose(txt.norm(dim=-1), torch.ones(2), atol=1e-5)
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        clip_model.encode_images(model, torch.zeros(3, 32, 32))


def test_cached_text_path_equals_open_clip_forward(model):
    texts = ["a photo of a lady in her thirties with fair hair, looking left.", "someone."]
    with torch.no_grad():
        reference = F.normalize(model.encode_text(clip_model.tokenizer()(texts)), dim=-1)
    assert torch.allclose(clip_model.encode_texts(model, texts), reference, atol=1e-5)
    with pytest.raises(ValueError, match="longer than"):
        clip_model.pooled_text(model, ["very " * 80 + "long"])


def test_text_tower_is_the_pretrained_sentence_model(model):
    a, b, c = clip_model.pooled_text(model, ["a smiling woman", "a woman who is smiling",
                                     "a man with black hair"])
    assert F.cosine_similarity(a, b, dim=0) > F.cosine_similarity(a, c, dim=0) + 0.2
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(clip_model.trained_state_dict(model))
    assert all(n.startswith(("visual.", "text.proj.", "logit_scale")) for n in trainable)


def test_training_moves_image_tower_and_projection_only():
    x, _, caps = coloured_faces(16)
    init = clip_train.train(x, caps, TINY, steps=0, **FAST)
    trained = clip_train.train(x, caps, TINY, steps=2, slip_weight=0.5, **FAST)
    before, after = init.state_dict(), trained.state_dict()
    for name, value in before.items():
        changed = not torch.equal(value, after[name])
        assert changed != name.startswith("text.transformer."), name
    pretrained = clip_model.build_model(TINY).state_dict()
    assert all(torch.equal(v, after[k]) for k, v in pretrained.items()
               if k.startswith("text.transformer."))


def test_checkpoint_round_trip_is_exact_and_small(model, tmp_path):
    path = clip_model.save_checkpoint(model, TINY, tmp_path / "clip.pt", step=7, meta={"note": "x"})
    ckpt = torch.load(path, weights_only=True)
    assert not any(k.startswith("text.transformer.") for k in ckpt["state_dict"])
    assert path.stat().st_size < 1_000_000 and ckpt["dtype"] == "float32"
    loaded, info = clip_model.load_checkpoint(path)
    assert info["step"] == 7 and info["config"] == TINY and info["meta"] == {"note": "x"}
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.equal(clip_model.encode_images(model, x), clip_model.encode_images(loaded, x))
    half = clip_model.save_checkpoint(model, TINY, tmp_path / "half.pt", step=7, max_mb=0.01)
    assert torch.load(half, weights_only=True)["dtype"] == "float16"
    assert half.stat().st_size < 0.6 * path.stat().st_size
    loaded_half, _ = clip_model.load_checkpoint(half)
    assert torch.allclose(clip_model.encode_images(loaded_half, x), clip_model.encode_images(model, x),
                          atol=1e-2)
    assert not list(tmp_path.glob(".*tmp*"))               # atomic write left no temp file


def test_bad_checkpoints_give_one_line_errors(model, tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    good = clip_model.save_checkpoint(model, TINY, tmp_path / "good.pt", step=1)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:2000])
    wrong = tmp_path / "wrong.pt"
    torch.save({"weights": torch.zeros(1)}, wrong)
    ckpt = torch.load(good, weights_only=True)
    del ckpt["state_dict"]["visual.proj"]
    missing_key = tmp_path / "missing_key.pt"
    torch.save(ckpt, missing_key)
    ckpt = torch.load(good, weights_only=True)
    ckpt["init_kwargs"]["depth"] = 3
    bad_config = tmp_path / "bad_config.pt"
    torch.save(ckpt, bad_config)
    cases = {garbage: "not a readable torch checkpoint", truncated: "not a readable",
             wrong: "wrong file type", missing_key: "missing ['visual.proj']",
             bad_config: "unknown config keys ['depth']", tmp_path / "absent.pt": "no such file"}
    for path, problem in cases.items():
        with pytest.raises(ModelFileError) as err:
            clip_model.load_checkpoint(path)
        message = str(err.value)
        assert "\n" not in message and message.startswith(str(path)), message
        assert problem in message, message


def test_resume_equals_uninterrupted_run(tmp_path):
    x, _, caps = coloured_faces(16)
    args = dict(steps=4, slip_weight=0.5, schedule="cosine", seed=3, **FAST)
    whole = clip_train.train(x, caps, TINY, **args, ckpt_path=tmp_path / "a.pt",
                     curve_csv=tmp_path / "a.csv", log_every=1)
    clip_train.train(x, caps, TINY, **args, until=2, ckpt_path=tmp_path / "b.pt",
             curve_csv=tmp_path / "b.csv", log_every=1)
    assert clip_model.load_checkpoint(tmp_path / "b.pt")[1]["step"] == 2
    resumed = clip_train.train(x, caps, TINY, **args, ckpt_path=tmp_path / "b.pt",
                       curve_csv=tmp_path / "b.csv", log_every=1)
    for k, v in whole.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k

    def losses(path):
        return [line.split(",")[:5] for line in path.read_text().splitlines()]

    assert losses(tmp_path / "a.csv") == losses(tmp_path / "b.csv")
    assert len(losses(tmp_path / "a.csv")) == 5
    with pytest.raises(ModelFileError, match=r"other \['lr'\]"):
        clip_train.train(x, caps, TINY, **{**args, "lr": 1e-3}, ckpt_path=tmp_path / "b.pt")

    # A finished run (here: its checkpoint deleted, as DVC does before a stage runs, and its Adam
    # moments dropped, as benchmarks/device_train.py returns it) trains nothing and rewrites the
    # checkpoint from the state.
    state_file = clip_train.state_path(tmp_path / "b.pt")
    state = torch.load(state_file, weights_only=True)
    torch.save(dict(state, optimizer=dict(state["optimizer"], state={})), state_file)
    (tmp_path / "b.pt").unlink()
    again = clip_train.train(x, caps, TINY, **args, ckpt_path=tmp_path / "b.pt")
    reloaded, info = clip_model.load_checkpoint(tmp_path / "b.pt")
    assert info["step"] == 4
    for k, v in whole.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]) and torch.equal(v, reloaded.state_dict()[k]), k

    # Without the state, the finished checkpoint itself is reused (it persists in the pipeline),
    # unless it was trained on other data or arguments.
    state_file.unlink()
    reused = clip_train.train(x, caps, TINY, **args, ckpt_path=tmp_path / "b.pt", curve_csv=tmp_path / "c.csv")
    assert not (tmp_path / "c.csv").exists() and not state_file.exists()
    for k, v in whole.state_dict().items():
        assert torch.equal(v, reused.state_dict()[k]), k
    # ... or against other text-tower weights (its projection was fitted to those): it retrains.
    done = torch.load(tmp_path / "b.pt", weights_only=True)
    torch.save(dict(done, text_weights_sha256="0" * 64), tmp_path / "b.pt")
    clip_train.train(x, caps, TINY, **args, ckpt_path=tmp_path / "b.pt", curve_csv=tmp_path / "d.csv", log_every=1)
    assert losses(tmp_path / "d.csv") == losses(tmp_path / "a.csv")
    assert clip_model.load_checkpoint(tmp_path / "b.pt")[1]["step"] == 4     # and has the installed sha again
    state_file.unlink()
    clip_train.train(x, caps, TINY, **{**args, "steps": 5}, ckpt_path=tmp_path / "b.pt")
    assert clip_model.load_checkpoint(tmp_path / "b.pt")[1]["step"] == 5


def test_finished_run_is_reused_on_the_same_faces_rendered_differently(tmp_path):
    """Another kind of CPU renders the same seeded faces a few pixel levels differently (and so
    a few labels): the finished checkpoint is still the model of that recipe and is reused, with
    same_bytes False; other faces (latents) or another argument retrain."""
    x, _, caps = coloured_faces(16)
    z = torch.randn(16, 8, generator=torch.Generator().manual_seed(0))
    args = dict(steps=2, seed=3, **FAST)
    first = clip_train.train(x, caps, TINY, **args, ckpt_path=tmp_path / "m.pt", latents=z)
    clip_train.state_path(tmp_path / "m.pt").unlink()          # finished: as the clip stage leaves it
    meta = clip_model.load_checkpoint(tmp_path / "m.pt")[1]["meta"]
    assert clip_train.same_bytes(meta["fingerprint"], x, caps)

    drift = x.clone()
    drift[0, 0, 0, 0] += 2 / 255                                  # one pixel, one level
    relabelled = [list(c) for c in caps]
    relabelled[1][0] = relabelled[1][0] + " slightly"
    reused = clip_train.train(drift, relabelled, TINY, **args, ckpt_path=tmp_path / "m.pt", latents=z,
                              curve_csv=tmp_path / "r.csv")
    assert not (tmp_path / "r.csv").exists()                      # nothing trained
    for k, v in first.state_dict().items():
        assert torch.equal(v, reused.state_dict()[k]), k
    assert not clip_train.same_bytes(meta["fingerprint"], drift, relabelled)

    clip_train.train(drift, relabelled, TINY, **args, ckpt_path=tmp_path / "m.pt", latents=z + 1,
                     curve_csv=tmp_path / "o.csv", log_every=1)
    assert (tmp_path / "o.csv").exists()                          # retrained
    assert clip_train.same_recipe({"a": 1, "images_sha256": "x", "latents_sha256": "z"},
                                  {"a": 1, "images_sha256": "y", "latents_sha256": "z"})
    assert not clip_train.same_recipe({"a": 1, "images_sha256": "x"}, {"a": 1, "images_sha256": "y"})
    assert not clip_train.same_recipe({"a": 2, "latents_sha256": "z"}, {"a": 1, "latents_sha256": "z"})


def test_training_teaches_zero_shot_background_colour():
    x, attrs, caps = coloured_faces(64)
    model = clip_train.train(x, caps, TINY, steps=12, batch=32, lr=2e-3, warmup=0, schedule="constant",
                     progress=False)
    metrics = clip_eval.evaluate(model, x, attrs, [c[0] for c in caps])
    # 11 background colours (chance 0.09), 4 present (majority 0.25)
    assert metrics["zs_background_majority"] == 0.25
    assert metrics["zs_background_train"] >= 0.9
    assert metrics["zs_background_paraphrase"] >= 0.6          # held-out wording
    assert metrics["zs_hair_color_n"] == 0 and "zs_hair_color_train" not in metrics
    assert metrics["zs_background_classes"] == len(zero_shot_prompts("background", False))
    assert metrics["zs_background_train_balanced"] >= 0.9
    assert 0 <= metrics["i2t_r1"] <= metrics["i2t_r5"] <= 1


def test_balanced_accuracy_ignores_class_frequencies():
    truth = ["closed"] * 9 + ["open"]
    assert clip_eval.balanced_accuracy(["closed"] * 10, truth) == 0.5           # plain accuracy: 0.9
    assert clip_eval.balanced_accuracy(truth, truth) == 1.0
    assert clip_eval.balanced_accuracy(["open"] * 10, truth) == 0.5
    assert clip_eval.balanced_accuracy(["closed"] * 8 + ["open", "closed"], truth) == pytest.approx((8 / 9 + 0) / 2)


def test_augment_slip_loss_and_schedule():
    x = torch.rand(8, 3, 32, 32) * 2 - 1
    aug = clip_model.Augment(flip=True)
    a = clip_model.augment(x, torch.Generator().manual_seed(0), aug)
    b = clip_model.augment(x, torch.Generator().manual_seed(0), aug)
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, x)
    assert a.min() >= -1 and a.max() <= 1
    identity = clip_model.Augment(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), jitter=0.0)
    same = clip_model.augment(x, torch.Generator().manual_seed(0), identity)
    assert torch.allclose(same, x, atol=1e-5)
    z = torch.randn(16, 8)
    assert clip_model.nt_xent(z, z + 0.01 * torch.randn(16, 8), 0.1) < clip_model.nt_xent(z, torch.randn(16, 8),
                                                                           0.1)
    lrs = [lr_at(s, 10, 1.0, "cosine", 2) for s in range(10)]
    assert lrs[:3] == [0.5, 1.0, 1.0] and lrs[-1] < 0.05
    assert all(a > b for a, b in zip(lrs[2:], lrs[3:]))
    assert lr_at(9, 10, 1.0, "constant", 2) == 1.0
    with pytest.raises(ValueError, match="available"):
        lr_at(0, 10, 1.0, "step", 0)


def test_ridge_r2():
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(400, 16, generator=g)
    y = emb @ torch.randn(16, 5, generator=g) + 0.05 * torch.randn(400, 5, generator=g)
    assert clip_eval.ridge_r2(emb[:300], y[:300], emb[300:], y[300:], alpha=1e-3) > 0.99
    noise = torch.randn(400, 5, generator=g)
    assert abs(clip_eval.ridge_r2(emb[:300], noise[:300], emb[300:], noise[300:], alpha=1.0)) < 0.15
    assert clip_eval.ridge_r2(emb[:300].numpy(), y[:300, 0].numpy(), emb[300:].numpy(),
                       y[300:, 0].numpy()) > 0.95


def test_held_out_curve_watches_without_changing_the_run(tmp_path):
    x, _, caps = coloured_faces(48)
    held_out = (x[32:], [c[0] for c in caps[32:]])
    args = dict(steps=4, slip_weight=0.5, seed=1, log_every=3, **FAST)
    plain = clip_train.train(x[:32], caps[:32], TINY, **args)
    watched = clip_train.train(x[:32], caps[:32], TINY, **args, val=held_out, eval_every=2,
                       curve_csv=tmp_path / "c.csv")
    for k, v in plain.state_dict().items():
        assert torch.equal(v, watched.state_dict()[k]), k
    rows = list(csv.DictReader(open(tmp_path / "c.csv")))
    assert [r["step"] for r in rows] == ["2", "3", "4"]     # log_every 3, eval_every 2, the end
    assert rows[1]["val_clip_loss"] == ""                     # step 3: no held-out evaluation
    for r in (rows[0], rows[2]):
        assert 0 < float(r["val_clip_loss"]) < 10
        assert 0 <= float(r["val_i2t_r1"]) <= 1 and 0 <= float(r["val_t2i_r1"]) <= 1
    # recall@1 counts a retrieved face with the same caption string as a hit
    same = clip_eval.same_caption(["a", "b", "a"])
    assert same.tolist() == [[True, False, True], [False, True, False], [True, False, True]]


def test_bf16_precision_trains_and_is_part_of_the_fingerprint(tmp_path):
    x, attrs, caps = coloured_faces(64)
    with pytest.raises(ValueError, match=r"unknown precision 'fp8'; available: \['fp32', 'bf16'\]"):
        clip_train.train(x, caps, TINY, steps=1, precision="fp8", **FAST)
    args = dict(steps=12, batch=32, lr=2e-3, warmup=0, schedule="constant", progress=False)
    model = clip_train.train(x, caps, TINY, **args, precision="bf16", ckpt_path=tmp_path / "m.pt")
    assert all(p.dtype == torch.float32 for p in model.parameters())   # autocast, fp32 weights
    metrics = clip_eval.evaluate(model, x, attrs, [c[0] for c in caps])
    assert metrics["zs_background_train"] >= 0.9
    meta = clip_model.load_checkpoint(tmp_path / "m.pt")[1]["meta"]
    assert meta["fingerprint"]["precision"] == "bf16"
    assert meta["device"].startswith("CPU (") and meta["seconds"] > 0     # what trained it, how long
    # An fp32 run does not reuse the bf16 checkpoint: it trains (and its fingerprint has no
    # precision key, as fp32 checkpoints made before the option existed).
    clip_train.state_path(tmp_path / "m.pt").unlink()
    clip_train.train(x, caps, TINY, **args, ckpt_path=tmp_path / "m.pt", curve_csv=tmp_path / "f.csv")
    assert (tmp_path / "f.csv").exists()
    assert "precision" not in clip_model.load_checkpoint(tmp_path / "m.pt")[1]["meta"]["fingerprint"]


def test_retrieval_counts_same_caption_hits_and_takes_embeddings(model):
    x, _, caps = coloured_faces(12)
    assert clip_eval.retrieval(model, x, ["a face."] * 12) == dict(i2t_r1=1.0, i2t_r5=1.0, t2i_r1=1.0, t2i_r5=1.0)
    first = [c[0] for c in caps]
    from_images = clip_eval.retrieval(model, x, first)
    assert clip_eval.retrieval(model, clip_model.encode_images(model, x).detach(), first) == pytest.approx(from_images)
    assert 0 <= from_images["i2t_r1"] <= from_images["i2t_r5"] <= 1
