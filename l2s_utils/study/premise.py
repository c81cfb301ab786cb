"""The organism's premise report: does the toy pair show the paper's premise in miniature?

System 1 and System 2 are generated greedily on the organism's test split, graded, and checked against
:data:`PREMISE_BARS`: System 2 responses several times longer, System 2 clearly more accurate on the hard
levels, System 1 competent on easy levels, almost all System 2 responses reflective and almost no
System 1 response, System 2 length rising with difficulty. ``l2s organism --premise`` calls
:func:`premise_report`; the testbed chapter measures the same bars through the cached study pipeline
(:func:`premise_checks` on ``Study.baselines`` and ``Study.geometry``).

A seventh bar is about *geometry*: the real pairs are linearly connected (task arithmetic at alpha 0.7
keeps 53.5 of R1-Distill-7B's 54.5 points, Wu et al. Table 1), so the straight path from System 1 to
System 2 must have no accuracy valley here either. The *accuracy barrier* is

    B = max over alpha in (0, 1) of  [(1 - alpha) acc(System 1) + alpha acc(System 2)] - acc(theta_alpha),
    theta_alpha = theta_1 + alpha (theta_2 - theta_1)   (task arithmetic with the System 1 base)

measured at alpha in :data:`BARRIER_ALPHAS`; the bar is B <= 10 points. The loss barrier (same form, on
the mean token loss of held-out System 1 and System 2 traces; measured minus linear) and the relative
task-vector norm ||theta_2 - theta_1|| / ||theta_1|| per layer type are reported beside it.

Why this lives in ``study`` and not in ``organism``: the report *generates and grades* (the evaluate
stage), and the stages only import downward (organism < merge < evaluate < study), so a check that
needs generation cannot live in the organism. ``l2s organism --premise`` and the testbed chapter call it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..organism import task as T
from ..organism.prompts import TOY as PROMPT

if TYPE_CHECKING:
    import pandas as pd

    from ..organism.training import Organism


PREMISE_BARS = (
    ("length_ratio", "System 2 responses >= 3x longer than System 1 (mean tokens)", 3.0),
    ("hard_gap", "System 2 accuracy - System 1 accuracy on levels 4-5 >= 10 points", 10.0),
    ("s1_level1", "System 1 accuracy on level 1 >= 80%", 80.0),
    ("s2_reflective", "System 2 reflective responses >= 95%", 95.0),
    ("s1_reflective", "System 1 reflective responses <= 2%", 2.0),
    ("s2_length_rises", "System 2 mean length rises with level (monotone)", 1.0),
    ("barrier", "Accuracy barrier on the System 1 -> System 2 path (task arithmetic, alpha 0.1..0.9) <= 10 points", 10.0),
    # long-to-short (organism v17): what merging should show
    ("s2_headroom", "System 2 accuracy between 75% and 92% (room to rank the methods)", (75.0, 92.0)),
    ("ta_shorter", "Task arithmetic at some alpha in {0.5, 0.7, 0.9}: >= 30% shorter than System 2 with >= 95% of its "
                   "accuracy", 30.0),
    ("ta_adaptive", "That merge shortens the two easiest levels >= 10 points more than the two hardest (relative)", 10.0),
    ("ta_reflects_hard", "That merge still reflects on >= 50% of the hardest level's responses", 50.0),
    ("ties_shorter", "TIES (k 0.8, alpha 1.0, the toy profile's): >= 25% shorter than System 2 with >= 95% of its "
                     "accuracy", 25.0),
)
SHORT_ALPHAS = (0.5, 0.7, 0.9)  # where the ta_* bars look for the long-to-short merge
KEEP = 0.95  # a merge "keeps" System 2's accuracy at >= 95% of it
BARRIER_ALPHAS = (0.1, 0.3, 0.5, 0.7, 0.9)
LOWER_IS_BETTER = {"s1_reflective", "barrier"}


def toy_max_tokens(profile: str = "toy") -> int:
    """The generation budget of the toy study (its profile's ``sampling.max_tokens``): the premise uses the same."""
    from .profiles import load_profile

    return int(load_profile(profile)["sampling"]["max_tokens"])


def toy_test_set(profile: str = "toy", seed: int | None = None) -> list:
    """The book's toy test set: the profile's ``toy`` benchmark size per level from the test split (seed: the
    profile's)."""
    from .profiles import load_profile

    prof = load_profile(profile)
    per_level = next(int(b.get("per_level", 40)) for b in prof["benchmarks"] if b["name"] == "toy")
    return T.make_problems("test", per_level, prof["seed"] if seed is None else seed)


def evaluate_toy(model_path: Path, problems: list, *, max_tokens: int | None = None, batch_size: int = 128,
                 progress: bool = True, model_and_tokenizer=None):
    """Greedy generations of one model on toy problems, graded: one dict per problem."""
    from ..evaluate.generation import Sampling, generate_transformers
    from ..evaluate.grading import grade_toy
    from ..evaluate.reflection import keyword_count

    prompts = [PROMPT.format(question=p.question) for p in problems]
    gens = generate_transformers(model_path, prompts, Sampling(max_tokens=max_tokens or toy_max_tokens()), batch_size=batch_size,
                                 progress=progress, model_and_tokenizer=model_and_tokenizer)
    rows = []
    for p, g in zip(problems, gens):
        pred, ok = grade_toy(g.text, p.answer)
        rows.append({"id": p.id, "level": p.level, "question": p.question, "gold": p.answer, "response": g.text,
                     "pred": pred, "correct": ok, "tokens": g.n_tokens, "finish_reason": g.finish_reason,
                     "keywords": keyword_count(g.text), "reflective": keyword_count(g.text) > 0})
    return rows


def premise_report(org: Organism, n_per_level: int = 40, seed: int = 0, max_tokens: int | None = None, progress: bool = True,
                   alphas: tuple[float, ...] = BARRIER_ALPHAS, smallest: bool = False) -> dict:
    """Evaluate System 1, System 2 and the task-arithmetic path between them on the test split.

    Returns a dict: ``rows`` (one graded row per model and problem; models "System 1", "System 2" and
    "TA alpha=a"), ``table`` (accuracy / length / reflection per model and level), ``path`` (accuracy,
    length and held-out losses per alpha, with the linear predictions), ``norms`` (relative task-vector
    norm per layer type), ``barrier`` (accuracy and loss barriers) and ``checks`` (the seven bars).
    """
    import pandas as pd

    from ..evaluate.generation import load_model

    problems = T.make_problems("test", n_per_level, seed)
    max_tokens = max_tokens or toy_max_tokens()
    model, tok = load_model(org.system1, "cpu", dtype=torch.float32)
    s1, s2 = _state(org.system1), _state(org.system2)
    frames = []
    for a in (0.0, *alphas, 1.0):
        model.load_state_dict(interpolate(s1, s2, a), strict=True)
        df = pd.DataFrame(evaluate_toy(None, problems, max_tokens=max_tokens, progress=progress,
                                       model_and_tokenizer=(model, tok)))
        df["model"] = {0.0: "System 1", 1.0: "System 2"}.get(a, f"TA alpha={a:g}")
        df["alpha"] = a
        frames.append(df)
    rows = pd.concat(frames, ignore_index=True)
    model.load_state_dict(ties_state(org), strict=True)
    ties_rows = pd.DataFrame(evaluate_toy(None, problems, max_tokens=max_tokens, progress=progress,
                                          model_and_tokenizer=(model, tok)))
    ties_rows["model"], ties_rows["alpha"] = "TIES", float("nan")
    losses = held_out_losses(model, tok, s1, s2, (0.0, *alphas, 1.0), seed=seed)
    margins = style_margins(model, tok, s1, s2, (0.0, *alphas, 1.0), problems)
    path = alpha_path(rows, losses).merge(margins, on="alpha")
    bars = barriers(path)
    table = (rows.groupby(["model", "alpha", "level"]).agg(accuracy=("correct", "mean"), mean_tokens=("tokens", "mean"),
                                                           reflective=("reflective", "mean"), n=("correct", "size"))
             .reset_index().sort_values(["alpha", "level"]).drop(columns="alpha"))
    table["accuracy"] *= 100
    table["reflective"] *= 100
    ties_table = (ties_rows.groupby("level").agg(accuracy=("correct", "mean"), mean_tokens=("tokens", "mean"),
                                                 reflective=("reflective", "mean"), n=("correct", "size")).reset_index())
    ties_table.insert(0, "model", "TIES")
    ties_table["accuracy"] *= 100
    ties_table["reflective"] *= 100
    table = pd.concat([table, ties_table], ignore_index=True)
    merges = pd.concat([rows[rows.model != "System 1"], ties_rows], ignore_index=True)
    return {"rows": pd.concat([rows, ties_rows], ignore_index=True), "table": table, "path": path,
            "norms": task_vector_norms(s1, s2), "barrier": bars,
            "checks": premise_checks(rows[rows.model.isin(["System 1", "System 2"])], barrier=bars["accuracy"],
                                     smallest=smallest, merges=merges),
            "n_per_level": n_per_level}


def report_json(rep: dict) -> dict:
    """A premise report in its stored form (``premise.json``): tables as records, the per-problem rows left out."""
    return {k: (v.to_dict(orient="records") if hasattr(v, "to_dict") else v) for k, v in rep.items() if k != "rows"}


def ties_state(org: Organism) -> dict:
    """TIES of the pair at the toy profile's setting, through the merge engine (its config builder and its kernel),
    as a float32 state dict."""
    import tempfile

    from ..merge import merge
    from .profiles import load_profile, study_merge_config

    cfg = study_merge_config(load_profile("toy"), "ties", str(org.system1), str(org.system2))
    with tempfile.TemporaryDirectory() as d:
        merge(cfg, Path(d) / "ties", progress=False)
        return _state(Path(d) / "ties")


def merge_effect(s2, merged) -> dict:
    """What a merge does against System 2, from graded rows of both (same problems): accuracy kept (merge / System 2),
    shortening (1 - merge tokens / System 2 tokens, %) overall, on the two easiest and the two hardest levels, and
    the merge's reflective share on the hardest level (%)."""
    def short(levels):
        a, b = s2[s2.level.isin(levels)], merged[merged.level.isin(levels)]
        return 100 * (1 - b.tokens.mean() / max(1e-9, a.tokens.mean()))

    top = max(T.LEVELS)
    return {"accuracy": 100 * merged.correct.mean(), "kept": merged.correct.mean() / max(1e-9, s2.correct.mean()),
            "shorter": short(list(T.LEVELS)), "shorter_easy": short(list(T.EASY_LEVELS)),
            "shorter_hard": short(list(T.HARD_LEVELS)),
            "reflective_top": 100 * merged[merged.level == top].reflective.mean()}


def best_task_arithmetic(rows) -> tuple[float | None, dict | None]:
    """The task-arithmetic merge of the ta_* bars: among alpha in :data:`SHORT_ALPHAS` whose merge keeps >= 95% of
    System 2's accuracy, the shortest; else the one keeping the most accuracy. (alpha, its :func:`merge_effect`)."""
    s2 = rows[rows.model == "System 2"]
    found = {}
    for a in SHORT_ALPHAS:
        m = rows[rows.model == f"TA alpha={a:g}"]
        if len(m):
            found[a] = merge_effect(s2, m)
    if not found:
        return None, None
    keep = {a: e for a, e in found.items() if e["kept"] >= KEEP}
    if keep:
        a = max(keep, key=lambda x: keep[x]["shorter"])
    else:
        a = max(found, key=lambda x: found[x]["kept"])
    return a, found[a]


def seed_record(org: Organism, report: dict) -> dict:
    """One seed's line of the robustness table, from a premise report in its JSON form (tables as records).

    Keys: scale, seed, recipe, environment, train_s, n_params, accuracy (System 1 / System 2, %),
    hard_gap, barrier, path (alpha, accuracy, linear prediction, reflective %), checks, passed, bars.
    """
    path = report["path"]
    acc = {r["alpha"]: r["accuracy"] for r in path}
    checks = report["checks"]
    values = {c["check"]: c["value"] for c in checks}
    m = org.manifest
    return {"scale": org.scale, "seed": m["spec"]["seed"], "recipe": m["recipe"], "environment": m.get("environment"),
            "train_s": m["timings"]["total_s"], "n_params": m["n_params"], "source": org.source,
            "accuracy": {"System 1": acc[0.0], "System 2": acc[1.0]}, "hard_gap": values.get("hard_gap"),
            "barrier": report["barrier"]["accuracy"],
            "path": [{"alpha": r["alpha"], "accuracy": r["accuracy"], "linear": r["accuracy (linear)"],
                      "reflective": r["reflective"]} for r in path],
            "checks": checks, "passed": sum(bool(c["passed"]) for c in checks), "bars": len(checks)}


# ---------------------------------------------------------------------------------------------
# Geometry: the straight path from System 1 to System 2
# ---------------------------------------------------------------------------------------------


def _state(path: Path) -> dict:
    """Every tensor of a checkpoint in float32 (single file or sharded), through the merge engine's reader."""
    from ..merge.checkpoint import Checkpoint

    ck = Checkpoint(path)
    return {k: ck.get(k) for k in ck.names()}


def interpolate(s1: dict, s2: dict, alpha: float) -> dict:
    """theta_alpha = theta_1 + alpha (theta_2 - theta_1): the registry's task-arithmetic kernel, tensor by tensor."""
    from ..merge.methods.basic import task_arithmetic

    if alpha in (0.0, 1.0):  # the endpoints themselves, bit for bit (s1 + (s2 - s1) may differ in the last bit)
        return {k: (s1 if alpha == 0.0 else s2)[k].clone() for k in s1}
    return {k: task_arithmetic(s1[k], [s2[k]], weights=[1.0], alpha=float(alpha), name=k) for k in s1}


def task_vector_norms(s1: dict, s2: dict) -> pd.DataFrame:
    """||theta_2 - theta_1||_F / ||theta_1||_F per layer type (q_proj, ..., embed_tokens, lm_head), over all layers."""
    import pandas as pd

    num: dict[str, float] = {}
    den: dict[str, float] = {}
    for k in s1:
        kind = k.split(".")[-2] if k.endswith((".weight", ".bias")) else k
        kind += "" if k.endswith(".weight") else " (bias)"
        num[kind] = num.get(kind, 0.0) + float((s2[k] - s1[k]).pow(2).sum())
        den[kind] = den.get(kind, 0.0) + float(s1[k].pow(2).sum())
    total = (sum(num.values()) / sum(den.values())) ** 0.5
    rows = [{"layer type": k, "relative norm": (num[k] / den[k]) ** 0.5 if den[k] else float("nan")} for k in num]
    return pd.DataFrame(rows + [{"layer type": "all", "relative norm": total}])


@torch.inference_mode()
def held_out_losses(model, tok, s1: dict, s2: dict, alphas, n: int = 100, seed: int = 0, batch: int = 50) -> dict:
    """Mean token loss of theta_alpha on held-out (test split) System 1 and System 2 traces, per alpha."""
    import random

    from ..organism.prompts import END, TOY
    from ..organism.training import pad_pairs

    problems = T.make_problems("test", -(-n // len(T.LEVELS)), seed + 7)[:n]
    rng = random.Random(f"{seed}-held-out")
    sets = {"system1": [(TOY.format(question=p.question), T.system1_trace(p) + END) for p in problems],
            "system2": [(TOY.format(question=p.question), T.system2_trace(p, rng) + END) for p in problems]}
    batches = {kind: [pad_pairs([(tok(p, add_special_tokens=False)["input_ids"], tok(r, add_special_tokens=False)["input_ids"])
                                 for p, r in pairs[i:i + batch]], tok.pad_token_id) for i in range(0, len(pairs), batch)]
               for kind, pairs in sets.items()}  # tokenized and padded once, scored at every alpha
    out: dict[float, dict[str, float]] = {}
    for a in alphas:
        model.load_state_dict(interpolate(s1, s2, a), strict=True)
        out[a] = {}
        for kind, chunks in batches.items():
            tot, cnt = 0.0, 0
            for x, att, lab in chunks:
                logits = model(input_ids=x, attention_mask=att).logits[:, :-1].float()
                tgt = lab[:, 1:]
                loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1),
                                                         ignore_index=-100, reduction="sum")
                tot += float(loss)
                cnt += int((tgt != -100).sum())
            out[a][kind] = tot / cnt
    return out


def style_margins(model, tok, s1: dict, s2: dict, alphas, problems, batch: int = 128) -> pd.DataFrame:
    """The style decision along the path: the first answer token's logit of ``<think>`` minus the best other
    token's, per problem (positive: greedy decoding starts the long style). One row per alpha: mean, min and
    max over the problems, and the share of problems with a positive margin (%)."""
    import pandas as pd

    think = tok.convert_tokens_to_ids("<think>")
    prompts = [PROMPT.format(question=p.question) for p in problems]
    out = []
    for a in alphas:
        model.load_state_dict(interpolate(s1, s2, a), strict=True)
        margins = []
        for i in range(0, len(prompts), batch):
            enc = tok(prompts[i:i + batch], return_tensors="pt", padding=True)
            with torch.no_grad():
                logits = model(**enc).logits[:, -1].float()
            other = logits.clone()
            other[:, think] = float("-inf")
            margins.append(logits[:, think] - other.max(-1).values)
        m = torch.cat(margins)
        out.append({"alpha": a, "think margin (mean)": m.mean().item(), "think margin (min)": m.min().item(),
                    "think margin (max)": m.max().item(), "think first (%)": 100 * (m > 0).float().mean().item()})
    return pd.DataFrame(out)


def alpha_path(rows, losses: dict | None = None) -> pd.DataFrame:
    """One row per alpha: accuracy (%), mean tokens, reflective (%), held-out losses, and the linear predictions.

    ``rows`` are graded rows with an ``alpha`` column (0 = System 1, 1 = System 2).
    """
    g = rows.groupby("alpha").agg(accuracy=("correct", "mean"), mean_tokens=("tokens", "mean"),
                                  reflective=("reflective", "mean"), n=("correct", "size")).reset_index()
    g["accuracy"] *= 100
    g["reflective"] *= 100
    a0, a1 = g.set_index("alpha").accuracy.loc[0.0], g.set_index("alpha").accuracy.loc[1.0]
    g["accuracy (linear)"] = (1 - g.alpha) * a0 + g.alpha * a1
    if losses:
        for kind in ("system1", "system2"):
            col = f"loss on {kind} traces"
            g[col] = [losses[a][kind] for a in g.alpha]
            l0, l1 = losses[0.0][kind], losses[1.0][kind]
            g[col + " (linear)"] = (1 - g.alpha) * l0 + g.alpha * l1
    return g


def barriers(path) -> dict:
    """Accuracy barrier (max of linear - measured, points) and loss barriers (max of measured - linear)."""
    inner = path[(path.alpha > 0) & (path.alpha < 1)]
    out = {"accuracy": float((inner["accuracy (linear)"] - inner.accuracy).max())}
    for kind in ("system1", "system2"):
        col = f"loss on {kind} traces"
        if col in inner:
            out[f"loss ({kind} traces)"] = float((inner[col] - inner[col + " (linear)"]).max())
    return out


def premise_checks(rows, barrier: float | None = None, smallest: bool = False, merges=None) -> list[dict]:
    """The bars of :data:`PREMISE_BARS` on graded System 1 / System 2 rows; the barrier bar only when given, the
    long-to-short bars only when ``merges`` (graded rows of System 2, "TA alpha=a" and "TIES") are given.

    ``smallest``: the smallest ladder scale, whose System 1 level-1 bar is relaxed to 60%.
    """
    s1, s2 = rows[rows.model == "System 1"], rows[rows.model == "System 2"]
    hard = list(T.HARD_LEVELS)
    s2_len = s2.groupby("level")["tokens"].mean()
    values = {
        "length_ratio": s2.tokens.mean() / max(1e-9, s1.tokens.mean()),
        "hard_gap": 100 * (s2[s2.level.isin(hard)].correct.mean() - s1[s1.level.isin(hard)].correct.mean()),
        "s1_level1": 100 * s1[s1.level == 1].correct.mean(),
        "s2_reflective": 100 * s2.reflective.mean(),
        "s1_reflective": 100 * s1.reflective.mean(),
        "s2_length_rises": float(all(a < b for a, b in zip(s2_len.values[:-1], s2_len.values[1:]))),
    }
    if barrier is not None:
        values["barrier"] = barrier
    values["s2_headroom"] = 100 * s2.correct.mean()
    detail: dict[str, str] = {}
    kept: dict[str, bool] = {}
    if merges is not None:
        alpha, eff = best_task_arithmetic(merges)
        if eff is not None:
            ok = eff["kept"] >= KEEP
            values["ta_shorter"] = eff["shorter"]
            detail["ta_shorter"] = (f"alpha {alpha:g}: {eff['shorter']:.1f}% shorter, {eff['accuracy']:.1f}% accuracy "
                                    f"({100 * eff['kept']:.1f}% of System 2's)")
            values["ta_adaptive"] = eff["shorter_easy"] - eff["shorter_hard"]
            detail["ta_adaptive"] = (f"alpha {alpha:g}: easy levels {eff['shorter_easy']:.1f}% shorter, hard "
                                     f"{eff['shorter_hard']:.1f}%")
            values["ta_reflects_hard"] = eff["reflective_top"]
            detail["ta_reflects_hard"] = f"alpha {alpha:g}, level {max(T.LEVELS)}"
            kept["ta_shorter"] = ok
        tm = merges[merges.model == "TIES"]
        if len(tm):
            e = merge_effect(merges[merges.model == "System 2"], tm)
            values["ties_shorter"] = e["shorter"]
            detail["ties_shorter"] = (f"{e['shorter']:.1f}% shorter, {e['accuracy']:.1f}% accuracy "
                                      f"({100 * e['kept']:.1f}% of System 2's)")
            kept["ties_shorter"] = e["kept"] >= KEEP
    out = []
    for key, text, bar in PREMISE_BARS:
        if key not in values:
            continue
        v = values[key]
        if key == "s1_level1" and smallest:
            bar, text = 60.0, text.replace(">= 80%", ">= 60% (relaxed at the smallest scale)")
        if isinstance(bar, tuple):
            ok = bar[0] <= v <= bar[1]
        else:
            ok = v <= bar if key in LOWER_IS_BETTER else v >= bar
        if key in ("ta_shorter", "ties_shorter"):
            ok = ok and kept[key]
        row = {"check": key, "description": text, "value": round(float(v), 2), "bar": bar, "passed": bool(ok)}
        if key in detail:
            row["detail"] = detail[key]
        out.append(row)
    return out


def _bars(r: dict) -> str:
    failed = [c["check"] for c in r["checks"] if not c["passed"]]
    return f"{r['passed']} of {r['bars']}" + (f" (fails: {', '.join(failed)})" if failed else "")


def _threads(n) -> str:
    return "threads not recorded" if n is None else f"{n} thread{'' if n == 1 else 's'}"


def seeds_table(scale: str | None = None):
    """The recorded robustness table of ``scale`` (default: the main scale) across training seeds, or None.

    Read from ``data/organism/seeds-<scale>.json`` (written by ``benchmarks/organism_seeds.py``), and only
    when it was measured on today's recipe: a record of another recipe describes another organism.
    """
    import json

    import pandas as pd

    from ..organism import training as O

    scale = scale or O.MAIN_SCALE
    f = O.SHIPPED_DIR / f"seeds-{scale}.json"
    if scale not in O.SCALES or not f.is_file():
        return None
    doc = json.loads(f.read_text())
    if doc.get("recipe") != O.recipe_hash(O.SCALES[scale]):
        return None
    def value(r, key):
        return next((c["value"] for c in r["checks"] if c["check"] == key), None)

    return pd.DataFrame([{"seed": r["seed"], "System 1 (%)": r["accuracy"]["System 1"],
                          "System 2 (%)": r["accuracy"]["System 2"],
                          "levels 4-5 gap (points)": r["hard_gap"], "barrier (points)": r["barrier"],
                          "TA shorter (%)": value(r, "ta_shorter"), "TIES shorter (%)": value(r, "ties_shorter"),
                          "easy - hard (points)": value(r, "ta_adaptive"),
                          "bars passed": _bars(r),
                          "training": f"{r['train_s']:,.0f} s ({_threads((r.get('environment') or {}).get('threads'))})"}
                         for r in doc["seeds"]])
