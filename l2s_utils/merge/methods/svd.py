"""The SVD methods: LoRE-Merging (low-rank task vectors around an estimated base) and Twin-Merging (SVD part).

    lore             Liu et al. 2025, "LoRE-Merging"                            arXiv 2502.10749
    twin             Lu et al. 2024, "Twin-Merging" (SVD part only)             arXiv 2406.15479
"""

from __future__ import annotations

import math
from typing import Callable, Iterator, Sequence

import torch
from torch import Tensor

from .basic import task_arithmetic
from .dare import tensor_seed
from .registry import ALPHA, WEIGHT, Method, MergeConfigError, Param, Stream, finite, register
from .ties import K, elect_and_combine, trim_magnitude


def svd_lowrank_exact(x: Tensor, rank: int) -> Tensor:
    """Best rank-r approximation U_r diag(S_r) V_r^T of a 2-D tensor (Eckart-Young), in fp32."""
    u, s, vh = torch.linalg.svd(x, full_matrices=False)
    r = min(rank, s.numel())
    return (u[:, :r] * s[:r]) @ vh[:r]


def top_right_subspace(make_iter: Callable[[], Iterator[Tensor]], n_cols: int, rank: int, *, oversample: int = 8,
                       iterations: int = 4, seed: int = 0) -> Tensor:
    """V_r (n x r, orthonormal columns): the top-r right singular vectors of A, by randomized subspace iteration.

    ``make_iter()`` yields A's rows in consecutive chunks (m_c x n); A itself is never held. With l = r + p
    (p = ``oversample``) columns, V <- orth(Omega) (Omega n x l Gaussian, seeded), then ``iterations`` times
    V <- orth(A^T A V), then Rayleigh-Ritz: the top-r eigenvectors W of H = (A V)^T (A V) give V_r = V W
    (Halko, Martinsson & Tropp 2011, algorithms 4.4 and 5.1, on A^T A). Every pass reads A once and
    accumulates chunk^T (chunk V) (n x l) and (chunk V)^T (chunk V) (l x l) in fp64: memory O(n l) plus one
    chunk, whatever m. The best rank-r approximation is then A V_r V_r^T (row by row). The error against
    the exact truncated SVD falls as (sigma_{l+1} / sigma_r)^(2 iterations + 1); it is largest for a flat
    spectrum (noise), where every rank-r subspace is nearly as good (the book reports both cases).
    """
    l = min(rank + oversample, n_cols)
    g = torch.Generator().manual_seed(seed)
    v = torch.linalg.qr(torch.randn(n_cols, l, generator=g, dtype=torch.float64)).Q
    for it in range(iterations + 1):
        z = torch.zeros(n_cols, l, dtype=torch.float64)
        h = torch.zeros(l, l, dtype=torch.float64)
        v32 = v.float()
        for a in make_iter():
            y = a.float() @ v32
            if it < iterations:
                z += (a.t().float() @ y).double()
            else:
                h += (y.t() @ y).double()
        if it < iterations:
            v = torch.linalg.qr(z).Q
    evals, w = torch.linalg.eigh(h)  # ascending
    return (v @ w[:, -min(rank, l):].flip(1)).float()


def svt(x: Tensor, threshold: float) -> Tensor:
    """Singular value thresholding: U diag(max(sigma - threshold, 0)) V^T (the prox of the nuclear norm)."""
    u, s, vh = torch.linalg.svd(x, full_matrices=False)
    s = torch.clamp(s - threshold, min=0.0)
    keep = s > 0
    return (u[:, keep] * s[keep]) @ vh[keep]


def squared_nuclear_threshold(sigma: Tensor, mu: float) -> float:
    """The threshold tau of the prox of mu ||.||_*^2: argmin_d ||d - x||_F^2 + mu ||d||_*^2 = SVT_tau(x) with
    tau = mu * sum_j (sigma_j - tau)_+ (KKT of min_s sum_j (s_j - sigma_j)^2 + mu (sum_j s_j)^2, s >= 0).
    With sigma sorted descending and k singular values kept, tau = mu S_k / (1 + mu k) (S_k = their sum);
    k is the largest with sigma_k > tau_k. Unlike the plain nuclear norm, tau grows with the spectrum."""
    sig = torch.sort(sigma.double(), descending=True).values
    if mu == 0 or sig.numel() == 0 or float(sig[0]) <= 0:
        return 0.0
    k = torch.arange(1, sig.numel() + 1, dtype=torch.float64)
    tau = mu * torch.cumsum(sig, 0) / (1 + mu * k)
    valid = torch.nonzero(sig > tau).flatten()
    return float(tau[int(valid[-1])])


def prox_nuclear(x: Tensor, mu: float, nuclear: str = "plain") -> Tensor:
    """argmin_d ||d - x||_F^2 + mu N(d): SVT at mu/2 for N = ||.||_* ('plain'), at the tau of
    :func:`squared_nuclear_threshold` for N = ||.||_*^2 ('squared')."""
    if nuclear == "plain":
        return svt(x, mu / 2.0)
    u, s, vh = torch.linalg.svd(x, full_matrices=False)
    s = torch.clamp(s - squared_nuclear_threshold(s, mu), min=0.0)
    keep = s > 0
    return (u[:, keep] * s[keep]) @ vh[keep]


def lore_decompose(models: Sequence[Tensor], mu: float, iterations: int, *, nuclear: str = "plain",
                   last: str = "base") -> tuple[Tensor, list[Tensor]]:
    """LoRE coordinate descent (Liu et al. 2025, arXiv 2502.10749) for one weight matrix.

    Minimises  F(theta_0, {delta_i}) = sum_i ||theta_0 + delta_i - theta_i||_F^2 + mu N(delta_i)
    (N = ||.||_* for ``nuclear="plain"``, ||.||_*^2 for ``"squared"``, the paper's objective as written)
    by alternating the exact minimisers
        delta_i <- prox_{mu N}(theta_i - theta_0)           (for all i; SVT, :func:`prox_nuclear`)
        theta_0 <- (1/n) sum_i (theta_i - delta_i)
    starting from delta_i = 0, theta_0 = mean(theta_i). Each step is an exact block minimiser, so F
    never increases. ``last="base"`` ends each iteration with the theta_0 update (then
    theta_0 + mean_i delta_i = mean_i theta_i exactly); ``last="deltas"`` adds one final delta update, so the
    task vectors are the minimisers for the returned theta_0 (the order under which the paper's average
    post-merge is not the plain mean of the models). Returns (theta_0, [delta_i]). 1-D tensors have no
    nuclear norm; they get theta_0 = mean and delta_i = theta_i - theta_0 (our assumption).
    """
    theta0 = torch.stack(list(models)).mean(0)
    if theta0.dim() != 2 or iterations == 0:
        return theta0, [m - theta0 for m in models]
    deltas = [torch.zeros_like(theta0) for _ in models]
    for _ in range(iterations):
        deltas = [prox_nuclear(m - theta0, mu, nuclear) for m in models]
        theta0 = torch.stack([m - d for m, d in zip(models, deltas)]).mean(0)
    if last == "deltas":
        deltas = [prox_nuclear(m - theta0, mu, nuclear) for m in models]
    return theta0, deltas


def lore_objective(models: Sequence[Tensor], theta0: Tensor, deltas: Sequence[Tensor], mu: float,
                   nuclear: str = "plain") -> float:
    """F(theta_0, {delta_i}) of :func:`lore_decompose` (for tests and diagnostics)."""
    f = 0.0
    for m, d in zip(models, deltas):
        f += float(((theta0 + d - m) ** 2).sum())
        if d.dim() == 2:
            nn = float(torch.linalg.svdvals(d).sum())
            f += mu * (nn if nuclear == "plain" else nn * nn)
    return f


def lore(
    base: Tensor | None,
    models: Sequence[Tensor],
    *,
    weights: Sequence[float],
    mu: float = 0.01,
    iterations: int = 5,
    combine: str = "task_arithmetic",
    alpha: float = 1.0,
    k: Sequence[float] | None = None,
    nuclear: str = "plain",
    last: str = "base",
    name: str = "",
) -> Tensor:
    """LoRE-Merging: estimate an approximate base and low-rank task vectors, then merge them.

    (theta_0^, {delta_i^}) = lore_decompose(models, mu, iterations, nuclear, last) -- the true base is NOT
    used -- then theta_M = theta_0^ + merge({delta_i^}):
        combine="task_arithmetic" -> theta_0^ + alpha sum_i w_i delta_i^
        combine="ties"            -> theta_0^ + alpha TIES({delta_i^}, k)
        combine="average"         -> theta_0^ + sum_i w_i delta_i^ / sum_i w_i   (the paper's example
                                     post-processing; only with last="deltas": with theta_0^ updated last
                                     it gives back mean(theta_i) exactly, so it is refused there)
    For L2S pass both models (System 1 and System 2). mu, iterations and the post-merge are not given by
    the L2S paper.
    """
    theta0, deltas = lore_decompose(models, mu, iterations, nuclear=nuclear, last=last)
    if combine == "task_arithmetic":
        return theta0 + alpha * sum(w * d for w, d in zip(weights, deltas))
    if combine == "ties":
        assert k is not None
        trimmed = [trim_magnitude(d, k_i) for d, k_i in zip(deltas, k)]
        return theta0 + alpha * elect_and_combine(trimmed, weights)
    if combine == "average":
        if last != "deltas":
            raise MergeConfigError("lore: combine: average with last: base is mean(theta_i) exactly (the "
                                   "decomposition is undone); use last: deltas")
        total = float(sum(weights))
        return theta0 + sum((w / total) * d for w, d in zip(weights, deltas))
    raise MergeConfigError(f"lore: unknown combine {combine!r}")


def twin_diffs(base: Tensor, models: Sequence[Tensor], weights: Sequence[float], alpha: float) -> tuple[Tensor, list[Tensor]]:
    """(theta*, [theta_k - theta*]): the shared expert and each model's exclusive part (row-local, chunkable)."""
    shared = task_arithmetic(base, models, weights=weights, alpha=alpha)
    return shared, [m - shared for m in models]


def twin(
    base: Tensor,
    models: Sequence[Tensor],
    *,
    weights: Sequence[float],
    alpha: float = 0.7,
    rank: int = 8,
    twin_weights: Sequence[float] | None = None,
    svd: str = "exact",
    oversample: int = 8,
    power_iterations: int = 4,
    seed: int = 0,
    subspaces: Sequence[Tensor] | None = None,
    name: str = "",
) -> Tensor:
    """Twin-Merging, SVD part (Lu et al. 2024, arXiv 2406.15479), router replaced by fixed weights.

        theta* = theta_0 + alpha sum_k w_k delta_k                    (shared expert: task arithmetic)
        v_k    = SVD_r(theta_k - theta*)   for 2-D tensors,  theta_k - theta*  for 1-D tensors
        theta_M = theta* + sum_k c_k v_k                              (c_k = twin_weights, default 1/K)
    With one model, c = 1 and full rank, theta_M = theta_1 exactly. The rank r and the weights c_k
    that replace the router are not reported by the L2S paper (our parameters).

    ``svd="exact"``: SVD_r from the full ``torch.linalg.svd`` of the whole matrix (as Twin-Merging's code).
    ``svd="randomized"``: SVD_r(A) = A V_r V_r^T with V_r from :func:`top_right_subspace` (``oversample``,
    ``power_iterations``, ``seed``; the test matrix is seeded per (seed, tensor name, model)); only rank r is computed, and A is read in row chunks, so the engine
    streams it (``subspaces``: the V_r of each model, precomputed by the engine over the whole tensor;
    this call then only needs the rows at hand).
    """
    shared, diffs = twin_diffs(base, models, weights, alpha)
    c = list(twin_weights) if twin_weights is not None else [1.0 / len(models)] * len(models)
    out = shared.clone()
    for i, (ck, diff) in enumerate(zip(c, diffs)):
        if diff.dim() != 2:
            out += ck * diff
        elif svd == "exact":
            out += ck * svd_lowrank_exact(diff, rank)
        elif svd == "randomized":
            v = subspaces[i] if subspaces is not None else top_right_subspace(
                lambda: iter([diff]), diff.shape[1], rank, oversample=oversample, iterations=power_iterations,
                seed=tensor_seed(seed, name, i))
            out += ck * ((diff @ v) @ v.t())
        else:
            raise MergeConfigError(f"twin: svd must be 'exact' or 'randomized', got {svd!r}")
    return out


def twin_streams(kw: dict) -> bool:
    """``svd: randomized`` needs only V_r of each model (:func:`prepare_twin_tensor`): the rest is row-local."""
    return kw["svd"] == "randomized"


def prepare_twin_tensor(stream: Stream, kw: dict) -> dict:
    """``svd: randomized``, a matrix: V_r of each model's exclusive part theta_k - theta*, by streamed passes
    over the matrix's row chunks (:func:`top_right_subspace`, seeded per (seed, tensor name, model))."""
    if kw["svd"] != "randomized" or len(stream.shape) != 2:
        return {}

    def rows_of_diff(i: int):
        return lambda: (twin_diffs(b, ms, kw["weights"], kw["alpha"])[1][i] for b, ms in stream.chunks())

    return {"subspaces": [top_right_subspace(rows_of_diff(i), stream.shape[1], kw["rank"], oversample=kw["oversample"],
                                             iterations=kw["power_iterations"], seed=tensor_seed(kw["seed"], stream.name, i))
                          for i in range(stream.n_models)]}


register(Method(
    "lore", lore,
    (WEIGHT, ALPHA, K,
     Param("mu", float, 0.01, "nuclear-norm weight mu (SVT threshold mu/2)", lambda x: math.isfinite(x) and x >= 0, ">= 0"),
     Param("iterations", int, 5, "coordinate-descent iterations T", lambda x: x >= 0, ">= 0"),
     Param("combine", str, "task_arithmetic", "post-merge: task_arithmetic | ties | average (average: last: deltas)",
           lambda s: s in ("task_arithmetic", "ties", "average"), "task_arithmetic | ties | average"),
     Param("nuclear", str, "plain", "penalty mu ||delta||_* ('plain') or mu ||delta||_*^2 ('squared', the paper's "
           "objective as written)", lambda s: s in ("plain", "squared"), "'plain' or 'squared'"),
     Param("last", str, "base", "variable updated last in each run: 'base' (theta_0) or 'deltas' (one final "
           "delta update)", lambda s: s in ("base", "deltas"), "'base' or 'deltas'")),
    "Liu et al. 2025, arXiv 2502.10749", needs_base=False, summary="approximate base + low-rank task vectors",
    reference=("follows the paper (Liu et al. 2025, arXiv 2502.10749, section 3; no public code): coordinate descent "
               "on sum_i ||theta_0 + delta_i - theta_i||_F^2 + mu N(delta_i), closed-form block updates (SVT for "
               "delta_i, mean for theta_0). The paper writes N = ||.||_*^2 (nuclear: squared); the default stays the "
               "plain nuclear norm (nuclear: plain, SVT at mu/2) used so far; last: deltas ends on a delta update, "
               "under which the paper's average post-processing (combine: average) is not the plain mean. Our "
               "choices (not given by the paper): mu, iterations, the post-merge, 1-D tensors get mean + residual; "
               "see the book's methods page."),
    display="LoRE-Merging", style=("#e377c2", "p"), pair=True,
))
register(Method(
    "twin", twin,
    (WEIGHT, Param("alpha", float, 0.7, "task-arithmetic coefficient of the shared expert", finite, "finite", ("lambda",)),
     Param("rank", int, 8, "rank r of each exclusive (twin) vector", lambda r: r >= 1, ">= 1"),
     Param("twin_weight", float, None, "fixed router weight c_k of model k's twin vector (default 1/K)",
           finite, "finite", per_model=True),
     Param("svd", str, "exact", "rank-r SVD: 'exact' (whole-matrix torch.linalg.svd, as Twin-Merging's code) or "
           "'randomized' (streamed subspace iteration: memory O(n (r + oversample)) plus one row chunk)",
           lambda s: s in ("exact", "randomized"), "'exact' or 'randomized'"),
     Param("oversample", int, 8, "svd: randomized -- extra columns p of the test matrix", lambda x: x >= 0, ">= 0"),
     Param("power_iterations", int, 4, "svd: randomized -- subspace iterations q", lambda x: x >= 0, ">= 0"),
     Param("seed", int, 0, "svd: randomized -- seed of the Gaussian test matrix", lambda x: x >= 0, ">= 0")),
    "Lu et al. 2024, arXiv 2406.15479", summary="shared TA expert + rank-r exclusive knowledge",
    reference=("the SVD (exclusive-knowledge) part of Twin-Merging's code (LZY-the-boys/Twin-Merging), within 6e-8 "
               "on tiny Qwen2 checkpoints in an independent comparison; the router is replaced by fixed weights "
               "c_k (default 1/K), as the L2S paper merges one pair without a router."),
    streams=twin_streams, prepare_tensor=prepare_twin_tensor,
    display="Twin-Merging", style=("#7f7f7f", "h"),
))
