"""The two grading protocols: strict's rules on hand cases, qwen-toolkit unchanged, the toy answers, the
agreement floor on the corpus from the field's test suites, and the speed of the integer fast path."""

import json
import random
import time

import pandas as pd
import pytest

from l2s_utils.evaluate import strict
from l2s_utils.evaluate.grading import (PROTOCOLS, extract_answer, grade_answers, grade_batch, grade_responses,
                                        grade_toy)
from l2s_utils.evaluate.grading_corpus import CORPUS, agreement, load_corpus

STRICT_EQUIV = [
    # (prediction, gold, strict verdict) -- the toolkit's false positives first
    ("1,2,3", "123", False), ("32, 349", "32349", False), ("9999", "10000", False), ("2", "200", False),
    ("200", "2", False), ("1021_3", "1022_3", False), ("10, 4, 2", "4, 12, 2", False),
    # exact numbers, decimals as approximations, percent only with a % sign
    ("7", "7", True), ("-3", "3", False), ("5.0", "5", True), ("0.5", "\\frac{1}{2}", True), ("0.3333", "\\frac13", True),
    ("0.33", "\\frac13", False), ("5.001", "5", False), ("10", "10.0001", True), ("1/2", "\\dfrac{1}{2}", True),
    ("1,000", "1000", True), ("7,425,000", "7425000", True), ("11,\\! 111,\\! 100", "11111100", True),
    ("20\\%", "0.2", True), ("20\\%", "20", True), ("0.2", "20\\%", True), ("20", "0.2", False),
    ("1\\frac12", "1.5", True), ("1 1/2", "\\frac32", True), ("2.5 \\times 10^{-3}", "\\frac{1}{400}", True),
    # structure
    ("(1,2)", "(2,1)", False), ("(1, 2)", "(1,2)", True), ("[0,1)", "(0,1)", False), ("[0, 1)", "[0,1)", True),
    ("\\{1,2,3\\}", "\\{3,2,1\\}", True), ("-2, 1", "1,-2", True), ("1, 2", "1, 2, 3", False), ("2", "1,2", False),
    ("x=1, y=2", "1, 2", True), ("(p,q)=(3,2)", "(3,2)", True),
    ("(-\\infty, -3] \\cup [2, \\infty)", "[2,\\infty)\\cup(-\\infty,-3]", True),
    ("\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", "\\begin{bmatrix} 1 & 2 \\\\ 3 & 4 \\end{bmatrix}", True),
    ("\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", "\\begin{pmatrix}1&2\\\\4&3\\end{pmatrix}", False),
    ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\begin{pmatrix}1&2\\end{pmatrix}", False),
    # LaTeX variants, units, words
    ("\\sqrt[3]2", "\\sqrt[3]{2}", True), ("\\frac{\\sqrt3}{3}", "\\frac{1}{\\sqrt{3}}", True), ("5 \\text{ cm}", "5", True),
    ("5", "5\\text{ cm}^2", True), ("10cm", "10", False), ("90^\\circ", "90", True), ("\\$18", "18", True),
    ("\\text{(C)}", "C", True), ("\\textbf{odd}", "Odd", True), ("odd", "even", False), ("x^2+2x+1", "(x+1)^2", True),
    ("", "5", False), (None, "5", False),
]


@pytest.mark.parametrize("pred,gold,expected", STRICT_EQUIV)
def test_strict_equivalence(pred, gold, expected):
    assert grade_answers([pred], [gold], "strict", workers=1) == [expected]


STRICT_EXTRACT = [
    (r"so the answer is \boxed{42}.", "42"),
    (r"\boxed{1} wait, no: \boxed{2}", "2"),
    (r"The roots are $\boxed{-2}$ and $\boxed{1}$.", "-2, 1"),
    (r"\boxed{(1, \frac{2}{3})}", r"(1, \frac{2}{3})"),
    ("<think>I get 12, no 13</think>The answer is 13.", "13"),
    ("<think>Let me compute 12+1=13 and then", None),  # cut while thinking: unanswered
    ("Final Answer: The final answer is $\\frac{1}{3}$. I hope it is correct.", r"\frac{1}{3}"),
    ("The answer is: 2,500", "2,500"),
    ("The answer is $x = 5$ because of symmetry.", "x = 5"),
    ("I computed 12 then 15 apples", None),  # no marked answer: math-verify extracts, never a bare last number
]


@pytest.mark.parametrize("text,want", STRICT_EXTRACT)
def test_strict_extract(text, want):
    assert strict.extract(text) == want


def test_strict_responses_fix_the_toolkit_failures():
    responses = [r"So $x = \frac13$.", r"We get $\frac{1+\sqrt5}{2}$", "<think>try 7... 7 works</think>",
                 "<think>the answer may be 7", r"\boxed{-2} and \boxed{1}", r"\boxed{1,2,3}", r"\boxed{2}"]
    golds = [r"\frac{1}{3}", r"\frac{1+\sqrt{5}}{2}", "7", "7", "1,-2", "123", "200"]
    _, tk = grade_responses(responses, golds, "qwen-toolkit", workers=1)
    preds, st = grade_responses(responses, golds, "strict", workers=1)
    assert tk == [False, False, True, True, False, True, True]
    assert st == [True, True, False, False, True, False, False]
    assert preds[3] is None and preds[4] == "-2, 1"


def test_qwen_toolkit_protocol_is_the_old_grader():
    from tests.test_grading import EQUIV, EXTRACT

    texts = [t for t, _ in EXTRACT] + [f"The answer is \\boxed{{{p}}}" for p, _, _ in EQUIV if p]
    golds = ["42"] * len(EXTRACT) + [g for p, g, _ in EQUIV if p]
    preds, correct = grade_responses(texts, golds, "qwen-toolkit", workers=1)
    want = [extract_answer(t) for t in texts]
    assert preds == want and correct == grade_batch(want, golds, workers=1)
    with pytest.raises(ValueError, match="unknown grading protocol"):
        grade_responses(["1"], ["1"], "lenient")
    assert PROTOCOLS == ("strict", "qwen-toolkit")


def _toy_responses(n=400, seed=0):
    from l2s_utils.organism import task as T

    rng = random.Random(seed)
    probs = T.make_problems("test", n // 5, seed=seed)
    texts, golds = [], []
    for i, p in enumerate(probs):
        t = T.system1_trace(p) if i % 2 else T.system2_trace(p, rng)
        if i % 7 == 0:
            t = t[: len(t) // 2]  # cut, as a truncated generation
        texts.append(t)
        golds.append(str(p.answer + (i % 3 == 0)))
    return texts, golds


def test_toy_answers_grade_the_same_under_both_protocols():
    texts, golds = _toy_responses()
    _, tk = grade_responses(texts, golds, "qwen-toolkit", workers=1)
    preds, st = grade_responses(texts, golds, "strict", workers=1)
    toy = [grade_toy(t, int(g))[1] for t, g in zip(texts, golds)]
    whole = [i for i in range(len(texts)) if i % 7]
    assert [st[i] for i in whole] == [tk[i] for i in whole] == [toy[i] for i in whole]
    assert 0 < sum(st) < len(st)
    # a generation cut inside <think> is unanswered under strict (the toolkit takes its last number)
    cut = [i for i in range(len(texts)) if i % 7 == 0 and "<think>" in texts[i] and "</think>" not in texts[i]]
    assert cut and all(preds[i] is None and not st[i] for i in cut)


def test_toy_integer_grading_speed():
    texts, golds = _toy_responses(2000)
    texts = [t for i, t in enumerate(texts) if i % 7]  # whole traces (the fast path)
    golds = [g for i, g in enumerate(golds) if i % 7]
    t = time.perf_counter()
    grade_responses(texts, golds, "strict", workers=1)
    rate = len(texts) / (time.perf_counter() - t)
    assert rate > 5000, rate  # benchmarks/grading_speed.py measures it properly (about 10^5 answers/s)


def test_corpus_records_its_sources():
    cases = load_corpus()
    assert len(cases) >= 350
    assert {c["source"] for c in cases} == {"huggingface/Math-Verify", "MARIO-Math-Reasoning/MARIO_EVAL",
                                            "NVIDIA/NeMo-Skills", "hendrycks/math", "EleutherAI/lm-evaluation-harness"}
    for c in cases:
        assert len(c["commit"]) == 40 and c["path"] and c["form"] in ("response", "answer")
        assert isinstance(c["expected"], bool)
    assert len({c["id"] for c in cases}) == len(cases)
    assert CORPUS.name == "grading_corpus.jsonl"


@pytest.mark.slow
def test_strict_agreement_floor_on_the_corpus():
    r = agreement(load_corpus(), "strict", workers=2, timeout=5)
    assert r["pct"] >= 95.0, json.dumps([(c["id"], c["response"][:60], c["gold"][:40]) for c in r["misses"]])


def test_regrade_and_pipeline_record_the_protocol():
    from l2s_utils.evaluate.pipeline import regrade

    rows = pd.DataFrame({"response": [r"\boxed{1,2,3}", r"\boxed{5}"], "gold": ["123", "5"], "correct": [True, True]})
    st = regrade(rows, "strict", workers=1)
    assert st.correct.tolist() == [False, True] and set(st.grading) == {"strict"}
    assert regrade(rows, "qwen-toolkit", workers=1).correct.tolist() == [True, True]


def test_profiles_choose_the_protocol(tmp_path):
    import yaml

    from l2s_utils.study.profiles import PROFILE_DIR, ProfileError, load_profile

    prof = yaml.safe_load((PROFILE_DIR / "toy.yaml").read_text())
    assert load_profile("toy").get("grading", "strict") in PROTOCOLS
    prof["grading"] = "lenient"
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(prof))
    with pytest.raises(ProfileError, match="grading"):
        load_profile(p)


def test_study_protocol_comparison(tmp_path):
    from l2s_utils.study import Study

    rows = pd.DataFrame({"model": ["A", "A", "B"], "benchmark": "x", "response": [r"\boxed{1,2,3}", r"\boxed{5}", r"\boxed{5}"],
                         "gold": ["123", "5", "5"], "correct": [True, True, True]})
    t = Study("toy", out=tmp_path).protocol_comparison(rows).set_index("model")
    assert t.loc["A", "strict"] == 50 and t.loc["A", "qwen-toolkit"] == 100 and t.loc["A", "toolkit_minus_strict"] == 50
    assert t.loc["B", "toolkit_minus_strict"] == 0
