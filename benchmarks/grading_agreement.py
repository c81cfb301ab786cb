"""Agreement of the grading protocols (and math-verify alone) with the field's test suites.

    python benchmarks/grading_agreement.py [--methods strict qwen-toolkit math-verify] [--misses strict]

Reads ``data/grading_corpus.jsonl`` (built by ``benchmarks/build_grading_corpus.py``) and prints, per
method, the share of cases where its verdict equals the suite's, overall and per source repository;
``--misses`` lists the cases a method gets wrong.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from l2s_utils.evaluate.grading_corpus import METHODS, agreement, load_corpus  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--misses", nargs="*", default=[], choices=METHODS)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    cases = load_corpus()
    sources = sorted({c["source"] for c in cases})
    print(f"corpus: {len(cases)} cases ({sum(c['expected'] for c in cases)} equivalent, "
          f"{sum(not c['expected'] for c in cases)} not); sources:")
    for s in sources:
        commits = sorted({c["commit"][:12] for c in cases if c["source"] == s})
        print(f"  {s} @ {', '.join(commits)}: {sum(c['source'] == s for c in cases)} cases")
    results = {m: agreement(cases, m, workers=args.workers) for m in args.methods}
    print("\n| method | agreement | " + " | ".join(s.split("/")[1] for s in sources) + " |")
    print("|---|---|" + "---|" * len(sources))
    for m, r in results.items():
        cells = " | ".join(f"{r['by_source'][s][0]}/{r['by_source'][s][1]}" for s in sources)
        print(f"| {m} | {r['pct']:.1f}% ({r['agree']}/{r['n']}) | {cells} |")
    for m in args.misses:
        r = results.get(m) or agreement(cases, m, workers=args.workers)
        print(f"\n{m}: {len(r['misses'])} disagreements")
        for c in r["misses"]:
            print(f"  [{c['id']}] expected {c['expected']}: {c['response'][:90]!r} vs gold {c['gold'][:60]!r}")


if __name__ == "__main__":
    main()
