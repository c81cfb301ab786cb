"""TIES-Merging: trim each task vector, elect a sign per entry, take the disjoint mean.

    ties             Yadav et al. 2023, "TIES-Merging"                          arXiv 2306.01708

Everything TIES computes is here: the trim count (:func:`trim_count`), the exact k-th smallest |x| of a
tensor or of a stream of row chunks (:func:`kth_smallest_abs`, :func:`streamed_kth_abs`), the trim, the
election, and the ``prepare`` hooks that compute the thresholds of a tensor read in row chunks and the
model-wide thresholds and majority sign of global TIES over the engine's stream. The trimming and
election helpers are shared with DARE-Ties (dare.py) and LoRE's TIES post-merge (svd.py).
"""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

import torch
from torch import Tensor

from .basic import task_vectors
from .registry import ALPHA, WEIGHT, Method, MergeConfigError, Param, Stream, in_unit_open, register

BUCKETS = 1 << 15  # the top 16 bits of a non-negative float32 (sign bit 0): 0..32767


def trim_count(n: int, k: float) -> int:
    """m = int(n k): TIES trims the entries below the m-th smallest |delta| of n at trim ratio k (the L2S
    code's rule, per tensor or model-wide). m = 0 trims nothing."""
    return int(n * k)


def _abs_bits(x: Tensor) -> Tensor:
    """The float32 bit patterns of |x|, flat: monotone in |x| (non-negative floats sort as their bits)."""
    return x.detach().abs().float().reshape(-1).view(torch.int32)


def _locate(counts: Tensor, m: int) -> tuple[int, int]:
    """(b, r): the m-th smallest (1-indexed) is the r-th smallest inside bucket b, given the count per bucket."""
    cum = torch.cumsum(counts, 0)
    b = int(torch.searchsorted(cum, torch.tensor(m, dtype=cum.dtype, device=cum.device)).item())
    return b, m - (int(cum[b - 1]) if b else 0)


def kth_smallest_abs(x: Tensor, m: int) -> Tensor:
    """The m-th smallest |x| (1-indexed), exactly, as ``torch.kthvalue(|x|, m)`` would return it.

    The float32 bit patterns of |x| are bucketed on their top 16 bits (:func:`_locate` finds the bucket b
    that holds the m-th value and its rank r there); only bucket b is then ranked. This is exact and
    several times faster than ``kthvalue`` on large tensors.
    """
    a = x.detach().abs().float().reshape(-1)
    n = a.numel()
    if not 1 <= m <= n:
        raise ValueError(f"m must be in [1, {n}], got {m}")
    if n <= 1 << 16:
        return torch.kthvalue(a, m).values
    buckets = torch.bitwise_right_shift(a.view(torch.int32), 16)
    b, r = _locate(torch.bincount(buckets, minlength=BUCKETS), m)
    return torch.kthvalue(a[buckets == b], r).values


def streamed_kth_abs(make_iter: Callable[[], Iterator[list[Tensor]]], ms: list[int]) -> list[float]:
    """Exact m_i-th smallest |x| over a stream of chunks, for several streams at once, in two passes.

    ``make_iter()`` yields, per chunk, one tensor per stream (model). Pass 1 counts the top 16 bits of
    |x|'s float32 bit pattern, which locates the bucket that holds the m-th smallest and its rank r
    inside it (:func:`_locate`, as :func:`kth_smallest_abs`); pass 2 counts the low 16 bits of the entries
    in that bucket, which gives the r-th smallest's full bit pattern -- the value itself, exactly what
    ``torch.kthvalue`` would return. Memory: one chunk and two histograms (0.25 + 0.5 MB per stream),
    whatever the number of entries ranked (a whole model for global TIES). m = 0 gives threshold 0.
    """
    counts = [torch.zeros(BUCKETS, dtype=torch.int64) for _ in ms]
    for xs in make_iter():
        for i, x in enumerate(xs):
            counts[i] += torch.bincount(_abs_bits(x) >> 16, minlength=BUCKETS).cpu()
    targets = [_locate(c, m) if m else None for c, m in zip(counts, ms)]
    if all(t is None for t in targets):
        return [0.0] * len(ms)
    low = [torch.zeros(1 << 16, dtype=torch.int64) for _ in ms]
    for xs in make_iter():
        for i, x in enumerate(xs):
            if targets[i] is not None:
                bits = _abs_bits(x)
                low[i] += torch.bincount(bits[(bits >> 16) == targets[i][0]] & 0xFFFF, minlength=1 << 16).cpu()
    out = []
    for t, lo in zip(targets, low):
        if t is None:
            out.append(0.0)
            continue
        j = int(torch.searchsorted(torch.cumsum(lo, 0), torch.tensor(t[1])).item())
        out.append(float(torch.tensor([(t[0] << 16) | j], dtype=torch.int32).view(torch.float32)))
    return out


def trim_magnitude(x: Tensor, k: float) -> Tensor:
    """TIES trimming of one tensor: zero the bottom-|x| fraction k (the paper's trim ratio).

    m = :func:`trim_count` (n, k) = int(n k); t = m-th smallest |x|; keep entries with |x| >= t (so about
    n - m + 1 survive, more on ties), exactly as the L2S code (`hahahawu/Long-to-Short-via-Model-Merging`,
    `merging_methods.py:ties_merging`). m = 0 trims nothing.
    """
    m = trim_count(x.numel(), k)
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


def trim_all(deltas: Sequence[Tensor], k: Sequence[float] | None,
             thresholds: Sequence[float] | None = None) -> list[Tensor]:
    """TIES step 1 for every model: precomputed ``thresholds`` (|x| >= t kept; deltas are temporaries and
    are trimmed in place), else :func:`trim_magnitude` with trim ratio k_i for model i."""
    if thresholds is not None:
        return [d.masked_fill_(d.abs() < t, 0.0) for d, t in zip(deltas, thresholds)]
    return [trim_magnitude(d, k_i) for d, k_i in zip(deltas, k)]


def streamed_thresholds(make_deltas: Callable[[], Iterator[list[Tensor]]], n: int, k: Sequence[float]) -> list[float]:
    """t_i = the trim_count(n, k_i)-th smallest |delta_i| over a stream of row chunks of n entries per model:
    the exact TIES thresholds of a tensor read in chunks, or of a whole model (global TIES)."""
    return streamed_kth_abs(make_deltas, [trim_count(n, k_i) for k_i in k])


def majority_sign(make_deltas: Callable[[], Iterator[list[Tensor]]], thresholds: Sequence[float],
                  weights: Sequence[float]) -> float:
    """sign(sum over all entries of sign(sum_k w_k m_k)), m_k = delta_k trimmed at t_k: the sign
    ``ties_merging_dare`` gives entries whose elected sign is 0. One streamed pass (the count is an exact
    integer, so it does not depend on the chunking)."""
    total = 0
    for ds in make_deltas():
        u = None
        for d, t, w in zip(ds, thresholds, weights):
            d = w * d.masked_fill_(d.abs() < t, 0.0)
            u = d if u is None else u.add_(d)
        total += int(torch.sign(u).sum(dtype=torch.int64))
    return float((total > 0) - (total < 0))


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


def ties(
    base: Tensor,
    models: Sequence[Tensor],
    *,
    weights: Sequence[float],
    k: Sequence[float],
    alpha: float = 1.0,
    normalize: bool = True,
    scope: str = "tensor",
    thresholds: Sequence[float] | None = None,
    zero_sign: float = 1.0,
    name: str = "",
) -> Tensor:
    """TIES-Merging as the L2S code runs it (Yadav et al. 2023, arXiv 2306.01708), per tensor or global.

    For each model: m_k = delta_k with |delta_k| < t_k zeroed, t_k = the m-th smallest |delta_k|,
    m = int(n k_k) (k = the paper's "trim ratio", the fraction DROPPED; n - m + 1 entries survive on
    tie-free data, more on ties). Then sign election and disjoint mean (:func:`elect_and_combine`), and
        theta_M = theta_0 + alpha * tau*.
    With K = 1 this is magnitude pruning of delta followed by scaling by alpha.

    ``scope="tensor"``: n and t_k per tensor -- ``merging_methods.py:ties_merging`` of
    hahahawu/Long-to-Short-via-Model-Merging@6bc078e4 (bit-exact in fp32; the elected sign of a zero
    sum is +1). ``scope="global"``: n and t_k over all merged (non-excluded) parameters of model k
    -- ``ties_merging_dare`` of the same file (MergeLM's original); the model-wide ``thresholds`` and the
    model-wide majority sign ``zero_sign`` that entries with a zero sign sum get are computed by
    :func:`prepare_ties` over the engine's stream of every merged tensor.
    Not mergekit's ``ties`` (that keeps exactly int(n density) entries; see ``methods/mergekit.py``).
    """
    if scope == "global" and thresholds is None:
        raise MergeConfigError("l2s_ties scope='global' needs model-wide thresholds (computed by l2s_utils.merge.merge)")
    trimmed = trim_all(task_vectors(base, models), k, thresholds)
    return base + alpha * elect_and_combine(trimmed, weights, normalize=normalize, zero_sign=zero_sign)


def _task_vectors(stream: Stream) -> Callable[[], Iterator[list[Tensor]]]:
    return lambda: (task_vectors(b, ms) for b, ms in stream.chunks())


def prepare_ties(stream: Stream, kw: dict) -> dict:
    """``scope: global`` (the L2S code's ``ties_merging_dare``): the model-wide thresholds t_k over every merged
    entry (tensors matched by ``exclude`` are neither ranked nor counted in n, as the reference's TaskVector)
    and the model-wide majority sign for entries whose elected sign is 0. With one model no entry's elected
    sign is ever taken from it (a zero u_1 is never kept), so that pass is skipped (the L2S pair)."""
    if kw["scope"] != "global":
        return {}
    thresholds = streamed_thresholds(_task_vectors(stream), stream.numel, kw["k"])
    zero = 1.0 if stream.n_models == 1 else majority_sign(_task_vectors(stream), thresholds, kw["weights"])
    return {"thresholds": thresholds, "zero_sign": zero}


def prepare_ties_tensor(stream: Stream, kw: dict) -> dict:
    """``scope: tensor``, a tensor read in several row chunks: its exact thresholds t_k over all of them."""
    if kw["scope"] != "tensor" or stream.n_chunks == 1:
        return {}
    return {"thresholds": streamed_thresholds(_task_vectors(stream), stream.numel, kw["k"])}


K = Param(
    "k", float, 0.8, "TIES trim ratio: fraction of each task vector DROPPED (the L2S paper's k)",
    in_unit_open, "0 <= k < 1", per_model=True,
)
NORMALIZE = Param("normalize", bool, True, "TIES: divide by the summed weights of agreeing models (disjoint mean)")
SCOPE = Param("scope", str, "tensor", "trimming scope: per 'tensor' (L2S ties_merging) or 'global' (L2S ties_merging_dare)",
              lambda s: s in ("tensor", "global"), "'tensor' or 'global'")
L2S_CODE = "hahahawu/Long-to-Short-via-Model-Merging@6bc078e4"
L2S_REFUSE = {"density": "the L2S-code methods take k = fraction DROPPED (k = 1 - density); mergekit's "
                         "density convention is merge_method: ties / dare_ties",
              "trim": "l2s_ties always trims at the m-th smallest |delta| (the L2S code); exact top-k trimming "
                      "is mergekit's ties (merge_method: ties, density = fraction kept)"}
register(Method(
    "l2s_ties", ties, (WEIGHT, K, ALPHA, NORMALIZE, SCOPE), "Yadav et al. 2023, arXiv 2306.01708",
    summary="TIES as the L2S paper's code: trim at the k-quantile of |delta|, elect sign, disjoint mean",
    reference=(f"equals {L2S_CODE} src/merging_methods.py ties_merging (scope: tensor) and ties_merging_dare "
               "(scope: global, including its exclude handling and model-wide majority sign), bit-exact on fp32 "
               "models. Differences: the reference computes in the loaded dtype (bf16 in its main_merging.py), we in "
               "fp32 with one cast at the end; per-model weights and normalize: false are our extensions (the "
               "reference has neither: weight 1, normalize true)."),
    refuse=L2S_REFUSE, streams=True, prepare=prepare_ties, prepare_tensor=prepare_ties_tensor,
    display="Ties-Merging", style=("#2ca02c", "^"),
))
