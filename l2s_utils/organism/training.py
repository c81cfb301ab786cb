"""The model organism: a miniature System 1 / System 2 pair trained here, deterministically, on CPU.

Lineage as in the paper (Qwen2.5-Math -> DeepSeek-R1-Distill-Qwen):

    base      pretraining on arithmetic text and worked solutions in both styles (chat format, no slips)
    system1   = SFT of base on short traces, 25% long ones with only the needed checks (a bounded short preference) ~ Qwen2.5-Math
    system2   = SFT of system1 on long traces that overthink: redundant checks, re-examinations, slips and corrections
                                                                              ~ R1-Distill, fine-tuned from it

so the task vector is system2 - system1, as in the paper. Models are ``Qwen2ForCausalLM`` saved with
``save_pretrained`` (safetensors) next to a byte-level BPE tokenizer built with the ``tokenizers``
library in exactly the pipeline ``Qwen2Tokenizer`` rebuilds (so ``AutoTokenizer`` round-trips it and
vLLM can serve it); digits are single tokens, ``<think>``/``</think>`` are added tokens. Every head is
32 wide, a size vLLM serves.

Every knob is in :data:`SCALES` (architecture + training budget). Two hashes name a build:
- the *recipe* (:func:`recipe_hash`): the spec, the seed and ``ORGANISM_VERSION`` -- what the organism is;
- the *environment* (:func:`environment`): library versions, the CPU's kernels, the thread count -- what
  else decides the last bits of the weights (floating-point sums differ between CPUs).
A local build is cached under ``<cache>/organism/<scale>-<spec_hash>`` (recipe + environment). The
trained ladder ships in ``data/organism/<scale>-<recipe>`` (sha256 per file in its manifest) and is used
when the recipe matches and no local build exists, so a newcomer's book does not wait for training;
``L2S_ORGANISM_FROM_SCRATCH=1`` (``make book-from-scratch``) trains here instead.
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
from dataclasses import dataclass
from pathlib import Path

import torch

from . import corpus as C
from . import task as T
from .prompts import END

ORGANISM_VERSION = "18"  # bump when the task, traces or training loop change meaning
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
THINK = ["<think>", "</think>"]


@dataclass(frozen=True)
class Spec:
    """Architecture and training budget of one organism scale (all knobs visible here).

    Lineage: ``base`` = ``pretrain_steps`` of pretraining rows of whole documents (:func:`corpus.pretrain_texts`, a share
    ``solution_share`` of whole worked solutions in both styles); ``system1`` = base + ``s1_steps`` of
    SFT at ``s1_lr`` on short traces with a share ``s1_long_share`` of long ones; ``system2`` = system1 +
    ``s2_steps`` of SFT on long traces at ``s2_lr``. Low SFT learning rates keep the fine-tunes near their
    parent, as in the real pair.

    Why System 1 sees some long traces (v12): trained on the short style only, its preference for that
    style grows without bound (first-token log-odds of ``<think>`` about -9 after 300 steps), System 2's
    fine-tune must undo all of it, and on the straight path between them the short style -- with System
    1's accuracy -- holds until alpha ~0.5: an accuracy valley of 15-25 points under the line joining
    the two accuracies (measured, v11), which the real pair does not have. With a share ``s1_long_share``
    of long traces, mixed into every batch, the preference settles at its calibrated value,
    log(0.25 / 0.75) = -1.1 (measured, v13 seed 0: mean -1.44, at most -0.64 over the test prompts, so
    greedy decoding always answers in the short style), and the long style takes over early on the path
    (3% of the prompts at alpha 0.1, all at 0.3; accuracy barrier 2.1 points). With length-bucketed
    batches (each all short or all long) it did not settle at the calibrated value (seed 2: 40% long traces
    gave -1.9 instead of -0.4, 15% gave -3.9 instead of -1.7), and the switch moved with it (alpha ~0.25
    to ~0.4; barriers 3 to 16 points).
    Pretraining (v17) takes 2,000 steps of 12 packed rows of 448 tokens (:func:`pack_rows`; v16 took 2,400 steps of
    384-token rows filled with whole documents, a quarter of them padding). A step costs in proportion to its tokens;
    a third fewer pretraining tokens with the same 2,000 updates (rows of 288 tokens, "v19a"; 8 rows a step, "v19b")
    fit the main pair's 10-minute budget but lost System 2 on one of two seeds each (38.7% and 22.2%: the redundant
    re-examination miscopied the last step's operands; with 70% worked solutions in the mix, "v19e", one of three), and
    fewer updates (v17i, 1,400 steps) failed three bars
    (``benchmarks/results/organism-explore.jsonl``; CHANGELOG.md). Everything that makes System 2
    accurate -- the single-digit facts, the column steps, copying each operation from one step header to the next
    -- is learned during pretraining; the copy drills and the header format that continues the operation just
    written (v15) make the copy form early; the history of these choices is in CHANGELOG.md.
    System 2's fine-tune is short and gentle (v17: 400 steps at 3e-4; v16 600 at 5e-4): it adds the redundant
    reflection (:class:`task.S2Style`) to a base that has seen some of it and to a System 1 that writes long
    solutions with only the needed checks, so the task vector is small and a merge between the two can keep the
    column work while dropping the redundant checks.
    Attention is full multi-head (``kv_heads == heads``): with one shared key/value head the operand
    copying that the long traces need was learned on some seeds and not on others (v11).
    """

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    pretrain_steps: int = 2000
    pretrain_len: int = 448
    solution_share: float = 0.5
    batch: int = 12
    lr: float = 5e-3
    s1_steps: int = 300
    s1_lr: float = 5e-4
    s1_long_share: float = 0.25
    s2_steps: int = 400
    s2_lr: float = 3e-4
    sft_batch: int = 24
    warmup: int = 30
    seed: int = 0
    vocab_size: int = 400  # BPE vocabulary (256 bytes + merges + special tokens)


SCALES: dict[str, Spec] = {
    # CI's size: seconds; every head is 32 wide so that vLLM can serve every scale
    "micro": Spec(hidden=32, layers=1, heads=1, kv_heads=1, intermediate=64, pretrain_steps=20, pretrain_len=128,
                  s1_steps=15, s2_steps=15, batch=8, sft_batch=8, warmup=5),
    # the ladder (>= 10x in parameters) shares one training recipe (the Spec defaults); only the width changes.
    # Three layers at every scale: the operation copy of the long traces (an induction continuation) was not
    # learned by the two-layer scales of v14 (xs, sm: System 2 no better than System 1).
    # The pretraining learning rate falls as 1 / width (5e-3 x 64 / hidden, as for Adam under muP): at 5e-3 the
    # 96-wide scale learned the operation copy at a draw-dependent step (600 to ~2,000 of 2,400), at 3.3e-3
    # by step 600-800 in the draws measured.
    # v17: the ladder is xxs..m (>= 10x in parameters); l (1.9M) trains in ~40 minutes on 2 cores under the v17
    # recipe, past the ladder's one-hour budget together with the others, and is kept out of it (build it by name)
    "xxs": Spec(hidden=32, layers=3, heads=1, kv_heads=1, intermediate=96, lr=1e-2),         # 0.05M
    "xs": Spec(hidden=64, layers=3, heads=2, kv_heads=2, intermediate=128, lr=5e-3),        # 0.17M
    "s": Spec(hidden=96, layers=3, heads=3, kv_heads=3, intermediate=256, lr=5e-3 * 2 / 3),  # 0.41M (the main pair)
    "m": Spec(hidden=128, layers=3, heads=4, kv_heads=4, intermediate=384, lr=2.5e-3),       # 0.74M
    "l": Spec(hidden=192, layers=3, heads=6, kv_heads=6, intermediate=768, lr=5e-3 / 3),     # 1.92M
}
MAIN_SCALE = "s"
LADDER = ("xxs", "xs", "s", "m")


SHARD_SIZE = "4MB"  # largest weights file of a saved organism stage (the 1.9M scale is 7.7 MB in float32)
# fixed: the thread count changes float reductions, hence the weights (part of the environment hash); an
# experiment that trains two organisms side by side on 2 cores sets L2S_TRAIN_THREADS=1 (another environment)
TRAIN_THREADS = int(os.environ.get("L2S_TRAIN_THREADS", "2"))
PRETRAIN_DOCS_PER_STEP = 40  # 80,000 documents for the 2,000 pretraining steps (each packed row drawn ~1.1 times; v17: 20, ~2.5 times)
SHIPPED_DIR = Path(__file__).resolve().parents[2] / "data" / "organism"


def default_cache() -> Path:
    return Path(os.environ.get("L2S_CACHE_DIR", Path(__file__).resolve().parents[2] / "cache"))


# ---------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------


def build_tokenizer(out_dir: Path, seed: int = 0, vocab_size: int = 400):
    """Train the byte-level BPE (Qwen2 pre-tokenizer, NFC, ByteLevel) and save it as a HF tokenizer."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, trainers
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tok = Tokenizer(BPE(unk_token=None, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False,
                        byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(C.tokenizer_corpus(seed), trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=END, pad_token="<|endoftext|>",
                                   unk_token=None, padding_side="left")
    fast.save_pretrained(out_dir)
    return fast


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


def pack_rows(tok, texts: list[str], length: int) -> torch.Tensor:
    """Pretraining rows: the documents tokenized, each followed by ``<|endoftext|>``, concatenated and cut into
    rows of ``length`` tokens (no padding; a document may continue in the next row). Loss on every token.

    v17 (v16 filled rows greedily with whole documents and padded the rest: ~25% padding at 384 tokens):
    packing removes the padding and the attention mask, so a step costs less and sees more tokens."""
    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    ids: list[int] = []
    for doc in tok(texts)["input_ids"]:  # one batched call (the same ids as one call per document, ~2x faster)
        ids += doc + [eos]
    n = len(ids) // length
    return torch.tensor(ids[:n * length]).view(n, length)


def _doc_batches(tok, texts: list[str], length: int, batch: int, steps: int, seed: int):
    """Batches of packed rows (:func:`pack_rows`), drawn at random with replacement; no attention mask."""
    x = pack_rows(tok, texts, length)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (batch,), generator=g)
        yield x[idx], None, x[idx]


def pad_pairs(enc: list[tuple[list[int], list[int]]], pad: int):
    """Right-padded (input ids, attention mask, labels) for tokenized (prompt, response) pairs; labels are
    -100 outside the response (loss on the response only)."""
    L = max(len(p) + len(r) for p, r in enc)
    x = torch.full((len(enc), L), pad)
    att = torch.zeros((len(enc), L), dtype=torch.long)
    lab = torch.full((len(enc), L), -100)
    for j, (p, r) in enumerate(enc):
        n = len(p) + len(r)
        x[j, :n] = torch.tensor(p + r)
        att[j, :n] = 1
        lab[j, len(p):n] = torch.tensor(r)
    return x, att, lab


def _sft_batches(tok, pairs: list[tuple[str, str]], batch: int, steps: int, seed: int, mixed: bool = False):
    """Batches of (prompt, response) pairs, right-padded; loss on the response tokens only.

    Length-bucketed by default (little padding). ``mixed``: every epoch a fresh random partition instead,
    so that each batch holds both styles in their proportions -- with length buckets a batch is all
    short or all long, the style preference swings with every batch and ends wherever the last few
    batches left it instead of settling at its calibrated value (measured on seed 2: first-token
    log-odds of ``<think>`` -1.9 for 40% long traces, where log(0.4 / 0.6) = -0.4).
    """
    enc = list(zip(tok([p for p, _ in pairs])["input_ids"], tok([r for _, r in pairs])["input_ids"]))
    rng = random.Random(seed)
    order = sorted(range(len(enc)), key=lambda i: len(enc[i][0]) + len(enc[i][1]))
    groups = [order[i:i + batch] for i in range(0, len(order), batch)]
    step = 0
    while step < steps:
        if mixed:
            rng.shuffle(order)
            groups = [order[i:i + batch] for i in range(0, len(order), batch)]
        else:
            rng.shuffle(groups)
        for grp in groups:
            if step >= steps:
                break
            step += 1
            yield micro_batches([enc[i] for i in grp], tok.pad_token_id)


def micro_batches(enc: list[tuple[list[int], list[int]]], pad: int) -> list[tuple]:
    """One SFT batch as at most two micro-batches of similar length (sorted, split where the padded size is
    smallest): a mixed batch of System 1 (a quarter long traces) padded to its longest trace is ~3x the tokens
    it holds. :func:`train` accumulates them, weighting each by its share of the response tokens, so the step
    is the batch's mean token loss, as one padded batch gives it (up to float rounding)."""
    enc = sorted(enc, key=lambda e: len(e[0]) + len(e[1]))
    n = [len(p) + len(r) for p, r in enc]
    k = min(range(1, len(enc) + 1), key=lambda k: k * n[k - 1] + (len(enc) - k) * n[-1] * (k < len(enc)))
    return [pad_pairs(part, pad) for part in (enc[:k], enc[k:]) if part]


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


def new_model(spec: Spec, vocab: int, tok):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(
        vocab_size=vocab, hidden_size=spec.hidden, intermediate_size=spec.intermediate,
        num_hidden_layers=spec.layers, num_attention_heads=spec.heads, num_key_value_heads=spec.kv_heads,
        max_position_embeddings=1024, rope_theta=10000.0, tie_word_embeddings=False,
        bos_token_id=None, eos_token_id=[tok.convert_tokens_to_ids(END), tok.convert_tokens_to_ids("<|endoftext|>")],
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(spec.seed)
    return Qwen2ForCausalLM(cfg)


def train(model, batches, steps: int, lr: float, warmup: int, desc: str, progress: bool = True) -> list[float]:
    """AdamW, linear warmup then cosine decay to 10%, grad-norm clip 1.0. Returns the loss per step."""
    from tqdm.auto import tqdm

    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps)))))
    losses = []
    bar = tqdm(total=steps, desc=desc, disable=not progress, leave=False)
    for batch in batches:
        parts = batch if isinstance(batch, list) else [batch]  # a list: micro-batches of one step (micro_batches)
        counts = [int((lab[:, 1:] != -100).sum()) for _, _, lab in parts]
        loss = 0.0
        for (x, att, lab), c in zip(parts, counts):
            out = model(input_ids=x, attention_mask=att, labels=lab)
            (out.loss * (c / sum(counts))).backward()
            loss += out.loss.detach().item() * c / sum(counts)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss)
        bar.update(1)
        if len(losses) % 25 == 0:
            bar.set_postfix(loss=f"{sum(losses[-25:]) / 25:.3f}")
    bar.close()
    model.eval()
    return losses


def recipe_hash(spec: Spec) -> str:
    """What the organism *is*: the spec (architecture, budget, seed) and the task/trace/training code version."""
    blob = json.dumps({"spec": dataclasses.asdict(spec), "version": ORGANISM_VERSION,
                       "docs_per_step": PRETRAIN_DOCS_PER_STEP,
                       "levels": {k: dataclasses.asdict(v) for k, v in T.LEVELS.items()}}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def environment() -> dict:
    """What else decides the trained weights bit for bit: library versions, CPU kernels, thread count."""
    import platform

    import tokenizers
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": TRAIN_THREADS,
            "machine": platform.machine()}


def spec_hash(spec: Spec) -> str:
    """Cache key of a local build: the recipe and the environment (a build elsewhere may differ in the last bits)."""
    blob = json.dumps({"recipe": recipe_hash(spec), "env": environment()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


@dataclass
class Organism:
    """Paths of one built organism scale; ``source`` is "trained" (built here) or "shipped" (data/organism)."""

    scale: str
    root: Path
    base: Path
    system1: Path
    system2: Path
    manifest: dict
    source: str = "trained"

    @property
    def n_params(self) -> int:
        return int(self.manifest["n_params"])


def _organism(scale: str, root: Path, manifest: dict, source: str) -> Organism:
    return Organism(scale, root, root / "base", root / "system1", root / "system2", manifest, source)


def _save(model, tok, path: Path) -> None:
    from transformers import GenerationConfig

    # shards of at most 4 MB: every file of the shipped ladder stays small enough for a plain git repository
    model.save_pretrained(path, safe_serialization=True, max_shard_size=SHARD_SIZE)
    tok.save_pretrained(path)
    GenerationConfig(eos_token_id=model.config.eos_token_id, pad_token_id=tok.pad_token_id, do_sample=False).save_pretrained(path)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file of a built organism (relative paths), the manifest excluded."""
    return {str(f.relative_to(root)): _sha256(f) for f in sorted(root.rglob("*"))
            if f.is_file() and not f.name.startswith(".") and f.name not in ("manifest.json", "premise.json")}


class ShippedOrganismError(ValueError):
    """A shipped organism whose files do not match their recorded sha256."""


def verified_manifest(root: Path, what: str, error=ValueError) -> dict | None:
    """The manifest of shipped weights in ``root`` once every file matches its recorded sha256; None if ``root`` has
    no manifest. Files that do not match are an ``error`` naming them (shipped weights are never silently used)."""
    mpath = root / "manifest.json"
    if not mpath.is_file():
        return None
    m = json.loads(mpath.read_text())
    want = m.get("sha256", {})
    got = file_hashes(root)
    if not want or got != want:
        bad = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
        raise error(f"shipped {what} {root} does not match its manifest (files: {', '.join(bad[:5])}); "
                    "restore it with git or build from scratch (L2S_ORGANISM_FROM_SCRATCH=1)")
    return m


def shipped(scale: str, spec: Spec) -> Organism | None:
    """The organism shipped in ``data/organism`` for this recipe, verified file by file; None if there is none.

    A shipped organism whose files do not match their recorded sha256 is an error (never silently used).
    """
    root = SHIPPED_DIR / f"{scale}-{recipe_hash(spec)}"
    m = verified_manifest(root, "organism", ShippedOrganismError)
    return None if m is None else _organism(scale, root, m, "shipped")


def build(scale: str = MAIN_SCALE, *, cache: Path | None = None, force: bool = False, progress: bool = True,
          spec: Spec | None = None, seed: int | None = None, from_scratch: bool | None = None,
          base_from: Path | None = None) -> Organism:
    """Build (or load) the base / System 1 / System 2 checkpoints of one scale.

    Order: a local build of this recipe and environment (``<cache>/organism/<scale>-<hash>``); else the
    weights shipped in ``data/organism`` for this recipe (sha256-verified), unless ``from_scratch`` (or
    the environment variable ``L2S_ORGANISM_FROM_SCRATCH=1``) or ``force``; else train here (2 threads,
    deterministic for a given environment) and cache.
    """
    if spec is None:
        if scale not in SCALES:
            raise ValueError(f"unknown organism scale {scale!r}; known: {', '.join(SCALES)}")
        spec = SCALES[scale]
    if seed is not None:
        spec = dataclasses.replace(spec, seed=int(seed))
    if from_scratch is None:
        from_scratch = os.environ.get("L2S_ORGANISM_FROM_SCRATCH", "").lower() not in ("", "0", "false", "no")
    root = (cache or default_cache()) / "organism" / f"{scale}-{spec_hash(spec)}"
    manifest_path = root / "manifest.json"
    if manifest_path.is_file() and not force:
        return _organism(scale, root, json.loads(manifest_path.read_text()), "trained")
    if not (force or from_scratch):
        org = shipped(scale, spec)
        if org is not None:
            return org
    with training_threads():
        return _train(scale, spec, root, progress, base_from)


@contextlib.contextmanager
def training_threads():
    """Train with ``TRAIN_THREADS`` threads (part of the build's environment, hence of its cache key) whatever the
    calling process uses; restores its thread count after. The organism and the trained baselines train under it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(TRAIN_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


FINE_TUNE_FIELDS = ("s1_steps", "s1_lr", "s1_long_share", "s2_steps", "s2_lr", "sft_batch")  # not read by pretraining


def same_base(spec: Spec, other: dict) -> bool:
    """Whether a build with manifest ``other`` pretrained exactly the base that ``spec`` pretrains here: the same
    fields apart from the fine-tunes' (:data:`FINE_TUNE_FIELDS`), the same organism version and environment."""
    mine = {k: v for k, v in dataclasses.asdict(spec).items() if k not in FINE_TUNE_FIELDS}
    theirs = {k: v for k, v in other.get("spec", {}).items() if k not in FINE_TUNE_FIELDS}
    return (mine == theirs and other.get("organism_version") == ORGANISM_VERSION
            and other.get("environment") == environment())


def _train(scale: str, spec: Spec, root: Path, progress: bool, base_from: Path | None = None) -> Organism:
    """Train tokenizer, base, System 1 and System 2 into ``root``. ``base_from`` (exploration of the fine-tunes,
    ``benchmarks/organism_explore.py --base-from``): a build whose base is the one this spec pretrains
    (:func:`same_base`, else ValueError); its base is taken instead of pretraining it again (the build is the
    same, pretraining being deterministic on one machine; the manifest names where the base came from)."""
    other = None
    if base_from is not None:
        other = json.loads((Path(base_from) / "manifest.json").read_text())
        if not same_base(spec, other):
            raise ValueError(f"{base_from} pretrained another base (spec, organism version or environment differ)")
    tmp = root.with_name(root.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    t0 = time.perf_counter()
    tok = build_tokenizer(tmp / "tokenizer", spec.seed, spec.vocab_size)
    vocab = len(tok)
    model = new_model(spec, vocab, tok)
    n_params = sum(p.numel() for p in model.parameters())
    timings, losses = {}, {}

    t = time.perf_counter()
    if other is not None:
        from safetensors.torch import load_file

        model.load_state_dict({k: v for f in sorted((Path(base_from) / "base").glob("*.safetensors"))
                               for k, v in load_file(f).items()})
        shutil.copytree(Path(base_from) / "base", tmp / "base")
        losses["base"] = other["losses"]["base"]
        timings["base_s"] = other["timings"]["base_s"]
        timings["base_from"] = str(base_from)
    else:
        texts = C.pretrain_texts(PRETRAIN_DOCS_PER_STEP * spec.pretrain_steps, spec.seed, spec.solution_share)
        batches = _doc_batches(tok, texts, spec.pretrain_len, spec.batch, spec.pretrain_steps, spec.seed)
        losses["base"] = train(model, batches, spec.pretrain_steps, spec.lr, spec.warmup, f"{scale}: base", progress)
        _save(model, tok, tmp / "base")
        timings["base_s"] = time.perf_counter() - t

    for stage, kind, steps, lr in (("system1", "system1", spec.s1_steps, spec.s1_lr),
                                   ("system2", "system2", spec.s2_steps, spec.s2_lr)):
        t = time.perf_counter()
        pairs = C.sft_examples(kind, max(40, steps * spec.sft_batch // len(T.LEVELS)), spec.seed,
                             spec.s1_long_share if kind == "system1" else 0.0)
        batches = _sft_batches(tok, pairs, spec.sft_batch, steps, spec.seed + (1 if kind == "system1" else 2),
                               mixed=kind == "system1" and spec.s1_long_share > 0)
        losses[stage] = train(model, batches, steps, lr, spec.warmup, f"{scale}: {stage}", progress)
        _save(model, tok, tmp / stage)
        timings[f"{stage}_s"] = time.perf_counter() - t

    timings["total_s"] = time.perf_counter() - t0 + (timings["base_s"] if other is not None else 0.0)
    shutil.rmtree(tmp / "tokenizer")  # every stage directory carries its own copy
    manifest = {"scale": scale, "spec": dataclasses.asdict(spec), "recipe": recipe_hash(spec), "hash": spec_hash(spec),
                "organism_version": ORGANISM_VERSION, "environment": environment(), "n_params": n_params,
                "vocab": vocab, "timings": timings, "threads": torch.get_num_threads(),
                "final_loss": {k: sum(v[-20:]) / min(20, len(v)) for k, v in losses.items()},
                "first_loss": {k: v[0] for k, v in losses.items()}, "losses": losses,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "sha256": file_hashes(tmp)}
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
    if root.exists():
        shutil.rmtree(root)
    os.replace(tmp, root)
    return _organism(scale, root, manifest, "trained")


def ship(org: Organism, dest: Path | None = None) -> Path:
    """Copy a trained organism into ``data/organism/<scale>-<recipe>`` (what ``make organism-ship`` does).

    Other recipes of the same scale are removed (the repository keeps one set of weights per scale).
    """
    if org.source != "trained":
        raise ValueError(f"{org.root} is already a shipped organism; ship a trained one (--from-scratch)")
    target = (dest or SHIPPED_DIR) / f"{org.scale}-{org.manifest['recipe']}"
    return install_shipped(target, f"{org.scale}-*",
                           lambda tmp: shutil.copytree(org.root, tmp, ignore=shutil.ignore_patterns("premise.json")))


def install_shipped(target: Path, siblings: str, fill) -> Path:
    """Write shipped weights into ``target`` whole or not at all: ``fill(tmp)`` fills a fresh ``<target>.partial``,
    then every other directory matching ``siblings`` beside it is removed (one set of weights per name) and the
    partial one takes ``target``'s place."""
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        fill(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in target.parent.glob(siblings):
        if old != tmp:
            shutil.rmtree(old)
    os.replace(tmp, target)
    return target
