"""Writing numbers and tables for the paper: macro names are letters only, values escaped."""

from __future__ import annotations

import re

_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
            "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def escape(text: str) -> str:
    return "".join(_ESCAPES.get(ch, ch) for ch in str(text))


def macro_name(*parts: str) -> str:
    """``('psnr', 'mean_latent')`` -> ``PsnrMeanLatent``; digits are spelled out (TeX names are letters)."""
    digits = "Zero One Two Three Four Five Six Seven Eight Nine".split()
    words = []
    for part in parts:
        for word in re.split(r"[^A-Za-z0-9]+", str(part)):
            word = "".join(digits[int(c)] if c.isdigit() else c for c in word)
            if word:
                words.append(word[0].upper() + word[1:])
    name = "".join(words)
    assert name.isalpha(), name
    return name


def macro(name: str, value: str) -> str:
    return f"\\newcommand{{\\{name}}}{{{value}}}\n"


def fmt(x: float | None, digits: int, scale: float = 1.0) -> str:
    """``x * scale`` with ``digits`` decimals; ``n/a`` for a missing value (None, NaN in JSON)."""
    return "n/a" if x is None else f"{x * scale:.{digits}f}"


def interval(ci: dict, digits: int, scale: float = 1.0, unit: str = "") -> str:
    """``{mean, lo, hi}`` -> ``1.23~dB [0.98, 1.51]``."""
    u = f"~{unit}" if unit else ""
    return f"{fmt(ci['mean'], digits, scale)}{u} [{fmt(ci['lo'], digits, scale)}, {fmt(ci['hi'], digits, scale)}]"


def verdict(ci: dict, better: str, worse: str, higher_is_better: bool = True) -> str:
    """A paired difference's reading: ``better`` / ``worse`` only where its 95% interval excludes 0."""
    if ci.get("n", 0) == 0 or ci["mean"] is None:
        return "not measurable (no faces to compare)"
    if not ci["excludes_zero"]:
        return "not distinguishable (the 95\\% interval includes 0)"
    return better if (ci["mean"] > 0) == higher_is_better else worse
