"""DARE: random drop-and-rescale of every task vector, then average, task arithmetic or TIES.

    dare, dare_ta, dare_ties   Yu et al. 2024, "Language models are Super Mario" (DARE)   arXiv 2311.03099
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import torch
from torch import Tensor

from .basic import task_vectors
from .registry import ALPHA, WEIGHT, Method, MergeConfigError, Param, in_unit_open, register
from .ties import K, NORMALIZE, TRIM, elect_and_combine, trim_all


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


P = Param("p", float, 0.3, "DARE drop rate p (drop with probability p, rescale by 1/(1-p))",
          in_unit_open, "0 <= p < 1", per_model=True)
SEED = Param("seed", int, 0, "seed of the random masks", lambda s: s >= 0, ">= 0")

register(Method(
    "dare", dare,
    (WEIGHT, P, ALPHA, K, NORMALIZE, TRIM, SEED,
     Param("combine", str, "average", "merge applied to the masked models: average | task_arithmetic | ties",
           lambda s: s in ("average", "task_arithmetic", "ties"), "average | task_arithmetic | ties")),
    "Yu et al. 2024, arXiv 2311.03099", summary="random drop-and-rescale of task vectors, then merge",
))
register(Method("dare_ta", dare, (WEIGHT, P, ALPHA, SEED), "Yu et al. 2024, arXiv 2311.03099",
                aliases=("dare_linear",), fixed={"combine": "task_arithmetic"}, summary="DARE + task arithmetic"))
register(Method("dare_ties", dare, (WEIGHT, P, ALPHA, K, NORMALIZE, TRIM, SEED),
                "Yu et al. 2024, arXiv 2311.03099", fixed={"combine": "ties"}, summary="DARE + TIES"))
