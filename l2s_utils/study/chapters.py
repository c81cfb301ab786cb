"""The book's chapters as data: ``book/_toc.yml`` is the one list of chapters, and one function sets a chapter up.

    from l2s_utils.study.chapters import chapter_names, setup
    chapter_names()                         # ["00_testbed", ...]: the toc's ``chapters/<name>`` entries, in order
    st = setup(profile, out, "00_testbed")  # in a notebook's set-up cell: the Study, and the chapter's header

A chapter is ``notebooks/<name>.ipynb`` listed as ``- file: chapters/<name>`` in ``book/_toc.yml``: the driver
executes the toc's chapters in its order into ``book/chapters/``, the tests check every one of them and the
intro shows the toc (``{tableofcontents}``). Every chapter notebook opens with two tagged cells that the
driver folds for the reader (``driver.reader_tags``): ``parameters`` (profile, out, repo_url, ...) and
``setup``, a few lines that fetch the package on Colab when it is not importable (the package cannot do
that for itself) and call :func:`setup`.

This module imports only the standard library at the top, so that :func:`setup` can install the package's
dependencies on Colab before anything imports them.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BOOK = ROOT / "book"
DISTRIBUTION = "l2s-merging"  # pyproject.toml's project name


def chapter_names(book: str | Path = BOOK) -> list[str]:
    """The chapters of ``book`` (a jupyter-book directory) in the order of its ``_toc.yml``: every entry
    ``file: chapters/<name>`` (parts, chapters and sections, depth first)."""
    import yaml

    toc = Path(book) / "_toc.yml"
    if not toc.is_file():
        raise FileNotFoundError(f"{toc}: no table of contents (the book's chapter list)")
    names: list[str] = []

    def walk(node) -> None:
        if isinstance(node, list):
            for x in node:
                walk(x)
        elif isinstance(node, dict):
            f = node.get("file")
            if isinstance(f, str) and f.startswith("chapters/"):
                name = f[len("chapters/"):]
                names.append(name[:-len(".ipynb")] if name.endswith(".ipynb") else name)
            for key in ("parts", "chapters", "sections"):
                walk(node.get(key))

    walk(yaml.safe_load(toc.read_text()))
    return names


def on_colab() -> bool:
    return "google.colab" in sys.modules


def colab_install(root: Path = ROOT) -> bool:
    """On Colab, install the package (editable, with the book extras; ``gpu`` too on a GPU runtime) from the
    clone it was imported from, once, and work from that clone. Returns whether it installed."""
    import importlib
    import importlib.metadata
    import os
    import shutil
    import subprocess

    try:
        importlib.metadata.distribution(DISTRIBUTION)
        return False
    except importlib.metadata.PackageNotFoundError:
        pass
    os.chdir(root)
    extras = "book,gpu" if shutil.which("nvidia-smi") else "book"  # vLLM on a GPU runtime
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", f".[{extras}]"], check=True)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    importlib.invalidate_caches()
    return True


def setup(profile: str, out: str | Path | None = None, chapter: str | None = None):
    """A chapter's set-up: on Colab the package's installation (:func:`colab_install`); inline figures and
    tables with one decimal; the :class:`~l2s_utils.study.Study` of ``profile``; the chapter's header
    (profile, Open in Colab, downloads: :func:`reader.header`) displayed when ``chapter`` is given (the
    notebook's name, as in ``_toc.yml``). Returns the Study."""
    if on_colab():
        colab_install()
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except ImportError:
        shell = None
    if shell is not None:
        shell.run_line_magic("matplotlib", "inline")
    import pandas as pd

    from . import reader
    from .study import Study

    pd.set_option("display.precision", 1)
    st = Study(profile, out=out)
    if chapter:
        from IPython.display import display

        display(reader.header(st, chapter))
    return st
