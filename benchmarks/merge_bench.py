"""Merge benchmark: l2s vs mergekit, side by side, on a synthetic Qwen2 pair (bf16, sharded).

    .venv/bin/python benchmarks/merge_bench.py [--shape 1b|7b] [--layers N] [--methods a,b] [--workdir DIR] [--keep] [--write]

``--write`` stores the record as ``benchmarks/results/merge_bench-<shape>.json``, which the book's Reproduce page
renders (``l2s_utils.study.reproduce``).

Shapes: ``1b`` (default) is a 1.12B-parameter Qwen2 (hidden 2048, 22 layers, vocab 32000, 2.25 GB bf16);
``7b`` is Qwen2.5-7B's shape (hidden 3584, intermediate 18944, vocab 152064, untied, 28 heads / 4 KV
heads) with ``--layers`` layers (default 28; fewer still exercise the 545M-parameter embedding and lm_head
at full size). Builds a base and a 'fine-tuned' checkpoint (base + noise), warms the page cache and the
input fingerprints (hashed once per input and memoised), then runs each merge in a fresh subprocess and
prints, per method, l2s and mergekit 0.1.5 in the same run: wall time, CPU time (user + sys), peak RSS
(VmHWM) and peak RSS over the model's size, plus the process's RSS right after its imports (torch
alone is ~0.22 GB) and the agreement of the outputs. mergekit computes in bf16 (its default for
``dtype: bfloat16``); for task arithmetic it also runs in fp32 (the same math as ours: bitwise equal).
``--l2s-root`` measures another checkout of this repository (before/after comparisons). Not a timed test.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from l2s_utils.merge.checkpoint import Checkpoint, PlannedTensor, StreamingWriter, model_fingerprint  # noqa: E402

SHAPES = {  # hidden, intermediate, vocab, heads, kv heads, layers
    "1b": (2048, 5632, 32000, 16, 4, 22),
    "7b": (3584, 18944, 152064, 28, 4, 28),
}


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


def build(path: Path, shapes, seed: int, base: Path | None, config: dict, rows_per_chunk: int = 4096) -> None:
    """Write a checkpoint tensor by tensor, in row chunks (building a 7B-shaped pair needs little memory)."""
    plan = [PlannedTensor(n, s, torch.bfloat16) for n, s in shapes]
    g = torch.Generator().manual_seed(seed)
    ref = Checkpoint(base) if base else None
    with StreamingWriter(path, plan, max_shard_bytes=1 << 30) as w:
        for n, s in shapes:
            for r0 in range(0, s[0], rows_per_chunk):
                rows = (r0, min(r0 + rows_per_chunk, s[0])) if len(s) == 2 else None
                shape = (rows[1] - rows[0], *s[1:]) if rows else s
                if ref is None:
                    t = torch.randn(shape, generator=g) * 0.02
                else:
                    t = ref.get(n, rows=rows) + torch.randn(shape, generator=g) * 0.002
                w.write(n, t.to(torch.bfloat16))
                if rows is None:
                    break
        w.add_file("config.json", json.dumps(config, indent=2))


# Peak RSS is the child's VmHWM (the high-water mark of its own address space). Not ru_maxrss: Linux carries
# ru_maxrss across exec, so a child would report at least its parent's RSS at fork (this script's, after it
# compared two outputs) -- which inflated earlier measurements of this benchmark.
PROBE = """
import json, resource, sys, time
def status(key):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith(key + ":"))
def rss_now():
    return status("VmRSS")
def report(t0, c0, imports):
    r = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"seconds": time.perf_counter() - t0, "cpu": r.ru_utime + r.ru_stime - c0,
                      "rss": status("VmHWM"), "rss_imports": imports}))
"""
RUN_L2S = """
sys.path.insert(0, {root!r})
from l2s_utils.merge import merge
imports = rss_now(); r = resource.getrusage(resource.RUSAGE_SELF); c0 = r.ru_utime + r.ru_stime
t = time.perf_counter()
merge({cfg!r}, {out!r}, progress=False)
report(t, c0, imports)
"""
RUN_MK = """
from mergekit.config import MergeConfiguration
from mergekit.merge import MergeOptions, run_merge
imports = rss_now(); r = resource.getrusage(resource.RUSAGE_SELF); c0 = r.ru_utime + r.ru_stime
t = time.perf_counter()
run_merge(MergeConfiguration.model_validate({cfg!r}), {out!r},
          MergeOptions(copy_tokenizer=False, quiet=True, out_shard_size=1 << 30))
report(t, c0, imports)
"""


def run(code: str) -> dict:
    r = subprocess.run([sys.executable, "-c", PROBE + code], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-3000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def compare(a: Path, b: Path) -> str:
    ca, cb = Checkpoint(a), Checkpoint(b)
    n_eq = n_all = 0
    worst = 0.0
    for n in ca.names():
        for rows in ([None] if len(ca.info(n).shape) < 2 else
                     [(r, min(r + 4096, ca.info(n).shape[0])) for r in range(0, ca.info(n).shape[0], 4096)]):
            x, y = ca.get(n, dtype=None, rows=rows), cb.get(n, dtype=None, rows=rows)
            n_eq += int((x == y).sum())
            n_all += x.numel()
            worst = max(worst, float((x.float() - y.float()).abs().max()))
    return "identical" if n_eq == n_all else f"{100 * n_eq / n_all:.2f}% equal, max diff {worst:.1e}"


# name -> (l2s merge_method, l2s parameters, mergekit merge_method, mergekit per-model parameters, global
# parameters, note on the comparison). The L2S-code rules (l2s_*, dare*) have no mergekit equivalent: the
# mergekit column then runs mergekit's method of the same family with the matching density (same work,
# other rule) so that memory and time can be compared; outputs are not expected to agree there.
CASES = {
    "task_arithmetic": ("task_arithmetic", {"alpha": 0.7}, "task_arithmetic", {"weight": 0.7}, {}, "same method"),
    "ties": ("ties", {"density": 0.2}, "ties", {"density": 0.2, "weight": 1.0}, {}, "same method"),
    "l2s_ties": ("l2s_ties", {"k": 0.8}, "ties", {"density": 0.2, "weight": 1.0}, {}, "L2S rule vs mergekit ties"),
    "l2s_ties_global": ("l2s_ties", {"k": 0.8, "scope": "global"}, None, None, None, "no mergekit equivalent"),
    "dare_ta": ("dare_ta", {"p": 0.3, "alpha": 0.7}, "dare_linear", {"density": 0.7, "weight": 0.7}, {},
                "L2S DARE-TA vs mergekit dare_linear (other masks/rescale)"),
    "l2s_dare_ties": ("l2s_dare_ties", {"p": 0.3, "k": 0.8}, "dare_ties", {"density": 0.7, "weight": 1.0}, {},
                      "L2S DARE-Ties vs mergekit dare_ties (other rule)"),
    "dare": ("dare", {"p": 0.3}, None, None, None, "L2S DARE (average of the masked pair)"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="1b")
    ap.add_argument("--layers", type=int, default=None, help="number of layers (default: the shape's)")
    ap.add_argument("--methods", default="task_arithmetic,l2s_ties,l2s_ties_global,dare_ta,l2s_dare_ties",
                    help=f"comma-separated, of {', '.join(CASES)}")
    ap.add_argument("--no-mergekit", action="store_true", help="run l2s only")
    ap.add_argument("--l2s-root", type=Path, default=ROOT, help="checkout of this repository to measure")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the inputs and merged outputs")
    ap.add_argument("--write", action="store_true", help="store the record in benchmarks/results/merge_bench-<shape>.json")
    args = ap.parse_args()
    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in CASES]
    if unknown:
        ap.error(f"unknown method(s) {unknown}; choose from {', '.join(CASES)}")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="l2s-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    hidden, inter, vocab, heads, kv, layers = SHAPES[args.shape]
    layers = args.layers or layers
    config = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": hidden,
              "intermediate_size": inter, "num_hidden_layers": layers, "num_attention_heads": heads,
              "num_key_value_heads": kv, "vocab_size": vocab, "max_position_embeddings": 4096, "rms_norm_eps": 1e-6,
              "rope_theta": 10000.0, "tie_word_embeddings": False, "dtype": "bfloat16", "hidden_act": "silu"}
    shapes = qwen2_shapes(hidden, inter, layers, vocab, heads, kv)
    nparams = sum(torch.Size(s).numel() for _, s in shapes)
    base, ft = work / "base", work / "ft"
    t = time.perf_counter()
    if not base.exists():
        build(base, shapes, 0, None, config)
    if not ft.exists():
        build(ft, shapes, 1, base, config)
    size = Checkpoint(base).weight_bytes()
    print(f"synthetic Qwen2 pair ({args.shape} shape, {layers} layers): {nparams / 1e9:.2f}B parameters, "
          f"{size / 1e9:.2f} GB bf16 per model, {len(list(base.glob('*.safetensors')))} shards "
          f"(ready in {time.perf_counter() - t:.0f} s)", flush=True)
    for p in (base, ft):  # hashed once per input, memoised: l2s's provenance does not re-hash in the timed runs
        model_fingerprint(p)
    for p in [*base.glob("*.safetensors"), *ft.glob("*.safetensors")]:  # warm the page cache for everyone
        with open(p, "rb") as f:
            while f.read(1 << 24):
                pass
    rows = []
    for name in methods:
        method, ours, mk_method, mk_model, mk_global, note = CASES[name]
        outs = {tag: work / f"{tag}_{name}" for tag in ("l2s", "mk16", "mk32")}
        for o in outs.values():
            shutil.rmtree(o, ignore_errors=True)
        l2s_cfg = {"merge_method": method, "base_model": str(base), "models": [{"model": str(ft)}],
                   "parameters": ours, "dtype": "bfloat16", "max_shard_size": 1 << 30}
        ours_r = run(RUN_L2S.format(root=str(args.l2s_root), cfg=l2s_cfg, out=str(outs["l2s"])))
        mk_runs = []
        if mk_method and not args.no_mergekit:
            mk = {"merge_method": mk_method, "base_model": str(base),
                  "models": [{"model": str(ft), "parameters": mk_model}], "parameters": mk_global}
            r = run(RUN_MK.format(cfg={**mk, "dtype": "bfloat16"}, out=str(outs["mk16"])))
            agree = compare(outs["l2s"], outs["mk16"]) if note == "same method" else note
            mk_runs.append((f"{mk_method}, bf16", r, agree))
            if name == "task_arithmetic":
                r = run(RUN_MK.format(cfg={**mk, "dtype": "float32", "out_dtype": "bfloat16"}, out=str(outs["mk32"])))
                mk_runs.append((f"{mk_method}, fp32", r, compare(outs["l2s"], outs["mk32"])))
        rows.append((name, ours_r, mk_runs or [("-", None, note)]))
        print(f"  {name}: l2s {ours_r['seconds']:.1f} s, {ours_r['rss'] / 1e9:.2f} GB"
              + "".join(f"; mergekit {t_} {r['seconds']:.1f} s, {r['rss'] / 1e9:.2f} GB" for t_, r, _ in mk_runs if r),
              flush=True)
        if not args.keep:
            for o in outs.values():
                shutil.rmtree(o, ignore_errors=True)

    def cells(r: dict | None) -> str:
        if r is None:
            return "- | - | - | -"
        return f"{r['seconds']:.1f} | {r['cpu']:.1f} | {r['rss'] / 1e9:.2f} | {r['rss'] / size:.1%}"

    print(f"\n| method | l2s wall (s) | l2s CPU (s) | l2s peak RSS (GB) | l2s RSS / model "
          f"| mergekit 0.1.5 | mk wall (s) | mk CPU (s) | mk peak RSS (GB) | mk RSS / model | outputs |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, ours_r, mk_runs in rows:
        for i, (tag, r, agree) in enumerate(mk_runs):
            print(f"| {name if i == 0 else ''} | {cells(ours_r) if i == 0 else '| | |'} | {tag} | {cells(r)} | {agree} |")
    imp = {"l2s": sorted({round(r[1]["rss_imports"] / 1e9, 2) for r in rows})}
    mk_imp = sorted({round(r["rss_imports"] / 1e9, 2) for _, _, m in rows for _, r, _ in m if r})
    print(f"\nRSS right after the imports (counted in peak RSS): l2s {imp['l2s']} GB, mergekit {mk_imp} GB. "
          f"Model: {size / 1e9:.2f} GB bf16.")
    print(f"({os.cpu_count()} CPU cores; torch {torch.__version__}; inputs in page cache; workdir {work})")
    if args.write:
        write_record(args.shape, layers, nparams, size, rows)
    if not args.keep and args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


def write_record(shape: str, layers: int, nparams: int, size: int, rows: list) -> Path:
    """``benchmarks/results/merge_bench-<shape>.json``: per method l2s's run and mergekit's runs (seconds, cpu,
    rss, rss_imports in bytes) with the agreement of the outputs."""
    import platform

    doc = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "shape": shape, "layers": layers, "params": nparams,
           "model_gb": size / 1e9, "imports_gb": max(r[1]["rss_imports"] for r in rows) / 1e9,
           "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}",
           "rows": [{"method": name, "l2s": ours, "mergekit": [{"method": t, "run": r, "outputs": a} for t, r, a in mk]}
                    for name, ours, mk in rows]}
    f = ROOT / "benchmarks" / "results" / f"merge_bench-{shape}.json"
    f.write_text(json.dumps(doc, indent=1) + "\n")
    return f


if __name__ == "__main__":
    main()
