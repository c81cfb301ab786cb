"""Merging methods as small pure functions on tensors, one method family per file, and the registry.

Every kernel works on one parameter tensor at a time, in fp32, and knows nothing about files:

    kernel(base, models, *, name, **params) -> merged tensor

``base`` is theta_0 (the System 1 model in the L2S setting, ``None`` for methods that do not use it),
``models`` the K >= 1 fine-tuned tensors theta_1..theta_K (System 2, possibly also System 1) and
``name`` the tensor's name (used only to seed random masks). Per-model parameters (weights, DARE drop
rates, TIES densities) arrive as lists of length K. The task vector of model k is
delta_k = theta_k - theta_0 (METHODS.md section 0); for L2S there is effectively one, System 2 - System 1.

One file per method family: basic.py (average, task arithmetic), ties.py (TIES as the L2S code, and
everything TIES computes), dare.py (DARE as the L2S code), mergekit.py (mergekit's methods with mergekit's
meaning), svd.py (LoRE, Twin); the composite methods (AIM, ACM, Sens) are registered by
``l2s_utils/merge/composite.py``. Each family file registers its methods (``register(Method(...))``, every
fact about a method); registry.py defines the record, parameters and validation; table.py renders the
registry as the tables of ``l2s_utils/README.md`` and ``book/methods.md`` (every method, paper and file).
Importing a family file below registers its methods. The paper that compares them for long-to-short
reasoning: Wu et al. 2025, arXiv 2503.20641.
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
