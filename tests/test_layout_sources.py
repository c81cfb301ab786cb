"""One source for each fact (issue 29), checked on the sources (``ast``, text) and with the driver faked:

- the chapter list is ``book/_toc.yml``: every notebook in ``notebooks/`` is in it and every chapter in it has
  a notebook; the driver runs the toc's chapters in its order; no other file lists the chapters;
- every chapter's set-up cell is a few lines that fetch the package on Colab and call the package's
  ``setup`` (``l2s_utils/study/chapters.py``), which does the rest;
- the math-verify helpers and their worker processes live in ``l2s_utils/evaluate/verify.py``; both grading
  protocols (``strict.py``, ``grading.py``) and the grading corpus import it and define no copy of them.
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
from l2s_utils.study.chapters import chapter_names

PKG = Path(l2s_utils.__file__).resolve().parent
ROOT = PKG.parent
NOTEBOOKS = ROOT / "notebooks"
SETUP_MAX_LINES = 10  # was 18, the same in every notebook, before the set-up moved into the package

# ---------------------------------------------------------------------------------------------- chapters


def test_the_toc_and_the_notebooks_name_the_same_chapters():
    names = chapter_names()
    assert len(names) == len(set(names)), f"a chapter is listed twice in book/_toc.yml: {names}"
    on_disk = sorted(f.stem for f in NOTEBOOKS.glob("*.ipynb"))
    assert sorted(names) == on_disk, (f"book/_toc.yml lists {sorted(set(names) - set(on_disk))} without a notebook "
                                      f"and notebooks/ holds {sorted(set(on_disk) - set(names))} not in the toc")


def test_chapter_names_reads_any_toc_in_order(tmp_path):
    (tmp_path / "_toc.yml").write_text(
        "format: jb-book\nroot: intro\nparts:\n  - caption: A\n    chapters:\n      - file: methods\n"
        "      - file: chapters/b_two\n        sections:\n          - file: chapters/c_three.ipynb\n"
        "  - caption: B\n    chapters:\n      - file: chapters/a_one\n")
    assert chapter_names(tmp_path) == ["b_two", "c_three", "a_one"]
    with pytest.raises(FileNotFoundError, match="_toc.yml"):
        chapter_names(tmp_path / "nope")


def test_the_driver_and_the_cli_run_the_toc_in_its_order(tmp_path, monkeypatch):
    import papermill

    from l2s_utils import cli
    from l2s_utils.study import driver

    seen = []

    def fake_execute(src, dst, parameters, **kw):
        seen.append(Path(src).stem)
        Path(dst).write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))

    monkeypatch.setattr(papermill, "execute_notebook", fake_execute)
    monkeypatch.setenv("L2S_STUDY_JOBS", "1")  # chapters in this process, where papermill is replaced
    monkeypatch.setattr(driver, "organism_models", lambda *a, **k: [])
    monkeypatch.setattr(driver, "build_book", lambda book: book / "index.html")
    def book(name: str, toc: str) -> Path:  # a fresh book directory (no stamps of earlier runs)
        (tmp_path / name).mkdir()
        (tmp_path / name / "_toc.yml").write_text(toc)
        return tmp_path / name

    names = chapter_names()
    driver.run_study("smoke", out=tmp_path / "run", book=book("b1", (ROOT / "book" / "_toc.yml").read_text()),
                     progress=False)
    assert seen == names
    # a book whose toc lists other chapters (in another order) runs those
    pick = list(dict.fromkeys([*names[::-2], names[0]]))  # every second chapter backwards, and the first (any count)
    other = "format: jb-book\nroot: intro\nchapters:\n" + "".join(f"  - file: chapters/{n}\n" for n in pick)
    seen.clear()
    driver.run_study("smoke", out=tmp_path / "run", book=book("b2", other), progress=False)
    assert seen == pick
    seen.clear()
    assert cli.main(["study", "--profile", "smoke", "--out", str(tmp_path / "run"), "--book", str(book("b3", other)),
                     "--only", names[0][:2], names[-1][:2], "--quiet"]) == 0
    assert seen == [names[-1], names[0]]  # --only picks by prefix; the toc gives the order


TEXT = {".py", ".md", ".yml", ".yaml", ".toml", ".txt", ".cfg", ".ipynb", ""}
SKIP_DIRS = {"_generated", ".git", "runs", "_build", "chapters", "_static", "__pycache__", "data", ".pytest_cache", "node_modules"}


def _sources() -> list[Path]:
    """The repository's text sources (no build outputs, runs, data or virtual environments)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS and not d.startswith(".venv")]
        for f in filenames:
            p = Path(dirpath) / f
            if p.suffix in TEXT and p.stat().st_size < 2_000_000:
                out.append(p)
    return out


def named_chapters(text: str, names: list[str]) -> list[str]:
    return [n for n in names if re.search(rf"(?<![\w]){re.escape(n)}(?![\w])", text)]


def test_no_other_file_lists_the_chapters():
    """Only book/_toc.yml lists the chapters: elsewhere a chapter is named at most as an example (two at most),
    and the driver, the command line and the intro name none."""
    names = chapter_names()
    toc = ROOT / "book" / "_toc.yml"
    lists = {}
    for p in _sources():
        if p == toc or p.suffix == ".ipynb" and p.parent == NOTEBOOKS:
            continue
        found = named_chapters(p.read_text(errors="replace"), names)
        if len(found) > 2:
            lists[str(p.relative_to(ROOT))] = found
    assert not lists, f"files besides book/_toc.yml that list chapters: {lists}"
    for rel in ("l2s_utils/study/driver.py", "l2s_utils/cli.py", "book/intro.md"):
        assert not named_chapters((ROOT / rel).read_text(), names), f"{rel} names a chapter: read book/_toc.yml"
    assert "tableofcontents" in (ROOT / "book" / "intro.md").read_text()


def _setup_cell(nb: Path) -> str:
    cells = [c for c in json.loads(nb.read_text())["cells"] if "setup" in c["metadata"].get("tags", [])]
    assert len(cells) == 1, f"{nb.name}: {len(cells)} cells tagged setup"
    return "".join(cells[0]["source"])


@pytest.mark.parametrize("nb", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.stem)
def test_every_setup_cell_is_short_and_calls_the_package(nb):
    src = _setup_cell(nb)
    lines = src.strip().splitlines()
    assert len(lines) <= SETUP_MAX_LINES, f"{nb.name}: set-up cell of {len(lines)} lines (at most {SETUP_MAX_LINES})"
    assert "from l2s_utils.study.chapters import setup" in src, nb.name
    assert f'st = setup(profile, out, "{nb.stem}")' in src, f"{nb.name}: setup(profile, out, <this notebook's name>)"
    for copied in ("pip", "Study(", "reader.header", "set_option", "%matplotlib"):
        assert copied not in src, f"{nb.name}: {copied!r} in the set-up cell (the package's setup does it)"


@pytest.mark.parametrize("nb", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.stem)
def test_a_notebook_names_only_itself(nb):
    """The chapter's name a notebook passes (set-up, provenance) is its own: a copied notebook links to itself."""
    src = "".join("".join(c["source"]) for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code")
    given = re.findall(r'(?:setup\(profile, out|reader\.provenance\(st|reader\.header\(st), "([^"]+)"', src)
    assert given and set(given) == {nb.stem}, f"{nb.name} names the chapters {sorted(set(given))}"


def test_every_notebook_has_the_same_setup_cell():
    cells = {nb.stem: _setup_cell(nb).replace(f'"{nb.stem}"', '"<name>"') for nb in NOTEBOOKS.glob("*.ipynb")}
    assert len(set(cells.values())) == 1, f"the set-up cells differ beyond the chapter's name: {sorted(cells)}"


def test_colab_bootstrap_fetches_the_package_once(tmp_path):
    """The set-up cell's first lines on a fresh Colab runtime (faked: google.colab imported, no l2s_utils on the
    path, ``git`` a script that copies the package): the package is cloned once and its setup is imported from
    the clone."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    git = bin_ / "git"
    git.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/git.log\nmkdir -p "$5" && cp -r {PKG} "$5"/\n')
    git.chmod(0o755)
    src = _setup_cell(NOTEBOOKS / "00_testbed.ipynb")
    head = src[:src.index("st = setup(")]
    code = ("import sys, types, inspect\nsys.modules['google.colab'] = types.ModuleType('google.colab')\n"
            "repo_url = 'https://github.com/owner/l2s-merging.git'\n" + head +
            "print(inspect.getfile(setup))\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PATH"] = f"{bin_}{os.pathsep}{env.get('PATH', '')}"
    for _ in range(2):  # the second run finds the clone (a rerun after a failed install)
        r = subprocess.run([sys.executable, "-S", "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == str(tmp_path / "l2s-merging" / "l2s_utils" / "study" / "chapters.py")
    assert (tmp_path / "git.log").read_text().splitlines() == [
        "clone --depth 1 https://github.com/owner/l2s-merging.git l2s-merging"]


def test_colab_install_installs_the_clone_when_not_installed(tmp_path, monkeypatch):
    import importlib.metadata

    from l2s_utils.study import chapters

    calls = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: calls.append((cmd, os.getcwd())))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(importlib.metadata, "distribution", lambda name: object())
    assert chapters.colab_install(ROOT) is False and calls == []  # installed already: nothing to do

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    monkeypatch.setattr(shutil, "which", lambda name: None)  # a CPU runtime: the book extras only
    assert chapters.colab_install(ROOT) is True
    assert calls == [([sys.executable, "-m", "pip", "install", "-q", "-e", ".[book]"], str(ROOT))]
    assert Path.cwd() == ROOT  # the notebook then works from the clone, as before


# ---------------------------------------------------------------------------------------------- math-verify

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
