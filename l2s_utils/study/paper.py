"""The paper's numbers: its model pairs, Table 7 hyper-parameters (as merge configs) and reported results.

``paper_merge_configs(scale)`` returns {file stem: config dict}; ``data/configs/qwen-<scale>/*.yaml``
are these dicts written out (``python -m l2s_utils.study.paper`` regenerates them; a test keeps them in
sync). ``paper_summary`` reads the paper's reported averages (``data/paper/``); ``side_by_side`` puts a
run's summary beside them.
Where the paper does not report a value, the config says so in its ``description`` and uses the
documented default (METHODS.md sections 1-5).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[2]

PAIRS = {
    "1.5b": ("Qwen/Qwen2.5-Math-1.5B", "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"),
    "7b": ("Qwen/Qwen2.5-Math-7B", "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"),
    "14b": ("Qwen/Qwen2.5-14B", "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B"),
    "32b": ("Qwen/Qwen2.5-32B", "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B"),
}
# Table 7 (TIES k = fraction dropped)
TIES = {"1.5b": (0.8, 1.0), "7b": (0.8, 1.0), "14b": (0.2, 0.5), "32b": (0.25, 0.55)}
DARE_P = {"1.5b": 0.3, "7b": 0.3, "14b": 0.4}
TA_ALPHA = 0.7
# The System 1 bases of 1.5B/7B have 4096 positions; System 2 and the paper's >4096-token responses
# need more (METHODS.md section 0, an assumption): the merged configs get R1's 131072.
MAX_POSITIONS = 131072


def paper_merge_configs(scale: str) -> dict[str, dict]:
    if scale not in PAIRS:
        raise ValueError(f"unknown scale {scale!r}; known: {sorted(PAIRS)}")
    s1, s2 = PAIRS[scale]
    common = {"dtype": "bfloat16", "max_position_embeddings": MAX_POSITIONS, "tied_embeddings": "follow_base"}
    k, a = TIES[scale]

    def c(method, models, params, desc, label=None):
        return {"name": f"{label or method}-{scale}", "description": desc, "merge_method": method, "base_model": s1,
                "models": [{"model": m} for m in models], "parameters": params, **common}

    out = {
        "average": c("average", [s1, s2], {}, "Average merging of System 1 and System 2 = theta_0 + 0.5 delta (Table 1)."),
        "task_arithmetic": c("task_arithmetic", [s2], {"alpha": TA_ALPHA}, "Task arithmetic, alpha from Table 7."),
        "ties": c("l2s_ties", [s2], {"k": k, "alpha": a},
                  f"TIES as the L2S code (ties_merging), per-tensor trimming; k = {k} is the fraction DROPPED, alpha "
                  "from Table 7. (merge_method: ties would be mergekit's TIES, which takes density = fraction kept.)",
                  "ties"),
    }
    if scale in DARE_P:
        p = DARE_P[scale]
        out["dare"] = c("dare", [s1, s2], {"p": p, "combine": "average", "seed": 0},
                        f"DARE (average of masked models), p = {p} from Table 7; the seed is ours (the L2S code sets none).")
        out["dare_ta"] = c("dare_ta", [s2], {"p": p, "alpha": TA_ALPHA, "seed": 0},
                           "DARE-TA: p from Table 7; alpha is NOT reported -- the task-arithmetic value 0.7 is our assumption.")
        out["dare_ties"] = c("l2s_dare_ties", [s2], {"p": p, "k": TIES[scale][0], "alpha": TIES[scale][1], "seed": 0},
                             "DARE-Ties as the L2S code (mask_merging + ties_merging): p from Table 7; k and alpha are "
                             "NOT reported -- the TIES values are our assumption. (merge_method: dare_ties would be "
                             "mergekit's, where density is the DARE keep probability.)", "dare_ties")
        out["lore"] = c("lore", [s1, s2], {"mu": 0.01, "iterations": 5, "combine": "task_arithmetic", "alpha": TA_ALPHA},
                        "LoRE: mu, iterations and the post-merge are NOT reported by the paper -- all are our assumptions.")
        out["twin"] = c("twin", [s2], {"alpha": TA_ALPHA, "rank": 64},
                        "Twin (SVD part): the shared-expert alpha and the rank are NOT reported -- our assumptions.")
    return out


def write_configs(root: Path) -> list[Path]:
    written = []
    for scale in PAIRS:
        d = root / f"qwen-{scale}"
        d.mkdir(parents=True, exist_ok=True)
        for stem, cfg in paper_merge_configs(scale).items():
            f = d / f"{stem}.yaml"
            f.write_text(yaml.safe_dump(cfg, sort_keys=False, width=120))
            written.append(f)
    return written


def paper_summary(scale: str = "7b") -> pd.DataFrame:
    """The paper's average accuracy and length change per method (Table 1 summary for 7B)."""
    if scale != "7b":
        raise ValueError("the paper's summary table is given for 7B only; per-benchmark tables are in data/paper/")
    return pd.read_csv(ROOT / "data" / "paper" / "table1_7b_summary.csv")


def side_by_side(ours: pd.DataFrame, profile: str) -> pd.DataFrame:
    """Our accuracy (with CI) and length change beside the paper's 7B averages, one row per method."""
    paper = paper_summary().rename(columns={"method": "paper_method"})
    names = {"System 1": "Qwen2.5-Math-7B", "System 2": "DeepSeek-R1-Distill-Qwen-7B", "ACM-Ties": None}
    rows = []
    for _, r in ours.iterrows():
        pm = names.get(r.model, r.model)
        p = paper[paper.paper_method == pm] if pm else paper.iloc[0:0]
        rows.append({"method": r.model, f"accuracy ({profile})": f"{r.accuracy:.1f} [{r.acc_lo:.1f}, {r.acc_hi:.1f}]",
                     f"length change % ({profile})": round(r.length_change_pct, 1),
                     "accuracy (paper 7B avg)": p.avg_accuracy.iloc[0] if len(p) else None,
                     "length change % (paper 7B)": p.avg_length_change_pct.iloc[0] if len(p) else None})
    return pd.DataFrame(rows)


def long_to_short_reported() -> pd.DataFrame:
    """What the papers report for each long-to-short family (``data/paper/long_to_short_reported.csv``)."""
    return pd.read_csv(ROOT / "data" / "paper" / "long_to_short_reported.csv")


def reported_beside_ours(summary: pd.DataFrame, contenders: list, profile: str) -> pd.DataFrame:
    """Each reported long-to-short result (:func:`long_to_short_reported`) beside this run's contenders of the same
    family (``summary`` of ``Study.contender_summary``; ``contenders`` the Study's list): their accuracy change
    (points) and length change (%) against System 2, or "not in this profile". The papers' one-line claims stay in
    ``long_to_short_reported.csv`` (they restate the two numbers)."""
    from .contenders import family

    rep = long_to_short_reported()
    s = summary.drop_duplicates("model").set_index("model")
    ref = s.accuracy.get("System 2", float("nan"))
    ours: dict[str, list[str]] = {}
    for c in contenders:
        if c.name in s.index:
            r = s.loc[c.name]
            ours.setdefault(family(c), []).append(
                f"{c.name}: {r.accuracy - ref:+.1f} points, {r.length_change_pct:+.0f}% length")
    def number(q, v, unit):
        return "" if v != v else f"{(q + ' ') if isinstance(q, str) else ''}{v:+g}{unit}"
    return pd.DataFrame({
        "method": rep.method, "paper (source)": [f"{p} ({s})" for p, s in zip(rep.paper, rep.source)],
        "setting": rep.setting,
        "reported accuracy change (points)": [number(None, v, "") for v in rep.accuracy_change_points],
        "reported length change (%)": [number(q, v, "") for q, v in zip(rep.qualifier, rep.length_change_pct)],
        f"this run ({profile}), vs its System 2": ["; ".join(ours.get(f, [])) or "not in this profile" for f in rep.family]})


SCALE_TABLES = {"1.5B": ("table2_1.5b.csv", 1.5e9), "7B": ("table1_7b.csv", 7e9), "14B": ("table3_14b.csv", 14e9),
                "32B": ("table4_32b.csv", 32e9)}


def paper_by_scale() -> pd.DataFrame:
    """Per paper scale and method: mean accuracy and mean length over that scale's benchmarks, the accuracy
    retained (% of System 2's) and the length change vs System 2 (%), from the per-benchmark tables."""
    rows = []
    for scale, (f, n) in SCALE_TABLES.items():
        t = pd.read_csv(ROOT / "data" / "paper" / f)
        g = t.groupby("method", sort=False).agg(accuracy=("accuracy", "mean"), mean_length=("mean_length", "mean"))
        s1_name, s2_name = next(iter(g.index)), next(m for m in g.index if m.startswith("DeepSeek-R1"))
        for m, r in g.iterrows():
            model = {s1_name: "System 1", s2_name: "System 2"}.get(m, m)
            rows.append({"scale": scale, "parameters": n, "model": model, "accuracy": r.accuracy,
                         "mean_length": r.mean_length,
                         "accuracy retained (%)": 100 * r.accuracy / g.loc[s2_name].accuracy,
                         "length_change_pct": 100 * (r.mean_length / g.loc[s2_name].mean_length - 1)})
    return pd.DataFrame(rows)


if __name__ == "__main__":
    for f in write_configs(ROOT / "data" / "configs"):
        print(f)
