"""Generation backends behind one interface: ``generate(model, prompts, sampling) -> [Generation]``.

- ``transformers``: batched greedy (or sampled) decoding with left padding, batches ordered by prompt
  length, KV cache, stop token ids and stop strings, ``max_tokens`` new tokens; CPU or GPU.
- ``vllm``: see :func:`generate_vllm` (imported only when used).

Each result carries the response text (cut at the first stop string, stop token excluded), the number
of generated tokens before the stop, and the finish reason: ``"stop"`` (a stop token/string ended it)
or ``"length"`` (``max_tokens`` reached: truncated).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import torch

from ..merge.checkpoint import check_weights_policy, load_model


@dataclass(frozen=True)
class Sampling:
    max_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = ("<|im_end|>", "<|endoftext|>")
    stop_token_ids: tuple[int, ...] = ()

    def key(self) -> dict:
        return asdict(self)


@dataclass
class Generation:
    text: str
    n_tokens: int
    finish_reason: str  # "stop" | "length"


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


def _cut(text: str, stops: tuple[str, ...]) -> tuple[str, bool]:
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


@torch.inference_mode()
def generate_transformers(model_path: str | os.PathLike, prompts: list[str], sampling: Sampling, *,
                          batch_size: int = 64, device: str | None = None, progress: bool = True,
                          model_and_tokenizer=None, allow_pickle: bool = False, on_batch=None) -> list[Generation]:
    """Batched generation; ``on_batch(indices, generations)`` is called after every batch (the cache appends there)."""
    from tqdm.auto import tqdm

    model, tok = model_and_tokenizer or load_model(model_path, device, allow_pickle=allow_pickle)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    stop_ids = set(sampling.stop_token_ids)
    for s in sampling.stop:
        ids = tok.convert_tokens_to_ids(s) if s in tok.get_vocab() else None
        if isinstance(ids, int):
            stop_ids.add(ids)
    enc = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: -len(enc[i]))
    results: list[Generation | None] = [None] * len(prompts)
    gen_kwargs = dict(max_new_tokens=sampling.max_tokens, eos_token_id=sorted(stop_ids) or None,
                      pad_token_id=tok.pad_token_id)
    if sampling.temperature > 0:
        gen_kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p)
        torch.manual_seed(sampling.seed)
    else:
        gen_kwargs.update(do_sample=False)
    bar = tqdm(total=len(prompts), desc="generate", unit="prompt", disable=not progress, leave=False)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        L = max(len(enc[i]) for i in idx)
        ids = torch.full((len(idx), L), tok.pad_token_id)
        att = torch.zeros((len(idx), L), dtype=torch.long)
        for j, i in enumerate(idx):
            ids[j, L - len(enc[i]):] = torch.tensor(enc[i])
            att[j, L - len(enc[i]):] = 1
        out = model.generate(input_ids=ids.to(model.device), attention_mask=att.to(model.device), **gen_kwargs)
        new = out[:, L:].tolist()
        for j, i in enumerate(idx):
            toks = new[j]
            n, stopped = len(toks), False
            for k, t in enumerate(toks):
                if t in stop_ids:
                    n, stopped = k, True
                    break
            text = tok.decode(toks[:n], skip_special_tokens=False)
            text, by_string = _cut(text, sampling.stop)
            if by_string and not stopped:
                n = len(tok(text, add_special_tokens=False)["input_ids"])
            results[i] = Generation(text, n, "stop" if (stopped or by_string) else "length")
        if on_batch is not None:
            on_batch(idx, [results[i] for i in idx])
        bar.update(len(idx))
    bar.close()
    return results  # type: ignore[return-value]


def generate(model_path: str | os.PathLike, prompts: list[str], sampling: Sampling, *, backend: str = "auto",
             progress: bool = True, **options) -> list[Generation]:
    """Generate one response per prompt with the chosen backend (``auto``: vLLM on GPU if installed)."""
    backend = resolve_backend(backend)
    if backend == "transformers":
        return generate_transformers(model_path, prompts, sampling, progress=progress, **options)
    if backend == "vllm":
        options.pop("on_batch", None)  # one vLLM call is one batch: the caller appends after it
        check_weights_policy(model_path, options.pop("allow_pickle", False))
        return generate_vllm(model_path, prompts, sampling, **options)
    raise ValueError(f"unknown backend {backend!r}; use auto, transformers or vllm")


def generate_vllm(model_path: str | os.PathLike, prompts: list[str], sampling: Sampling, *,
                  tensor_parallel_size: int | None = None, max_model_len: int | None = None, dtype: str = "bfloat16",
                  distributed_executor_backend: str | None = None, gpu_memory_utilization: float = 0.9,
                  **_: object) -> list[Generation]:
    """vLLM backend (GPU). UNVERIFIED in this repository's CI, which has no GPU.

    ``tensor_parallel_size`` defaults to the number of visible GPUs (as the Qwen2.5-Math toolkit);
    ``max_model_len`` must cover prompt + max_tokens (merged 1.5B/7B models inherit 4096 positions from
    the System 1 base unless the merge config raised it); ``distributed_executor_backend="ray"`` spreads
    tensor parallelism over several nodes of a Ray cluster.
    """
    try:
        from vllm import LLM, SamplingParams
    except ImportError as e:
        raise RuntimeError("the vllm backend needs vLLM and a CUDA GPU: pip install -e '.[gpu]' "
                           "(or use --backend transformers)") from e
    if not torch.cuda.is_available():
        raise RuntimeError("the vllm backend needs a CUDA GPU; use --backend transformers on CPU")
    tp = tensor_parallel_size or torch.cuda.device_count()
    llm = LLM(model=str(model_path), tensor_parallel_size=tp, max_model_len=max_model_len, dtype=dtype,
              seed=sampling.seed, trust_remote_code=False, gpu_memory_utilization=gpu_memory_utilization,
              distributed_executor_backend=distributed_executor_backend)
    params = SamplingParams(temperature=sampling.temperature, top_p=sampling.top_p, max_tokens=sampling.max_tokens,
                            n=1, seed=sampling.seed, stop=list(sampling.stop), stop_token_ids=list(sampling.stop_token_ids))
    outs = llm.generate(prompts, params)
    # vLLM's token_ids may include a stop token id; the study's length metric re-tokenizes the text instead.
    return [Generation(o.outputs[0].text, len(o.outputs[0].token_ids),
                       "length" if o.outputs[0].finish_reason == "length" else "stop") for o in outs]
