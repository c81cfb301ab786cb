"""Merging methods as small pure functions on tensors, and the registry that names them.

Every kernel works on one parameter tensor at a time, in fp32, and knows nothing about files:

    kernel(base, models, *, name, **params) -> merged tensor

``base`` is theta_0 (the System 1 model in the L2S setting, ``None`` for methods that do not use it),
``models`` the K >= 1 fine-tuned tensors theta_1..theta_K (System 2, possibly also System 1) and
``name`` the tensor's name (used only to seed random masks). Per-model parameters (weights, DARE drop
rates, TIES densities) arrive as lists of length K. The task vector of model k is
delta_k = theta_k - theta_0 (METHODS.md section 0); for L2S there is effectively one, System 2 - System 1.

Methods and papers (formulas in each docstring):
  average          Wortsman et al. 2022, "Model soups"                       arXiv 2203.05482
  task_arithmetic  Ilharco et al. 2023, "Editing models with task arithmetic" arXiv 2212.04089
  ties             Yadav et al. 2023, "TIES-Merging"                          arXiv 2306.01708
  dare             Yu et al. 2024, "Language models are Super Mario" (DARE)   arXiv 2311.03099
  lore             Liu et al. 2025, "LoRE-Merging"                            arXiv 2502.10749
  twin             Lu et al. 2024, "Twin-Merging" (SVD part only)             arXiv 2406.15479
The paper that compares them for long-to-short reasoning: Wu et al. 2025, arXiv 2503.20641.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

Tensor = torch.Tensor


class MergeConfigError(ValueError):
    """A merge configuration or parameter is invalid. Raised before anything is written."""


# ---------------------------------------------------------------------------------------------
# Shared building blocks
# ---------------------------------------------------------------------------------------------


def task_vectors(base: Tensor, models: Sequence[Tensor]) -> list[Tensor]:
    """delta_k = theta_k - theta_0 for every model k (Ilharco et al. 2023)."""
    return [m - base for m in models]


def weighted_sum(base: Tensor, models: Sequence[Tensor], weights: Sequence[float]) -> Tensor:
    """sum_k w_k (theta_k - theta_0), accumulated in place in one new tensor (same order as mergekit)."""
    mixed = None
    for w, m in zip(weights, models):
        d = m - base
        if w != 1.0:
            d.mul_(w)
        mixed = d if mixed is None else mixed.add_(d)
    return mixed


def base_plus(base: Tensor, mixed: Tensor, alpha: float) -> Tensor:
    """theta_0 + alpha * mixed, reusing ``mixed``'s storage (it must be a temporary of the caller)."""
    if alpha != 1.0:
        mixed.mul_(alpha)
    return mixed.add_(base)


def kth_smallest_abs(x: Tensor, m: int) -> Tensor:
    """The m-th smallest |x| (1-indexed), exactly, as ``torch.kthvalue(|x|, m)`` would return it.

    Implemented by bucketing the float32 bit patterns of |x| (monotone for non-negative floats) on
    their top 16 bits, then sorting only the one bucket that holds the m-th value. This is exact and
    several times faster than ``kthvalue`` on large tensors.
    """
    a = x.detach().abs().float().reshape(-1)
    n = a.numel()
    if not 1 <= m <= n:
        raise ValueError(f"m must be in [1, {n}], got {m}")
    if n <= 1 << 16:
        return torch.kthvalue(a, m).values
    bits = a.view(torch.int32)
    buckets = torch.bitwise_right_shift(bits, 16)  # 0..32767 for non-negative floats
    counts = torch.bincount(buckets, minlength=1 << 15)
    cum = torch.cumsum(counts, 0)
    b = int(torch.searchsorted(cum, torch.tensor(m, dtype=cum.dtype)).item())
    before = int(cum[b - 1].item()) if b > 0 else 0
    inside = a[buckets == b]
    return torch.kthvalue(inside, m - before).values


def trim_magnitude(x: Tensor, drop: float) -> Tensor:
    """TIES trimming of one tensor: zero the bottom-|x| fraction ``drop`` (the paper's k).

    m = int(n * k); t = m-th smallest |x|; keep entries with |x| >= t (so about n - m + 1 survive,
    more on ties), exactly as the L2S code (`hahahawu/Long-to-Short-via-Model-Merging`,
    `merging_methods.py:ties_merging`). m = 0 trims nothing.
    """
    m = int(x.numel() * drop)
    if m == 0:
        return x.clone()
    t = kth_smallest_abs(x, m)
    return x.masked_fill(x.abs() < t, 0.0)


def trim_topk(x: Tensor, density: float) -> Tensor:
    """Keep exactly max(1, int(n * density)) largest-|x| entries (mergekit 0.1.5 ``sparsify.magnitude``)."""
    n = x.numel()
    if density >= 1.0:
        return x.clone()
    if density <= 0.0 or n == 0:
        return torch.zeros_like(x)
    keep = max(1, int(n * density))
    if keep >= n:
        return x.clone()
    # the keep-th largest |x| is the (n - keep + 1)-th smallest; keep everything above it and, among
    # entries equal to it, the first ones in index order, so that exactly `keep` entries survive.
    t = kth_smallest_abs(x, n - keep + 1)
    a = x.abs()
    out = x.masked_fill(a < t, 0.0)
    tied = torch.nonzero((a == t).reshape(-1)).squeeze(1)
    surplus = int((a > t).sum()) + tied.numel() - keep
    if surplus > 0:  # drop the last `surplus` entries equal to the threshold
        out.reshape(-1)[tied[tied.numel() - surplus:]] = 0.0
    return out


def trim_all(deltas: Sequence[Tensor], k: Sequence[float] | None, trim: str = "threshold",
             thresholds: Sequence[float] | None = None) -> list[Tensor]:
    """TIES step 1 for every model: precomputed ``thresholds`` (|x| >= t kept; deltas are temporaries and
    are trimmed in place), else :func:`trim_magnitude` (drop k) or :func:`trim_topk` (keep 1 - k)."""
    if thresholds is not None:
        return [d.masked_fill_(d.abs() < t, 0.0) for d, t in zip(deltas, thresholds)]
    if trim == "threshold":
        return [trim_magnitude(d, kk) for d, kk in zip(deltas, k)]
    return [trim_topk(d, round(1.0 - kk, 12)) for d, kk in zip(deltas, k)]


def elect_and_combine(
    trimmed: Sequence[Tensor], weights: Sequence[float], normalize: bool = True, zero_sign: float = 1.0
) -> Tensor:
    """TIES steps 2-3: elect a sign per entry and take the disjoint (weighted) mean.

    With u_k = w_k * m_k (m_k the trimmed task vectors):
        s = sign(sum_k u_k), entries where the sum is 0 get ``zero_sign`` (the L2S code uses +1);
        keep_k = sign(u_k) == s and u_k != 0;
        tau* = sum_k u_k keep_k / sum_k w_k keep_k   (normalize=True; mergekit's default)
        tau* = sum_k u_k keep_k                      (normalize=False)
    With all w_k = 1 this is the paper's disjoint mean (METHODS.md section 2).
    """
    if len(trimmed) == 1 and weights[0] == 1.0:  # K = 1: election and disjoint mean are the identity
        return trimmed[0] if normalize else trimmed[0].clone()
    u = torch.stack([w * m for w, m in zip(weights, trimmed)])
    s = torch.sign(u.sum(0))
    s = torch.where(s == 0, torch.full_like(s, zero_sign), s)
    keep = (torch.sign(u) == s) & (u != 0)
    num = (u * keep).sum(0)
    if not normalize:
        return num
    w = torch.tensor(list(weights), dtype=u.dtype, device=u.device).view(-1, *([1] * (u.dim() - 1)))
    den = (w * keep).sum(0)
    return num / torch.where(den == 0, torch.ones_like(den), den)


def tensor_seed(seed: int, name: str, index: int) -> int:
    """A 63-bit seed for (global seed, tensor name, model index): masks do not depend on tensor order."""
    h = hashlib.sha256(f"{seed}\x00{name}\x00{index}".encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


def dare_mask(delta: Tensor, p: float, seed: int | torch.Generator) -> Tensor:
    """DARE drop-and-rescale: delta * (1 - M) / (1 - p), with M ~ Bernoulli(p) i.i.d. (M = 1 drops).

    The uniform draws are made on the CPU in fp32 from a generator seeded by ``seed`` (or the given
    generator, which the engine carries across the row chunks of one tensor: consecutive draws equal
    one large draw), so the mask is the same on every device and run. E[result] = delta
    (Yu et al. 2024, arXiv 2311.03099).
    """
    if p == 0.0:
        return delta.clone()
    g = seed if isinstance(seed, torch.Generator) else torch.Generator(device="cpu").manual_seed(seed)
    u = torch.rand(delta.shape, generator=g, dtype=torch.float32)
    keep = (u >= p).to(delta.device)
    return torch.where(keep, delta / (1.0 - p), torch.zeros((), dtype=delta.dtype, device=delta.device))


def svd_lowrank_exact(x: Tensor, rank: int) -> Tensor:
    """Best rank-r approximation U_r diag(S_r) V_r^T of a 2-D tensor (Eckart-Young), in fp32."""
    u, s, vh = torch.linalg.svd(x, full_matrices=False)
    r = min(rank, s.numel())
    return (u[:, :r] * s[:r]) @ vh[:r]


def svt(x: Tensor, threshold: float) -> Tensor:
    """Singular value thresholding: U diag(max(sigma - threshold, 0)) V^T (the prox of the nuclear norm)."""
    u, s, vh = torch.linalg.svd(x, full_matrices=False)
    s = torch.clamp(s - threshold, min=0.0)
    keep = s > 0
    return (u[:, keep] * s[keep]) @ vh[keep]


# ---------------------------------------------------------------------------------------------
# The methods
# ---------------------------------------------------------------------------------------------


def average(base: Tensor | None, models: Sequence[Tensor], *, weights: Sequence[float], name: str = "") -> Tensor:
    """Average merging (weighted model soup): theta_M = sum_k w_k theta_k / sum_k w_k.

    The base is not part of the average. For L2S pass both models (System 1 and System 2): with equal
    weights theta_M = (theta_0 + theta_1) / 2 = theta_0 + 0.5 delta (Wu et al. 2025, section 4.2).
    Same as mergekit's ``linear`` with ``normalize: true``.
    """
    total = float(sum(weights))
    out = torch.zeros_like(models[0])
    for w, m in zip(weights, models):
        out += (w / total) * m
    return out


def task_arithmetic(
    base: Tensor, models: Sequence[Tensor], *, weights: Sequence[float], alpha: float = 1.0, name: str = ""
) -> Tensor:
    """Task arithmetic: theta_M = theta_0 + alpha * sum_k w_k (theta_k - theta_0).

    alpha is applied once to the summed task vectors (not 1/K-normalised), as in the L2S code; the
    paper uses alpha = 0.7 at every scale (Table 7). alpha = 1 with one model gives that model back,
    alpha = 0 gives the base. Same as mergekit's ``task_arithmetic`` with per-model ``weight`` w_k and
    ``lambda`` = alpha (Ilharco et al. 2023, arXiv 2212.04089).
    """
    return base_plus(base, weighted_sum(base, models, weights), alpha)


def ties(
    base: Tensor,
    models: Sequence[Tensor],
    *,
    weights: Sequence[float],
    k: Sequence[float],
    alpha: float = 1.0,
    normalize: bool = True,
    trim: str = "threshold",
    scope: str = "tensor",
    thresholds: Sequence[float] | None = None,
    name: str = "",
) -> Tensor:
    """TIES-Merging (Yadav et al. 2023, arXiv 2306.01708), per-tensor or global trimming.

    For each model: m_k = trim(delta_k) keeps the top (1 - k_k) fraction of |delta_k| in this tensor
    (k = the paper's "trim ratio", the fraction DROPPED; mergekit's ``density`` = 1 - k is the fraction
    KEPT). Then sign election and disjoint mean (:func:`elect_and_combine`), and
        theta_M = theta_0 + alpha * tau*.
    With K = 1 this is magnitude pruning of delta followed by scaling by alpha.

    ``trim="threshold"`` keeps |x| >= the m-th smallest |x|, m = int(n k) (the L2S code; n - m + 1
    entries survive); ``trim="topk"`` keeps exactly int(n (1 - k)) entries (mergekit). They differ by
    one entry per tensor on tie-free data.

    ``scope="global"`` (MergeLM's ``ties_merging_dare``): each model's threshold is taken over ALL of
    its parameters; the engine computes those model-wide ``thresholds`` in a streamed pre-pass
    (:func:`l2s_utils.merging.global_ties_thresholds`) and entries with |delta| >= t_k are kept.
    Entries whose elected sign is 0 get +1 (MergeLM uses the model-wide majority sign there; with
    continuous weights such entries carry no mass either way).
    """
    if scope == "global" and thresholds is None:
        raise MergeConfigError("ties scope='global' needs model-wide thresholds (computed by merging.merge)")
    trimmed = trim_all(task_vectors(base, models), k, trim, thresholds)
    return base + alpha * elect_and_combine(trimmed, weights, normalize=normalize)


def dare(
    base: Tensor,
    models: Sequence[Tensor],
    *,
    weights: Sequence[float],
    p: Sequence[float],
    combine: str = "average",
    alpha: float = 1.0,
    k: Sequence[float] | None = None,
    normalize: bool = True,
    trim: str = "threshold",
    seed: int = 0,
    generators: Sequence[torch.Generator] | None = None,
    thresholds: Sequence[float] | None = None,
    name: str = "",
) -> Tensor:
    """DARE (Yu et al. 2024, arXiv 2311.03099): drop-and-rescale every task vector, then merge.

        delta~_k = delta_k * (1 - M_k) / (1 - p_k),  M_k ~ Bernoulli(p_k) i.i.d. per entry,
    and then, on theta~_k = theta_0 + delta~_k:
        combine="average"          -> weighted average of the theta~_k     (the paper's "DARE")
        combine="task_arithmetic"  -> theta_0 + alpha sum_k w_k delta~_k   (the paper's "DARE-TA")
        combine="ties"             -> TIES on delta~_k with drop k, alpha  (the paper's "DARE-Ties")
    Masks are seeded per (seed, tensor name, model index), so they do not depend on processing order.
    The paper uses p = 0.3 (1.5B, 7B) and 0.4 (14B); the alpha/k of DARE-TA/-Ties are not reported.
    """
    deltas = task_vectors(base, models)
    gens = generators or [tensor_seed(seed, name, i) for i in range(len(models))]
    masked = [dare_mask(d, pk, g) for d, pk, g in zip(deltas, p, gens)]
    if combine == "average":
        total = float(sum(weights))
        return base + sum((w / total) * d for w, d in zip(weights, masked))
    if combine == "task_arithmetic":
        return base + alpha * sum(w * d for w, d in zip(weights, masked))
    if combine == "ties":
        assert k is not None
        trimmed = trim_all(masked, k, trim, thresholds)
        return base + alpha * elect_and_combine(trimmed, weights, normalize=normalize)
    raise MergeConfigError(f"dare: unknown combine {combine!r}")


def lore_decompose(models: Sequence[Tensor], mu: float, iterations: int) -> tuple[Tensor, list[Tensor]]:
    """LoRE coordinate descent (Liu et al. 2025, arXiv 2502.10749) for one weight matrix.

    Minimises  F(theta_0, {delta_i}) = sum_i ||theta_0 + delta_i - theta_i||_F^2 + mu ||delta_i||_*
    by alternating the exact minimisers
        delta_i <- SVT_{mu/2}(theta_i - theta_0)            (for all i)
        theta_0 <- (1/n) sum_i (theta_i - delta_i)
    starting from delta_i = 0, theta_0 = mean(theta_i). Each step is an exact block minimiser, so F
    never increases. Returns (theta_0, [delta_i]). 1-D tensors have no nuclear norm; they get
    theta_0 = mean and delta_i = theta_i - theta_0 (our assumption; documented in the book).
    """
    theta0 = torch.stack(list(models)).mean(0)
    if theta0.dim() != 2 or iterations == 0:
        return theta0, [m - theta0 for m in models]
    deltas = [torch.zeros_like(theta0) for _ in models]
    for _ in range(iterations):
        deltas = [svt(m - theta0, mu / 2.0) for m in models]
        theta0 = torch.stack([m - d for m, d in zip(models, deltas)]).mean(0)
    return theta0, deltas


def lore_objective(models: Sequence[Tensor], theta0: Tensor, deltas: Sequence[Tensor], mu: float) -> float:
    """F(theta_0, {delta_i}) of :func:`lore_decompose` (for tests and diagnostics)."""
    f = 0.0
    for m, d in zip(models, deltas):
        f += float(((theta0 + d - m) ** 2).sum())
        if d.dim() == 2:
            f += mu * float(torch.linalg.svdvals(d).sum())
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
    name: str = "",
) -> Tensor:
    """LoRE-Merging: estimate an approximate base and low-rank task vectors, then merge them.

    (theta_0^, {delta_i^}) = lore_decompose(models, mu, iterations) -- the true base is NOT used --
    then theta_M = theta_0^ + merge({delta_i^}):
        combine="task_arithmetic" -> theta_0^ + alpha sum_i w_i delta_i^
        combine="ties"            -> theta_0^ + alpha TIES({delta_i^}, k)
    For L2S pass both models (System 1 and System 2). Caution (METHODS.md section 4): with theta_0^
    updated last, an unweighted *average* post-merge gives back mean(theta_i) exactly, so only TA/TIES
    post-merges are offered. mu, iterations and the post-merge are not given by the L2S paper.
    """
    theta0, deltas = lore_decompose(models, mu, iterations)
    if combine == "task_arithmetic":
        return theta0 + alpha * sum(w * d for w, d in zip(weights, deltas))
    if combine == "ties":
        assert k is not None
        trimmed = [trim_magnitude(d, kk) for d, kk in zip(deltas, k)]
        return theta0 + alpha * elect_and_combine(trimmed, weights)
    raise MergeConfigError(f"lore: unknown combine {combine!r}")


def twin(
    base: Tensor,
    models: Sequence[Tensor],
    *,
    weights: Sequence[float],
    alpha: float = 0.7,
    rank: int = 8,
    twin_weights: Sequence[float] | None = None,
    name: str = "",
) -> Tensor:
    """Twin-Merging, SVD part (Lu et al. 2024, arXiv 2406.15479), router replaced by fixed weights.

        theta* = theta_0 + alpha sum_k w_k delta_k                    (shared expert: task arithmetic)
        v_k    = SVD_r(theta_k - theta*)   for 2-D tensors,  theta_k - theta*  for 1-D tensors
        theta_M = theta* + sum_k c_k v_k                              (c_k = twin_weights, default 1/K)
    With one model, c = 1 and full rank, theta_M = theta_1 exactly. The rank r and the weights c_k
    that replace the router are not reported by the L2S paper (our parameters).
    """
    shared = task_arithmetic(base, models, weights=weights, alpha=alpha)
    c = list(twin_weights) if twin_weights is not None else [1.0 / len(models)] * len(models)
    out = shared.clone()
    for ck, m in zip(c, models):
        diff = m - shared
        out += ck * (svd_lowrank_exact(diff, rank) if diff.dim() == 2 else diff)
    return out


# ---------------------------------------------------------------------------------------------
# Registry with typed, validated parameters
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    """One hyper-parameter: its type, default, valid range and meaning."""

    name: str
    type: type
    default: Any
    doc: str
    check: Callable[[Any], bool] | None = None
    rule: str = ""
    aliases: tuple[str, ...] = ()
    per_model: bool = False


@dataclass(frozen=True)
class Method:
    """A registered merging method: the kernel, its parameters and its paper."""

    name: str
    kernel: Callable[..., Tensor]
    params: tuple[Param, ...]
    paper: str
    needs_base: bool = True
    aliases: tuple[str, ...] = ()
    fixed: dict[str, Any] = field(default_factory=dict)
    summary: str = ""
    composite: bool = False  # needs model-level statistics (calibration data); run by merging._merge_composite


def _in_unit_open(x: float) -> bool:
    return 0.0 <= x < 1.0


def _finite(x: float) -> bool:
    return math.isfinite(x)


def _positive(x: float) -> bool:
    return math.isfinite(x) and x > 0


_WEIGHT = Param("weight", float, 1.0, "per-model weight w_k", _finite, "finite", per_model=True)
_ALPHA = Param("alpha", float, 1.0, "scaling coefficient on the merged task vector", _finite, "finite", ("lambda",))
_K = Param(
    "k", float, 0.8, "TIES trim ratio: fraction of each tensor's task vector DROPPED (kept = 1 - k = density)",
    _in_unit_open, "0 <= k < 1", per_model=True,
)
_NORMALIZE = Param("normalize", bool, True, "TIES: divide by the summed weights of agreeing models (disjoint mean)")
_TRIM = Param(
    "trim", str, "threshold", "TIES trimming rule: 'threshold' (L2S code) or 'topk' (mergekit)",
    lambda s: s in ("threshold", "topk"), "'threshold' or 'topk'",
)
_P = Param("p", float, 0.3, "DARE drop rate p (drop with probability p, rescale by 1/(1-p))",
           _in_unit_open, "0 <= p < 1", per_model=True)
_SEED = Param("seed", int, 0, "seed of the random masks", lambda s: s >= 0, ">= 0")


REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    for key in (method.name, *method.aliases):
        if key in REGISTRY:
            raise ValueError(f"method name {key!r} registered twice")
        REGISTRY[key] = method
    return method


register(Method("average", average, (_WEIGHT,), "Wortsman et al. 2022, arXiv 2203.05482", needs_base=False,
                aliases=("linear",), summary="(weighted) mean of the models"))
register(Method("task_arithmetic", task_arithmetic, (_WEIGHT, _ALPHA), "Ilharco et al. 2023, arXiv 2212.04089",
                summary="theta_0 + alpha sum_k w_k delta_k"))
_SCOPE = Param("scope", str, "tensor", "TIES trimming scope: per 'tensor' (L2S default) or 'global' (MergeLM)",
               lambda s: s in ("tensor", "global"), "'tensor' or 'global'")
register(Method("ties", ties, (_WEIGHT, _K, _ALPHA, _NORMALIZE, _TRIM, _SCOPE), "Yadav et al. 2023, arXiv 2306.01708",
                summary="trim, elect sign, disjoint mean"))
register(Method(
    "dare", dare,
    (_WEIGHT, _P, _ALPHA, _K, _NORMALIZE, _TRIM, _SEED,
     Param("combine", str, "average", "merge applied to the masked models: average | task_arithmetic | ties",
           lambda s: s in ("average", "task_arithmetic", "ties"), "average | task_arithmetic | ties")),
    "Yu et al. 2024, arXiv 2311.03099", summary="random drop-and-rescale of task vectors, then merge",
))
register(Method("dare_ta", dare, (_WEIGHT, _P, _ALPHA, _SEED), "Yu et al. 2024, arXiv 2311.03099",
                aliases=("dare_linear",), fixed={"combine": "task_arithmetic"}, summary="DARE + task arithmetic"))
register(Method("dare_ties", dare, (_WEIGHT, _P, _ALPHA, _K, _NORMALIZE, _TRIM, _SEED),
                "Yu et al. 2024, arXiv 2311.03099", fixed={"combine": "ties"}, summary="DARE + TIES"))
register(Method(
    "lore", lore,
    (_WEIGHT, _ALPHA, _K,
     Param("mu", float, 0.01, "nuclear-norm weight mu (SVT threshold mu/2)", lambda x: math.isfinite(x) and x >= 0, ">= 0"),
     Param("iterations", int, 5, "coordinate-descent iterations T", lambda x: x >= 0, ">= 0"),
     Param("combine", str, "task_arithmetic", "post-merge: task_arithmetic | ties",
           lambda s: s in ("task_arithmetic", "ties"), "task_arithmetic | ties")),
    "Liu et al. 2025, arXiv 2502.10749", needs_base=False, summary="approximate base + low-rank task vectors",
))
register(Method(
    "twin", twin,
    (_WEIGHT, Param("alpha", float, 0.7, "task-arithmetic coefficient of the shared expert", _finite, "finite", ("lambda",)),
     Param("rank", int, 8, "rank r of each exclusive (twin) vector", lambda r: r >= 1, ">= 1"),
     Param("twin_weight", float, None, "fixed router weight c_k of model k's twin vector (default 1/K)",
           _finite, "finite", per_model=True)),
    "Lu et al. 2024, arXiv 2406.15479", summary="shared TA expert + rank-r exclusive knowledge",
))


def _aim_doc(base: Tensor, merged: Tensor, importance: Tensor | None, omega: float) -> Tensor:
    """AIM relaxation of one weight: W_base + (W_merged - W_base) * (1 - I (1 - omega)).

    I is the base model's normalised mean |input activation| per input channel
    (:func:`l2s_utils.activation.aim_importance`); omega = 1 is the identity (Nobari et al. 2025).
    """
    from ..activation import aim_relax

    return aim_relax(base, merged, importance, omega)


def _acm_doc(base: Tensor, merged: Tensor, lam: float) -> Tensor:
    """ACM post-hoc scaling of one layer's tensor: theta_0 + lambda^l (theta_merged - theta_0).

    lambda^l comes from the normalised mutual information of base and fine-tuned layer activations
    (:func:`l2s_utils.activation.acm_coefficients`; Yao et al. 2025, arXiv 2505.14009; our assumption).
    """
    return base + lam * (merged - base)


def _sens_doc(base: Tensor, models: Sequence[Tensor], *, coeffs: Sequence[float], alpha: float) -> Tensor:
    """Sens-Merging plug-in for one tensor of layer l: theta_0 + alpha sum_i (K sigma_i^l) delta_i.

    K sigma_i^l comes from parameter sensitivities and logit alignment on calibration data
    (:func:`l2s_utils.activation.sens_coefficients`; Liu et al. 2025, arXiv 2502.12420). With uniform
    sigma (K sigma = 1) this is task arithmetic.
    """
    return task_arithmetic(base, models, weights=list(coeffs), alpha=alpha)


_BASE_METHOD = Param("base_method", str, "ties", "the merge that AIM/ACM adjust (any non-composite registry method)",
                     lambda s: s in REGISTRY and not REGISTRY[s].composite, "a registry method")
register(Method(
    "aim", _aim_doc,
    (Param("omega", float, 0.4, "AIM balance factor (1 = no change, 0 = most important channel keeps the base)",
           lambda x: 0.0 <= x <= 1.0, "0 <= omega <= 1"), _BASE_METHOD),
    "Nobari et al. 2025, arXiv 2502.02421", composite=True,
    summary="relax a merge toward the base on input channels the base's activations mark important",
))
register(Method(
    "acm", _acm_doc,
    (Param("theta", float, 1.2, "ACM sharpness of the NMI -> coefficient map (0 = identity)", _finite, "finite"),
     Param("bins", int, 64, "histogram bins per variable for the NMI estimate", lambda b: b >= 2, ">= 2"),
     Param("max_values", int, 200_000, "activation value pairs sampled per layer", lambda b: b >= 100, ">= 100"),
     _BASE_METHOD),
    "Yao et al. 2025, arXiv 2505.14009", composite=True,
    summary="layer-wise task-vector scale from base/fine-tuned activation mutual information (assumed form)",
))
register(Method(
    "sens", _sens_doc,
    (_WEIGHT, Param("alpha", float, 0.7, "task-arithmetic coefficient", _finite, "finite", ("lambda",)),
     Param("T", float, 2.0, "softmax temperature", _positive, "> 0"),
     Param("sens_norm", str, "l2", "normalisation of layer sensitivities over layers: l2 | l1 | max | none",
           lambda s: s in ("l2", "l1", "max", "none"), "l2 | l1 | max | none"),
     Param("tau_norm", str, "l1", "normalisation of cross-task scores over models: l1 | l2 | max | none",
           lambda s: s in ("l2", "l1", "max", "none"), "l2 | l1 | max | none"),
     Param("tau_sign", float, 1.0, "+1: larger logit distance = more weight (RCP); -1: the reverse", lambda x: x in (1.0, -1.0), "+1 or -1"),
     Param("per_sample", bool, True, "per-sample |theta * grad| (exact) or per-batch gradients (faster)"),
     Param("calibration_content", str, None, "per model: short | long | both (default: long for the model that is "
           "the base, short for the others, as the paper)", lambda s: s in ("short", "long", "both"), "short | long | both",
           per_model=True)),
    "Liu et al. 2025, arXiv 2502.12420", composite=True,
    summary="task arithmetic with layer-wise coefficients from sensitivity and logit alignment",
))


def get_method(name: str) -> Method:
    try:
        return REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise MergeConfigError(f"unknown merge_method {name!r}; known methods: {known}") from None


def _coerce(p: Param, value: Any, where: str) -> Any:
    if value is None and p.default is None:
        return None
    try:
        if p.type is bool:
            if not isinstance(value, bool):
                raise TypeError
            v = value
        elif p.type is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            v = int(value)
        elif p.type is float:
            if isinstance(value, bool):
                raise TypeError
            v = float(value)
        else:
            v = p.type(value)
    except (TypeError, ValueError):
        raise MergeConfigError(f"{where}: parameter {p.name!r} must be {p.type.__name__}, got {value!r}") from None
    if p.check is not None and not p.check(v):
        raise MergeConfigError(f"{where}: parameter {p.name!r} = {value!r} is out of range ({p.rule})")
    return v


def resolve_params(
    method: Method, global_params: dict[str, Any], model_params: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    """Validate and resolve parameters into the kernel's keyword arguments.

    Accepts aliases (``lambda`` for ``alpha``) and, for TIES-like methods, mergekit's ``density``
    (fraction KEPT) as ``k = 1 - density`` (fraction DROPPED); giving both for the same scope is an
    error. Per-model parameters may be set globally (applies to every model) or per model.
    Raises :class:`MergeConfigError` naming the parameter for anything unknown, mistyped or out of range.
    """
    by_name: dict[str, Param] = {}
    for p in method.params:
        by_name[p.name] = p
        for a in p.aliases:
            by_name[a] = p
    has_k = "k" in {p.name for p in method.params}

    def normalise(raw: dict[str, Any], where: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in (raw or {}).items():
            if key == "density" and has_k:
                if "k" in raw:
                    raise MergeConfigError(f"{where}: give either 'k' (fraction dropped) or 'density' (fraction kept), not both")
                dv = _coerce(Param("density", float, 0.2, "", lambda x: 0.0 < x <= 1.0, "0 < density <= 1"), value, where)
                out["k"] = round(1.0 - dv, 12)
                continue
            if key not in by_name:
                allowed = sorted(set(by_name) | ({"density"} if has_k else set()))
                raise MergeConfigError(f"{where}: unknown parameter {key!r} for method {method.name!r}; allowed: {allowed}")
            p = by_name[key]
            if p.name in out:
                raise MergeConfigError(f"{where}: parameter {p.name!r} given twice (through an alias)")
            out[p.name] = _coerce(p, value, where)
        return out

    g = normalise(global_params, f"{method.name} parameters")
    per = [normalise(mp, f"{method.name} models[{i}].parameters") for i, mp in enumerate(model_params)]
    kwargs: dict[str, Any] = dict(method.fixed)
    for p in method.params:
        if p.per_model:
            values = [m.get(p.name, g.get(p.name, p.default)) for m in per]
            kwargs[_kernel_name(p.name)] = None if all(v is None for v in values) else values
        else:
            for i, m in enumerate(per):
                if p.name in m:
                    raise MergeConfigError(f"{method.name} models[{i}].parameters: {p.name!r} is a global parameter")
            kwargs[p.name] = g.get(p.name, p.default)
    if kwargs.get("weights") is not None and method.name in ("average", "linear") and sum(kwargs["weights"]) == 0:
        raise MergeConfigError(f"{method.name}: the model weights sum to zero")
    if kwargs.get("twin_weights") is not None and any(v is None for v in kwargs["twin_weights"]):
        raise MergeConfigError("twin: give twin_weight for every model or for none")
    return kwargs


def _kernel_name(param: str) -> str:
    return {"weight": "weights", "twin_weight": "twin_weights"}.get(param, param)
