"""Merge benchmark: l2s vs mergekit on a synthetic >=1B-parameter Qwen2 pair (bf16, sharded).

    .venv/bin/python benchmarks/merge_bench.py [--workdir DIR] [--layers 22] [--keep]

Builds a base and a 'fine-tuned' checkpoint (base + noise) tensor by tensor, warms the page cache,
then runs each merge in a fresh subprocess (so peak RSS is per run) and prints wall time, peak RSS
and agreement of the outputs. mergekit runs twice: computing in fp32 (the same math as ours, so task
arithmetic must agree bit for bit) and in bf16 (its default when dtype: bfloat16). Not a timed test.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from l2s_utils.merge.checkpoint import Checkpoint, PlannedTensor, StreamingWriter  # noqa: E402


def qwen2_shapes(hidden: int, inter: int, layers: int, vocab: int, heads: int, kv_heads: int) -> list[tuple[str, tuple]]:
    hd = hidden // heads
    out = [("model.embed_tokens.weight", (vocab, hidden))]
    for i in range(layers):
        p = f"model.layers.{i}."
        out += [(p + "input_layernorm.weight", (hidden,)), (p + "post_attention_layernorm.weight", (hidden,)),
                (p + "self_attn.q_proj.weight", (hidden, hidden)), (p + "self_attn.q_proj.bias", (hidden,)),
                (p + "self_attn.k_proj.weight", (kv_heads * hd, hidden)), (p + "self_attn.k_proj.bias", (kv_heads * hd,)),
                (p + "self_attn.v_proj.weight", (kv_heads * hd, hidden)), (p + "self_attn.v_proj.bias", (kv_heads * hd,)),
                (p + "self_attn.o_proj.weight", (hidden, hidden)),
                (p + "mlp.gate_proj.weight", (inter, hidden)), (p + "mlp.up_proj.weight", (inter, hidden)),
                (p + "mlp.down_proj.weight", (hidden, inter))]
    out += [("model.norm.weight", (hidden,)), ("lm_head.weight", (vocab, hidden))]
    return out


def build(path: Path, shapes, seed: int, base: Path | None, config: dict) -> None:
    plan = [PlannedTensor(n, s, torch.bfloat16) for n, s in shapes]
    g = torch.Generator().manual_seed(seed)
    ref = Checkpoint(base) if base else None
    with StreamingWriter(path, plan, max_shard_bytes=1 << 30) as w:
        for n, s in shapes:
            if ref is None:
                t = torch.randn(s, generator=g) * 0.02
            else:
                t = ref.get(n) + torch.randn(s, generator=g) * 0.002
            w.write(n, t.to(torch.bfloat16))
        w.add_file("config.json", json.dumps(config, indent=2))


RUN_L2S = """
import resource, sys, time, json
sys.path.insert(0, {root!r})
from l2s_utils.merge import merge
t = time.perf_counter()
merge({cfg!r}, {out!r}, progress=False)
print(json.dumps({{"seconds": time.perf_counter() - t, "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}}))
"""
RUN_MK = """
import resource, time, json
from mergekit.config import MergeConfiguration
from mergekit.merge import MergeOptions, run_merge
t = time.perf_counter()
run_merge(MergeConfiguration.model_validate({cfg!r}), {out!r},
          MergeOptions(copy_tokenizer=False, quiet=True, out_shard_size=1 << 30))
print(json.dumps({{"seconds": time.perf_counter() - t, "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}}))
"""


def run(code: str) -> dict:
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-3000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def compare(a: Path, b: Path) -> str:
    ca, cb = Checkpoint(a), Checkpoint(b)
    n_eq = n_all = 0
    worst = 0.0
    for n in ca.names():
        x, y = ca.get(n, dtype=None), cb.get(n, dtype=None)
        n_eq += int((x == y).sum())
        n_all += x.numel()
        worst = max(worst, float((x.float() - y.float()).abs().max()))
    return "identical" if n_eq == n_all else f"{100 * n_eq / n_all:.4f}% equal, max |diff| {worst:.2e}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--layers", type=int, default=22)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="l2s-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    hidden, inter, vocab, heads, kv = 2048, 5632, 32000, 16, 4
    config = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": hidden,
              "intermediate_size": inter, "num_hidden_layers": args.layers, "num_attention_heads": heads,
              "num_key_value_heads": kv, "vocab_size": vocab, "max_position_embeddings": 4096, "rms_norm_eps": 1e-6,
              "rope_theta": 10000.0, "tie_word_embeddings": False, "dtype": "bfloat16", "hidden_act": "silu"}
    shapes = qwen2_shapes(hidden, inter, args.layers, vocab, heads, kv)
    nparams = sum(torch.Size(s).numel() for _, s in shapes)
    base, ft = work / "base", work / "ft"
    t = time.perf_counter()
    if not base.exists():
        build(base, shapes, 0, None, config)
    if not ft.exists():
        build(ft, shapes, 1, base, config)
    size = Checkpoint(base).weight_bytes()
    print(f"synthetic Qwen2 pair: {nparams / 1e9:.2f}B parameters, {size / 1e9:.2f} GB bf16 per model, "
          f"{len(list(base.glob('*.safetensors')))} shards (built in {time.perf_counter() - t:.0f} s)")
    for p in [*base.glob("*.safetensors"), *ft.glob("*.safetensors")]:  # warm the page cache for everyone
        with open(p, "rb") as f:
            while f.read(1 << 24):
                pass
    # (method, our parameters, mergekit per-model / global parameters)
    cases = {
        "task_arithmetic": ({"alpha": 0.7}, ({"weight": 0.7}, {})),
        "ties": ({"k": 0.8, "alpha": 1.0, "trim": "topk"}, ({"density": 0.2, "weight": 1.0}, {})),
    }
    rows = []
    for method, (ours, theirs) in cases.items():
        outs = {tag: work / f"{tag}_{method}" for tag in ("l2s", "l2s_paper", "mk32", "mk16")}
        for o in outs.values():
            shutil.rmtree(o, ignore_errors=True)
        l2s_cfg = {"merge_method": method, "base_model": str(base), "models": [{"model": str(ft)}],
                   "parameters": ours, "dtype": "bfloat16", "max_shard_size": 1 << 30}
        mk = {"merge_method": method, "base_model": str(base),
              "models": [{"model": str(ft), "parameters": theirs[0]}], "parameters": theirs[1]}
        r = run(RUN_L2S.format(root=str(ROOT), cfg=l2s_cfg, out=str(outs["l2s"])))
        label = "l2s, trim: topk (mergekit's rule)" if method == "ties" else "l2s"
        rows.append((method, label, r, "-"))
        if method == "ties":  # the L2S code's rule (our default): keep |delta| >= the m-th smallest, streamed
            paper = {**l2s_cfg, "parameters": {"k": 0.8, "alpha": 1.0}}
            r = run(RUN_L2S.format(root=str(ROOT), cfg=paper, out=str(outs["l2s_paper"])))
            rows.append((method, "l2s, trim: threshold (L2S rule, default)", r, compare(outs["l2s"], outs["l2s_paper"])))
        r = run(RUN_MK.format(cfg={**mk, "dtype": "float32", "out_dtype": "bfloat16"}, out=str(outs["mk32"])))
        rows.append((method, "mergekit 0.1.5, dtype float32", r, compare(outs["l2s"], outs["mk32"])))
        r = run(RUN_MK.format(cfg={**mk, "dtype": "bfloat16"}, out=str(outs["mk16"])))
        rows.append((method, "mergekit 0.1.5, dtype bfloat16", r, compare(outs["l2s"], outs["mk16"])))
        if not args.keep:
            for o in outs.values():
                shutil.rmtree(o, ignore_errors=True)
    print("\n| method | tool | wall time (s) | peak RSS (GB) | peak RSS / model size | output vs first l2s row |")
    print("|---|---|---|---|---|---|")
    for method, tool, r, agree in rows:
        print(f"| {method} | {tool} | {r['seconds']:.1f} | {r['rss'] / 1e9:.2f} | {r['rss'] / size:.0%} | {agree} |")
    print(f"\n(2 CPU cores; {torch.__version__}; inputs in page cache; workdir {work})")
    if not args.keep and args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
