"""dvc.yaml's ``deps`` follow the imports: each stage lists exactly the ``src/clipbridge`` modules its
stage module imports, directly or through other modules (function-level imports included), so that
editing a module re-runs exactly the stages that use it. Also: the package has no import cycle."""

import ast
from functools import lru_cache
from pathlib import Path

import yaml

from helpers import ROOT

SRC = ROOT / "src"
PACKAGE = SRC / "clipbridge"


def _module_file(name: str) -> Path | None:
    """``clipbridge.a.b`` -> its file (module or package ``__init__``), None outside the package."""
    if name != "clipbridge" and not name.startswith("clipbridge."):
        return None
    base = SRC.joinpath(*name.split("."))
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def _has_code(path: Path) -> bool:
    """False for an empty package ``__init__`` (or one holding only a docstring)."""
    body = ast.parse(path.read_text()).body
    return not all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body)


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


@lru_cache(maxsize=None)
def direct_imports(path: Path) -> frozenset[Path]:
    """Files of the package that ``path`` imports anywhere in its body (parent packages included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)  # submodules imported by name
    files = set()
    for name in names:
        for n in [*_parents(name), name]:
            f = _module_file(n)
            if f is not None and f != path:
                files.add(f)
    return frozenset(files)


def closure(path: Path) -> set[Path]:
    seen, todo = {path}, [path]
    while todo:
        for f in direct_imports(todo.pop()):
            if f not in seen:
                seen.add(f)
                todo.append(f)
    return seen


def _stages() -> dict[str, dict]:
    """Stage name -> its definition (``foreach`` bodies unwrapped)."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return {name: body.get("do", body) for name, body in stages.items()}


def _stage_module(cmd: str) -> Path:
    module = cmd.split("python -m ", 1)[1].split()[0]
    return _module_file(module)


def test_every_stage_lists_exactly_the_modules_it_imports():
    problems = []
    for name, body in _stages().items():
        if "python -m clipbridge." not in body["cmd"]:
            continue
        needed = {str(f.relative_to(ROOT)) for f in closure(_stage_module(body["cmd"])) if _has_code(f)}
        listed = {d for d in body.get("deps", []) if isinstance(d, str) and d.startswith("src/")}
        if needed - listed:
            problems.append(f"{name}: missing {sorted(needed - listed)}")
        if listed - needed:
            problems.append(f"{name}: lists modules it does not import {sorted(listed - needed)}")
    assert not problems, "dvc.yaml deps out of step with the imports:\n" + "\n".join(problems)


def test_closure_follows_function_level_imports(tmp_path):
    """The checker itself: it sees an import inside a function and a submodule imported by name."""
    stage = PACKAGE / "stages" / "numbers.py"
    files = {str(f.relative_to(PACKAGE)) for f in closure(stage)}
    assert {"stages/numbers.py", "config.py", "paths.py"} <= files


def test_no_import_cycle():
    """Module-level imports between the package's modules form no cycle (function-level imports
    are allowed to defer a heavy dependency, but not to hide a cycle either: they count too)."""
    files = [p for p in PACKAGE.rglob("*.py")]
    graph = {f: {g for g in direct_imports(f) if g.name != "__init__.py" or _has_code(g)} for f in files}
    state: dict[Path, int] = {}
    path: list[Path] = []

    def visit(f: Path):
        state[f] = 1
        path.append(f)
        for g in graph.get(f, ()):
            if state.get(g) == 1:
                cycle = path[path.index(g):] + [g]
                raise AssertionError("import cycle: " + " -> ".join(str(p.relative_to(PACKAGE)) for p in cycle))
            if g not in state:
                visit(g)
        path.pop()
        state[f] = 2

    for f in files:
        if f not in state:
            visit(f)
