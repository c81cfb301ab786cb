"""mergekit's methods with mergekit's meaning: ``linear``, ``ties``, ``dare_ties``, ``dare_linear``.

A mergekit config (mergekit 0.1.5, ``mergekit/merge_methods/generalized_task_arithmetic.py``,
``sparsify.py``, ``linear.py``) run by ``l2s merge`` gives mergekit's numbers: same parameters, same
defaults, same order of floating-point operations (bitwise equal in tests, with the same random masks).
``task_arithmetic`` is shared with the L2S code and lives in basic.py (its ``normalize`` is mergekit's).

Generalized task arithmetic (mergekit's ``GeneralizedTaskArithmeticMerge``), per tensor, K models:
    d_k  = sparsify(theta_k - theta_0, density_k)        (ties: top-k magnitude; dare_*: Bernoulli keep)
    d_k  = d_k * ||theta_k - theta_0||_1 / ||d_k||_1     (rescale: true; skipped if either norm < 1e-7)
    u_k  = w_k d_k
    ties / dare_ties: s = +1 where sum_k u_k >= 0 else -1;  c_k = [sign(u_k) == s]
                      mixed = sum_k c_k u_k,  divisor = sum_k c_k w_k  (0 -> 1)
    dare_linear:      mixed = sum_k u_k,      divisor = sum_k w_k     (|.| < 1e-8 -> 1)
    mixed /= divisor (normalize: true);  theta_M = theta_0 + lambda * mixed
Defaults (mergekit's): density 1, lambda 1, normalize true for ties and false for dare_*, rescale false
for ties and true for dare_* (L1-norm matching, NOT 1/density), weight 1 (mergekit requires it).

These are NOT the L2S paper's TIES / DARE-Ties (``l2s_ties`` and ``l2s_dare_ties``: k = fraction dropped,
quantile threshold, DARE rescaling by 1/(1-p), disjoint mean by default).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from .dare import SEED, tensor_seed
from .registry import ALPHA, WEIGHT, Method, MergeConfigError, Param, register
from .ties import trim_topk

MERGEKIT = "mergekit 0.1.5 (arcee-ai/mergekit)"


def rescale_l1(delta: Tensor, masked: Tensor, eps: float = 1e-7) -> Tensor:
    """masked * ||delta||_1 / ||masked||_1 (mergekit ``rescaled_masked_tensor``, norm l1); unchanged if a norm < eps."""
    before, after = delta.abs().sum(), masked.abs().sum()
    if before < eps or after < eps:
        return masked
    return masked * (before / after)


def bernoulli_keep(shape: torch.Size, density: float, seed: int | torch.Generator) -> Tensor:
    """A 0/1 fp32 keep mask, P(1) = density, drawn on the CPU from a generator seeded per tensor and model."""
    g = seed if isinstance(seed, torch.Generator) else torch.Generator(device="cpu").manual_seed(seed)
    return (torch.rand(shape, generator=g, dtype=torch.float32) < density).to(torch.float32)


def sparsify(delta: Tensor, density: float, how: str, rescale: bool, seed: int | torch.Generator = 0) -> Tensor:
    """mergekit's ``sparsify`` for ``magnitude`` (keep the top max(1, int(n density)) |delta|) and ``random``."""
    if density >= 1.0:
        return delta
    if how == "magnitude":
        if density <= 0.0 or delta.numel() == 0:
            return torch.zeros_like(delta)
        # trim_topk keeps exactly max(1, int(n density)) entries (equal |delta|: the first in index order)
        masked = delta * (trim_topk(delta, density) != 0).to(delta.dtype)
    elif how == "random":
        masked = delta * bernoulli_keep(delta.shape, density, seed).to(delta.device)
    else:
        raise MergeConfigError(f"unknown sparsification {how!r}")
    return rescale_l1(delta, masked) if rescale else masked


def generalized_task_arithmetic(
    base: Tensor,
    models: Sequence[Tensor],
    *,
    weights: Sequence[float],
    density: Sequence[float],
    alpha: float = 1.0,
    normalize: bool = False,
    rescale: bool = False,
    int8_mask: bool = False,
    sparsification: str = "magnitude",
    consensus: bool = True,
    seed: int = 0,
    name: str = "",
) -> Tensor:
    """mergekit's generalized task arithmetic for one tensor (formulas in the module docstring).

    ``int8_mask`` only changes the dtype of mergekit's consensus mask (memory), never the values.
    """
    deltas = base.new_empty((len(models), *base.shape))
    for i, (m, dk) in enumerate(zip(models, density)):
        deltas[i] = sparsify(m - base, dk, sparsification, rescale, tensor_seed(seed, name, i))
    w = torch.tensor(list(weights), dtype=deltas.dtype, device=deltas.device)
    while deltas.dim() > w.dim():
        w.unsqueeze_(-1)
    deltas.mul_(w)
    if consensus:
        s = (deltas.sum(dim=0) >= 0).to(deltas.dtype) * 2 - 1
        mask = deltas.sign() == s
        mixed = (deltas * mask).sum(dim=0)
        divisor = (w * mask).sum(dim=0)
        divisor[divisor == 0] = 1
    else:
        mixed = deltas.sum(dim=0)
        divisor = w.sum(dim=0)
        divisor[divisor.abs() < 1e-8] = 1
    if normalize:
        mixed /= divisor
    if alpha != 1:
        mixed *= alpha
    return base + mixed


def linear(base: Tensor | None, models: Sequence[Tensor], *, weights: Sequence[float], normalize: bool = True,
           name: str = "") -> Tensor:
    """mergekit's ``linear``: theta_M = sum_k w_k theta_k (/ sum_k w_k with normalize: true, the default).

    Accumulated as mergekit does (``addcmul_`` into a zero tensor, then one division). The base is not used.
    """
    out = torch.zeros_like(models[0])
    for m, w in zip(models, weights):
        out.addcmul_(m, torch.tensor(w, dtype=out.dtype, device=out.device))
    if normalize:
        out.div_(torch.tensor(list(weights), dtype=out.dtype, device=out.device).sum())
    return out


def _unit_closed(x: float) -> bool:
    return 0.0 <= x <= 1.0


DENSITY = Param("density", float, 1.0, "mergekit density: fraction of each task vector KEPT (dare_*: keep probability)",
                _unit_closed, "0 <= density <= 1", per_model=True)
RESCALE = lambda default: Param("rescale", bool, default,  # noqa: E731
                                "rescale the sparsified task vector to its original L1 norm (mergekit)")
MK_NORMALIZE = lambda default: Param("normalize", bool, default,  # noqa: E731
                                     "divide the mixed task vector by the summed weights (of agreeing models)")
INT8 = Param("int8_mask", bool, False, "mergekit memory option (mask dtype); no effect on the values")
REF = (f"equals {MERGEKIT} merge_method {{}} (merge_methods/generalized_task_arithmetic.py, sparsify.py): same "
       "parameters, defaults and order of operations, bitwise equal on fp32 tiny Qwen2 checkpoints{} "
       "(tests/test_mergekit.py). Differences: {}")
TIES_TIE = ("among entries of EQUAL |delta| at the top-k boundary we keep the first in index order, mergekit "
            "keeps what its unstable argsort returns (bf16 deltas have such ties)")
DARE_RNG = ("masks come from a generator seeded per (seed, tensor name, model), mergekit draws "
            "torch.bernoulli from the global RNG (same distribution, other draws)")
WEIGHT_DEF = "weight defaults to 1 (mergekit requires it)"


def _refuse(l2s_name: str, what: str) -> dict[str, str]:
    return {"k": f"this is mergekit's {what}, which takes density = fraction KEPT; the L2S paper's k (fraction "
                 f"DROPPED) belongs to merge_method: {l2s_name}",
            "p": f"this is mergekit's {what}, which takes density = keep probability (1 - p) and rescales to the "
                 f"L1 norm; the L2S paper's DARE with drop rate p is merge_method: {l2s_name}",
            "scope": f"global trimming is the L2S code's ties_merging_dare: merge_method: l2s_ties, scope: global",
            "trim": "mergekit's ties always keeps exactly max(1, int(n density)) entries"}


register(Method(
    "linear", linear, (WEIGHT, MK_NORMALIZE(True)), "Wortsman et al. 2022, arXiv 2203.05482", needs_base=False,
    summary="mergekit linear: sum_k w_k theta_k (/ sum_k w_k)",
    reference=f"equals {MERGEKIT} linear (merge_methods/linear.py), bitwise. Differences: {WEIGHT_DEF}.",
    streams=True,
    display="Linear (mergekit)", style=("#98df8a", "H"), pair=True,
))
register(Method(
    "ties", generalized_task_arithmetic,
    (WEIGHT, DENSITY, ALPHA, MK_NORMALIZE(True), RESCALE(False), INT8), "Yadav et al. 2023, arXiv 2306.01708",
    fixed={"sparsification": "magnitude", "consensus": True},
    summary="mergekit ties: keep top density of |delta|, elect sign (sum), mean of agreeing",
    reference=REF.format("ties", "", f"{TIES_TIE}; {WEIGHT_DEF}."), refuse=_refuse("l2s_ties", "ties"),
    display="TIES (mergekit)", style=("#ff9896", "8"),
))
register(Method(
    "dare_ties", generalized_task_arithmetic,
    (WEIGHT, DENSITY, ALPHA, MK_NORMALIZE(False), RESCALE(True), INT8, SEED), "Yu et al. 2024, arXiv 2311.03099",
    fixed={"sparsification": "random", "consensus": True},
    summary="mergekit dare_ties: Bernoulli(density) keep, L1 rescale, elect sign, sum of agreeing",
    reference=REF.format("dare_ties", " with the same masks", f"{DARE_RNG}; {WEIGHT_DEF}."),
    refuse=_refuse("l2s_dare_ties", "dare_ties"),
    display="DARE-Ties (mergekit)", style=("#c5b0d5", "H"),
))
register(Method(
    "dare_linear", generalized_task_arithmetic,
    (WEIGHT, DENSITY, ALPHA, MK_NORMALIZE(False), RESCALE(True), SEED), "Yu et al. 2024, arXiv 2311.03099",
    fixed={"sparsification": "random", "consensus": False},
    summary="mergekit dare_linear: Bernoulli(density) keep, L1 rescale, weighted sum",
    reference=REF.format("dare_linear", " with the same masks", f"{DARE_RNG}; {WEIGHT_DEF}."),
    refuse=_refuse("dare_ta", "dare_linear"),
    display="DARE-Linear (mergekit)", style=("#c49c94", "8"),
))
