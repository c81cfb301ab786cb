"""Answer extraction and equivalence for math benchmarks: two named grading protocols.

- ``strict`` (:data:`DEFAULT_PROTOCOL`, for new results): see :mod:`l2s_utils.evaluate.strict`;
- ``qwen-toolkit``: the Qwen2.5-Math toolkit's rules, which the paper used (compare with the paper's
  numbers under this one). It is this module's :func:`extract_answer` + :func:`grade_batch`, below.

:func:`grade_responses` grades whole responses under either protocol.

The ``qwen-toolkit`` protocol. Extraction (:func:`extract_answer`), in the Qwen2.5-Math toolkit's priority order:
  1. Minerva's "final answer is $X$. I hope"      2. the LAST ``\\boxed{}`` (brace-matched)
  3. "he answer is X"                            4. "final answer is X"
  5. "答案是X"                                     6. the last number in the text

Equivalence (:func:`is_equiv`), the first that succeeds wins:
  a. normalised strings are equal (:func:`normalize`, our re-implementation of the toolkit's
     ``strip_string``: ``\\left``/``\\right``, ``\\!``, ``$``, ``\\text{}``, degrees, ``%``, ``\\dfrac``,
     ``x=`` prefixes, ``\\frac12``, ``a/b``, ``\\sqrt2``, spaces, trailing ``.0``);
  b. both are numbers and equal up to rel. 1e-4 (also gold/100 and gold*100, as the toolkit);
  c. ``math_verify.verify(parse(gold), parse(pred))`` (gold first; bare LaTeX is wrapped in ``$...$``),
     for intervals, tuples, sets, symbolic expressions, then constants equal up to rel. 1e-4
     (:func:`l2s_utils.evaluate.verify.equal`, shared with the ``strict`` protocol).

The toy task (the organism) is graded by :func:`grade_toy`: the last boxed content must be exactly
the gold integer.

math-verify's own timeouts use ``signal.alarm``, which only works in a main thread, so
:func:`grade_batch` runs it in worker *processes* (each task runs in a worker's main thread) with
math-verify's timeouts on; a timeout counts as wrong, as in the toolkit.
"""

from __future__ import annotations

import math
import re
from typing import Sequence

from . import verify as V

_NUM = re.compile(r"-?\d*\.?\d+")

PROTOCOLS = ("strict", "qwen-toolkit")
DEFAULT_PROTOCOL = "strict"


def check_protocol(protocol: str) -> str:
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown grading protocol {protocol!r}; use one of {', '.join(PROTOCOLS)}")
    return protocol


def grade_responses(responses: Sequence[str], golds: Sequence[str], protocol: str = DEFAULT_PROTOCOL, *,
                    workers: int = 2, timeout: int = 5) -> tuple[list[str | None], list[bool]]:
    """(extracted answers, verdicts) for whole responses under a named protocol."""
    check_protocol(protocol)
    if protocol == "qwen-toolkit":
        preds = [extract_answer(r) for r in responses]
        return preds, grade_batch(preds, [str(g) for g in golds], workers=workers, timeout=timeout)
    from . import strict

    return strict.grade(responses, [str(g) for g in golds], workers=workers, timeout=timeout)


def grade_answers(preds: Sequence[str | None], golds: Sequence[str], protocol: str = DEFAULT_PROTOCOL, *,
                  workers: int = 2, timeout: int = 5) -> list[bool]:
    """Verdicts for already extracted answers (equivalence only) under a named protocol."""
    check_protocol(protocol)
    if protocol == "qwen-toolkit":
        return grade_batch(preds, [str(g) for g in golds], workers=workers, timeout=timeout)
    from . import strict

    return strict.grade_answers(preds, [str(g) for g in golds], workers=workers, timeout=timeout)


def extract_last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) with brace matching; None if absent or unclosed."""
    starts = [m.end() for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text)]
    for start in reversed(starts):
        depth, i = 1, start
        while i < len(text):
            c = text[i]
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    return text[start:i].strip()
            i += 1
    m = re.findall(r"\\boxed ([^\s$]+)", text)
    return m[-1] if m else None


def grade_toy(response: str, gold: int) -> tuple[str | None, bool]:
    """The toy task: the last boxed content must be exactly the gold integer."""
    from ..organism.task import is_correct

    pred = extract_last_boxed(response)
    return pred, is_correct(pred, gold)


def extract_answer(text: str) -> str | None:
    """The predicted answer of a response (see the module docstring for the order)."""
    m = re.findall(r"final answer is \$(.+?)\$\. I hope", text)
    if m:
        return m[-1].strip()
    if "boxed" in text or "fbox" in text:
        b = extract_last_boxed(text)
        if b is not None:
            return b
    for pat in (r"he answer is[:\s]*(.+)", r"final answer is[:\s]*(.+)", r"答案是[:：\s]*(.+)"):
        m = re.findall(pat, text)
        if m:
            ans = m[-1].strip().split("\n")[0].strip()
            return ans.rstrip(".").strip().strip("$").strip() or None
    nums = _NUM.findall(text.replace(",", ""))
    return nums[-1] if nums else None


_UNIT_WORDS = r"(?:degrees?|cm|m|km|inches|inch|feet|foot|ft|units?|meters?|dollars?|cents?|hours?|minutes?|seconds?|days?|sq)"


def _fix_fracs(s: str) -> str:
    # \frac12 -> \frac{1}{2}, \frac1{2} -> \frac{1}{2}, \frac{1}2 -> \frac{1}{2}
    s = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\frac(\d)\{", r"\\frac{\1}{", s)
    s = re.sub(r"\\frac\{([^{}]*)\}(\d)", r"\\frac{\1}{\2}", s)
    return s


def normalize(ans: str) -> str:
    """A canonical string for an answer (our version of the toolkit's ``strip_string``)."""
    s = str(ans).strip().replace("\n", "").rstrip(".").strip()
    s = s.replace("\\!", "").replace("\\,", "").replace("\\;", "").replace("\\ ", "")
    s = s.replace("\\left", "").replace("\\right", "")
    s = s.replace("tfrac", "frac").replace("dfrac", "frac")
    s = re.sub(r"\\text\{\s*([^{}]*)\}", r"\1", s)
    s = re.sub(r"\\mbox\{\s*([^{}]*)\}", r"\1", s)
    s = s.replace("^\\circ", "").replace("^{\\circ}", "").replace("°", "")
    s = s.replace("\\$", "").replace("$", "").replace("\\%", "").replace("%", "")
    s = re.sub(rf"(\d)\s*{_UNIT_WORDS}\b\.?$", r"\1", s)
    s = re.sub(r"^[a-zA-Z]\s*=\s*", "", s)  # x = 5 -> 5
    s = s.replace(" ", "")
    s = _fix_fracs(s)
    s = re.sub(r"\\sqrt(\w)", r"\\sqrt{\1}", s)
    if re.fullmatch(r"-?\d+/\d+", s):
        a, b = s.split("/")
        s = f"\\frac{{{a}}}{{{b}}}"
    s = re.sub(r"(\d),(\d{3})(?!\d)", r"\1\2", s)  # 1,000 -> 1000
    s = re.sub(r"^(-?\d+)\.0+$", r"\1", s)
    s = re.sub(r"^\.(\d)", r"0.\1", s)
    if s.startswith("{") and s.endswith("}") and s.count("{") == 1:
        s = s[1:-1]
    return s


def _to_number(s: str) -> float | None:
    s = s.replace(",", "")
    m = re.fullmatch(r"(-?)\\frac\{(-?\d+(?:\.\d+)?)\}\{(-?\d+(?:\.\d+)?)\}", s)
    if m:
        den = float(m.group(3))
        return None if den == 0 else (-1 if m.group(1) else 1) * float(m.group(2)) / den
    try:
        return float(s)
    except ValueError:
        return None


_ABS_TOL = 1e-9  # numbers also match when closer than this (the toolkit's numeric comparison: rel. 1e-4)


def numbers_equal(a: float, b: float, rel: float = 1e-4) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=_ABS_TOL)


def fast_equiv(pred: str | None, gold: str) -> bool | None:
    """True/False when decidable without sympy, None when math-verify should decide."""
    if pred is None or not str(pred).strip():
        return False
    p, g = normalize(pred), normalize(gold)
    if p == g or p.lower() == g.lower():
        return True
    pn, gn = _to_number(p), _to_number(g)
    if pn is not None and gn is not None:
        return any(numbers_equal(pn, x) for x in (gn, gn / 100, gn * 100))
    return None


def is_equiv(pred: str | None, gold: str, timeout: int = 5) -> bool:
    fast = fast_equiv(pred, gold)
    if fast is not None:
        return fast
    return (V.equal(str(pred), gold, timeout, abs_tol=_ABS_TOL)
            or V.equal(normalize(str(pred)), normalize(gold), timeout, abs_tol=_ABS_TOL))


def _grade_chunk(args: tuple[list[tuple[str | None, str]], int]) -> list[bool]:
    pairs, timeout = args
    return [is_equiv(p, g, timeout) for p, g in pairs]


def grade_batch(preds: Sequence[str | None], golds: Sequence[str], *, workers: int = 2, timeout: int = 5,
                chunk: int = 256) -> list[bool]:
    """Grade many (prediction, gold) pairs; undecided pairs go to math-verify in worker processes."""
    if len(preds) != len(golds):
        raise ValueError("preds and golds differ in length")
    out: list[bool | None] = [fast_equiv(p, g) for p, g in zip(preds, golds)]
    todo = [i for i, v in enumerate(out) if v is None]
    if todo:
        pairs = [(preds[i], golds[i]) for i in todo]
        chunks = [(pairs[i:i + chunk], timeout) for i in range(0, len(pairs), chunk)]
        results = V.in_workers(_grade_chunk, chunks, 1 if workers <= 1 or len(pairs) < 32 else workers)
        for i, r in zip(todo, results):
            out[i] = r
    return [bool(v) for v in out]
