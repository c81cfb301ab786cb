"""DARE: random drop-and-rescale of every task vector, then average, task arithmetic or TIES.

    dare, dare_ta, dare_ties   Yu et al. 2024, "Language models are Super Mario" (DARE)   arXiv 2311.03099
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import torch
from torch import Tensor

from .registry import ALPHA, WEIGHT, Method, MergeConfigError, Param, Stream, in_unit_open, register
from .ties import K, NORMALIZE, elect_and_combine, streamed_thresholds, trim_all


def tensor_seed(seed: int, name: str, index: int) -> int:
    """A 63-bit seed for (global seed, tensor name, model index): masks do not depend on tensor order."""
    h = hashlib.sha256(f"{seed}\x00{name}\x00{index}".encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


def dare_mask(delta: Tensor, p: float, seed: int | torch.Generator | Tensor) -> Tensor:
    """DARE drop-and-rescale: delta * (1 - M) / (1 - p), with M ~ Bernoulli(p) i.i.d. (M = 1 drops).

    The uniform draws are made on the CPU in fp32 from a generator seeded by ``seed`` (or the given
    generator, which the engine carries across the row chunks of one tensor: consecutive draws equal
    one large draw), so the mask is the same on every device and run; ``seed`` may also be an explicit
    boolean keep mask. E[result] = delta
    (Yu et al. 2024, arXiv 2311.03099).
    """
    if p == 0.0:
        return delta.clone()
    if isinstance(seed, Tensor):  # an explicit boolean keep mask (tests, comparisons with a reference's masks)
        keep = seed.to(device=delta.device, dtype=torch.bool)
    else:
        g = seed if isinstance(seed, torch.Generator) else torch.Generator(device="cpu").manual_seed(seed)
        u = torch.rand(delta.shape, generator=g, dtype=torch.float32)
        keep = (u >= p).to(delta.device)
    return torch.where(keep, delta / (1.0 - p), torch.zeros((), dtype=delta.dtype, device=delta.device))


def _round_to(dtype: torch.dtype | None):
    """x -> x rounded to ``dtype`` and back to fp32 (identity for fp32 / None): one op of the reference done in ``dtype``.

    torch's bf16/fp16 elementwise ops compute in fp32 and round the result, so rounding our fp32 result
    reproduces them bit for bit.
    """
    if dtype is None or dtype == torch.float32:
        return lambda x: x
    return lambda x: x.to(dtype).to(torch.float32)


def dare_deltas(base: Tensor, models: Sequence[Tensor], p: Sequence[float], gens: Sequence, *,
                path: str = "authors", model_dtype: torch.dtype | None = None) -> list[Tensor]:
    """The masked task vectors delta~_k that DARE hands to its combine step.

    ``path="exact"``: delta~_k = dare_mask(theta_k - theta_0), in fp32 (the formula of Yu et al. 2024).
    ``path="authors"``: as the L2S code (``mask_weights_utils.py:mask_model_weights`` then the merge
    function, hahahawu/Long-to-Short-via-Model-Merging@6bc078e4), which writes the masked model into a
    model of dtype D (the model dtype; bf16 in its main_merging.py) and re-derives the task vector from it:
        delta   = rd(theta_k - theta_0)
        masked  = rd(delta * (1 - M) / (1 - p))
        theta~k = rd(theta_0 + masked)               (the masked model, stored in D)
        delta~k = rd(theta~k - theta_0)              (TaskVector of the masked model)
    with rd = rounding to D. Even in fp32 (rd = identity) delta~k != masked: theta_0 + masked - theta_0
    is rounded, which changes magnitudes and hence which entries TIES keeps at its threshold.
    """
    if path not in ("authors", "exact"):
        raise MergeConfigError(f"dare: path must be 'authors' or 'exact', got {path!r}")
    rd = _round_to(model_dtype if path == "authors" else None)
    out = []
    for m, pk, g in zip(models, p, gens):
        masked = dare_mask(rd(m - base), pk, g)
        if path == "authors":
            masked = rd(rd(base + rd(masked)) - base)
        out.append(masked)
    return out


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
    path: str = "authors",
    model_dtype: torch.dtype | None = None,
    seed: int = 0,
    generators: Sequence[torch.Generator] | None = None,
    thresholds: Sequence[float] | None = None,
    name: str = "",
) -> Tensor:
    """DARE (Yu et al. 2024, arXiv 2311.03099) as the L2S code's ``mask_merging``: drop-and-rescale, then merge.

        delta~_k = delta_k * (1 - M_k) / (1 - p_k),  M_k ~ Bernoulli(p_k) i.i.d. per entry (M = 1 drops),
    (see :func:`dare_deltas` for ``path``) and then:
        combine="average"          -> sum_k (w_k / sum w) (theta_0 + delta~_k)   (the paper's "DARE")
        combine="task_arithmetic"  -> theta_0 + alpha sum_k w_k delta~_k         (the paper's "DARE-TA")
        combine="ties"             -> L2S per-tensor TIES on delta~_k with k, alpha (the paper's "DARE-Ties")
    Masks are seeded per (seed, tensor name, model index), so they do not depend on processing order
    (the L2S code draws them from torch's global RNG: same distribution, other draws).
    The paper uses p = 0.3 (1.5B, 7B) and 0.4 (14B); the alpha/k of DARE-TA/-Ties are not reported.
    Not mergekit's ``dare_linear`` / ``dare_ties`` (density = keep probability, L1 rescaling; ``mergekit.py``).
    """
    gens = generators or [tensor_seed(seed, name, i) for i in range(len(models))]
    masked = dare_deltas(base, models, p, gens, path=path, model_dtype=model_dtype)
    if combine not in ("average", "task_arithmetic", "ties"):
        raise MergeConfigError(f"dare: unknown combine {combine!r}")
    if combine == "ties":
        assert k is not None
        masked = trim_all(masked, k, thresholds)
    if path == "authors":
        return _authors_combine(base, masked, weights, combine, alpha, normalize, _round_to(model_dtype))
    if combine == "average":
        total = float(sum(weights))
        return base + sum((w / total) * d for w, d in zip(weights, masked))
    if combine == "task_arithmetic":
        return base + alpha * sum(w * d for w, d in zip(weights, masked))
    return base + alpha * elect_and_combine(masked, weights, normalize=normalize)


def _authors_combine(base: Tensor, deltas: Sequence[Tensor], weights: Sequence[float], combine: str, alpha: float,
                     normalize: bool, rd) -> Tensor:
    """The merge after masking in the reference's order and dtypes (rd = rounding to the model dtype D).

    average (``average_merging``): torch.stack(theta~_k).mean(0) of the masked models theta~_k =
    rd(theta_0 + delta~_k) (a weighted mean if the weights differ: our extension);
    task_arithmetic: rd(theta_0 + rd(alpha * tau)), tau = delta~_1 + ... + delta~_K with each addition
    rounded (``TaskVector.__add__``, ``combine_with_pretrained_model``);
    ties (deltas already trimmed, ``ties_merging``): tau = rounded sum of the entries that agree with the
    sign of the rounded sum (0 -> +1), divided by the count of agreeing models -- the count is fp32, so
    from here on the reference computes in fp32: theta_0 + alpha * tau/count, rounded once on writing.
    Per-model weights w_k != 1 (not in the reference) scale delta~_k first.
    """
    ds = [d if w == 1.0 else rd(w * d) for w, d in zip(weights, deltas)]

    def rsum(xs):
        acc = xs[0]
        for x in xs[1:]:
            acc = rd(acc + x)
        return acc

    if combine == "average":
        thetas = [rd(base + d) for d in deltas]
        if all(w == weights[0] for w in weights):
            return torch.stack(thetas).mean(0)
        total = float(sum(weights))
        return sum((w / total) * t for w, t in zip(weights, thetas))
    if combine == "task_arithmetic":
        return rd(base + rd(alpha * rsum(ds)))
    s = torch.sign(rsum(ds))
    s[s == 0] = 1.0
    kept = [d * (((s > 0) & (d > 0)) | ((s < 0) & (d < 0))) for d in ds]
    tau = rsum(kept)
    if normalize:
        den = sum(w * (d != 0).float() for w, d in zip(weights, kept))
        tau = tau / (torch.clamp(den, min=1.0) if all(w == 1.0 for w in weights)
                     else torch.where(den == 0, torch.ones_like(den), den))
    return base + alpha * tau


def prepare_dare(stream: Stream, kw: dict) -> dict:
    """The model dtype D of the authors' path: the dtype the merge writes (``dtype`` of the config)."""
    return {"model_dtype": stream.out_dtype}


def prepare_dare_tensor(stream: Stream, kw: dict) -> dict:
    """One mask generator per model, carried across the tensor's row chunks (consecutive draws equal one
    large draw, so the masks do not depend on the chunking); with ``combine: ties`` and several chunks, the
    exact TIES thresholds of the masked task vectors over all of them (a pass with fresh generators)."""
    def generators() -> list[torch.Generator]:
        return [torch.Generator().manual_seed(tensor_seed(kw["seed"], stream.name, i)) for i in range(stream.n_models)]

    state = {"generators": generators()}
    if kw["combine"] == "ties" and stream.n_chunks > 1:
        def masked():
            gens = generators()
            for b, ms in stream.chunks():
                yield dare_deltas(b, ms, kw["p"], gens, path=kw["path"], model_dtype=kw["model_dtype"])
        state["thresholds"] = streamed_thresholds(masked, stream.numel, kw["k"])
    return state


DARE_HOOKS = {"streams": True, "prepare": prepare_dare, "prepare_tensor": prepare_dare_tensor}
P = Param("p", float, 0.3, "DARE drop rate p (drop with probability p, rescale by 1/(1-p))",
          in_unit_open, "0 <= p < 1", per_model=True)
SEED = Param("seed", int, 0, "seed of the random masks", lambda s: s >= 0, ">= 0")
PATH = Param("path", str, "authors",
             "'authors': re-derive delta~ from the masked model stored in the model dtype (the L2S code); "
             "'exact': use delta~ directly", lambda s: s in ("authors", "exact"), "'authors' or 'exact'")
DARE_REF = ("mask_merging of hahahawu/Long-to-Short-via-Model-Merging@6bc078e4 (mask_weights_utils.py + "
            "merging_methods.py) with mask_apply_method = {}. path: authors (default, because these names exist to "
            "reproduce the paper's code) stores theta_0 + delta~ in the model dtype (the config's dtype; bf16 in the "
            "reference's main_merging.py), re-derives delta~ from it and merges with the reference's roundings: with "
            "the same masks it is bitwise the reference on bf16 and fp32 models (tests/test_fidelity.py){}. "
            "path: exact uses delta~ in fp32 (Yu et al.'s formula); in bf16 the two differ on a few percent of "
            "entries. Differences: masks come from per-tensor seeded generators, not torch's global RNG (same "
            "distribution); mask_apply_method ties_merging_dare (global TIES after DARE) is not offered.")
DARE_REFUSE = {"density": "the L2S DARE methods take p = drop rate; mergekit's density (keep probability, L1 "
                          "rescaling) is merge_method: dare_linear / dare_ties",
               "trim": "the L2S DARE-Ties trims at the k-quantile of |delta| (no top-k option)"}

register(Method(
    "dare", dare,
    (WEIGHT, P, ALPHA, K, NORMALIZE, PATH, SEED,
     Param("combine", str, "average", "merge applied to the masked models: average | task_arithmetic | ties",
           lambda s: s in ("average", "task_arithmetic", "ties"), "average | task_arithmetic | ties")),
    "Yu et al. 2024, arXiv 2311.03099", summary="DARE as the L2S code: random drop-and-rescale of task vectors, then merge",
    reference=DARE_REF.format("average_merging | task_arithmetic | ties_merging (combine)", " (average: "
                              "equal weights; the mean of the stacked masked models)"), refuse=DARE_REFUSE,
    display="DARE", style=("#7b4173", "v"), pair=True, **DARE_HOOKS,
))
register(Method("dare_ta", dare, (WEIGHT, P, ALPHA, PATH, SEED), "Yu et al. 2024, arXiv 2311.03099",
                fixed={"combine": "task_arithmetic"}, summary="DARE + task arithmetic (the paper's DARE-TA, L2S code)",
                reference=DARE_REF.format("task_arithmetic", ""), refuse=DARE_REFUSE,
                display="DARE-TA", style=("#9467bd", "<"), **DARE_HOOKS))
register(Method("l2s_dare_ties", dare, (WEIGHT, P, ALPHA, K, NORMALIZE, PATH, SEED),
                "Yu et al. 2024, arXiv 2311.03099", fixed={"combine": "ties"},
                summary="DARE + L2S TIES (the paper's DARE-Ties, L2S code)",
                reference=DARE_REF.format("ties_merging", ""),
                refuse=DARE_REFUSE, display="DARE-Ties", style=("#8c564b", ">"), **DARE_HOOKS))
