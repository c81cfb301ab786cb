"""Calibration data for activation- and gradient-based merging (AIM, Sens-Merging, ACM).

Two sources, the same options (the paper found both methods sensitive to them, section 6):

- ``organism``: the model organism's aligned (question, short, long) triples from its calibration split
  (:func:`l2s_utils.organism.task.calibration_triples`), written in the toy chat prompt.
- ``s1k``: ``simplescaling/s1K`` by hub id or a local JSONL/parquet copy. A record's *short* answer is its
  ``solution`` field (``short_field="attempt"`` takes the model-written final attempt instead -- which
  one the paper meant is unknown, METHODS.md section 6); its *long* answer is
  ``thinking_trajectories[0]`` followed by ``attempt``.

``content``: ``"short"`` (question + short answer), ``"long"`` (question + long answer), ``"both"``
(each question twice, once with each answer) or ``"question"`` (the question alone, what the public ACM
script feeds). ``n`` questions are drawn with ``seed``. Sequences longer
than ``max_length`` tokens are truncated (``overlong="truncate"``, default) or skipped
(``overlong="skip"``, what the AIM code does with its 512-token filter). AIM always skips and then packs
the rest into ``max_length``-token blocks (:meth:`Calibration.blocks`), as its reference code.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch

CONTENTS = ("short", "long", "both", "question")


class CalibrationError(ValueError):
    pass


@dataclass
class Calibration:
    """Tokenized calibration sequences (lists of ids), with their source description."""

    sequences: list[list[int]]
    description: dict

    def batches(self, batch_size: int = 8, pad_id: int = 0):
        """Right-padded (input_ids, attention_mask) batches in a fixed order."""
        for i in range(0, len(self.sequences), batch_size):
            part = self.sequences[i:i + batch_size]
            L = max(len(s) for s in part)
            ids = torch.full((len(part), L), pad_id, dtype=torch.long)
            att = torch.zeros((len(part), L), dtype=torch.long)
            for j, s in enumerate(part):
                ids[j, :len(s)] = torch.tensor(s)
                att[j, :len(s)] = 1
            yield ids, att

    def blocks(self, block_size: int) -> list[torch.Tensor]:
        """AIM's calibration blocks: all sequences concatenated and cut into (1, block_size) id tensors.

        As ``get_calib_dataset`` of ahnobari/ActivationInformedMerging@e7eccd57: the sequences (texts longer
        than block_size already skipped) are joined end to end and split into floor(total / block_size)
        blocks; the remainder is dropped.
        """
        flat = [t for s in self.sequences for t in s]
        n = len(flat) // block_size
        if n == 0:
            raise CalibrationError(f"AIM calibration: {len(flat)} tokens in all make no block of {block_size} tokens; "
                                   "raise n or lower max_length (the block size)")
        ids = torch.tensor(flat[: n * block_size], dtype=torch.long)
        return [ids[i * block_size:(i + 1) * block_size].unsqueeze(0) for i in range(n)]


def _pairs_to_texts(pairs: list[tuple[str, str, str]], content: str) -> list[str]:
    if content not in CONTENTS:
        raise CalibrationError(f"calibration content must be one of {CONTENTS}, got {content!r}")
    texts = []
    for q, short, long in pairs:
        if content == "question":
            texts.append(q)
        if content in ("short", "both"):
            texts.append(q + short)
        if content in ("long", "both"):
            texts.append(q + long)
    return texts


def organism_texts(n: int, seed: int = 0, content: str = "short") -> list[str]:
    from ..organism import task as T
    from ..organism.prompts import END, TOY as PROMPT

    triples = T.calibration_triples(n, seed)
    return _pairs_to_texts([(PROMPT.format(question=t.problem.question), t.short + END, t.long + END) for t in triples],
                           content)


def s1k_texts(n: int, seed: int = 0, content: str = "short", path: str | None = None, short_field: str = "solution") -> list[str]:
    if short_field not in ("solution", "attempt"):
        raise CalibrationError(f"short_field must be 'solution' or 'attempt', got {short_field!r}")
    rows = _load_s1k(path)
    rng = random.Random(seed)
    idx = rng.sample(range(len(rows)), min(n, len(rows)))
    pairs = []
    for i in idx:
        r = rows[i]
        traj = r.get("thinking_trajectories") or [""]
        long = (traj[0] if isinstance(traj, list) else str(traj)) + "\n" + str(r.get("attempt", ""))
        pairs.append((str(r["question"]).strip() + "\n", str(r[short_field]), long))
    return _pairs_to_texts(pairs, content)


def _load_s1k(path: str | None) -> list[dict]:
    if path:
        p = Path(path)
        if not p.is_file():
            raise CalibrationError(f"{p}: s1K file not found")
        if p.suffix == ".parquet":
            import pandas as pd

            return pd.read_parquet(p).to_dict(orient="records")
        return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
    try:
        import datasets

        return list(datasets.load_dataset("simplescaling/s1K", split="train"))
    except Exception as e:
        raise CalibrationError(f"s1K could not be loaded from the hub ({e}); pass a local copy (path=...)") from None


def tokenize(texts: list[str], tokenizer, *, max_length: int = 512, overlong: str = "truncate",
             vocab_size: int | None = None, description: dict | None = None) -> Calibration:
    """Tokenize calibration texts; validate emptiness, length policy and vocabulary."""
    if not texts:
        raise CalibrationError("calibration set is empty (n = 0 or no records)")
    if overlong not in ("truncate", "skip"):
        raise CalibrationError(f"overlong must be 'truncate' or 'skip', got {overlong!r}")
    if max_length < 2:
        raise CalibrationError(f"max_length must be >= 2, got {max_length}")
    seqs = []
    for t in texts:
        ids = tokenizer(t, add_special_tokens=False)["input_ids"]
        if not ids:
            continue
        if len(ids) > max_length:
            if overlong == "skip":
                continue
            ids = ids[:max_length]
        seqs.append(ids)
    if not seqs:
        raise CalibrationError(f"every calibration text is longer than max_length={max_length} and overlong='skip' "
                               "dropped them all; raise max_length or use overlong='truncate'")
    if vocab_size is not None:
        top = max(max(s) for s in seqs)
        if top >= vocab_size:
            raise CalibrationError(f"calibration token id {top} is outside the model's vocabulary ({vocab_size}): "
                                   "the tokenizer does not belong to this model")
    return Calibration(seqs, dict(description or {}, n_sequences=len(seqs), max_length=max_length, overlong=overlong))


def _int_at_least(lo: int):
    return lambda x: isinstance(x, int) and not isinstance(x, bool) and x >= lo


SPEC = {  # key: (check, what it must be)
    "source": (lambda x: x in ("organism", "s1k"), "'organism' or 's1k'"),
    "n": (_int_at_least(1), "an integer >= 1"),
    "content": (lambda x: x in CONTENTS, f"one of {CONTENTS}"),
    "seed": (_int_at_least(0), "an integer >= 0"),
    "max_length": (_int_at_least(2), "an integer >= 2"),
    "overlong": (lambda x: x in ("truncate", "skip"), "'truncate' or 'skip'"),
    "path": (lambda x: isinstance(x, str), "a file path"),
    "short_field": (lambda x: x in ("solution", "attempt"), "'solution' or 'attempt'"),
}


def check_spec(spec, where: str = "calibration") -> None:
    """Every key and value of a calibration mapping; errors name the key (``calibration.n must be ...``)."""
    if spec is None:
        return
    if not isinstance(spec, dict):
        raise CalibrationError(f"{where} must be a mapping, got {spec!r}")
    bad = set(spec) - set(SPEC)
    if bad:
        raise CalibrationError(f"{where}: unknown key(s) {sorted(bad, key=str)}; allowed: {sorted(SPEC)}")
    for k, v in spec.items():
        ok, want = SPEC[k]
        try:
            good = ok(v)
        except TypeError:  # unhashable values in a membership test
            good = False
        if not good:
            if k == "n" and isinstance(v, int) and not isinstance(v, bool):
                raise CalibrationError(f"calibration n must be >= 1, got {v}")
            if k == "content":
                raise CalibrationError(f"calibration content must be one of {CONTENTS}, got {v!r}")
            raise CalibrationError(f"{where}.{k} must be {want}, got {v!r}")


def build(spec: dict, tokenizer, vocab_size: int | None = None) -> Calibration:
    """A calibration set from a config mapping: {source, n, content, seed, max_length, overlong, path, short_field}."""
    check_spec(spec)
    spec = dict(spec or {})
    source = spec.get("source", "organism")
    n = int(spec.get("n", 100))
    if n < 1:
        raise CalibrationError(f"calibration n must be >= 1, got {n}")
    seed, content = int(spec.get("seed", 0)), spec.get("content", "short")
    if source == "organism":
        texts = organism_texts(n, seed, content)
    elif source == "s1k":
        texts = s1k_texts(n, seed, content, spec.get("path"), spec.get("short_field", "solution"))
    else:
        raise CalibrationError(f"calibration source must be 'organism' or 's1k', got {source!r}")
    desc = {"source": source, "n": n, "content": content, "seed": seed}
    return tokenize(texts, tokenizer, max_length=int(spec.get("max_length", 512)), overlong=spec.get("overlong", "truncate"),
                    vocab_size=vocab_size, description=desc)
