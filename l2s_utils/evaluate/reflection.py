"""Grading and response statistics.

Reflection keywords (paper section 6, footnote 3): "wait, re-examine, recap, double-check, let me
(just) check, and let me (just) verify". We match them case-insensitively **with word boundaries**
(so "awaits" is not "wait"). Differences to the paper's code (``src/evaluation/data_process.py``):
its list omits "let me verify" (the footnote has it) and it matches substrings without boundaries.
A response is *reflective* if it contains at least one keyword.
"""

from __future__ import annotations

import re

REFLECTION_KEYWORDS = ("wait", "re-examine", "recap", "double-check", "let me check", "let me just check",
                       "let me verify", "let me just verify")
_KW = re.compile(r"(?<![\w-])(?:" + "|".join(re.escape(k) for k in sorted(REFLECTION_KEYWORDS, key=len, reverse=True))
                 + r")(?![\w-])", re.IGNORECASE)


def keyword_count(text: str) -> int:
    """Number of reflection-keyword occurrences (word boundaries, case-insensitive)."""
    return len(_KW.findall(text))


def is_reflective(text: str) -> bool:
    return keyword_count(text) > 0


def extract_last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) with brace matching; None if absent or unclosed."""
    starts = [m.end() for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text)]
    for start in reversed(starts):
        depth, i = 1, start
        while i < len(text):
            c = text[i]
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    return text[start:i].strip()
            i += 1
    m = re.findall(r"\\boxed ([^\s$]+)", text)
    return m[-1] if m else None


def grade_toy(response: str, gold: int) -> tuple[str | None, bool]:
    """The toy task: the last boxed content must be exactly the gold integer."""
    pred = extract_last_boxed(response)
    if pred is None:
        return None, False
    try:
        return pred, int(pred.strip().replace(" ", "")) == int(gold)
    except ValueError:
        return pred, False
