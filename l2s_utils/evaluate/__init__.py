"""Stage 3, evaluate: generate, grade and summarize, with every generation cached.

    from l2s_utils.evaluate import evaluate
    rows = evaluate("merged/ties-7b", "math500", limit=50)   # one graded row per problem (also saved)

Files:
  prompts.py     the protocol's prompt styles (qwen25-math-cot, cot, r1, toy) and stop strings
  benchmarks.py  benchmark loaders (gsm8k, math500, aime24, minerva_math, olympiadbench, college_math, toy)
  generation.py  generation backends: transformers (CPU/GPU) and vLLM (GPU)
  grading.py     the two grading protocols (grade_responses): qwen-toolkit (the paper's: last \\boxed{} and
                 fallbacks, its equivalence rules) and strict (strict.py); the toy check
  strict.py      the strict protocol: final-answer region, final boxed group, structure-aware exact equivalence
  verify.py      math-verify as both protocols call it (wrapped parse, verify, numeric closeness) and the
                 worker processes its signal-based timeouts need
  grading_corpus.py  the grading corpus from the field's test suites (data/grading_corpus.jsonl) and agreement
  reflection.py  reflection keywords (wait, re-examine, ...) and reflective responses
  metrics.py     accuracy with bootstrap CIs, lengths, length change, reflection, truncation, AES;
                 sampled metrics (avg@k, pass@k, maj@k) and token-budget curves
  pipeline.py    ``evaluate``: benchmark -> prompts -> cached generations -> graded rows with provenance

``evaluate`` is loaded on first use, so importing e.g. ``l2s_utils.evaluate.grading`` stays light.
"""

__all__ = ["evaluate"]


def __getattr__(name: str):
    if name == "evaluate":
        from .pipeline import evaluate

        return evaluate
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
