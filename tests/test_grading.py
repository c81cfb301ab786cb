"""Answer extraction and equivalence on hand-written cases (fractions, decimals, LaTeX variants, ...)."""

import time

import pytest

from l2s_utils.evaluate.grading import extract_answer, grade_batch, is_equiv, normalize

EQUIV = [
    # (prediction, gold, expected)
    ("5", "5", True), ("5.0", "5", True), ("5.00", "5", True), ("-3", "-3", True), ("-3", "3", False),
    ("1,000", "1000", True), ("12,345", "12345", True), ("0.5", "\\frac{1}{2}", True), ("\\frac12", "\\frac{1}{2}", True),
    ("\\dfrac{1}{2}", "\\frac{1}{2}", True), ("\\tfrac{3}{4}", "0.75", True), ("1/2", "\\frac{1}{2}", True),
    ("\\frac{2}{4}", "\\frac{1}{2}", True), ("0.3333", "\\frac{1}{3}", True), ("0.33", "\\frac{1}{3}", False),
    ("50\\%", "50", True), ("50%", "0.5", True), ("25", "25\\%", True), ("\\$18", "18", True), ("18 dollars", "18", True),
    ("\\text{18 cm}", "18", True), ("90^\\circ", "90", True), ("90^{\\circ}", "90", True), ("x = 7", "7", True),
    ("x=-2", "-2", True), ("\\left( 1, 2 \\right)", "(1,2)", True), ("(1,2)", "(2,1)", False), ("(1, 2)", "(1,2)", True),
    ("[0, 1)", "[0,1)", True), ("[0,1]", "[0,1)", False), ("(-\\infty, 3]", "(-\\infty,3]", True),
    ("\\sqrt{2}", "\\sqrt2", True), ("2\\sqrt{2}", "\\sqrt{8}", True), ("\\sqrt{3}/3", "\\frac{\\sqrt{3}}{3}", True),
    ("\\frac{\\sqrt{3}}{3}", "\\frac{1}{\\sqrt{3}}", True), ("\\pi", "\\pi", True), ("2\\pi", "6.2832", True),
    ("x^2+2x+1", "(x+1)^2", True), ("x^2+1", "(x+1)^2", False), ("\\{1,2,3\\}", "\\{3,2,1\\}", True),
    ("3", "\\text{3}", True), ("\\mbox{yes}", "yes", True), ("Yes", "yes", True), ("\\textbf{(C)}", "C", True),
    ("", "5", False), (None, "5", False), ("\\frac{1}{0}", "1", False), ("1e3", "1000", True), (".5", "0.5", True),
    ("-\\frac{1}{2}", "-0.5", True), ("\\frac{-1}{2}", "-\\frac{1}{2}", True), ("10", "10.0001", True),
    ("10", "10.01", False), ("3.14159", "\\pi", True), ("7", "8", False), ("\\infty", "\\infty", True),
    ("a+b", "b+a", True), ("\\frac{x}{2}", "0.5x", True), ("{5}", "5", True), ("5 units", "5", True),
    ("\\left[ 2, 5 \\right]", "[2,5]", True), ("\\frac{3}{2}", "1.5", True), ("3/2", "1.5", True),
]


@pytest.mark.parametrize("pred,gold,expected", EQUIV)
def test_is_equiv(pred, gold, expected):
    assert is_equiv(pred, gold) is expected


EXTRACT = [
    (r"so the answer is \boxed{42}.", "42"),
    (r"\boxed{1} wait no \boxed{2}", "2"),
    (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
    (r"we get \boxed{\left(1, \frac{2}{3}\right)}", r"\left(1, \frac{2}{3}\right)"),
    ("The answer is 17.", "17"),
    ("Therefore, the final answer is $3$. I hope it is correct.", "3"),
    ("I computed 12 then 15 apples", "15"),
    ("nothing numeric here", None),
    (r"\boxed{unclosed 5", "5"),
    ("The answer is: 2,500", "2,500"),
    ("答案是 8", "8"),
]


@pytest.mark.parametrize("text,want", EXTRACT)
def test_extract_answer(text, want):
    assert extract_answer(text) == want


def test_normalize_examples():
    assert normalize(r"\left(\dfrac{1}{2}\right)") == r"(\frac{1}{2})"
    assert normalize("x = 10.0") == "10"
    assert normalize(r"\text{5 cm}") == "5"


def test_grade_batch_matches_is_equiv_and_is_fast():
    preds = [p for p, _, _ in EQUIV] * 12
    golds = [g for _, g, _ in EQUIV] * 12
    want = [e for _, _, e in EQUIV] * 12
    t = time.perf_counter()
    got = grade_batch(preds, golds, workers=2)
    rate = len(preds) / (time.perf_counter() - t)
    assert got == want
    assert rate > 50  # the benchmark script measures the real throughput; this only guards against hangs
    with pytest.raises(ValueError, match="differ in length"):
        grade_batch(["1"], [])


def test_grade_batch_timeout_counts_as_wrong():
    # a pathological expression must not hang the batch
    huge = "+".join(["x^{%d}" % i for i in range(400)])
    t = time.perf_counter()
    assert grade_batch([huge, "1"], ["y", "1"], workers=1, timeout=1) == [False, True]
    assert time.perf_counter() - t < 30
