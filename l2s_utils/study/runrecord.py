"""The record of one study run, written by the run itself (:func:`l2s_utils.study.driver.run_study`).

``<out>/study-run.json``; with ``l2s study --record`` (or ``L2S_STUDY_RECORD=1``) also
``benchmarks/results/study-<profile>.json``, the stored record the Reproduce page shows. Its fields:

- ``profile``, ``created`` (UTC, ISO 8601), ``commit`` (``git rev-parse HEAD``, ``None`` outside git) and
  ``dirty`` (uncommitted changes in the work tree), ``machine`` (:func:`machine`);
- ``chapters``: per notebook its ``status`` -- ``executed``, or ``unchanged`` when its stamp matched and it was
  not run (its ``seconds`` are then 0) -- and ``seconds`` (wall time of its execution);
- ``jobs``: chapters executed at a time (:func:`l2s_utils.study.driver.default_jobs`; with 2 a chapter's ``seconds``
  overlap another's);
- ``seconds``: the wall time of the study up to the book's build (models, chapters, intro), and ``book_seconds``
  that of the jupyter-book build (added after it; the page rendered before it shows the study's part only);
- ``generated``: ``responses`` and ``tokens`` (``n_tokens`` summed) of the generation cache records that this run
  added under ``out`` (:func:`generation_records`); generations served from the cache count nothing;
- ``results``: per model of the merge chapters' summaries (``out/verdicts/<chapter>.summary.csv``) its
  ``accuracy`` (%) and ``mean_tokens``, averaged over benchmarks when there are several, and ``n`` (problems);
- ``weights`` (organism profiles): where the trained models came from (:func:`weights`): per organism scale and
  per trained baseline ``shipped`` (``data/organism``, ``data/baselines``), ``trained`` (built on this machine, now
  or in an earlier run: the local cache) or ``not built`` -- a run on shipped weights trains nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shutil
from pathlib import Path

from . import gitinfo

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
RECORD = "study-run.json"


def generation_records(out: Path) -> dict[str, set[str]]:
    """Every generation cache file under ``out`` (``**/generations/*.jsonl``, parts included) and the prompt
    hashes of its lines."""
    found = {}
    for f in sorted(Path(out).rglob("generations/*.jsonl")):
        found[str(f)] = {r["prompt_sha"] for r in _lines(f)}
    return found


def _lines(f: Path) -> list[dict]:
    rows = []
    for raw in f.read_bytes().split(b"\n"):
        try:
            r = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            continue  # a corrupt or unfinished line: the pipeline skips it too
        if isinstance(r, dict) and isinstance(r.get("prompt_sha"), str) and isinstance(r.get("n_tokens"), int):
            rows.append(r)
    return rows


def generated_since(out: Path, before: dict[str, set[str]]) -> dict:
    """Responses and tokens of the cache lines under ``out`` that were not there in ``before``."""
    responses = tokens = 0
    for f in sorted(Path(out).rglob("generations/*.jsonl")):
        old = before.get(str(f), set())
        new = {r["prompt_sha"]: r["n_tokens"] for r in _lines(f) if r["prompt_sha"] not in old}
        responses, tokens = responses + len(new), tokens + sum(new.values())
    return {"responses": responses, "tokens": tokens}


def machine() -> dict:
    """Where the run ran: platform, CPU cores, the GPU if any, and the versions that decide the numbers."""
    import torch

    from ..organism.training import environment

    env = environment()
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {"platform": platform.platform(), "machine": env["machine"], "cpu_count": os.cpu_count(), "gpu": gpu,
            "torch": env["torch"], "transformers": env["transformers"], "cpu_capability": env["cpu_capability"]}


def results(out: Path, chapters) -> list[dict]:
    """Accuracy (%) and mean tokens per model of the merge chapters' summaries (first chapter wins a model),
    each the mean over the summary's benchmarks."""
    import pandas as pd

    from . import verdict

    frames = []
    for v in verdict.load(out, chapters):
        f = Path(out) / "verdicts" / f"{v.chapter}.summary.csv"
        if v.kind == "merges" and f.is_file():
            frames.append(pd.read_csv(f))
    if not frames:
        return []
    df = pd.concat(frames, ignore_index=True)
    if not {"model", "accuracy", "mean_tokens"} <= set(df.columns):
        return []
    first = df.drop_duplicates(["model", "benchmark"] if "benchmark" in df else ["model"])
    agg = first.groupby("model", sort=False).agg(accuracy=("accuracy", "mean"), mean_tokens=("mean_tokens", "mean"),
                                                 n=("n", "sum") if "n" in df else ("accuracy", "size"))
    return [{"model": m, "accuracy": round(float(r.accuracy), 2), "mean_tokens": round(float(r.mean_tokens), 1),
             "n": int(r.n)} for m, r in agg.iterrows()]


def make(profile: str, report: list[dict], seconds: float, generated: dict, out: Path, chapters,
         weights: dict | None = None, jobs: int = 1) -> dict:
    """The record of a finished run (fields: the module's docstring)."""
    commit, dirty = gitinfo.head(ROOT)
    rec = {"profile": profile, "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "commit": commit, "dirty": dirty, "machine": machine(), "chapters": report,
           "seconds": round(seconds, 1), "jobs": int(jobs), "generated": generated, "results": results(out, chapters)}
    if weights:
        rec["weights"] = weights
    return rec


def weights(prof: dict, models: list[dict]) -> dict | None:
    """Where an organism profile's trained models came from: ``{"organism": {scale: "shipped" | "trained"},
    "baselines": {method: "shipped" | "trained" | "not built"}}`` (``models``: what
    :func:`~l2s_utils.study.driver.organism_models` built); None for a profile of hub models. Looks up, never
    trains (:func:`l2s_utils.study.baselines.locate`)."""
    if not models:
        return None
    from . import baselines as B
    from .study import Study

    st = Study(prof)
    org = st.pair()["organism"]
    found = {}
    for method, train in st.trained_baselines():
        b = B.locate(method, org, st.trained_spec(method, train))
        found.setdefault(method, "not built" if b is None else b.source)
    return {"organism": {m["scale"]: m["source"] for m in models}, "baselines": found}


def save(record: dict, out: Path, publish: bool = False, results_dir: Path = RESULTS) -> Path:
    """``out/study-run.json``; with ``publish`` also ``results_dir/study-<profile>.json``."""
    Path(out).mkdir(parents=True, exist_ok=True)
    f = Path(out) / RECORD
    tmp = f.with_suffix(".json.partial")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(f)
    if publish:
        results_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, results_dir / f"study-{record['profile']}.json")
    return f


def publish_requested() -> bool:
    return os.environ.get("L2S_STUDY_RECORD", "") not in ("", "0")
