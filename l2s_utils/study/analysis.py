"""Analyses beyond accuracy and length: task-vector spectra (SVD chapter) and self-correction (last chapter)."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import torch

from ..merge.checkpoint import Checkpoint
from ..organism import task as T

LAYER_TYPES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def task_vector_spectra(system1: str | Path, system2: str | Path, max_index: int | None = None) -> pd.DataFrame:
    """Singular values of delta = System 2 - System 1 for every 2-D weight of the decoder layers.

    One row per (layer type, layer, index) with sigma_i / sigma_1 and the cumulative energy share
    sum_{j<=i} sigma_j^2 / sum_j sigma_j^2.
    """
    a, b = Checkpoint(system1), Checkpoint(system2)
    rows = []
    for name in a.names():
        m = re.match(r"model\.layers\.(\d+)\..*\.(\w+_proj)\.weight$", name)
        if not m:
            continue
        s = torch.linalg.svdvals(b.get(name) - a.get(name))
        if s[0] == 0:
            continue
        energy = torch.cumsum(s ** 2, 0) / (s ** 2).sum()
        for i, (v, e) in enumerate(zip((s / s[0]).tolist(), energy.tolist())):
            if max_index is None or i < max_index:
                rows.append({"layer_type": m.group(2), "layer": int(m.group(1)), "index": i + 1, "sigma_norm": v,
                             "energy": e, "full_rank": len(s)})
    return pd.DataFrame(rows)


def spectrum_summary(spec: pd.DataFrame) -> pd.DataFrame:
    """Per layer type: rank needed for 50% / 90% of the task vector's energy, as a share of full rank."""
    out = []
    for lt, g in spec.groupby("layer_type"):
        r50 = g[g.energy >= 0.5].groupby("layer")["index"].min() / g.groupby("layer")["full_rank"].first()
        r90 = g[g.energy >= 0.9].groupby("layer")["index"].min() / g.groupby("layer")["full_rank"].first()
        out.append({"layer_type": lt, "rank share for 50% energy": round(float(r50.mean()), 3),
                    "rank share for 90% energy": round(float(r90.mean()), 3), "full rank": int(g.full_rank.iloc[0])})
    return pd.DataFrame(out)




def self_correction(rows: pd.DataFrame) -> pd.DataFrame:
    """Per model: how often responses flag a slip ("Wait, that is wrong."), whether the flagged step
    really was wrong, whether the correction is right, and the share of wrong single steps that went
    unflagged."""
    out = []
    for model, g in rows.groupby("model", sort=False):
        flagged = real = fixed = steps = wrong_unflagged = 0
        for text in g.response:
            for m in T.SLIP.finditer(text):
                a, op, b, c, a2, op2, b2, c2 = m.groups()
                flagged += 1
                truth = T.apply(int(a), op, int(b))
                real += int(c) != truth
                fixed += (a, op, b) == (a2, op2, b2) and int(c2) == truth
            cleaned = T.SLIP.sub("", text)
            for m in T.FACT.finditer(cleaned):
                a, op, b, c = m.groups()
                steps += 1
                wrong_unflagged += T.apply(int(a), op, int(b)) != int(c)
        n = len(g)
        out.append({"model": model, "responses": n, "flags per response": flagged / max(n, 1),
                    "flagged steps that were wrong (%)": 100 * real / flagged if flagged else float("nan"),
                    "corrections that are right (%)": 100 * fixed / flagged if flagged else float("nan"),
                    "unflagged wrong steps (%)": 100 * wrong_unflagged / steps if steps else float("nan"),
                    "accuracy (%)": 100 * g.correct.mean()})
    return pd.DataFrame(out)
