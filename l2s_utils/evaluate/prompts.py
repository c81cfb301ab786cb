"""Prompt styles of the evaluation protocol (METHODS.md section 10), as exact, testable strings.

- ``qwen25-math-cot``: the Qwen2.5-Math toolkit's zero-shot chat prompt, used by the paper for System 2
  (R1-Distill) and every merged model:

      <|im_start|>system\\nPlease reason step by step, and put your final answer within \\boxed{}.<|im_end|>\\n
      <|im_start|>user\\n{question}<|im_end|>\\n<|im_start|>assistant\\n

- ``cot``: the toolkit's plain few-shot format used for the System 1 baselines,
  ``Question: {q}\\nAnswer: {a}`` demonstrations joined by ``\\n\\n\\n``, then ``Question: {q}\\nAnswer: ``;
  extra stop string ``\\n\\nQuestion:``. The toolkit's demonstrations (8 for gsm8k, 4-5 for MATH) are
  not shipped here: pass your own ``shots`` (e.g. read from the toolkit's examples) or use zero shots.
- ``r1``: DeepSeek-R1-Distill's own chat template, which opens the ``<think>`` block itself (offered for
  comparison; the paper used ``qwen25-math-cot`` for R1 too).
- ``toy``: the model organism's chat prompt (no system turn, to keep sequences short).
"""

from __future__ import annotations

from typing import Sequence

from ..organism.prompts import TOY

QWEN25_MATH_COT = ("<|im_start|>system\nPlease reason step by step, and put your final answer within \\boxed{}.<|im_end|>\n"
                   "<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n")
COT_INPUT = "Question: {question}\nAnswer: "
COT_SPLITTER = "\n\n\n"
R1 = "<｜begin▁of▁sentence｜><｜User｜>{question}<｜Assistant｜><think>\n"

STYLES = ("qwen25-math-cot", "cot", "r1", "toy")
QWEN_STOPS = ("</s>", "<|im_end|>", "<|endoftext|>")
QWEN_STOP_IDS = (151645, 151643)  # <|im_end|>, <|endoftext|> in Qwen2.5 vocabularies


def build_prompt(question: str, style: str, shots: Sequence[tuple[str, str]] = ()) -> str:
    """The prompt for ``question`` in ``style`` (see the module docstring for the exact formats)."""
    question = question.strip()
    if style == "qwen25-math-cot":
        if shots:
            demos = "\n\n".join(f"{q}\n{a}" for q, a in shots)
            question = f"{demos}\n\n{question}"
        return QWEN25_MATH_COT.replace("{question}", question)
    if style == "cot":
        demos = [COT_INPUT.replace("{question}", q) + a for q, a in shots]
        return COT_SPLITTER.join([*demos, COT_INPUT.replace("{question}", question)])
    if style == "r1":
        return R1.replace("{question}", question)
    if style == "toy":
        return TOY.replace("{question}", question)
    raise ValueError(f"unknown prompt style {style!r}; known: {', '.join(STYLES)}")


def stop_strings(style: str) -> tuple[str, ...]:
    """Stop strings for ``style``: Qwen's end tokens, plus ``\\n\\nQuestion:`` for the few-shot ``cot`` format."""
    if style == "cot":
        return (*QWEN_STOPS, "\n\nQuestion:")
    if style == "r1":
        return ("<｜end▁of▁sentence｜>", *QWEN_STOPS)
    return QWEN_STOPS
