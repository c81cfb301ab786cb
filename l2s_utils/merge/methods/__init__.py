"""Merging methods as small pure functions on tensors, one method family per file, and the registry.

Every kernel works on one parameter tensor at a time, in fp32, and knows nothing about files:

    kernel(base, models, *, name, **params) -> merged tensor

``base`` is theta_0 (the System 1 model in the L2S setting, ``None`` for methods that do not use it),
``models`` the K >= 1 fine-tuned tensors theta_1..theta_K (System 2, possibly also System 1) and
``name`` the tensor's name (used only to seed random masks). Per-model parameters (weights, DARE drop
rates, TIES densities) arrive as lists of length K. The task vector of model k is
delta_k = theta_k - theta_0 (METHODS.md section 0); for L2S there is effectively one, System 2 - System 1.

Methods, papers and files (formulas in each kernel's docstring):
  average          Wortsman et al. 2022, "Model soups"                       arXiv 2203.05482   basic.py
  task_arithmetic  Ilharco et al. 2023, "Editing models with task arithmetic" arXiv 2212.04089   basic.py
  l2s_ties         Yadav et al. 2023, "TIES-Merging" (as the L2S code)        arXiv 2306.01708   ties.py
  dare, dare_ta, l2s_dare_ties  Yu et al. 2024, DARE (as the L2S code)       arXiv 2311.03099   dare.py
  linear, ties, dare_ties, dare_linear   mergekit 0.1.5's methods, mergekit's meaning          mergekit.py
  lore             Liu et al. 2025, "LoRE-Merging"                            arXiv 2502.10749   svd.py
  twin             Lu et al. 2024, "Twin-Merging" (SVD part only)             arXiv 2406.15479   svd.py
  aim, sens, acm   activation-informed, registered by ``l2s_utils/merge/composite.py``
The registry (names, typed parameters, validation) is registry.py. The paper that compares them for
long-to-short reasoning: Wu et al. 2025, arXiv 2503.20641.
"""

from .registry import (REGISTRY, Method, MergeConfigError, Param, Stream, all_methods, get_method, register, resolve_params,
                       with_seed)
from .basic import average, base_plus, task_arithmetic, task_vectors, weighted_sum
from .ties import (elect_and_combine, kth_smallest_abs, majority_sign, streamed_kth_abs, streamed_thresholds, ties,
                   trim_all, trim_count, trim_magnitude, trim_topk)
from .dare import dare, dare_deltas, dare_mask, tensor_seed
from .mergekit import generalized_task_arithmetic, linear, rescale_l1, sparsify
from .svd import (lore, lore_decompose, lore_objective, prox_nuclear, squared_nuclear_threshold, svd_lowrank_exact, svt,
                  top_right_subspace, twin, twin_diffs)

__all__ = [
    "REGISTRY", "Method", "MergeConfigError", "Param", "Stream", "all_methods", "get_method", "register",
    "resolve_params", "with_seed",
    "average", "base_plus", "task_arithmetic", "task_vectors", "weighted_sum",
    "elect_and_combine", "kth_smallest_abs", "majority_sign", "streamed_kth_abs", "streamed_thresholds", "ties",
    "trim_all", "trim_count", "trim_magnitude", "trim_topk",
    "dare", "dare_mask", "dare_deltas", "tensor_seed",
    "generalized_task_arithmetic", "linear", "rescale_l1", "sparsify",
    "lore", "lore_decompose", "lore_objective", "prox_nuclear", "squared_nuclear_threshold", "svd_lowrank_exact", "svt",
    "top_right_subspace", "twin", "twin_diffs",
]
