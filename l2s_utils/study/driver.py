"""The study driver: build models, execute the notebooks with papermill, render the book.

    l2s study --profile toy

1. builds or loads the profile's models (the organism ladder on ``toy``; progress bars);
2. executes the book's chapters with papermill (parameters: profile, out) into ``book/chapters/``: the
   notebook ``notebooks/<name>.ipynb`` of every ``chapters/<name>`` entry of ``book/_toc.yml``, in the toc's
   order (:func:`l2s_utils.study.chapters.chapter_names`) -- a notebook whose source, profile and package
   code are unchanged since its last successful run is not executed again (a stamp file records the hash);
   a failing cell stops the study with the notebook and cell named;
3. writes what the intro shows of the run (:func:`write_intro`: every chapter's verdict and the headline
   figure, from the files the chapters saved under ``out/verdicts``), the run's record (``out/study-run.json``,
   :mod:`l2s_utils.study.runrecord`; with ``record`` also ``benchmarks/results/study-<profile>.json``) and the
   Reproduce page's fragments from the stored records (:mod:`l2s_utils.study.reproduce`);
4. builds the book with jupyter-book 1.x (offline; ``execute_notebooks: off``) and prints the path of
   ``index.html``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .chapters import chapter_names
from . import reproduce, runrecord
from .profiles import PROFILE_DIR, ProfileError, load_profile, resolve_profile_path

ROOT = Path(__file__).resolve().parents[2]


class StudyError(RuntimeError):
    pass


def _stamp(nb: Path, profile: dict, models: list | None = None) -> str:
    """What a chapter's outputs depend on: the notebook, the profile, the package code and the models
    (for the organism: which weights, shipped or trained here, by their sha256)."""
    h = hashlib.sha256(nb.read_bytes())
    h.update(json.dumps(profile, sort_keys=True).encode())
    h.update(json.dumps(models or [], sort_keys=True).encode())
    for f in sorted((ROOT / "l2s_utils").rglob("*.py")):
        h.update(f.read_bytes())
    return h.hexdigest()


def organism_models(prof: dict, progress: bool = False, verbose: bool = False) -> list[dict]:
    """Build or load the profile's organism scales; their source and sha256 (empty for hub models)."""
    if prof["models"]["kind"] != "organism":
        return []
    from ..organism import training as O

    models = []
    for scale in dict.fromkeys([prof["models"]["scale"], *(prof["models"].get("ladder") or [])]):
        org = O.build(scale, progress=progress, seed=prof["models"].get("seed"))
        models.append({"scale": scale, "source": org.source, "sha256": org.manifest.get("sha256")})
        if verbose:
            where = "shipped weights" if org.source == "shipped" else "trained here"
            print(f"[l2s study] organism {scale}: {org.n_params / 1e6:.2f}M parameters, {where} ({org.root})", flush=True)
    return models


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_jobs(prof: dict) -> int:
    """How many chapters the study executes at a time: ``L2S_STUDY_JOBS`` if set; else 2 for the organism with the
    transformers backend on a machine without CUDA with at least 2 cores (each chapter's kernel gets half the cores as
    threads), else 1.

    Why 2 on CPU: decoding the organism is bound by reading its key/value cache and by the threads' hand-offs, not by
    arithmetic, so two kernels of one thread each generate ~1.5x the tokens/s of one kernel of two threads
    (``benchmarks/results/parallel_bench.json``: 2 processes x 1 thread against 1 x 2, System 2 on the toy test
    set, identical responses). Chapters share their merges and generations through the run directory's caches (a
    lock per artefact: one makes it, the other waits and reuses it), so the results do not depend on the order."""
    env = os.environ.get("L2S_STUDY_JOBS")
    if env:
        try:
            jobs = int(env)
        except ValueError:
            raise StudyError(f"L2S_STUDY_JOBS must be a positive integer, got {env!r}") from None
        if jobs < 1:
            raise StudyError(f"L2S_STUDY_JOBS must be a positive integer, got {env!r}")
        return jobs
    if prof["models"]["kind"] != "organism" or _cores() < 2:
        return 1
    import torch

    from ..evaluate.generation import resolve_backend

    if torch.cuda.is_available() or resolve_backend(prof["backend"]["name"]) != "transformers":
        return 1  # one GPU, or vLLM engines (each sizes its own threads and cache): one chapter at a time
    return 2


def _expected_seconds(out: Path, profile: str) -> dict[str, float]:
    """Each chapter's seconds in the last executed run (the run directory's record, else the stored one): the
    longest chapters start first when chapters run side by side."""
    for f in (Path(out) / runrecord.RECORD, ROOT / "benchmarks" / "results" / f"study-{profile}.json"):
        try:
            return {c["notebook"]: float(c["seconds"]) for c in json.loads(f.read_text()).get("chapters", [])
                    if c.get("status") == "executed"}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
    return {}


def _papermill(src, dst, params: dict, progress: bool) -> dict | None:
    """Execute one notebook with papermill; None, or the failing cell (``exec_count``, ``ename``, ``evalue``)."""
    import papermill as pm

    try:
        pm.execute_notebook(str(src), str(dst), parameters=params, kernel_name="python3", progress_bar=progress,
                            cwd=str(ROOT))
    except pm.PapermillExecutionError as e:
        return {"exec_count": e.exec_count, "ename": e.ename, "evalue": str(e.evalue)}
    return None


def _execute(name: str, src: Path, tmp: Path, profile: str, out: Path, progress: bool, threads: int | None) -> None:
    """Execute one chapter into ``tmp``: in this process (``threads`` None) or in a child process whose kernel gets
    ``threads`` threads (chapters side by side). A failing cell is a StudyError naming the notebook and the cell."""
    params = {"profile": profile, "out": _shown_path(out)}
    if threads is None:
        failed = _papermill(src, tmp, params, progress)
    else:
        path = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONPATH": path}
        p = subprocess.run([sys.executable, "-m", "l2s_utils.study.driver", "--execute", str(src), str(tmp),
                            json.dumps(params)], cwd=ROOT, env=env, capture_output=True, text=True)
        if p.returncode == 0:
            return
        cell = [ln for ln in p.stdout.splitlines() if ln.startswith(_CELL_ERROR)]
        if not cell:
            raise StudyError(f"notebook {name}: its execution failed (exit code {p.returncode}): "
                             f"{(p.stderr or p.stdout).strip()[-2000:]}")
        failed = json.loads(cell[-1][len(_CELL_ERROR):])
    if failed is not None:
        raise StudyError(f"notebook {name}: cell {failed['exec_count']} failed: {failed['ename']}: {failed['evalue']} "
                         f"(the executed notebook with the traceback: {tmp})")


_CELL_ERROR = "L2S_CELL_ERROR "


def _execute_child(src: str, dst: str, params: str) -> int:
    """``python -m l2s_utils.study.driver --execute SRC DST PARAMS``: one chapter in a child process (:func:`_execute`)."""
    failed = _papermill(src, dst, json.loads(params), progress=False)
    if failed is not None:
        print(_CELL_ERROR + json.dumps(failed), flush=True)
        return 3
    return 0


def _effective_jobs(jobs: int, n: int) -> int:
    """Chapters at a time when ``n`` are to execute: one alone runs in this process whatever ``jobs`` says."""
    return max(1, min(jobs, n))


def run_notebooks(profile: str, out: Path, chapters: Path, notebooks=None, progress: bool = True,
                  prof: dict | None = None, jobs: int | None = None) -> list[dict]:
    """Execute ``notebooks`` (default: the chapters in the toc of the book that ``chapters`` belongs to,
    ``chapters/../_toc.yml``) into ``chapters`` with papermill (parameters: ``profile``, out); one report entry per
    notebook, in their order. ``prof`` is the profile already loaded (``run_study`` passes it, so a build loads and
    validates the profile once in this process). ``jobs`` (default :func:`default_jobs`): chapters executed at a
    time; above 1 each runs in a child process with ``cores // jobs`` threads, the longest (last run) first."""
    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

    notebooks = chapter_names(Path(chapters).parent) if notebooks is None else notebooks
    prof = prof or load_profile(profile)
    jobs = default_jobs(prof) if jobs is None else int(jobs)
    models = organism_models(prof, progress)
    chapters.mkdir(parents=True, exist_ok=True)
    done: dict[str, dict] = {}
    todo = []
    for name in notebooks:
        src, dst = ROOT / "notebooks" / f"{name}.ipynb", chapters / f"{name}.ipynb"
        stamp_file = chapters / f".{name}.stamp"
        stamp = _stamp(src, prof, models)
        if dst.is_file() and stamp_file.is_file() and stamp_file.read_text() == stamp:
            done[name] = {"notebook": name, "status": "unchanged", "seconds": 0.0}
        else:
            todo.append((name, src, dst, stamp_file, stamp))
    jobs = _effective_jobs(jobs, len(todo))
    threads = None if jobs == 1 else max(1, _cores() // jobs)

    def run(name, src, dst, stamp_file, stamp):
        t = time.perf_counter()
        print(f"[l2s study] executing {name} ...", flush=True)
        tmp = dst.with_suffix(".partial.ipynb")
        _execute(name, src, tmp, profile, out, progress, threads)
        reader_tags(tmp)
        strip_machine_paths(tmp, out)
        tmp.replace(dst)
        export_downloads(dst, chapters.parent / "_static" / "downloads")
        stamp_file.write_text(stamp)
        done[name] = {"notebook": name, "status": "executed", "seconds": round(time.perf_counter() - t, 1)}
        if threads is not None:
            print(f"[l2s study] {name}: executed ({done[name]['seconds']} s)", flush=True)

    if threads is None:
        for item in todo:
            run(*item)
    else:
        expected = _expected_seconds(out, prof["name"])
        todo.sort(key=lambda it: -expected.get(it[0], 0.0))  # stable: unknown chapters keep the toc's order
        print(f"[l2s study] {len(todo)} chapters, {jobs} at a time ({threads} thread{'s' * (threads > 1)} each)", flush=True)
        with ThreadPoolExecutor(jobs) as ex:
            futures = [ex.submit(run, *item) for item in todo]
            finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
            if any(f.exception() is not None for f in finished):
                for f in futures:
                    f.cancel()  # chapters not started stay so; those running finish (their outputs are whole)
                wait(futures)
                errors = [f.exception() for f in futures if not f.cancelled() and f.exception() is not None]
                errors.sort(key=lambda e: next((i for i, n in enumerate(notebooks) if f"notebook {n}:" in str(e)),
                                               len(notebooks)))
                if len(errors) > 1:
                    raise StudyError(f"{errors[0]} (and {len(errors) - 1} more: "
                                     + "; ".join(str(e) for e in errors[1:]) + ")") from errors[0]
                raise errors[0]
    return [done[name] for name in notebooks]


def _shown_path(out: Path) -> str:
    """``out`` relative to the repository when it lies inside it (notebooks run there), so that no executed
    notebook carries the build machine's absolute path."""
    try:
        return os.path.relpath(Path(out).resolve(), ROOT) if Path(out).resolve().is_relative_to(ROOT) else str(out)
    except ValueError:
        return str(out)


# cell tags that jupyter-book (myst-nb) reads: what the reader sees of each cell
HIDDEN_CELLS = {"injected-parameters": "remove-cell", "parameters": "hide-cell", "setup": "remove-input"}


def reader_tags(nb_path: Path) -> None:
    """Fold the code of every cell (``hide-input``: one click away), remove papermill's injected parameters,
    fold the parameters cell and show only the output of the set-up cell."""
    nb = json.loads(nb_path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        extra = [HIDDEN_CELLS[t] for t in tags if t in HIDDEN_CELLS] or ["hide-input"]
        for t in extra:
            if not any(x.startswith(("remove-", "hide-")) for x in tags):
                tags.append(t)
    nb_path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def strip_machine_paths(nb_path: Path, out: Path | None = None) -> None:
    """No path of the build machine in an executed notebook (it is offered for download as it is): papermill's
    ``input_path`` / ``output_path`` go, an absolute ``out`` parameter becomes ``None`` (the reader's own default,
    ``runs/<profile>``) in the metadata and the injected cell, and the repository's absolute path anywhere else
    becomes relative."""
    import re

    nb = json.loads(nb_path.read_text())
    pm_meta = nb.get("metadata", {}).get("papermill", {})
    for key in ("input_path", "output_path"):
        pm_meta.pop(key, None)
    params = pm_meta.get("parameters", {})
    if isinstance(params.get("out"), str) and os.path.isabs(params["out"]):
        params["out"] = None
    for cell in nb["cells"]:
        if "injected-parameters" in cell.get("metadata", {}).get("tags", []):
            src = "".join(cell.get("source", []))
            src = re.sub(r'(?m)^out = "(/[^"]*)"$', "out = None  # the build's output directory (not shipped)", src)
            cell["source"] = src.splitlines(keepends=True)
    text = json.dumps(nb, indent=1, ensure_ascii=False)
    for root in {str(ROOT), str(ROOT.resolve())}:
        text = text.replace(root + "/", "").replace(root, ".")
    if out is not None and os.path.isabs(str(out)):
        for o in {str(out), str(Path(out).resolve())}:
            text = text.replace(o, "runs")
    nb_path.write_text(text + "\n")


def student_copy(nb: dict) -> dict:
    """A notebook for students (chapters whose metadata has ``l2s.student_copy``): no outputs, no papermill
    metadata or injected cell, and every solution cell (one with ``l2s_skeleton`` in its metadata) reduced to
    that skeleton; hints (markdown) and the set-up stay."""
    import copy

    out = copy.deepcopy(nb)
    out.get("metadata", {}).pop("papermill", None)
    cells = []
    for cell in out["cells"]:
        meta = cell.get("metadata", {})
        tags = meta.get("tags", [])
        if "injected-parameters" in tags:
            continue
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
            if "l2s_skeleton" in meta:
                cell["source"] = meta.pop("l2s_skeleton").splitlines(keepends=True)
                meta["tags"] = [t for t in tags if not t.startswith(("hide-", "remove-"))]
            meta.pop("papermill", None)
            meta.pop("execution", None)
        cells.append(cell)
    out["cells"] = cells
    return out


def export_downloads(nb_path: Path, downloads: Path) -> None:
    """The executed chapter for download: ``<name>.ipynb`` and ``<name>.md`` (figures in ``<name>_files/``), and
    ``<name>.student.ipynb`` (:func:`student_copy`) for a chapter that asks for one.

    The Markdown holds the text cells, each code cell as a fenced block and its outputs (text as fenced
    blocks, Markdown and HTML as they are, figures as PNG files beside it); papermill's injected cell is left out.
    """
    import base64

    downloads.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(nb_path, downloads / nb_path.name)
    nb = json.loads(nb_path.read_text())
    if nb.get("metadata", {}).get("l2s", {}).get("student_copy"):
        (downloads / f"{nb_path.stem}.student.ipynb").write_text(
            json.dumps(student_copy(nb), indent=1, ensure_ascii=False) + "\n")
    files = downloads / f"{nb_path.stem}_files"
    shutil.rmtree(files, ignore_errors=True)
    parts, k = [], 0
    for cell in nb["cells"]:
        src = "".join(cell.get("source", []))
        if cell["cell_type"] == "markdown":
            parts.append(src)
            continue
        if cell["cell_type"] != "code" or "injected-parameters" in cell.get("metadata", {}).get("tags", []):
            continue
        parts.append(f"```python\n{src}\n```")
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                parts.append("```\n" + "".join(out["text"]).rstrip() + "\n```")
                continue
            data = out.get("data", {})
            if "image/png" in data:
                k += 1
                files.mkdir(parents=True, exist_ok=True)
                (files / f"figure-{k}.png").write_bytes(base64.b64decode("".join(data["image/png"])))
                parts.append(f"![figure {k}]({files.name}/figure-{k}.png)")
            elif "text/markdown" in data:
                parts.append("".join(data["text/markdown"]))
            elif "text/html" in data:
                parts.append("".join(data["text/html"]))
            elif "text/plain" in data:
                parts.append("```\n" + "".join(data["text/plain"]).rstrip() + "\n```")
    (downloads / f"{nb_path.stem}.md").write_text("\n\n".join(parts) + "\n")


def build_book(book: Path) -> Path:
    jb = Path(sys.executable).parent / "jupyter-book"
    cmd = [str(jb) if jb.exists() else "jupyter-book", "build", str(book)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise StudyError(f"jupyter-book build failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    index = book / "_build" / "html" / "index.html"
    if not index.is_file():
        raise StudyError(f"jupyter-book finished but {index} is missing")
    return index


def write_intro(out: Path, book: Path, chapters, profile: str) -> None:
    """What the intro shows of this run, from the files its chapters saved under ``out/verdicts``: every
    chapter's verdict and the headline figure (every merge beside the paper's number, relative to System 2),
    written to ``book/_generated/verdicts.md`` (included by ``intro.md``) and ``book/_static/headline.png``."""
    import pandas as pd

    from . import plots, verdict
    from .paper import paper_summary

    gen = book / "_generated"
    gen.mkdir(parents=True, exist_ok=True)
    text = verdict.intro_markdown(out, chapters, profile)
    merges = [v.chapter for v in verdict.load(out, chapters) if v.kind == "merges"]  # the merge chapters' summaries
    frames = [pd.read_csv(f) for ch in merges if (f := Path(out) / "verdicts" / f"{ch}.summary.csv").is_file()]
    if frames:
        summary = pd.concat(frames, ignore_index=True).drop_duplicates("model")
        fig = plots.versus_paper(summary, paper_summary(), f"ours ({profile})",
                                 title="Every merge relative to System 2: this run beside the paper (7B)")
        (book / "_static").mkdir(exist_ok=True)
        fig.savefig(book / "_static" / "headline.png", dpi=plots.DPI, bbox_inches="tight")
        import matplotlib.pyplot as plt

        plt.close(fig)
        n = int(summary.n.max()) if "n" in summary else None
        text += ("\n```{figure} /_static/headline.png\n:name: headline\n:width: 100%\n\n"
                 f"Every merge method of this run (filled markers, with 95% bootstrap intervals) beside the paper's "
                 f"7B averages (hollow, Table 1), both relative to System 2: length change (left) and accuracy as a "
                 f"share of System 2's (right). Profile `{profile}`"
                 + (f", n = {n} problems per model" if n else "") + ".\n```\n")
    tmp = gen / "verdicts.md.partial"
    tmp.write_text(text)
    tmp.replace(gen / "verdicts.md")


def notebook_profile(prof: dict) -> str:
    """What the notebooks get as ``profile``: a built-in's name (the book shows no local path), else the
    file as given -- a custom profile is never looked up again by its name (which may be a built-in's)."""
    p = Path(prof["_path"])
    try:
        if p.parent == PROFILE_DIR.resolve() and resolve_profile_path(p.stem) == p:
            return p.stem
    except ProfileError:
        pass
    return str(p)


def run_study(profile: str = "toy", out: str | Path | None = None, book: str | Path | None = None,
              notebooks=None, progress: bool = True, record: bool | None = None, jobs: int | None = None) -> Path:
    """The whole study: models, the chapters (default: those of ``book``'s ``_toc.yml``), the book. ``record``
    (default: ``L2S_STUDY_RECORD`` set) also stores the run's record in ``benchmarks/results``; ``jobs``: chapters
    at a time (:func:`run_notebooks`)."""
    prof = load_profile(profile)
    out = Path(out) if out else ROOT / "runs" / prof["name"]
    book = Path(book) if book else ROOT / "book"
    notebooks = chapter_names(book) if notebooks is None else notebooks
    t0 = time.perf_counter()
    before = runrecord.generation_records(out)
    models = organism_models(prof, progress, verbose=True)
    jobs = default_jobs(prof) if jobs is None else int(jobs)
    report = run_notebooks(notebook_profile(prof), out, book / "chapters", notebooks, progress, prof, jobs)
    chapters = chapter_names(book) if (book / "_toc.yml").is_file() else notebooks
    write_intro(out, book, chapters, prof["name"])
    generated = runrecord.generated_since(out, before)
    publish = runrecord.publish_requested() if record is None else record
    ran = sum(r["status"] == "executed" for r in report)
    rec = runrecord.make(prof["name"], report, time.perf_counter() - t0, generated, out, chapters,
                         weights=runrecord.weights(prof, models), jobs=_effective_jobs(jobs, ran))
    runrecord.save(rec, out, publish)
    reproduce.write(book)
    t1 = time.perf_counter()
    index = build_book(book)
    rec["book_seconds"] = round(time.perf_counter() - t1, 1)  # after the page was rendered: the next build shows it
    runrecord.save(rec, out, publish)
    for r in report:
        print(f"[l2s study] {r['notebook']}: {r['status']} ({r['seconds']} s)")
    print(f"[l2s study] done in {rec['seconds'] + rec['book_seconds']:.0f} s, {generated['tokens']:,} tokens generated "
          f"({generated['responses']:,} responses; record: {out / runrecord.RECORD}). The book: {index}")
    return index


if __name__ == "__main__":  # the child process of a chapter run side by side (_execute)
    if len(sys.argv) == 5 and sys.argv[1] == "--execute":
        raise SystemExit(_execute_child(*sys.argv[2:]))
    raise SystemExit("usage: python -m l2s_utils.study.driver --execute SRC DST PARAMETERS_JSON")
