"""One source for each fact (issue 29), checked on the sources themselves (``ast`` and text, nothing executed):

- the math-verify helpers and their worker processes live in ``l2s_utils/evaluate/verify.py``; both grading
  protocols (``strict.py``, ``grading.py``) and the grading corpus import it and define no copy of them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import l2s_utils

PKG = Path(l2s_utils.__file__).resolve().parent
EVALUATE = PKG / "evaluate"
VERIFY_USERS = ("strict.py", "grading.py", "grading_corpus.py")


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def _imported_modules(tree: ast.Module) -> set[str]:
    """Top-level names of absolute imports, and ``.name`` for ``from . import name`` / ``from .name import x``."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                out |= {f".{node.module}"} if node.module else {f".{a.name}" for a in node.names}
            else:
                out.add((node.module or "").split(".")[0])
    return out


def _defined(tree: ast.Module) -> set[str]:
    return {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}


def test_math_verify_is_imported_by_the_verify_module_only():
    users = sorted(str(f.relative_to(PKG)) for f in PKG.rglob("*.py")
                   if "math_verify" in _imported_modules(_tree(f)))
    assert users == ["evaluate/verify.py"], f"math_verify imported outside evaluate/verify.py: {users}"


@pytest.mark.parametrize("name", VERIFY_USERS)
def test_grading_modules_use_the_shared_verify_module(name):
    tree = _tree(EVALUATE / name)
    mods = _imported_modules(tree)
    assert ".verify" in mods, f"evaluate/{name} does not import the shared math-verify module (from . import verify)"
    assert not mods & {"math_verify", "sympy", "multiprocessing", "concurrent"}, \
        f"evaluate/{name} calls math-verify or starts worker processes itself: {sorted(mods)}"
    shared = _defined(_tree(EVALUATE / "verify.py"))
    old_copies = {"_wrap", "_parse", "_numeric_close", "verify_with_math_verify"}
    copies = _defined(tree) & (shared | old_copies)
    assert not copies, f"evaluate/{name} defines its own copy of math-verify helpers: {sorted(copies)}"


def test_checker_sees_a_copied_helper(tmp_path):
    """The checks above are not vacuous: a module with its own pool and parse helper is caught."""
    f = tmp_path / "copy.py"
    f.write_text("def _wrap(x):\n    return x\n\ndef g():\n    from math_verify import parse\n"
                 "    from concurrent.futures import ProcessPoolExecutor\n")
    tree = _tree(f)
    assert {"math_verify", "concurrent"} <= _imported_modules(tree) and ".verify" not in _imported_modules(tree)
    assert "_wrap" in _defined(tree)
