"""The organism's training texts: what the tokenizer, the base, System 1 and System 2 are trained on.

Everything here is built from :mod:`task` (problems of the train split and the two trace writers) in the
chat format of :mod:`prompts`; :mod:`training` turns the texts into batches and weights. Changing the task's
trace format touches ``task.py`` (and this file where the pretraining text imitates a trace), then
``ORGANISM_VERSION`` in ``training.py`` and a retrain.

- :func:`tokenizer_corpus`   the tokenizer's training texts
- :func:`pretrain_texts`     the base's documents: :func:`arithmetic_texts` and whole worked solutions
- :func:`arithmetic_texts`   facts, worked chains, state chains, column work, two-digit operations, copy drills
- :func:`copy_drill`         one copying exercise
- :func:`sft_examples`       (prompt, response) pairs of the System 1 and System 2 fine-tunes
"""

from __future__ import annotations

import random

from . import task as T
from .prompts import END, TOY as PROMPT

# Long solutions seen before System 2's fine-tune (pretraining, System 1's share) carry no slips: a fact
# written wrong ("7+8=16. Wait, that is wrong. 7+8=15.") taught System 1, which answers in the short
# style and never corrects itself, to write facts off by one (v12 before this change, seeds 0 and 1: level 1
# at 65% and 71%, errors like "1+8=10"). Slipping and correcting oneself is what System 2's fine-tune adds.
# v17: pretraining's long solutions carry some of every kind of reflection (task.LONG_BASE); System 1's long
# traces only the needed checks, half the time (task.LONG_S1); System 2's fine-tune adds the redundant ones.
NO_SLIPS = T.NO_SLIPS


def tokenizer_corpus(seed: int) -> list[str]:
    """The texts the BPE tokenizer is trained on: prompts and both trace styles, 150 train problems per level."""
    rng = random.Random(f"{seed}-tokenizer")
    out = []
    for level in T.LEVELS:
        for _ in range(150):
            p = T.train_problem(level, rng)
            out += [PROMPT.format(question=p.question), T.system1_trace(p), T.system2_trace(p, rng)]
    return out


def pretrain_texts(n: int, seed: int, solution_share: float = 0.0) -> list[str]:
    """``n`` pretraining documents: arithmetic text, and worked solutions in both styles.

    A share ``solution_share`` of the documents (drawn independently) are whole worked solutions in the
    chat format of the fine-tunes (prompt, response, ``<|im_end|>``; loss on every token), half in the
    System 1 style and half in the System 2 style (``<think>`` ... reflection ... ``</think>``). A math
    base model has seen both terse and long worked solutions before any fine-tuning (Qwen2.5-Math was
    pretrained on CoT data); the fine-tunes then mostly *select* a style rather than build new circuits,
    which keeps System 1 and System 2 close in weight space. The other documents are
    :func:`arithmetic_texts`.
    """
    base = arithmetic_texts(n, seed)
    if not solution_share:
        return base
    rng = random.Random(f"{seed}-pretrain-x")
    out = []
    for t in base:
        if rng.random() < solution_share:
            p = T.train_problem(rng.randint(1, 5), rng)
            trace = T.system2_trace(p, rng, T.LONG_BASE) if rng.random() < 0.5 else T.system1_trace(p)
            out.append(PROMPT.format(question=p.question) + trace + END)
        else:
            out.append(t)
    return out


def arithmetic_texts(n: int, seed: int) -> list[str]:
    """Arithmetic text, as a math base model would have seen it.

    - 30% sheets of 1-8 single-digit facts (a+b=c and c-b=a with c <= 18, and the carries x+1: :func:`single_fact`;
      v18: one fact per document left the facts ~2% of the tokens, and System 1 wrote level-1 facts off by one on
      some draws: level 1 at 58.8% on seed 0);
    - 3% worked chains ("37+48-15: 37+48=85. 85-15=70.");
    - 27% state-carrying chains in the System 2 header format ("37+48-15+9: 37+48-15+9;
      +48-15+9, now 85-15; -15+9, now 70+09; 79.", operands zero-padded to one width after "now");
    - 30% column work for one operation ("47+38. Units: 7+8=15. Tens: 4+3=7. Carry 1: 7+1=8. So 47+38=85.";
      v18: 11% before, and 7% of two- and three-digit operations written at once, "245+678=923.", now gone:
      System 2 fetched the wrong digit of three-digit operands on some draws, level 4 at 12.5% on one);
    - 10% copy drills (:func:`copy_drill`).

    The worked text teaches the copying of operands and the column steps that the fine-tuned formats use,
    as a math base model has seen worked solutions before any fine-tuning.
    """
    rng = random.Random(f"{seed}-pretrain")
    out = []
    while len(out) < n:
        r = rng.random()
        if r < 0.30:
            out.append(" ".join(single_fact(rng) for _ in range(rng.randint(1, 8))))
        elif r < 0.33:
            p = T.train_problem(rng.randint(1, 5), rng)
            steps = " ".join(f"{x}{o}{y}={z}." for x, o, y, z in T._chain(p))
            out.append(f"{p.question}: {steps}")
        elif r < 0.60:
            p = T.train_problem(rng.randint(2, 5), rng)
            parts, prev = [], ""
            for i, (x, o, y, _) in enumerate(T._chain(p), 1):
                tail = T.remaining(p, i)
                parts.append(f"{x}{o}{y}{tail}" if i == 1 else f"{prev}{o}{y}{tail}, now {T.aligned(x, o, y)}")
                prev = f"{o}{y}"
            out.append(f"{p.question}: {'; '.join(parts)}; {p.answer}.")
        elif r < 0.90:
            p = T.train_problem(rng.randint(2, 5), rng)
            x, o, y, z = rng.choice(T._chain(p))
            facts = " ".join(f"{lab} {a}{op}{b}={c}." for lab, a, op, b, c in T.column_steps(x, o, y))
            out.append(f"{T.aligned(x, o, y)}. {facts} So {x}{o}{y}={z}.")
        else:
            out.append(copy_drill(rng))
    return out


def single_fact(rng: random.Random) -> str:
    """One single-digit fact: a+b=c or c-b=a (c <= 18), or a carry x+1 (15%)."""
    if rng.random() < 0.15:
        x = rng.randint(0, 18)
        return f"{x}+1={x + 1}."
    a, b = rng.randint(0, 9), rng.randint(0, 9)
    return f"{a}+{b}={a + b}." if rng.random() < 0.5 else f"{a + b}-{b}={a}."


def copy_drill(rng: random.Random) -> str:
    """A copying exercise on a random +/- chain (2-7 operations, operands 1..99 or 1..999, nothing computed).

    Half repeat the chain three times ("13-4-56+90 | 13-4-56+90 | 13-4-56+90"); half peel it one
    operation at a time ("73+33+64-61: take +33+64-61; take +64-61; take -61."). Real base
    models have copied text countless times before any fine-tuning; here the copying that the long traces
    need (an operation and the ones after it, a whole step's length back) forms early in pretraining
    instead of at a draw-dependent time (v15; measured with teacher-forced probes on scale s).
    """
    while True:  # a chain that is not a calibration or test question (nothing there is ever seen in training)
        hi = 99 if rng.random() < 0.5 else T.MAX_VALUE
        ops = [str(rng.randint(1, hi))] + [rng.choice("+-") + str(rng.randint(1, hi)) for _ in range(rng.randint(2, 7))]
        chain = "".join(ops)
        if T.split_of(chain) == "train":
            break
    if rng.random() < 0.5:
        return f"{chain} | {chain} | {chain}"
    parts = [f"take {''.join(ops[i:])}" for i in range(1, len(ops))]
    return f"{chain}: " + "; ".join(parts) + "."


def sft_examples(kind: str, n_per_level: int, seed: int, long_share: float = 0.0) -> list[tuple[str, str]]:
    """(prompt, response) pairs from the train split; kind = 'system1' or 'system2'.

    System 1's data holds a share ``long_share`` of long traces (drawn independently per example): its
    fine-tune then learns a bounded preference for the short style instead of an ever-growing one (see
    :class:`Spec`). System 2's data is all long traces.
    """
    if kind not in ("system1", "system2"):
        raise ValueError(f"kind must be 'system1' or 'system2', got {kind!r}")
    probs = T.make_problems("train", n_per_level, seed, unique=False)
    rng = random.Random(f"{seed}-{kind}-traces")
    out = []
    for p in probs:
        if kind == "system1":
            resp = T.system2_trace(p, rng, T.LONG_S1) if long_share and rng.random() < long_share else T.system1_trace(p)
        else:
            resp = T.system2_trace(p, rng)
        out.append((PROMPT.format(question=p.question), resp + END))
    return out
