"""The long-to-short contenders across organism seeds: is the comparison of chapter 07 a property of the method or of
one draw of the organism?

    python benchmarks/contenders_seeds.py [--seeds 0 1 2] [--labels ties tldr-short ...] [--out FILE]

For each seed N the toy profile is run with ``models.seed: N`` (the main pair trained with seed N; seed 0 is the
shipped pair): System 1, System 2 and the profile's contenders (merges of that pair, decoding policies on its
System 2, baselines trained from its System 2 with the profile's settings), on the book's test set (the same
questions for every seed), greedy, every stage cached under ``runs/toy-seed<N>``. Writes one record (per seed and
contender: accuracy with its bootstrap CI, mean tokens, length change vs that seed's System 2, one-off cost) and
the summary over seeds to ``--out`` (default ``benchmarks/results/contenders-seeds.json``; chapter 07 shows it),
and prints it.

The summary gives each contender's mean, min and max over seeds, and a ranking by accuracy in which two
contenders whose order is not the same on every seed are reported as tied
(:func:`l2s_utils.study.contenders.seed_ranking`).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OUT = ROOT / "benchmarks" / "results" / "contenders-seeds.json"
KEEP = ("model", "kind", "contender", "n", "accuracy", "acc_lo", "acc_hi", "mean_tokens", "length_change_pct",
        "reflective_pct", "setup_s")


def seed_rows(seed: int, labels: list[str] | None, profile: str = "toy") -> list[dict]:
    """One dict per model (System 1, System 2, each contender) of the profile run on organism seed ``seed``."""
    from l2s_utils.study import Study
    from l2s_utils.study.profiles import load_profile

    prof = copy.deepcopy(load_profile(profile))
    prof["name"] = f"{prof['name']}-seed{seed}"
    prof["models"]["seed"] = seed
    prof["models"]["ladder"] = [prof["models"]["scale"]]  # the main pair only
    st = Study(prof, out=ROOT / "runs" / prof["name"])
    table = st.contender_summary(st.contender_rows(labels))
    return [{k: (r[k].item() if hasattr(r[k], "item") else r[k]) for k in KEEP if k in r} for _, r in table.iterrows()]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--labels", nargs="+", default=None, help="contender labels of the profile (default: all)")
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args(argv)
    import torch

    from l2s_utils.organism import training as O
    from l2s_utils.study.contenders import seed_ranking, seed_spread

    t0 = time.perf_counter()
    per_seed = {s: seed_rows(s, a.labels) for s in a.seeds}
    doc = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "profile": "toy", "seeds": a.seeds,
           "organism_version": O.ORGANISM_VERSION, "recipe_seed0": O.recipe_hash(O.SCALES[O.MAIN_SCALE]),
           "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
           "wall_s": time.perf_counter() - t0, "per_seed": {str(s): r for s, r in per_seed.items()},
           "spread": seed_spread(per_seed), "ranking": seed_ranking(per_seed)}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(doc, indent=1, default=float) + "\n")
    print(f"{'model':<28} {'accuracy (min-max)':>22} {'tokens':>8} {'vs System 2 (min-max)':>24}")
    for r in doc["spread"]:
        print(f"{r['model']:<28} {r['accuracy']:6.1f} ({r['accuracy_min']:.1f}-{r['accuracy_max']:.1f}) "
              f"{r['mean_tokens']:8.1f} {r['length_change_pct']:+7.1f} ({r['length_change_pct_min']:+.1f}..{r['length_change_pct_max']:+.1f})")
    print("ranking by accuracy (tiers: order flips between seeds = tie):")
    for i, tier in enumerate(doc["ranking"], 1):
        print(f"  {i}. {' = '.join(tier)}")
    print(f"written: {a.out} ({doc['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
