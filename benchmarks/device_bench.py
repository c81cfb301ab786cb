"""Generation and merging on a GPU beside the CPU, same machine, same run (issue 14: the GPU path, executed).

    python benchmarks/device_bench.py [--scale s | --model CHECKPOINT] [--n 50] [--shape 1b] [--threads 2] [--write]

1. Generation with the transformers backend: the organism's System 2 (the weights shipped in
   data/organism, or a local build) answers the toy test split (n problems per level, greedy, up to 600
   tokens, batches of 128) on the CPU (``--threads`` threads) and on CUDA; prints generated tokens/s,
   and how many answers / token sequences agree between the two.
2. Merging: a synthetic Qwen2 pair (benchmarks/merge_bench.py's ``--shape``) merged by task arithmetic
   and TIES (per tensor and global) with ``device="cpu"`` and ``device="cuda"``; prints wall time and
   whether the outputs are bitwise identical.
``--write`` stores the record as ``benchmarks/results/device_bench.json``, which the book's Reproduce page renders.
Not a timed test; needs a CUDA device for the second column (it says so and stops otherwise).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from l2s_utils.evaluate.generation import Sampling, generate_transformers, load_model  # noqa: E402
from l2s_utils.evaluate.grading import grade_toy  # noqa: E402
from l2s_utils.organism import task as T  # noqa: E402
from l2s_utils.organism import training as O  # noqa: E402
from l2s_utils.organism.prompts import TOY as PROMPT  # noqa: E402
from l2s_utils.study.premise import toy_max_tokens  # noqa: E402


def generation(scale: str, n: int, threads: int, model: Path | None = None) -> dict:
    if model is None:
        org = O.build(scale, progress=False)
        model, what = org.system2, f"organism {scale} System 2, {org.source}, recipe {org.manifest['recipe']}"
    else:
        what = str(model)
    probs = T.make_problems("test", n, seed=0)
    prompts = [PROMPT.format(question=p.question) for p in probs]
    s = Sampling(max_tokens=toy_max_tokens())
    res, rec = {}, {"what": what, "n": len(prompts)}
    for dev in ("cpu", "cuda"):
        torch.set_num_threads(threads if dev == "cpu" else torch.get_num_threads())
        mt = load_model(model, dev, dtype=torch.float32)
        generate_transformers(model, prompts[:8], s, batch_size=8, progress=False, model_and_tokenizer=mt)  # warm-up
        if dev == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        gens = generate_transformers(model, prompts, s, batch_size=128, progress=False, model_and_tokenizer=mt)
        if dev == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t
        toks = sum(g.n_tokens for g in gens)
        acc = sum(grade_toy(g.text, p.answer)[1] for g, p in zip(gens, probs)) / len(probs)
        res[dev] = gens
        rec[dev] = {"tokens": toks, "seconds": dt, "accuracy": 100 * acc}
        print(f"generation on {dev}: {len(prompts)} prompts, {toks} tokens in {dt:.1f} s = {toks / dt:.0f} tokens/s, "
              f"accuracy {100 * acc:.1f}% ({what})",
              flush=True)
    same_text = sum(a.text == b.text for a, b in zip(res["cpu"], res["cuda"]))
    same_ans = sum(grade_toy(a.text, 0)[0] == grade_toy(b.text, 0)[0] for a, b in zip(res["cpu"], res["cuda"]))
    print(f"cpu vs cuda: identical responses {same_text}/{len(prompts)}, same extracted answer {same_ans}/{len(prompts)}")
    return {**rec, "identical": same_text, "same_answer": same_ans}


def merging(shape: str) -> list[dict]:
    import merge_bench as MB
    from l2s_utils.merge import merge

    work = Path(tempfile.mkdtemp(prefix="l2s-devbench-"))
    hidden, inter, vocab, heads, kv, layers = MB.SHAPES[shape]
    config = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": hidden,
              "intermediate_size": inter, "num_hidden_layers": layers, "num_attention_heads": heads,
              "num_key_value_heads": kv, "vocab_size": vocab, "max_position_embeddings": 4096, "rms_norm_eps": 1e-6,
              "rope_theta": 10000.0, "tie_word_embeddings": False, "dtype": "bfloat16", "hidden_act": "silu"}
    shapes = MB.qwen2_shapes(hidden, inter, layers, vocab, heads, kv)
    t = time.perf_counter()
    MB.build(work / "base", shapes, 0, None, config)
    MB.build(work / "ft", shapes, 1, work / "base", config)
    print(f"synthetic {shape} pair ready in {time.perf_counter() - t:.0f} s", flush=True)
    cases = {"task_arithmetic": ("task_arithmetic", {"alpha": 0.7}), "l2s_ties": ("l2s_ties", {"k": 0.8}),
             "l2s_ties global": ("l2s_ties", {"k": 0.8, "scope": "global"})}
    rec = []
    for name, (method, params) in cases.items():
        cfg = {"merge_method": method, "base_model": str(work / "base"), "models": [{"model": str(work / "ft")}],
               "parameters": params, "dtype": "bfloat16"}
        times = {}
        for dev in ("cpu", "cuda"):
            out = work / f"{name.replace(' ', '_')}-{dev}"
            t = time.perf_counter()
            merge(cfg, out, device=dev, progress=False)
            times[dev] = time.perf_counter() - t
        same = MB.compare(work / f"{name.replace(' ', '_')}-cpu", work / f"{name.replace(' ', '_')}-cuda")
        print(f"merge {name}: cpu {times['cpu']:.1f} s, cuda {times['cuda']:.1f} s; outputs: {same}", flush=True)
        rec.append({"method": f"{name} ({params}), synthetic {shape} pair, bf16", "cpu_s": times["cpu"],
                    "cuda_s": times["cuda"], "outputs": same})
    shutil.rmtree(work, ignore_errors=True)
    return rec


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", default=O.MAIN_SCALE)
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--shape", default="1b")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", type=Path, default=None, help="a checkpoint to generate with (default: the organism's System 2)")
    ap.add_argument("--skip", choices=["generation", "merging"], default=None)
    ap.add_argument("--write", action="store_true", help="store the record in benchmarks/results/device_bench.json")
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device here: this benchmark compares CPU with CUDA")
        return 1
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, CPU threads {a.threads}", flush=True)
    import json
    import os
    import platform

    doc = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "device": torch.cuda.get_device_name(),
           "torch": torch.__version__, "threads": a.threads,
           "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {torch.cuda.get_device_name()}"}
    if a.skip != "generation":
        doc["generation"] = generation(a.scale, a.n, a.threads, a.model)
    if a.skip != "merging":
        doc["merges"] = merging(a.shape)
    if a.write:
        (ROOT / "benchmarks" / "results" / "device_bench.json").write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
