"""The model organism's task: integer arithmetic chains with difficulty levels 1..5, and trace writers.

A problem is a left-to-right chain of additions and subtractions, e.g. ``37+48-15``; every intermediate
result stays in [0, cap]. The level sets the number of operations, the operand range and the cap
(organism v17: two harder levels with three-digit numbers, so that System 2 has headroom; v18: four operations
at level 4, where v17 had three):

    level  operations  operands          values
      1        1         1..9              0..99
      2        2         1..29             0..99
      3        3         1..99             0..99
      4        4         1..199            0..499
      5        5         10..999 (half 2-digit, half 3-digit)   0..999

Splits are disjoint by construction: a problem's split is a hash of its question text (70% train,
10% calibration, 20% test), so no test question is ever trained on.

Two writers produce the responses that the two models imitate:
- System 1 (Qwen2.5-Math-like): one step per operation, then the boxed answer.
  ``37+48=85. 85-15=70. The answer is \\boxed{70}.``
- System 2 (R1-Distill-like): a ``<think>`` block that works every operation out in columns (units, tens,
  hundreds; carries; subtraction by *equal additions*: a borrow adds 1 to the next digit of the number
  subtracted) so that each sub-step is a single-digit fact, carries the state in each step's header with
  both operands zero-padded to the same width ("Step 2: +11+18+29-5. Now 17+18."; "Now 043-008."), then
  **reflects the way long-CoT models overthink** (:class:`S2Style`, every part seeded):

  - a *needed* check after every hard step (a carry or borrow beyond the units column; levels 4-5 only),
    probability ``hard_check``: "Wait, let me check: 722-285=437. Yes.";
  - *redundant* confirmatory checks after any step (after a hard one, a second check), probability ``soft_check``;
  - a re-examination of the last step (its column work written again), probability ``reexamine``;
  - a final re-verification, probability ``once_more``, on every level (more than easy problems need);
  - slips and their corrections ("7+8=16. Wait, that is wrong. 7+8=15."), probability ``slip_prob`` per fact.

  The redundant parts are optional and variable across training traces, as real overthinking is; what a merge
  can drop while keeping the reasoning. The final line is "Result: X." (v16 wrote "Recap:", a reflection
  keyword that made every long response "reflective" whatever it checked).

Why this gives the paper's premise in miniature: System 1 must do a whole multi-digit operation in one
step, which a tiny model does not learn within the training budget, while System 2's column steps need
only the single-digit facts that it does learn -- longer thinking buys accuracy on hard problems.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Level:
    """One difficulty level: ``ops`` operations, operands up to ``largest``, every value in [0, ``cap``];
    ``mixed``: operands half two-digit, half three-digit (10..99 or 100..``largest``)."""

    ops: int
    largest: int
    cap: int
    mixed: bool = False


LEVELS: dict[int, Level] = {1: Level(1, 9, 99), 2: Level(2, 29, 99), 3: Level(3, 99, 99),
                            4: Level(4, 199, 499), 5: Level(5, 999, 999, mixed=True)}
MAX_VALUE = max(lv.cap for lv in LEVELS.values())
SPLITS = {"train": (0, 70), "calib": (70, 80), "test": (80, 100)}
SLIP_MARK = "Wait, that is wrong."
EASY_LEVELS = tuple(sorted(LEVELS))[:2]   # the two easiest levels (adaptive length: shortening on easy vs hard)
HARD_LEVELS = tuple(sorted(LEVELS))[-2:]  # the two hardest levels (the premise's accuracy gap)
COLUMNS = ("Units", "Tens", "Hundreds")


@dataclass(frozen=True)
class Problem:
    question: str          # e.g. "37+48-15"
    answer: int
    level: int
    operands: tuple[int, ...]
    ops: tuple[str, ...]   # "+" or "-"

    @property
    def id(self) -> str:
        return f"toy-L{self.level}-{self.question}"


def levels_table():
    """The levels as a table (level, operations, operands, values up to), for the book."""
    import pandas as pd

    return pd.DataFrame([{"level": k, "operations": lv.ops,
                          "operands": f"10..99 or 100..{lv.largest}" if lv.mixed else f"1..{lv.largest}",
                          "values up to": lv.cap} for k, lv in LEVELS.items()])


def split_of(question: str) -> str:
    h = int.from_bytes(hashlib.sha256(question.encode()).digest()[:4], "little") % 100
    for name, (lo, hi) in SPLITS.items():
        if lo <= h < hi:
            return name
    raise AssertionError


def evaluate(operands: tuple[int, ...], ops: tuple[str, ...]) -> int:
    value = operands[0]
    for op, b in zip(ops, operands[1:]):
        value = value + b if op == "+" else value - b
    return value


def _operand(lv: Level, rng: random.Random) -> int:
    if lv.mixed:
        return rng.randint(10, 99) if rng.random() < 0.5 else rng.randint(100, lv.largest)
    return rng.randint(1, lv.largest)


def random_problem(level: int, rng: random.Random) -> Problem:
    if level not in LEVELS:
        raise ValueError(f"level must be one of {sorted(LEVELS)}, got {level!r}")
    lv = LEVELS[level]
    value = _operand(lv, rng)
    operands, ops = [value], []
    for _ in range(lv.ops):
        while True:
            op = rng.choice("+-")
            b = _operand(lv, rng)
            nxt = value + b if op == "+" else value - b
            if 0 <= nxt <= lv.cap:
                break
        operands.append(b)
        ops.append(op)
        value = nxt
    q = str(operands[0]) + "".join(f"{o}{b}" for o, b in zip(ops, operands[1:]))
    return Problem(q, value, level, tuple(operands), tuple(ops))


def train_problem(level: int, rng: random.Random) -> Problem:
    """A random problem of ``level`` from the train split (redrawn until its question hashes to train).

    Everything the organism is trained on (tokenizer corpus, pretraining documents, SFT traces) comes
    from the train split, so no calibration or test question is ever seen with its answer. (Single-digit
    facts such as "3+4=7." are pretraining knowledge, as for any base model; a level-1 test question
    "3+4" is never seen in the prompt format with a worked solution.)
    """
    while True:
        p = random_problem(level, rng)
        if split_of(p.question) == "train":
            return p


def make_problems(split: str, n_per_level: int, seed: int, levels=tuple(LEVELS), unique: bool = True) -> list[Problem]:
    """``n_per_level`` problems per level from ``split`` (train / calib / test), deterministic in ``seed``.

    With ``unique`` (default) no question repeats; a level with fewer distinct questions in the split
    than asked for (level 1 has ~130 in all) returns all it has.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    rng = random.Random(f"{seed}-{split}")
    out: list[Problem] = []
    for level in levels:
        seen: set[str] = set()
        got, tries = 0, 0
        while got < n_per_level and tries < 200 * n_per_level + 5000:
            tries += 1
            p = random_problem(level, rng)
            if split_of(p.question) != split or (unique and p.question in seen):
                continue
            seen.add(p.question)
            out.append(p)
            got += 1
    return out


# ---------------------------------------------------------------------------------------------
# Trace writers
# ---------------------------------------------------------------------------------------------


def system1_trace(p: Problem) -> str:
    """Short chain of thought: one step per operation, then the boxed answer."""
    steps, value = [], p.operands[0]
    for op, b in zip(p.ops, p.operands[1:]):
        nxt = value + b if op == "+" else value - b
        steps.append(f"{value}{op}{b}={nxt}.")
        value = nxt
    return " ".join(steps) + f" The answer is \\boxed{{{p.answer}}}."


CHECKS = (
    "Wait, let me double-check: {c}{inv}{b}={a}.",
    "Let me verify: {c}{inv}{b}={a}.",
    "Let me check: {c}{inv}{b}={a}.",
    "Wait, let me check again: {c}{inv}{b}={a}.",
)


@dataclass(frozen=True)
class S2Style:
    """Knobs of the System 2 writer (all visible, all seeded): the probability of each part of a trace.

    ``hard_check``: the check after a hard step (a carry or borrow beyond the units column, :func:`is_hard`);
    ``soft_check``: a redundant check after any step (v17h: only after the steps that are not hard; the merges
    then shortened the hard levels by ~24% only); ``reexamine``: the last step's column work written
    again; ``once_more``: a final re-verification; ``slip_prob``: a single-digit fact first written wrong,
    then corrected."""

    slip_prob: float = 0.05
    hard_check: float = 1.0
    soft_check: float = 0.7
    reexamine: float = 0.7
    once_more: float = 0.7
    checks: tuple[str, ...] = field(default=CHECKS)


NO_SLIPS = S2Style(slip_prob=0.0)
# System 1's long traces: no slips, the needed checks half the time, no redundant reflection (a concise long style)
LONG_S1 = S2Style(slip_prob=0.0, hard_check=0.5, soft_check=0.0, reexamine=0.0, once_more=0.0)
# the pretraining corpus's long solutions: no slips, some of every kind of reflection (a base model has seen it all)
LONG_BASE = S2Style(slip_prob=0.0, hard_check=0.5, soft_check=0.3, reexamine=0.3, once_more=0.3)


def digits(n: int, width: int) -> list[int]:
    """The ``width`` lowest decimal digits of ``n``, units first."""
    return [(n // 10 ** i) % 10 for i in range(width)]


def width_of(a: int, b: int) -> int:
    return max(len(str(a)), len(str(b)))


def aligned(a: int, op: str, b: int) -> str:
    """``a op b`` with both operands zero-padded to the same width (``aligned(43, "-", 8) == "43-08"``), so that
    the digits of a column sit at the same distance from the operator in both numbers."""
    w = width_of(a, b)
    return f"{a:0{w}d}{op}{b:0{w}d}"


def column_steps(a: int, op: str, b: int) -> list[tuple[str, int, str, int, int]]:
    """Column arithmetic for ``a op b`` (result >= 0) as single-digit facts, in writing order.

    Returns (label, x, op, y, z) sub-steps meaning "label x op y = z". Addition: "Units: 7+8=15." per column,
    then "Carry 1: 7+1=8." in the next column when the one before carried. Subtraction by equal additions: the
    decision to borrow is written right after the two digits it depends on ("Units 2 vs 4, borrow 1: 12-4=8."),
    and a borrow adds 1 to the next digit subtracted ("Tens add 1: 2+1=3." then "Tens 4 vs 3: 4-3=1."). Every
    column of the wider operand is written, so the result's digits are the last digit of each column's last
    value (the top column's whole value for an addition that carries out of it).
    """
    w = width_of(a, b)
    da, db = digits(a, w), digits(b, w)
    out = []
    carry = 0
    for i in range(w):
        x, y, name = da[i], db[i], COLUMNS[i]
        if op == "+":
            out.append((f"{name}:", x, "+", y, x + y))
            if carry:
                out.append(("Carry 1:", x + y, "+", 1, x + y + 1))
            carry = int(x + y + carry >= 10)
        else:
            if carry:
                out.append((f"{name} add 1:", y, "+", 1, y + 1))
                y += 1
            if x >= y:
                out.append((f"{name} {x} vs {y}:", x, "-", y, x - y))
                carry = 0
            else:
                out.append((f"{name} {x} vs {y}, borrow 1:", x + 10, "-", y, x + 10 - y))
                carry = 1
    return out


def is_hard(a: int, op: str, b: int) -> bool:
    """A step that carries or borrows beyond the units column (the tens or hundreds column regroups). With values
    up to 99 (levels 1-3) no step is hard; levels 4-5 have hard steps."""
    w = width_of(a, b)
    da, db = digits(a, w), digits(b, w)
    carry = 0
    for i in range(w):
        if op == "+":
            nxt = int(da[i] + db[i] + carry >= 10)
        else:
            nxt = int(da[i] < db[i] + carry)
        if nxt and i >= 1:
            return True
        carry = nxt
    return False


def _fact(x: int, op: str, y: int, z: int, rng: random.Random, slip_prob: float) -> str:
    if rng.random() < slip_prob:
        wrong = z + rng.choice([-1, 1])
        if wrong >= 0:
            return f"{x}{op}{y}={wrong}. {SLIP_MARK} {x}{op}{y}={z}."
    return f"{x}{op}{y}={z}."


def _columns(a: int, op: str, b: int, rng: random.Random, slip_prob: float) -> list[str]:
    return [f"{label} {_fact(x, o, y, z, rng, slip_prob)}" for label, x, o, y, z in column_steps(a, op, b)]


def system2_parts(p: Problem, rng: random.Random, style: S2Style | None = None) -> list[tuple[str, str]]:
    """The thinking of System 2 as (kind, text) parts, in order; kinds: ``header``, ``columns``, ``result``,
    ``hard_check``, ``soft_check``, ``reexamine``, ``once_more``, ``final``. :func:`system2_trace` joins them.

    Each step's header carries the state. Step 1 copies the question ("Step 1: 6+11+18+29-5."); every
    later header writes the previous operation, then the next one and the operations still to do, then the
    operation with the running value, both operands zero-padded to one width ("Step 2: +11+18+29-5.
    Now 17+18."). So every copy that reaches back past a step's column work continues the operation just
    written (v15), and the digits of a column sit at fixed distances from the operator (v17: without the
    padding, the 0.4M model fetched the wrong digit of unequal-length operands on ~30% of level-3 steps).
    v18: no word between the next operation and the ones after it (v17 wrote "Step 2: +11+18, rest +29-5."; the
    sign after "rest" was copied from the previous header's "rest +..." on weak draws, and that one flipped sign
    made 16 of the 17 wrong level-3 answers of the shipped v17 System 2, seed 0).
    """
    style = style or S2Style()
    parts: list[tuple[str, str]] = []
    value, prev = p.operands[0], ""
    for i, (op, b) in enumerate(zip(p.ops, p.operands[1:]), 1):
        nxt = value + b if op == "+" else value - b
        now = aligned(value, op, b)
        head = f"Step {i}: {prev or value}{op}{b}{remaining(p, i)}. Now {now}."
        parts.append(("header", head))
        parts.append(("columns", " ".join(_columns(value, op, b, rng, style.slip_prob))))
        parts.append(("result", f"So {value}{op}{b}={nxt}."))
        inv = "-" if op == "+" else "+"
        if is_hard(value, op, b) and rng.random() < style.hard_check:
            parts.append(("hard_check", f"Wait, let me check: {nxt}{inv}{b}={value}. Yes."))
        if rng.random() < style.soft_check:  # after any step, a hard one too (then a second, redundant check)
            parts.append(("soft_check", rng.choice(style.checks).format(c=nxt, inv=inv, b=b, a=value)))
        prev, value = f"{op}{b}", nxt
    x, o, y, z = _chain(p)[-1]
    if rng.random() < style.reexamine:
        cols = " ".join(_columns(x, o, y, rng, 0.0))
        parts.append(("reexamine", f"Let me re-examine the last step: {aligned(x, o, y)}. {cols} So {x}{o}{y}={z}."))
    parts.append(("final", f"Result: {p.answer}."))
    if rng.random() < style.once_more:
        parts.append(("once_more", f"Let me verify once more: {z}{'-' if o == '+' else '+'}{y}={x}. Yes."))
    return parts


def system2_trace(p: Problem, rng: random.Random, style: S2Style | None = None) -> str:
    """Long, reflective chain of thought inside <think>...</think>, then a short boxed answer: the parts of
    :func:`system2_parts`, one step (header, columns, result, its check) per line."""
    lines: list[str] = []
    for kind, text in system2_parts(p, rng, style):
        if kind in ("header", "reexamine", "final"):
            lines.append(text)
        else:
            lines[-1] += " " + text
    body = "\n".join(lines)
    return f"<think>\n{body}\n</think>\nThe answer is \\boxed{{{p.answer}}}."


def remaining(p: Problem, done: int) -> str:
    """The operations left after the first ``done`` ones, e.g. ``remaining(18-12+17-5, 1) == "+17-5"``."""
    return "".join(f"{o}{x}" for o, x in zip(p.ops[done:], p.operands[done + 1:]))


def _chain(p: Problem) -> list[tuple[int, str, int, int]]:
    out, value = [], p.operands[0]
    for op, b in zip(p.ops, p.operands[1:]):
        nxt = value + b if op == "+" else value - b
        out.append((value, op, b, nxt))
        value = nxt
    return out


@dataclass(frozen=True)
class Triple:
    """An aligned calibration example: the question with its short (System 1) and long (System 2) answer."""

    problem: Problem
    short: str
    long: str


def calibration_triples(n: int, seed: int) -> list[Triple]:
    """``n`` aligned (question, short, long) triples from the calibration split, levels cycled 1..5."""
    per_level = -(-n // len(LEVELS))
    by_level: dict[int, list[Problem]] = {}
    for p in make_problems("calib", per_level, seed):
        by_level.setdefault(p.level, []).append(p)
    probs = [ps[i] for i in range(per_level) for ps in by_level.values() if i < len(ps)]  # interleave levels
    rng = random.Random(f"{seed}-calib-traces")
    return [Triple(p, system1_trace(p), system2_trace(p, rng)) for p in probs[:n]]


EQUATION = re.compile(r"(?<![\d+-])(\d+)([+-])(\d+)=(\d+)")  # one written fact or step: a op b = c
FACT = re.compile(EQUATION.pattern + r"\.")
SLIP = re.compile(EQUATION.pattern + r"\. " + re.escape(SLIP_MARK) + r" (\d+)([+-])(\d+)=(\d+)\.")  # slip, then its fix


def apply(a: int, op: str, b: int) -> int:
    """The value of one written fact ``a op b``."""
    return a + b if op == "+" else a - b


def is_correct(pred: str | None, gold: int | str) -> bool:
    """The toy task's grading rule: the extracted answer (the last boxed content) is exactly the gold integer."""
    if pred is None:
        return False
    try:
        return int(pred.strip().replace(" ", "")) == int(gold)
    except ValueError:
        return False


def check_arithmetic(trace: str) -> list[str]:
    """Every wrong equation in ``trace`` that is NOT immediately followed by the slip mark and its fix.

    Used by the tests: a System 1 trace has no wrong equation, a System 2 trace only marked slips.
    """
    problems = []
    for m in EQUATION.finditer(trace):
        a, op, b, c = int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))
        if (a + b if op == "+" else a - b) == c:
            continue
        rest = trace[m.end():]
        fix = f"{a}{op}{b}={a + b if op == '+' else a - b}."
        if not rest.startswith(f". {SLIP_MARK} {fix}"):
            problems.append(m.group(0))
    return problems
