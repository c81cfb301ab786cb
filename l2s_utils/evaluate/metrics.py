"""Metrics over the tidy result table (one row per model x benchmark x problem).

- accuracy (%) with a percentile-bootstrap 95% CI (seeded, ``n_boot`` resamples of problems);
- mean response tokens (one fixed tokenizer per profile) with its bootstrap CI;
- length change vs a reference model (System 2), in %: 100 (L - L_ref) / L_ref;
- reflective-response ratio (%) and mean keyword count per reflective response (the paper's Table 3 "B");
- truncation rate (%) (finish reason "length");
- AES, the accuracy-efficiency score of O1-Pruner (Luo et al. 2025, arXiv 2501.12570), against the reference:
      dL = (L_ref - L) / L_ref,  dA = (A - A_ref) / A_ref
      AES = alpha dL + beta dA        if dA >= 0
      AES = alpha dL - gamma |dA|     if dA <  0        with alpha = 1, beta = 3, gamma = 5.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def bootstrap_ci(values, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of ``values``."""
    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def aes(acc: float, length: float, acc_ref: float, length_ref: float, alpha: float = 1.0, beta: float = 3.0,
        gamma: float = 5.0) -> float:
    if not acc_ref or not length_ref:
        return float("nan")
    dl = (length_ref - length) / length_ref
    da = (acc - acc_ref) / acc_ref
    return alpha * dl + (beta * da if da >= 0 else -gamma * abs(da))


def summarize(df: pd.DataFrame, by=("model", "benchmark"), reference: str | None = None, n_boot: int = 1000,
              seed: int = 0) -> pd.DataFrame:
    """One row per group with every metric; ``reference`` names the System 2 model for length change and AES."""
    rows = []
    for key, g in df.groupby(list(by), sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        acc = 100 * g.correct.astype(float)
        lo, hi = bootstrap_ci(acc, n_boot, seed)
        llo, lhi = bootstrap_ci(g.tokens, n_boot, seed)
        refl = g[g.reflective]
        rows.append({**dict(zip(by, key)), "n": len(g), "accuracy": acc.mean(), "acc_lo": lo, "acc_hi": hi,
                     "mean_tokens": g.tokens.mean(), "tokens_lo": llo, "tokens_hi": lhi,
                     "reflective_pct": 100 * g.reflective.mean(), "keyword_freq": refl.keywords.mean() if len(refl) else 0.0,
                     "truncated_pct": 100 * g.truncated.mean() if "truncated" in g else float("nan")})
    out = pd.DataFrame(rows)
    if reference is not None and "model" in by and (out.model == reference).any():
        other = [b for b in by if b != "model"]
        ref = out[out.model == reference].set_index(other) if other else out[out.model == reference]
        changes, scores = [], []
        for _, r in out.iterrows():
            key = tuple(r[b] for b in other)
            try:
                rr = (ref.loc[key[0]] if len(key) == 1 else ref.loc[key]) if other else ref.iloc[0]
            except KeyError:  # no reference row for this group
                changes.append(float("nan"))
                scores.append(float("nan"))
                continue
            if isinstance(rr, pd.DataFrame):
                rr = rr.iloc[0]
            changes.append(100 * (r.mean_tokens - rr.mean_tokens) / rr.mean_tokens if rr.mean_tokens else float("nan"))
            scores.append(aes(r.accuracy, r.mean_tokens, rr.accuracy, rr.mean_tokens))
        out["length_change_pct"] = changes
        out["aes"] = scores
    return out
