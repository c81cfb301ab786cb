"""Merge configs: mergekit-style YAML (or a dict) -> a validated :class:`MergeConfig`.

Config (mergekit's shape; keys after ``dtype`` are l2s extras, all optional)::

    merge_method: ties                    # any name in l2s_utils.merge.REGISTRY (`l2s merge --list`)
    base_model: Qwen/Qwen2.5-Math-7B      # theta_0 (System 1); optional for average / lore
    models:                               # theta_1..theta_K
      - model: deepseek-ai/DeepSeek-R1-Distill-Qwen-7B
        parameters: {weight: 1.0}         # per-model parameters (weight, k/density, p, twin_weight)
    parameters: {k: 0.8, alpha: 1.0}      # global parameters (see each method)
    dtype: bfloat16                       # dtype of the written weights (computation is always fp32)
    tokenizer_source: base                # base | models[i].model path | any path
    config_source: base                   # where config.json / generation_config.json come from
    max_position_embeddings: 131072       # override in the written config (METHODS.md section 0)
    exclude: []                           # regexes (re.match on the tensor name): kept from the base
    tied_embeddings: follow_base          # follow_base | untie (see l2s_utils.merge.engine)
    max_shard_size: 2GB
    seed: 0                               # DARE masks
    calibration: {...}                    # AIM / ACM / Sens only (see calibration.py)

Every key and every hyper-parameter is checked here, before any model is opened or anything written. The
hyper-parameters are resolved once, when the :class:`MergeConfig` is made (``MergeConfig.params``: the
kernel's keyword arguments, a composite method's own parameters); the engine uses them as given.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import safe_yaml
from . import methods as M
from .calibration import check_spec as check_calibration
from .checkpoint import DTYPE_NAMES
from .methods import MergeConfigError

TOP_KEYS = {"merge_method", "base_model", "models", "parameters", "dtype", "out_dtype", "tokenizer_source",
            "config_source", "max_position_embeddings", "exclude", "tied_embeddings", "max_shard_size", "seed",
            "allow_pickle", "name", "description", "calibration"}


@dataclass
class MergeConfig:
    """A parsed, validated merge configuration."""

    merge_method: str
    models: list[str]
    model_params: list[dict[str, Any]]
    base_model: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    dtype: str = "bfloat16"
    tokenizer_source: str = "base"
    config_source: str = "base"
    max_position_embeddings: int | None = None
    exclude: list[str] = field(default_factory=list)
    tied_embeddings: str = "follow_base"
    max_shard_size: int = 2 << 30
    seed: int | None = None
    allow_pickle: bool = False
    source: str = "<dict>"
    extra: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(init=False, repr=False)  # resolved parameters (set on construction)

    def __post_init__(self) -> None:
        """Resolve the parameters once: the kernel's keyword arguments (``seed`` folded in), or a composite
        method's own parameters (its ``check``, which validates its base method's too). Raises
        :class:`MergeConfigError` naming the parameter; ``dataclasses.replace`` resolves the new config again."""
        method = M.get_method(self.merge_method)
        if method.composite:
            self.params = method.check(self)
        else:
            self.params = M.with_seed(method, M.resolve_params(method, self.parameters, self.model_params), self.seed)

    def to_yaml_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"merge_method": self.merge_method}
        if self.base_model:
            d["base_model"] = self.base_model
        d["models"] = [{"model": m, **({"parameters": p} if p else {})} for m, p in zip(self.models, self.model_params)]
        if self.parameters:
            d["parameters"] = self.parameters
        d.update(dtype=self.dtype, tokenizer_source=self.tokenizer_source, config_source=self.config_source,
                 tied_embeddings=self.tied_embeddings, max_shard_size=self.max_shard_size)
        if self.max_position_embeddings:
            d["max_position_embeddings"] = self.max_position_embeddings
        if self.exclude:
            d["exclude"] = self.exclude
        if self.seed is not None:
            d["seed"] = self.seed
        d.update(self.extra)
        return d


def _parse_size(v: Any, where: str) -> int:
    if isinstance(v, int) and v > 0:
        return v
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", str(v), re.I)
    if not m:
        raise MergeConfigError(f"{where}: max_shard_size {v!r} is not a size like '2GB' or a byte count")
    mult = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[m.group(2).upper()]
    return int(float(m.group(1)) * mult)


def load_config(config: str | os.PathLike | dict) -> MergeConfig:
    """Parse a YAML file (safe loader) or a dict into a :class:`MergeConfig`, validating every key; its
    ``params`` are the resolved hyper-parameters."""
    if isinstance(config, dict):
        raw, where, root = config, "<dict>", Path.cwd()
    else:
        p = Path(config)
        if not p.is_file():
            raise MergeConfigError(f"{p}: merge config not found")
        try:
            raw = safe_yaml.load(p.read_bytes().decode("utf-8"))
        except UnicodeDecodeError as e:
            raise MergeConfigError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        except OSError as e:
            raise MergeConfigError(f"{p}: cannot read ({e.strerror or e})") from None
        except yaml.YAMLError as e:
            raise MergeConfigError(f"{p}: invalid YAML ({safe_yaml.one_line(e)})") from None
        where, root = str(p), p.parent
    if not isinstance(raw, dict):
        raise MergeConfigError(f"{where}: a merge config must be a mapping")
    _check_types(raw, where)
    unknown = set(raw) - TOP_KEYS
    if unknown:
        raise MergeConfigError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(TOP_KEYS)}")
    if "merge_method" not in raw:
        raise MergeConfigError(f"{where}: missing 'merge_method'")
    method = M.get_method(str(raw["merge_method"]))
    models_raw = raw.get("models") or []
    if not isinstance(models_raw, list) or not models_raw:
        raise MergeConfigError(f"{where}: 'models' must be a non-empty list of {{model: PATH, parameters: {{...}}}}")
    models, mparams = [], []
    for i, item in enumerate(models_raw):
        if isinstance(item, str):
            item = {"model": item}
        if not isinstance(item, dict) or "model" not in item:
            raise MergeConfigError(f"{where}: models[{i}] needs a 'model' key")
        bad = set(item) - {"model", "parameters"}
        if bad:
            raise MergeConfigError(f"{where}: models[{i}] has unknown key(s) {sorted(bad)}")
        models.append(_resolve_ref(str(item["model"]), root))
        mparams.append(dict(item.get("parameters") or {}))
    base = raw.get("base_model")
    if method.needs_base and not base:
        raise MergeConfigError(f"{where}: merge_method {method.name!r} needs 'base_model' (theta_0, System 1)")
    dtype = str(raw.get("out_dtype", raw.get("dtype", "bfloat16")))
    if dtype not in DTYPE_NAMES:
        raise MergeConfigError(f"{where}: dtype {dtype!r} not one of {sorted(DTYPE_NAMES)}")
    tied = str(raw.get("tied_embeddings", "follow_base"))
    if tied not in ("follow_base", "untie"):
        raise MergeConfigError(f"{where}: tied_embeddings must be 'follow_base' or 'untie', got {tied!r}")
    mpe = raw.get("max_position_embeddings")
    if mpe is not None and (not isinstance(mpe, int) or isinstance(mpe, bool) or mpe < 1):
        raise MergeConfigError(f"{where}: max_position_embeddings must be a positive integer, got {mpe!r}")
    exclude = raw.get("exclude") or []
    if isinstance(exclude, str):
        exclude = [s for s in exclude.split(",") if s]
    for pat in exclude:
        try:
            re.compile(pat)
        except re.error as e:
            raise MergeConfigError(f"{where}: exclude pattern {pat!r} is not a valid regex ({e})") from None
    seed = raw.get("seed")
    if seed is not None and (not isinstance(seed, int) or seed < 0):
        raise MergeConfigError(f"{where}: seed must be a non-negative integer, got {seed!r}")
    return MergeConfig(
        merge_method=method.name if raw["merge_method"] == method.name else str(raw["merge_method"]),
        models=models, model_params=mparams, base_model=_resolve_ref(str(base), root) if base else None,
        parameters=dict(raw.get("parameters") or {}), dtype=dtype,
        tokenizer_source=_source(raw.get("tokenizer_source", "base"), root),
        config_source=_source(raw.get("config_source", "base"), root),
        max_position_embeddings=mpe, exclude=list(exclude), tied_embeddings=tied,
        max_shard_size=_parse_size(raw.get("max_shard_size", 2 << 30), where), seed=seed,
        allow_pickle=bool(raw.get("allow_pickle", False)), source=where,
        extra={k: raw[k] for k in ("name", "description", "calibration") if k in raw},
    )


def _check_types(raw: dict, where: str) -> None:
    """Types of the keys whose misuse would otherwise surface as a traceback or be silently misread."""
    def bad(key: str, want: str) -> MergeConfigError:
        return MergeConfigError(f"{where}: {key} must be {want}, got {_short(raw_at(key))}")

    def raw_at(key: str) -> Any:
        node: Any = raw
        for part in re.findall(r"\w+|\[\d+\]", key):
            node = node[int(part[1:-1])] if part.startswith("[") else node[part]
        return node

    for key in ("parameters", "calibration"):
        if raw.get(key) is not None and not isinstance(raw[key], dict):
            raise bad(key, "a mapping")
    try:
        check_calibration(raw.get("calibration"))
    except ValueError as e:
        raise MergeConfigError(f"{where}: {e}") from None
    for key in ("merge_method", "base_model", "tokenizer_source", "config_source"):
        if key in raw and not isinstance(raw[key], str):
            raise bad(key, "a string")
    if "allow_pickle" in raw and not isinstance(raw["allow_pickle"], bool):
        raise bad("allow_pickle", "true or false (a YAML boolean, unquoted)")
    if "seed" in raw and isinstance(raw["seed"], bool):
        raise bad("seed", "a non-negative integer")
    ex = raw.get("exclude")
    if ex is not None and not isinstance(ex, str) and not (isinstance(ex, list) and all(isinstance(x, str) for x in ex)):
        raise bad("exclude", "a list of regexes (strings)")
    models = raw.get("models")
    for i, item in enumerate(models if isinstance(models, list) else []):
        if isinstance(item, dict):
            if "model" in item and not isinstance(item["model"], str):
                raise bad(f"models[{i}].model", "a path or hub id (a string)")
            if item.get("parameters") is not None and not isinstance(item["parameters"], dict):
                raise bad(f"models[{i}].parameters", "a mapping")


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


def _source(v: Any, root: Path) -> str:
    return "base" if v in (None, "base") else _resolve_ref(str(v), root)


def _resolve_ref(ref: str, root: Path) -> str:
    """A local path (absolute, relative to the cwd, or relative to the config file) or a hub id."""
    p = Path(ref).expanduser()
    if p.is_absolute() or p.exists():
        return str(p)
    if (root / p).exists():
        return str(root / p)
    return ref
