"""The README's organism status, written from the stored records (never typed by hand).

    python -m l2s_utils.study.status            # print the block
    python -m l2s_utils.study.status --write    # replace it in README.md (between the status markers)

Two tables: the main scale over training seeds (``data/organism/seeds-<scale>.json``, written by
``benchmarks/organism_seeds.py``) and the shipped ladder (each scale's ``manifest.json`` and ``premise.json`` in
``data/organism``). A test checks that the README holds exactly what this module writes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..organism import training as O

ROOT = Path(__file__).resolve().parents[2]
BEGIN, END = "<!-- organism-status: begin (written by python -m l2s_utils.study.status --write) -->", \
    "<!-- organism-status: end -->"
SHOWN = ("s2_headroom", "ta_shorter", "ta_adaptive", "ta_reflects_hard", "ties_shorter", "hard_gap", "barrier")


def _acc(path: list[dict], alpha: float) -> float:
    return next(r["accuracy"] for r in path if r["alpha"] == alpha)


def _row(label: str, params: float | None, path: list[dict], checks: list[dict], train_s: float, threads) -> str:
    v = {c["check"]: c for c in checks}
    cell = lambda k: f"{v[k]['value']:g}{'' if v[k]['passed'] else ' (fails)'}" if k in v else "-"  # noqa: E731
    p = f"{params / 1e6:.2f}M | " if params is not None else ""
    return (f"| {label} | {p}{_acc(path, 0.0):.1f}% | {_acc(path, 1.0):.1f}% | " + " | ".join(cell(k) for k in SHOWN)
            + f" | {sum(c['passed'] for c in checks)} of {len(checks)} | {train_s:,.0f} s ({threads} thread{'s' if threads != 1 else ''}) |")


HEAD = ("System 1 | System 2 | System 2 in 75-92% | TA shorter (%) | easy - hard shortening (points) | "
        "TA reflective, level 5 (%) | TIES shorter (%) | levels 4-5 gap | barrier | bars | trained in |")


def block(root: Path = O.SHIPPED_DIR) -> str:
    lines = [BEGIN]
    f = root / f"seeds-{O.MAIN_SCALE}.json"
    doc = json.loads(f.read_text()) if f.is_file() else None
    if doc is None or doc.get("recipe") != O.recipe_hash(O.SCALES[O.MAIN_SCALE]):
        lines += [f"No record of scale {O.MAIN_SCALE} over seeds for today's recipe (`benchmarks/organism_seeds.py` writes it).", ""]
    else:
        lines += [f"Scale {O.MAIN_SCALE} over training seeds (`data/organism/seeds-{O.MAIN_SCALE}.json`, recipe "
                  f"{doc['recipe']}, {doc['n_per_level']} test problems per level, greedy; created {doc['created'][:10]}):",
                  "", "| seed | " + HEAD, "|---" * (len(HEAD.split("|")) + 0) + "|"]
        for r in doc["seeds"]:
            lines.append(_row(str(r["seed"]), None, r["path"], r["checks"], r["train_s"],
                              (r.get("environment") or {}).get("threads", "?")))
        lines.append("")
    lines += _budget_line()
    rows = []
    for scale in O.LADDER:
        org = O.shipped(scale, O.SCALES[scale])
        if org is None or not (org.root / "premise.json").is_file():
            rows.append(f"| {scale} | not shipped with a premise report for today's recipe |")
            continue
        rep = json.loads((org.root / "premise.json").read_text())
        m = org.manifest
        rows.append(_row(scale, m["n_params"], rep["path"], rep["checks"], m["timings"]["total_s"],
                         m.get("environment", {}).get("threads", "?")))
    lines += ["The shipped ladder (seed 0; `data/organism/<scale>-<recipe>/premise.json`):", "",
              "| scale | parameters | " + HEAD, "|---" * (len(HEAD.split("|")) + 1) + "|", *rows, END]
    return "\n".join(lines)


def _budget_line(explore: Path = ROOT / "benchmarks" / "results" / "organism-explore.jsonl") -> list[str]:
    """The main pair's training time from nothing on 2 threads (the 2-idle-core budget: 600 s), from the latest
    exploration record of today's recipe built with 2 threads."""
    recipe = O.recipe_hash(O.SCALES[O.MAIN_SCALE])
    recs = [json.loads(x) for x in explore.read_text().splitlines() if x.strip()] if explore.is_file() else []
    recs = [r for r in recs if r.get("recipe") == recipe and r.get("threads") == 2 and r.get("scale") == O.MAIN_SCALE]
    if not recs:
        return ["No record of the main pair trained from nothing with 2 threads for today's recipe (budget 600 s).", ""]
    r, t = recs[-1], recs[-1]["train_s"]
    verdict = "within" if t["total_s"] <= 600 else "over"
    return [f"The main pair from nothing on 2 idle cores (2 threads, seed {r['seed']}): {t['total_s']:,.0f} s of training "
            f"(base {t['base_s']:,.0f}, System 1 {t['system1_s']:,.0f}, System 2 {t['system2_s']:,.0f}), {verdict} the "
            f"600 s budget (`benchmarks/results/organism-explore.jsonl`, \"{r['name']}\", {r['created'][:10]}).", ""]


def write(readme: Path = ROOT / "README.md") -> None:
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        raise ValueError(f"{readme} has no organism-status markers")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(head + block() + tail)


if __name__ == "__main__":
    if "--write" in sys.argv:
        write()
    else:
        print(block())
