"""Automatic captions for generated faces, and the prompts of zero-shot evaluation.

The annotator describes each face by a dict with exactly the keys of :data:`ATTRIBUTES`; a value
is one of that attribute's choices, or None when it is unknown or does not apply. From such a
dict :func:`caption` writes a varied English sentence: a random training template, a random
synonym for every attribute phrase, a random subset of the known attributes in random order,
e.g. ``"a photo of a lady in her thirties with fair hair, head turned to the left."``.

Wording is split in two disjoint sets. Training captions use only ``TRAIN_TEMPLATES`` and the
training phrases; the held-out ``PARAPHRASE_TEMPLATES`` and paraphrase phrases never appear in a
training caption, so zero-shot accuracy with paraphrased prompts measures how much the text side
(a pretrained sentence model) generalizes beyond the words seen in training.

Everything here is a pure function of its arguments; randomness comes from a passed
``random.Random`` or ``numpy.random.Generator``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

import numpy as np

from clipbridge.errors import UnknownNameError

# attribute -> its values, in a fixed order (the order of zero-shot classes).
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "pose": ("looking left", "looking right", "facing the camera"),
    "tilt": ("looking up", "looking down"),
    "mouth": ("open", "closed"),
    "skin_tone": ("light", "medium", "dark"),
    "hair_color": ("black", "brown", "blond", "red", "grey"),
    "background": ("white", "grey", "black", "red", "orange", "yellow", "green", "blue",
                   "purple", "pink", "brown"),
    "lighting": ("dark", "dim", "bright"),
    "age_bracket": ("child", "teenager", "twenties", "thirties", "forties", "fifties",
                    "sixties", "seventies"),
    "gender": ("woman", "man"),
}

# Sentence templates; "{}" is the description of the face.
TRAIN_TEMPLATES: tuple[str, ...] = (
    "a photo of {}.",
    "a picture of {}.",
    "a portrait of {}.",
    "a close-up photo of the face of {}.",
    "a cropped photo of {}.",
    "{}.",
)
PARAPHRASE_TEMPLATES: tuple[str, ...] = (
    "an image showing {}.",
    "this is a headshot of {}.",
    "a low-resolution snapshot of {}.",
)

# Attributes written as noun phrases ("with blond hair") and as trailing clauses ("looking up").
NOUN_ATTRS = ("mouth", "skin_tone", "hair_color", "background")
CLAUSE_ATTRS = ("pose", "tilt", "lighting")

_COLOUR_WORDS = {"grey": ("grey", "gray"), "purple": ("purple", "violet")}


def _background_phrases(colour: str, forms: Sequence[str]) -> tuple[str, ...]:
    words = _COLOUR_WORDS.get(colour, (colour,))
    return tuple(form.format(word) for form in forms for word in words)


# Phrases per (attribute, value): training wording and held-out paraphrases.
_TRAIN_PHRASES: dict[str, dict[str, tuple[str, ...]]] = {
    "pose": {
        "looking left": ("looking left", "head turned to the left", "facing left"),
        "looking right": ("looking right", "head turned to the right", "facing right"),
        "facing the camera": ("facing the camera", "looking straight ahead", "frontal view"),
    },
    "tilt": {
        "looking up": ("looking up", "head tilted up", "chin raised"),
        "looking down": ("looking down", "head tilted down", "chin lowered"),
    },
    "mouth": {   # more wordings than the others: with three, "mouth" and "open" were all the
                 # projection learned, and held-out lip wording scored below chance (README)
        "open": ("an open mouth", "parted lips", "the mouth open", "a gaping mouth", "open lips",
                 "a mouth hanging open", "an open-mouthed expression"),
        "closed": ("a closed mouth", "closed lips", "the mouth closed", "a shut mouth",
                   "sealed lips", "a mouth held shut", "a closed-mouthed expression"),
    },
    "skin_tone": {
        "light": ("light skin", "fair skin", "pale skin"),
        "medium": ("medium skin", "olive skin", "tan skin"),
        "dark": ("dark skin", "deep brown skin"),
    },
    "hair_color": {
        "black": ("black hair", "jet-black hair"),
        "brown": ("brown hair", "brunette hair"),
        "blond": ("blond hair", "fair hair", "blonde hair"),
        "red": ("red hair", "ginger hair"),
        "grey": ("grey hair", "gray hair"),
    },
    "background": {
        c: _background_phrases(c, ("a {} background", "a plain {} background", "a {} backdrop"))
        for c in ATTRIBUTES["background"]
    },
    "lighting": {
        "dark": ("dark lighting", "poorly lit"),
        "dim": ("dim lighting", "soft low light"),
        "bright": ("bright lighting", "well lit"),
    },
}
_PARAPHRASE_PHRASES: dict[str, dict[str, tuple[str, ...]]] = {
    "pose": {
        "looking left": ("gazing toward the left side",),
        "looking right": ("gazing toward the right side",),
        "facing the camera": ("looking directly at the viewer",),
    },
    "tilt": {
        "looking up": ("gazing upward",),
        "looking down": ("gazing downward",),
    },
    "mouth": {
        "open": ("lips apart and jaw dropped",),
        "closed": ("lips pressed together",),
    },
    "skin_tone": {
        "light": ("a light complexion",),
        "medium": ("a medium complexion",),
        "dark": ("a dark complexion",),
    },
    "hair_color": {
        "black": ("raven hair",),
        "brown": ("chestnut hair",),
        "blond": ("golden hair",),
        "red": ("auburn hair",),
        "grey": ("silver hair",),
    },
    "background": {
        c: _background_phrases(c, ("a wall painted {} behind them",))
        for c in ATTRIBUTES["background"]
    },
    "lighting": {
        "dark": ("shot in near darkness",),
        "dim": ("in muted light",),
        "bright": ("brightly illuminated",),
    },
}

# Subject wording: (noun phrase with article, possessive) per gender (None = unknown).
_TRAIN_NOUNS = {
    "woman": (("a woman", "her"), ("a lady", "her")),
    "man": (("a man", "his"), ("a guy", "his")),
    None: (("a person", "their"), ("someone", "their")),
}
_PARAPHRASE_NOUNS = {
    "woman": (("a female adult", "her"),),
    "man": (("a male adult", "his"),),
    None: (("an individual", "their"),),
}
_TRAIN_YOUNG = {
    ("child", "woman"): ("a girl", "a little girl"),
    ("child", "man"): ("a boy", "a little boy"),
    ("child", None): ("a child", "a kid"),
    ("teenager", "woman"): ("a teenage girl", "a teen girl"),
    ("teenager", "man"): ("a teenage boy", "a teen boy"),
    ("teenager", None): ("a teenager", "a teen"),
}
_PARAPHRASE_YOUNG = {
    ("child", "woman"): ("a young daughter",),
    ("child", "man"): ("a young son",),
    ("child", None): ("a youngster",),
    ("teenager", "woman"): ("an adolescent female",),
    ("teenager", "man"): ("an adolescent male",),
    ("teenager", None): ("an adolescent",),
}
_DECADE_YEARS = {"twenties": 25, "thirties": 35, "forties": 45, "fifties": 55, "sixties": 65,
                 "seventies": 75}


class _Rng:
    """The few random draws captions need, from a ``random.Random`` or a numpy Generator."""

    def __init__(self, rng: random.Random | np.random.Generator):
        if not isinstance(rng, (random.Random, np.random.Generator)):
            raise TypeError(f"rng must be random.Random or numpy.random.Generator, "
                            f"got {type(rng).__name__}")
        self._rng = rng

    def random(self) -> float:
        return float(self._rng.random())

    def choice(self, seq: Sequence):
        if isinstance(self._rng, random.Random):
            return self._rng.choice(seq)
        return seq[int(self._rng.integers(len(seq)))]

    def shuffled(self, seq: Sequence) -> list:
        out = list(seq)
        if isinstance(self._rng, random.Random):
            self._rng.shuffle(out)
        else:
            out = [out[i] for i in self._rng.permutation(len(out))]
        return out


def check_attrs(attrs: Mapping[str, str | None]) -> None:
    """Raise ValueError unless ``attrs`` has exactly the keys of ATTRIBUTES and valid values."""
    if set(attrs) != set(ATTRIBUTES):
        missing = sorted(set(ATTRIBUTES) - set(attrs))
        unknown = sorted(set(attrs) - set(ATTRIBUTES))
        raise ValueError(f"attribute dict keys differ: missing {missing}, unknown {unknown}; "
                         f"expected {sorted(ATTRIBUTES)}")
    for key, value in attrs.items():
        if value is not None and value not in ATTRIBUTES[key]:
            raise ValueError(f"unknown {key} {value!r}; valid: {list(ATTRIBUTES[key])} or None")


def _subject(age: str | None, gender: str | None, rng: _Rng, paraphrased: bool) -> str:
    """Noun phrase for the person, e.g. "a lady in her thirties", "a teen boy", "a person"."""
    if age in ("child", "teenager"):
        return rng.choice((_PARAPHRASE_YOUNG if paraphrased else _TRAIN_YOUNG)[age, gender])
    noun, possessive = rng.choice((_PARAPHRASE_NOUNS if paraphrased else _TRAIN_NOUNS)[gender])
    if age is None:
        return noun
    if paraphrased:
        return f"{noun} of about {_DECADE_YEARS[age]} years"
    return f"{noun} in {possessive} {age}"


def _join_and(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _describe(subject: str, nouns: Sequence[str], clauses: Sequence[str], rng: _Rng) -> str:
    """Subject + noun phrases ("with ..." or as list items) + clauses, comma separated."""
    if nouns and rng.random() < 0.7:
        head, items = f"{subject} with {_join_and(nouns)}", list(clauses)
    else:
        head, items = subject, rng.shuffled([*nouns, *clauses])
    return ", ".join([head, *items])


def caption(attrs: Mapping[str, str | None], rng: random.Random | np.random.Generator,
            keep: float = 0.75) -> str:
    """One training caption for a face.

    attrs: the annotator's dict (keys exactly those of ATTRIBUTES; None = unknown).
    rng:   source of randomness (the caption is a pure function of attrs and rng state).
    keep:  probability of mentioning each known attribute (at least one detail is kept
           when any is known).
    Returns a sentence made of TRAIN_TEMPLATES and training phrases only.
    """
    check_attrs(attrs)
    r = _Rng(rng)
    kept = {k: v for k, v in attrs.items() if v is not None and r.random() < keep}
    details = [k for k in (*NOUN_ATTRS, *CLAUSE_ATTRS) if attrs[k] is not None]
    if details and not any(k in kept for k in details):
        k = r.choice(details)
        kept[k] = attrs[k]
    subject = _subject(kept.get("age_bracket"), kept.get("gender"), r, paraphrased=False)
    nouns = r.shuffled([r.choice(_TRAIN_PHRASES[k][kept[k]]) for k in NOUN_ATTRS if k in kept])
    clauses = r.shuffled([r.choice(_TRAIN_PHRASES[k][kept[k]]) for k in CLAUSE_ATTRS
                          if k in kept])
    return r.choice(TRAIN_TEMPLATES).format(_describe(subject, nouns, clauses, r))


def captions_for(attrs: Mapping[str, str | None], n: int, seed: int) -> list[str]:
    """``n`` distinct-if-possible captions of one face, reproducible from ``seed``."""
    rng = random.Random(seed)
    out: list[str] = []
    for _ in range(4 * n):
        c = caption(attrs, rng)
        if c not in out:
            out.append(c)
        if len(out) == n:
            break
    return out


def _value_descriptions(attribute: str, value: str, paraphrased: bool) -> list[str]:
    """Every description of a face that states only ``attribute = value``."""
    young = _PARAPHRASE_YOUNG if paraphrased else _TRAIN_YOUNG
    nouns = _PARAPHRASE_NOUNS if paraphrased else _TRAIN_NOUNS
    phrases = _PARAPHRASE_PHRASES if paraphrased else _TRAIN_PHRASES
    neutral, possessive = nouns[None][0]     # "a person", "their" (or its paraphrase)
    if attribute == "gender":
        return [noun for noun, _ in nouns[value]]
    if attribute == "age_bracket":
        if value in ("child", "teenager"):
            return list(young[value, None])
        if paraphrased:
            return [f"{neutral} of about {_DECADE_YEARS[value]} years"]
        return [f"{neutral} in {possessive} {value}"]
    joiner = " with " if attribute in NOUN_ATTRS else ", "
    return [f"{neutral}{joiner}{phrase}" for phrase in phrases[attribute][value]]


def zero_shot_prompts(attribute: str, paraphrased: bool) -> dict[str, list[str]]:
    """Prompts per value of one attribute, for zero-shot classification.

    attribute:   a key of ATTRIBUTES.
    paraphrased: False -> TRAIN_TEMPLATES and training phrases (wording seen in training);
                 True  -> PARAPHRASE_TEMPLATES and held-out phrases (never seen in training).
    Returns {value: [prompt, ...]} with the values in ATTRIBUTES order.
    """
    if attribute not in ATTRIBUTES:
        raise UnknownNameError(f"unknown attribute {attribute!r}; available: {list(ATTRIBUTES)}")
    templates = PARAPHRASE_TEMPLATES if paraphrased else TRAIN_TEMPLATES
    return {value: [t.format(d) for t in templates
                    for d in _value_descriptions(attribute, value, paraphrased)]
            for value in ATTRIBUTES[attribute]}
