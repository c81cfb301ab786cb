"""Twin / LoRE at real shapes: time, memory and error of the rank-r SVD against the exact SVD.

    .venv/bin/python benchmarks/svd_bench.py [--shapes 3584x3584,18944x3584,152064x3584] [--rank 8] [--exact-max 70000000] [--write]

``--write`` stores the record as ``benchmarks/results/svd_bench.json``, which the book's Reproduce page renders.

For each shape, a synthetic task-vector residual A (m x n, fp32) in two spectra: ``noise`` (i.i.d. Gaussian, a
flat spectrum: the worst case for any subspace method) and ``lowrank`` (rank-32 signal with a decaying
spectrum + 1% noise: what fine-tuning deltas look like). Twin's randomized SVD (:func:`top_right_subspace`,
fed in 512K-element row chunks as the engine does) is timed and compared with the exact truncated SVD
(``torch.linalg.svd``, whole matrix; skipped above ``--exact-max`` elements): relative difference of the
rank-r approximations and ratio of the residual norms ||A - A_r|| (1 = as good as exact). LoRE needs the
full spectrum (SVT); one exact SVD of the shape is timed, the cost of each delta update per model.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from l2s_utils.merge import methods as M  # noqa: E402


def rss_gb() -> float:
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmRSS")) / 1e9


def make(m: int, n: int, kind: str, g: torch.Generator) -> torch.Tensor:
    if kind == "noise":
        return torch.randn(m, n, generator=g) * 0.002
    r = 32  # signal sigma_j ~ 0.85^j (j < 32) plus noise of 1% of the entries' scale
    scale = 0.002 * torch.pow(torch.tensor(0.85), torch.arange(r, dtype=torch.float32))
    a = (torch.randn(m, r, generator=g) * scale) @ torch.randn(r, n, generator=g)
    return a.add_(torch.randn(m, n, generator=g), alpha=2e-5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="3584x3584,18944x3584,152064x3584")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--iterations", type=int, default=4)
    ap.add_argument("--exact-max", type=int, default=70_000_000, help="largest matrix (elements) for the exact SVD")
    ap.add_argument("--write", action="store_true", help="store the record in benchmarks/results/svd_bench.json")
    args = ap.parse_args()
    g = torch.Generator().manual_seed(0)
    rows = []
    print("| shape | spectrum | randomized (s) | exact SVD (s) | rel. diff of A_r | residual ratio |")
    print("|---|---|---|---|---|---|")
    for spec in args.shapes.split(","):
        m, n = (int(x) for x in spec.split("x"))
        for kind in ("noise", "lowrank"):
            a = make(m, n, kind, g)
            step = max(1, (1 << 19) // n)
            chunks = lambda: (a[r:r + step] for r in range(0, m, step))  # noqa: E731
            t = time.perf_counter()
            v = M.top_right_subspace(chunks, n, args.rank, iterations=args.iterations, seed=1)
            t_rand = time.perf_counter() - t
            row = {"shape": f"{m} x {n}", "spectrum": kind, "randomized_s": t_rand, "exact_s": None, "rel_diff": None,
                   "residual_ratio": None}
            if m * n <= args.exact_max:
                t = time.perf_counter()
                exact = M.svd_lowrank_exact(a, args.rank)
                row["exact_s"] = time.perf_counter() - t
                approx = (a @ v) @ v.t()
                row["rel_diff"] = float((approx - exact).norm() / exact.norm())
                row["residual_ratio"] = float((a - approx).norm() / (a - exact).norm())
                del exact, approx
            rows.append(row)
            cell = lambda x, f: "-" if x is None else format(x, f)  # noqa: E731
            print(f"| {m}x{n} | {kind} | {t_rand:.1f} | {cell(row['exact_s'], '.1f')} | {cell(row['rel_diff'], '.1e')} "
                  f"| {cell(row['residual_ratio'], '.5f')} |", flush=True)
            del a
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
    if args.write:
        doc = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "rank": args.rank, "oversample": 8,
               "iterations": args.iterations, "peak_rss_gb": peak, "rows": rows,
               "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}"}
        (Path(__file__).resolve().parent / "results" / "svd_bench.json").write_text(json.dumps(doc, indent=1) + "\n")
    print(f"\npeak RSS {peak:.2f} GB "
          f"(the matrices themselves are held here for the comparison; the engine streams them); "
          f"rank {args.rank}, oversample 8, {args.iterations} power iterations; torch {torch.__version__}")


if __name__ == "__main__":
    main()
