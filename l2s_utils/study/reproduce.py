"""The Reproduce page's numbers, written from the stored run records (never typed by hand).

    python -m l2s_utils.study.reproduce            # print the fragments
    python -m l2s_utils.study.reproduce --write    # book/_generated/reproduce-*.md and the README's study-runs block

Every fragment names its source file, the record's date and machine; a missing record says "not measured" with
the command that measures it. ``l2s study`` writes the fragments before it builds the book, so a build always shows
the records of ``benchmarks/results`` as they are. Sources:

- ``study-<profile>.json`` (:mod:`l2s_utils.study.runrecord`): a whole study run per profile;
- ``generation_bench.json`` (``benchmarks/generation_bench.py``): decoding speed;
- ``vllm_cpu_agreement_<dtype>.json`` (``benchmarks/vllm_agreement.py``): vLLM beside transformers;
- ``merge_bench-<shape>.json``, ``svd_bench.json``, ``device_bench.json`` (the benchmarks of the same names).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from . import gitinfo
from . import reproduce_tables as tables
from .runrecord import RESULTS, ROOT

NOT_RUN = "not measured on this version yet"
README_BEGIN = "<!-- study-runs: begin (written by python -m l2s_utils.study.reproduce --write) -->"
README_END = "<!-- study-runs: end -->"


def load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def record_date(doc: dict, path: Path) -> str:
    """The record's ``created`` date; for a record without one, the date of the commit that last changed it."""
    if doc.get("created"):
        return str(doc["created"])[:10]
    committed = gitinfo.file_date(path, ROOT)
    if committed:
        return f"{committed} (committed; the file records no date)"
    return "date not recorded"


def source_line(path: Path, doc: dict, machine: str) -> str:
    """*Source: `<file>`, <date>, <machine>.* -- the line under every table."""
    return f"*Source: `{_shown(path)}`, {record_date(doc, path)}; {machine}.*"


def _shown(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def missing(what: str, command: str) -> str:
    return f"*{what}: {NOT_RUN}; run `{command}` (it writes the record this page shows).*\n"


def study_runs(results: Path = RESULTS) -> str:
    """Per profile: its stored run record as one table row, or "not measured yet" with the command."""
    rows, waiting = [], []
    for profile in tables.profiles():
        f = results / f"study-{profile}.json"
        doc = load(f)
        if doc is None:
            waiting.append(f"`{profile}` (`l2s study --profile {profile} --record`)")
        else:
            rows.append(tables.study_row(doc, f"`{_shown(f)}`, " + record_date(doc, f)))
    text = (tables.STUDY_HEAD + "\n".join(rows) + "\n") if rows else "*No study run has been recorded yet.*\n"
    if waiting:
        text += "\nNot measured yet: " + ", ".join(waiting) + ".\n"
    for profile in tables.profiles():
        jobs = load(results / f"study-jobs-{profile}.json")
        if jobs is not None:
            text += "\n" + tables.jobs_text(jobs)
    return text + "\n" + tables.STUDY_NOTE


def generation(results: Path = RESULTS) -> str:
    f = results / "generation_bench.json"
    doc = load(f)
    if doc is None:
        return missing("Generation speed", "python benchmarks/generation_bench.py --write")
    return tables.generation(doc) + "\n" + source_line(f, doc, doc.get("machine", "machine not recorded")) + "\n"


def vllm_agreement(results: Path = RESULTS) -> str:
    files = sorted(results.glob("vllm_cpu_agreement_*.json"))
    if not files:
        return missing("vLLM beside transformers", ".venv-vllm/bin/python benchmarks/vllm_agreement.py --json FILE")
    parts = []
    for f in files:
        doc = load(f)
        machine = f"{doc.get('machine', '?')}; torch {doc.get('torch', '?')}, {doc.get('transformers', '?')}, {doc.get('vllm', '?')}"
        parts.append(tables.vllm_agreement(doc) + "\n" + source_line(f, doc, machine) + "\n")
    return "\n".join(parts)


def merges(results: Path = RESULTS) -> str:
    parts = []
    for shape, cmd in (("1b", "--shape 1b"), ("7b", "--shape 7b --layers 1")):
        f = results / f"merge_bench-{shape}.json"
        doc = load(f)
        parts.append(missing(f"Merge benchmark, {shape} shape", f"python benchmarks/merge_bench.py {cmd} --write")
                     if doc is None else tables.merges(doc) + "\n" + source_line(f, doc, doc["machine"]) + "\n")
    return "\n".join(parts)


def svd(results: Path = RESULTS) -> str:
    f = results / "svd_bench.json"
    doc = load(f)
    if doc is None:
        return missing("Randomized vs exact SVD", "python benchmarks/svd_bench.py --write")
    return tables.svd(doc) + "\n" + source_line(f, doc, doc["machine"]) + "\n"


def device(results: Path = RESULTS) -> str:
    f = results / "device_bench.json"
    doc = load(f)
    if doc is None:
        return missing("CPU beside CUDA", "python benchmarks/device_bench.py --write") + "*(It needs a CUDA GPU.)*\n"
    return tables.device(doc) + "\n" + source_line(f, doc, doc["machine"]) + "\n"


FRAGMENTS = {"reproduce-study.md": study_runs, "reproduce-generation.md": generation,
             "reproduce-vllm.md": vllm_agreement, "reproduce-merge.md": merges, "reproduce-svd.md": svd,
             "reproduce-device.md": device}


def fragments(results: Path = RESULTS) -> dict[str, str]:
    return {name: f(results) for name, f in FRAGMENTS.items()}


def write(book: Path = ROOT / "book", results: Path = RESULTS) -> None:
    """``book/_generated/reproduce-*.md`` (included by ``book/reproduce.md``)."""
    gen = Path(book) / "_generated"
    gen.mkdir(parents=True, exist_ok=True)
    for name, text in fragments(results).items():
        tmp = gen / f"{name}.partial"
        tmp.write_text(text)
        tmp.replace(gen / name)


def readme_block(results: Path = RESULTS) -> str:
    """The README's study-runs block: one line per stored study record (its wall time, machine, date)."""
    lines = [README_BEGIN]
    for profile in tables.profiles():
        doc = load(results / f"study-{profile}.json")
        if doc is not None:
            lines.append(tables.readme_line(doc, record_date(doc, results / f"study-{profile}.json")))
    if len(lines) == 1:
        lines.append("No study run has been recorded yet (`l2s study --profile toy --record` records one).")
    return "\n".join([*lines, README_END])


def write_readme(readme: Path = ROOT / "README.md") -> None:
    text = readme.read_text()
    if README_BEGIN not in text or README_END not in text:
        raise ValueError(f"{readme} has no study-runs markers")
    head, rest = text.split(README_BEGIN, 1)
    readme.write_text(head + readme_block() + rest.split(README_END, 1)[1])


if __name__ == "__main__":
    if "--write" in sys.argv:
        write()
        write_readme()
    else:
        for name, text in fragments().items():
            print(f"--- {name}\n{text}")
        print(readme_block())
