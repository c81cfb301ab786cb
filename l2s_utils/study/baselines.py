"""Long-to-short without merging: trained baselines on the organism, with Hugging Face TRL.

Each baseline starts from the main pair's **System 2** and is trained on the organism's *train* split (never a test
question), with rewards from the project's own toy grader (:func:`l2s_utils.evaluate.grading.grade_toy`):

- ``tldr`` -- length-regularised GRPO with three length levels, after Zhang et al. 2025 ("Making Small Language
  Models Efficient Reasoners", arXiv 2505.07961, TLDR). The prompt carries a level tag (:data:`LENGTH_TAGS`); the
  reward is r = 1[correct] - alpha * max(0, l / l_ref - tau_level), with l the response length, l_ref System 2's
  greedy length on that question and tau = 0.5 / 0.75 / 1.0 for short / medium / long. What is ours: the tags, the
  targets as shares of System 2's own length, alpha = 1. (TRL ``GRPOTrainer``.)
- ``selfbudgeter`` -- after Li et al. 2025 (SelfBudgeter, arXiv 2505.11274): a cold-start fine-tune on System 2's own
  correct greedy responses prefixed with their true length ``<budget>N</budget>``, then budget-guided GRPO with
  r = 1[correct] * (1 - lambda * B / l_ref) - mu * max(0, l - B) / B (B the budget the model wrote; lambda = 0.3,
  mu = 1: correct, within its own budget, and a smaller budget is better). Users can pre-fill a budget. What is
  ours: the reward's exact form and constants (the paper's is not public in this form).
- ``dpo`` -- DPO on length preferences of the model's own samples (as O1-Pruner / Ada-R1-style length
  preference): 4 samples per train question at temperature 0.8; chosen = the shortest correct one, rejected =
  the longest one. (TRL ``DPOTrainer``, the frozen System 2 as reference.)

Every baseline is seeded and cached like the organism (``<cache>/baselines/<scale>-<name>-<hash>``: the spec, the
System 2 weights' sha256, the versions), its manifest records the CPU minutes it took. As the organism's ladder,
the toy profile's trained baselines ship with the repository (``data/baselines/<scale>-<name>-<recipe>``, the
recipe being the key without the library versions and thread count; sha256 per file in the manifest;
``l2s baselines --ship``): a build uses a local cache entry first, then the shipped weights of its recipe (verified
file by file), and trains only when neither exists or when told to (``from_scratch`` or
``L2S_ORGANISM_FROM_SCRATCH=1``, ``make book-from-scratch``). ``tests/test_baselines.py`` trains each on the micro
organism.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import random
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from .contenders import DEFAULTS, LENGTH_TAGS, BaselineSpec  # noqa: F401  (the settings live with the contenders)

BUDGET_OPEN, BUDGET_CLOSE = "<budget>", "</budget>"


VERSION = "1"  # bump when a method's meaning changes


def tagged(question: str, level: str) -> str:
    """A TLDR prompt's question: the question and its length level, e.g. ``"37+48-15 [short]"``."""
    if level not in LENGTH_TAGS:
        raise ValueError(f"length level must be one of {sorted(LENGTH_TAGS)}, got {level!r}")
    return f"{question} [{level}]"


def budget_of(text: str) -> int | None:
    """The budget a SelfBudgeter response states at its start (``<budget>N</budget>``), or None."""
    import re

    m = re.match(r"\s*<budget>(\d+)</budget>", text)
    return int(m.group(1)) if m else None


# ---------------------------------------------------------------------------------------------
# Cache
# ---------------------------------------------------------------------------------------------


def _sha_dir(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(Path(path).glob("*.safetensors")):
        h.update(f.read_bytes())
    return h.hexdigest()


def environment() -> dict:
    """What else decides a trained baseline's last bits: the library versions and the thread count (training runs
    with the organism's ``TRAIN_THREADS`` whatever the calling process uses, e.g. a chapter run side by side)."""
    import torch
    import transformers
    import trl

    from ..organism.training import TRAIN_THREADS

    return {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__,
            "threads": TRAIN_THREADS}


def _recipe_doc(spec: BaselineSpec, system2: Path) -> dict:
    fields = dataclasses.asdict(spec)
    if fields["max_tokens"] is None:  # the default (the toy profile's length): keys of earlier builds stay
        del fields["max_tokens"]
    doc = {"spec": fields, "version": VERSION, "system2": _sha_dir(system2)}
    if spec.method == "dpo":  # its pairs are System 2's own samples: drawn without top-k since 2026-12-07
        doc["samples"] = "temperature only (no top-k)"
    return doc


def recipe_key(spec: BaselineSpec, system2: Path) -> str:
    """What a baseline *is*: its spec, :data:`VERSION` and the sha256 of the System 2 it starts from (the name of its
    shipped weights, ``data/baselines/<scale>-<method>-<recipe>``)."""
    return hashlib.sha256(json.dumps(_recipe_doc(spec, system2), sort_keys=True).encode()).hexdigest()[:12]


def baseline_key(spec: BaselineSpec, system2: Path) -> str:
    """Cache key of a local build: the recipe (:func:`recipe_key`) and the :func:`environment`."""
    blob = json.dumps({**_recipe_doc(spec, system2), **environment()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


ROOT = Path(__file__).resolve().parents[2]
SHIPPED_DIR = ROOT / "data" / "baselines"


def _where(path: Path) -> str:
    """A path as the repository names it (no machine's directories in what ships)."""
    p = Path(path).resolve()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else p.name


@dataclass
class Baseline:
    name: str
    path: Path
    manifest: dict
    source: str = "trained"  # or "shipped" (data/baselines)


class ShippedBaselineError(ValueError):
    """Shipped baseline weights whose files do not match their recorded sha256."""


def shipped(method: str, scale: str, spec: BaselineSpec, system2: Path, root: Path | None = None) -> Baseline | None:
    """The weights shipped in ``data/baselines`` for this recipe, verified file by file; None if there are none.
    Files that do not match their recorded sha256 are an error (never silently used)."""
    from ..organism.training import verified_manifest

    d = (root or SHIPPED_DIR) / f"{scale}-{method}-{recipe_key(spec, system2)}"
    m = verified_manifest(d, "baseline", ShippedBaselineError)
    return None if m is None else Baseline(method, d / "model", m, "shipped")


def ship(b: Baseline, scale: str, spec: BaselineSpec, system2: Path, dest: Path | None = None) -> Path:
    """Copy a baseline trained here into ``data/baselines/<scale>-<method>-<recipe>`` with the sha256 of every file;
    other recipes of the same scale and method are removed (one set of weights each)."""
    from ..organism.training import file_hashes, install_shipped

    if b.source != "trained":
        raise ValueError(f"{b.path.parent} is already shipped; ship a baseline trained here")
    target = (dest or SHIPPED_DIR) / f"{scale}-{b.name}-{recipe_key(spec, system2)}"

    def fill(tmp: Path) -> None:
        shutil.copytree(b.path, tmp / "model")
        manifest = {**b.manifest, "recipe": target.name.rsplit("-", 1)[-1], "system2": _where(system2),
                    "environment": b.manifest.get("environment", environment()), "sha256": file_hashes(tmp)}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, default=str))

    return install_shipped(target, f"{scale}-{b.name}-*", fill)


def locate(method: str, org, spec: BaselineSpec, *, cache: Path | None = None, shipped_dir: Path | None = None,
           use_shipped: bool = True) -> Baseline | None:
    """The baseline that :func:`build` would return without training: a local build, else (``use_shipped``) the
    shipped weights of its recipe; None when there is neither (nothing is trained or written)."""
    from ..organism.training import default_cache

    root = (cache or default_cache()) / "baselines" / f"{org.scale}-{method}-{baseline_key(spec, org.system2)}"
    if (root / "manifest.json").is_file():
        return Baseline(method, root / "model", json.loads((root / "manifest.json").read_text()))
    return shipped(method, org.scale, spec, org.system2, shipped_dir) if use_shipped else None


def build(method: str, org, *, spec: BaselineSpec | None = None, cache: Path | None = None, progress: bool = False,
          force: bool = False, from_scratch: bool | None = None, shipped_dir: Path | None = None) -> Baseline:
    """Train (or load) baseline ``method`` from ``org``'s System 2; returns its checkpoint.

    Order: a local build (``<cache>/baselines``); else the shipped weights of this recipe (:func:`shipped`), unless
    ``force`` or ``from_scratch`` (default: the environment variable ``L2S_ORGANISM_FROM_SCRATCH``); else train here."""
    from ..organism.training import default_cache

    if method not in DEFAULTS:
        raise ValueError(f"unknown baseline {method!r}; known: {', '.join(DEFAULTS)}")
    spec = spec or DEFAULTS[method]
    if spec.method != method:
        raise ValueError(f"spec.method {spec.method!r} does not match {method!r}")
    if from_scratch is None:
        from_scratch = os.environ.get("L2S_ORGANISM_FROM_SCRATCH", "").lower() not in ("", "0", "false", "no")
    root = (cache or default_cache()) / "baselines" / f"{org.scale}-{method}-{baseline_key(spec, org.system2)}"
    if not force:
        b = locate(method, org, spec, cache=cache, shipped_dir=None if from_scratch else shipped_dir,
                   use_shipped=not from_scratch)
        if b is not None:
            return b
    tmp = root.with_name(root.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    t0 = time.perf_counter()
    train = {"tldr": _train_tldr, "selfbudgeter": _train_selfbudgeter, "dpo": _train_dpo}[method]
    from ..organism.training import training_threads

    try:
        with _quiet(not progress), training_threads():  # the thread count is part of the build's key (environment)
            log = train(org, spec, tmp, progress)
    except BaseException:  # a failed or interrupted training leaves nothing behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    manifest = {"method": method, "spec": dataclasses.asdict(spec), "key": root.name.rsplit("-", 1)[-1],
                "system2": str(org.system2), "train_s": time.perf_counter() - t0, "environment": environment(), "log": log,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, default=str))
    if root.exists():
        shutil.rmtree(root)
    os.replace(tmp, root)
    return Baseline(method, root / "model", manifest)


# ---------------------------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet(on: bool):
    """Without progress (a notebook): no library deprecation warnings, dataset progress bars or trainer log lines."""
    if not on:
        yield
        return
    from datasets.utils import logging as ds_logging

    was = ds_logging.is_progress_bar_enabled()
    ds_logging.disable_progress_bar()  # the trainers' dataset preparation ("Tokenizing train dataset: 100%|...")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        if was:
            ds_logging.enable_progress_bar()


def _trainer_quiet(trainer, progress: bool) -> None:
    """Without progress, the trainer prints no metrics dict per log step (transformers' PrinterCallback)."""
    if not progress:
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)


def correct(text: str, gold) -> bool:
    """The toy grader's verdict (the project's own grader: last boxed integer equals the gold answer)."""
    from ..evaluate.grading import grade_toy

    return bool(grade_toy(text, gold)[1])


def _load(path: Path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return model, tok


def _save(model, tok, src: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    if (Path(src) / "generation_config.json").is_file():
        shutil.copy(Path(src) / "generation_config.json", out / "generation_config.json")


def _problems(spec: BaselineSpec):
    from ..organism import task as T

    return T.make_problems("train", spec.problems_per_level, 1000 + spec.seed)


def max_tokens(spec: BaselineSpec) -> int:
    """The generation length while training: the spec's, else the toy profile's ``sampling.max_tokens``."""
    from .premise import toy_max_tokens

    return spec.max_tokens or toy_max_tokens()


def _reference_lengths(system2: Path, problems, spec: BaselineSpec) -> dict[str, int]:
    """System 2's greedy response length (tokens) per training question: the yardstick of the length rewards."""
    from ..evaluate.generation import Sampling, generate_transformers
    from ..organism.prompts import TOY

    gens = generate_transformers(system2, [TOY.format(question=p.question) for p in problems],
                                 Sampling(max_tokens=max_tokens(spec)), batch_size=128, progress=False)
    return {p.question: max(1, g.n_tokens) for p, g in zip(problems, gens)}


def _grpo(model, tok, dataset, reward, spec: BaselineSpec, out: Path, progress: bool) -> list[dict]:
    import torch
    from trl import GRPOConfig, GRPOTrainer

    torch.manual_seed(spec.seed)
    cfg = GRPOConfig(output_dir=str(out / "trainer"), per_device_train_batch_size=spec.batch,
                     num_generations=spec.generations, steps_per_generation=spec.steps_per_generation,
                     max_completion_length=max_tokens(spec), max_steps=spec.steps, learning_rate=spec.lr,
                     temperature=spec.temperature, beta=spec.beta, logging_steps=5, report_to=[], use_cpu=True,
                     seed=spec.seed, save_strategy="no", disable_tqdm=not progress, lr_scheduler_type="constant",
                     warmup_steps=0)
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=cfg, train_dataset=dataset, processing_class=tok)
    _trainer_quiet(trainer, progress)
    trainer.train()
    shutil.rmtree(out / "trainer", ignore_errors=True)
    return [{k: v for k, v in h.items() if k in ("step", "reward", "completions/mean_length", "loss")}
            for h in trainer.state.log_history]


# ---------------------------------------------------------------------------------------------
# TLDR-style length-regularised GRPO
# ---------------------------------------------------------------------------------------------


def tldr_reward(completions, gold, ref_len, level, tokenizer=None, **_) -> list[float]:
    """r = 1[correct] - max(0, l / l_ref - tau_level) (see the module docstring)."""
    out = []
    for text, g, ref, lv in zip(completions, gold, ref_len, level):
        n = len(tokenizer(text, add_special_tokens=False)["input_ids"]) if tokenizer else len(text) / 3
        out.append(float(correct(text, g)) - max(0.0, n / ref - LENGTH_TAGS[lv]))
    return out


def _train_tldr(org, spec: BaselineSpec, out: Path, progress: bool) -> dict:
    from datasets import Dataset

    from ..organism.prompts import TOY

    model, tok = _load(org.system2)
    problems = _problems(spec)
    ref = _reference_lengths(org.system2, problems, spec)
    rng = random.Random(spec.seed)
    rows = [{"prompt": TOY.format(question=tagged(p.question, lv)), "gold": p.answer, "ref_len": ref[p.question],
             "level": lv} for p in problems for lv in [rng.choice(sorted(LENGTH_TAGS))]]
    reward = lambda **kw: tldr_reward(tokenizer=tok, **kw)  # noqa: E731
    reward.__name__ = "tldr_reward"
    log = _grpo(model, tok, Dataset.from_list(rows), reward, spec, out, progress)
    _save(model, tok, org.system2, out / "model")
    return {"grpo": log}


# ---------------------------------------------------------------------------------------------
# SelfBudgeter
# ---------------------------------------------------------------------------------------------


def budget_reward(completions, gold, ref_len, tokenizer=None, lam: float = 0.3, mu: float = 1.0, **_) -> list[float]:
    """r = 1[correct] (1 - lambda B / l_ref) - mu max(0, l - B) / B; a response without a budget gets -1."""
    out = []
    for text, g, ref in zip(completions, gold, ref_len):
        b = budget_of(text)
        if not b:
            out.append(-1.0)
            continue
        n = len(tokenizer(text, add_special_tokens=False)["input_ids"]) if tokenizer else len(text) / 3
        ok = float(correct(text, g))
        out.append(ok * (1 - lam * min(1.0, b / ref)) - mu * max(0.0, n - b) / b)
    return out


def _train_selfbudgeter(org, spec: BaselineSpec, out: Path, progress: bool) -> dict:
    import torch
    from datasets import Dataset

    from ..evaluate.generation import Sampling, generate_transformers
    from ..organism.prompts import END, TOY
    from ..organism.training import pad_pairs, train

    model, tok = _load(org.system2)
    problems = _problems(spec)
    prompts = [TOY.format(question=p.question) for p in problems]
    gens = generate_transformers(None, prompts, Sampling(max_tokens=max_tokens(spec)), batch_size=128, progress=False,
                                 model_and_tokenizer=(model, tok))
    # cold start: System 2's own correct responses, each prefixed with its true length
    pairs = [(pr, f"{BUDGET_OPEN}{g.n_tokens}{BUDGET_CLOSE}\n{g.text}{END}") for pr, g, p in zip(prompts, gens, problems)
             if correct(g.text, p.answer)]
    if not pairs:
        raise RuntimeError("SelfBudgeter: System 2 answered no training question correctly (nothing to cold-start on)")
    enc = [(tok(a, add_special_tokens=False)["input_ids"], tok(b, add_special_tokens=False)["input_ids"]) for a, b in pairs]
    rng = random.Random(spec.seed)
    torch.manual_seed(spec.seed)

    def batches():
        for _ in range(spec.coldstart_steps):
            yield pad_pairs(rng.sample(enc, min(len(enc), 16)), tok.pad_token_id)

    cold = train(model, batches(), spec.coldstart_steps, 2e-4, 10, "selfbudgeter: cold start", progress)
    ref = {p.question: max(1, g.n_tokens) for p, g in zip(problems, gens)}
    rows = [{"prompt": pr, "gold": p.answer, "ref_len": ref[p.question]} for pr, p in zip(prompts, problems)]
    reward = lambda **kw: budget_reward(tokenizer=tok, **kw)  # noqa: E731
    reward.__name__ = "budget_reward"
    log = _grpo(model, tok, Dataset.from_list(rows), reward, spec, out, progress)
    _save(model, tok, org.system2, out / "model")
    return {"coldstart_pairs": len(pairs), "coldstart_loss": [cold[0], cold[-1]], "grpo": log}


# ---------------------------------------------------------------------------------------------
# DPO on length preferences
# ---------------------------------------------------------------------------------------------


def _train_dpo(org, spec: BaselineSpec, out: Path, progress: bool) -> dict:
    import dataclasses as dc

    import torch
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from ..evaluate.generation import Sampling, generate_transformers
    from ..organism.prompts import END, TOY

    model, tok = _load(org.system2)
    problems = _problems(spec)
    prompts = [TOY.format(question=p.question) for p in problems]
    samples = [generate_transformers(None, prompts, Sampling(max_tokens=max_tokens(spec), temperature=spec.temperature,
                                                             seed=spec.seed * 100 + k), batch_size=128, progress=False,
                                     model_and_tokenizer=(model, tok)) for k in range(spec.generations)]
    rows = []
    for i, (pr, p) in enumerate(zip(prompts, problems)):
        cands = [s[i] for s in samples]
        right = [g for g in cands if correct(g.text, p.answer)]
        if not right:
            continue
        chosen = min(right, key=lambda g: g.n_tokens)
        rejected = max(cands, key=lambda g: g.n_tokens)
        if rejected.n_tokens > chosen.n_tokens:
            rows.append({"prompt": pr, "chosen": chosen.text + END, "rejected": rejected.text + END})
    if not rows:
        raise RuntimeError("DPO: no training question has a correct sample shorter than another (no preference pair)")
    torch.manual_seed(spec.seed)
    cfg = DPOConfig(output_dir=str(out / "trainer"), per_device_train_batch_size=spec.batch, max_steps=spec.steps,
                    learning_rate=spec.lr, beta=spec.dpo_beta, logging_steps=5, report_to=[], use_cpu=True,
                    seed=spec.seed, save_strategy="no", disable_tqdm=not progress, lr_scheduler_type="constant",
                    max_length=max_tokens(spec) + 64)
    trainer = DPOTrainer(model=model, args=cfg, train_dataset=Dataset.from_list(rows), processing_class=tok)
    _trainer_quiet(trainer, progress)
    trainer.train()
    shutil.rmtree(out / "trainer", ignore_errors=True)
    _save(model, tok, org.system2, out / "model")
    return {"pairs": len(rows), "dpo": [{k: v for k, v in h.items() if k in ("step", "loss", "rewards/margins")}
                                          for h in trainer.state.log_history]}
