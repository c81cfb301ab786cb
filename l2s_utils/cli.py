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
