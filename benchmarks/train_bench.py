"""Organism training speed on this machine: seconds per step and tokens/s of pretraining (packed rows) and of the
two fine-tunes (System 1's mixed batches as micro-batches, System 2's length-bucketed batches), per scale, beside
the compute limit (6 x parameters FLOPs per trained token at this machine's measured float32 matmul throughput).

    python benchmarks/train_bench.py [--scales xs,s] [--steps 20] [--threads 2] [--variants eager,compile,bf16] [--json FILE]

The steps run the organism's own ``train`` on its own batches (the first 3 steps are warm-up and not timed).
``--variants``: besides the organism's eager float32 training (``eager``), the same steps under ``torch.compile``
(``compile``; the warm-up column holds its compilation) and under CPU autocast to bfloat16 (``bf16``: this CPU's
AVX512-BF16 matmuls) -- the two usual ways to train faster, measured before either is used.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scales", default="xs,s")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("L2S_TRAIN_THREADS", "2")))
    ap.add_argument("--variants", default="eager", help="comma-separated: eager, compile, bf16")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    import tempfile

    import torch

    from generation_bench import matmul_gflops
    from l2s_utils.organism import corpus as C
    from l2s_utils.organism import task as T
    from l2s_utils.organism import training as O

    torch.set_num_threads(a.threads)
    gflops = matmul_gflops()
    out = []
    for scale, variant in itertools.product(a.scales.split(","), a.variants.split(",")):
        if variant not in ("eager", "compile", "bf16"):
            raise SystemExit(f"unknown variant {variant!r}: eager, compile or bf16")
        spec = O.SCALES[scale]
        tok = O.build_tokenizer(Path(tempfile.mkdtemp()), 0, spec.vocab_size)
        model = O.new_model(spec, len(tok), tok)
        n_params = sum(p.numel() for p in model.parameters())
        net = torch.compile(model) if variant == "compile" else model
        ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if variant == "bf16" else contextlib.nullcontext
        n = a.steps + 3
        stages = {
            "pretrain": O._doc_batches(tok, C.pretrain_texts(O.PRETRAIN_DOCS_PER_STEP * n, 0, spec.solution_share),
                                       spec.pretrain_len, spec.batch, n, 0),
            "system1": O._sft_batches(tok, C.sft_examples("system1", 60, 0, spec.s1_long_share), spec.sft_batch, n, 1,
                                      mixed=True),
            "system2": O._sft_batches(tok, C.sft_examples("system2", 60, 0), spec.sft_batch, n, 2),
        }
        for stage, batches in stages.items():
            batches = list(itertools.islice(batches, n))
            parts = [b if isinstance(b, list) else [b] for b in batches[3:]]
            tokens = sum(int(x.numel()) for p in parts for x, _, _ in p)
            t0 = time.perf_counter()
            with ctx():
                O.train(net, batches[:3], 3, 1e-4, 1, "warm-up", progress=False)
            model.train()
            t = time.perf_counter()
            with ctx():
                O.train(net, batches[3:], a.steps, 1e-4, 1, stage, progress=False)
            dt = time.perf_counter() - t
            limit = gflops * 1e9 / (6 * n_params)
            out.append({"scale": scale, "params": n_params, "stage": stage, "variant": variant, "threads": a.threads,
                        "warmup_s": t - t0, "s_per_step": dt / a.steps, "tokens_per_s": tokens / dt,
                        "compute_limit_tokens_per_s": limit, "share_of_limit": tokens / dt / limit})
            r = out[-1]
            print(f"{scale:<3} {n_params / 1e6:5.2f}M {variant:<7} {stage:<9} {r['s_per_step']:.3f} s/step  "
                  f"{r['tokens_per_s']:8.0f} tok/s  (warm-up {r['warmup_s']:.1f} s)"
                  f"  (limit ~{limit:,.0f} tok/s at {gflops:.0f} GFLOP/s: {100 * r['share_of_limit']:.0f}%)")
    if a.json:
        a.json.write_text(json.dumps({"gflops": gflops, "rows": out, "machine": os.uname().machine,
                                      "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
