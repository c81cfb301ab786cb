"""The organism's task has one home: changing its trace format touches task.py, corpus.py and a version bump.

Guards (source-level, nothing is trained): the corpus builders live in ``organism/corpus.py`` (training.py
only turns texts into batches and weights); the slip mark, the fact pattern and the level sets are spelled
only in ``organism/task.py`` and read from there by the analyses and the premise report; the toy grading
rule is the task's; the toy generation length comes from the toy profile.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import l2s_utils

PKG = Path(l2s_utils.__file__).resolve().parent


def defs(path: Path) -> set[str]:
    return {n.name for n in ast.parse(path.read_text()).body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}


def test_corpus_builders_live_in_corpus():
    corpus = defs(PKG / "organism" / "corpus.py")
    training = defs(PKG / "organism" / "training.py")
    for name in ("tokenizer_corpus", "pretrain_texts", "arithmetic_texts", "copy_drill", "sft_examples"):
        assert name in corpus and name not in training, name
    # training.py writes no trace text itself: no call of a trace writer
    assert not re.search(r"\bT\.system[12]_trace\(", (PKG / "organism" / "training.py").read_text())


def code_strings(path: Path) -> list[str]:
    """The string literals of a module's code (docstrings and comments excluded)."""
    tree = ast.parse(path.read_text())
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.body
            and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs]


def test_task_facts_are_spelled_once():
    for needle in ("Wait, that is wrong", r"(\d+)([+-])(\d+)=(\d+)"):
        where = [f.relative_to(PKG) for f in PKG.rglob("*.py") if any(needle in s for s in code_strings(f))]
        assert where == [Path("organism/task.py")], (needle, where)
    premise = (PKG / "study" / "premise.py").read_text()
    assert "[4, 5]" not in premise and "(4, 5)" not in premise and "T.HARD_LEVELS" in premise


def test_toy_grading_rule_is_the_tasks():
    from l2s_utils.evaluate.grading import grade_toy
    from l2s_utils.organism import task as T

    assert grade_toy("so \\boxed{ 70 }.", 70) == ("70", True)
    assert grade_toy("\\boxed{7O}", 70) == ("7O", False)
    assert grade_toy("no box", 70) == (None, False)
    assert T.is_correct("70", "70") and not T.is_correct(None, 70)
    src = (PKG / "evaluate" / "grading.py").read_text()
    body = src[src.index("def grade_toy"):].split("\ndef ")[0]
    assert "is_correct" in body and "int(" not in body


def test_toy_generation_length_has_one_source():
    from l2s_utils.study.premise import toy_max_tokens
    from l2s_utils.study.profiles import load_profile

    assert toy_max_tokens() == load_profile("toy")["sampling"]["max_tokens"]
    for f in ("study/premise.py", "cli.py"):
        assert not re.search(r"max_tokens\s*[:=]\s*(int\s*=\s*)?\d", (PKG / f).read_text()), f
