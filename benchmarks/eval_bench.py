"""Evaluation benchmark: generation throughput of the transformers backend and grading throughput.

    .venv/bin/python benchmarks/eval_bench.py [--scale m] [--n 64] [--max-tokens 256]

Generation: the organism's System 2 (a tiny Qwen2) on n toy prompts, batched (one call, batches of
64 sorted by prompt length) vs one prompt at a time; prints generated tokens/s. Grading: 5,000
whole responses ("... \\boxed{answer}."), half decided by the fast path and half needing math-verify (2
worker processes), under both protocols (``strict``, the default, and ``qwen-toolkit``, the paper's);
prints graded answers/s per protocol. ``benchmarks/grading_speed.py`` measures grading in more detail.
Not a timed test.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from l2s_utils.evaluate.generation import Sampling, generate_transformers, load_model  # noqa: E402
from l2s_utils.evaluate.grading import PROTOCOLS, grade_responses  # noqa: E402
from l2s_utils.organism import task as T  # noqa: E402
from l2s_utils.organism import training as O  # noqa: E402
from l2s_utils.organism.prompts import TOY as PROMPT  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", default=O.MAIN_SCALE)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=256)
    args = ap.parse_args()
    org = O.build(args.scale, progress=False)
    probs = T.make_problems("test", -(-args.n // 5), seed=0)[: args.n]
    prompts = [PROMPT.format(question=p.question) for p in probs]
    s = Sampling(max_tokens=args.max_tokens)
    mt = load_model(org.system2, "cpu")
    print(f"model: organism {args.scale} System 2, {org.n_params / 1e6:.2f}M parameters, CPU threads: "
          f"{__import__('torch').get_num_threads()}")
    rows = []
    for label, bs in (("batched (64 per batch)", 64), ("one prompt at a time", 1)):
        todo = prompts if bs > 1 else prompts[: max(8, args.n // 8)]
        t = time.perf_counter()
        gens = generate_transformers(org.system2, todo, s, batch_size=bs, progress=False, model_and_tokenizer=mt)
        dt = time.perf_counter() - t
        toks = sum(g.n_tokens for g in gens)
        rows.append((label, len(todo), toks, dt, toks / dt))
    print("\n| generation | prompts | generated tokens | seconds | tokens/s |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]:.1f} | {r[4]:.0f} |")
    rng = random.Random(0)
    responses, golds = [], []
    for i in range(5000):
        a, b = rng.randint(1, 99), rng.randint(1, 99)
        if i % 2:
            responses.append(f"So the result is \\boxed{{\\frac{{{a}}}{{{b}}}}}.")
            golds.append(f"\\frac{{{a * 2}}}{{{b * 2}}}" if i % 4 == 1 else f"{a}/{b}+x")
        else:
            responses.append(f"The answer is \\boxed{{{a}}}.")
            golds.append(str(a if i % 3 else b))
    print("\n| grading protocol | answers | seconds | answers/s |\n|---|---|---|---|")
    for protocol in PROTOCOLS:
        t = time.perf_counter()
        grade_responses(responses, golds, protocol, workers=2)
        dt = time.perf_counter() - t
        print(f"| {protocol} | {len(responses)} | {dt:.2f} | {len(responses) / dt:.0f} |")
    print("(2 worker processes; half the answers need math-verify)")

if __name__ == "__main__":
    main()
