"""The committed paper: every macro it uses is generated, every figure it includes exists."""

from pathlib import Path

from helpers import defined_macros, figure_path, graphics, typed_digits, used_macros


def test_committed_paper_is_complete(repo_root):
    root = Path(repo_root)
    tex = (root / "paper/main.tex").read_text()
    missing = used_macros(tex) - defined_macros(root / "paper/generated")
    assert not missing, f"undefined macros: {sorted(missing)}"
    for name in graphics(tex):
        assert figure_path(root, name) is not None, f"missing figure {name}"


def test_no_number_is_typed_into_the_text(repo_root):
    tex = (Path(repo_root) / "paper/main.tex").read_text()
    assert typed_digits(tex) == [], "numbers in the paper must come from paper/generated/ macros"


def test_a_typed_result_is_caught():
    tex = "\\begin{document}\nThe bridge reaches 17.7~dB on \\texttt{dcgan64} (\\cite{x2}).\n% 12 in a comment\n"
    assert typed_digits(tex) == ["The bridge reaches 17.7~dB on \\texttt{dcgan64} (\\cite{x2})."]
    assert typed_digits(tex.replace("17.7", "\\PsnrBridge{}")) == []
