"""What a generation is asked for and what it returns: :class:`Sampling` (the decoding knobs and the decoding-time
policies, every value checked) and :class:`Generation` (text, token count, finish reason). Both backends and the
policies (``policies.py``) share them; ``generation.py`` re-exports them."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields


PAPER_MAX_TOKENS = 10240  # the paper's generation budget (METHODS.md section 10); profiles set their own
THINK_END = "</think>"  # the end-of-thinking delimiter (R1-Distill, Qwen3 and the organism write <think>...</think>)


@dataclass(frozen=True)
class Sampling:
    """How to decode. Besides the usual knobs, three decoding-time long-to-short policies (see ``policies.py``):

    - ``think_budget`` B (budget forcing, Muennighoff et al. 2025, s1): the thinking ends after at most B tokens --
      the end-of-thinking delimiter is then forced and the answer generated after it;
    - ``think_min`` (budget forcing's other half): an end of thinking before that many tokens is replaced by
      "Wait" and the thinking goes on;
    - ``stop_scale`` s (temperature scaling of the stopping point, after Zhang et al. 2025): the probability of the
      end-of-thinking token is multiplied by s (its logit raised by log s) at every step; s > 1 stops earlier.

    Every value is checked when the object is made (a negative temperature is an error, not silence).
    """

    max_tokens: int = PAPER_MAX_TOKENS
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = ("<|im_end|>", "<|endoftext|>")
    stop_token_ids: tuple[int, ...] = ()
    think_budget: int | None = None
    think_min: int | None = None
    stop_scale: float = 1.0

    def __post_init__(self):
        def whole(name, v, lo):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"sampling {name} must be an integer >= {lo}, got {v!r}")

        def number(name, v, ok, want):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not ok(v):
                raise ValueError(f"sampling {name} must be {want}, got {v!r}")

        whole("max_tokens", self.max_tokens, 1)
        whole("seed", self.seed, 0)
        number("temperature", self.temperature, lambda x: x >= 0, "a number >= 0 (0 = greedy)")
        number("top_p", self.top_p, lambda x: 0 < x <= 1, "a number in (0, 1]")
        number("stop_scale", self.stop_scale, lambda x: x > 0, "a number > 0 (1 = off)")
        if self.think_budget is not None:
            whole("think_budget", self.think_budget, 1)
        if self.think_min is not None:
            whole("think_min", self.think_min, 1)
            if self.think_budget is not None and self.think_min > self.think_budget:
                raise ValueError(f"sampling think_min ({self.think_min}) exceeds think_budget ({self.think_budget})")

    def key(self) -> dict:
        """The fields that decide a generation (the cache key): the policies only when they are on, so that every
        generation cached before they existed keeps its key."""
        out = asdict(self)
        for f in fields(self):
            if f.name in POLICY_FIELDS and out[f.name] == f.default:
                del out[f.name]
        return out

    @property
    def budget_forcing(self) -> bool:
        return self.think_budget is not None or self.think_min is not None


POLICY_FIELDS = ("think_budget", "think_min", "stop_scale")


@dataclass
class Generation:
    text: str
    n_tokens: int
    finish_reason: str  # "stop" | "length"
    stopped_by: str = ""  # the stop token or string that ended it ("" for length); not cached
