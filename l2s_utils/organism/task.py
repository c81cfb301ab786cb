"""The model organism's task: integer arithmetic chains with difficulty levels 1..5, and trace writers.

A problem is a left-to-right chain of additions and subtractions, e.g. ``37+48-15``; every
intermediate result stays in [0, 99]. The level sets the number of operations and the operand range:

    level  operations  operands
      1        1         1..9
      2        2         1..19
      3        3         1..39
      4        4         1..69
      5        5         1..99

Splits are disjoint by construction: a problem's split is a hash of its question text (70% train,
10% calibration, 20% test), so no test question is ever trained on.

Two writers produce the responses that the two models imitate:
- System 1 (Qwen2.5-Math-like): one step per operation, then the boxed answer.
  ``37+48=85. 85-15=70. The answer is \\boxed{70}.``
- System 2 (R1-Distill-like): a ``<think>`` block that works every operation out in columns (units,
  carry or borrow, tens) so that each sub-step is a single-digit fact, carries the state in each
  step's header ("Step 2: +11+18, rest +29-5. Now 17+18."), verifies every step with the paper's
  reflection keywords, sometimes slips and corrects itself ("Wait, that is wrong."), re-checks even
  easy problems (overthinking), recaps, then a short answer.

Why this gives the paper's premise in miniature: System 1 must do a whole two-digit operation in one
step, which a tiny model does not learn within the training budget, while System 2's column steps
need only the single-digit facts that it does learn -- longer thinking buys accuracy on hard problems.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass, field

LEVELS: dict[int, tuple[int, int]] = {1: (1, 9), 2: (2, 19), 3: (3, 39), 4: (4, 69), 5: (5, 99)}
MAX_VALUE = 99
SPLITS = {"train": (0, 70), "calib": (70, 80), "test": (80, 100)}
SLIP_MARK = "Wait, that is wrong."
EASY_LEVELS = tuple(sorted(LEVELS))[:2]   # the two easiest levels (adaptive length: shortening on easy vs hard)
HARD_LEVELS = tuple(sorted(LEVELS))[-2:]  # the two hardest levels (the premise's accuracy gap)


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


def random_problem(level: int, rng: random.Random) -> Problem:
    if level not in LEVELS:
        raise ValueError(f"level must be one of {sorted(LEVELS)}, got {level!r}")
    n_ops, hi = LEVELS[level]
    value = rng.randint(1, hi)
    operands, ops = [value], []
    for _ in range(n_ops):
        while True:
            op = rng.choice("+-")
            b = rng.randint(1, hi)
            nxt = value + b if op == "+" else value - b
            if 0 <= nxt <= MAX_VALUE:
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


@dataclass
class S2Style:
    """Knobs of the System 2 writer (all visible, all seeded)."""

    slip_prob: float = 0.05        # chance that a single-digit fact is first written wrong, then corrected
    check_prob: float = 1.0        # chance that a step is verified by the inverse operation
    extra_check_easy: bool = True  # overthinking: re-check again on 1-2 operation problems
    checks: tuple[str, ...] = field(default=(
        "Wait, let me double-check: {c}{inv}{b}={a}.",
        "Let me verify: {c}{inv}{b}={a}.",
        "Let me re-examine: {c}{inv}{b}={a}.",
        "Wait, let me check: {c}{inv}{b}={a}.",
    ))


def _column_steps(a: int, op: str, b: int) -> list[tuple[str, int, str, int, int]]:
    """Column arithmetic for a +/- b (result in 0..99) as single-digit facts (x up to 18 after a borrow).

    Returns (label, x, op, y, z) sub-steps meaning "label x op y = z", in writing order.
    """
    au, at, bu, bt = a % 10, a // 10, b % 10, b // 10
    out = []
    if op == "+":
        s = au + bu
        out.append(("Units:", au, "+", bu, s))
        if bt or s >= 10:
            if bt:
                out.append(("Tens:", at, "+", bt, at + bt))
            if s >= 10:
                out.append(("Carry 1:", at + bt, "+", 1, at + bt + 1))
    else:
        # the borrow decision is written right after the two units digits it depends on ("Units 2 vs 4, borrow 1:
        # 12-4=8."), so it is a lookup on two adjacent tokens, like a fact (v15 wrote "Units, borrow 1:" and the
        # 0.74M scale decided wrongly on ~10% of subtractions: "Units: 2-4=9. So 12-4=19.")
        if au >= bu:
            out.append((f"Units {au} vs {bu}:", au, "-", bu, au - bu))
            top = at
        else:
            out.append((f"Units {au} vs {bu}, borrow 1:", au + 10, "-", bu, au + 10 - bu))
            out.append(("Tens:", at, "-", 1, at - 1))
            top = at - 1
        if bt:
            out.append(("Tens:" if au >= bu else "Then", top, "-", bt, top - bt))
    return out


def _fact(x: int, op: str, y: int, z: int, rng: random.Random, slip_prob: float) -> str:
    if rng.random() < slip_prob:
        wrong = z + rng.choice([-1, 1])
        if wrong >= 0:
            return f"{x}{op}{y}={wrong}. {SLIP_MARK} {x}{op}{y}={z}."
    return f"{x}{op}{y}={z}."


def system2_trace(p: Problem, rng: random.Random, style: S2Style | None = None) -> str:
    """Long, reflective chain of thought inside <think>...</think>, then a short boxed answer.

    Each step's header carries the state. Step 1 copies the question ("Step 1: 6+11, rest +18+29-5.");
    every later header writes the previous operation, then the next one and the operations still to do,
    then the operation with the running value ("Step 2: +11+18, rest +29-5. Now 17+18."). So every copy
    that reaches back past a step's column work *continues the operation just written*, and every
    occurrence of that operation in the context continues the same way (the question, the earlier
    headers): the one copy that small transformers learn reliably (an induction continuation). The
    v14 header ("Step 2: 17+18, rest +29-5.") fetched the operand from after the latest ``rest``
    instead, by position; on some training draws that lookup was never learned for the first digit or
    for the second one (teacher-forced copy accuracy 6-35% against ~100%, measured on scale s), and
    System 2 then failed at every level above 1 (v14 seed 0 rebuilt on a second machine: 31.6%).
    """
    style = style or S2Style()
    lines, value, prev = [], p.operands[0], ""
    for i, (op, b) in enumerate(zip(p.ops, p.operands[1:]), 1):
        nxt = value + b if op == "+" else value - b
        rest = remaining(p, i)
        tail = f", rest {rest}." if rest else "."
        if i == 1:
            parts = [f"Step 1: {value}{op}{b}{tail}"]
        else:
            parts = [f"Step {i}: {prev}{op}{b}{tail} Now {value}{op}{b}."]
        for label, x, o, y, z in _column_steps(value, op, b):
            parts.append(f"{label} {_fact(x, o, y, z, rng, style.slip_prob)}")
        parts.append(f"So {value}{op}{b}={nxt}.")
        if rng.random() < style.check_prob:
            inv = "-" if op == "+" else "+"
            parts.append(rng.choice(style.checks).format(c=nxt, inv=inv, b=b, a=value))
        lines.append(" ".join(parts))
        prev, value = f"{op}{b}", nxt
    lines.append(f"Recap: the result is {p.answer}.")
    if style.extra_check_easy and len(p.ops) <= 2:
        x, o, y, z = _chain(p)[-1]
        lines.append(f"Let me verify once more: {z}{'-' if o == '+' else '+'}{y}={x}. Yes.")
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
