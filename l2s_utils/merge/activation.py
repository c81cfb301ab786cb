"""Activation- and gradient-informed merging: AIM, Sens-Merging and ACM.

All statistics are accumulated batch by batch (nothing keeps all activations) on the device given
(GPU when available, CPU otherwise), with the models loaded in fp32 on every device. The pure
relaxation formulas are separate from the statistics.

AIM -- Nobari et al. 2025, "Activation-Informed Merging", arXiv 2502.02421; reference code
ahnobari/ActivationInformedMerging@e7eccd57 (MergeModels/ActivationMerging/_utils.py)
    calibration: texts longer than the block size (512) are dropped, the rest concatenated and cut into
    512-token blocks (:meth:`Calibration.blocks`); importance of module m: A_m = sum over blocks of
    mean over the block's tokens of |X_m| (X_m = the module's INPUT activations of the BASE model),
    I_m = A_m / max(A_m) in [0, 1];
    relaxation:  W_AIM = W_base + (W_merged - W_base) * (1 - I_m (1 - omega)),
    broadcast along the input-channel (last) axis; 1-D norm weights elementwise. Modules: every module
    with a ``weight`` and no "embed" in its name (q/k/v/o, gate/up/down, the RMSNorms, lm_head);
    biases keep the merged value. A TIED model's embedding is the lm_head's storage in the reference,
    so it is relaxed with the lm_head's importance (``tied_embedding: relax``, the default; ``keep``
    leaves it at the merged value). omega = 1 is the identity.

Sens-Merging -- Liu et al. 2025, arXiv 2502.12420 (METHODS.md section 7; no official code)
    s_ij = |theta_ij * dL_i/dtheta_ij| on model i's own calibration set D_i (causal-LM loss, per
    sample); layer score S_i^l = mean_x sum_{j in l} s_ij; alpha_i^l = normalised S_i^l ("l2" over layers
    by default, as the RCP reimplementation); cross-task tau_i = sum_{j != i} g_ij with
    g_ij = mean_{x in D_j} mean_tokens ||z_i(x) - z_j(x)||_2 (logits), normalised to sum 1;
    sigma_i^l = softmax_i(alpha_i^l tau_i / T); merge theta_0 + alpha sum_i (K sigma_i^l) delta_i^l.
    Uniform sigma gives task arithmetic exactly. Normalisations and the sign of tau are UNKNOWN in the
    paper and are parameters here.

ACM -- Yao et al. 2025, arXiv 2505.14009 (METHODS.md section 8; method details UNKNOWN, our assumption)
    NMI^l = normalised mutual information between the base's and the fine-tuned model's layer-l output
    activations (2-D histogram of value pairs, ``bins`` bins, up to ``max_values`` sampled pairs per
    layer); lambda^l = 2 sigmoid(-theta z^l), z^l = (NMI^l - mean NMI) / std NMI, so high-MI layers get
    less of the task vector and low-MI layers more, mean about 1; theta = 0 or identical NMI in every
    layer gives lambda = 1 (the input merge unchanged). Applied post hoc:
    theta_final^l = theta_0^l + lambda^l (theta_merged^l - theta_0^l) for the tensors of decoder layer l.
"""

from __future__ import annotations

import math
import re
from typing import Iterable

import torch

from .calibration import Calibration
from .checkpoint import check_weights_policy, load_model

LAYER_RE = re.compile(r"^model\.layers\.(\d+)\.")


# ---------------------------------------------------------------------------------------------
# AIM
# ---------------------------------------------------------------------------------------------


def aim_relax(base: torch.Tensor, merged: torch.Tensor, importance: torch.Tensor | None, omega: float,
              model_dtype: torch.dtype | None = None) -> torch.Tensor:
    """W_base + rd(W_merged - W_base) * (1 - I (1 - omega)); I along the last axis (input channels).

    rd rounds the difference to ``model_dtype`` (the reference subtracts the two bf16 models in bf16, then
    computes the rest in fp32 because I is fp32); None or fp32 = no rounding.
    """
    if importance is None or omega == 1.0:
        return merged
    delta = merged - base
    if model_dtype is not None and model_dtype != torch.float32:
        delta = delta.to(model_dtype).to(torch.float32)
    r = 1.0 - importance.to(merged.dtype).to(merged.device) * (1.0 - omega)
    return base + delta * r


@torch.no_grad()
def aim_importance(model, blocks: list[torch.Tensor], *, progress: bool = False) -> dict[str, torch.Tensor]:
    """{'<module>.weight': I (d_in,)} for every module with a weight and no "embed" in its name.

    A_m = sum over calibration blocks b of mean over the block's tokens of |X_m| (X_m = the module's input,
    one forward pass per (1, L) block, no padding), I_m = A_m / max(A_m) -- ``get_calib_feat`` and
    ``relax_on_merged`` of ahnobari/ActivationInformedMerging@e7eccd57. The model runs in the dtype it was
    loaded in (fp32 here; the reference runs the base in bf16, so its per-block means and their sum are bf16).
    """
    from tqdm.auto import tqdm

    sums: dict[str, torch.Tensor] = {}
    hooks = []

    def hook_for(key: str):
        def hook(module, inputs, output):
            x = inputs[0].detach()
            a = x.reshape(-1, x.shape[-1]).abs().mean(dim=0).float().cpu()
            sums[key] = a if key not in sums else sums[key] + a
        return hook

    for name, module in model.named_modules():
        w = getattr(module, "weight", None)
        if isinstance(w, torch.nn.Parameter) and "embed" not in name and name:
            hooks.append(module.register_forward_hook(hook_for(f"{name}.weight")))
    try:
        for ids in tqdm(blocks, desc="AIM activations", disable=not progress, leave=False):
            model(input_ids=ids.to(model.device))
    finally:
        for h in hooks:
            h.remove()
    return {k: (v.abs() / v.abs().max().clamp(min=1e-30)) for k, v in sums.items()}


# ---------------------------------------------------------------------------------------------
# ACM
# ---------------------------------------------------------------------------------------------


def nmi_histogram(x: torch.Tensor, y: torch.Tensor, bins: int = 64) -> float:
    """Normalised mutual information I(X;Y) / sqrt(H(X) H(Y)) from a 2-D histogram of paired values.

    Bins are equal-mass (quantiles of each variable), so the estimate is invariant to monotone
    rescaling of either side. Returns 1.0 when both are constant (degenerate: identical information).
    """
    x, y = x.double().reshape(-1), y.double().reshape(-1)
    if x.numel() != y.numel() or x.numel() == 0:
        raise ValueError("nmi_histogram needs two non-empty tensors of the same size")

    def codes(v):
        qs = torch.quantile(v, torch.linspace(0, 1, bins + 1, dtype=v.dtype)[1:-1])
        return torch.bucketize(v, qs)

    cx, cy = codes(x), codes(y)
    joint = torch.bincount(cx * bins + cy, minlength=bins * bins).double().view(bins, bins)
    p = joint / joint.sum()
    px, py = p.sum(1), p.sum(0)
    nz = p > 0
    mi = float((p[nz] * (p[nz] / (px[:, None] * py[None, :])[nz]).log()).sum())
    hx = float(-(px[px > 0] * px[px > 0].log()).sum())
    hy = float(-(py[py > 0] * py[py > 0].log()).sum())
    if hx == 0 or hy == 0:
        return 1.0
    return max(0.0, min(1.0, mi / math.sqrt(hx * hy)))


@torch.no_grad()
def layer_outputs_sample(model, calib: Calibration, *, batch_size: int = 8, max_values: int = 200_000,
                         seed: int = 0) -> list[torch.Tensor]:
    """A fixed random sample (same positions for every model) of each decoder layer's output values."""
    layers = model.model.layers
    samples: list[list[torch.Tensor]] = [[] for _ in layers]
    state: dict = {}
    hooks = [layer.register_forward_hook(
        (lambda i: lambda m, inp, out: samples[i].append(
            (out[0] if isinstance(out, tuple) else out).float()[state["mask"].bool()].reshape(-1).cpu()))(i))
        for i, layer in enumerate(layers)]
    try:
        pad = model.config.pad_token_id or 0
        for ids, att in calib.batches(batch_size, pad):
            state["mask"] = att.to(model.device)
            model(input_ids=ids.to(model.device), attention_mask=att.to(model.device))
    finally:
        for h in hooks:
            h.remove()
    out = []
    g = torch.Generator().manual_seed(seed)
    for chunks in samples:
        v = torch.cat(chunks)
        idx = torch.randperm(v.numel(), generator=g)[:max_values] if v.numel() > max_values else torch.arange(v.numel())
        out.append(v[idx.sort().values])
    return out


def acm_coefficients(nmi: list[float], theta: float) -> list[float]:
    """lambda^l = 2 sigmoid(-theta z^l), z = standardised NMI (z = 0 when all layers are equal)."""
    t = torch.tensor(nmi, dtype=torch.float64)
    sd = float(t.std(unbiased=False)) if len(nmi) > 1 else 0.0
    z = (t - t.mean()) / sd if sd > 1e-12 else torch.zeros_like(t)
    return [float(v) for v in 2 * torch.sigmoid(-theta * z)]


# ---------------------------------------------------------------------------------------------
# Sens-Merging
# ---------------------------------------------------------------------------------------------


def layer_group(name: str) -> str:
    """Sens layer grouping (RCP): the first three dot-components, e.g. 'model.layers.3'."""
    return ".".join(name.split(".")[:3])


def causal_lm_loss(model, ids: torch.Tensor, att: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the whole sequence, padding masked (labels = -100)."""
    logits = model(input_ids=ids, attention_mask=att).logits
    labels = ids.masked_fill(att == 0, -100)[:, 1:]
    return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                             ignore_index=-100)


def layer_sensitivity(model, calib: Calibration, *, per_sample: bool = True, progress: bool = False) -> dict[str, float]:
    """S^l = mean over samples x of sum_{j in layer l} |theta_j * dL(x)/dtheta_j| (model's own weights)."""
    from tqdm.auto import tqdm

    model.eval()
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    scores: dict[str, float] = {}
    pad = model.config.pad_token_id or 0
    batches = list(calib.batches(1 if per_sample else 8, pad))
    for ids, att in tqdm(batches, desc="Sens gradients", disable=not progress, leave=False):
        model.zero_grad(set_to_none=True)
        causal_lm_loss(model, ids.to(model.device), att.to(model.device)).backward()
        for n, p in params.items():
            if p.grad is not None:
                g = layer_group(n)
                scores[g] = scores.get(g, 0.0) + float((p.detach() * p.grad).abs().sum()) * ids.shape[0]
    model.zero_grad(set_to_none=True)
    n = len(calib.sequences)
    return {k: v / n for k, v in scores.items()}


def normalise(values: dict[str, float], how: str) -> dict[str, float]:
    v = torch.tensor(list(values.values()), dtype=torch.float64)
    if how == "l2":
        d = float(v.norm())
    elif how == "l1":
        d = float(v.abs().sum())
    elif how == "max":
        d = float(v.abs().max())
    elif how == "none":
        d = 1.0
    else:
        raise ValueError(f"unknown normalisation {how!r}; use l2, l1, max or none")
    return {k: x / d if d else 0.0 for k, x in values.items()}


@torch.no_grad()
def logit_distance(model_i, model_j, calib: Calibration, batch_size: int = 8) -> float:
    """g_ij = mean over samples of mean over tokens of ||z_i - z_j||_2 (fp32 logits)."""
    total, count = 0.0, 0
    pad = model_j.config.pad_token_id or 0
    for ids, att in calib.batches(batch_size, pad):
        zi = model_i(input_ids=ids.to(model_i.device), attention_mask=att.to(model_i.device)).logits.float()
        zj = model_j(input_ids=ids.to(model_j.device), attention_mask=att.to(model_j.device)).logits.float().to(zi.device)
        d = (zi - zj).norm(dim=-1)
        m = att.to(d.device).float()
        per_sample = (d * m).sum(1) / m.sum(1).clamp(min=1)
        total += float(per_sample.sum())
        count += ids.shape[0]
    return total / max(count, 1)


def sens_coefficients(sens: list[dict[str, float]], tau: list[float], temperature: float,
                      sens_norm: str = "l2", tau_norm: str = "l1", tau_sign: float = 1.0) -> list[dict[str, float]]:
    """K sigma_i^l for every model i and layer group l (the per-layer weights of the TA plug-in)."""
    K = len(sens)
    alphas = [normalise(s, sens_norm) for s in sens]
    t = normalise({str(i): tau_sign * x for i, x in enumerate(tau)}, tau_norm)
    taus = [t[str(i)] for i in range(K)]
    groups = sorted(set().union(*[a.keys() for a in alphas]))
    out: list[dict[str, float]] = [dict() for _ in range(K)]
    for g in groups:
        logits = torch.tensor([alphas[i].get(g, 0.0) * taus[i] / temperature for i in range(K)], dtype=torch.float64)
        sigma = torch.softmax(logits, 0)
        for i in range(K):
            out[i][g] = float(K * sigma[i])
    return out


def models_from(paths: Iterable, device: str, *, allow_pickle: bool = False):
    paths = list(paths)
    for p in paths:  # the pickle policy for every model before transformers loads any
        check_weights_policy(p, allow_pickle)
    return [load_model(p, device, torch.float32, allow_pickle=allow_pickle)[0] for p in paths]
