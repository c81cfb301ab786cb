"""Study profiles: everything one run of the study needs, validated on load.

A profile (``data/profiles/<name>.yaml``) names the models (the toy organism or hub ids), the
benchmarks and problem limits, the prompt styles, sampling, the generation backend and its options,
the merge hyper-parameters per method, calibration data and seeds. Unknown or mistyped keys are
errors that name the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

PROFILE_DIR = Path(__file__).resolve().parents[2] / "data" / "profiles"

SCHEMA: dict[str, Any] = {
    "name": str, "description": str, "seed": int,
    "models": {"kind": str, "scale": str, "ladder": list, "system1": str, "system2": str, "pairs": dict},
    "benchmarks": list,
    "prompts": {"system1": str, "system2": str, "merged": str},
    "sampling": {"temperature": float, "max_tokens": int, "max_tokens_system1": int, "seed": int,
                 "top_p": float, "n": int},  # n > 1: n samples per problem (avg@k, pass@k, maj@k)
    "backend": {"name": str, "tensor_parallel_size": int, "max_model_len": int, "executor": str,
                "batch_size": int, "gpu_memory_utilization": float},
    "merge": dict, "calibration": dict, "sweeps": dict, "methods": list,
    "grading": str,  # "strict" (default) | "qwen-toolkit" (the paper's protocol)
}
REQUIRED = ("name", "models", "benchmarks", "prompts", "sampling", "backend", "merge")


class ProfileError(ValueError):
    pass


def _check(node: Any, schema: Any, where: str) -> None:
    if isinstance(schema, dict):
        if not isinstance(node, dict):
            raise ProfileError(f"{where}: must be a mapping")
        for k, v in node.items():
            if k not in schema:
                raise ProfileError(f"{where}.{k}: unknown key; allowed: {sorted(schema)}")
            _check(v, schema[k], f"{where}.{k}")
    elif node is not None:
        ok = isinstance(node, schema) and not (schema in (int, float) and isinstance(node, bool))
        if schema is float and isinstance(node, int) and not isinstance(node, bool):
            ok = True
        if not ok:
            raise ProfileError(f"{where}: must be {schema.__name__}, got {node!r}")


def load_profile(name_or_path: str | Path) -> dict:
    p = Path(name_or_path)
    if not p.is_file():  # a profile name ("qwen-1.5b" has a dot, so names are not told apart by suffix)
        p = PROFILE_DIR / f"{name_or_path}.yaml"
    if not p.is_file():
        known = ", ".join(sorted(x.stem for x in PROFILE_DIR.glob("*.yaml")))
        raise ProfileError(f"profile {name_or_path!r} not found ({p}); known profiles: {known}")
    try:
        prof = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ProfileError(f"{p}: invalid YAML ({e})") from None
    where = f"profile {p.stem}"
    _check(prof, SCHEMA, where)
    for k in REQUIRED:
        if k not in prof:
            raise ProfileError(f"{where}: missing required key {k!r}")
    kind = prof["models"].get("kind")
    if kind not in ("organism", "hub"):
        raise ProfileError(f"{where}.models.kind: must be 'organism' or 'hub', got {kind!r}")
    from ..merge import get_method

    for m, entry in prof["merge"].items():  # key = the study's label; entry.method = registry name (default: the key)
        try:
            get_method((entry or {}).get("method", m))
        except ValueError as e:
            raise ProfileError(f"{where}.merge.{m}: {e}") from None
    for b in prof["benchmarks"]:
        if not isinstance(b, dict) or "name" not in b:
            raise ProfileError(f"{where}.benchmarks: each entry needs a 'name'")
    if "grading" in prof:
        from ..evaluate.grading import PROTOCOLS

        if prof["grading"] not in PROTOCOLS:
            raise ProfileError(f"{where}.grading: must be one of {', '.join(PROTOCOLS)}, got {prof['grading']!r}")
    prof["_path"] = str(p)
    return prof
