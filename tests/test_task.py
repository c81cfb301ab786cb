"""The toy task and the trace writers."""

import random
from collections import Counter

import pytest

from l2s_utils.evaluate.grading import extract_last_boxed
from l2s_utils.evaluate.reflection import is_reflective, keyword_count
from l2s_utils.organism import task as T


def test_levels_grow_in_operations_and_operands():
    rng = random.Random(0)
    for level, (n_ops, hi) in T.LEVELS.items():
        for _ in range(200):
            p = T.random_problem(level, rng)
            assert len(p.ops) == n_ops and len(p.operands) == n_ops + 1
            assert all(1 <= b <= hi for b in p.operands)
            assert p.answer == eval(p.question)  # left-to-right +/- is Python's evaluation too
            v = p.operands[0]
            for op, b in zip(p.ops, p.operands[1:]):
                v = v + b if op == "+" else v - b
                assert 0 <= v <= T.MAX_VALUE
    with pytest.raises(ValueError, match="level"):
        T.random_problem(6, rng)


def test_splits_are_deterministic_and_disjoint():
    a = T.make_problems("test", 30, seed=0)
    assert a == T.make_problems("test", 30, seed=0)
    assert a != T.make_problems("test", 30, seed=1)
    train = {p.question for p in T.make_problems("train", 300, seed=0)}
    calib = {p.question for p in T.make_problems("calib", 100, seed=0)}
    test = {p.question for p in T.make_problems("test", 100, seed=3)}
    assert not (train & test) and not (train & calib) and not (calib & test)
    counts = Counter(p.level for p in T.make_problems("test", 50, seed=0))
    assert all(counts[level] == 50 for level in (2, 3, 4, 5)) and 15 <= counts[1] <= 50  # level 1 has few distinct
    with pytest.raises(ValueError, match="split"):
        T.make_problems("dev", 3, 0)


def test_system1_trace_is_short_correct_and_unreflective():
    rng = random.Random(1)
    for level in T.LEVELS:
        for _ in range(100):
            p = T.random_problem(level, rng)
            tr = T.system1_trace(p)
            assert T.check_arithmetic(tr) == []
            assert tr.count("=") == level
            assert extract_last_boxed(tr) == str(p.answer)
            assert not is_reflective(tr) and "<think>" not in tr


def test_system2_trace_arithmetic_only_marked_slips():
    rng = random.Random(2)
    slips = 0
    for level in T.LEVELS:
        for _ in range(200):
            p = T.random_problem(level, rng)
            tr = T.system2_trace(p, rng, T.S2Style(slip_prob=0.3))
            assert T.check_arithmetic(tr) == [], tr
            assert tr.startswith("<think>\n") and "\n</think>\nThe answer is" in tr
            assert extract_last_boxed(tr) == str(p.answer)
            assert keyword_count(tr) >= 2 and "Recap:" in tr
            slips += tr.count(T.SLIP_MARK)
    assert slips > 100  # slip-and-correct events do occur


def test_check_arithmetic_catches_unmarked_errors():
    assert T.check_arithmetic("3+4=8. The answer") == ["3+4=8"]
    assert T.check_arithmetic("3+4=8. Wait, that is wrong. 3+4=7.") == []
    assert T.check_arithmetic("3+4=8. Wait, that is wrong. 3+4=9.") == ["3+4=8", "3+4=9"]
    assert T.check_arithmetic("Let me verify once more: 3+4-2=5. Yes.") == []  # whole chains are not single steps


def test_system2_overthinks_easy_problems_and_grows_with_level():
    rng = random.Random(3)
    by_level = {}
    for level in T.LEVELS:
        ps = [T.random_problem(level, rng) for _ in range(100)]
        s1 = sum(len(T.system1_trace(p)) for p in ps) / 100
        s2 = sum(len(T.system2_trace(p, rng)) for p in ps) / 100
        by_level[level] = s2
        assert s2 > 3 * s1
    assert all(by_level[a] < by_level[a + 1] for a in range(1, 5))
    easy = T.system2_trace(T.Problem("3+4", 7, 1, (3, 4), ("+",)), random.Random(0))
    assert keyword_count(easy) >= 3  # redundant re-checks on a one-step problem


def test_calibration_triples_aligned_and_deterministic():
    a = T.calibration_triples(12, seed=0)
    assert a == T.calibration_triples(12, seed=0) and len(a) == 12
    assert {t.problem.level for t in a} == set(T.LEVELS)
    for t in a:
        assert T.split_of(t.problem.question) == "calib"
        assert extract_last_boxed(t.short) == extract_last_boxed(t.long) == str(t.problem.answer)
        assert not is_reflective(t.short) and is_reflective(t.long)


@pytest.mark.parametrize("text,n", [
    ("Wait, let me double-check.", 2), ("He awaits the recap.", 1), ("let me just verify; Let me check", 2),
    ("re-examine", 1), ("No reflection here.", 0), ("WAIT wait Wait", 3), ("double-checking", 0),
])
def test_keyword_count_word_boundaries(text, n):
    assert keyword_count(text) == n


@pytest.mark.parametrize("text,want", [
    (r"so \boxed{12}", "12"), (r"\boxed{1} then \boxed{2}", "2"), (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
    (r"\boxed{unclosed", None), ("no box", None), (r"\fbox{7}", "7"), (r"\boxed 5", "5"),
])
def test_extract_last_boxed(text, want):
    assert extract_last_boxed(text) == want


def test_remaining_operations():
    p = T.Problem("18-12+17-5", 18, 3, (18, 12, 17, 5), ("-", "+", "-"))
    assert [T.remaining(p, i) for i in range(4)] == ["-12+17-5", "+17-5", "-5", ""]
    tr = T.system2_trace(p, __import__("random").Random(0))
    assert "Step 1: 18-12, rest +17-5." in tr and "Step 2: -12+17, rest -5. Now 6+17." in tr
    assert "Step 3: +17-5. Now 23-5." in tr


def test_step_headers_continue_the_question():
    """Every header after the first writes the previous operation and then what follows it in the question, so
    the copy across a step's column work is a continuation of the operation just written (organism v15)."""
    import re

    rng = random.Random(4)
    for level in (2, 3, 4, 5):
        for _ in range(100):
            p = T.random_problem(level, rng)
            tr = T.system2_trace(p, rng)
            heads = re.findall(r"Step (\d+): ([^.]*)\.(?: Now (\d+)([+-]\d+)\.)?", tr)
            assert [int(h[0]) for h in heads] == list(range(1, level + 1))
            for i, (_, head, value, op) in enumerate(heads[1:], 2):
                span = head.replace(", rest ", "")
                assert p.question.endswith(span), (p.question, head)
                assert span.startswith(f"{p.ops[i - 2]}{p.operands[i - 1]}{p.ops[i - 1]}{p.operands[i]}")
                assert op == f"{p.ops[i - 1]}{p.operands[i]}" and int(value) == T.evaluate(p.operands[:i], p.ops[:i - 1])


@pytest.mark.parametrize("a,b,label,facts", [
    (12, 4, "Units 2 vs 4, borrow 1:", [(12, "-", 4, 8), (1, "-", 1, 0)]),
    (47, 23, "Units 7 vs 3:", [(7, "-", 3, 4), (4, "-", 2, 2)]),
    (50, 6, "Units 0 vs 6, borrow 1:", [(10, "-", 6, 4), (5, "-", 1, 4)]),
    (44, 28, "Units 4 vs 8, borrow 1:", [(14, "-", 8, 6), (4, "-", 1, 3), (3, "-", 2, 1)]),
    (9, 9, "Units 9 vs 9:", [(9, "-", 9, 0)]),
])
def test_borrow_decision_follows_the_two_units_digits(a, b, label, facts):
    """Subtraction writes both units digits before deciding to borrow; borrow iff a's units digit < b's."""
    steps = T._column_steps(a, "-", b)
    assert steps[0][0] == label
    assert [s[1:] for s in steps] == facts
    # every column fact is right, and the columns give a - b
    assert all((x - y if o == "-" else x + y) == z for _, x, o, y, z in steps)
    tens = steps[-1][4] if len(steps) > 1 else 0
    assert 10 * tens + steps[0][4] == a - b
