"""The ``strict`` grading protocol (the default for new results; ``qwen-toolkit`` is in ``grading.py``).

Extraction (:func:`extract`), on the *final-answer region* only: the text after the last ``</think>``;
a response whose ``<think>`` never closes has no final-answer region (unanswered: it was cut while
thinking, so no number from inside the thinking is taken). In that region, in order:
  1. Minerva's "final answer is $X$. I hope";
  2. the *final* ``\\boxed{}`` group: the last box together with the boxes just before it that are joined
     to it by connectors only (``,``, ``and``, ``or``, ``$``, spaces), e.g. ``\\boxed{-2} and \\boxed{1}``
     gives ``-2, 1``; a box followed by other prose ("wait, no") starts a new group;
  3. "the answer is X" / "final answer is X" / "答案是 X" (the rest of that sentence);
  4. otherwise math-verify's own extraction on the region (never a bare last-number rule).

Equivalence (:func:`equivalent`), on normalised strings (:func:`normalize`):
  - identical normalised strings;
  - structure first: matrices (same shape, cell by cell), intervals and tuples (same brackets, ordered),
    sets ``\\{..\\}`` and bare lists ``a, b, c`` / ``a and b`` (unordered, same length), unions of
    intervals; a list never equals a single number (``1,2,3`` is not ``123``);
  - numbers are exact: integers and fractions compare as rationals (``9999`` is not ``10000``); a written
    decimal is an approximation and matches up to a relative 1e-4 (``0.3333`` is 1/3); thousands separators
    only in well-formed groups without spaces (``7,425,000``; ``32, 349`` is a list); mixed numbers
    (``1\\frac12``, ``1 1/2``); scientific notation;
  - the percent rule (x/100) only when one side carries ``%`` / "percent";
  - words compare case-insensitively (``\\text{}``, ``\\textbf{}``, ``\\mathrm{}`` unwrapped);
  - everything else: math-verify (gold first) on the raw and the normalised strings, in worker processes
    so that its signal-based timeouts work (:mod:`l2s_utils.evaluate.verify`, shared with ``qwen-toolkit``);
    a timeout counts as wrong.

:func:`fast_equivalent` is the same decision without math-verify (``None`` when math-verify must
decide); :func:`grade` runs the fast path in the caller and sends only the undecided pairs to workers.
"""

from __future__ import annotations

import math
import re
import time
from fractions import Fraction
from typing import NamedTuple, Sequence

from . import verify as V

# ---------------------------------------------------------------------------------------------- extraction


def answer_region(text: str) -> str:
    """The text after the last ``</think>``; ``""`` if a ``<think>`` never closes; else the whole text."""
    if "</think>" in text:
        return text.rsplit("</think>", 1)[1]
    if "<think>" in text:
        return ""
    return text


class _Box(NamedTuple):
    start: int
    end: int
    content: str


def boxes(text: str) -> list[_Box]:
    """Every ``\\boxed{..}`` / ``\\fbox{..}`` (brace-matched; unclosed ones are skipped) and ``\\boxed x``."""
    out = []
    for m in re.finditer(r"\\(?:boxed|fbox)\s*(\{)?", text):
        if m.group(1) is None:
            w = re.match(r" ([^\s$]+)", text[m.end():])
            if w:
                out.append(_Box(m.start(), m.end() + w.end(), w.group(1)))
            continue
        depth, i = 1, m.end()
        while i < len(text):
            c = text[i]
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    out.append(_Box(m.start(), i + 1, text[m.end():i].strip()))
                    break
            i += 1
    # boxes nested in boxes: keep the outer ones
    return [b for b in out if not any(o.start < b.start and b.end <= o.end for o in out)]


_CONNECTOR = re.compile(r"[\s$.,;:]*(?:(?:and|or|&|\\quad|\\qquad|\\text\{\s*(?:and|or|,)?\s*\}|\\[,;: ()\[\]])[\s$.,;:]*)*")


def final_boxed(text: str) -> str | None:
    """The final boxed group (see the module docstring) joined with ``", "``; None without a box."""
    bs = boxes(text)
    if not bs:
        return None
    group = [bs[-1]]
    for prev in reversed(bs[:-1]):
        if _CONNECTOR.fullmatch(text[prev.end:group[0].start]):
            group.insert(0, prev)
        else:
            break
    return ", ".join(b.content for b in group)


def _sentence(s: str) -> str | None:
    s = s.strip().lstrip(":").strip()
    if s.startswith("$$"):
        m = re.match(r"\$\$(.+?)\$\$", s, re.S)
    elif s.startswith("$"):
        m = re.match(r"\$(.+?)\$", s, re.S)
    elif s.startswith("\\("):
        m = re.match(r"\\\((.+?)\\\)", s, re.S)
    elif s.startswith("\\["):
        m = re.match(r"\\\[(.+?)\\\]", s, re.S)
    else:
        m = re.match(r"(.+?)(?:\.\s|\.$|\n|$)", s)
    if not m:
        return None
    ans = m.group(1).strip().rstrip(".").strip()
    return ans or None


def _prose(s: str) -> bool:
    """A sentence rather than an answer ("The volume of $V$ is 120"): two plain words in a row outside math."""
    plain = re.sub(r"\$[^$]*\$|\\[a-zA-Z]+(\{[^{}]*\})?", " ", s)
    return bool(re.search(r"[A-Za-z]{2,}\s+[A-Za-z]{2,}", plain))


def extract(text: str) -> str | None:
    """The final answer of a response under the strict protocol, or None when it has no marked answer
    (then :func:`grade` lets math-verify extract from :func:`answer_region`)."""
    region = answer_region(text)
    if not region.strip():
        return None
    m = re.findall(r"final answer is \$(.+?)\$\. I hope", region, re.S)
    if m:
        return m[-1].strip()
    b = final_boxed(region)
    if b is not None:
        return b
    for pat in (r"[Tt]he (?:final )?answer is", r"[Ff]inal [Aa]nswer:", r"答案是[:：]?"):
        parts = re.split(pat, region)
        if len(parts) > 1:
            ans = _sentence(parts[-1])
            if ans and not _prose(ans):
                return ans
    return None


def prepare_gold(gold: str) -> str:
    """A gold answer as the benchmarks store it; a gold that is itself a solution gives its final box."""
    g = str(gold).strip()
    if "boxed" in g or "answer" in g or "答案" in g:
        g = extract(g) or g
    return g


# ------------------------------------------------------------------------------------------- normalisation

_LONG_UNITS = (r"square\s+units?|sq\.?\s*units?|units?|weeks?|days?|hours?|minutes?|seconds?|dollars?|cents?|degrees?|"
               r"inches|inch|feet|foot|meters?|metres?|miles?|years?|months?|points?|people|persons?|students?|"
               r"ways?|times|pounds?|ounces?|liters?|litres?|gallons?|kilometers?|centimeters?|square\s+feet|"
               r"square\s+meters?|square\s+inches|cubic\s+\w+")
_SHORT_UNITS = r"cm|mm|km|m|ft|in|kg|g|mg|lb|lbs|s|sec|min|hr|hrs|mph|ml|mL|L|oz|yd"
_WRAPPERS = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mathit|mbox|operatorname)\s*\{([^{}]*)\}")
_PCT = re.compile(r"\\%|%|\s*\\text\{\s*(?:percent|pct)\s*\}|\s*\b(?:percentage|percent|pct)\b")


def _strip_outer(s: str) -> str:
    while True:
        t = s.strip()
        for a, b in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
            if len(t) > len(a) + len(b) and t.startswith(a) and t.endswith(b):
                t = t[len(a):-len(b)].strip()
                break
        if t == s.strip():
            return t
        s = t


def _fix_fracs(s: str) -> str:
    s = re.sub(r"\\frac\s*(\d)\s*(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\frac\s*(\d)\s*\{", r"\\frac{\1}{", s)
    s = re.sub(r"\\frac\s*\{([^{}]*)\}\s*(\d|[a-zA-Z])", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\frac\s*\{([^{}]*)\}\s*\\(\w+)", r"\\frac{\1}{\\\2}", s)
    return s


def normalize(ans: str) -> tuple[str, bool]:
    """(canonical string, whether a percent sign/word was present)."""
    s = _strip_outer(str(ans))
    s = s.replace("\\\\\\\\", "\\\\")  # doubly escaped row separators
    s = re.sub(r"\\\\(?=(?:d|t|c)?frac|sqrt|begin|end|pi|cdot|left|right|text|infty|times)", r"\\", s)
    s = s.replace("\n", " ").strip().rstrip(".").strip()
    s = re.sub(r",\\!\s*", ",", s)
    s = re.sub(r"(?<!\\)\\[!,;:> ]", " ", s)
    s = re.sub(r"\\(?:left|right|bigl|bigr|Bigl|Bigr|big|Big)(?![a-zA-Z])", "", s)
    s = re.sub(r"\\[dtc]frac", r"\\frac", s)
    s = s.replace("\\displaystyle", "")
    pct = bool(_PCT.search(s))
    s = _PCT.sub("", s)
    s = s.replace("\\$", "").replace("$", "")
    # units after a number (or after a closing brace): \text{...} of any kind, long words, short ones after a space
    s = re.sub(r"(?<=[\d}])\s*\\(?:text|mbox|textbf|mathrm)\s*\{[^{}]*\}(?:\s*\^\s*\{?\d\}?)?$", "", s)
    s = re.sub(rf"(?<=[\d}}])\s*(?:{_LONG_UNITS})\.?(?:\s*\^\s*\{{?\d\}}?)?$", "", s)
    s = re.sub(rf"(?<=\d)\s+(?:{_SHORT_UNITS})(?:\s*\^\s*\{{?\d\}}?|²|³)?\.?$", "", s)
    s = re.sub(r"\^\s*\{?\\circ\}?|\\circ|°|\\degree", "", s)
    s = _WRAPPERS.sub(r"\1", s).strip()
    s = re.sub(r"^(?:[a-zA-Z]\w*\s*\\in|\\in)\s*", "", s)  # x \in [0, 1)
    s = _fix_fracs(s)
    s = re.sub(r"\\sqrt\s*(\[[^\]]*\])?\s*(\d|[a-zA-Z])", r"\\sqrt\1{\2}", s)
    s = re.sub(r"_\{(\w+)\}", r"_\1", s)
    # mixed numbers before spaces go: 1 1/2 -> 1\frac{1}{2}
    s = re.sub(r"^(-?\d+)\s+(\d+)\s*/\s*(\d+)$", r"\1\\frac{\2}{\3}", s)
    s = re.sub(r"\s+", " ", s).strip()
    if re.fullmatch(r"-?\d{1,3}(?:,\s+\d{3})+(?:\.\d+)?", s):  # "32, 349" is a list, never the number 32349
        s = s.replace(",", ";")
    s = re.sub(r"(?<=[\d.])\s+(?=\d{3}\b)", "", s) if re.fullmatch(r"-?\d{1,3}(?: \d{3})+(?:\.\d+)?", s) else s
    s = s.replace(" ", "")
    s = s.rstrip("\\").rstrip(".")
    s = re.sub(r"^\.(\d)", r"0.\1", s)
    s = re.sub(r"^-\.(\d)", r"-0.\1", s)
    while len(s) > 2 and s[0] == "{" and s[-1] == "}" and _balanced(s[1:-1]):
        s = s[1:-1]
    return s, pct


def _balanced(s: str) -> bool:
    d = 0
    for c in s:
        d += c in "{[(" and 1 or 0
        d -= c in "}])" and 1 or 0
        if d < 0:
            return False
    return d == 0


def _strip_lhs(s: str) -> str:
    """``x=5`` -> ``5``, ``f(x)=2x+3`` -> ``2x+3``, ``(p,q)=(3,2)`` -> ``(3,2)`` (a bare name on the left only)."""
    m = re.match(r"^(?:[a-zA-Z](?:_\w+|')?|[a-zA-Z]\([a-z]\)|\\[a-zA-Z]+|\([a-zA-Z](?:,[a-zA-Z])+\))=(?![=<>])", s)
    if m and "=" not in s[m.end():] and s[m.end():]:
        return s[m.end():]
    return s


# ----------------------------------------------------------------------------------------------- numbers

class Num(NamedTuple):
    value: Fraction
    approx: bool  # written as a decimal (an approximation)


_INT = re.compile(r"-?\d+")


def number(s: str) -> Num | None:
    """A normalised string as an exact rational number (or None)."""
    if _INT.fullmatch(s):
        return Num(Fraction(int(s)), False)
    neg = s.startswith("-")
    t = s[1:] if neg else s
    sign = -1 if neg else 1
    if re.fullmatch(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?", t):
        t = t.replace(",", "")
    m = re.fullmatch(r"(\d*\.\d+|\d+\.?)(?:e([+-]?\d+)|\\times10\^\{?([+-]?\d+)\}?)?", t)
    if m:
        v = Fraction(m.group(1)) * Fraction(10) ** int(m.group(2) or m.group(3) or 0)
        return Num(sign * v, "." in m.group(1) or bool(m.group(2) or m.group(3)))
    m = re.fullmatch(r"\\frac\{(-?\d+(?:\.\d+)?)\}\{(-?\d+(?:\.\d+)?)\}", t) or re.fullmatch(r"(\d+)/(\d+)", t)
    if m:
        a, b = Fraction(m.group(1)), Fraction(m.group(2))
        return None if b == 0 else Num(sign * a / b, "." in m.group(0))
    m = re.fullmatch(r"(\d+)\\frac\{(\d+)\}\{(\d+)\}", t)  # mixed number
    if m and int(m.group(3)):
        return Num(sign * (int(m.group(1)) + Fraction(int(m.group(2)), int(m.group(3)))), False)
    return None


def numbers_equal(a: Num, b: Num) -> bool:
    if a.value == b.value:
        return True
    if a.approx or b.approx:  # a written decimal matches up to a relative 1e-4
        return math.isclose(float(a.value), float(b.value), rel_tol=1e-4, abs_tol=1e-12)
    return False


# ------------------------------------------------------------------------------------------------ structure

_OPEN, _CLOSE = "([{", ")]}"


def _split_top(s: str, seps: str = ",;") -> list[str]:
    """Split at separators outside brackets/braces (``\\{``/``\\}`` count as braces)."""
    parts, depth, cur, i = [], 0, [], 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s) and s[i + 1] in "{}":
            depth += 1 if s[i + 1] == "{" else -1
            cur.append(s[i:i + 2])
            i += 2
            continue
        if c in _OPEN:
            depth += 1
        elif c in _CLOSE:
            depth -= 1
        if c in seps and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    parts.append("".join(cur))
    return parts


def _matching(s: str, i: int) -> int:
    """Index of the bracket closing the one opened at ``s[i]`` (any of ([{ closes with any of )]})."""
    depth = 0
    for j in range(i, len(s)):
        if s[j] in _OPEN:
            depth += 1
        elif s[j] in _CLOSE:
            depth -= 1
            if depth == 0:
                return j
    return -1


class Struct(NamedTuple):
    kind: str          # "matrix" | "seq" (brackets kept in ``brackets``) | "set" | "list" | "union"
    items: tuple       # strings, or tuples of strings for matrix rows
    brackets: str = ""


_MATRIX = re.compile(r"\\begin\{([pbBvV]?matrix|array)\}(?:\{[^{}]*\})?(.*)\\end\{\1\}", re.S)


def structure(s: str) -> Struct | None:
    """The structure of a normalised answer, or None for a scalar."""
    if number(s) is not None:
        return None
    m = _MATRIX.fullmatch(s)
    if m is None and s.startswith("(") and s.endswith(")") and _matching(s, 0) == len(s) - 1:
        m = _MATRIX.fullmatch(s[1:-1])
    if m:
        rows = [r for r in re.split(r"\\\\", m.group(2)) if r.strip()]
        return Struct("matrix" if m.group(1) != "vmatrix" else "det", tuple(tuple(c for c in r.split("&")) for r in rows))
    if "\\cup" in s:
        parts = s.split("\\cup")
        if all(len(p) > 1 and p[0] in "([" and p[-1] in ")]" for p in parts):
            return Struct("union", tuple(parts))
    seq = re.sub(r"\\text\{(?:and|or|,)\}|(?<![a-zA-Z\\])(?:and|or)(?![a-zA-Z])", ",", s)
    top = [p for p in _split_top(seq) if p != ""]
    if len(top) >= 2:
        return Struct("list", tuple(top))
    if len(s) >= 2 and s[0] in "([" and s[-1] in ")]" and _matching(s, 0) == len(s) - 1:
        inner = [p for p in _split_top(s[1:-1])]
        if len(inner) >= 2:
            return Struct("seq", tuple(inner), s[0] + s[-1])
    for a, b in (("\\{", "\\}"), ("{", "}")):
        if s.startswith(a) and s.endswith(b) and len(s) > len(a) + len(b):
            inner = [p for p in _split_top(s[len(a):-len(b)]) if p != ""]
            if len(inner) >= 2 or a == "\\{":
                return Struct("set", tuple(inner))
    return None


# ---------------------------------------------------------------------------------------------- equivalence

_WORDS = re.compile(r"[A-Za-z][A-Za-z ]*")


def _both(results: list[bool | None]) -> bool | None:
    if any(r is False for r in results):
        return False
    return None if any(r is None for r in results) else True


def _unordered(ps: Sequence[str], gs: Sequence[str], mv: bool) -> bool | None:
    ps, gs = list(dict.fromkeys(ps)), list(dict.fromkeys(gs))  # sets of answers: repeats count once
    if len(ps) != len(gs):
        return False
    left, undecided = list(gs), False
    for p in ps:
        for k, g in enumerate(left):
            r = _equiv(p, g, mv)
            if r:
                del left[k]
                break
            undecided |= r is None
        else:
            if undecided:
                return None
            return False
    return True


def _equiv(p: str, g: str, mv: bool, pct: tuple[bool, bool] = (False, False)) -> bool | None:
    if p == g:
        return True
    sp, sg = structure(p), structure(g)
    if sp or sg:
        if sp and sg:
            kinds = {sp.kind, sg.kind}
            if sp.kind == sg.kind == "matrix" or sp.kind == sg.kind == "det":
                if len(sp.items) != len(sg.items) or any(len(a) != len(b) for a, b in zip(sp.items, sg.items)):
                    return False
                return _both([_equiv(_n(a), _n(b), mv) for ra, rb in zip(sp.items, sg.items) for a, b in zip(ra, rb)])
            if sp.kind == sg.kind == "seq":
                if sp.brackets != sg.brackets or len(sp.items) != len(sg.items):
                    return False
                return _both([_equiv(_item(a), _item(b), mv) for a, b in zip(sp.items, sg.items)])
            if sp.kind == sg.kind == "union":
                return _unordered(sp.items, sg.items, mv)
            if "matrix" in kinds and kinds & {"seq", "list"}:  # a row or column vector written as a list
                m, q = (sp, sg) if sp.kind == "matrix" else (sg, sp)
                cells = [c for r in m.items for c in r] if (len(m.items) == 1 or all(len(r) == 1 for r in m.items)) else None
                if cells is None or len(cells) != len(q.items):
                    return False
                a, b = (cells, q.items) if sp.kind == "matrix" else (q.items, cells)
                return _both([_equiv(_n(x), _n(y), mv) for x, y in zip(a, b)])
            if kinds <= {"list", "set"}:
                return _unordered([_item(x) for x in sp.items], [_item(x) for x in sg.items], mv)
        other = g if sp else p
        if number(other) is not None or _WORDS.fullmatch(other):
            return False  # a list / tuple / matrix never equals a single number or word
        return _mv(p, g) if mv else None
    pp, gp = pct
    np_, ng = number(p), number(g)
    if np_ is not None and ng is not None:
        if numbers_equal(np_, ng):
            return True
        if pp and not gp and numbers_equal(Num(np_.value / 100, np_.approx), ng):
            return True
        if gp and not pp and numbers_equal(Num(ng.value / 100, ng.approx), np_):
            return True
        return False
    glued = re.compile(r"-?\d+(?:\.\d+)?[a-zA-Z]{1,3}")  # 10cm, 10m: not a bare number (nor 10*c*m)
    if (glued.fullmatch(p) and ng is not None) or (glued.fullmatch(g) and np_ is not None):
        return False
    if re.fullmatch(r"\w+_\w+", p) and re.fullmatch(r"\w+_\w+", g):  # numerals with a base: 1011_2
        return p.lower() == g.lower()
    wp, wg = _WORDS.fullmatch(p), _WORDS.fullmatch(g)
    if wp and wg:
        return _word(p) == _word(g)
    if (wp and ng is not None) or (wg and np_ is not None):
        return False
    if _word(p) == _word(g):
        return True
    return _mv(p, g) if mv else None


def _word(s: str) -> str:
    s = s.strip().lower()
    m = re.fullmatch(r"\(([a-z])\)", s)
    return m.group(1) if m else s


def _n(s: str) -> str:
    return normalize(s)[0]


def _item(s: str) -> str:
    return _strip_lhs(_n(s))


def fast_equivalent(pred: str | None, gold: str) -> bool | None:
    """The strict verdict when decidable without math-verify, else None."""
    if pred is None or not str(pred).strip():
        return False
    pred, gold = str(pred).strip(), str(gold).strip()
    if pred == gold:
        return True
    if _INT.fullmatch(pred) and _INT.fullmatch(gold):  # the common case, kept cheap
        return int(pred) == int(gold)
    (p, pp), (g, gp) = normalize(pred), normalize(prepare_gold(gold))
    if not p:
        return False
    return _equiv(_strip_lhs(p), _strip_lhs(g), False, (pp, gp))


def equivalent(pred: str | None, gold: str, timeout: int | None = 5) -> bool:
    """The strict verdict (call in a main thread when ``timeout`` is set: math-verify's timeouts use signals)."""
    fast = fast_equivalent(pred, gold)
    if fast is not None:
        return fast
    global _TIMEOUT
    _TIMEOUT = timeout
    gold = prepare_gold(gold)
    (p, pp), (g, gp) = normalize(str(pred)), normalize(gold)
    t = time.perf_counter()
    if _equiv(_strip_lhs(p), _strip_lhs(g), True, (pp, gp)):
        return True
    if timeout and time.perf_counter() - t >= timeout:  # math-verify timed out once: do not wait twice
        return False
    return bool(_mv_raw(str(pred), gold))


_TIMEOUT: int | None = 5


def _mv_raw(pred: str, gold: str) -> bool:
    """math-verify on the raw strings."""
    return V.equal(pred, gold, _TIMEOUT, numeric=False, cached=True)


def _approx(s: str) -> bool:
    n = number(s)
    return n is not None and n.approx


def _mv(p: str, g: str) -> bool:
    """math-verify on two normalised strings, plus the decimal-approximation rule for constants."""
    return V.equal(p, g, _TIMEOUT, numeric=_approx(p) or _approx(g), cached=True)


def grade_region(region: str, gold: str, timeout: int | None = 5) -> tuple[str | None, bool]:
    """No marked answer: math-verify extracts from the final-answer region (gold first)."""
    global _TIMEOUT
    _TIMEOUT = timeout
    if not region.strip():
        return None, False
    try:
        p = V.parse(region, timeout)
        if not p:
            return None, False
        pred = str(p[-1])
        g = V.parse_cached(V.wrap(prepare_gold(gold)), timeout)
        ok = bool(g and V.verify(g, p, timeout))
        if not ok:
            ok = equivalent(pred, gold, timeout)
        return pred, ok
    except Exception:
        return None, False


# ------------------------------------------------------------------------------------------------- batches

def _task(args: tuple) -> tuple[str | None, bool]:
    kind, a, gold, timeout = args
    if kind == "region":
        return grade_region(a, gold, timeout)
    return a, equivalent(a, gold, timeout)


def _chunk(args: tuple[list[tuple], int | None]) -> list[tuple[str | None, bool]]:
    tasks, timeout = args
    return [_task((*t, timeout)) for t in tasks]


def _run(tasks: list[tuple], workers: int, timeout: int | None, chunk: int = 64) -> list[tuple[str | None, bool]]:
    """Run undecided tasks in worker processes (each task in a worker's main thread, so timeouts work)."""
    return V.in_workers(_chunk, [(tasks[i:i + chunk], timeout) for i in range(0, len(tasks), chunk)], workers)


def grade(responses: Sequence[str], golds: Sequence[str], *, workers: int = 2,
          timeout: int | None = 5) -> tuple[list[str | None], list[bool]]:
    """(predictions, verdicts) for whole responses under the strict protocol."""
    if len(responses) != len(golds):
        raise ValueError("responses and golds differ in length")
    preds: list[str | None] = []
    out: list[bool | None] = []
    tasks, where = [], []
    for i, (r, g) in enumerate(zip(responses, golds)):
        p = extract(r)
        preds.append(p)
        if p is None:
            region = answer_region(r)
            out.append(False if not region.strip() else None)
            if region.strip():
                tasks.append(("region", region, str(g)))
                where.append(i)
            continue
        v = fast_equivalent(p, str(g))
        out.append(v)
        if v is None:
            tasks.append(("pair", p, str(g)))
            where.append(i)
    for i, (p, ok) in zip(where, _run(tasks, workers, timeout)):
        preds[i], out[i] = p, ok
    return preds, [bool(v) for v in out]


def grade_answers(preds: Sequence[str | None], golds: Sequence[str], *, workers: int = 2,
                  timeout: int | None = 5) -> list[bool]:
    """Verdicts for already extracted answers (equivalence only)."""
    if len(preds) != len(golds):
        raise ValueError("preds and golds differ in length")
    out = [fast_equivalent(p, str(g)) for p, g in zip(preds, golds)]
    where = [i for i, v in enumerate(out) if v is None]
    res = _run([("pair", str(preds[i]), str(golds[i])) for i in where], workers, timeout)
    for i, (_, ok) in zip(where, res):
        out[i] = ok
    return [bool(v) for v in out]
