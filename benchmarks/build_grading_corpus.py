"""Build ``data/grading_corpus.jsonl``: grading cases taken from the field's own test suites.

    python benchmarks/build_grading_corpus.py [--mirror /work/.mirror] [--out data/grading_corpus.jsonl]

Each source repository must be a local git snapshot (``<mirror>/<owner>+<name>/repo``, a bare git
directory read with ``git show``). The test files are parsed with :mod:`ast` (never imported or run):

  huggingface/Math-Verify          tests/test_all.py, test_boxed.py, test_numina_cases.py,
                                   test_open_thoughts.py, test_yujianll.py  (pytest parametrize lists;
                                   cases with a non-default precision or set-relation option are left out)
  MARIO-Math-Reasoning/MARIO_EVAL  math_evaluation/tests/test_is_equiv.py   (unittest asserts)
  NVIDIA/NeMo-Skills               tests/test_math_equal.py                 (both argument orders, as the test)
  hendrycks/math                   modeling/math_equivalence_test.py        (unittest asserts)
  EleutherAI/lm-evaluation-harness lm_eval/tasks/minerva_math/utils.py      (the four Minerva few-shot
                                   solutions with their final answers: whole-response cases)

One JSON object per line: ``id``, ``source`` (owner/name), ``commit``, ``path``, ``test`` (function),
``form`` (``"response"``: a whole response, extraction included; ``"answer"``: a bare final answer,
equivalence only), ``response``, ``gold``, ``expected`` (bool, the suite's verdict).
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

MATH_VERIFY = ("huggingface/Math-Verify", ["tests/test_all.py", "tests/test_boxed.py", "tests/test_numina_cases.py",
                                           "tests/test_open_thoughts.py", "tests/test_yujianll.py"])
MARIO = ("MARIO-Math-Reasoning/MARIO_EVAL", ["math_evaluation/tests/test_is_equiv.py"])
NEMO = ("NVIDIA/NeMo-Skills", ["tests/test_math_equal.py"])
HENDRYCKS = ("hendrycks/math", ["modeling/math_equivalence_test.py"])
LM_EVAL = ("EleutherAI/lm-evaluation-harness", ["lm_eval/tasks/minerva_math/utils.py"])


def _git(repo_dir: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo_dir), *args], check=True, capture_output=True, text=True).stdout


def _value(node: ast.AST):
    """A literal, or a simple arithmetic expression of literals (e.g. ``5 / 2``); else raises ValueError."""
    try:
        return ast.literal_eval(node)
    except ValueError:
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Div, ast.Mult, ast.Add, ast.Sub)):
            a, b = _value(node.left), _value(node.right)
            return {ast.Div: a / b if b else None, ast.Mult: a * b, ast.Add: a + b, ast.Sub: a - b}[type(node.op)]
        raise


def _parametrize(fn: ast.FunctionDef) -> tuple[list[str], list[tuple]] | None:
    for d in fn.decorator_list:
        if isinstance(d, ast.Call) and getattr(d.func, "attr", "") == "parametrize":
            names = [n.strip() for n in ast.literal_eval(d.args[0]).split(",")]
            rows = []
            for elt in d.args[1].elts:
                try:
                    v = _value(elt)
                except (ValueError, SyntaxError):
                    continue  # not a literal (e.g. an f-string): left out
                rows.append(v if isinstance(v, tuple) else (v,))
            return names, rows
    return None


def _call_options(fn: ast.FunctionDef) -> dict:
    """Keyword arguments of the compare_strings/verify call inside a test function (literals only)."""
    for node in ast.walk(fn):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") in ("compare_strings", "verify"):
            out = {}
            for kw in node.keywords:
                try:
                    out[kw.arg] = ast.literal_eval(kw.value)
                except ValueError:
                    out[kw.arg] = ("param", getattr(kw.value, "id", None))
            return out
    return {}


def math_verify_cases(src: str) -> list[dict]:
    out = []
    for fn in ast.parse(src).body:
        if not isinstance(fn, ast.FunctionDef) or not fn.name.startswith("test_"):
            continue
        p = _parametrize(fn)
        if p is None:
            continue
        names, rows = p
        opts = _call_options(fn)
        if opts.get("strict") is False or opts.get("precision") not in (None, 6, ("param", "precision")):
            continue
        for row in rows:
            r = dict(zip(names, row))
            if r.get("precision", 6) != 6 or r.get("allow_set_relation_comp") is True or r.get("strict") is False:
                continue
            if opts.get("allow_set_relation_comp") == ("param", "allow_set_relation_comp") and "allow_set_relation_comp" not in r:
                continue
            exp = r.get("expected", r.get("result"))
            out.append({"test": fn.name, "form": "response", "response": str(r["pred"]), "gold": str(r["gold"]),
                        "expected": bool(exp)})
    return out


def nemo_cases(src: str) -> list[dict]:
    out = []
    for fn in ast.parse(src).body:
        if not isinstance(fn, ast.FunctionDef) or fn.name not in ("test_correct_examples", "test_incorrect_examples"):
            continue
        _, rows = _parametrize(fn)
        for pair in rows:  # one argument, a (prediction, gold) pair
            a, b = pair
            if a is None or b is None:
                continue
            for pred, gold in ((a, b), (b, a)):  # the test asserts both orders
                out.append({"test": fn.name, "form": "answer", "response": str(pred), "gold": str(gold),
                            "expected": fn.name == "test_correct_examples"})
    return out


def unittest_cases(src: str) -> list[dict]:
    """Walk each test method in order, tracking test_in / test_out / test_pairs, and read the asserts."""
    out = []
    tree = ast.parse(src)
    for cls in [n for n in tree.body if isinstance(n, ast.ClassDef)]:
        for fn in [n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test")]:
            env: dict = {}

            def visit(stmts, env):
                for st in stmts:
                    if isinstance(st, ast.Assign) and isinstance(st.targets[0], ast.Name):
                        try:
                            env[st.targets[0].id] = ast.literal_eval(st.value)
                        except ValueError:
                            pass
                    elif isinstance(st, ast.For) and isinstance(st.iter, ast.Name) and st.iter.id in env:
                        names = [e.id for e in st.target.elts]
                        for item in env[st.iter.id]:
                            visit(st.body, {**env, **dict(zip(names, item))})
                    elif isinstance(st, ast.Expr) and isinstance(st.value, ast.Call):
                        call = st.value
                        kind = getattr(call.func, "attr", "")
                        if kind not in ("assertTrue", "assertFalse") or not isinstance(call.args[0], ast.Call):
                            continue
                        inner = call.args[0]
                        a, b = (env.get(x.id) if isinstance(x, ast.Name) else ast.literal_eval(x) for x in inner.args[:2])
                        out.append({"test": f"{cls.name}.{fn.name}", "form": "answer", "response": str(a), "gold": str(b),
                                    "expected": kind == "assertTrue"})

            visit(fn.body, env)
    return out


def minerva_fewshot_cases(src: str) -> list[dict]:
    out = []
    for fn in ast.parse(src).body:
        if isinstance(fn, ast.FunctionDef) and fn.name == "list_fewshot_samples":
            samples = ast.literal_eval(fn.body[0].value)
            for s in samples:
                sol = s["solution"]
                gold = sol.split("The final answer is $")[-1].split("$. I hope")[0]
                body = sol.split("\nFinal Answer:")[0]  # the boxed solution without the Minerva sentence
                out.append({"test": "list_fewshot_samples", "form": "response", "response": sol, "gold": gold,
                            "expected": True})
                out.append({"test": "list_fewshot_samples (boxed part)", "form": "response", "response": body,
                            "gold": gold, "expected": True})
    return out


PARSERS = {MATH_VERIFY[0]: math_verify_cases, MARIO[0]: unittest_cases, NEMO[0]: nemo_cases,
           HENDRYCKS[0]: unittest_cases, LM_EVAL[0]: minerva_fewshot_cases}


def build(mirror: Path) -> list[dict]:
    cases = []
    for repo, paths in (MATH_VERIFY, MARIO, NEMO, HENDRYCKS, LM_EVAL):
        d = mirror / repo.replace("/", "+") / "repo"
        commit = _git(d, "rev-parse", "HEAD").strip()
        for path in paths:
            src = _git(d, "show", f"HEAD:{path}")
            for i, c in enumerate(PARSERS[repo](src)):
                cases.append({"id": f"{repo.split('/')[1]}:{path.rsplit('/', 1)[-1]}:{i}", "source": repo,
                              "commit": commit, "path": path, **c})
    seen, unique = set(), []
    for c in cases:  # identical (response, gold, expected) triples from one source count once
        key = (c["source"], c["form"], c["response"], c["gold"], c["expected"])
        if key not in seen:
            seen.add(key)
            unique.append(c)
    return unique


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mirror", type=Path, default=Path("/work/.mirror"))
    ap.add_argument("--out", type=Path, default=ROOT / "data" / "grading_corpus.jsonl")
    args = ap.parse_args()
    cases = build(args.mirror)
    with open(args.out, "w") as f:
        for c in cases:
            f.write(json.dumps(c, ensure_ascii=False) + "\n")
    from collections import Counter

    print(f"{len(cases)} cases -> {args.out}")
    for (src, form), n in sorted(Counter((c["source"], c["form"]) for c in cases).items()):
        print(f"  {src:36s} {form:8s} {n}")


if __name__ == "__main__":
    main()
