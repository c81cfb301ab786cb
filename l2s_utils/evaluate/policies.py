"""Decoding-time long-to-short policies on any backend, in phases: budget forcing (s1) and stop scaling (TS).

**Budget forcing** (Muennighoff et al. 2025, "s1: Simple test-time scaling", arXiv 2501.19393; code
``simplescaling/s1``) controls how long a model thinks without touching its weights:

- **maximum** ``think_budget`` B: the thinking may take at most B tokens; when it has not ended by then, the
  end-of-thinking delimiter is forced and the model writes its answer after it;
- **minimum** ``think_min`` M: when the model ends its thinking before M tokens, the delimiter is dropped and
  "Wait" appended, and the thinking goes on (s1 does this to *extend* thinking).

**Temperature scaling of the stopping point** (TS, after Zhang et al. 2025, "Making Small Language Models Efficient
Reasoners", arXiv 2505.07961): while the model thinks, the probability of the end-of-thinking token is multiplied
by ``stop_scale`` s (its logit raised by log s), so the thinking ends earlier (s > 1) or later (s < 1); the answer
after it is decoded as usual. The paper's exact formula is not public; this is the documented idea.

As in s1's code, the backend runs in phases over text: a thinking phase that stops at the delimiter (or at the
budget), then another thinking phase (after "Wait") or the answer phase, each from the prompt and everything
written so far. It therefore works the same on both backends. What is ours: the string forced when the budget is
spent is ``"\\n</think>\\nThe answer is"`` (the organism's format; s1 forces ``"<|im_start|>answer\\nFinal
Answer:"``), so that the answer follows at once instead of more thinking; the phases re-tokenize the text written
so far (a forced string can tokenize differently from a generated one).

A response that never opens a ``<think>`` block (System 1's short style) is not budgeted: it is written to its
end. A prompt that opens the block itself (DeepSeek-R1's chat template ends with ``<think>\\n``: the ``r1``
prompt style) counts as opened, so its response is budgeted from its first token. ``n_tokens`` counts every
generated and every forced token.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from .sampling import THINK_END, Generation, Sampling

THINK_START = "<think>"
FORCED_END = f"\n{THINK_END}\nThe answer is"
WAIT = "\nWait"


def phased(sampling: Sampling) -> bool:
    """Whether ``sampling`` asks for a decoding-time policy (then :func:`budget_forced` runs the backend)."""
    return sampling.budget_forcing or sampling.stop_scale != 1.0


def budget_forced(call: Callable[[list[str], Sampling], list[Generation]], prompts: list[str], sampling: Sampling,
                  tok) -> list[Generation]:
    """The policies of ``sampling`` over a backend ``call(prompts, sampling) -> generations``; ``tok`` counts forced
    tokens. Thinking phases carry ``stop_scale``; answer phases decode as usual."""
    def count(text: str) -> int:
        return len(tok(text, add_special_tokens=False)["input_ids"])

    plain = dataclasses.replace(sampling, think_budget=None, think_min=None, stop_scale=1.0)
    think_stops = tuple(dict.fromkeys((*sampling.stop, THINK_END)))
    budget = sampling.think_budget or sampling.max_tokens
    n = len(prompts)
    st = {"text": [""] * n, "used": [0] * n, "thought": [0] * n, "phase": ["think"] * n, "final": [None] * n,
          "opened": [p.rstrip().endswith(THINK_START) for p in prompts]}  # a template that opens the block itself
    while any(p != "done" for p in st["phase"]):
        for kind in ("think", "answer"):
            groups: dict[int, list[int]] = {}  # one call per token allowance (what is left differs between rows)
            for i in (i for i in range(n) if st["phase"][i] == kind):
                room = sampling.max_tokens - st["used"][i]
                allow = min(room, budget - st["thought"][i]) if kind == "think" else room
                groups.setdefault(max(1, allow), []).append(i)
            for allow, idx in sorted(groups.items()):
                sp = dataclasses.replace(plain, max_tokens=allow) if kind == "answer" else \
                    dataclasses.replace(plain, max_tokens=allow, stop=think_stops, stop_scale=sampling.stop_scale)
                for i, g in zip(idx, call([prompts[i] + st["text"][i] for i in idx], sp)):
                    st["text"][i] += g.text
                    st["used"][i] += g.n_tokens
                    if kind == "think":
                        st["thought"][i] += g.n_tokens
                        _after_thinking(i, g, st, sampling, budget, count)
                    else:
                        _finish(i, st, g.finish_reason, g.stopped_by)
    return st["final"]


def _finish(i: int, st: dict, finish: str, stopped_by: str) -> None:
    st["final"][i] = Generation(st["text"][i], st["used"][i], finish, stopped_by)
    st["phase"][i] = "done"


def _after_thinking(i: int, g: Generation, st: dict, sampling: Sampling, budget: int, count) -> None:
    """What follows a thinking phase of row ``i``: the answer phase, more thinking, or the end."""
    def force(s: str, then: str) -> None:
        st["text"][i] += s
        k = count(s)
        st["used"][i] += k
        st["thought"][i] += k if then == "think" else 0
        st["phase"][i] = then
        if st["used"][i] >= sampling.max_tokens:
            _finish(i, st, "length", "")

    left = st["used"][i] < sampling.max_tokens
    if g.stopped_by == THINK_END:
        if sampling.think_min is not None and st["thought"][i] < sampling.think_min:
            force(WAIT, "think")  # s1: suppress the end of thinking, append "Wait"
        else:
            force(THINK_END, "answer")
    elif g.finish_reason == "length" and left and (st["opened"][i] or st["text"][i].lstrip().startswith(THINK_START)) \
            and st["thought"][i] >= budget:
        force(FORCED_END, "answer")  # the budget is spent: end the thinking, then the answer
    elif g.finish_reason == "length" and left:
        st["phase"][i] = "answer"  # no thinking block (a short-style answer): not budgeted, let it finish
    else:  # the response ended (its stop token) or ran out of max_tokens
        _finish(i, st, g.finish_reason, g.stopped_by)
