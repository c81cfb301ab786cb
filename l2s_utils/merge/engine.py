"""The merging engine: a validated config -> streamed, atomic checkpoint.

    from l2s_utils.merge import merge
    result = merge("data/configs/qwen-7b/ties.yaml", "merged/ties-7b")

The config format is documented in ``config.py``; its parameters arrive resolved (``MergeConfig.params``).
Tensors are read one at a time from (sharded) safetensors, merged in fp32 by the method's kernel
(``methods/``) and written shard by shard, as they are computed. The engine knows a method only through
its registry record (``methods/registry.py``): for a method that ``streams``, every tensor larger than
CHUNK_ELEMENTS -- embedding and lm_head included -- is read in row ranges into fixed-size buffers
allocated once (:class:`ChunkBuffers`), and the kernel's temporaries are chunk-sized; whatever a kernel
needs beyond the rows at hand (exact rank thresholds, mask generators, subspaces) its ``prepare`` hooks
compute over a :class:`~l2s_utils.merge.methods.registry.Stream` of the inputs -- once per merge over every
merged tensor, and once per tensor over its row chunks. The merge's own memory is then a few tens of MB
whatever the model size (measured in ``benchmarks/merge_bench.py``); the other methods hold a few whole
tensors. Composite methods (AIM, ACM, Sens) are run by the ``run`` hook they registered (``composite.py``),
which calls back into :func:`merge`.

Tied embeddings. ``follow_base`` (default, the L2S code's behaviour): the output has exactly the
base's tensors and tie flag; an ``lm_head.weight`` present only in a fine-tuned model is ignored with
a warning (e.g. the untied DeepSeek-R1-Distill-Qwen-1.5B merged onto tied Qwen2.5-Math-1.5B), and a
tied fine-tuned model merged onto an untied base contributes its embedding as its ``lm_head``.
``untie``: every tied input exposes its embedding as ``lm_head.weight``, both are merged separately
and the output is untied (``tie_word_embeddings: false``).
"""

from __future__ import annotations

import json
import math
import os
import re
import resource
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import yaml

from . import methods as M
from .checkpoint import (
    DTYPE_NAMES, EMBED, LM_HEAD, TOKENIZER_FILES, Checkpoint, CheckpointError, PlannedTensor, StreamingWriter,
    claim_output, fetch_model, iter_with_prefetch, model_fingerprint, read_json_object,
)
from .config import MergeConfig, load_config
from .methods import MergeConfigError

ARCH_KEYS = ("model_type", "architectures", "hidden_size", "num_hidden_layers", "num_attention_heads",
             "num_key_value_heads", "intermediate_size", "vocab_size")


@dataclass
class MergeResult:
    out: Path
    method: str
    tensors_merged: int
    tensors_copied: int
    bytes_written: int
    seconds: float
    peak_rss_bytes: int

    def summary(self) -> str:
        return (f"merged model: {self.out}\n  method: {self.method}   tensors merged: {self.tensors_merged}"
                f" (+{self.tensors_copied} copied)   written: {self.bytes_written / 1e6:.1f} MB"
                f"   time: {self.seconds:.1f} s   peak RSS: {self.peak_rss_bytes / 1e6:.0f} MB")


def peak_rss_bytes() -> int:
    """This process's peak RSS: VmHWM where /proc exists (ru_maxrss survives exec on Linux, so it would
    include the RSS of whatever process launched this one), else ru_maxrss."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class _Inputs:
    """The opened checkpoints of one merge, validated against each other."""

    def __init__(self, cfg: MergeConfig):
        self.cfg = cfg
        untie = cfg.tied_embeddings == "untie"
        self.base = Checkpoint(fetch_model(cfg.base_model), allow_pickle=cfg.allow_pickle, virtual_lm_head=untie) \
            if cfg.base_model else None
        self.models = [Checkpoint(fetch_model(m), allow_pickle=cfg.allow_pickle, virtual_lm_head=untie) for m in cfg.models]
        self.ref = self.base or self.models[0]
        if not untie:
            # follow_base: a tied model merged onto an untied reference contributes its embedding as lm_head.
            ref_has_head = LM_HEAD in self.ref.tensors
            for c in self.all:
                if ref_has_head and LM_HEAD not in c.tensors and EMBED in c.tensors:
                    c.virtual_lm_head = True
        self.names = self.ref.names()
        self._validate()

    @property
    def all(self) -> list[Checkpoint]:
        return ([self.base] if self.base else []) + self.models

    def _validate(self) -> None:
        ref = self.ref
        for c in self.all:
            if c is ref:
                continue
            for key in ARCH_KEYS:
                if key in ref.config or key in c.config:
                    if ref.config.get(key) != c.config.get(key):
                        raise CheckpointError(
                            f"{c.path / 'config.json'}: {key} = {c.config.get(key)!r} but "
                            f"{ref.path / 'config.json'} has {ref.config.get(key)!r} (architectures must match)")
            names = set(c.names())
            missing = [n for n in self.names if n not in names]
            if missing:
                raise CheckpointError(f"{c.path}: tensor {missing[0]!r} (of {ref.path}) is missing"
                                      f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}")
            extra = sorted(names - set(self.names))
            for n in extra:
                if n == LM_HEAD:
                    warnings.warn(f"{c.path}: has an untied lm_head.weight but the reference {ref.path} is tied; "
                                  "it is ignored (tied_embeddings: follow_base, as the L2S code). "
                                  "Use tied_embeddings: untie to merge it.", stacklevel=3)
                else:
                    raise CheckpointError(f"{c.path}: tensor {n!r} does not exist in {ref.path}")
            for n in self.names:
                a, b = ref.info(n), c.info(n)
                if a.shape != b.shape:
                    raise CheckpointError(f"{c.path}: tensor {n!r} has shape {b.shape}, {ref.path} has {a.shape}")


def _excluded(name: str, patterns: list[str]) -> bool:
    return any(re.match(p, name) for p in patterns)


def _check_finite(t: torch.Tensor, what: str) -> None:
    """Raise if ``t`` holds NaN/Inf. One cheap reduction; the exact test runs only if the sum is not finite."""
    if t.is_floating_point() and t.numel() and not math.isfinite(float(t.sum(dtype=torch.float32))):
        if not bool(torch.isfinite(t).all()):
            raise MergeConfigError(f"{what}: contains NaN or Inf")


CHUNK_ELEMENTS = 1 << 19  # large tensors are streamed in row chunks of at most 512K elements (2 MB in fp32)
PREFETCH = 2  # chunks read ahead on the I/O thread


class ChunkBuffers:
    """Fixed-size read buffers, allocated once per merge and reused for every chunk (no per-chunk allocations).

    ``slots`` sets of buffers; each holds one fp32 tensor of ``elements`` per input checkpoint and one uint8
    scratch tensor for the file's raw bytes (converted into the fp32 buffer). :meth:`read` returns views of
    a slot's buffers, valid until that slot is read again. Memory: slots * (inputs * 4 + 4) * elements bytes
    (pages are only touched as used), e.g. 4 slots, 2 inputs, 512K elements: 24 MB at most, whatever the model size.
    """

    def __init__(self, inputs: "_Inputs", slots: int, elements: int, device: str):
        self.inputs, self.elements, self.device = inputs, elements, device
        self.scratch = [torch.empty(4 * elements, dtype=torch.uint8) for _ in range(slots)]
        self.f32 = [[torch.empty(elements, dtype=torch.float32) for _ in inputs.all] for _ in range(slots)]

    def read(self, slot: int, name: str, rows: tuple[int, int] | None) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
        """(base rows, [model rows]) of tensor ``name`` in fp32, read into slot ``slot``."""
        outs = self.f32[slot]
        ts = [c.get(name, device=self.device, rows=rows, out=o, scratch=self.scratch[slot])
              for c, o in zip(self.inputs.all, outs)]
        return (ts[0], ts[1:]) if self.inputs.base else (None, ts)


def _merged_names(inputs: "_Inputs", exclude: list[str]) -> list[str]:
    """The tensors a merge changes: floating-point and not excluded (the L2S code's TaskVector parameters)."""
    return [n for n in inputs.names
            if inputs.ref.info(n).dtype.is_floating_point and not _excluded(n, exclude)]


def _merge_stream(inputs: "_Inputs", exclude: list[str], buffers: ChunkBuffers, out_dtype: torch.dtype) -> M.Stream:
    """Every row chunk of every merged tensor (floating point, not excluded), read ahead on the I/O thread into
    the ring of ``buffers`` (slots 0..PREFETCH): the stream a method's ``prepare`` sees (model-wide statistics,
    e.g. global TIES thresholds)."""
    names = _merged_names(inputs, list(exclude))
    items = [(n, rows) for n in names for rows in row_chunks(inputs.ref.info(n).shape)]

    def chunks():
        return iter_with_prefetch(enumerate(items), lambda it: buffers.read(it[0] % (PREFETCH + 1), *it[1]),
                                  depth=PREFETCH)

    return M.Stream(chunks, sum(_numel(inputs.ref.info(n).shape) for n in names), len(items), len(inputs.models),
                    out_dtype)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def row_chunks(shape: tuple[int, ...], chunk_elements: int | None = None) -> list[tuple[int, int] | None]:
    """Row ranges [r0, r1) covering a tensor in chunks of at most ``chunk_elements`` (None = whole)."""
    chunk_elements = chunk_elements or CHUNK_ELEMENTS
    n = _numel(shape)
    if len(shape) < 2 or n <= chunk_elements:
        return [None]
    per_row = n // shape[0]
    step = max(1, chunk_elements // per_row)
    return [(r, min(r + step, shape[0])) for r in range(0, shape[0], step)]


def input_paths(cfg: MergeConfig) -> list[str]:
    """Every local path a merge reads (models, sources, config file, calibration file): never an OUT."""
    calib = cfg.extra.get("calibration")
    return [p for p in (cfg.base_model, *cfg.models, cfg.tokenizer_source, cfg.config_source, cfg.source,
                        calib.get("path") if isinstance(calib, dict) else None)
            if isinstance(p, str) and p not in ("base", "<dict>")]


def merge(config: str | os.PathLike | dict | MergeConfig, out: str | os.PathLike, *, overwrite: bool = False,
          device: str = "cpu", seed: int | None = None, progress: bool = True,
          _tensor_weights: Callable[[str], list[float]] | None = None, _extra: dict | None = None,
          _model_scales: Callable[[str], list[float]] | None = None) -> MergeResult:
    """Merge the models of ``config`` into a new checkpoint directory ``out``.

    Every input is validated (architecture, tensor names, shapes, vocabulary, hyper-parameters)
    before anything is written; NaN/Inf in an input or the result aborts the merge and removes the
    partial output. Tensors are streamed one at a time (computed in fp32 on ``device``, cast once to
    ``dtype``), so peak memory is a few row chunks (module docstring). The parameters are the config's, resolved
    when it was loaded (``MergeConfig.params``); ``seed`` overrides the config's seed (DARE masks).
    Private hooks for the composite methods: ``_tensor_weights(name)`` replaces the per-model weights of a
    tensor (Sens); ``_model_scales(name)`` gives s_i so that model i enters as theta_0 + s_i (theta_i - theta_0),
    i.e. its task vector scaled before the method sees it (ACM); ``_extra`` is added to the provenance.
    ``out`` is claimed for the whole merge (:class:`~l2s_utils.merge.checkpoint.claim_output`): a second
    merge into the same ``out`` fails at once, and ``out`` may never be (or contain) an input.
    """
    cfg = config if isinstance(config, MergeConfig) else load_config(config)
    method = M.get_method(cfg.merge_method)
    if method.composite:  # AIM / ACM / Sens: registered by composite.py with the runner that drives this engine
        return method.run(cfg, Path(out), overwrite=overwrite, device=device, seed=seed, progress=progress)
    params = M.with_seed(method, cfg.params, seed)  # a bad seed fails before the claim
    with claim_output(out, overwrite=overwrite, inputs=input_paths(cfg)) as claimed:
        return _merge(cfg, params, claimed, overwrite=overwrite, device=device, progress=progress,
                      _tensor_weights=_tensor_weights, _extra=_extra, _model_scales=_model_scales)


def _merge(cfg: MergeConfig, params: dict, out: Path, *, overwrite: bool, device: str, progress: bool,
           _tensor_weights: Callable[[str], list[float]] | None, _extra: dict | None,
           _model_scales: Callable[[str], list[float]] | None = None) -> MergeResult:
    """The streamed merge itself, into a claimed ``out`` (non-composite methods), with the resolved ``params``."""
    t0 = time.perf_counter()
    method = M.get_method(cfg.merge_method)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MergeConfigError("--device cuda requested but no CUDA device is available")
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; pass overwrite=True (--overwrite) to replace it")
    inputs = _Inputs(cfg)
    out_dtype = DTYPE_NAMES[cfg.dtype]

    # PREFETCH + 1 slots for the read-ahead ring (the chunk in use and the ones being read), one for the passes
    # that run on this thread (thresholds). Everything a merge holds is these buffers plus a few chunk-sized
    # temporaries of the kernel, so peak memory does not grow with the model (embedding and lm_head included).
    buffers = ChunkBuffers(inputs, PREFETCH + 2, CHUNK_ELEMENTS, device)
    main_slot = PREFETCH + 1
    kw = dict(params)
    if method.prepare is not None:  # per-merge state over every merged tensor (global TIES thresholds, ...)
        kw.update(method.prepare(_merge_stream(inputs, cfg.exclude, buffers, out_dtype), kw))

    config_dir = inputs.ref.path if cfg.config_source == "base" else fetch_model(cfg.config_source)
    src_config = read_json_object(Path(config_dir) / "config.json", "(config_source needs a config.json)")
    tok_dir = inputs.ref.path if cfg.tokenizer_source == "base" else fetch_model(cfg.tokenizer_source)

    out_names = inputs.names
    plan = [PlannedTensor(n, inputs.ref.info(n).shape,
                          out_dtype if inputs.ref.info(n).dtype.is_floating_point else inputs.ref.info(n).dtype)
            for n in out_names]
    write_dtype = {t.name: t.dtype for t in plan}
    fp_holder: dict[str, Any] = {}
    fp_thread = threading.Thread(target=lambda: fp_holder.update(
        {str(c.path): model_fingerprint(c.path) for c in inputs.all}), daemon=True)
    fp_thread.start()

    def load(item, slot=None):
        i, (name, rows) = item
        base_t, model_ts = buffers.read(i % (PREFETCH + 1) if slot is None else slot, name, rows)
        if _model_scales is not None and base_t is not None and base_t.is_floating_point():
            model_ts = [t if s == 1.0 else base_t + s * (t - base_t) for s, t in zip(_model_scales(name), model_ts)]
        return name, rows, base_t, model_ts

    def tensor_state(name: str, chunks: list) -> dict:
        """The method's per-tensor state (its ``prepare_tensor`` over the tensor's row chunks; main slot)."""
        if method.prepare_tensor is None or _excluded(name, cfg.exclude):
            return {}
        shape = inputs.ref.info(name).shape
        stream = M.Stream(lambda: (load((0, (name, rows)), slot=main_slot)[2:] for rows in chunks), _numel(shape),
                          len(chunks), len(inputs.models), out_dtype, name, shape)
        return method.prepare_tensor(stream, kw)

    chunkable = method.streamed(params)
    chunks_of = {n: (row_chunks(inputs.ref.info(n).shape) if chunkable and not _excluded(n, cfg.exclude) else [None])
                 for n in out_names}
    items = [(n, rows) for n in out_names for rows in chunks_of[n]]
    merged = copied = 0

    from tqdm.auto import tqdm

    with StreamingWriter(out, plan, max_shard_bytes=cfg.max_shard_size, overwrite=overwrite,
                         metadata={"l2s_merge_method": method.name}) as w:
        bar = tqdm(total=len(out_names), desc=f"merge[{method.name}]", unit="tensor", disable=not progress)
        current, state = None, {}
        for name, rows, base_t, model_ts in iter_with_prefetch(enumerate(items), load, depth=PREFETCH):
            if name != current:
                current, state = name, tensor_state(name, chunks_of[name])
            last_chunk = rows is None or rows[1] == inputs.ref.info(name).shape[0]
            ref_t = base_t if base_t is not None else model_ts[0]
            if not ref_t.is_floating_point() or _excluded(name, cfg.exclude):
                result = ref_t.to(write_dtype[name])
                copied += last_chunk
            else:
                if base_t is not None:
                    _check_finite(base_t, f"{inputs.base.path}: tensor {name!r}")
                for c, t in zip(inputs.models, model_ts):
                    _check_finite(t, f"{c.path}: tensor {name!r}")
                call = {**kw, **state}
                if _tensor_weights is not None:
                    call["weights"] = _tensor_weights(name)
                result = method.kernel(base_t, model_ts, name=name, **call).to(write_dtype[name])
                _check_finite(result, f"merged tensor {name!r} (method {method.name}, as {cfg.dtype})")
                merged += last_chunk
            w.write(name, result)
            if last_chunk:
                bar.update(1)
        bar.close()
        out_cfg = dict(src_config)
        if cfg.max_position_embeddings:
            out_cfg["max_position_embeddings"] = cfg.max_position_embeddings
        if LM_HEAD in out_names:
            out_cfg["tie_word_embeddings"] = False
        elif EMBED in out_names:
            out_cfg["tie_word_embeddings"] = True
        out_cfg["dtype"] = {torch.bfloat16: "bfloat16", torch.float16: "float16", torch.float32: "float32"}[out_dtype]
        out_cfg.pop("torch_dtype", None)
        w.add_file("config.json", json.dumps(out_cfg, indent=2, sort_keys=True))
        gen = Path(config_dir) / "generation_config.json"
        if gen.is_file():
            w.copy_file(gen)
        for f in TOKENIZER_FILES:
            if (Path(tok_dir) / f).is_file():
                w.copy_file(Path(tok_dir) / f)
        w.add_file("merge_config.yaml", yaml.safe_dump(cfg.to_yaml_dict(), sort_keys=False))
        fp_thread.join()
        w.add_file("l2s_merge.json", json.dumps({**_provenance(cfg, method, params, fp_holder, merged, copied),
                                                 **(_extra or {})}, indent=2, default=str))
    return MergeResult(out, method.name, merged, copied, w.bytes_written, time.perf_counter() - t0, peak_rss_bytes())


def _provenance(cfg: MergeConfig, method: M.Method, params: dict, fps: dict, merged: int, copied: int) -> dict:
    import platform
    from importlib.metadata import PackageNotFoundError, version

    from .. import __version__

    try:  # the installed version, without importing transformers (~20 MB) into a merge that does not use it
        tf_version = version("transformers")
    except PackageNotFoundError:
        tf_version = None

    return {
        "method": method.name, "paper": method.paper, "resolved_parameters": params,
        "config": cfg.to_yaml_dict(), "inputs": fps, "tensors_merged": merged, "tensors_copied": copied,
        "versions": {"l2s_utils": __version__, "torch": torch.__version__, "transformers": tf_version,
                     "python": platform.python_version()},
        "command": " ".join(sys.argv), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
