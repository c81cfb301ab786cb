"""Contenders: a model plus a decoding policy, the unit the study compares.

Merges of System 1 and System 2 are one family of long-to-short methods; decoding-time policies on System 2
(budget forcing, after Muennighoff et al. 2025, s1; stop scaling TS, after Zhang et al. 2025) and trained
long-to-short baselines (``baselines.py``: TLDR-style GRPO, SelfBudgeter, DPO on length preferences) are others.
A profile lists them in its ``contenders`` block, one entry per contender, keyed by a label of your choosing::

    contenders:
      ties:      {merge: ties}                 # a label of the profile's ``merge`` block      -> kind "merge"
      bf-128:    {think_budget: 128}           # System 2 with a decoding policy               -> "decoding policy"
      ts-2:      {stop_scale: 2.0}
      extend:    {think_min: 256}              # s1's "Wait" extension (the other direction)
      tldr:      {trained: tldr, level: short} # trained from System 2 of the main pair        -> "trained baseline"
      dpo:       {trained: dpo, train: {steps: 60}}

Keys of an entry: at most one model key -- ``merge`` (a merge label) or ``trained`` (``tldr`` | ``selfbudgeter``
| ``dpo``); none means System 2 --, the decoding policy (``think_budget``, ``think_min``, ``stop_scale``, on any
model), ``name`` (what tables and figures show; default from the entry), ``level`` (TLDR only: the length tag of
its prompts, ``short`` | ``medium`` | ``long``, default ``short``), ``train`` (trained only: fields of
:class:`~l2s_utils.study.baselines.BaselineSpec`, e.g. ``steps``) and ``checkpoint`` (trained only: a hub id or
path of a model trained elsewhere, evaluated as this baseline instead of training one -- the route for hub
profiles, whose models the organism-task trainers cannot train).

:func:`parse` checks a block completely (the profile loader calls it, so a bad entry is an error that names the
key before anything runs) and returns the :class:`Contender` list; the Study evaluates them
(``Study.contender_rows``) and summarises them with their kind and cost (``Study.contender_summary``). The trained
baselines' settings (:class:`BaselineSpec`, their defaults) live here too, beside the entries that override them;
``baselines.py`` trains. This module imports no other module of the study (the profile loader imports it).
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any

KINDS = ("reference", "merge", "decoding policy", "trained baseline")  # the table's order
TRAINED = {"tldr": "TLDR-style GRPO", "selfbudgeter": "SelfBudgeter", "dpo": "DPO on length pairs"}
LENGTH_TAGS = {"short": 0.5, "medium": 0.75, "long": 1.0}  # TLDR: level -> target length / System 2's length
LEVELS = tuple(LENGTH_TAGS)
POLICY_KEYS = ("think_budget", "think_min", "stop_scale")
KEYS = ("merge", "trained", "name", "level", "train", "checkpoint", *POLICY_KEYS)
RESERVED = ("System 1", "System 2")
LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class BaselineSpec:
    """All knobs of one trained baseline (``baselines.py`` trains it; visible here; the cache key hashes them)."""

    method: str                 # tldr | selfbudgeter | dpo
    steps: int = 120            # optimizer steps of the RL / preference stage
    lr: float = 2e-4
    problems_per_level: int = 60   # train-split questions per level
    generations: int = 4        # GRPO group size / DPO samples per question
    batch: int = 8              # completions per optimizer step (GRPO) / pairs per step (DPO)
    steps_per_generation: int = 4  # GRPO: optimizer steps per generated batch (one decode of 4 x batch completions)
    temperature: float = 0.8
    beta: float = 0.0           # GRPO KL coefficient (TLDR and SelfBudgeter use none); DPO's beta below
    dpo_beta: float = 0.1
    coldstart_steps: int = 100  # SelfBudgeter's cold-start fine-tune
    seed: int = 0
    max_tokens: int | None = None  # generation length while training (None: the toy profile's sampling.max_tokens)
    extra: dict = field(default_factory=dict)


DEFAULTS = {"tldr": BaselineSpec("tldr"), "selfbudgeter": BaselineSpec("selfbudgeter"), "dpo": BaselineSpec("dpo", lr=5e-5)}


class ContenderError(ValueError):
    """A bad ``contenders`` entry (the profile loader refuses the profile with it: a ``ProfileError``)."""


@dataclass(frozen=True)
class Contender:
    """One contender: which model (System 2, a merge or a trained baseline) and which decoding policy."""

    label: str
    name: str
    kind: str
    merge: str | None = None
    trained: str | None = None
    policy: dict = field(default_factory=dict)  # think_budget / think_min / stop_scale, only those set
    level: str | None = None  # TLDR's length tag
    train: dict = field(default_factory=dict)  # BaselineSpec overrides
    checkpoint: str | None = None

    @property
    def role(self) -> str:
        """The evaluation role (prompt style and token limit): merges as merged models, the rest as System 2."""
        return "merged" if self.merge else "system2"


def family(c: Contender) -> str:
    """The contender's method family, as ``data/paper/long_to_short_reported.csv`` names it: ``merge:<merge label>``,
    ``trained:<method>``, or for System 2 with a decoding policy ``policy:budget_forcing`` (a maximum, a minimum or
    both) or ``policy:ts`` (stop scaling alone)."""
    if c.merge is not None:
        return f"merge:{c.merge}"
    if c.trained is not None:
        return f"trained:{c.trained}"
    return "policy:budget_forcing" if "think_budget" in c.policy or "think_min" in c.policy else "policy:ts"


def policy_name(policy: dict) -> str:
    """A decoding policy in words: "budget forcing B=128", "budget forcing min=256", "TS s=2", or joined by " + "."""
    parts = []
    b, m, s = policy.get("think_budget"), policy.get("think_min"), policy.get("stop_scale", 1.0)
    if b is not None and m is not None:
        parts.append(f"budget forcing {m}<=B<={b}")
    elif b is not None:
        parts.append(f"budget forcing B={b}")
    elif m is not None:
        parts.append(f"budget forcing min={m}")
    if s != 1.0:
        parts.append(f"TS s={s:g}")
    return " + ".join(parts)


def _spec_fields() -> dict[str, Any]:
    """The trainable knobs of a baseline: BaselineSpec's fields (without method and extra) and their defaults."""
    return {f.name: f.default for f in dataclasses.fields(BaselineSpec) if f.name not in ("method", "extra")}


def _check_train(train: Any, method: str, where: str) -> dict:
    if not isinstance(train, dict):
        raise ContenderError(f"{where}: must be a mapping of training settings, got {train!r}")
    known = _spec_fields()
    for k, v in train.items():
        if k not in known:
            raise ContenderError(f"{where}.{k}: unknown training setting; allowed: {sorted(known)}")
        want = type(known[k]) if known[k] is not None else int
        ok = (isinstance(v, want) or (want is float and isinstance(v, int))) and not isinstance(v, bool)
        if not ok or (isinstance(v, (int, float)) and (not math.isfinite(v) or v < 0)):
            raise ContenderError(f"{where}.{k}: must be a {want.__name__} >= 0, got {v!r}")
        if k in ("steps", "problems_per_level", "generations", "batch", "steps_per_generation", "max_tokens") and v < 1:
            raise ContenderError(f"{where}.{k}: must be >= 1, got {v!r}")
    if "generations" in train and train["generations"] < 2:
        raise ContenderError(f"{where}.generations: GRPO and DPO compare at least 2 samples, got {train['generations']}")
    spec = {**known, **train}
    if method != "dpo" and (spec["batch"] * spec["steps_per_generation"]) % spec["generations"]:
        raise ContenderError(f"{where}: GRPO generates batch x steps_per_generation = "
                             f"{spec['batch'] * spec['steps_per_generation']} completions at a time, which must be a "
                             f"multiple of its group size generations = {spec['generations']}")
    return dict(train)


def _check_policy(entry: dict, max_tokens: int, where: str) -> dict:
    from ..evaluate.sampling import Sampling

    policy = {k: entry[k] for k in POLICY_KEYS if k in entry}
    for k, v in policy.items():
        try:
            Sampling(max_tokens=max_tokens, **{k: v})
        except ValueError as e:
            raise ContenderError(f"{where}.{k}: {str(e).replace('sampling ' + k + ' ', '')}") from None
    try:
        Sampling(max_tokens=max_tokens, **policy)
    except ValueError as e:
        raise ContenderError(f"{where}: {e}") from None
    if policy.get("stop_scale") == 1:
        raise ContenderError(f"{where}.stop_scale: 1 is no policy (the plain decoder); leave it out")
    return policy


def parse(prof: dict, merge_names: dict[str, str], where: str = "profile") -> list[Contender]:
    """The profile's ``contenders`` block as :class:`Contender` objects, checked completely (every error names the
    entry and key: ``profile toy.contenders.bf-64.think_budget: must be an integer >= 1, got 0``); ``merge_names``
    maps each label of the profile's ``merge`` block to its display name. The profile loader calls it through
    :func:`l2s_utils.study.profiles.contenders` (its errors become ``ProfileError``)."""
    block = prof.get("contenders")
    if block is None:
        return []
    where = f"{where}.contenders"
    if not isinstance(block, dict):
        raise ContenderError(f"{where}: must be a mapping of contender label -> entry, got {block!r}")
    organism = prof["models"]["kind"] == "organism"
    max_tokens = int(prof["sampling"]["max_tokens"])
    merges = prof.get("merge") or {}
    out: list[Contender] = []
    for label, entry in block.items():
        w = f"{where}.{label}"
        if not isinstance(label, str) or not LABEL.fullmatch(label):
            raise ContenderError(f"{where}.{label!r}: a contender label is letters, digits, '-', '_' or '.'")
        if entry is None:
            entry = {}
        if not isinstance(entry, dict):
            raise ContenderError(f"{w}: must be a mapping (merge / trained / a decoding policy), got {entry!r}")
        for k in entry:
            if k not in KEYS:
                raise ContenderError(f"{w}.{k}: unknown key; allowed: {sorted(KEYS)}")
        if "merge" in entry and "trained" in entry:
            raise ContenderError(f"{w}: give either 'merge' or 'trained', not both (a contender is one model)")
        policy = _check_policy(entry, max_tokens, w)
        merge, trained = entry.get("merge"), entry.get("trained")
        if merge is not None:
            if not isinstance(merge, str) or merge not in merges:
                raise ContenderError(f"{w}.merge: {merge!r} is not a label of the profile's merge block "
                                     f"({', '.join(map(str, merges))})")
        if trained is not None and trained not in TRAINED:
            raise ContenderError(f"{w}.trained: {trained!r} is not a trained baseline ({' | '.join(TRAINED)})")
        for k in ("level", "train", "checkpoint"):
            if k in entry and trained is None:
                raise ContenderError(f"{w}.{k}: only a trained contender takes {k!r} (add trained: ...)")
        level = entry.get("level")
        if level is not None and (trained != "tldr" or level not in LEVELS):
            raise ContenderError(f"{w}.level: the length tag of TLDR's prompts, one of {' | '.join(LEVELS)} "
                                 f"(trained: tldr only), got {level!r}")
        if trained == "tldr" and level is None:
            level = "short"
        train = _check_train(entry["train"], trained, f"{w}.train") if "train" in entry else {}
        checkpoint = entry.get("checkpoint")
        if checkpoint is not None and (not isinstance(checkpoint, str) or not checkpoint.strip()):
            raise ContenderError(f"{w}.checkpoint: must be a hub id or a path, got {checkpoint!r}")
        if checkpoint is not None and train:
            raise ContenderError(f"{w}: 'checkpoint' names a model trained elsewhere; 'train' settings would not apply")
        if trained is not None and not organism and checkpoint is None:
            raise ContenderError(f"{w}.trained: the trained baselines train on the organism's task only "
                                 "(study/baselines.py); a hub profile names a model trained elsewhere with "
                                 "checkpoint: <hub id or path>")
        if merge is None and trained is None and not policy:
            raise ContenderError(f"{w}: no merge, no trained model and no decoding policy: that is System 2 itself, "
                                 "which the table always has")
        name = entry.get("name")
        if name is not None and (not isinstance(name, str) or not name.strip() or re.search(r"[/\\\x00]", name)):
            raise ContenderError(f"{w}.name: must be a non-empty string without '/' or '\\' (it names the "
                                 f"contender's results folder), got {name!r}")
        pol = policy_name(policy)
        if name is None:
            if merge is not None:
                name = merge_names[merge] + (f" + {pol}" if pol else "")
            elif trained is not None:
                name = TRAINED[trained] + (f" [{level}]" if trained == "tldr" else "") + (f" + {pol}" if pol else "")
            else:
                name = pol[0].upper() + pol[1:]
        kind = "merge" if merge is not None else "trained baseline" if trained is not None else "decoding policy"
        out.append(Contender(label, name, kind, merge, trained, policy, level, train, checkpoint))
    names = [c.name for c in out]
    for c in out:
        if c.name in RESERVED:
            raise ContenderError(f"{where}.{c.label}.name: {c.name!r} is reserved for the pair's own rows")
        if names.count(c.name) > 1:
            others = [d.label for d in out if d.name == c.name]
            raise ContenderError(f"{where}: {', '.join(others)} are all shown as {c.name!r}; give them different names")
    return out


# -- across organism seeds (benchmarks/contenders_seeds.py) ---------------------------------------

def seed_ranking(per_seed: dict[int, list[dict]], key: str = "accuracy") -> list[list[str]]:
    """Models ordered by ``key`` (higher first), in tiers: a model joins the tier above it when their order is not
    the same on every seed (one seed puts it above, another below or equal) -- a flip between seeds is a tie."""
    seeds = sorted(per_seed)
    value = {s: {r["model"]: r[key] for r in per_seed[s]} for s in seeds}
    models = [m for m in value[seeds[0]] if all(m in value[s] for s in seeds)]
    mean = {m: sum(value[s][m] for s in seeds) / len(seeds) for m in models}
    order = sorted(models, key=lambda m: -mean[m])
    tiers: list[list[str]] = []
    for m in order:
        if tiers and any(not all(value[s][a] > value[s][m] for s in seeds) for a in tiers[-1]):
            tiers[-1].append(m)
        else:
            tiers.append([m])
    return tiers


def seed_spread(per_seed: dict[int, list[dict]]) -> list[dict]:
    """Per model: mean, min and max over seeds of accuracy, mean tokens and length change vs System 2."""
    seeds = sorted(per_seed)
    by = {s: {r["model"]: r for r in per_seed[s]} for s in seeds}
    out = []
    for m in by[seeds[0]]:
        if not all(m in by[s] for s in seeds):
            continue
        row = {"model": m, "kind": by[seeds[0]][m].get("kind"), "seeds": len(seeds)}
        for k in ("accuracy", "mean_tokens", "length_change_pct"):
            vals = [by[s][m][k] for s in seeds]
            row.update({k: sum(vals) / len(vals), f"{k}_min": min(vals), f"{k}_max": max(vals)})
        out.append(row)
    return out
