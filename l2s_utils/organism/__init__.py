"""Stage 1, organism: the toy System 1 / System 2 pair, trained here on CPU (the profile ``toy``).

    from l2s_utils.organism import build
    org = build("s")            # base / System 1 / System 2: shipped weights (data/organism) or trained, cached
    org.system1, org.system2    # Qwen2ForCausalLM directories (safetensors + tokenizer)

Files:
  task.py       the task (arithmetic chains, levels, hash-based splits), the System 1 and System 2 trace
                writers, the task's own constants (slip mark, fact pattern, easy/hard levels), its grading
                rule (``is_correct``), aligned calibration triples
  prompts.py    the toy chat prompt (the evaluation's prompt style ``toy``) and the end-of-turn token
  corpus.py     the training texts: tokenizer corpus, pretraining documents, SFT pairs
  training.py   tokenizer, batches, training loop, ``build`` and its cache, ``SCALES``

Changing the task's trace format touches task.py (and corpus.py where the pretraining text imitates a
trace), then ``ORGANISM_VERSION`` in training.py and a retrain; the analyses, the premise report, the
toy benchmark and the toy grader read the task's constants.

The organism imports nothing from the later stages; its premise report (which generates and grades)
is ``l2s_utils.study.premise``. ``build`` is loaded on first use, so ``import l2s_utils.organism.task``
does not import torch.
"""

__all__ = ["build"]


def __getattr__(name: str):
    if name == "build":
        from .training import build

        return build
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
