"""The committed paper: every macro it uses is generated, every figure it includes exists."""

from pathlib import Path

from helpers import defined_macros, graphics, used_macros


def test_committed_paper_is_complete(repo_root):
    root = Path(repo_root)
    tex = (root / "paper/main.tex").read_text()
    missing = used_macros(tex) - defined_macros(root / "paper/generated")
    assert not missing, f"undefined macros: {sorted(missing)}"
    for name in graphics(tex):
        assert (root / "results/figures" / name).is_file(), f"missing figure {name}"
