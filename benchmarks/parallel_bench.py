"""Two processes of one thread against one process of two threads on this machine's 2 cores: organism training
steps and greedy decoding.

    python benchmarks/parallel_bench.py [--scale s] [--steps 20] [--rounds 3] [--json FILE]

Training:
One training step of the organism's architecture (forward, backward, grad-norm clip, AdamW; random tokens, no padding)
at two shapes -- pretraining (12 rows of 448 tokens, the main pair's step) and a System 2 fine-tuning step (24 rows of
320 tokens) -- timed three ways, alternated over ``--rounds`` rounds (medians, the machine is noisy):

- ``single``: one process, 2 threads, the whole batch (what the organism does);
- ``dp``: two processes of 1 thread, half the batch each, gradients summed with ``torch.distributed`` (gloo) before
  clipping -- data-parallel training, the same update up to float rounding;
- ``dp_compute``: the same two processes without the gradient sum (the compute alone; not a valid training step) --
  what data parallelism could give if synchronising cost nothing.

The first 3 steps of each run are warm-up and not timed.

Decoding: System 2 of the main pair on the book's toy test set (greedy, the toy profile's token limit, the fast
decoder as the study runs it): all prompts in one process of 2 threads, against two concurrent processes of 1 thread
with every other prompt each (decoding time inside the processes, the slower one; and the wall time with start-up);
the responses are compared.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHAPES = {"pretrain": (12, 448), "sft_system2": (24, 320)}


def _model(scale: str):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from l2s_utils.organism import training as O

    s = O.SCALES[scale]
    cfg = Qwen2Config(vocab_size=s.vocab_size, hidden_size=s.hidden, intermediate_size=s.intermediate,
                      num_hidden_layers=s.layers, num_attention_heads=s.heads, num_key_value_heads=s.kv_heads,
                      max_position_embeddings=1024, tie_word_embeddings=False)
    torch.manual_seed(0)
    return Qwen2ForCausalLM(cfg)


def _steps(model, x, steps: int, sync) -> float:
    """Median seconds per step after 3 warm-up steps."""
    import torch

    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    params = list(model.parameters())
    times = []
    for i in range(steps + 3):
        t = time.perf_counter()
        model(input_ids=x, labels=x).loss.backward()
        if sync is not None:
            sync(params)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= 3:
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def _rank(rank: int, world: int, rendezvous: str, scale: str, rows: int, length: int, steps: int, do_sync: bool,
          out: str) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)

    def sync(params):
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        dist.all_reduce(flat)
        off = 0
        for p in params:
            p.grad.copy_(flat[off:off + p.numel()].view_as(p.grad))
            off += p.numel()

    x = torch.randint(0, 300, (rows, length), generator=torch.Generator().manual_seed(0))[rank::world]
    dist.barrier()
    s = _steps(_model(scale), x, steps, sync if do_sync else None)
    dist.barrier()
    Path(f"{out}.{rank}").write_text(str(s))
    dist.destroy_process_group()


def dp(scale: str, rows: int, length: int, steps: int, do_sync: bool) -> float:
    import torch.multiprocessing as mp

    d = tempfile.mkdtemp(prefix="l2s-dp-")
    mp.spawn(_rank, nprocs=2, join=True, args=(2, f"{d}/rdv", scale, rows, length, steps, do_sync, f"{d}/t"))
    return max(float(Path(f"{d}/t.{r}").read_text()) for r in range(2))


def single(scale: str, rows: int, length: int, steps: int) -> float:
    import torch

    torch.set_num_threads(2)
    x = torch.randint(0, 300, (rows, length), generator=torch.Generator().manual_seed(0))
    return _steps(_model(scale), x, steps, None)


def _gen_rank(rank: int, world: int, threads: int, out: str) -> None:
    import torch

    from generation_bench import transformers_run
    from l2s_utils.evaluate.prompts import build_prompt
    from l2s_utils.organism import build
    from l2s_utils.study.premise import toy_max_tokens, toy_test_set

    torch.set_num_threads(threads)
    prompts = [build_prompt(p.question, "toy") for p in toy_test_set()][rank::world]
    r = transformers_run(build(progress=False).system2, prompts, toy_max_tokens(), len(prompts), "fast")
    Path(f"{out}.{rank}").write_text(json.dumps({"seconds": r["wall_s"], "tokens": r["tokens"], "texts": r["texts"]}))


def decode(world: int) -> dict:
    """System 2 on the toy test set in ``world`` processes of 2 / ``world`` threads (every ``world``-th prompt each)."""
    import torch.multiprocessing as mp

    d = tempfile.mkdtemp(prefix="l2s-gen-")
    t = time.perf_counter()
    mp.spawn(_gen_rank, nprocs=world, join=True, args=(world, 2 // world, f"{d}/g"))
    wall = time.perf_counter() - t
    parts = [json.loads(Path(f"{d}/g.{r}").read_text()) for r in range(world)]
    texts = [None] * sum(len(p["texts"]) for p in parts)
    for r, p in enumerate(parts):
        texts[r::world] = p["texts"]
    return {"seconds": max(p["seconds"] for p in parts), "wall_with_start_s": wall,
            "tokens": sum(p["tokens"] for p in parts), "texts": texts}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", default="s")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    import platform

    import torch

    rows = []
    for shape, (n, length) in SHAPES.items():
        got = {"single": [], "dp": [], "dp_compute": []}
        for _ in range(a.rounds):
            got["single"].append(single(a.scale, n, length, a.steps))
            got["dp"].append(dp(a.scale, n, length, a.steps, True))
            got["dp_compute"].append(dp(a.scale, n, length, a.steps, False))
        med = {k: statistics.median(v) for k, v in got.items()}
        rows.append({"shape": shape, "rows": n, "length": length, "seconds_per_step": med, "runs": got,
                     "dp_vs_single": med["dp"] / med["single"], "dp_compute_vs_single": med["dp_compute"] / med["single"]})
    gen = {"single": [], "dp": []}
    same = []
    for _ in range(a.rounds):
        one, two = decode(1), decode(2)
        same.append(sum(x == y for x, y in zip(one.pop("texts"), two.pop("texts"))))
        gen["single"].append(one)
        gen["dp"].append(two)
    n_prompts = len(__import__("l2s_utils.study.premise", fromlist=["toy_test_set"]).toy_test_set())
    decoding = {"model": f"System 2 ({a.scale})", "prompts": n_prompts, "identical": min(same), "runs": gen,
                "seconds": {k: statistics.median(r["seconds"] for r in v) for k, v in gen.items()},
                "wall_with_start_s": {k: statistics.median(r["wall_with_start_s"] for r in v) for k, v in gen.items()},
                "tokens": gen["single"][0]["tokens"]}
    print(f"scale {a.scale}; median seconds per step over {a.rounds} alternated rounds of {a.steps} steps")
    print("| shape | batch | 1 process x 2 threads | 2 processes x 1 thread (data-parallel) | same, compute only |")
    print("|---|---|---|---|---|")
    for r in rows:
        m = r["seconds_per_step"]
        print(f"| {r['shape']} | {r['rows']} x {r['length']} | {m['single']:.3f} s | {m['dp']:.3f} s ({r['dp_vs_single']:.2f}x the time) "
              f"| {m['dp_compute']:.3f} s ({r['dp_compute_vs_single']:.2f}x) |")
    d = decoding
    print(f"\nDecoding {d['model']}, {d['prompts']} toy prompts, greedy, {d['tokens']:,} tokens (median of {a.rounds}):")
    print(f"1 process x 2 threads: {d['seconds']['single']:.1f} s ({d['tokens'] / d['seconds']['single']:,.0f} tokens/s); "
          f"2 processes x 1 thread: {d['seconds']['dp']:.1f} s ({d['tokens'] / d['seconds']['dp']:,.0f} tokens/s; "
          f"{d['wall_with_start_s']['dp']:.1f} s with start-up against {d['wall_with_start_s']['single']:.1f} s); "
          f"identical responses {d['identical']} of {d['prompts']}")
    if a.json:
        a.json.write_text(json.dumps({"decoding": decoding, "scale": a.scale, "steps": a.steps, "rounds": a.rounds, "torch": torch.__version__,
                                      "machine": platform.machine(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                                      "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
