"""The ``l2s`` command line. Every subcommand has ``--help``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _cmd_merge(args: argparse.Namespace) -> int:
    from .merge import REGISTRY

    if args.list:
        seen = set()
        for key, m in sorted(REGISTRY.items()):
            if m.name in seen:
                continue
            seen.add(m.name)
            aliases = f" (aliases: {', '.join(m.aliases)})" if m.aliases else ""
            print(f"{m.name}{aliases}: {m.summary}  [{m.paper}]")
            if m.reference:
                import textwrap

                print(textwrap.fill(f"reference: {m.reference}", width=110, initial_indent="    ", subsequent_indent="      "))
            for p in m.params:
                scope = "per model" if p.per_model else "global"
                print(f"    {p.name:<12} {p.type.__name__:<6} default={p.default!r:<12} {scope:<9} {p.doc}")
        return 0
    if not args.config or not args.out:
        print("l2s merge: CONFIG and OUT are required (or --list)", file=sys.stderr)
        return 2
    from .merge import load_config, merge

    cfg = load_config(args.config)
    if args.allow_pickle:
        cfg.allow_pickle = True
    result = merge(cfg, args.out, overwrite=args.overwrite, device=args.device, seed=args.seed,
                   progress=not args.quiet)
    print(result.summary())
    return 0


def _cmd_organism(args: argparse.Namespace) -> int:
    import json

    from .organism import training as O

    scales = list(O.LADDER) if args.scale == "ladder" else [args.scale]
    failed = False
    for scale in scales:
        org = O.build(scale, cache=args.cache, force=args.force, progress=not args.quiet, seed=args.seed,
                      from_scratch=True if args.from_scratch else None)
        t = org.manifest["timings"]
        where = "shipped weights (data/organism)" if org.source == "shipped" else "trained on this machine"
        print(f"organism {scale}: {org.n_params / 1e6:.2f}M parameters, {where}, training took {t['total_s']:.0f} s "
              f"(recipe {org.manifest['recipe']}, seed {org.manifest['spec']['seed']})")
        for stage in ("base", "system1", "system2"):
            print(f"  {stage:<8} {getattr(org, stage)}")
        if args.premise:
            from .study.premise import premise_report, report_json

            rep = premise_report(org, n_per_level=args.n, progress=not args.quiet, smallest=scale == O.LADDER[0])
            print(rep["table"].round(1).to_string(index=False))
            print("task-arithmetic path (alpha 0 = System 1, 1 = System 2):")
            print(rep["path"].round(3).to_string(index=False))
            print("relative task-vector norm ||theta2 - theta1|| / ||theta1||:")
            print(rep["norms"].round(3).to_string(index=False))
            print("barriers: " + ", ".join(f"{k} {v:.3f}" for k, v in rep["barrier"].items()))
            for c in rep["checks"]:
                more = f" ({c['detail']})" if c.get("detail") else ""
                print(f"  [{'PASS' if c['passed'] else 'FAIL'}] {c['description']}: {c['value']}{more}")
            out = (org.root / "premise.json" if org.source == "trained" else
                   (args.cache or O.default_cache()) / "organism" / f"{org.root.name}.shipped-premise.json")
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(report_json(rep), indent=1, default=float))
            n_fail = sum(not c["passed"] for c in rep["checks"])
            print(f"  premise report: {out} ({len(rep['checks']) - n_fail} of {len(rep['checks'])} bars passed)")
            failed = failed or n_fail > 0
        if args.ship:
            dest = O.ship(org)
            if args.premise:  # the measured report travels with the weights (not part of their sha256)
                (dest / "premise.json").write_text(out.read_text())
                if n_fail:
                    print(f"  WARNING: shipping a pair that fails {n_fail} premise bar(s); the book reports them")
            print(f"  shipped to {dest}")
    return 1 if failed else 0


def _cmd_baselines(args: argparse.Namespace) -> int:
    from .study import baselines as B
    from .study.study import Study

    st = Study(args.profile, progress=not args.quiet)
    seen = st.trained_baselines()
    for method, train in seen:
        spec, org = st.trained_spec(method, train), st.pair()["organism"]
        b = B.build(method, org, spec=spec, progress=not args.quiet, from_scratch=True if args.from_scratch else None)
        where = "shipped weights (data/baselines)" if b.source == "shipped" else "trained on this machine"
        print(f"baseline {method} ({org.scale}): {where}, training took {b.manifest['train_s']:.0f} s "
              f"(recipe {B.recipe_key(spec, org.system2)})  {b.path}")
        if args.ship:
            print(f"  shipped to {B.ship(b, org.scale, spec, org.system2)}" if b.source == "trained"
                  else "  already shipped (nothing to do)")
    if not seen:
        print(f"profile {st.name} trains no baseline")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from .evaluate.generation import Sampling
    from .evaluate.metrics import summarize
    from .evaluate.pipeline import evaluate
    from .evaluate.prompts import stop_strings

    prompt = args.prompt or ("toy" if args.benchmark == "toy" else "qwen25-math-cot")
    max_tokens = args.max_tokens
    if max_tokens is None:
        if args.benchmark == "toy":
            from .study.premise import toy_max_tokens

            max_tokens = toy_max_tokens()
        else:
            from .evaluate.generation import PAPER_MAX_TOKENS as max_tokens
    sampling = Sampling(max_tokens=max_tokens, temperature=args.temperature, top_p=args.top_p, seed=args.seed,
                        think_budget=args.think_budget, think_min=args.think_min, stop_scale=args.stop_scale,
                        stop=stop_strings(prompt))
    options = {}
    if args.tensor_parallel_size:
        options["tensor_parallel_size"] = args.tensor_parallel_size
    if args.max_model_len:
        options["max_model_len"] = args.max_model_len
    if args.ray:
        options["distributed_executor_backend"] = "ray"
    if args.data_parallel_size > 1:
        options["data_parallel_size"] = args.data_parallel_size
    if args.batch_size and args.backend != "vllm":
        options["batch_size"] = args.batch_size
    df = evaluate(args.model, args.benchmark, limit=args.limit, prompt=prompt, backend=args.backend, sampling=sampling,
                  out=args.out, data=args.data, grading=args.grading, n_samples=args.n, progress=not args.quiet,
                  allow_pickle=args.allow_pickle, shard=args.shard, **options)
    if args.shard:
        print(f"shard {args.shard}: {df.id.nunique()} problems generated/cached and graded; run without --shard "
              f"once every shard is done to grade all of them (nothing is generated again)")
    s = summarize(df)
    r = s.iloc[0]
    print(f"{r.model} on {r.benchmark} (n={r.n}, grading {args.grading}): accuracy {r.accuracy:.1f}% [95% CI {r.acc_lo:.1f}, {r.acc_hi:.1f}]  "
          f"mean tokens {r.mean_tokens:.1f}  reflective {r.reflective_pct:.1f}%  truncated {r.truncated_pct:.1f}%")
    if args.n > 1:
        from .evaluate.metrics import sampled_metrics

        for _, m in sampled_metrics(df, ks=sorted({1, args.n})).iterrows():
            print(f"  k={m.k}: avg@k {m['avg@k']:.1f}% [{m.avg_lo:.1f}, {m.avg_hi:.1f}]  pass@k {m['pass@k']:.1f}% "
                  f"[{m.pass_lo:.1f}, {m.pass_hi:.1f}]  maj@k {m['maj@k']:.1f}% [{m.maj_lo:.1f}, {m.maj_hi:.1f}]  "
                  f"tokens/sample mean {m.mean_tokens:.1f} median {m.median_tokens:.1f}")
    print(f"results: {Path(args.out) / 'results' / df.model.iloc[0] / (args.benchmark + '.parquet')}")
    return 0


def _cmd_study(args: argparse.Namespace) -> int:
    from .study.chapters import BOOK, chapter_names
    from .study.driver import run_study

    chapters = chapter_names(args.book or BOOK)  # the book's _toc.yml, in its order
    notebooks = tuple(n for n in chapters if not args.only or any(n.startswith(o) for o in args.only))
    run_study(args.profile, out=args.out, book=args.book, notebooks=notebooks, progress=not args.quiet,
              record=args.record or None, jobs=args.jobs)
    return 0


def _positive_int(text: str, hint: str = "") -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n} is not a positive count{hint}")
    return n


def _limit(text: str) -> int:
    return _positive_int(text, " (omit --limit for every problem)")


def _samples(text: str) -> int:
    return _positive_int(text, " (samples per problem: 1 or more)")


def _positive(text: str) -> int:
    return _positive_int(text, "")


def _shard(text: str) -> str:
    from .evaluate.pipeline import parse_shard

    try:
        parse_shard(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _top_p(text: str) -> float:
    try:
        p = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 < p <= 1.0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{text} is not in (0, 1]")
    return p


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
    m.add_argument("--allow-pickle", action="store_true",
                   help="allow models with only pickle weights (*.bin); pickle can run code: trusted sources only")
    m.set_defaults(func=_cmd_merge)

    o = sub.add_parser("organism", help="build (or load) the toy System 1 / System 2 pair",
                       description="Train the model organism of one scale (cached; a second call loads it) "
                                   "and print the checkpoint paths.")
    o.add_argument("--scale", default="s", help="micro | xxs | xs | s (main) | m | l | ladder (the study's scales: xxs, xs, s, m)")
    o.add_argument("--force", action="store_true", help="retrain even if cached")
    o.add_argument("--cache", type=Path, default=None, help="cache directory (default ./cache or $L2S_CACHE_DIR)")
    o.add_argument("--premise", action="store_true", help="also evaluate System 1 / System 2 and check the premise")
    o.add_argument("-n", type=int, default=40, help="test problems per level for --premise (default 40, the book's test set)")
    o.add_argument("--seed", type=int, default=None, help="training seed (default: the scale's, 0); the shipped "
                   "weights are seed 0")
    o.add_argument("--from-scratch", action="store_true",
                   help="train here even if data/organism ships weights for this recipe (a local build is reused)")
    o.add_argument("--ship", action="store_true", help="copy the result into data/organism (maintainers: after a "
                   "recipe change)")
    o.add_argument("--quiet", action="store_true", help="no progress bars")
    o.set_defaults(func=_cmd_organism)

    b = sub.add_parser("baselines", help="build (or load) the profile's trained long-to-short baselines",
                       description="Train with TRL (or load from the cache or data/baselines) every trained baseline "
                                   "the profile's contenders name, from System 2 of its main pair; --ship copies them "
                                   "into data/baselines (sha256 per file) so that a fresh clone's book does not train.")
    b.add_argument("--profile", default="toy")
    b.add_argument("--from-scratch", action="store_true", help="train here even if shipped weights exist")
    b.add_argument("--ship", action="store_true", help="(maintainers) copy the trained baselines into data/baselines")
    b.add_argument("--quiet", action="store_true")
    b.set_defaults(func=_cmd_baselines)

    e = sub.add_parser("eval", help="evaluate a model on a benchmark (generate, grade, summarize)",
                       description="Generate greedy responses for a benchmark, grade them and print a summary. "
                                   "Generations are cached: a rerun or a resumed run only generates what is missing.")
    e.add_argument("--model", required=True, help="local checkpoint directory")
    e.add_argument("--benchmark", required=True, help="gsm8k | math500 | aime24 | minerva_math | olympiadbench | college_math | toy")
    e.add_argument("--limit", type=_limit, default=None, help="first N problems only (N >= 1)")
    e.add_argument("--backend", default="auto", choices=["auto", "vllm", "transformers"])
    e.add_argument("--max-tokens", type=int, default=None,
                   help="max new tokens (default: the paper's 10240; for --benchmark toy the toy profile's)")
    e.add_argument("--prompt", default=None, help="qwen25-math-cot (default) | cot | r1 | toy (default for --benchmark toy)")
    e.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (the paper); a number >= 0")
    e.add_argument("--think-budget", type=int, default=None,
                   help="budget forcing (s1): end the thinking after at most this many tokens")
    e.add_argument("--think-min", type=int, default=None,
                   help="budget forcing (s1): an end of thinking before this many tokens becomes 'Wait'")
    e.add_argument("--stop-scale", type=float, default=1.0,
                   help="stop scaling (TS, after Zhang et al. 2025): the end-of-thinking probability x this while thinking")
    e.add_argument("--seed", type=int, default=0, help="seed of sample 0 (sample s uses seed + s)")
    e.add_argument("--top-p", type=_top_p, default=1.0, help="nucleus sampling: 0 < p <= 1 (default 1)")
    e.add_argument("-n", type=_samples, default=1, help="samples per problem (needs --temperature > 0); prints avg@n, pass@n")
    e.add_argument("--data", type=Path, default=None, help="local JSONL in the Qwen2.5-Math toolkit format")
    e.add_argument("--out", type=Path, default=Path("runs/eval"), help="output directory (cache and results)")
    e.add_argument("--tensor-parallel-size", type=int, default=None, help="vLLM: GPUs per model (default: all visible)")
    e.add_argument("--max-model-len", type=int, default=None, help="vLLM: context length (prompt + max tokens)")
    e.add_argument("--ray", action="store_true", help="vLLM: use the Ray executor (multi-node tensor parallelism)")
    e.add_argument("--data-parallel-size", type=_positive, default=1,
                   help="model replicas on this node, prompts balanced between them (each --tensor-parallel-size GPUs)")
    e.add_argument("--shard", type=_shard, default=None,
                   help="i/N: evaluate only problem shard i of N (one per node, sharing --out); then run without it")
    e.add_argument("--batch-size", type=_positive, default=None, help="transformers backend: prompts per batch (default 64)")
    e.add_argument("--grading", default="strict", choices=["strict", "qwen-toolkit"],
                   help="grading protocol: strict (default) or qwen-toolkit (the paper's, to compare with its numbers)")
    e.add_argument("--allow-pickle", action="store_true",
                   help="allow a model with only pickle weights (*.bin); pickle can run code: trusted sources only")
    e.add_argument("--quiet", action="store_true", help="no progress bars")
    e.set_defaults(func=_cmd_eval)

    s = sub.add_parser("study", help="run the whole study for a profile and render the book",
                       description="Build the profile's models, execute the chapters listed in the book's _toc.yml "
                                   "(notebooks/<name>.ipynb) with papermill into book/chapters and build the book "
                                   "(jupyter-book 1.x). Unchanged notebooks are not re-run.")
    s.add_argument("--profile", default="toy", help="toy | smoke | qwen-1.5b | qwen-7b | qwen-14b | qwen-32b | qwen3-8b | a YAML path")
    s.add_argument("--out", type=Path, default=None, help="run directory (default runs/<profile>)")
    s.add_argument("--book", type=Path, default=None, help="book directory (default ./book)")
    s.add_argument("--only", nargs="*", default=None, help="notebook name prefixes to run (e.g. 00 01)")
    s.add_argument("--quiet", action="store_true")
    s.add_argument("--jobs", type=_positive_int, default=None,
                   help="chapters executed at a time (default: 2 for the organism with the transformers backend on a CPU machine with >= 2 cores, each "
                        "kernel with half the cores as threads; else 1; or L2S_STUDY_JOBS)")
    s.add_argument("--record", action="store_true",
                   help="also store the run's record (runs/<profile>/study-run.json) as benchmarks/results/study-<profile>.json, "
                        "which the Reproduce page shows (or set L2S_STUDY_RECORD=1)")
    s.set_defaults(func=_cmd_study)

    r = sub.add_parser("set-repository", help="record the repository's GitHub URL (Colab links, notebooks' clone URL)",
                       description="Write the GitHub URL into book/_config.yml (repository.url, .branch) and into "
                                   "every notebook's repo_url parameter, so that each chapter's 'Open in Colab' link "
                                   "and the notebooks' Colab set-up cell work. Run once, then commit.")
    r.add_argument("url", help="https://github.com/OWNER/REPO")
    r.add_argument("--branch", default="main")
    r.set_defaults(func=_cmd_set_repository)
    return ap


def _cmd_set_repository(args) -> int:
    from .study.reader import set_repository

    for f in set_repository(args.url, args.branch):
        print(f"[l2s set-repository] wrote {f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError) as e:  # our errors carry the file/tensor/parameter; OSErrors their file
        if isinstance(e, OSError) and not isinstance(e, FileExistsError) and e.filename:
            msg = f"{e.filename}: {e.strerror}"
        else:
            msg = " ".join(str(e).split()) or repr(e)
        print(f"l2s {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
