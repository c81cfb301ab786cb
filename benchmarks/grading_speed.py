"""Grading throughput: both protocols and math-verify alone, on toy integer answers and on the corpus.

    python benchmarks/grading_speed.py [--toy 5000] [--repeat 3] [--workers 2]

Toy: System 1 and System 2 traces written by the organism's writers (``organism.task``) for test
problems, graded against their gold integers (a third with a wrong gold), as whole responses: the
protocols extract and compare; math-verify alone is ``verify(parse(gold), parse(response))``, with its
timeouts off (threads-safe, in process) so that its own speed is measured and not process start-up.
Corpus: ``data/grading_corpus.jsonl``, each method as ``grading_agreement.py`` calls it (math-verify in
worker processes with timeouts on). Prints answers/s; the best of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from l2s_utils.evaluate.grading import grade_responses  # noqa: E402
from l2s_utils.evaluate.grading_corpus import load_corpus, verdicts  # noqa: E402
from l2s_utils.organism import task as T  # noqa: E402


def toy_cases(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    probs = T.make_problems("test", -(-n // 5), seed=seed, unique=False)[:n]
    texts, golds = [], []
    for i, p in enumerate(probs):
        texts.append(T.system1_trace(p) if i % 2 else T.system2_trace(p, rng))
        golds.append(str(p.answer + (1 if i % 3 == 0 else 0)))
    return texts, golds


def best_rate(fn, n: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return n / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--toy", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    from math_verify import parse, verify

    texts, golds = toy_cases(args.toy)

    def mv_toy():
        return [verify(parse(f"${g}$", parsing_timeout=None), parse(t, parsing_timeout=None), timeout_seconds=None)
                for t, g in zip(texts, golds)]

    rows = []
    want = [grade_responses(texts, golds, "qwen-toolkit")[1], grade_responses(texts, golds, "strict")[1]]
    assert want[0] == want[1], "the protocols disagree on toy integer answers"
    for name in ("strict", "qwen-toolkit"):
        rows.append(("toy integer answers", len(texts), name,
                     best_rate(lambda: grade_responses(texts, golds, name, workers=args.workers), len(texts), args.repeat)))
    sub = max(1, len(texts) // 10)  # math-verify alone is slow: time a tenth
    rows.append(("toy integer answers", sub, "math-verify alone",
                 best_rate(lambda: [verify(parse(f"${g}$", parsing_timeout=None), parse(t, parsing_timeout=None),
                                           timeout_seconds=None) for t, g in zip(texts[:sub], golds[:sub])], sub, 1)))
    cases = load_corpus()
    for name in ("strict", "qwen-toolkit", "math-verify"):
        rows.append(("grading corpus", len(cases), name if name != "math-verify" else "math-verify alone",
                     best_rate(lambda: verdicts(cases, name, workers=args.workers), len(cases), args.repeat)))
    print("| answers | n | method | answers/s |\n|---|---|---|---|")
    for a, n, m, r in rows:
        print(f"| {a} | {n} | {m} | {r:,.0f} |")


if __name__ == "__main__":
    main()
