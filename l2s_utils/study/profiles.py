"""Study profiles: everything one run of the study needs, validated completely on load.

A profile (``data/profiles/<name>.yaml``) names the models (the toy organism or hub ids), the
benchmarks and problem limits, the prompt styles, sampling, the generation backend and its options,
the merge hyper-parameters per method, calibration data and seeds. Every key at every level is
checked on load: unknown or mistyped keys, wrong types, unknown method, benchmark, prompt-style or
backend names, and hyper-parameters the merge would refuse are errors that name the key
(``profile toy.merge.ties: unknown parameter 'kk' ...``). Duplicate YAML keys are errors too.

``merge`` maps the study's label of a method to its hyper-parameters; an entry's ``method`` key names
the registry method when it differs from the label (``ties: {method: l2s_ties, k: 0.8, alpha: 1.0}``:
the study's "ties" is the L2S code's TIES, not mergekit's ``ties``). Each entry is checked by the
merge's own config validator (the method registry and its parameters), with the profile's calibration
for the composite methods. ``grading`` names the grading protocol (``strict`` | ``qwen-toolkit``);
``sampling.n`` > 1 draws n samples per problem (needs ``sampling.temperature`` > 0) and
``sampling.top_p`` is the nucleus-sampling mass in (0, 1]. ``contenders`` lists what the study compares beside
the pair: merges, decoding policies on System 2 and trained baselines, each checked by
:func:`l2s_utils.study.contenders.parse`.

``load_profile`` takes a profile name (``data/profiles/<name>.yaml``) or a path; a path is used as
given (it is never looked up again by name: the loaded dict's ``_path`` is the file's absolute path,
and that is what the study driver hands the notebooks).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import yaml

from ..merge import safe_yaml

PROFILE_DIR = Path(__file__).resolve().parents[2] / "data" / "profiles"


class ProfileError(ValueError):
    pass


class Leaf:
    """A scalar key: its Python type(s) and an optional check with the words for what it must be."""

    def __init__(self, kind: type | tuple, check: Callable[[Any], bool] | None = None, want: str | None = None):
        self.kind, self.check = kind, check
        self.want = want or (kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind))

    def validate(self, node: Any, where: str) -> None:
        kinds = self.kind if isinstance(self.kind, tuple) else (self.kind,)
        ok = isinstance(node, kinds) and not (isinstance(node, bool) and bool not in kinds)
        if float in kinds and isinstance(node, int) and not isinstance(node, bool):
            ok = True
        if not ok or (self.check is not None and not self.check(node)):
            raise ProfileError(f"{where}: must be {self.want}, got {node!r}")


class ListOf:
    def __init__(self, item: Any):
        self.item = item

    def validate(self, node: Any, where: str) -> None:
        if not isinstance(node, list):
            raise ProfileError(f"{where}: must be a list, got {node!r}")
        for i, x in enumerate(node):
            _check(x, self.item, f"{where}[{i}]")


def one_of(*names: str) -> Leaf:
    return Leaf(str, lambda s: s in names, " | ".join(names))


def _scales() -> tuple[str, ...]:
    from ..organism.training import SCALES

    return tuple(SCALES)


def _methods() -> tuple[str, ...]:
    from ..merge import REGISTRY

    return tuple(REGISTRY)


def _benchmarks() -> tuple[str, ...]:
    from ..evaluate.benchmarks import NAMES

    return tuple(NAMES)


def _styles() -> tuple[str, ...]:
    from ..evaluate.prompts import STYLES

    return tuple(STYLES)


def _protocols() -> tuple[str, ...]:
    from ..evaluate.grading import PROTOCOLS

    return tuple(PROTOCOLS)


STR, BOOL = Leaf(str), Leaf(bool, want="true or false")
INT0 = Leaf(int, lambda x: x >= 0, "int >= 0")
INT1 = Leaf(int, lambda x: x >= 1, "int >= 1")
FLOAT = Leaf(float, lambda x: x == x and abs(x) != float("inf"), "a finite number")
CONTENTS = ("short", "long", "both")
STYLE = Leaf(str, lambda s: s in _styles(), "a prompt style (qwen25-math-cot | cot | r1 | toy)")
METHOD = Leaf(str, lambda s: s in _methods(), "a merge method (l2s merge --list)")

SCHEMA: dict[str, Any] = {
    "name": STR, "description": STR, "seed": INT0, "allow_pickle": BOOL, "geometry": BOOL,
    "models": {"kind": Leaf(str, lambda s: s in ("organism", "hub"), "'organism' or 'hub'"), "scale": STR,
               "ladder": ListOf(STR), "seed": INT0, "system1": STR, "system2": STR, "pairs": dict},
    "benchmarks": ListOf({"name": Leaf(str, lambda s: s in _benchmarks(), "a benchmark name"),
                          "limit": INT1, "per_level": INT1}),
    "prompts": {"system1": STYLE, "system2": STYLE, "merged": STYLE},
    "sampling": {"temperature": Leaf(float, lambda x: 0 <= x < float("inf"), "a number >= 0"), "max_tokens": INT1,
                 "max_tokens_system1": INT1, "seed": INT0,
                 "top_p": Leaf(float, lambda x: 0 < x <= 1, "a number in (0, 1]"),
                 "n": INT1},  # n > 1: n samples per problem (avg@k, pass@k, maj@k); needs temperature > 0
    "backend": {"name": one_of("transformers", "vllm", "auto"), "tensor_parallel_size": INT1, "max_model_len": INT1,
                "executor": one_of("ray", "mp", "uni"), "batch_size": INT1,
                "data_parallel_size": INT1,  # model replicas (each tensor_parallel_size GPUs; CPU: a share of the cores)
                "dtype": STR,  # vLLM: checkpoint (default) | bfloat16 | float16 | float32 | auto (vLLM's choice)
                "gpu_memory_utilization": Leaf(float, lambda x: 0 < x <= 1, "a number in (0, 1]")},
    "merge": dict,  # method -> hyper-parameters: checked by the merge config validator (_check_merge)
    "calibration": {"source": one_of("organism", "s1k"), "n": INT1, "content": one_of(*CONTENTS), "seed": INT0,
                    "max_length": Leaf(int, lambda x: x >= 2, "int >= 2"), "overlong": one_of("truncate", "skip"),
                    "path": STR, "short_field": one_of("solution", "attempt")},
    # sampled evaluation beside the greedy main table: n samples per problem (avg@k, pass@k, maj@k)
    "sampled": {"n": Leaf(int, lambda x: x >= 2, "int >= 2"),
                "temperature": Leaf(float, lambda x: 0 < x < float("inf"), "a number > 0"),
                "top_p": Leaf(float, lambda x: 0 < x <= 1, "a number in (0, 1]"), "seed": INT0,
                "methods": ListOf(METHOD)},
    "sweeps": {"alpha": ListOf(FLOAT), "rank": ListOf(INT1), "calibration_n": ListOf(INT1),
               "calibration_content": ListOf(one_of(*CONTENTS))},
    "methods": ListOf(METHOD),
    "grading": Leaf(str, lambda s: s in _protocols(), "strict | qwen-toolkit"),  # strict (default) | the paper's
    "contenders": dict,  # label -> {merge | trained, decoding policy, ...}: checked by study/contenders.py (parse)
}
REQUIRED = ("name", "models", "benchmarks", "prompts", "sampling", "backend", "merge")


def _check(node: Any, schema: Any, where: str) -> None:
    if isinstance(schema, dict):
        if not isinstance(node, dict):
            raise ProfileError(f"{where}: must be a mapping, got {node!r}")
        for k, v in node.items():
            if k not in schema:
                raise ProfileError(f"{where}.{k}: unknown key; allowed: {sorted(schema)}")
            _check(v, schema[k], f"{where}.{k}")
    elif isinstance(schema, (Leaf, ListOf)):
        if node is not None:
            schema.validate(node, where)
    elif node is not None and not isinstance(node, schema):
        raise ProfileError(f"{where}: must be {'a mapping' if schema is dict else schema.__name__}, got {node!r}")


def merge_entry(label: str, entry: dict | None) -> tuple[str, dict]:
    """(registry method, hyper-parameters) of one ``merge`` entry: ``method`` names the registry method
    (default: the label); the other keys are its hyper-parameters."""
    params = dict(entry or {})
    return params.pop("method", label), params


def study_merge_config(prof: dict, label: str, system1: str, system2: str, calibration: dict | None = None,
                       **override) -> dict:
    """The merge config of the profile's method ``label`` for the pair (system1, system2): the one builder for the
    Study's merges and for profile validation (placeholder paths).

    The registry method and its hyper-parameters come from the profile's ``merge`` entry (``override`` replaces
    some); its models are [System 1, System 2] for a method registered with ``pair``, else [System 2] onto the
    base System 1; a composite method gets the profile's ``calibration`` (updated by ``calibration``)."""
    from ..merge import get_method

    name, params = merge_entry(label, {**(prof["merge"].get(label) or {}), **override})
    method = get_method(name)
    organism = prof["models"]["kind"] == "organism"
    cfg = {"merge_method": name, "base_model": system1,
           "models": [{"model": system1}, {"model": system2}] if method.pair else [{"model": system2}],
           "parameters": params, "dtype": "float32" if organism else "bfloat16"}
    if not organism:
        cfg["max_position_embeddings"] = 131072
    if method.composite:
        cfg["calibration"] = {**(prof.get("calibration") or {}), **(calibration or {})}
    if prof.get("allow_pickle") is True:
        cfg["allow_pickle"] = True
    return cfg


def display_name(prof: dict, label: str) -> str:
    """The name tables and figures show for the profile's method ``label``: its registry method's display name,
    with the label added when another label of the profile's ``merge`` block runs the same method."""
    from ..merge import get_method

    def method_of(lab: str):
        return get_method(merge_entry(lab, prof["merge"].get(lab))[0])

    method = method_of(label)
    shared = any(method_of(other) is method for other in prof["merge"] if other != label)
    return f"{method.display} ({label})" if shared else method.display


def _check_merge(prof: dict, where: str) -> None:
    """Every method's hyper-parameters as the merge would check them: the Study's config with placeholder paths."""
    from ..merge import MergeConfigError, get_method, load_config

    for m, entry in prof["merge"].items():
        if not isinstance(m, str):
            raise ProfileError(f"{where}.merge.{m!r}: a method label must be a string")
        if entry is not None and not isinstance(entry, dict):
            raise ProfileError(f"{where}.merge.{m}: must be a mapping of hyper-parameters, got {entry!r}")
        name = (entry or {}).get("method", m)
        if not isinstance(name, str):
            raise ProfileError(f"{where}.merge.{m}.method: must be a merge method name (l2s merge --list), got {name!r}")
        try:
            get_method(name)
        except ValueError as e:
            key = f"{m}.method" if entry and "method" in entry else m
            raise ProfileError(f"{where}.merge.{key}: {e}") from None
        try:
            load_config(study_merge_config(prof, m, "<system1>", "<system2>"))
        except (MergeConfigError, ValueError) as e:
            raise ProfileError(f"{where}.merge.{m}: {e}".replace("<dict>: ", "")) from None


def resolve_profile_path(name_or_path: str | Path) -> Path:
    """The file of a profile: an existing path as given; else a built-in name (never both)."""
    p = Path(name_or_path)
    if p.is_file():
        return p.resolve()
    text = str(name_or_path)
    looks_like_path = p.suffix in (".yaml", ".yml") or "/" in text or "\\" in text
    known = ", ".join(sorted(x.stem for x in PROFILE_DIR.glob("*.yaml")))
    if looks_like_path:
        raise ProfileError(f"profile file {text!r} not found (known profiles by name: {known})")
    builtin = PROFILE_DIR / f"{text}.yaml"
    if not builtin.is_file():
        raise ProfileError(f"profile {text!r} not found ({builtin}); known profiles: {known}")
    return builtin


def load_profile(name_or_path: str | Path) -> dict:
    p = resolve_profile_path(name_or_path)
    try:
        prof = safe_yaml.load(p.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ProfileError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise ProfileError(f"{p}: cannot read ({e.strerror or e})") from None
    except yaml.YAMLError as e:
        raise ProfileError(f"{p}: invalid YAML ({safe_yaml.one_line(e)})") from None
    if isinstance(prof, dict) and "_path" in prof:  # the loader's own key: a file may not set it
        raise ProfileError(f"profile {p.stem}._path: unknown key; allowed: {sorted(SCHEMA)}")
    validate_profile(prof, f"profile {p.stem}")
    prof["_path"] = str(p)
    return prof


def validate_profile(prof: Any, where: str = "profile") -> None:
    """Check a profile mapping completely (``_path``, which :func:`load_profile` adds, is allowed)."""
    if isinstance(prof, dict):
        prof = {k: v for k, v in prof.items() if k != "_path"}
    _check(prof, SCHEMA, where)
    for k in REQUIRED:
        if prof.get(k) is None:
            raise ProfileError(f"{where}: missing required key {k!r}")
    models = prof["models"]
    kind = models.get("kind")
    if kind not in ("organism", "hub"):
        raise ProfileError(f"{where}.models.kind: must be 'organism' or 'hub', got {kind!r}")
    if kind == "organism":
        for i, s in enumerate([models.get("scale"), *(models.get("ladder") or [])]):
            if s not in _scales():
                key = "scale" if i == 0 else f"ladder[{i - 1}]"
                raise ProfileError(f"{where}.models.{key}: must be an organism scale ({' | '.join(_scales())}), got {s!r}")
    else:
        if models.get("seed") is not None:
            raise ProfileError(f"{where}.models.seed: the organism's training seed; a 'hub' profile trains no organism")
        for k in ("system1", "system2"):
            if not models.get(k):
                raise ProfileError(f"{where}.models.{k}: required for kind 'hub' (a hub id or local path)")
    if not prof["benchmarks"]:
        raise ProfileError(f"{where}.benchmarks: must name at least one benchmark")
    for i, b in enumerate(prof["benchmarks"]):
        if "name" not in b:
            raise ProfileError(f"{where}.benchmarks[{i}]: needs a 'name'")
    for role in ("system1", "system2", "merged"):
        if role not in prof["prompts"]:
            raise ProfileError(f"{where}.prompts.{role}: missing (a prompt style)")
    if prof["sampling"].get("max_tokens") is None:
        raise ProfileError(f"{where}.sampling.max_tokens: missing")
    if (prof["sampling"].get("n") or 1) > 1 and not prof["sampling"].get("temperature"):
        raise ProfileError(f"{where}.sampling.n: n > 1 needs sampling.temperature > 0 "
                           "(greedy samples are all the same response)")
    if prof["backend"].get("name") is None:
        raise ProfileError(f"{where}.backend.name: missing (transformers | vllm | auto)")
    _check_merge(prof, where)
    contenders(prof, where)


def contenders(prof: dict, where: str = "profile") -> list:
    """The profile's ``contenders`` (:class:`~l2s_utils.study.contenders.Contender` list, in its order), checked
    completely by :func:`l2s_utils.study.contenders.parse`; a bad entry is a :class:`ProfileError`."""
    from .contenders import ContenderError, parse

    try:
        return parse(prof, {label: display_name(prof, label) for label in prof["merge"]}, where)
    except ContenderError as e:
        raise ProfileError(str(e)) from None
