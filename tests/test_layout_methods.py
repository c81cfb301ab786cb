"""One place for each fact about a merge method (issue 29), checked on the sources with ``ast`` and on the registry.

- the ``Method`` record owns every fact: the engine names no method and uses only the registry's interface;
  no module keeps its own list, set or map of method names (display names, pair methods, streamed methods);
- TIES is computed in ties.py only: the trim count ``int(n * k)`` in one function, rank statistics in one file;
- every registered method has its display name, paper and style, each unique; figures read them;
- parameters are resolved once per merge; a book build loads the profile once in the driver;
- the book's table of methods is the registry's.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import l2s_utils
from l2s_utils.merge import all_methods, merge
from l2s_utils.merge import methods as M
from l2s_utils.merge.methods import registry, table

PKG = Path(l2s_utils.__file__).resolve().parent
MERGE = PKG / "merge"
METHOD_NAMES = {key for key in M.REGISTRY}
DISPLAY_NAMES = {m.display for m in all_methods()}
# the files that register methods: the only places a method is named by the package
REGISTERING = {*(MERGE / "methods").glob("*.py"), MERGE / "composite.py"}


def tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def strings(node: ast.AST) -> list[str]:
    return [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def test_engine_names_no_method():
    engine = tree(MERGE / "engine.py")
    named = sorted(set(strings(engine)) & (METHOD_NAMES | DISPLAY_NAMES))
    assert not named, f"engine.py names methods {named}: give the method a hook (methods/registry.py) instead"
    kernels = {m.kernel.__name__ for m in all_methods()}
    registry_api = {n.name for n in tree(MERGE / "methods" / "registry.py").body
                    if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    used = {n.attr for n in ast.walk(engine)
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "M"}
    assert used <= registry_api, f"engine.py uses {sorted(used - registry_api)} of the methods: only the registry's API"
    assert not used & kernels


def _collections_of_methods(node: ast.AST) -> list[str]:
    """Literal lists, tuples, sets and dict keys holding two or more method names or display names."""
    out = []
    for n in ast.walk(node):
        items = n.keys if isinstance(n, ast.Dict) else n.elts if isinstance(n, (ast.List, ast.Tuple, ast.Set)) else []
        names = [x.value for x in items if isinstance(x, ast.Constant) and x.value in METHOD_NAMES | DISPLAY_NAMES]
        if len(names) >= 2:
            out.append(f"line {n.lineno}: {names}")
    return out


def test_no_module_keeps_its_own_list_of_methods():
    """PRETTY, PAIR_METHODS, CHUNKABLE, plots' METHODS, ("aim", "sens", "acm"): facts of the Method record now.
    Module-level collections and membership tests (``x in (...)``) anywhere in the package are checked."""
    bad = []
    for f in sorted(PKG.rglob("*.py")):
        if f in REGISTERING:
            continue
        t = tree(f)
        for node in t.body:
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
                bad += [f"{f.relative_to(PKG)} {x}" for x in _collections_of_methods(node.value)]
        for n in ast.walk(t):
            if isinstance(n, ast.Compare) and any(isinstance(op, (ast.In, ast.NotIn)) for op in n.ops):
                bad += [f"{f.relative_to(PKG)} {x}" for c in n.comparators for x in _collections_of_methods(c)]
    assert not bad, "lists of methods outside the registry (use the Method record):\n  " + "\n  ".join(bad)


def test_the_checks_see_a_method_list(tmp_path):
    """The two checks above are not vacuous."""
    t = ast.parse('PAIRS = {"average", "lore"}\ndef f(m):\n    return m in ("aim", "sens")\n')
    assert len(_collections_of_methods(t.body[0].value)) == 1
    assert len(_collections_of_methods(t.body[1])) == 1


def _int_products(path: Path) -> list[tuple[str, str]]:
    """(function, source) of every int(a * b) in a file."""
    out = []
    for fn in ast.walk(tree(path)):
        if isinstance(fn, ast.FunctionDef):
            for n in ast.walk(fn):
                if (isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "int" and n.args
                        and isinstance(n.args[0], ast.BinOp) and isinstance(n.args[0].op, ast.Mult)):
                    out.append((fn.name, ast.unparse(n)))
    return out


def test_ties_trim_count_is_written_once():
    """m = int(n k) lives in ties.trim_count; the only other count from a product in the kernels and the engine is
    mergekit's keep count max(1, int(n density)) (trim_topk, a different rule)."""
    found = [(f.name, fn, src) for f in [*sorted((MERGE / "methods").glob("*.py")), MERGE / "engine.py"]
             for fn, src in _int_products(f)]
    assert found == [("ties.py", "trim_count", "int(n * k)"), ("ties.py", "trim_topk", "int(n * density)")], found


def test_rank_statistics_live_in_ties_py():
    """The exact k-th smallest |x| (buckets of the float32 bit patterns) is ties.py's, for tensors and streams."""
    for f in sorted(MERGE.rglob("*.py")):
        if f.name != "ties.py":
            calls = {n.attr for n in ast.walk(tree(f)) if isinstance(n, ast.Attribute)}
            assert not calls & {"kthvalue", "searchsorted"}, f"{f}: rank statistics belong in methods/ties.py"


def test_one_name_per_ties_parameter():
    """k is k from the YAML to the kernel: no drop / drops / kk on the way."""
    for f in [*(MERGE / "methods").glob("*.py"), MERGE / "engine.py", MERGE / "composite.py"]:
        names = {n.id for n in ast.walk(tree(f)) if isinstance(n, ast.Name)} | {
            a.arg for n in ast.walk(tree(f)) if isinstance(n, ast.arguments) for a in n.args + n.kwonlyargs}
        assert not names & {"drop", "drops", "kk"}, f


def test_every_method_has_its_facts():
    for m in all_methods():
        assert m.paper and m.summary and m.reference, m.name
        assert m.display and m.display != m.name, f"{m.name}: give it a display name"
        colour, marker = m.style
        assert colour.startswith("#") and len(colour) == 7 and marker, m.name
        assert m.composite or m.kernel.__doc__, f"{m.name}: the kernel's docstring states its formula"
    assert len({m.display for m in all_methods()}) == len(all_methods())
    assert len({m.style for m in all_methods()}) == len(all_methods())
    assert len({m.style[0] for m in all_methods()}) == len(all_methods())


def test_register_refuses_a_taken_display_name_or_style():
    avg = M.get_method("average")
    with pytest.raises(ValueError, match="display name or style"):
        registry.register(registry.Method("x_test", avg.kernel, avg.params, "p", display=avg.display))
    with pytest.raises(ValueError, match="display name or style"):
        registry.register(registry.Method("x_test", avg.kernel, avg.params, "p", style=avg.style))
    assert "x_test" not in M.REGISTRY


def test_figures_read_styles_from_the_registry():
    from l2s_utils.study import plots

    for m in all_methods():
        assert plots.style(m.display) == m.style
    taken = {m.style for m in all_methods()}
    assert not taken & set(plots.STYLES.values())
    assert not DISPLAY_NAMES & set(plots.STYLES)


def test_styles_of_other_names_do_not_change_between_runs():
    """A name that is no method gets the same colour and marker in every process (no hash randomisation)."""
    code = ("from l2s_utils.study import plots; "
            "print([plots.style(n) for n in ('TA alpha=0.5', 'Qwen + R1', 'my merge')])")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")}
    assert len(outs) == 1


def test_study_names_and_models_come_from_the_registry():
    from l2s_utils.study.profiles import display_name, load_profile, study_merge_config

    prof = load_profile("smoke")
    names = {label: display_name(prof, label) for label in prof["merge"]}
    assert names == {"average": "Average Merging", "task_arithmetic": "Task Arithmetic", "ties": "Ties-Merging",
                     "dare": "DARE", "dare_ta": "DARE-TA", "dare_ties": "DARE-Ties", "lore": "LoRE-Merging",
                     "twin": "Twin-Merging", "aim": "AIM-Ties", "sens": "Sens-Merging", "acm": "ACM-Ties"}
    for label in prof["merge"]:
        cfg = study_merge_config(prof, label, "S1", "S2")
        method = M.get_method(cfg["merge_method"])
        assert [m["model"] for m in cfg["models"]] == (["S1", "S2"] if method.pair else ["S2"])
        assert ("calibration" in cfg) == method.composite
    prof["merge"]["ties_global"] = {"method": "l2s_ties", "scope": "global"}  # two labels, one method
    assert display_name(prof, "ties") == "Ties-Merging (ties)"
    assert display_name(prof, "ties_global") == "Ties-Merging (ties_global)"


def test_resolve_params_runs_once_per_merge(tiny, tmp_path, monkeypatch):
    real = registry.resolve_params
    calls = []

    def counting(*a, **k):
        calls.append(a[0].name)
        return real(*a, **k)

    monkeypatch.setattr(M, "resolve_params", counting)
    for method, models, params in (("l2s_ties", [tiny["ft1"]], {"k": 0.8}),
                                   ("l2s_dare_ties", [tiny["ft1"]], {"p": 0.3, "k": 0.8}),
                                   ("twin", [tiny["ft1"]], {"rank": 2, "svd": "randomized"})):
        calls.clear()
        cfg = {"merge_method": method, "base_model": str(tiny["base"]), "models": [{"model": str(m)} for m in models],
               "parameters": params, "dtype": "float32"}
        merge(cfg, tmp_path / method, progress=False, seed=3)
        assert calls == [method]
        prov = json.loads((tmp_path / method / "l2s_merge.json").read_text())
        assert prov["resolved_parameters"].get("seed", 3) == 3


def test_driver_loads_the_profile_once(tmp_path, monkeypatch):
    import papermill

    from l2s_utils.study import driver

    loads = []
    real = driver.load_profile
    monkeypatch.setattr(driver, "load_profile", lambda p: loads.append(p) or real(p))

    def fake_execute(src, dst, parameters, **kw):
        Path(dst).write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))

    monkeypatch.setattr(papermill, "execute_notebook", fake_execute)
    monkeypatch.setenv("L2S_STUDY_JOBS", "1")  # chapters in this process, where papermill is replaced
    monkeypatch.setattr(driver, "organism_models", lambda *a, **k: [])
    monkeypatch.setattr(driver, "build_book", lambda book: book / "index.html")
    (tmp_path / "book").mkdir()
    shutil.copy(driver.ROOT / "book" / "_toc.yml", tmp_path / "book" / "_toc.yml")  # the chapter list
    driver.run_study("smoke", out=tmp_path / "run", book=tmp_path / "book", progress=False)
    assert loads == ["smoke"]


def test_method_tables_are_the_registry():
    """The book's table of methods and the README's map are generated from the registry (and up to date)."""
    for path, render in table.PAGES.items():
        page = path.read_text()
        assert table.with_table(page, render) == page, f"{path}: run python -m l2s_utils.merge.methods.table"
        for m in all_methods():
            assert f"| {m.display} | `{m.name}`" in page or f"| {m.display} (`{m.name}`" in page, (path, m.name)
    page = (PKG.parent / "book" / "methods.md").read_text()
    below = page.split(table.END, 1)[1].split("| Method (`merge_method`) | Formula", 1)[1]
    rows = below.split("\n\n", 1)[0].splitlines()[2:]  # the hand-written formula table
    named = {n for row in rows for n in re.findall(r"`([a-z0-9_]+)`", row.split("|")[1])}
    assert len(rows) >= 8 and named <= METHOD_NAMES, sorted(named - METHOD_NAMES)
