"""The toy task and the trace writers."""

import random
from collections import Counter

import pytest

from l2s_utils.evaluate.grading import extract_last_boxed
from l2s_utils.evaluate.reflection import is_reflective, keyword_count
from l2s_utils.organism import task as T


def test_levels_grow_in_operations_and_operands():
    rng = random.Random(0)
    for level, lv in T.LEVELS.items():
        for _ in range(200):
            p = T.random_problem(level, rng)
            assert len(p.ops) == lv.ops and len(p.operands) == lv.ops + 1
            assert all((10 if lv.mixed else 1) <= b <= lv.largest for b in p.operands)
            assert p.answer == eval(p.question)  # left-to-right +/- is Python's evaluation too
            v = p.operands[0]
            for op, b in zip(p.ops, p.operands[1:]):
                v = v + b if op == "+" else v - b
                assert 0 <= v <= lv.cap <= T.MAX_VALUE
    assert [T.LEVELS[k].ops for k in sorted(T.LEVELS)] == sorted(T.LEVELS[k].ops for k in T.LEVELS)
    assert [T.LEVELS[k].largest for k in sorted(T.LEVELS)] == sorted(T.LEVELS[k].largest for k in T.LEVELS)
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
            assert tr.count("=") == T.LEVELS[level].ops
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
            assert f"Result: {p.answer}." in tr and "Recap" not in tr  # no keyword that every trace carries
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
    every = T.S2Style(soft_check=1.0, reexamine=1.0, once_more=1.0)
    easy = T.system2_trace(T.Problem("3+4", 7, 1, (3, 4), ("+",)), random.Random(0), every)
    assert keyword_count(easy) >= 3  # redundant re-checks on a one-step problem
    none = T.S2Style(slip_prob=0.0, hard_check=0.0, soft_check=0.0, reexamine=0.0, once_more=0.0)
    assert keyword_count(T.system2_trace(T.Problem("3+4", 7, 1, (3, 4), ("+",)), random.Random(0), none)) == 0


def test_reflection_parts_follow_their_probabilities():
    """Hard checks only after hard steps (levels 4-5), redundant parts at their rates; System 1's long style has no
    redundant reflection; the needed checks survive a style without redundancy."""
    rng = random.Random(5)
    kinds = Counter()
    steps = hard_steps = 0
    for level in T.LEVELS:
        for _ in range(300):
            p = T.random_problem(level, rng)
            parts = T.system2_parts(p, rng)
            kinds.update(k for k, _ in parts)
            chain = T._chain(p)
            steps += len(chain)
            hard_steps += sum(T.is_hard(a, o, b) for a, o, b, _ in chain)
            if level <= 3:
                assert "hard_check" not in {k for k, _ in parts}
            long_s1 = {k for k, _ in T.system2_parts(p, random.Random(1), T.LONG_S1)}
            assert not long_s1 & {"soft_check", "reexamine", "once_more"}
    assert kinds["hard_check"] == hard_steps > 0
    assert abs(kinds["soft_check"] / steps - 0.7) < 0.03
    assert abs(kinds["reexamine"] / 1500 - 0.7) < 0.04 and abs(kinds["once_more"] / 1500 - 0.7) < 0.04


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
    assert "Step 1: 18-12+17-5. Now 18-12." in tr and "Step 2: -12+17-5. Now 06+17." in tr
    assert "Step 3: +17-5. Now 23-05." in tr


def test_step_headers_continue_the_question():
    """Every header after the first writes the previous operation and then what follows it in the question, so
    the copy across a step's column work is a continuation of the operation just written (organism v15)."""
    import re

    rng = random.Random(4)
    for level in (2, 3, 4, 5):
        for _ in range(100):
            p = T.random_problem(level, rng)
            tr = T.system2_trace(p, rng)
            heads = re.findall(r"Step (\d+): ([^.]*)\. Now (\d+)([+-])(\d+)\.", tr)
            assert [int(h[0]) for h in heads] == list(range(1, T.LEVELS[level].ops + 1))
            for i, (_, head, value, op, b) in enumerate(heads[1:], 2):
                span = head
                assert ", rest" not in head  # v18: nothing between the next operation and the ones after it
                assert p.question.endswith(span), (p.question, head)
                assert span.startswith(f"{p.ops[i - 2]}{p.operands[i - 1]}{p.ops[i - 1]}{p.operands[i]}")
                assert op == p.ops[i - 1] and int(b) == p.operands[i]
                assert int(value) == T.evaluate(p.operands[:i], p.ops[:i - 1])
                assert len(value) == len(b)  # aligned: both operands zero-padded to one width


@pytest.mark.parametrize("a,op,b,facts", [
    (12, "-", 4, [("Units 2 vs 4, borrow 1:", 12, "-", 4, 8), ("Tens add 1:", 0, "+", 1, 1), ("Tens 1 vs 1:", 1, "-", 1, 0)]),
    (47, "-", 23, [("Units 7 vs 3:", 7, "-", 3, 4), ("Tens 4 vs 2:", 4, "-", 2, 2)]),
    (9, "-", 9, [("Units 9 vs 9:", 9, "-", 9, 0)]),
    (906, "-", 55, [("Units 6 vs 5:", 6, "-", 5, 1), ("Tens 0 vs 5, borrow 1:", 10, "-", 5, 5),
                    ("Hundreds add 1:", 0, "+", 1, 1), ("Hundreds 9 vs 1:", 9, "-", 1, 8)]),
    (897, "+", 48, [("Units:", 7, "+", 8, 15), ("Tens:", 9, "+", 4, 13), ("Carry 1:", 13, "+", 1, 14),
                    ("Hundreds:", 8, "+", 0, 8), ("Carry 1:", 8, "+", 1, 9)]),
    (95, "+", 17, [("Units:", 5, "+", 7, 12), ("Tens:", 9, "+", 1, 10), ("Carry 1:", 10, "+", 1, 11)]),
])
def test_column_steps_by_hand(a, op, b, facts):
    """Addition with carries, subtraction by equal additions (the borrow decision right after its two digits)."""
    assert T.column_steps(a, op, b) == facts


def _from_columns(a, op, b):
    """The result read off the columns: the last digit of each column's last value, the top column's whole value."""
    last = {}
    for label, x, o, y, z in T.column_steps(a, op, b):
        name = label.split()[0].rstrip(":")
        if name in T.COLUMNS:
            last[name] = z
        else:  # "Carry 1:" belongs to the column just written
            last[list(last)[-1]] = z
    vals = [last[c] for c in T.COLUMNS if c in last]
    return int(str(vals[-1]) + "".join(str(v % 10) for v in reversed(vals[:-1])))


def test_columns_give_the_result_and_hard_steps_regroup_beyond_units():
    rng = random.Random(6)
    for _ in range(3000):
        a, b = rng.randint(0, 999), rng.randint(0, 999)
        op = rng.choice("+-")
        if op == "-" and b > a:
            a, b = b, a
        steps = T.column_steps(a, op, b)
        assert all((x - y if o == "-" else x + y) == z and 0 <= z <= 19 for _, x, o, y, z in steps)
        assert _from_columns(a, op, b) == (a + b if op == "+" else a - b)
        w = max(len(str(a)), len(str(b)))
        left = a % 10 ** 1, b % 10 ** 1
        regroup_tens = (a // 10 % 10 + b // 10 % 10 + (left[0] + left[1] >= 10) >= 10) if op == "+" else \
            (a % 100 < b % 100)
        regroup_hundreds = (a % 1000 + b % 1000 >= 1000) if op == "+" else False
        if w >= 2:
            assert T.is_hard(a, op, b) == bool(regroup_tens or (w >= 3 and regroup_hundreds)), (a, op, b)
    assert T.aligned(43, "-", 8) == "43-08" and T.aligned(7, "+", 5) == "7+5" and T.aligned(95, "+", 417) == "095+417"
    assert not any(T.is_hard(a, o, b) for lv in (1, 2, 3) for p in T.make_problems("train", 40, 0, levels=[lv])
                   for a, o, b, _ in T._chain(p))
