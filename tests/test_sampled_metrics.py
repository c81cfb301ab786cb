"""Sampled metrics (avg@k, pass@k, maj@k with bootstrap CIs) and token-budget curves on hand-computed cases."""

import itertools
import math

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from l2s_utils.evaluate.metrics import (avg_at_k, budget_curve, default_budgets, maj_at_k, pass_at_k,  # noqa: E402
                                        sampled_metrics)


@pytest.mark.parametrize("n,c,k", [(5, 2, 2), (10, 3, 1), (10, 3, 5), (16, 0, 4), (16, 16, 4), (8, 7, 2), (64, 5, 8),
                                   (4, 1, 4)])
def test_pass_at_k_is_the_closed_form_and_the_subset_average(n, c, k):
    closed = 1 - math.comb(n - c, k) / math.comb(n, k)
    assert pass_at_k(n, c, k) == pytest.approx(closed, abs=1e-12)
    if math.comb(n, k) <= 20000:  # the estimator is the mean over all k-subsets of "some sample is correct"
        samples = [1] * c + [0] * (n - c)
        subsets = list(itertools.combinations(samples, k))
        assert pass_at_k(n, c, k) == pytest.approx(np.mean([any(s) for s in subsets]), abs=1e-12)


def test_pass_at_k_hand_values_and_errors():
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)  # 1 - C(3,2)/C(5,2) = 1 - 3/10
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)  # pass@1 is the share correct
    assert pass_at_k(3, 2, 2) == 1.0  # n - c < k
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)


def test_avg_and_maj_at_k():
    assert avg_at_k([1, 0, 1, 1], 2) == 0.5 and avg_at_k([1, 0, 1, 1], 4) == 0.75
    # answers 5, 7, 7, 5, 5 with 5 correct: maj@3 -> 7 (wrong), maj@5 -> 5 (right)
    ans, ok = ["5", "7", "7", "5", "5"], [1, 0, 0, 1, 1]
    assert maj_at_k(ans, ok, 3) == 0.0 and maj_at_k(ans, ok, 5) == 1.0
    assert maj_at_k(ans, ok, 1) == 1.0
    assert maj_at_k(["7", "5"], [0, 1], 2) == 0.0  # a tie goes to the answer seen first
    assert maj_at_k([None, None, "3"], [0, 0, 1], 3) == 1.0  # unanswered samples do not vote
    assert maj_at_k([None, None], [0, 0], 2) == 0.0
    with pytest.raises(ValueError):
        avg_at_k([1], 2)


def _sampled_rows():
    # model A: problem p1 answers (4,4,3,4) gold 4 -> correct (1,1,0,1); p2 answers (2,9,9,1) gold 1 -> (0,0,0,1)
    rows = []
    for pid, answers, gold in (("p1", ["4", "4", "3", "4"], "4"), ("p2", ["2", "9", "9", "1"], "1")):
        for s, a in enumerate(answers):
            rows.append({"model": "A", "benchmark": "toy", "id": pid, "sample": s, "pred": a, "correct": a == gold,
                         "tokens": 10 * (s + 1)})
    return pd.DataFrame(rows)


def test_sampled_metrics_table():
    t = sampled_metrics(_sampled_rows(), ks=(1, 2, 4), n_boot=200).set_index("k")
    assert t.loc[1, "avg@k"] == pytest.approx(50.0)  # p1 s0 right, p2 s0 wrong
    assert t.loc[4, "avg@k"] == pytest.approx(100 * (3 / 4 + 1 / 4) / 2)
    # pass@2: p1 n=4 c=3 -> 1; p2 n=4 c=1 -> 1 - C(3,2)/C(4,2) = 0.5
    assert t.loc[2, "pass@k"] == pytest.approx(75.0)
    assert t.loc[1, "pass@k"] == pytest.approx(100 * (3 / 4 + 1 / 4) / 2)
    # maj@4: p1 -> 4 (right); p2 -> 9 (wrong)
    assert t.loc[4, "maj@k"] == pytest.approx(50.0)
    assert t.loc[2, "maj@k"] == pytest.approx(50.0)  # p1 (4,4) right; p2 (2,9) tie -> 2, wrong
    for k in (1, 2, 4):
        for m in ("avg", "pass", "maj"):
            assert t.loc[k, f"{m}_lo"] <= t.loc[k, f"{m}@k"] <= t.loc[k, f"{m}_hi"]
    assert t.loc[1, "mean_tokens"] == pytest.approx(25.0) and t.loc[1, "median_tokens"] == pytest.approx(25.0)
    assert (t.problems == 2).all() and (t.samples == 8).all()


def test_budget_curve_hand_computed():
    df = pd.DataFrame({"model": ["M"] * 4, "correct": [True, True, False, True],
                       "generated_tokens": [10, 50, 20, 100], "truncated": [False, False, False, True]})
    c = budget_curve(df, budgets=[5, 10, 49, 50, 100, 1000]).set_index("budget")
    assert c.accuracy.tolist() == [0.0, 25.0, 25.0, 50.0, 75.0, 75.0]  # the last equals the plain accuracy
    assert c.finished_pct.tolist() == [0.0, 25.0, 50.0, 75.0, 75.0, 75.0]  # the truncated one never ends
    two = pd.concat([df, df.assign(model="N", generated_tokens=[1, 1, 1, 1])])
    c2 = budget_curve(two, budgets=[1, 100])
    assert c2[c2.model == "N"].accuracy.tolist() == [75.0, 75.0]
    assert c2[c2.model == "M"].accuracy.tolist() == [0.0, 75.0]
    assert budget_curve(df.drop(columns="generated_tokens").assign(tokens=[1, 2, 3, 4]), budgets=[2]).accuracy.iloc[0] == 50.0
    grid = default_budgets([3, 700])
    assert grid[0] == 16 and grid[-1] == 700 and grid == sorted(set(grid))


def test_budget_plot():
    from l2s_utils.study.plots import budget_curves

    df = pd.DataFrame({"model": ["System 1", "System 2"] * 3, "correct": [True, True, False, True, True, False],
                       "generated_tokens": [10, 200, 30, 400, 15, 800]})
    fig = budget_curves(budget_curve(df), title="budget")
    assert fig.axes[0].get_xscale() == "log" and len(fig.axes[0].lines) >= 2


def test_evaluate_draws_n_samples_each_cached_under_its_seed(tmp_path, monkeypatch):
    from l2s_utils.evaluate import pipeline
    from l2s_utils.evaluate.benchmarks import Item
    from l2s_utils.evaluate.generation import Generation, Sampling

    calls = []

    def fake_generate(model, prompts, sampling, backend, progress, **kw):
        calls.append((sampling.seed, len(prompts)))
        return [Generation(f"\\boxed{{{(sampling.seed + i) % 2}}}", 3 + sampling.seed, "stop") for i, _ in enumerate(prompts)]

    monkeypatch.setattr(pipeline, "generate", fake_generate)
    monkeypatch.setattr(pipeline, "provenance", lambda m: {"model_path": str(m), "model_fingerprint": "f" * 64,
                                                           "merge_method": "", "merge_params": "", "versions": "{}"})

    def tok(texts, add_special_tokens=False):
        return {"input_ids": [[0] * len(t) for t in texts]}

    import torch
    from safetensors.torch import save_file

    model = tmp_path / "model"  # evaluate checks the model directory before anything else (issue 15)
    model.mkdir()
    (model / "config.json").write_text("{}")
    save_file({"w": torch.zeros(1)}, str(model / "model.safetensors"))
    items = [Item("toy", f"q{i}", f"question {i}", "0") for i in range(3)]
    kw = dict(items=items, prompt="toy", backend="transformers", out=tmp_path / "eval", length_tokenizer=tok, model_name="m",
              progress=False, grade_workers=1)
    s = Sampling(max_tokens=8, temperature=0.7, seed=10)
    df = pipeline.evaluate(model, "toy", sampling=s, n_samples=4, **kw)
    assert len(df) == 12 and sorted(df["sample"].unique()) == [0, 1, 2, 3]
    assert sorted(df.seed.unique()) == [10, 11, 12, 13] and set(df.grading) == {"strict"}
    assert calls == [(10, 3), (11, 3), (12, 3), (13, 3)]
    calls.clear()
    more = pipeline.evaluate(model, "toy", sampling=s, n_samples=6, **kw)  # only the two new samples are generated
    assert calls == [(14, 3), (15, 3)] and len(more) == 18
    t = sampled_metrics(more, ks=(1, 6), n_boot=100).set_index("k")
    # correct when (seed + i) is even: each problem has 3 correct samples of 6
    assert t.loc[6, "avg@k"] == pytest.approx(50.0) and t.loc[6, "pass@k"] == pytest.approx(100.0)
    one = pipeline.evaluate(model, "toy", sampling=s, **kw)
    assert len(one) == 3 and (one["sample"] == 0).all()
    with pytest.raises(ValueError, match="temperature"):
        pipeline.evaluate(model, "toy", sampling=Sampling(max_tokens=8), n_samples=2, **kw)
