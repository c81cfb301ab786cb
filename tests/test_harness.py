"""Prompts, benchmark loaders, the generation cache, metrics and `l2s eval` end to end (CPU, micro organism)."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from l2s_utils.evaluate import pipeline
from l2s_utils.evaluate.benchmarks import DatasetMissing, load_benchmark
from l2s_utils.evaluate.generation import Generation, Sampling
from l2s_utils.evaluate.metrics import aes, bootstrap_ci, summarize
from l2s_utils.evaluate.prompts import build_prompt, stop_strings

FIXTURES = {
    "gsm8k": [{"question": "Tom has 3 apples and buys 4. How many?", "answer": "He has 3+4=7.\n#### 7"},
              {"question": "1,000 plus 1?", "answer": "#### 1,001"}],
    "math500": [{"problem": "What is $1/2+1/4$?", "solution": "... \\boxed{\\frac{3}{4}}", "answer": "\\frac{3}{4}",
                 "subject": "Algebra", "level": 2, "unique_id": "test/algebra/1.json"},
                {"problem": "Compute $2+2$.", "solution": "\\boxed{4}", "answer": "4", "subject": "Prealgebra", "level": 1,
                 "unique_id": "test/prealgebra/2.json"}],
    "aime24": [{"id": 60, "problem": "Find x.", "solution": "...", "answer": "204", "question": "Find x."}],
    "minerva_math": [{"problem": "Speed of light?", "solution": "It is \\boxed{3 \\times 10^8} m/s.", "type": "Physics", "idx": 0}],
    "olympiadbench": [{"id": 1, "question": "Find n.", "final_answer": ["$12$"], "solution": ["..."], "subfield": "Algebra"}],
    "college_math": [{"question": "Derivative of x^2 at 1?", "answer": "$2$", "data_topic": "calculus"}],
}
GOLDS = {"gsm8k": ["7", "1001"], "math500": ["\\frac{3}{4}", "4"], "aime24": ["204"], "minerva_math": ["3 \\times 10^8"],
         "olympiadbench": ["12"], "college_math": ["2"]}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    for name, rows in FIXTURES.items():
        (root / name).mkdir()
        (root / name / "test.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return root


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    from l2s_utils.organism import training as O

    return O.build("micro", cache=tmp_path_factory.mktemp("cache"), progress=False)


@pytest.mark.parametrize("name", list(FIXTURES))
def test_loaders_read_toolkit_format(data_dir, name):
    items = load_benchmark(name, path=data_dir / name / "test.jsonl")
    assert [it.gold for it in items] == GOLDS[name]
    assert all(it.question and it.benchmark == name for it in items)
    if name == "math500":
        assert [it.level for it in items] == [2, 1]


def test_missing_dataset_says_how_to_provide_it(tmp_path, monkeypatch):
    monkeypatch.setenv("L2S_DATA_DIR", str(tmp_path))
    with pytest.raises(DatasetMissing, match="olympiadbench.*Qwen2.5-Math.*test.jsonl"):
        load_benchmark("olympiadbench")
    with pytest.raises(DatasetMissing, match="HuggingFaceH4/MATH-500"):
        load_benchmark("math500", allow_download=False)
    with pytest.raises(ValueError, match="unknown benchmark"):
        load_benchmark("mmlu")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        load_benchmark("gsm8k", path=bad)


def test_toy_benchmark_is_the_test_split():
    items = load_benchmark("toy", toy_per_level=4)
    assert {it.level for it in items} == {1, 2, 3, 4, 5}
    assert all(str(eval(it.question)) == it.gold for it in items)


def test_prompts_are_exact():
    assert build_prompt("What is 1+1?", "qwen25-math-cot") == (
        "<|im_start|>system\nPlease reason step by step, and put your final answer within \\boxed{}.<|im_end|>\n"
        "<|im_start|>user\nWhat is 1+1?<|im_end|>\n<|im_start|>assistant\n")
    assert build_prompt("Q2", "cot", shots=[("Q1", "A1")]) == "Question: Q1\nAnswer: A1\n\n\nQuestion: Q2\nAnswer: "
    assert build_prompt("Q", "cot") == "Question: Q\nAnswer: "
    assert build_prompt("3+4", "toy") == "<|im_start|>user\n3+4<|im_end|>\n<|im_start|>assistant\n"
    assert build_prompt("Q", "r1").endswith("<｜Assistant｜><think>\n")
    assert "\n\nQuestion:" in stop_strings("cot") and "<|im_end|>" in stop_strings("qwen25-math-cot")
    with pytest.raises(ValueError, match="unknown prompt style"):
        build_prompt("Q", "chatml")


def test_cache_resumes_and_never_reuses_stale(tmp_path, monkeypatch):
    calls = []

    def fake_generate(model, prompts, sampling, backend, progress, **kw):
        calls.append(list(prompts))
        return [Generation(f"out:{p}:{sampling.max_tokens}", len(p), "stop") for p in prompts]

    monkeypatch.setattr(pipeline, "generate", fake_generate)
    prompts = [f"p{i}" for i in range(6)]
    s = Sampling(max_tokens=10)
    first = pipeline.cached_generate("m", prompts, s, backend="transformers", cache_dir=tmp_path, fingerprint="fp1", chunk=4)
    assert [len(c) for c in calls] == [4, 2]
    # an interrupted run: keep 3 complete lines and a half-written one
    f = next(tmp_path.glob("*.jsonl"))
    lines = f.read_text().splitlines()
    f.write_text("\n".join(lines[:3]) + "\n" + lines[3][:10])
    calls.clear()
    again = pipeline.cached_generate("m", prompts, s, backend="transformers", cache_dir=tmp_path, fingerprint="fp1")
    assert [t.text for t in again] == [t.text for t in first]
    kept = {json.loads(line)["prompt_sha"] for line in lines[:3]}
    assert sorted(calls[0]) == sorted(p for p in prompts if pipeline._sha(p) not in kept)  # only the missing ones
    assert len(calls[0]) == 3
    calls.clear()
    pipeline.cached_generate("m", prompts, s, backend="transformers", cache_dir=tmp_path, fingerprint="fp1")
    assert calls == []  # complete cache: nothing generated
    pipeline.cached_generate("m", prompts, Sampling(max_tokens=11), backend="transformers", cache_dir=tmp_path, fingerprint="fp1")
    assert len(calls[-1]) == 6  # another sampling parameter: a new key
    pipeline.cached_generate("m", prompts, s, backend="transformers", cache_dir=tmp_path, fingerprint="fp2")
    assert len(calls[-1]) == 6  # another model: a new key


def test_metrics_hand_computed():
    lo, hi = bootstrap_ci([0, 100, 100, 0] * 25, seed=1)
    assert lo < 50 < hi and (lo, hi) == bootstrap_ci([0, 100, 100, 0] * 25, seed=1)
    assert aes(acc=50, length=50, acc_ref=50, length_ref=100) == pytest.approx(0.5)
    assert aes(acc=55, length=50, acc_ref=50, length_ref=100) == pytest.approx(0.5 + 3 * 0.1)
    assert aes(acc=45, length=50, acc_ref=50, length_ref=100) == pytest.approx(0.5 - 5 * 0.1)
    df = pd.DataFrame({"model": ["a"] * 4 + ["b"] * 4, "benchmark": "x", "correct": [1, 1, 0, 0, 1, 1, 1, 0],
                       "tokens": [10, 10, 10, 10, 40, 40, 40, 40], "keywords": [0, 0, 0, 0, 2, 1, 0, 3],
                       "reflective": [False] * 4 + [True, True, False, True], "truncated": [False] * 7 + [True]})
    s = summarize(df, reference="b").set_index("model")
    assert s.loc["a", "accuracy"] == 50 and s.loc["b", "accuracy"] == 75
    assert s.loc["a", "length_change_pct"] == pytest.approx(-75.0) and s.loc["b", "length_change_pct"] == 0
    assert s.loc["b", "reflective_pct"] == 75 and s.loc["b", "keyword_freq"] == 2 and s.loc["b", "truncated_pct"] == 25
    assert s.loc["a", "acc_lo"] <= 50 <= s.loc["a", "acc_hi"]


def test_eval_end_to_end_toy_and_math500(micro, data_dir, tmp_path):
    r = subprocess.run([sys.executable, "-m", "l2s_utils.cli", "eval", "--model", str(micro.system2), "--benchmark", "toy",
                        "--limit", "6", "--max-tokens", "24", "--backend", "transformers", "--out", str(tmp_path), "--quiet"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "accuracy" in r.stdout and "95% CI" in r.stdout
    df = pd.read_parquet(tmp_path / "results" / "system2" / "toy.parquet")
    assert len(df) == 6 and set(df.finish_reason) <= {"stop", "length"}
    assert df.model_fingerprint.str.len().eq(64).all() and df.prompt_style.eq("toy").all()
    df2 = pipeline.evaluate(micro.system1, "math500", data=data_dir / "math500" / "test.jsonl", prompt="qwen25-math-cot",
                           backend="transformers", max_tokens=12, out=tmp_path, progress=False)
    assert list(df2.level) == [2, 1] and (tmp_path / "results" / "system1" / "math500.csv").is_file()
    assert df2.tokens.between(0, 40).all() and df2.truncated.dtype == bool
    r = subprocess.run([sys.executable, "-m", "l2s_utils.cli", "eval", "--model", str(micro.system2), "--benchmark", "toy",
                        "--backend", "vllm", "--limit", "1", "--out", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode != 0 and ("vllm" in r.stderr.lower() or "gpu" in r.stderr.lower())
