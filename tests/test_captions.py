"""Captions: vocabulary, consistency with the attributes, variety, held-out paraphrases."""

import random
import re

import numpy as np
import pytest

from clipbridge.offline import captions as C

FULL = dict(pose="looking left", tilt="looking up", mouth="open", skin_tone="light",
            hair_color="blond", background="grey", lighting="bright", age_bracket="thirties",
            gender="woman")


def random_attrs(rng: random.Random, p_none: float = 0.2) -> dict:
    return {k: None if rng.random() < p_none else rng.choice(v) for k, v in C.ATTRIBUTES.items()}


def mentions(text: str, phrase: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(phrase)}(?![\w-])", text) is not None


def test_full_caption_mentions_every_attribute_and_no_other_value():
    rng = random.Random(0)
    for _ in range(300):
        attrs = random_attrs(rng)
        text = C.caption(attrs, rng, keep=1.0)
        for attr in (*C.NOUN_ATTRS, *C.CLAUSE_ATTRS):
            table = C._TRAIN_PHRASES[attr]
            if attrs[attr] is not None:
                assert any(mentions(text, p) for p in table[attrs[attr]]), (attr, text)
            for value, phrases in table.items():
                if value != attrs[attr]:
                    assert not any(mentions(text, p) for p in phrases), (attr, value, text)
        for decade in C._DECADE_YEARS:
            assert mentions(text, decade) == (attrs["age_bracket"] == decade), text
        male = any(mentions(text, w) for w in ("man", "guy", "boy", "his"))
        female = any(mentions(text, w) for w in ("woman", "lady", "girl", "her"))
        assert (male, female) == (attrs["gender"] == "man", attrs["gender"] == "woman"), text


def test_captions_are_varied_reproducible_and_accept_both_rng_types():
    texts = [C.caption(FULL, random.Random(1)) for _ in range(3)]
    assert len(set(texts)) == 1
    rng = np.random.default_rng(0)
    many = {C.caption(FULL, rng) for _ in range(300)}
    assert len(many) > 200
    assert C.caption(FULL, np.random.default_rng(5)) == C.caption(FULL, np.random.default_rng(5))
    assert any(mentions(t, "fair hair") for t in many) and any(mentions(t, "blond hair")
                                                               for t in many)
    assert len(C.captions_for(FULL, 5, seed=3)) == 5
    assert C.captions_for(FULL, 5, seed=3) == C.captions_for(FULL, 5, seed=3)


def test_all_none_and_partial_attributes():
    nothing = dict.fromkeys(C.ATTRIBUTES)
    assert C.caption(nothing, random.Random(0)).endswith(".")
    child = {**nothing, "age_bracket": "child", "gender": "man"}
    assert any(w in C.caption(child, random.Random(0), keep=1.0) for w in ("boy",))
    only_bg = {**nothing, "background": "blue"}
    for seed in range(20):         # the one known detail is always kept
        assert "blue" in C.caption(only_bg, random.Random(seed), keep=0.0)


def test_invalid_attributes_name_the_valid_choices():
    with pytest.raises(ValueError, match=r"valid: \['black', 'brown'"):
        C.caption({**FULL, "hair_color": "purple"}, random.Random(0))
    with pytest.raises(ValueError, match="missing \\['tilt'\\], unknown \\['smile'\\]"):
        C.caption({**{k: v for k, v in FULL.items() if k != "tilt"}, "smile": "yes"},
                  random.Random(0))
    with pytest.raises(TypeError):
        C.caption(FULL, 3)
    with pytest.raises(ValueError, match="available"):
        C.zero_shot_prompts("eyes", paraphrased=False)


def test_paraphrases_are_held_out_from_training_captions():
    assert not set(C.TRAIN_TEMPLATES) & set(C.PARAPHRASE_TEMPLATES)
    rng = random.Random(2)
    train_text = "\n".join(C.caption(random_attrs(rng, 0.1), rng) for _ in range(2000))
    for template in C.PARAPHRASE_TEMPLATES:
        assert template.split("{}")[0].strip() not in train_text
    for table in C._PARAPHRASE_PHRASES.values():
        for phrases in table.values():
            for phrase in phrases:
                assert not mentions(train_text, phrase), phrase
    for attr in C.ATTRIBUTES:
        held_out = C.zero_shot_prompts(attr, paraphrased=True)
        for prompts in held_out.values():
            assert all(p not in train_text for p in prompts)


def test_zero_shot_prompts_cover_each_value_with_its_own_wording():
    for attr, values in C.ATTRIBUTES.items():
        for paraphrased in (False, True):
            prompts = C.zero_shot_prompts(attr, paraphrased)
            assert tuple(prompts) == values
            templates = C.PARAPHRASE_TEMPLATES if paraphrased else C.TRAIN_TEMPLATES
            starts = tuple(t.split("{}")[0] for t in templates)
            for value, texts in prompts.items():
                assert texts and all(t.startswith(starts) for t in texts)
                others = [p for v, ps in prompts.items() if v != value for p in ps]
                assert not set(texts) & set(others)
    assert "a photo of a person with blond hair." in C.zero_shot_prompts("hair_color",
                                                                         False)["blond"]
