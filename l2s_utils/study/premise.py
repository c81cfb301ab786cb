"""The organism's premise report: does the toy pair show the paper's premise in miniature?

System 1 and System 2 are generated greedily on the organism's test split, graded, and checked against
:data:`PREMISE_BARS`: System 2 responses several times longer, System 2 clearly more accurate on the hard
levels, System 1 competent on easy levels, almost all System 2 responses reflective and almost no
System 1 response, System 2 length rising with difficulty.

Why this lives in ``study`` and not in ``organism``: the report *generates and grades* (the evaluate
stage), and the stages only import downward (organism < merge < evaluate < study), so a check that
needs generation cannot live in the organism. ``l2s organism --premise`` and the testbed chapter call it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..organism import task as T
from ..organism.prompts import TOY as PROMPT

if TYPE_CHECKING:
    from ..organism.training import Organism


PREMISE_BARS = (
    ("length_ratio", "System 2 responses >= 3x longer than System 1 (mean tokens)", 3.0),
    ("hard_gap", "System 2 accuracy - System 1 accuracy on levels 4-5 >= 10 points", 10.0),
    ("s1_level1", "System 1 accuracy on level 1 >= 80%", 80.0),
    ("s2_reflective", "System 2 reflective responses >= 95%", 95.0),
    ("s1_reflective", "System 1 reflective responses <= 2%", 2.0),
    ("s2_length_rises", "System 2 mean length rises with level (monotone)", 1.0),
)


def evaluate_toy(model_path: Path, problems: list, *, max_tokens: int = 600, batch_size: int = 128,
                 progress: bool = True, model_and_tokenizer=None):
    """Greedy generations of one model on toy problems, graded: one dict per problem."""
    from ..evaluate.generation import Sampling, generate_transformers
    from ..evaluate.grading import grade_toy
    from ..evaluate.reflection import keyword_count

    prompts = [PROMPT.format(question=p.question) for p in problems]
    gens = generate_transformers(model_path, prompts, Sampling(max_tokens=max_tokens), batch_size=batch_size,
                                 progress=progress, model_and_tokenizer=model_and_tokenizer)
    rows = []
    for p, g in zip(problems, gens):
        pred, ok = grade_toy(g.text, p.answer)
        rows.append({"id": p.id, "level": p.level, "question": p.question, "gold": p.answer, "response": g.text,
                     "pred": pred, "correct": ok, "tokens": g.n_tokens, "finish_reason": g.finish_reason,
                     "keywords": keyword_count(g.text), "reflective": keyword_count(g.text) > 0})
    return rows


def premise_report(org: Organism, n_per_level: int = 50, seed: int = 0, max_tokens: int = 600, progress: bool = True):
    """Evaluate System 1 and System 2 on the test split; return (per-level table, bar checks)."""
    import pandas as pd

    problems = T.make_problems("test", n_per_level, seed)
    frames = []
    for name, path in (("System 1", org.system1), ("System 2", org.system2)):
        df = pd.DataFrame(evaluate_toy(path, problems, max_tokens=max_tokens, progress=progress))
        df["model"] = name
        frames.append(df)
    rows = pd.concat(frames, ignore_index=True)
    table = rows.groupby(["model", "level"]).agg(accuracy=("correct", "mean"), mean_tokens=("tokens", "mean"),
                                                 reflective=("reflective", "mean"), n=("correct", "size")).reset_index()
    table["accuracy"] *= 100
    table["reflective"] *= 100
    return rows, table, premise_checks(rows)


def premise_checks(rows) -> list[dict]:
    s1, s2 = rows[rows.model == "System 1"], rows[rows.model == "System 2"]
    hard = [4, 5]
    s2_len = s2.groupby("level")["tokens"].mean()
    values = {
        "length_ratio": s2.tokens.mean() / max(1e-9, s1.tokens.mean()),
        "hard_gap": 100 * (s2[s2.level.isin(hard)].correct.mean() - s1[s1.level.isin(hard)].correct.mean()),
        "s1_level1": 100 * s1[s1.level == 1].correct.mean(),
        "s2_reflective": 100 * s2.reflective.mean(),
        "s1_reflective": 100 * s1.reflective.mean(),
        "s2_length_rises": float(all(a < b for a, b in zip(s2_len.values[:-1], s2_len.values[1:]))),
    }
    out = []
    for key, text, bar in PREMISE_BARS:
        v = values[key]
        ok = v <= bar if key == "s1_reflective" else v >= bar
        out.append({"check": key, "description": text, "value": round(float(v), 2), "bar": bar, "passed": bool(ok)})
    return out
