"""The study pipeline that the notebooks call: profile -> models -> merge -> generate -> grade -> summarize.

    st = Study("toy")                                  # validated profile, output under runs/toy
    pair = st.pair()                                   # System 1 / System 2 checkpoints (organism or hub)
    path = st.merged("ties")                           # merged checkpoint, cached by its config hash
    rows = st.evaluate(path, "TIES", role="merged")    # graded rows (generations cached by fingerprint)
    table = st.summary(rows)                           # accuracy with CI, length, length change vs System 2, ...

Every stage is a function over files with a cache key, so re-running a notebook after an edit or a
crash redoes only what changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from ..evaluate import metrics
from .profiles import display_name, load_profile, study_merge_config, validate_profile

ROOT = Path(__file__).resolve().parents[2]


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _merge_seconds_file(path: Path) -> Path:
    return path.with_name(path.name + ".seconds.json")


def _cost_words(kind: str, setup: str, seconds: float, decode_pct: float) -> str:
    """A contender's cost in words: the one-off step and its time, then the decode work relative to System 2."""
    def took(t: float) -> str:
        return "<0.1 s" if t < 0.1 else f"{t:.1f} s" if t < 60 else f"{t / 60:.1f} min"

    if setup == "merge":
        once = f"merge {took(seconds)}" if seconds == seconds else "merge (time not recorded)"
    elif setup == "training":
        once = f"training {took(seconds)} on CPU"
    elif setup == "trained elsewhere":
        once = "trained elsewhere (not measured)"
    else:
        once = "nothing once"
    decode = f"decodes {decode_pct:.0f}% of System 2's tokens" if decode_pct == decode_pct else "decode not measured"
    return f"{once}; {decode}"


class Study:
    """One profile's study: its models, merges, evaluations and summaries, every stage cached on disk.

    ``Study(profile, out=None, progress=False)``: ``profile`` is a profile name (``data/profiles``), a YAML
    path or an already loaded dict; results go under ``out`` (default ``runs/<profile name>``).
    """

    def __init__(self, profile: str | dict = "toy", out: str | os.PathLike | None = None, progress: bool = False):
        if isinstance(profile, dict):
            validate_profile(profile, f"profile {profile.get('name', '<dict>')}")
        self.profile = profile if isinstance(profile, dict) else load_profile(profile)
        self.name = self.profile["name"]
        self.out = Path(out) if out else ROOT / "runs" / self.name
        self.progress = progress
        self.started = time.perf_counter()  # the chapter's wall time (reader.provenance)
        if not progress:  # keep notebook outputs readable: no library progress bars
            os.environ.setdefault("TQDM_DISABLE", "1")
            os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        self._pairs: dict[str, dict[str, Path]] = {}
        self._length_tok = None

    @property
    def allow_pickle(self) -> bool:
        """The profile's ``allow_pickle`` (a YAML boolean; pickle-only models are refused otherwise)."""
        return self.profile.get("allow_pickle") is True

    # -- models -------------------------------------------------------------------------------
    @property
    def organism(self) -> bool:
        return self.profile["models"]["kind"] == "organism"

    @property
    def scales(self) -> list[str]:
        m = self.profile["models"]
        return list(m.get("ladder") or [m.get("scale")]) if self.organism else [self.name]

    def pair(self, scale: str | None = None) -> dict[str, Path]:
        """{'system1': path, 'system2': path} for the main pair or one ladder scale."""
        m = self.profile["models"]
        key = scale or m.get("scale") or self.name
        if key not in self._pairs:
            if self.organism:
                from ..organism import training as O

                org = O.build(key, progress=self.progress, seed=m.get("seed"))
                self._pairs[key] = {"system1": org.system1, "system2": org.system2, "organism": org}
            else:
                from ..merge.checkpoint import fetch_model

                self._pairs[key] = {"system1": fetch_model(m["system1"]), "system2": fetch_model(m["system2"])}
        return self._pairs[key]

    # -- merging --------------------------------------------------------------------------------
    def merge_config(self, method: str, scale: str | None = None, calibration: dict | None = None,
                     **override) -> dict:
        """The merge config of the profile's method ``method`` (a label of its ``merge`` block) for the main pair
        or one ladder scale (:func:`~l2s_utils.study.profiles.study_merge_config`)."""
        pair = self.pair(scale)
        return study_merge_config(self.profile, method, str(pair["system1"]), str(pair["system2"]), calibration,
                                  **override)

    def display_name(self, method: str) -> str:
        """The name of the profile's method ``method`` in tables and figures (the registry's display name)."""
        return display_name(self.profile, method)

    def merged(self, method: str, scale: str | None = None, calibration: dict | None = None, **override) -> Path:
        """The merged checkpoint for ``method`` (profile hyper-parameters, overridden by keywords); cached."""
        from ..merge import merge

        from ..evaluate.pipeline import wait_lock

        cfg = self.merge_config(method, scale, calibration, **override)
        path = self.out / "merged" / (scale or "main") / f"{method}-{_hash(cfg)}"
        if not ((path / "l2s_merge.json").is_file() and _merge_seconds_file(path).is_file()):
            # chapters run side by side (l2s study --jobs): one merges, the other waits and finds it merged
            with wait_lock(self.out / ".locks" / f"merged-{scale or 'main'}-{path.name}.lock"):
                if not (path / "l2s_merge.json").is_file():
                    result = merge(cfg, path, overwrite=path.exists(), progress=self.progress)
                    _merge_seconds_file(path).write_text(json.dumps({"merge_s": result.seconds}))
        return path

    @staticmethod
    def merge_seconds(path: str | os.PathLike) -> float:
        """How long the merge of the checkpoint ``path`` took (seconds; NaN when it was merged before the Study
        kept the time: the record lies beside the checkpoint, so that the checkpoint's fingerprint stays)."""
        f = _merge_seconds_file(Path(path))
        try:
            return float(json.loads(f.read_text())["merge_s"])
        except (OSError, ValueError, KeyError, TypeError):
            return float("nan")

    # -- evaluation -----------------------------------------------------------------------------
    def length_tokenizer(self):
        """One fixed tokenizer for every length in this profile (the System 2 tokenizer)."""
        if self._length_tok is None:
            from transformers import AutoTokenizer

            self._length_tok = AutoTokenizer.from_pretrained(self.pair()["system2"])
        return self._length_tok

    def evaluate(self, model: str | os.PathLike, name: str, role: str = "merged", scale: str | None = None,
                 sampling: dict | None = None, question: Callable[[str], str] | None = None) -> pd.DataFrame:
        """Graded rows of one model on every benchmark of the profile (role picks prompt and max tokens);
        ``sampling`` overrides keys of the profile's ``sampling`` block (temperature, top_p, seed, n) and may add a
        decoding policy (think_budget, think_min, stop_scale); ``question`` rewrites each question before it is
        put into the prompt (TLDR's length tag)."""
        import dataclasses

        from ..evaluate.benchmarks import load_benchmark
        from ..evaluate.generation import Sampling
        from ..evaluate.pipeline import evaluate
        from ..evaluate.prompts import stop_strings
        from ..evaluate.sampling import POLICY_FIELDS

        sp, bk = {**self.profile["sampling"], **(sampling or {})}, self.profile["backend"]
        prompt = self.profile["prompts"][role]
        max_tokens = sp.get("max_tokens_system1", sp["max_tokens"]) if role == "system1" else sp["max_tokens"]
        sampling = Sampling(max_tokens=max_tokens, temperature=float(sp.get("temperature", 0.0)), seed=sp.get("seed", 0),
                            top_p=float(sp.get("top_p", 1.0)), stop=stop_strings(prompt),
                            **{k: sp[k] for k in POLICY_FIELDS if sp.get(k) is not None})
        options: dict[str, Any] = {"data_parallel_size": bk.get("data_parallel_size", 1)}
        if bk["name"] == "transformers":
            options["batch_size"] = bk.get("batch_size", 64)
        else:
            options.update({k: bk[k] for k in ("tensor_parallel_size", "max_model_len", "gpu_memory_utilization", "dtype")
                            if bk.get(k)})
            if bk.get("executor") == "ray":
                options["distributed_executor_backend"] = "ray"
        frames = []
        for b in self.profile["benchmarks"]:
            items = load_benchmark(b["name"], limit=b.get("limit"), seed=self.profile.get("seed", 0),
                                   toy_per_level=b.get("per_level", 50))
            if question is not None:
                items = [dataclasses.replace(it, question=question(it.question)) for it in items]
            df = evaluate(model, b["name"], items=items, prompt=prompt, backend=bk["name"], sampling=sampling,
                          out=self.out / "eval", length_tokenizer=self.length_tokenizer(), model_name=name,
                          grading=self.profile.get("grading", "strict"), n_samples=sp.get("n", 1),
                          progress=self.progress, allow_pickle=self.allow_pickle,
                          results_dir=None if scale is None else self.out / "eval" / "results" / f"scale-{scale}",
                          **options)
            df["role"], df["scale"], df["profile"] = role, scale or "main", self.name
            frames.append(df)
        return pd.concat(frames, ignore_index=True)

    def baselines(self, scale: str | None = None, sampling: dict | None = None) -> pd.DataFrame:
        pair = self.pair(scale)
        return pd.concat([self.evaluate(pair["system1"], "System 1", "system1", scale, sampling),
                          self.evaluate(pair["system2"], "System 2", "system2", scale, sampling)], ignore_index=True)

    def run_methods(self, methods: list[str], scale: str | None = None, sampling: dict | None = None) -> pd.DataFrame:
        frames = [self.evaluate(self.merged(m, scale), self.display_name(m), "merged", scale, sampling) for m in methods]
        return pd.concat(frames, ignore_index=True)

    # -- contenders: a model plus a decoding policy (merges, decoding policies, trained baselines) ------------
    def contenders(self) -> list:
        """The profile's ``contenders`` (:class:`~l2s_utils.study.contenders.Contender`, in the profile's order)."""
        from .profiles import contenders

        return contenders(self.profile, f"profile {self.name}")

    def trained(self, method: str, train: dict | None = None):
        """The long-to-short baseline ``method`` (tldr | selfbudgeter | dpo) trained from System 2 of the main pair
        (:func:`l2s_utils.study.baselines.build`: cached by its settings and System 2's weights). ``train`` overrides
        fields of its default :class:`~l2s_utils.study.baselines.BaselineSpec`; its generation length is the profile's
        ``sampling.max_tokens`` and its seed the profile's ``seed`` unless ``train`` sets them."""
        from . import baselines as B

        return B.build(method, self.pair()["organism"], spec=self.trained_spec(method, train), progress=self.progress)

    def trained_baselines(self) -> list[tuple[str, dict]]:
        """(method, ``train`` overrides) of every baseline the profile's contenders train here, each once, in order."""
        seen: list[tuple[str, dict]] = []
        for c in self.contenders():
            if c.trained is not None and c.checkpoint is None and (c.trained, c.train) not in seen:
                seen.append((c.trained, c.train))
        return seen

    def trained_spec(self, method: str, train: dict | None = None):
        """The :class:`~l2s_utils.study.baselines.BaselineSpec` that :meth:`trained` builds ``method`` with."""
        import dataclasses

        from . import baselines as B

        if not self.organism:
            raise ValueError(f"profile {self.name}: the trained baselines train on the organism's task only; "
                             "name a model trained elsewhere with a contender's checkpoint")
        if method not in B.DEFAULTS:
            raise ValueError(f"unknown baseline {method!r}; known: {', '.join(B.DEFAULTS)}")
        over = {"max_tokens": int(self.profile["sampling"]["max_tokens"]), "seed": int(self.profile.get("seed", 0)),
                **(train or {})}
        return dataclasses.replace(B.DEFAULTS[method], **over)

    def contender_model(self, c) -> tuple[Path, str, float]:
        """(checkpoint, one-off step, its seconds) of contender ``c``: System 2 (nothing; 0 s), a merge (its merge
        seconds) or a trained baseline (its training seconds; NaN for a checkpoint trained elsewhere)."""
        if c.merge is not None:
            path = self.merged(c.merge)
            return path, "merge", self.merge_seconds(path)
        if c.trained is not None:
            if c.checkpoint is not None:
                from ..merge.checkpoint import fetch_model

                return Path(fetch_model(c.checkpoint)), "trained elsewhere", float("nan")
            b = self.trained(c.trained, c.train)
            return b.path, "training", float(b.manifest["train_s"])
        return Path(self.pair()["system2"]), "none", 0.0

    def contender_rows(self, labels: list[str] | None = None) -> pd.DataFrame:
        """Graded rows of System 1, System 2 and every contender of the profile (or those of ``labels``), each row
        with its ``kind`` (reference | merge | decoding policy | trained baseline), ``contender`` label and one-off
        cost (``setup``, ``setup_s``). Every stage is cached: merges, trained models, generations."""
        from .baselines import tagged

        chosen = self.contenders()
        if labels is not None:
            known = {c.label for c in chosen}
            unknown = [x for x in labels if x not in known]
            if unknown:
                raise ValueError(f"profile {self.name}: no contender {', '.join(map(repr, unknown))}; "
                                 f"its contenders: {', '.join(sorted(known))}")
            chosen = [c for c in chosen if c.label in labels]
        frames = [self.baselines().assign(kind="reference", setup="none", setup_s=0.0)]
        frames[0]["contender"] = frames[0].model.map({"System 1": "system1", "System 2": "system2"})
        for c in chosen:
            path, setup, seconds = self.contender_model(c)
            rewrite = (lambda q, lv=c.level: tagged(q, lv)) if c.level else None
            df = self.evaluate(path, c.name, c.role, sampling=dict(c.policy), question=rewrite)
            frames.append(df.assign(kind=c.kind, contender=c.label, setup=setup, setup_s=seconds))
        return pd.concat(frames, ignore_index=True)

    def contender_summary(self, rows: pd.DataFrame) -> pd.DataFrame:
        """One row per contender (and benchmark): its kind, accuracy with a bootstrap CI, mean tokens with a CI,
        length change vs System 2, reflective share, truncation, and its cost: the one-off seconds (``setup_s``:
        merge or training; 0 for a decoding policy), the decode work as generated tokens relative to System 2's
        on the same problems (``decode_tokens_pct``; forced tokens count), and both in words (``cost``)."""
        from .contenders import KINDS

        table = self.summary(rows)
        info = rows.groupby("model", sort=False).agg(kind=("kind", "first"), contender=("contender", "first"),
                                                     setup=("setup", "first"), setup_s=("setup_s", "first"))
        gen = rows.groupby(["model", "benchmark"], sort=False).generated_tokens.mean()
        table = table.join(info, on="model")
        ref = {b: gen.get(("System 2", b), float("nan")) for b in table.benchmark}
        table["decode_tokens_pct"] = [100 * gen[(m, b)] / ref[b] if ref[b] else float("nan")
                                      for m, b in zip(table.model, table.benchmark)]
        table["cost"] = [_cost_words(k, st, s, d) for k, st, s, d in
                         zip(table.kind, table.setup, table.setup_s, table.decode_tokens_pct)]
        table["_order"] = table.kind.map({k: i for i, k in enumerate(KINDS)})
        table = table.sort_values(["_order"], kind="stable").drop(columns="_order").reset_index(drop=True)
        first = ["kind", "model", "contender", "benchmark"]
        return table[first + [c for c in table.columns if c not in first]]

    # -- geometry: the straight path from System 1 to System 2 ----------------------------------
    def alpha_path_rows(self, scale: str | None = None, alphas=None) -> pd.DataFrame:
        """Graded rows of System 1 (alpha 0), task arithmetic at each alpha, and System 2 (alpha 1)."""
        from .premise import BARRIER_ALPHAS

        pair = self.pair(scale)  # endpoints under the merged models' prompt and budget, so the line is comparable
        frames = [self.evaluate(pair["system1"], "System 1", "merged", scale).assign(alpha=0.0),
                  self.evaluate(pair["system2"], "System 2", "merged", scale).assign(alpha=1.0)]
        for a in alphas or BARRIER_ALPHAS:
            path = self.merged("task_arithmetic", scale, alpha=float(a))
            frames.append(self.evaluate(path, f"TA alpha={a:g}", "merged", scale).assign(alpha=float(a)))
        return pd.concat(frames, ignore_index=True)

    def geometry(self, scale: str | None = None, alphas=None) -> dict:
        """Accuracy path and barrier (every profile); held-out loss path and task-vector norms (organism only).

        Returns {"rows", "path", "barrier", "norms"} (see ``l2s_utils.study.premise``).
        """
        from . import premise

        rows = self.alpha_path_rows(scale, alphas)
        losses, norms = None, None
        if self.organism:
            from ..merge.checkpoint import load_model

            pair = self.pair(scale)
            s1, s2 = premise._state(pair["system1"]), premise._state(pair["system2"])
            model, tok = load_model(pair["system1"], "cpu", allow_pickle=self.allow_pickle)
            losses = premise.held_out_losses(model, tok, s1, s2, sorted(rows.alpha.unique()),
                                             seed=self.profile.get("seed", 0))
            norms = premise.task_vector_norms(s1, s2)
        path = premise.alpha_path(rows, losses)
        return {"rows": rows, "path": path, "barrier": premise.barriers(path), "norms": norms}

    # -- summaries ------------------------------------------------------------------------------
    def summary(self, rows: pd.DataFrame, by=("model", "benchmark")) -> pd.DataFrame:
        return metrics.summarize(rows, by=by, reference="System 2")

    def sampled_rows(self, scale: str | None = None) -> pd.DataFrame:
        """The profile's ``sampled`` block run: System 1, System 2 and its ``methods`` (default TA and TIES), each
        with ``n`` samples per problem at ``temperature`` (sample s seeded ``seed + s``, cached per sample)."""
        cfg = self.profile["sampled"]
        over = {"n": cfg["n"], "temperature": float(cfg["temperature"]), "top_p": float(cfg.get("top_p", 1.0)),
                "seed": cfg.get("seed", 0)}
        return pd.concat([self.baselines(scale, over),
                          self.run_methods(cfg.get("methods", ["task_arithmetic", "ties"]), scale, over)], ignore_index=True)

    def sampled(self, rows: pd.DataFrame, ks=None) -> pd.DataFrame:
        """avg@k, pass@k, maj@k with bootstrap CIs (rows with several samples per problem; ks default 1 and n)."""
        n = int(rows.groupby(["model", "benchmark", "id"]).size().min())
        return metrics.sampled_metrics(rows, ks=ks or sorted({1, n}), by=("model", "benchmark"))

    def budget_curve(self, rows: pd.DataFrame, budgets=None) -> pd.DataFrame:
        """Accuracy within B generated tokens for a grid of B, per model and benchmark, from stored rows."""
        return metrics.budget_curve(rows, budgets, by=("model", "benchmark"))

    def protocol_comparison(self, rows: pd.DataFrame) -> pd.DataFrame:
        """Accuracy (%) of each model under both grading protocols and the difference (toolkit - strict),
        graded again from the stored responses (nothing is generated)."""
        from ..evaluate.pipeline import regrade

        acc = {p: regrade(rows, p).groupby(["model", "benchmark"], sort=False).correct.mean() * 100
               for p in ("strict", "qwen-toolkit")}
        out = pd.DataFrame({"strict": acc["strict"], "qwen-toolkit": acc["qwen-toolkit"]}).reset_index()
        out["toolkit_minus_strict"] = out["qwen-toolkit"] - out["strict"]
        return out

    def by_level(self, rows: pd.DataFrame) -> pd.DataFrame:
        g = rows.dropna(subset=["level"]).groupby(["model", "level"])
        out = g.agg(accuracy=("correct", "mean"), mean_tokens=("tokens", "mean"), reflective=("reflective", "mean"),
                    n=("correct", "size")).reset_index()
        out["accuracy"] *= 100
        out["reflective"] *= 100
        return out
