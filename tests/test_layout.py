"""The package layout: subpackages are pipeline stages, lower stages never import higher ones, no import cycle.

Every module under ``l2s_utils`` is parsed with ``ast`` (so imports inside functions count too, and
nothing is executed); relative imports are resolved; ``from pkg import name`` is an edge to the module
``pkg.name`` when that is a module, else to ``pkg``. Stages, lowest first:

    l2s_utils (the root __init__: version only)  <  organism  <  merge  <  evaluate  <  study  <  cli
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import l2s_utils

PKG = Path(l2s_utils.__file__).resolve().parent
STAGES = {"l2s_utils": 0, "organism": 1, "merge": 2, "evaluate": 3, "study": 4, "cli": 5}


def modules(root: Path) -> dict[str, Path]:
    """{dotted module name: file} for every .py file of the package rooted at ``root``."""
    out = {}
    for f in sorted(root.rglob("*.py")):
        parts = [root.name, *f.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package modules that module ``name`` imports anywhere in its body."""
    is_pkg = path.name == "__init__.py"
    here = name.split(".") if is_pkg else name.split(".")[:-1]  # the package a relative import starts from
    top = next(iter(known)).split(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]
        else:
            continue
        for t in targets:
            if t.split(".")[0] != top:
                continue
            while t not in known and "." in t:  # `import l2s_utils.x.y` where y is not a module
                t = t.rsplit(".", 1)[0]
            if t != name:
                out.add(t)
    return out


def graph(root: Path = PKG) -> dict[str, set[str]]:
    known = modules(root)
    return {m: imports(m, f, known) for m, f in known.items()}


def stage(module: str) -> int:
    parts = module.split(".")
    key = parts[1] if len(parts) > 1 else parts[0]
    if key not in STAGES:
        raise AssertionError(f"{module}: not in any pipeline stage; put it in one of {[k for k in STAGES if k != 'l2s_utils']} "
                             "(or add the stage to STAGES in this test, in pipeline order)")
    return STAGES[key]


def stage_violations(g: dict[str, set[str]]) -> list[str]:
    return [f"{a} (stage {stage(a)}) imports {b} (stage {stage(b)})"
            for a, deps in sorted(g.items()) for b in sorted(deps) if stage(b) > stage(a)]


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(g.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_every_module_belongs_to_a_stage():
    for m in graph():
        stage(m)


def test_subpackages_exist():
    for sub in ("organism", "merge", "evaluate", "study"):
        assert (PKG / sub / "__init__.py").is_file(), sub
    assert (PKG / "cli.py").is_file()


def test_no_lower_stage_imports_a_higher_one():
    bad = stage_violations(graph())
    assert not bad, "imports against the pipeline order:\n  " + "\n  ".join(bad)


def test_root_package_imports_nothing_of_its_own():
    assert not graph()["l2s_utils"], "l2s_utils/__init__.py must not import its subpackages"


def test_no_import_cycle():
    found = cycles(graph())
    assert not found, "import cycles (function-level imports included):\n  " + "\n  ".join(" <-> ".join(c) for c in found)


def test_checker_sees_function_level_imports_and_cycles(tmp_path):
    """The checks above are not vacuous: a lazy import against the order and a lazy cycle are both caught."""
    pkg = tmp_path / "l2s_utils"
    for sub in ("organism", "merge", "study"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("__version__ = '0'\n")
    (pkg / "organism" / "task.py").write_text("def f():\n    from ..study import plots\n")
    (pkg / "study" / "plots.py").write_text("")
    (pkg / "merge" / "engine.py").write_text("from .composite import run\n")
    (pkg / "merge" / "composite.py").write_text("def run():\n    from . import engine\n")
    g = graph(pkg)
    assert stage_violations(g) == ["l2s_utils.organism.task (stage 1) imports l2s_utils.study.plots (stage 4)"]
    assert cycles(g) == [["l2s_utils.merge.composite", "l2s_utils.merge.engine"]]


@pytest.mark.parametrize("stmt", [
    "from l2s_utils.merge import merge",
    "from l2s_utils.evaluate import evaluate",
    "from l2s_utils.study import Study",
    "from l2s_utils.organism import build",
])
def test_public_entry_points(stmt):
    ns: dict = {}
    exec(stmt, ns)
    obj = ns[stmt.split()[-1]]
    assert callable(obj) and obj.__doc__


def test_organism_imports_no_later_stage():
    """Importing the organism (task, prompt, training) loads nothing of merge / evaluate / study."""
    import subprocess
    import sys

    code = ("import sys, l2s_utils.organism.task, l2s_utils.organism.training, l2s_utils.organism\n"
            "from l2s_utils.organism import build\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[:2] in "
            "(['l2s_utils', 'merge'], ['l2s_utils', 'evaluate'], ['l2s_utils', 'study']))\n"
            "print(bad); assert not bad\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
