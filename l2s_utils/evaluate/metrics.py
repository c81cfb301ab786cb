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

Sampled evaluation (several responses per problem; rows carry a ``sample`` index), all with percentile
bootstrap CIs over *problems* (:func:`sampled_metrics`):
- avg@k: the mean correctness of the first k samples of a problem, averaged over problems;
- pass@k: the unbiased estimator 1 - C(n-c, k) / C(n, k) of Chen et al. 2021 (n samples, c correct);
- maj@k: whether the most frequent answer among the first k samples is correct (ties: the answer seen
  first); unanswered samples do not vote.

Token-budget curves (:func:`budget_curve`): the share of problems answered correctly within B generated
tokens, for a grid of B, from the stored generations (a response longer than B counts as unanswered).
"""

from __future__ import annotations

from collections import Counter

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


# -- sampled evaluation ------------------------------------------------------------------------------

def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k) (stable product form)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def avg_at_k(correct, k: int) -> float:
    """Mean correctness of the first k samples of one problem."""
    x = np.asarray(correct, dtype=float)[:k]
    if len(x) < k:
        raise ValueError(f"avg@{k} needs {k} samples, got {len(x)}")
    return float(x.mean())


def maj_at_k(answers, correct, k: int) -> float:
    """1.0 if the most frequent answer among the first k samples is correct (ties: the one seen first)."""
    if len(answers) < k:
        raise ValueError(f"maj@{k} needs {k} samples, got {len(answers)}")
    votes = [(a, bool(c)) for a, c in zip(list(answers)[:k], list(correct)[:k]) if a is not None and a == a and str(a) != ""]
    if not votes:
        return 0.0
    counts = Counter(a for a, _ in votes)
    top = max(counts.values())
    winner = next(a for a, _ in votes if counts[a] == top)
    return float(any(c for a, c in votes if a == winner))


def sampled_metrics(df: pd.DataFrame, ks=(1,), by=("model", "benchmark"), answer: str = "pred", n_boot: int = 1000,
                    seed: int = 0, tokens: str = "tokens") -> pd.DataFrame:
    """avg@k, pass@k and maj@k (in %) with bootstrap CIs over problems, plus tokens per sample.

    ``df``: one row per (problem ``id``, ``sample``) with ``correct`` and the extracted ``answer`` column;
    each problem needs at least max(ks) samples (the first k by sample index are used for avg@k and maj@k;
    pass@k uses all n samples, as the unbiased estimator does).
    """
    rows = []
    for key, g in df.groupby(list(by), sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        g = g.sort_values("sample") if "sample" in g else g
        per = list(g.groupby("id", sort=False))
        for k in ks:
            out = {**dict(zip(by, key)), "k": k, "problems": len(per)}
            scores = {"avg": [], "pass": [], "maj": []}
            for _, p in per:
                c = p.correct.astype(bool).tolist()
                scores["avg"].append(100 * avg_at_k(c, k))
                scores["pass"].append(100 * pass_at_k(len(c), sum(c), k))
                scores["maj"].append(100 * maj_at_k(p[answer].tolist(), c, k))
            for name, v in scores.items():
                lo, hi = bootstrap_ci(v, n_boot, seed)
                out.update({f"{name}@k": float(np.mean(v)), f"{name}_lo": lo, f"{name}_hi": hi})
            out.update({"samples": len(g), "mean_tokens": float(g[tokens].mean()), "median_tokens": float(g[tokens].median())})
            rows.append(out)
    return pd.DataFrame(rows)


# -- token budgets -----------------------------------------------------------------------------------

def default_budgets(tokens, points: int = 24, start: int = 16) -> list[int]:
    """A geometric grid from ``start`` to the longest response (inclusive)."""
    top = int(max(np.max(np.asarray(tokens)), start + 1))
    return sorted({int(round(b)) for b in np.geomspace(start, top, points)} | {top})


def budget_curve(df: pd.DataFrame, budgets=None, by=("model",), tokens: str | None = None) -> pd.DataFrame:
    """Accuracy (%) within a budget of B generated tokens, for each B and group, from stored rows.

    A row counts as correct within B when it is correct and its response took at most B tokens; a longer
    response would have been cut at B and counts as unanswered. At the largest budget the curve is the
    plain accuracy. ``finished_pct`` is the share of responses that ended (not truncated) within B.
    ``tokens`` defaults to ``generated_tokens`` (the model's own count) if present, else ``tokens``.
    With several samples per problem every row counts once (the avg@n curve).
    """
    col = tokens or ("generated_tokens" if "generated_tokens" in df else "tokens")
    budgets = list(budgets) if budgets is not None else default_budgets(df[col])
    rows = []
    for key, g in df.groupby(list(by), sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        n = np.asarray(g[col], dtype=float)
        ok = np.asarray(g.correct, dtype=bool)
        ended = ~np.asarray(g.truncated, dtype=bool) if "truncated" in g else np.ones(len(g), bool)
        for b in budgets:
            within = n <= b
            rows.append({**dict(zip(by, key)), "budget": int(b), "accuracy": 100 * float((ok & within).mean()),
                         "finished_pct": 100 * float((within & ended).mean()), "n": len(g)})
    return pd.DataFrame(rows)
