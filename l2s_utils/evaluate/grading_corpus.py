"""The grading corpus (``data/grading_corpus.jsonl``): cases from the field's test suites, and agreement.

    from l2s_utils.evaluate.grading_corpus import load_corpus, agreement
    cases = load_corpus()
    agreement(cases, "strict")          # {"agree": .., "n": .., "pct": .., "by_source": {...}, "misses": [...]}

Each case is a response (``form="response"``: extraction included) or a bare final answer
(``form="answer"``: equivalence only), a gold answer and the suite's verdict; ``source``, ``commit`` and
``path`` say where it comes from (``benchmarks/build_grading_corpus.py`` rebuilds it). Methods:
``strict`` and ``qwen-toolkit`` (the two protocols, called as the evaluation pipeline calls them) and
``math-verify`` (``verify(parse(gold), parse(response))`` alone, as the Math-Verify suite calls it).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from . import verify as V

CORPUS = Path(__file__).resolve().parents[2] / "data" / "grading_corpus.jsonl"
METHODS = ("strict", "qwen-toolkit", "math-verify")


def load_corpus(path: str | Path = CORPUS) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _mv_case(args: tuple[str, str, str, int]) -> bool:
    form, response, gold, timeout = args
    try:
        g = V.parse(V.wrap(gold), timeout)
        p = V.parse(response if form == "response" else V.wrap(response), timeout)
        return bool(g and p and V.verify(g, p, timeout))
    except Exception:
        return False


def _mv_chunk(tasks: list[tuple]) -> list[bool]:
    return [_mv_case(t) for t in tasks]


def math_verify_verdicts(cases: list[dict], workers: int = 2, timeout: int = 5) -> list[bool]:
    tasks = [(c["form"], c["response"], c["gold"], timeout) for c in cases]
    return V.in_workers(_mv_chunk, [tasks[i:i + 64] for i in range(0, len(tasks), 64)], workers)


def verdicts(cases: list[dict], method: str, workers: int = 2, timeout: int = 5) -> list[bool]:
    """One verdict per case under ``method`` (a protocol name or ``math-verify``)."""
    from .grading import grade_answers, grade_responses

    if method == "math-verify":
        return math_verify_verdicts(cases, workers, timeout)
    out: list[bool | None] = [None] * len(cases)
    for form in ("response", "answer"):
        idx = [i for i, c in enumerate(cases) if c["form"] == form]
        if not idx:
            continue
        texts, golds = [cases[i]["response"] for i in idx], [cases[i]["gold"] for i in idx]
        if form == "response":
            _, res = grade_responses(texts, golds, method, workers=workers, timeout=timeout)
        else:
            res = grade_answers(texts, golds, method, workers=workers, timeout=timeout)
        for i, r in zip(idx, res):
            out[i] = r
    return [bool(v) for v in out]


def agreement(cases: list[dict], method: str, workers: int = 2, timeout: int = 5) -> dict:
    """Share of cases where ``method`` gives the suite's verdict, overall and per source, with the misses."""
    got = verdicts(cases, method, workers, timeout)
    by = defaultdict(lambda: [0, 0])
    misses = []
    for c, v in zip(cases, got):
        ok = v == c["expected"]
        by[c["source"]][0] += ok
        by[c["source"]][1] += 1
        if not ok:
            misses.append(c)
    n, agree = len(cases), sum(a for a, _ in by.values())
    return {"method": method, "n": n, "agree": agree, "pct": 100 * agree / n if n else float("nan"),
            "by_source": {s: (a, t) for s, (a, t) in sorted(by.items())}, "misses": misses}
