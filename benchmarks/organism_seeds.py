"""Robustness of the organism's premise across training seeds: build each seed, measure every bar.

    python benchmarks/organism_seeds.py [--scale s] [--seeds 0 1 2] [-n 50] [--out data/organism/seeds-s.json]

Each seed is trained here from nothing (or taken from the local cache, where ``l2s organism --scale s
--seed N --from-scratch --premise`` has already built and measured it: its ``premise.json`` is reused),
then measured with :func:`l2s_utils.study.premise.premise_report` (System 1, System 2 and task
arithmetic at alpha 0.1..0.9 on the test split, greedy). Writes one record per seed -- recipe, seed,
environment, training time, accuracies, the task-arithmetic path, barriers and every bar -- to ``--out``
(the testbed chapter shows it) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from l2s_utils.organism import training as O  # noqa: E402
from l2s_utils.study.premise import premise_report, report_json, seed_record  # noqa: E402


def measure(scale: str, seed: int, n: int) -> dict:
    org = O.build(scale, seed=seed, from_scratch=True, progress=False)
    cached = org.root / "premise.json"
    if org.source == "trained" and cached.is_file():
        rep = json.loads(cached.read_text())
        if rep.get("n_per_level", n) == n:
            return seed_record(org, rep)
    rep = premise_report(org, n_per_level=n, progress=False, smallest=scale == O.LADDER[0])
    return seed_record(org, report_json(rep))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", default=O.MAIN_SCALE)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("-n", type=int, default=40, help="test problems per level (40: the book's test set)")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    out = a.out or O.SHIPPED_DIR / f"seeds-{a.scale}.json"
    records = [measure(a.scale, s, a.n) for s in a.seeds]
    doc = {"scale": a.scale, "recipe": O.recipe_hash(O.SCALES[a.scale]), "n_per_level": a.n,
           "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seeds": records}
    out.write_text(json.dumps(doc, indent=1, default=float) + "\n")
    for r in records:
        print(f"seed {r['seed']}: System 1 {r['accuracy']['System 1']:.1f}% / System 2 {r['accuracy']['System 2']:.1f}%, "
              f"barrier {r['barrier']:.1f}, bars passed {r['passed']} of {r['bars']}, trained in {r['train_s']:.0f} s")
    print(f"written: {out}")
    return 0 if all(r["passed"] == r["bars"] for r in records) else 1


if __name__ == "__main__":
    raise SystemExit(main())
