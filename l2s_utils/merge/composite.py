"""Composite merges that need model-level statistics on calibration data: AIM, ACM and Sens-Merging.

Config shape (the same YAML as every method; ``calibration`` sets the data, see calibration.py)::

    merge_method: aim            # or acm
    base_model: <System 1>
    models: [{model: <System 2>}]
    parameters: {omega: 0.4, base_method: ties, k: 0.8, alpha: 1.0}   # own + the base method's parameters
    calibration: {source: organism, n: 100, content: short, seed: 0, max_length: 512}

    merge_method: sens
    models: [{model: <System 1>}, {model: <System 2>}]
    parameters: {alpha: 0.7, T: 2.0}

AIM (and ACM with ``statistics: merged``) first run ``base_method`` into a temporary directory, then stream
every tensor through the relaxation into the final, atomically written output. Sens computes its layer
coefficients, then runs the streamed task-arithmetic merge with per-tensor model weights K sigma_i^l; ACM
(``statistics: models``, the default) runs ``base_method`` streamed with model i's task vector scaled by
lambda_i^k in every tensor of layer k. The statistics are saved
in ``l2s_merge.json``. Models are loaded whole for the statistics, in fp32 on every device.

Interface with the engine (one direction only): this module registers ``aim``, ``acm`` and ``sens`` in
the method registry with ``run=merge_composite`` and ``check=own_params``; the engine's ``merge`` calls
``method.run`` and a :class:`~l2s_utils.merge.config.MergeConfig` calls ``method.check`` when it is made (its
resolved ``params``); neither imports this module. This module drives
the engine through its public ``merge`` (the base merge of AIM / ACM, Sens' task arithmetic and ACM's
base method with per-tensor weights). ``import l2s_utils.merge`` imports it, so the registry is complete after any import.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

from . import activation as A
from . import calibration as C
from . import methods as M
from .checkpoint import (
    DTYPE_NAMES, Checkpoint, PlannedTensor, StreamingWriter, check_weights_policy, claim_output, fetch_model,
)
from .engine import MergeResult, input_paths, merge, peak_rss_bytes
from .methods import REGISTRY, Method, MergeConfigError, Param, register, task_arithmetic
from .methods.registry import WEIGHT, finite, positive


def own_params(cfg) -> dict:
    """The composite method's own resolved parameters (its ``check``: ``MergeConfig.params``), its base method's
    parameters (:func:`base_params`) validated too."""
    method = M.get_method(cfg.merge_method)
    if method.name == "sens":
        return M.resolve_params(method, cfg.parameters, cfg.model_params)
    names = _own_names(method)
    own = M.resolve_params(method, {k: v for k, v in cfg.parameters.items() if k in names}, [{} for _ in cfg.models])
    M.resolve_params(M.get_method(own["base_method"]), base_params(cfg), cfg.model_params)
    if not cfg.base_model:
        raise MergeConfigError(f"{cfg.source}: {method.name} needs 'base_model' (the activations are the base's)")
    if method.name == "aim":  # checked with the config, so that a profile or config load refuses it too
        _aim_overlong(cfg)
    return own


def _own_names(method: Method) -> set[str]:
    return {p.name for p in method.params} | {a for p in method.params for a in p.aliases}


def base_params(cfg) -> dict:
    """The parameters of the config that are not the composite method's own: its base method's (AIM, ACM)."""
    names = _own_names(M.get_method(cfg.merge_method))
    return {k: v for k, v in cfg.parameters.items() if k not in names}


def _aim_overlong(cfg) -> None:
    spec = cfg.extra.get("calibration") or {}
    if isinstance(spec, dict) and spec.get("overlong", "skip") != "skip":
        raise MergeConfigError(f"{cfg.source}: AIM drops calibration texts longer than max_length (the block size) "
                               "as its reference code; overlong must be 'skip' (or left out)")


def _device(device: str) -> str:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MergeConfigError("--device cuda requested but no CUDA device is available")
    return device


def _calibration(cfg, tokenizer_dir: str, vocab: int, content: str | None = None) -> C.Calibration:
    from transformers import AutoTokenizer

    spec = dict(cfg.extra.get("calibration") or {})
    if content:
        spec["content"] = content
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    return C.build(spec, tok, vocab_size=vocab)


def _rewrite(src: Path, out: Path, base: Checkpoint, fn, *, overwrite: bool, extra: dict, progress: bool) -> int:
    """Stream every tensor of checkpoint ``src`` through fn(name, base_t, merged_t) into ``out``."""
    from tqdm.auto import tqdm

    ck = Checkpoint(src)
    plan = [PlannedTensor(n, ck.info(n).shape, ck.info(n).dtype) for n in ck.names()]
    with StreamingWriter(out, plan, overwrite=overwrite, metadata={"l2s_merge_method": extra["method"]}) as w:
        for name in tqdm(w.order, desc=f"{extra['method']}: rewrite", disable=not progress, leave=False):
            merged = ck.get(name)
            new = fn(name, base.get(name), merged) if merged.is_floating_point() else merged
            w.write(name, new.to(ck.info(name).dtype))
        for f in src.iterdir():
            if f.suffix != ".safetensors" and f.name not in ("model.safetensors.index.json", "l2s_merge.json"):
                w.copy_file(f)
        prov = json.loads((src / "l2s_merge.json").read_text())
        prov.update(extra)
        w.add_file("l2s_merge.json", json.dumps(prov, indent=2, default=str))
    return len(plan)


def merge_composite(cfg, out: Path, *, overwrite: bool, device: str, seed: int | None, progress: bool):
    for p in dict.fromkeys(filter(None, (cfg.base_model, *cfg.models))):  # the pickle policy, before transformers
        check_weights_policy(fetch_model(p), cfg.allow_pickle)
    with claim_output(out, overwrite=overwrite, inputs=input_paths(cfg)) as claimed:
        return _merge_composite(cfg, claimed, overwrite=overwrite, device=device, seed=seed, progress=progress)


def _merge_composite(cfg, out: Path, *, overwrite: bool, device: str, seed: int | None, progress: bool):
    t0 = time.perf_counter()
    device = _device(device)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; pass overwrite=True (--overwrite) to replace it")
    own, rest = cfg.params, base_params(cfg)
    method = M.get_method(cfg.merge_method)
    base_path = cfg.base_model
    if method.name == "sens":
        return _merge_sens(cfg, out, own, overwrite=overwrite, device=device, seed=seed, progress=progress, t0=t0)
    base_ck = Checkpoint(base_path, allow_pickle=cfg.allow_pickle)
    vocab = int(base_ck.config.get("vocab_size", 0)) or None
    if method.name == "aim":  # the reference drops texts longer than the block and packs the rest into blocks
        _aim_overlong(cfg)
        spec = dict(cfg.extra.get("calibration") or {})
        cfg = dataclasses.replace(cfg, extra={**cfg.extra, "calibration": {**spec, "overlong": "skip"}})
    calib = _calibration(cfg, base_path, vocab)  # bad calibration input fails here, before any writing
    if method.name == "acm":
        return _merge_acm(cfg, out, own, rest, base_ck, calib, overwrite=overwrite, device=device, seed=seed,
                          progress=progress, t0=t0)
    blocks = calib.blocks(calib.description["max_length"])
    (base_model,) = A.models_from([base_path], device, allow_pickle=cfg.allow_pickle)
    importance = A.aim_importance(base_model, blocks, progress=progress)
    del base_model
    tied = "lm_head.weight" not in base_ck.names() and "model.embed_tokens.weight" in base_ck.names()
    if tied and own["tied_embedding"] == "relax" and "lm_head.weight" in importance:
        importance["model.embed_tokens.weight"] = importance["lm_head.weight"]  # shared storage in the reference
    omega = own["omega"]
    model_dtype = DTYPE_NAMES[cfg.dtype]
    extra = {**_extra(method, own, calib), "modules_relaxed": len(importance), "calibration_blocks": len(blocks),
             "tied_embedding_relaxed": tied and own["tied_embedding"] == "relax"}
    fn = lambda name, b, m: A.aim_relax(b, m, importance.get(name), omega, model_dtype)  # noqa: E731
    return _inner_then_rewrite(cfg, own, rest, out, base_ck, lambda merged_dir: (fn, extra), overwrite=overwrite,
                               device=device, seed=seed, progress=progress, t0=t0)


def _extra(method, own: dict, calib) -> dict:
    return {"method": method.name, "paper": method.paper, "composite_parameters": own,
            "base_method": own["base_method"], "calibration": calib.description}


def _inner_then_rewrite(cfg, own, rest, out: Path, base_ck: Checkpoint, make_fn, *, overwrite, device, seed, progress, t0):
    """Run ``base_method`` into a temporary directory, then stream it through ``make_fn(tmp) -> (fn, extra)``."""
    method = M.get_method(cfg.merge_method)
    inner_cfg = dataclasses.replace(cfg, merge_method=own["base_method"], parameters=rest)
    tmp = out.parent / f".{out.name}.inner-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        merge(inner_cfg, tmp, overwrite=True, device=device, seed=seed, progress=progress)
        fn, extra = make_fn(tmp)
        n = _rewrite(tmp, out, base_ck, fn, overwrite=overwrite, extra=extra, progress=progress)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    size = sum(f.stat().st_size for f in out.glob("*.safetensors"))
    return MergeResult(out, method.name, n, 0, size, time.perf_counter() - t0, peak_rss_bytes())


def _acm_lambdas(base_acts, path, sequences, t: float, device: str, progress: bool,
                 allow_pickle: bool = False) -> tuple[dict, dict]:
    """({layer: [I per calibration sequence]}, {layer: lambda}) of one model against the base's activations."""
    (model,) = A.models_from([path], device, allow_pickle=allow_pickle)
    mi = A.acm_mutual_information(base_acts, model, sequences, progress=progress)
    del model
    return mi, {k: A.acm_coefficient(v, t) for k, v in mi.items()}


def _json_layers(d: dict) -> dict:
    return {str(k): d[k] for k in sorted(d)}


def _merge_acm(cfg, out: Path, own: dict, rest: dict, base_ck: Checkpoint, calib, *, overwrite, device, seed, progress, t0):
    """ACM (Yao et al. 2025): lambda_i^k from base / model activations' mutual information, Eq. (2); the base method
    then merges the models with model i's layer-k task vector scaled by lambda_i^k (``statistics: models``, Eq. 3),
    or one lambda^k from the base method's merged model is applied post hoc (``statistics: merged``, the public
    ACM script)."""
    method = M.get_method("acm")
    seqs = calib.sequences
    (base_model,) = A.models_from([cfg.base_model], device, allow_pickle=cfg.allow_pickle)
    base_acts = A.acm_activations(base_model, seqs, progress=progress)
    del base_model
    t = own["t"]
    extra = {**_extra(method, own, calib), "statistics": own["statistics"],
             "layers": "k = model.layers.k (probe: mlp.down_proj output); -1 embed_tokens, -2 model.norm, -3 lm_head"}
    if own["statistics"] == "merged":
        def make_fn(merged_dir):
            mi, lam = _acm_lambdas(base_acts, merged_dir, seqs, t, device, progress)
            extra.update(mutual_information=_json_layers(mi), layer_coefficients=_json_layers(lam))

            def fn(name, b, m):
                k = A.acm_layer(name)
                return b + lam[k] * (m - b) if k in lam else m
            return fn, extra
        return _inner_then_rewrite(cfg, own, rest, out, base_ck, make_fn, overwrite=overwrite, device=device,
                                   seed=seed, progress=progress, t0=t0)

    mis, lams = [], []
    for p in cfg.models:
        mi, lam = _acm_lambdas(base_acts, p, seqs, t, device, progress, cfg.allow_pickle)
        mis.append(_json_layers(mi))
        lams.append(lam)
    del base_acts

    def model_scales(name: str) -> list[float]:  # model i enters the base method as theta_0 + lambda_i^k tau_i^k
        k = A.acm_layer(name)
        return [lam.get(k, 1.0) for lam in lams]

    extra.update(mutual_information=mis, layer_coefficients=[_json_layers(lam) for lam in lams])
    inner = dataclasses.replace(cfg, merge_method=own["base_method"], parameters=rest)
    r = merge(inner, out, overwrite=overwrite, device=device, seed=seed, progress=progress,
              _model_scales=model_scales, _extra=extra)
    r.method = "acm"
    r.seconds = time.perf_counter() - t0
    return r


def _merge_sens(cfg, out: Path, own: dict, *, overwrite, device, seed, progress, t0):
    paths = cfg.models
    base_path = cfg.base_model or paths[0]
    vocab = int(Checkpoint(base_path, allow_pickle=cfg.allow_pickle).config.get("vocab_size", 0)) or None
    contents = own.get("calibration_content") or [None] * len(paths)
    contents = [c or ("long" if os.path.abspath(p) == os.path.abspath(base_path) else "short") for c, p in zip(contents, paths)]
    calibs = [_calibration(cfg, base_path, vocab, c) for c in contents]
    models = A.models_from(paths, device, allow_pickle=cfg.allow_pickle)
    sens = [A.layer_sensitivity(m, cal, per_sample=own["per_sample"], progress=progress) for m, cal in zip(models, calibs)]
    K = len(models)
    g = [[A.logit_distance(models[i], models[j], calibs[j]) if i != j else 0.0 for j in range(K)] for i in range(K)]
    tau = [sum(g[i][j] for j in range(K) if j != i) for i in range(K)]
    coeffs = A.sens_coefficients(sens, tau, own["T"], own["sens_norm"], own["tau_norm"], own["tau_sign"])
    del models
    weights = own["weights"]

    def tensor_weights(name: str) -> list[float]:
        grp = A.layer_group(name)
        return [w * c.get(grp, 1.0) for w, c in zip(weights, coeffs)]

    inner = dataclasses.replace(cfg, merge_method="task_arithmetic", parameters={"alpha": own["alpha"]},
                                model_params=[{} for _ in paths], base_model=base_path)
    extra = {"method": "sens", "paper": M.get_method("sens").paper, "composite_parameters": own,
             "calibration": [c.description for c in calibs], "calibration_content": contents,
             "layer_sensitivity": sens, "logit_distance": g, "tau": tau, "layer_coefficients": coeffs}
    r = merge(inner, out, overwrite=overwrite, device=device, seed=seed, progress=progress,
              _tensor_weights=tensor_weights, _extra=extra)
    r.method = "sens"
    r.seconds = time.perf_counter() - t0
    return r


# ---------------------------------------------------------------------------------------------
# Registration: formulas per tensor (docstrings), parameters, and the runner the engine calls
# ---------------------------------------------------------------------------------------------


def _aim_doc(base: Tensor, merged: Tensor, importance: Tensor | None, omega: float) -> Tensor:
    """AIM relaxation of one weight: W_base + (W_merged - W_base) * (1 - I (1 - omega)).

    I is the base model's normalised mean |input activation| per input channel
    (:func:`l2s_utils.merge.activation.aim_importance`); omega = 1 is the identity (Nobari et al. 2025).
    """
    return A.aim_relax(base, merged, importance, omega)


def _acm_doc(base: Tensor, models: Sequence[Tensor], *, lambdas: Sequence[float]) -> Tensor:
    """ACM, Eq. (3) of Yao et al. 2025 for one tensor of layer k: theta_0 + 1/N sum_i lambda_i^k (theta_i - theta_0).

    lambda_i^k = 1 - mean_d sigmoid(t (I_{i,d}^k - max_d I_{i,d}^k)) from the mutual information of the base's
    and model i's layer-k activations (Eq. 1-2; :func:`l2s_utils.merge.activation.acm_coefficient`). As a plug-in
    lambda_i^k scales model i's task vector before the base method; ``statistics: merged`` instead scales the base method's
    merged task vector post hoc, theta_0 + lambda^k (theta_M - theta_0), as the public ACM script.
    """
    return task_arithmetic(base, models, weights=list(lambdas), alpha=1.0 / len(models))


def _sens_doc(base: Tensor, models: Sequence[Tensor], *, coeffs: Sequence[float], alpha: float) -> Tensor:
    """Sens-Merging plug-in for one tensor of layer l: theta_0 + alpha sum_i (K sigma_i^l) delta_i.

    K sigma_i^l comes from parameter sensitivities and logit alignment on calibration data
    (:func:`l2s_utils.merge.activation.sens_coefficients`; Liu et al. 2025, arXiv 2502.12420). With uniform
    sigma (K sigma = 1) this is task arithmetic.
    """
    return task_arithmetic(base, models, weights=list(coeffs), alpha=alpha)


BASE_METHOD = Param("base_method", str, "l2s_ties", "the merge that AIM/ACM adjust (any non-composite registry method)",
                     lambda s: s in REGISTRY and not REGISTRY[s].composite, "a registry method")
register(Method(
    "aim", _aim_doc,
    (Param("omega", float, 0.4, "AIM balance factor (1 = no change, 0 = most important channel keeps the base)",
           lambda x: 0.0 <= x <= 1.0, "0 <= omega <= 1"), BASE_METHOD,
     Param("tied_embedding", str, "relax", "tied models: 'relax' the embedding with lm_head's importance (the "
           "reference, where they share storage) or 'keep' it at the merged value",
           lambda s: s in ("relax", "keep"), "'relax' or 'keep'")),
    "Nobari et al. 2025, arXiv 2502.02421", composite=True, run=merge_composite, check=own_params,
    summary="relax a merge toward the base on input channels the base's activations mark important",
    reference=("ahnobari/ActivationInformedMerging@e7eccd57 MergeModels/ActivationMerging/_utils.py relax_on_merged "
               "+ get_calib_feat: same module set, calibration packing (texts > max_length dropped, the rest cut "
               "into max_length-token blocks, one token-mean per block, summed), relaxation formula (difference "
               "rounded to the model dtype) and tied-embedding behaviour (tied_embedding: relax). Differences: our "
               "calibration data (organism or s1K, not pile-val) and tokenisation without special tokens; the base "
               "runs in fp32 (the reference: bf16 activations and bf16 per-block means)."),
    display="AIM-Ties", style=("#bcbd22", "P"),
))
register(Method(
    "acm", _acm_doc,
    (Param("t", float, 0.7, "ACM's t in lambda = 1 - sigmoid(t I) (Eq. 2): 0.7 for long-to-short (section 4.1), "
           "-1.8 for general merging (section 4.2); t = 0 gives lambda = 0.5", finite, "finite", ("theta",)),
     Param("statistics", str, "models", "'models': lambda_i^k from each model's activations scales model i's task "
           "vector in layer k before the base method (Eq. 3); 'merged': one lambda^k from the base method's merged model, "
           "theta_0 + lambda^k (theta_M - theta_0) post hoc (the public ACM script)",
           lambda s: s in ("models", "merged"), "'models' or 'merged'"),
     BASE_METHOD),
    "Yao et al. 2025, arXiv 2505.14009", composite=True, run=merge_composite, check=own_params,
    summary="layer-wise task-vector weights from the mutual information of base and fine-tuned activations",
    reference=("the paper (arXiv 2505.14009v1, section 3.2, Eq. 1-3; t and calibration, section 4.1) and the ACM "
               "script acm.py as copied in iacobellimario/L2S-MultiObjective-Evolutionary-Merging@8cb439e "
               "(provenance unverified): same probed modules (down_proj output per decoder layer; embed_tokens, "
               "model.norm, lm_head), discrete MI of the paired bf16 values per calibration sequence, translation by "
               "the maximum MI, mean of the sigmoids. Differences: fp32 models with bf16-rounded activations (the "
               "script: bf16 models); our calibration data (organism or s1K, drawn at random, not the script's 5 "
               "questions from each of 20 k-means clusters of s1K; content 'question' is its questions-only text); "
               "statistics: models (default) uses every model of the list, each entering the base method as "
               "theta_0 + lambda_i^k tau_i^k (our plug-in where the paper is silent); the script applies one lambda^k "
               "to an already merged model (statistics: merged). Paper v2 (Nov 2025) not read beyond its abstract."),
    display="ACM-Ties", style=("#aec7e8", "*"),
))
register(Method(
    "sens", _sens_doc,
    (WEIGHT, Param("alpha", float, 0.7, "task-arithmetic coefficient", finite, "finite", ("lambda",)),
     Param("T", float, 2.0, "softmax temperature", positive, "> 0"),
     Param("sens_norm", str, "l2", "normalisation of layer sensitivities over layers: l2 | l1 | max | none",
           lambda s: s in ("l2", "l1", "max", "none"), "l2 | l1 | max | none"),
     Param("tau_norm", str, "l1", "normalisation of cross-task scores over models: l1 | l2 | max | none",
           lambda s: s in ("l2", "l1", "max", "none"), "l2 | l1 | max | none"),
     Param("tau_sign", float, 1.0, "+1: larger logit distance = more weight (RCP); -1: the reverse", lambda x: x in (1.0, -1.0), "+1 or -1"),
     Param("per_sample", bool, True, "per-sample |theta * grad| (exact) or per-batch gradients (faster)"),
     Param("calibration_content", str, None, "per model: short | long | both (default: long for the model that is "
           "the base, short for the others, as the paper)", lambda s: s in ("short", "long", "both"), "short | long | both",
           per_model=True)),
    "Liu et al. 2025, arXiv 2502.12420", composite=True, run=merge_composite, check=own_params,
    summary="task arithmetic with layer-wise coefficients from sensitivity and logit alignment",
    reference=("follows the paper (Liu et al. 2025, arXiv 2502.12420, section 3); the L2S repository "
               "(hahahawu/Long-to-Short-via-Model-Merging@6bc078e4, newest snapshot) has no Sens-Merging code "
               "('will release soon'), so normalisations and the sign of the cross-task term are parameters."),
    display="Sens-Merging", style=("#17becf", "X"), pair=True,
))
