"""The method registry: every merging method by name, with every fact about it and typed, validated hyper-parameters.

A :class:`Method` names its kernel (a pure function on tensors, formula and paper in its docstring), its
parameters (:class:`Param`: type, default, range, meaning) and its paper; :func:`resolve_params` turns a
config's ``parameters`` into the kernel's keyword arguments or raises :class:`MergeConfigError` naming
the parameter. The kernels register themselves from their family files (basic.py, ties.py, dare.py,
svd.py); the composite methods (AIM, ACM, Sens-Merging) from ``l2s_utils/merge/composite.py``.

Every fact about a method is in its record: the name tables and figures show (``display``), the models the
L2S study gives it (``pair``: [System 1, System 2], else [System 2]), its colour and marker in every figure
(``style``), its paper and reference. The engine knows a method only through its record: ``streams`` (merged in row chunks), ``prepare``
(state computed once per merge over every merged tensor, e.g. global TIES thresholds) and
``prepare_tensor`` (state computed once per tensor over its row chunks, e.g. DARE's generators), both
given a :class:`Stream` of the inputs; what they return is passed to the kernel as keyword arguments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import Tensor


class MergeConfigError(ValueError):
    """A merge configuration or parameter is invalid. Raised before anything is written."""


@dataclass(frozen=True)
class Param:
    """One hyper-parameter: its type, default, valid range and meaning."""

    name: str
    type: type
    default: Any
    doc: str
    check: Callable[[Any], bool] | None = None
    rule: str = ""
    aliases: tuple[str, ...] = ()
    per_model: bool = False


@dataclass(frozen=True)
class Stream:
    """What a ``prepare`` hook sees of a merge: the row chunks it covers, read on demand.

    ``chunks()`` starts a new pass and yields (base rows, [model rows]) in fp32 for every row chunk (base
    ``None`` for a method without one); the tensors are the engine's buffers, valid until the next chunk.
    ``numel`` entries per model in ``n_chunks`` chunks; ``name`` and ``shape`` are the tensor's
    (``prepare_tensor``; empty for ``prepare``, whose stream covers every merged tensor); ``out_dtype`` is the
    dtype the merge writes.
    """

    chunks: Callable[[], Iterator[tuple[Tensor | None, list[Tensor]]]]
    numel: int
    n_chunks: int
    n_models: int
    out_dtype: torch.dtype
    name: str = ""
    shape: tuple[int, ...] = ()


Hook = Callable[[Stream, dict], dict]  # (stream, resolved parameters) -> extra keyword arguments of the kernel


@dataclass(frozen=True)
class Method:
    """A registered merging method: the kernel, its parameters, its paper, and how the engine runs it."""

    name: str
    kernel: Callable[..., Tensor]
    params: tuple[Param, ...]
    paper: str
    display: str = ""  # the name in tables and figures ("Ties-Merging"; default: the name); unique
    style: tuple[str, str] = ("", "")  # (colour, matplotlib marker) in every figure (unset: picked by the name); colour unique
    pair: bool = False  # the L2S study merges [System 1, System 2] (else System 2 onto the base System 1)
    needs_base: bool = True
    aliases: tuple[str, ...] = ()
    fixed: dict[str, Any] = field(default_factory=dict)
    summary: str = ""
    composite: bool = False  # needs model-level statistics (calibration data): merged by ``run``, not tensor by tensor
    run: Callable[..., Any] | None = None  # composite: run(cfg, out, *, overwrite, device, seed, progress) -> MergeResult
    check: Callable[[Any], dict] | None = None  # composite: check(cfg) -> its own resolved parameters (validates all)
    reference: str = ""  # the code or paper section this method equals, and every intentional difference
    refuse: dict[str, str] = field(default_factory=dict)  # parameter -> why it is refused here (and what to use)
    streams: bool | Callable[[dict], bool] = False  # merged in row chunks (the kernel is row-local given its state)
    prepare: Hook | None = None  # once per merge, over every merged tensor (global TIES thresholds, DARE's dtype)
    prepare_tensor: Hook | None = None  # once per merged tensor, over its row chunks (thresholds, generators, V_r)

    def __post_init__(self) -> None:
        if not self.display:
            object.__setattr__(self, "display", self.name)

    def streamed(self, params: dict) -> bool:
        """Whether the engine reads large tensors in row chunks, given the resolved parameters."""
        return self.streams(params) if callable(self.streams) else self.streams


def in_unit_open(x: float) -> bool:
    return 0.0 <= x < 1.0


def finite(x: float) -> bool:
    return math.isfinite(x)


def positive(x: float) -> bool:
    return math.isfinite(x) and x > 0


WEIGHT = Param("weight", float, 1.0, "per-model weight w_k", finite, "finite", per_model=True)
ALPHA = Param("alpha", float, 1.0, "scaling coefficient on the merged task vector", finite, "finite", ("lambda",))


REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add ``method`` under its name and aliases; its display name and style must be its own."""
    if method.composite != (method.run is not None and method.check is not None):
        raise ValueError(f"method {method.name!r}: a composite method needs run and check, a kernel method neither")
    for other in all_methods():
        if method.display == other.display or (method.style[0] and method.style[0] == other.style[0]):
            raise ValueError(f"method {method.name!r}: display name or style (colour) already {other.name!r}'s")
    for key in (method.name, *method.aliases):
        if key in REGISTRY:
            raise ValueError(f"method name {key!r} registered twice")
        REGISTRY[key] = method
    return method


def all_methods() -> list[Method]:
    """Every registered method once (aliases left out), in registration order."""
    return list({id(m): m for m in REGISTRY.values()}.values())


def get_method(name: str) -> Method:
    try:
        return REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise MergeConfigError(f"unknown merge_method {name!r}; known methods: {known}") from None


def _coerce(p: Param, value: Any, where: str) -> Any:
    if value is None and p.default is None:
        return None
    try:
        if p.type is bool:
            if not isinstance(value, bool):
                raise TypeError
            v = value
        elif p.type is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            v = int(value)
        elif p.type is float:
            if isinstance(value, bool):
                raise TypeError
            v = float(value)
        else:
            v = p.type(value)
    except (TypeError, ValueError):
        raise MergeConfigError(f"{where}: parameter {p.name!r} must be {p.type.__name__}, got {value!r}") from None
    if p.check is not None and not p.check(v):
        raise MergeConfigError(f"{where}: parameter {p.name!r} = {value!r} is out of range ({p.rule})")
    return v


def resolve_params(
    method: Method, global_params: dict[str, Any], model_params: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    """Validate and resolve parameters into the kernel's keyword arguments.

    Accepts aliases (``lambda`` for ``alpha``). There is no implicit translation between parameter
    conventions: the L2S-code methods (``l2s_ties``, ``l2s_dare_ties``, ``dare``...) take the paper's ``k``
    (fraction DROPPED) and ``p`` (DARE drop rate); the mergekit methods (``ties``, ``dare_ties``,
    ``dare_linear``) take mergekit's ``density`` (fraction KEPT, or DARE keep probability). A parameter
    of the other convention is refused with a message naming the method that takes it
    (``Method.refuse``). Per-model parameters may be set globally (applies to every model) or per model.
    Raises :class:`MergeConfigError` naming the parameter for anything unknown, mistyped or out of range.
    """
    by_name: dict[str, Param] = {}
    for p in method.params:
        by_name[p.name] = p
        for a in p.aliases:
            by_name[a] = p

    def normalise(raw: dict[str, Any], where: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in (raw or {}).items():
            if key in method.refuse:
                raise MergeConfigError(f"{where}: parameter {key!r} is not a parameter of {method.name!r}: "
                                       f"{method.refuse[key]}")
            if key not in by_name:
                raise MergeConfigError(f"{where}: unknown parameter {key!r} for method {method.name!r}; "
                                       f"allowed: {sorted(by_name)}")
            p = by_name[key]
            if p.name in out:
                raise MergeConfigError(f"{where}: parameter {p.name!r} given twice (through an alias)")
            out[p.name] = _coerce(p, value, where)
        return out

    g = normalise(global_params, f"{method.name} parameters")
    per = [normalise(mp, f"{method.name} models[{i}].parameters") for i, mp in enumerate(model_params)]
    kwargs: dict[str, Any] = dict(method.fixed)
    for p in method.params:
        if p.per_model:
            values = [m.get(p.name, g.get(p.name, p.default)) for m in per]
            kwargs[_kernel_name(p.name)] = None if all(v is None for v in values) else values
        else:
            for i, m in enumerate(per):
                if p.name in m:
                    raise MergeConfigError(f"{method.name} models[{i}].parameters: {p.name!r} is a global parameter")
            kwargs[p.name] = g.get(p.name, p.default)
    if kwargs.get("weights") is not None and sum(kwargs["weights"]) == 0 and (
            method.name == "average" or (method.name == "linear" and kwargs.get("normalize"))):
        raise MergeConfigError(f"{method.name}: the model weights sum to zero")
    if kwargs.get("twin_weights") is not None and any(v is None for v in kwargs["twin_weights"]):
        raise MergeConfigError("twin: give twin_weight for every model or for none")
    return kwargs


def with_seed(method: Method, params: dict[str, Any], seed: int | None) -> dict[str, Any]:
    """Resolved ``params`` with the merge's ``seed`` (the config's top-level ``seed``, or ``merge(seed=...)``; both
    override ``parameters.seed``) as the method's ``seed`` parameter, checked as that parameter. Unchanged when
    there is no such seed or the method takes none."""
    p = next((p for p in method.params if p.name == "seed"), None)
    if seed is None or p is None:
        return params
    return {**params, "seed": _coerce(p, seed, f"{method.name} parameters")}


def _kernel_name(param: str) -> str:
    return {"weight": "weights", "twin_weight": "twin_weights"}.get(param, param)
