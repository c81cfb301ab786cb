"""math-verify as both grading protocols call it (``strict``: strict.py; ``qwen-toolkit``: grading.py) and the
grading corpus's ``math-verify`` method (grading_corpus.py).

    from l2s_utils.evaluate import verify as V
    V.equal("\\frac{1}{2}", "0.5", timeout=5)          # parse (gold first, bare LaTeX wrapped in $..$), verify
    V.in_workers(grade_chunk, chunks, workers=2)       # each chunk in a worker process's main thread

math-verify's own timeouts use ``signal.alarm``, which only works in a main thread, so batches run in
worker *processes* (fork; each task runs in a worker's main thread) with math-verify's timeouts on; a
timeout or a parser failure counts as wrong.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Sequence


def wrap(x: str) -> str:
    """Bare LaTeX in ``$...$`` (math-verify extracts only from math mode); already delimited text as it is."""
    x = x.strip()
    return x if x.startswith(("$", "\\(", "\\[")) else f"${x}$"


def parse(text: str, timeout: int | None) -> list:
    """math-verify's parse (``[]`` when nothing parses or the parse times out)."""
    from math_verify import parse as mv_parse

    return mv_parse(text, parsing_timeout=timeout)


@functools.lru_cache(maxsize=4096)
def parse_cached(text: str, timeout: int | None) -> list:
    """:func:`parse`, cached per process (golds repeat across models and samples)."""
    return parse(text, timeout)


def verify(gold: list, pred: list, timeout: int | None) -> bool:
    """math-verify's verify on two parses, gold first."""
    from math_verify import verify as mv_verify

    return mv_verify(gold, pred, timeout_seconds=timeout)


def numeric_close(a, b, abs_tol: float = 0.0) -> bool:
    """Both parses are constant (real) numbers equal up to a relative 1e-4 (and ``abs_tol``)."""
    try:
        import sympy

        if isinstance(a, sympy.Basic) and isinstance(b, sympy.Basic) and a.is_number and b.is_number:
            x, y = complex(sympy.N(a)), complex(sympy.N(b))
            return (abs(x.imag) < 1e-12 and abs(y.imag) < 1e-12
                    and math.isclose(x.real, y.real, rel_tol=1e-4, abs_tol=abs_tol))
    except Exception:
        return False
    return False


def equal(pred: str, gold: str, timeout: int | None, *, numeric: bool = True, abs_tol: float = 0.0,
          cached: bool = False) -> bool:
    """math-verify's equivalence of two answers: parse both (wrapped, gold first), verify; when verify says no
    and ``numeric``, :func:`numeric_close` on the first parses. Call in a main thread when ``timeout`` is set."""
    p_ = parse_cached if cached else parse
    try:
        g = p_(wrap(gold), timeout)
        p = p_(wrap(pred), timeout)
        if not g or not p:
            return False
        if verify(g, p, timeout):
            return True
        return numeric and numeric_close(g[0], p[0], abs_tol)
    except Exception:  # timeouts and parser failures count as wrong
        return False


def in_workers(fn: Callable[[object], Sequence], chunks: Sequence, workers: int) -> list:
    """``fn`` over ``chunks`` in at most ``workers`` forked processes (each chunk in a worker's main thread, so
    math-verify's signal timeouts work); the chunks' results concatenated in order."""
    if not chunks:
        return []
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=max(1, min(workers, len(chunks))), mp_context=mp.get_context("fork")) as ex:
        return [r for part in ex.map(fn, chunks) for r in part]
