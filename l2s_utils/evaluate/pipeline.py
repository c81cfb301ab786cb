"""The evaluation pipeline: benchmark -> prompts -> cached generations -> graded tidy rows.

    rows = evaluate("runs/merged/ties", "math500", limit=50, out="runs/eval")

Generations are cached as JSONL under ``<out>/generations/<key>.jsonl``, one line per prompt, where
``key`` hashes the model fingerprint (sha256 of weights + config), the backend and the sampling
parameters; each line carries the sha256 of its prompt. A run appends after every batch, so an
interrupted run resumes and generates only the missing prompts; a changed model or parameter gets a
new key and never reuses stale outputs.

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
from ..merge.checkpoint import model_fingerprint
from .benchmarks import Item, load_benchmark
from .generation import Generation, Sampling, generate, resolve_backend
from .grading import DEFAULT_PROTOCOL, check_protocol, grade_responses
from .prompts import build_prompt, stop_strings
from .reflection import keyword_count


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def cache_key(fingerprint: str, backend: str, sampling: Sampling) -> str:
    return _sha(json.dumps({"model": fingerprint, "backend": backend, "sampling": sampling.key()}, sort_keys=True))[:24]


def cached_generate(model: str | os.PathLike, prompts: list[str], sampling: Sampling, *, backend: str, cache_dir: Path,
                    fingerprint: str, chunk: int = 256, progress: bool = True, **options) -> list[Generation]:
    """Generate with a per-prompt JSONL cache; resumes after interruption; reuses nothing stale."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"{cache_key(fingerprint, backend, sampling)}.jsonl"
    done: dict[str, Generation] = {}
    if path.is_file():
        with open(path) as f:
            for line in f:
                try:
                    r = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by an interruption
                done[r["prompt_sha"]] = Generation(r["text"], r["n_tokens"], r["finish_reason"])
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
        with open(path, "a") as f:
            for start in range(0, len(missing), chunk):
                part = missing[start:start + chunk]
                gens = generate(model, [p for _, p in part], sampling, backend=backend, progress=progress, **options)
                for (s, _), g in zip(part, gens):
                    done[s] = g
                    f.write(json.dumps({"prompt_sha": s, "text": g.text, "n_tokens": g.n_tokens,
                                        "finish_reason": g.finish_reason}) + "\n")
                f.flush()
    return [done[s] for s in shas]


def provenance(model: str | os.PathLike) -> dict:
    import torch
    import transformers

    p = Path(model)
    fp = model_fingerprint(p)
    merge_info = {}
    if (p / "l2s_merge.json").is_file():
        m = json.loads((p / "l2s_merge.json").read_text())
        merge_info = {"method": m["method"], "params": json.dumps(m["resolved_parameters"], sort_keys=True)}
    return {"model_path": str(p), "model_fingerprint": fp["sha256"], "merge_method": merge_info.get("method", ""),
            "merge_params": merge_info.get("params", ""),
            "versions": json.dumps({"l2s_utils": __version__, "torch": torch.__version__,
                                    "transformers": transformers.__version__, "python": platform.python_version()})}


def evaluate(model: str | os.PathLike, benchmark: str, *, limit: int | None = None, prompt: str = "qwen25-math-cot",
             backend: str = "auto", max_tokens: int = 10240, sampling: Sampling | None = None, out: str | os.PathLike = "runs/eval",
             data: str | os.PathLike | None = None, items: list[Item] | None = None, length_tokenizer=None,
             model_name: str | None = None, shots: list[tuple[str, str]] = (), grade_workers: int = 2,
             grading: str = DEFAULT_PROTOCOL, n_samples: int = 1, progress: bool = True, **backend_options):
    """Evaluate one model on one benchmark; returns (and saves) a pandas DataFrame, one row per problem and sample."""
    import pandas as pd

    check_protocol(grading)
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    out = Path(out)
    items = items if items is not None else load_benchmark(benchmark, path=data, limit=limit)
    sampling = sampling or Sampling(max_tokens=max_tokens, stop=stop_strings(prompt))
    backend = resolve_backend(backend)
    prov = provenance(model)
    if n_samples > 1 and sampling.temperature == 0:
        raise ValueError("n_samples > 1 needs temperature > 0 (greedy samples are all the same response)")
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
    df.to_parquet(target / f"{benchmark}.parquet", index=False)
    df.to_csv(target / f"{benchmark}.csv", index=False)
    return df


def regrade(rows, protocol: str, workers: int = 2):
    """A copy of graded rows (``response`` and ``gold`` columns) graded under ``protocol``; nothing is generated."""
    check_protocol(protocol)
    out = rows.copy()
    preds, correct = grade_responses(out.response.tolist(), out.gold.astype(str).tolist(), protocol, workers=workers)
    out["pred"], out["correct"], out["grading"] = preds, correct, protocol
    return out
