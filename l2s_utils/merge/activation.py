"""Activation- and gradient-informed merging: AIM, Sens-Merging and ACM.

All statistics are computed on the device given (GPU when available, CPU otherwise), with the models
loaded in fp32 on every device. AIM and Sens accumulate batch by batch; ACM keeps the base model's probed
activations (bf16, on the CPU) to pair them with each fine-tuned model's. The pure formulas are separate
from the statistics.

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

ACM -- Yao et al. 2025, "Activation-Guided Consensus Merging for Large Language Models", arXiv 2505.14009v1
(NeurIPS 2025), section 3.2; executable reference: the ACM script ``acm.py`` as copied in
iacobellimario/L2S-MultiObjective-Evolutionary-Merging@8cb439e (project_new/ACM/methods/; provenance unverified)
    task vectors tau_i = theta_i - theta_0; A_i^k = layer k's activations of model i on a shared calibration
    set (decoder layer k: its MLP down_proj output; -1 embedding, -2 final norm, -3 lm_head, as the script);
    I_i^k = I(A_0^k, A_i^k), the discrete mutual information of Eq. (1) over the paired bf16 activation values,
    computed per calibration sequence d;
    lambda_i^k = 1 - mean_d sigmoid(t (I_{i,d}^k - max_d' I_{i,d'}^k))   [Eq. (2) + section 4.1's translation
    by the maximum MI over data pieces; the mean over pieces is the script's];
    theta_merged^k = theta_0^k + 1/N sum_i lambda_i^k tau_i^k   [Eq. (3)];
    t = 0.7 for long-to-short (section 4.1), -1.8 for general merging (section 4.2). As a plug-in
    (section 3.2, last paragraph) the base method merges theta_0 + lambda_i^k tau_i^k in place of theta_i
    (every tensor of layer k): task_arithmetic with alpha = 1/N is Eq. (3) exactly; with one model, TIES gives
    theta_0 + alpha lambda^k trim(tau^k) (trimming is scale-invariant).
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

ACM_EMBED, ACM_NORM, ACM_HEAD = -1, -2, -3  # the paper's Figure 4 numbers these layers -1, -2, -3


def acm_layer(name: str) -> int | None:
    """The ACM layer a tensor belongs to: k for ``model.layers.k.*``, -1 embedding, -2 final norm, -3 lm_head.

    As the public ACM script: every weight (and bias) of decoder layer k takes layer k's coefficient; the
    embedding, ``model.norm`` and ``lm_head`` have their own. None: a tensor outside these (kept as merged).
    """
    hit = LAYER_RE.match(name)
    if hit:
        return int(hit.group(1))
    if name.startswith("model.embed_tokens."):
        return ACM_EMBED
    if name.startswith("model.norm."):
        return ACM_NORM
    if name.startswith("lm_head."):
        return ACM_HEAD
    return None


def acm_probe_layer(module_name: str) -> int | None:
    """The ACM layer whose activations a module's OUTPUT represents (None: not probed).

    Decoder layer k: its MLP's ``down_proj`` output; -1: the embedding output; -2: ``model.norm``'s output;
    -3: ``lm_head``'s output (the logits) -- the modules the public ACM script hooks.
    """
    m = re.match(r"^model\.layers\.(\d+)\.mlp\.down_proj$", module_name)
    if m:
        return int(m.group(1))
    return {"model.embed_tokens": ACM_EMBED, "model.norm": ACM_NORM, "lm_head": ACM_HEAD}.get(module_name)


def discrete_mutual_information(x: torch.Tensor, y: torch.Tensor) -> float:
    """I(X;Y) = sum_{x,y} p(x,y) log(p(x,y) / (p(x) p(y))) in nats -- Eq. (1) of Yao et al. 2025 (section 3.1).

    p is the empirical joint distribution of the paired values (x_j, y_j), each distinct value its own
    symbol (what ``sklearn.metrics.mutual_info_score`` computes on two label vectors, as the public ACM
    script calls it on flattened bf16 activations). Identical vectors give H(X); a constant side gives 0.
    """
    x, y = x.reshape(-1), y.reshape(-1)
    if x.numel() != y.numel() or x.numel() == 0:
        raise ValueError("discrete_mutual_information needs two non-empty tensors of the same size")
    _, ix = torch.unique(x, return_inverse=True)
    _, iy = torch.unique(y, return_inverse=True)
    ix, iy = ix.reshape(-1).long(), iy.reshape(-1).long()
    ny = int(iy.max()) + 1
    cells, nxy = torch.unique(ix * ny + iy, return_counts=True)
    nx, nyc = torch.bincount(ix).double(), torch.bincount(iy).double()
    n = float(x.numel())
    nxy = nxy.double()
    mi = (nxy / n * (nxy.log() + math.log(n) - nx[cells // ny].log() - nyc[cells % ny].log())).sum()
    return max(0.0, float(mi))


def acm_coefficient(mi: Iterable[float], t: float) -> float:
    """lambda = 1 - mean_d sigmoid(t (I_d - max_d' I_d')) for one layer of one fine-tuned model.

    Eq. (2) of Yao et al. 2025 (section 3.2), lambda_i^k = 1 - 1 / (1 + exp(-t I_i^k)), applied per
    calibration piece d after the "translation transformation by subtracting the maximum MI obtained from
    different data pieces" (section 4.1), then averaged over the pieces as the public ACM script does.
    Higher MI -> smaller lambda (t > 0). One piece, or t = 0, gives 0.5; for t > 0, 0.5 <= lambda < 1.
    """
    v = torch.tensor(list(mi), dtype=torch.float64)
    if v.numel() == 0:
        raise ValueError("acm_coefficient needs the MI of at least one calibration piece")
    return float(1.0 - torch.sigmoid(t * (v - v.max())).mean())


def _acm_hooks(model, sink):
    hooks = []
    for name, module in model.named_modules():
        layer = acm_probe_layer(name)
        if layer is not None:
            def hook(m, inp, out, layer=layer):
                y = out[0] if isinstance(out, tuple) else out
                sink(layer, y.detach().reshape(-1).to(torch.bfloat16).cpu())
            hooks.append(module.register_forward_hook(hook))
    if not hooks:
        raise ValueError("ACM: the model has none of the probed modules (model.layers.k.mlp.down_proj, "
                         "model.embed_tokens, model.norm, lm_head)")
    return hooks


@torch.no_grad()
def acm_activations(model, sequences: list[list[int]], *, progress: bool = False) -> dict[int, list[torch.Tensor]]:
    """{ACM layer: [flattened bf16 output of its probed module, one per calibration sequence]}.

    Each sequence runs alone (batch 1, no padding), as the public ACM script; the model runs in the dtype it
    was loaded in and the outputs are rounded to bf16, the dtype the script's models run in, so that
    :func:`discrete_mutual_information` sees values on the same grid.
    """
    from tqdm.auto import tqdm

    acts: dict[int, list[torch.Tensor]] = {}
    hooks = _acm_hooks(model, lambda layer, v: acts.setdefault(layer, []).append(v))
    try:
        for s in tqdm(sequences, desc="ACM activations", disable=not progress, leave=False):
            model(input_ids=torch.tensor([s], device=model.device))
    finally:
        for h in hooks:
            h.remove()
    return acts


@torch.no_grad()
def acm_mutual_information(base_acts: dict[int, list[torch.Tensor]], model, sequences: list[list[int]], *,
                           progress: bool = False) -> dict[int, list[float]]:
    """{ACM layer: [I(A_0^k, A_i^k) on each calibration sequence]} for ``model`` against the base's activations."""
    from tqdm.auto import tqdm

    mi: dict[int, list[float]] = {k: [] for k in base_acts}
    current: dict[int, torch.Tensor] = {}
    hooks = _acm_hooks(model, lambda layer, v: current.__setitem__(layer, v))
    try:
        for j, s in enumerate(tqdm(sequences, desc="ACM mutual information", disable=not progress, leave=False)):
            current.clear()
            model(input_ids=torch.tensor([s], device=model.device))
            for k in base_acts:
                mi[k].append(discrete_mutual_information(base_acts[k][j], current[k]))
    finally:
        for h in hooks:
            h.remove()
    return mi


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
