"""Reflection statistics of responses.

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
