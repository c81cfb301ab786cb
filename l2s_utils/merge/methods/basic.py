"""The linear methods: average merging (model soup) and task arithmetic, and the task-vector helpers.

    average          Wortsman et al. 2022, "Model soups"                       arXiv 2203.05482
    task_arithmetic  Ilharco et al. 2023, "Editing models with task arithmetic" arXiv 2212.04089
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from .registry import ALPHA, WEIGHT, Method, Param, register


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
    base: Tensor, models: Sequence[Tensor], *, weights: Sequence[float], alpha: float = 1.0, normalize: bool = False,
    name: str = "",
) -> Tensor:
    """Task arithmetic: theta_M = theta_0 + alpha * sum_k w_k (theta_k - theta_0)   (/ sum_k w_k if normalize).

    alpha is applied once to the summed task vectors (not 1/K-normalised), as in the L2S code; the
    paper uses alpha = 0.7 at every scale (Table 7). alpha = 1 with one model gives that model back,
    alpha = 0 gives the base. The same function in both references: the L2S code's ``task_arithmetic``
    (scaling_coefficient = alpha, all weights 1) and mergekit's ``task_arithmetic`` (``weight`` w_k,
    ``lambda`` = alpha, ``normalize`` default false; normalize: true divides by sum_k w_k, or by 1 when
    |sum_k w_k| < 1e-8, before alpha), in the same order of operations (Ilharco et al. 2023, arXiv 2212.04089).
    """
    mixed = weighted_sum(base, models, weights)
    if normalize:
        div = torch.tensor(list(weights), dtype=mixed.dtype, device=mixed.device).sum()
        if float(div.abs()) >= 1e-8:
            mixed.div_(div)
    return base_plus(base, mixed, alpha)


L2S_CODE = "hahahawu/Long-to-Short-via-Model-Merging@6bc078e4"
register(Method(
    "average", average, (WEIGHT,), "Wortsman et al. 2022, arXiv 2203.05482", needs_base=False,
    aliases=("average_merging",), summary="(weighted) mean of the models (L2S average_merging)",
    reference=(f"equals {L2S_CODE} src/merging_methods.py average_merging (bit-exact for two models with equal "
               "weights, fp32); per-model weights are our extension. mergekit's linear is merge_method: linear."),
    streams=True,
    display="Average Merging", style=("#1f77b4", "s"), pair=True,
))
register(Method(
    "task_arithmetic", task_arithmetic,
    (WEIGHT, ALPHA, Param("normalize", bool, False, "divide the summed weighted task vectors by sum_k w_k (mergekit)")),
    "Ilharco et al. 2023, arXiv 2212.04089", summary="theta_0 + alpha sum_k w_k delta_k",
    reference=(f"equals {L2S_CODE} task_arithmetic (scaling_coefficient = alpha) and mergekit 0.1.5 task_arithmetic "
               "(weight, lambda, normalize), bitwise on fp32 inputs. Differences: the L2S code computes in the "
               "loaded dtype (bf16), we in fp32 with one cast; mergekit's density / rescale (no effect on "
               "task_arithmetic there) are refused here; weight defaults to 1 (mergekit requires it)."),
    refuse={"density": "task_arithmetic has no sparsification (mergekit ignores density here); use dare_linear "
                       "(mergekit) or dare_ta (L2S) for DARE", "rescale": "task_arithmetic has no sparsification"},
    streams=True,
    display="Task Arithmetic", style=("#ff7f0e", "D"),
))
