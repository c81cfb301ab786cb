"""The evaluation pipeline: benchmark -> prompts -> cached generations -> graded tidy rows.

    rows = evaluate("runs/merged/ties", "math500", limit=50, out="runs/eval")

Generations are cached as JSONL under ``<out>/generations/<key>.jsonl``, one line per prompt, where
``key`` hashes everything that changes a generation: the model fingerprint (sha256 of weights +
config), ``generation_config.json`` and the tokenizer files, the backend and its version, and the
sampling parameters (seed included: sample s of a multi-sample run uses seed ``sampling.seed + s``, so
sample 0 shares the single-sample run's key); the grading protocol is not part of it (grading happens
after generation, so both protocols read the same generations). Each line carries the sha256 of its prompt. A run appends after every batch, so
an interrupted run resumes and generates only the missing prompts; a changed model or parameter gets
a new key and never reuses stale outputs. Corrupt lines (cut by a kill, edited, not UTF-8, the wrong
shape) are skipped with a warning naming the file, and their prompts are generated again.

Every result row carries provenance: model path and fingerprint, merge method and parameters (from the
checkpoint's ``l2s_merge.json`` if any), benchmark, prompt style, sampling, seed, backend, versions,
the sample index (``sample``: ``n_samples`` responses per problem, sample s drawn with seed
``sampling.seed + s`` and cached under its own key, so sample 0 is the single-sample run and adding
samples generates only the new ones) and the grading protocol (``grading``: ``strict`` by default, or ``qwen-toolkit``, the paper's);
:func:`regrade` grades stored rows again under the other protocol without generating anything.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
from pathlib import Path

from .. import __version__
from ..merge.checkpoint import (
    INDEX_NAME, TOKENIZER_FILES, Checkpoint, check_weights_policy, file_sha256, model_fingerprint, read_json_object,
)
from .benchmarks import Item, load_benchmark
from .generation import Generation, Sampling, generate, resolve_backend
from .grading import DEFAULT_PROTOCOL, check_protocol, grade_responses
from .prompts import build_prompt, stop_strings
from .reflection import keyword_count


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


GENERATION_FILES = ("generation_config.json", *TOKENIZER_FILES)


def generation_files_fingerprint(model: str | os.PathLike) -> dict[str, str]:
    """sha256 of the model's generation config and tokenizer files (those present)."""
    p = Path(model)
    return {f: file_sha256(p / f) for f in GENERATION_FILES if (p / f).is_file()}


def backend_version(backend: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    package = {"transformers": "transformers", "vllm": "vllm"}.get(backend, backend)
    try:
        return f"{package} {version(package)}"
    except PackageNotFoundError:
        return f"{package} (not installed)"


def cache_key(fingerprint: str, backend: str, sampling: Sampling, files: dict | None = None,
              version: str | None = None) -> str:
    return _sha(json.dumps({"model": fingerprint, "backend": backend, "sampling": sampling.key(),
                            "files": files or {}, "backend_version": version or ""}, sort_keys=True))[:24]


def _read_cache(path: Path) -> dict[str, Generation]:
    """The valid lines of a cache file; corrupt ones are skipped with one warning naming the file."""
    import warnings

    done: dict[str, Generation] = {}
    bad: list[int] = []
    good: list[bytes] = []
    with open(path, "rb") as f:
        for no, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                r = json.loads(raw.decode("utf-8"))
                ok = (isinstance(r, dict) and isinstance(r.get("prompt_sha"), str) and isinstance(r.get("text"), str)
                      and isinstance(r.get("n_tokens"), int) and not isinstance(r.get("n_tokens"), bool)
                      and r.get("n_tokens") >= 0 and r.get("finish_reason") in ("stop", "length"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                ok = False
            if not ok:
                bad.append(no)
                continue
            done[r["prompt_sha"]] = Generation(r["text"], r["n_tokens"], r["finish_reason"])
            good.append(raw.rstrip(b"\r\n") + b"\n")
    if bad:
        shown = ", ".join(map(str, bad[:5])) + (" ..." if len(bad) > 5 else "")
        warnings.warn(f"{path}: skipped {len(bad)} corrupt cache line(s) (line {shown}); "
                      "their prompts are generated again", stacklevel=3)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # drop them, so that they warn only once
        tmp.write_bytes(b"".join(good))
        os.replace(tmp, path)
    return done


def cached_generate(model: str | os.PathLike, prompts: list[str], sampling: Sampling, *, backend: str, cache_dir: Path,
                    fingerprint: str, chunk: int = 256, progress: bool = True, **options) -> list[Generation]:
    """Generate with a per-prompt JSONL cache; resumes after interruption; reuses nothing stale."""
    key = cache_key(fingerprint, backend, sampling, generation_files_fingerprint(model), backend_version(backend))
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"{key}.jsonl"
    done: dict[str, Generation] = _read_cache(path) if path.is_file() else {}
    shas = [_sha(p) for p in prompts]
    missing = sorted({s: p for s, p in zip(shas, prompts) if s not in done}.items())
    if missing:
        if path.is_file() and path.stat().st_size:
            with open(path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                dangling = f.read(1) != b"\n"
            if dangling:  # an interrupted write left half a line: end it so the next line stays intact
                with open(path, "a") as f:
                    f.write("\n")
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            for start in range(0, len(missing), chunk):
                part = missing[start:start + chunk]

                def append(idx, gens, part=part):  # after every batch: a kill loses at most the batch in flight
                    lines = []
                    for i, g in zip(idx, gens):
                        s = part[i][0]
                        if s not in done:
                            done[s] = g
                            lines.append(json.dumps({"prompt_sha": s, "text": g.text, "n_tokens": g.n_tokens,
                                                     "finish_reason": g.finish_reason}) + "\n")
                    data = memoryview("".join(lines).encode("utf-8"))
                    try:
                        while data:  # one O_APPEND write per batch, so lines of concurrent runs do not interleave
                            data = data[os.write(fd, data):]
                    except OSError as e:  # a full disk: name the file
                        raise OSError(e.errno, e.strerror, str(path)) from None

                gens = generate(model, [p for _, p in part], sampling, backend=backend, progress=progress,
                                on_batch=append, **options)
                append(range(len(part)), gens)  # whatever the backend did not report batch by batch
        finally:
            os.close(fd)
    return [done[s] for s in shas]


def provenance(model: str | os.PathLike) -> dict:
    import torch
    import transformers

    p = Path(model)
    fp = model_fingerprint(p)
    merge_info = {}
    if (p / "l2s_merge.json").is_file():
        m = read_json_object(p / "l2s_merge.json")
        if not isinstance(m.get("method"), str) or "resolved_parameters" not in m:
            raise ValueError(f"{p / 'l2s_merge.json'}: corrupt merge provenance (needs 'method' and 'resolved_parameters')")
        merge_info = {"method": m["method"], "params": json.dumps(m["resolved_parameters"], sort_keys=True, default=str)}
    return {"model_path": str(p), "model_fingerprint": fp["sha256"], "merge_method": merge_info.get("method", ""),
            "merge_params": merge_info.get("params", ""),
            "versions": json.dumps({"l2s_utils": __version__, "torch": torch.__version__,
                                    "transformers": transformers.__version__, "python": platform.python_version()})}


def evaluate(model: str | os.PathLike, benchmark: str, *, limit: int | None = None, prompt: str = "qwen25-math-cot",
             backend: str = "auto", max_tokens: int = 10240, sampling: Sampling | None = None, out: str | os.PathLike = "runs/eval",
             data: str | os.PathLike | None = None, items: list[Item] | None = None, length_tokenizer=None,
             model_name: str | None = None, shots: list[tuple[str, str]] = (), grade_workers: int = 2,
             grading: str = DEFAULT_PROTOCOL, n_samples: int = 1, progress: bool = True, allow_pickle: bool = False,
             **backend_options):
    """Evaluate one model on one benchmark; returns (and saves) a pandas DataFrame, one row per problem and sample.

    Inputs are checked before anything is written: the model directory (config.json, weights under the
    pickle policy: pickle-only models need ``allow_pickle=True``), ``limit`` and ``n_samples`` (positive
    counts), ``grading`` (a known protocol) and ``out`` (a directory or a new path, not a file).
    """
    import pandas as pd

    check_protocol(grading)
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples!r}")
    out = Path(out)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive number of problems (or None for all), got {limit!r}")
    check_weights_policy(model, allow_pickle)
    if not (Path(model) / "config.json").is_file():
        raise ValueError(f"{Path(model) / 'config.json'}: missing (is {model} a model directory?)")
    if (Path(model) / "model.safetensors").is_file() or (Path(model) / INDEX_NAME).is_file():
        Checkpoint(model)  # headers, shards and config.json validated (cheap: no tensor is read)
    for d in (out, out / "generations", out / "results"):
        if d.exists() and not d.is_dir():
            raise ValueError(f"{d}: exists and is not a directory (--out must name a directory)")
    sampling = sampling or Sampling(max_tokens=max_tokens, stop=stop_strings(prompt))
    if n_samples > 1 and sampling.temperature == 0:
        raise ValueError("n_samples > 1 needs temperature > 0 (greedy samples are all the same response)")
    backend_options["allow_pickle"] = allow_pickle
    items = items if items is not None else load_benchmark(benchmark, path=data, limit=limit)
    backend = resolve_backend(backend)
    prov = provenance(model)
    prompts = [build_prompt(it.question, prompt, shots) for it in items]
    per_sample = [dataclasses.replace(sampling, seed=sampling.seed + s) for s in range(n_samples)]
    gens, samples = [], []
    for s, sp in enumerate(per_sample):
        gens += cached_generate(model, prompts, sp, backend=backend, cache_dir=out / "generations",
                                fingerprint=prov["model_fingerprint"], progress=progress, **backend_options)
        samples += [(s, sp)] * len(prompts)
    items_all = [it for _ in per_sample for it in items]
    preds, correct = grade_responses([g.text for g in gens], [it.gold for it in items_all], grading, workers=grade_workers)
    if length_tokenizer is None:
        from transformers import AutoTokenizer

        length_tokenizer = AutoTokenizer.from_pretrained(model)
    lengths = [len(x) for x in length_tokenizer([g.text for g in gens], add_special_tokens=False)["input_ids"]] if gens else []
    name = model_name or Path(model).name
    rows = []
    for it, g, pred, ok, n, (s, sp) in zip(items_all, gens, preds, correct, lengths, samples):
        kw = keyword_count(g.text)
        rows.append({"model": name, "benchmark": it.benchmark, "id": it.id, "level": it.level, "question": it.question,
                     "gold": it.gold, "response": g.text, "pred": pred, "correct": ok, "tokens": n,
                     "generated_tokens": g.n_tokens, "finish_reason": g.finish_reason, "truncated": g.finish_reason == "length",
                     "keywords": kw, "reflective": kw > 0, "prompt_style": prompt, "sampling": json.dumps(sp.key()),
                     "seed": sp.seed, "sample": s, "backend": backend, "grading": grading, **prov})
    df = pd.DataFrame(rows)
    target = out / "results" / name
    target.mkdir(parents=True, exist_ok=True)
    for suffix, write in ((".parquet", df.to_parquet), (".csv", df.to_csv)):  # atomic: a kill leaves no half file
        final = target / f"{benchmark}{suffix}"
        tmp = target / f".{final.name}.{os.getpid()}.tmp"
        try:
            write(tmp, index=False)
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
    return df


def regrade(rows, protocol: str, workers: int = 2):
    """A copy of graded rows (``response`` and ``gold`` columns) graded under ``protocol``; nothing is generated."""
    check_protocol(protocol)
    out = rows.copy()
    preds, correct = grade_responses(out.response.tolist(), out.gold.astype(str).tolist(), protocol, workers=workers)
    out["pred"], out["correct"], out["grading"] = preds, correct, protocol
    return out
