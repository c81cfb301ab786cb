"""One organism design, trained and measured: the exploration record of issue 30 (organism v17).

    python benchmarks/organism_explore.py --name v17a --seed 0 [--scale s] [--set s2_lr=3e-4 ...] [--note "..."]

Builds the pair with the current task and recipe (``--set`` overrides fields of the scale's Spec), runs the
premise report (System 1, System 2, task arithmetic at alpha 0.1..0.9, TIES; greedy, the book's test set)
and appends one JSON line -- design name, note, spec, training time, every bar, the per-level table and the
alpha path -- to ``benchmarks/results/organism-explore.jsonl``, so that the designs tried and their numbers
stay in the repository. Prints the per-level table and the bars.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from l2s_utils.organism import training as O  # noqa: E402
from l2s_utils.study.premise import premise_report, report_json  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "organism-explore.jsonl"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--name", required=True)
    ap.add_argument("--scale", default=O.MAIN_SCALE)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], help="field=value of the Spec")
    ap.add_argument("--note", default="")
    ap.add_argument("-n", type=int, default=40)
    ap.add_argument("--base-from", type=Path, default=None,
                    help="a build whose base this spec pretrains too (only the fine-tunes change): reuse it")
    a = ap.parse_args()
    spec = dataclasses.replace(O.SCALES[a.scale], seed=a.seed)
    for kv in a.set:
        k, v = kv.split("=", 1)
        spec = dataclasses.replace(spec, **{k: type(getattr(spec, k))(v)})
    t0 = time.perf_counter()
    org = O.build(a.scale, spec=spec, from_scratch=True, progress=False, base_from=a.base_from)
    t_train = time.perf_counter() - t0
    t1 = time.perf_counter()
    rep = premise_report(org, n_per_level=a.n, progress=False, smallest=a.scale == O.LADDER[0])
    t_eval = time.perf_counter() - t1
    table = rep["table"]
    print(table.to_string(index=False, float_format=lambda x: f"{x:.1f}"))
    print(rep["path"][["alpha", "accuracy", "mean_tokens", "reflective", "think first (%)"]].to_string(index=False))
    for c in rep["checks"]:
        print(f"  {'PASS' if c['passed'] else 'FAIL'} {c['check']}: {c['value']} (bar {c['bar']}) {c.get('detail', '')}")
    rec = {"name": a.name, "note": a.note, "scale": a.scale, "seed": a.seed, "version": O.ORGANISM_VERSION,
           "spec": dataclasses.asdict(spec), "recipe": org.manifest["recipe"], "threads": O.TRAIN_THREADS,
           "train_s": org.manifest["timings"], "eval_s": t_eval, "wall_train_s": t_train,
           "checks": rep["checks"], "passed": sum(c["passed"] for c in rep["checks"]), "bars": len(rep["checks"]),
           "table": table.to_dict(orient="records"), "barrier": rep["barrier"],
           "path": rep["path"][["alpha", "accuracy", "mean_tokens", "reflective"]].to_dict(orient="records"),
           "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    # the report in the form `l2s organism --premise` writes (shipping carries it beside the weights)
    (org.root / "premise.json").write_text(json.dumps(report_json(rep), indent=1, default=float))
    with OUT.open("a") as f:
        f.write(json.dumps(rec, default=float) + "\n")
    print(f"{rec['passed']} of {rec['bars']} bars; train {org.manifest['timings']['total_s']:.0f} s, eval {t_eval:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
