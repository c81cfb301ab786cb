"""The ``l2s`` command line. Every subcommand has ``--help``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _cmd_merge(args: argparse.Namespace) -> int:
    from .methods import REGISTRY

    if args.list:
        seen = set()
        for key, m in sorted(REGISTRY.items()):
            if m.name in seen:
                continue
            seen.add(m.name)
            aliases = f" (aliases: {', '.join(m.aliases)})" if m.aliases else ""
            print(f"{m.name}{aliases}: {m.summary}  [{m.paper}]")
            for p in m.params:
                scope = "per model" if p.per_model else "global"
                print(f"    {p.name:<12} {p.type.__name__:<6} default={p.default!r:<12} {scope:<9} {p.doc}")
        return 0
    if not args.config or not args.out:
        print("l2s merge: CONFIG and OUT are required (or --list)", file=sys.stderr)
        return 2
    from .merging import merge

    result = merge(args.config, args.out, overwrite=args.overwrite, device=args.device, seed=args.seed,
                   progress=not args.quiet)
    print(result.summary())
    return 0


def _cmd_organism(args: argparse.Namespace) -> int:
    import json

    from . import organism as O

    scales = list(O.LADDER) if args.scale == "ladder" else [args.scale]
    for scale in scales:
        org = O.build(scale, cache=args.cache, force=args.force, progress=not args.quiet)
        t = org.manifest["timings"]
        print(f"organism {scale}: {org.n_params / 1e6:.2f}M parameters, built in {t['total_s']:.0f} s "
              f"(hash {org.manifest['hash']})")
        for stage in ("base", "system1", "system2"):
            print(f"  {stage:<8} {getattr(org, stage)}")
        if args.premise:
            rows, table, checks = O.premise_report(org, n_per_level=args.n, progress=not args.quiet)
            print(table.round(1).to_string(index=False))
            for c in checks:
                print(f"  [{'PASS' if c['passed'] else 'FAIL'}] {c['description']}: {c['value']}")
            out = org.root / "premise.json"
            out.write_text(json.dumps({"table": table.to_dict(orient="records"), "checks": checks}, indent=1))
            print(f"  premise report: {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="l2s", description="Model merging for long-to-short reasoning (arXiv 2503.20641).")
    sub = ap.add_subparsers(dest="command", required=True)

    m = sub.add_parser("merge", help="merge models from a mergekit-style YAML config",
                       description="Merge the models named in CONFIG (mergekit-style YAML) into a new checkpoint OUT.")
    m.add_argument("config", nargs="?", type=Path, help="merge config (YAML)")
    m.add_argument("out", nargs="?", type=Path, help="output directory (must not exist unless --overwrite)")
    m.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    m.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (computation device; default cpu)")
    m.add_argument("--seed", type=int, default=None, help="seed for random masks (DARE); overrides the config")
    m.add_argument("--quiet", action="store_true", help="no progress bar")
    m.add_argument("--list", action="store_true", help="list the merge methods and their parameters")
    m.set_defaults(func=_cmd_merge)

    o = sub.add_parser("organism", help="build (or load) the toy System 1 / System 2 pair",
                       description="Train the model organism of one scale (cached; a second call loads it) "
                                   "and print the checkpoint paths.")
    o.add_argument("--scale", default="m", help="micro | xs | s | m (main) | l | ladder (all study scales)")
    o.add_argument("--force", action="store_true", help="retrain even if cached")
    o.add_argument("--cache", type=Path, default=None, help="cache directory (default ./cache or $L2S_CACHE_DIR)")
    o.add_argument("--premise", action="store_true", help="also evaluate System 1 / System 2 and check the premise")
    o.add_argument("-n", type=int, default=50, help="test problems per level for --premise (default 50)")
    o.add_argument("--quiet", action="store_true", help="no progress bars")
    o.set_defaults(func=_cmd_organism)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileExistsError, FileNotFoundError) as e:  # our errors carry the file/tensor/parameter
        print(f"l2s {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
