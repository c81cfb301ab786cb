"""Markdown tables of the stored run records (:mod:`l2s_utils.study.reproduce` picks the files).

Every number is formatted from the record as it is; what each one means is said in each function.
"""

from __future__ import annotations

from .profiles import PROFILE_DIR

FIRST = ("toy", "toy-vllm")  # the CPU profiles first; "smoke" is the tests' profile, not a study to reproduce


def profiles() -> list[str]:
    names = sorted(p.stem for p in PROFILE_DIR.glob("*.yaml") if p.stem != "smoke")
    return [n for n in FIRST if n in names] + [n for n in names if n not in FIRST]


def machine_text(m: dict) -> str:
    """CPU cores, architecture, the GPU when there was one, torch."""
    gpu = f", {m['gpu']}" if m.get("gpu") else ""
    return f"{m.get('cpu_count', '?')} CPU cores ({m.get('machine', '?')}){gpu}; torch {m.get('torch', '?')}"


def _model(r: dict | None) -> str:
    return "-" if r is None else f"{r['accuracy']:.1f}% at {r['mean_tokens']:,.0f} tokens"


def best_merge(results: list[dict]) -> dict | None:
    """The most accurate model other than System 1 and System 2 (fewer mean tokens break a tie)."""
    merges = [r for r in results if r["model"] not in ("System 1", "System 2")]
    return min(merges, key=lambda r: (-r["accuracy"], r["mean_tokens"]), default=None)


STUDY_HEAD = ("| profile | System 1 | System 2 | most accurate merge | wall time (chapters) | tokens generated | "
              "machine, commit, record |\n|---|---|---|---|---|---|---|\n")
STUDY_NOTE = ("System 1, System 2, merge: accuracy and mean response tokens over the run's merge chapters "
              "(mean over benchmarks where there are several). Wall time: the study (models, chapters, intro), then "
              "the book's build where recorded. Tokens generated: the generation-cache records this run added "
              "(generations served from the cache count nothing). A chapter left *unchanged* was not executed "
              "(its stamp matched): its seconds are 0, so a run with unchanged chapters is not a cold run.\n")


def jobs_text(doc: dict) -> str:
    """The side-by-side comparison of ``benchmarks/results/study-jobs-<profile>.json`` in words."""
    one, two = doc["one_at_a_time"], doc["two_at_a_time"]
    total = lambda r: r["seconds"] + (r.get("book_seconds") or 0)  # noqa: E731
    same = "identical" if doc.get("results_identical") else "**not identical**"
    return (f"Chapters side by side: `l2s study` executes two chapters at a time on a CPU machine (each kernel with "
            f"half the cores; `--jobs`, `L2S_STUDY_JOBS`). From two fresh clones of commit {str(two['commit'])[:10]}, "
            f"back to back on this machine, the `{two['profile']}` study took {total(two):,.0f} s two at a time against "
            f"{total(one):,.0f} s one at a time ({total(one) / total(two):.2f}x), results {same} "
            f"(`benchmarks/results/study-jobs-{two['profile']}.json`). A shared machine's speed varies from hour to "
            "hour, two threads of one kernel more than one-thread kernels side by side: compare runs made back to back, "
            "as these two were.\n")


def study_row(doc: dict, source: str) -> str:
    by = {r["model"]: r for r in doc.get("results", [])}
    best = best_merge(doc.get("results", []))
    ch = doc.get("chapters", [])
    run = sum(c["status"] == "executed" for c in ch)
    chapters = f"{run} of {len(ch)} executed" + (f", {len(ch) - run} unchanged" if run < len(ch) else "") + _jobs(doc)
    wall = f"{doc['seconds']:,.0f} s" + (f" + {doc['book_seconds']:,.0f} s book" if doc.get("book_seconds") else "")
    gen = doc.get("generated", {})
    commit = (doc.get("commit") or "-")[:10] + (" (uncommitted changes)" if doc.get("dirty") else "")
    merge = "-" if best is None else f"{best['model']}: {_model(best)}"
    cells = [f"`{doc['profile']}`", _model(by.get("System 1")), _model(by.get("System 2")), merge,
             f"{wall} ({chapters}" + (f"; {weights_text(doc)}" if doc.get("weights") else "") + ")",
             f"{gen.get('tokens', 0):,} ({gen.get('responses', 0):,} responses)",
             f"{machine_text(doc.get('machine', {}))}; commit {commit}; {source}"]
    return "| " + " | ".join(cells) + " |"


def _jobs(doc: dict) -> str:
    """", 2 at a time" for a run that executed chapters side by side ("" for one at a time or an older record)."""
    return f", {doc['jobs']} at a time" if int(doc.get("jobs") or 1) > 1 else ""


def weights_text(doc: dict) -> str:
    """Where the run's trained models came from, in words ("" when the record does not say)."""
    w = doc.get("weights")
    if not w:
        return ""

    def say(sources: dict) -> str:
        kinds = sorted(set(sources.values()))
        return kinds[0] if len(kinds) == 1 else ", ".join(f"{k} {v}" for k, v in sources.items())

    parts = [f"organism {say(w['organism'])}"] + ([f"trained baselines {say(w['baselines'])}"] if w.get("baselines") else [])
    return "; ".join(parts)


def readme_line(doc: dict, date: str) -> str:
    """One README line per stored study run: its wall time, chapters executed, tokens generated, where its trained
    models came from, machine, date."""
    ch = doc.get("chapters", [])
    run = sum(c["status"] == "executed" for c in ch)
    w = weights_text(doc)
    return (f"- `{doc['profile']}`: the study took {doc['seconds']:,.0f} s ({run} of {len(ch)} chapters executed{_jobs(doc)}), "
            f"{doc.get('generated', {}).get('tokens', 0):,} tokens generated" + (f" ({w})" if w else "") +
            f"; {machine_text(doc.get('machine', {}))}; {date} (`benchmarks/results/study-{doc['profile']}.json`).")


def _speed(r: dict | None) -> str:
    return "-" if not r else f"{r['tokens_per_s']:,.0f} ({r['ms_per_step']:.1f})"


def _vllm(v: dict | None) -> str:
    if v is None:
        return "not run (no `.venv-vllm`)"
    if "error" in v:
        return "failed (see `benchmarks/generation_bench.py`)"
    return f"{v['tokens_per_s']:,.0f} (engine start {v['start_s']:.0f} s)"


def generation(doc: dict) -> str:
    """Two tables per model and batch. Greedy: tokens/s and ms per decoding step of the fast decoder (as the study runs
    it: finished rows leave the batch), of the same decoder with the batch kept whole, and of model.generate; the ratio
    fast / generate and the responses identical between the two. Sampled and vLLM: the fast decoder's and
    model.generate's sampled tokens/s and the samples identical between them, vLLM's greedy tokens/s, and the compute
    limit (2 x parameters FLOPs per token at the measured matmul throughput)."""
    n = doc["prompts"]
    lines = [f"{n} toy prompts, at most {doc['max_tokens']:,} new tokens; float32 matmul "
             f"{doc['matmul_gflops']:,.0f} GFLOP/s. Tokens/s (ms per decoding step).", "",
             "Greedy:", "",
             "| model | batch | fast decoder | fast, batch kept whole | model.generate | fast / generate "
             "| identical responses |", "|---|---|---|---|---|---|---|"]
    for r in doc["runs"]:
        g = r.get("generate")
        ratio = f"{r['fast']['tokens_per_s'] / g['tokens_per_s']:.2f}x" if g else "-"
        same = f"{r['identical']}/{n}" if "identical" in r else "-"
        lines.append(f"| {r['model']} | {r['batch']} | {_speed(r['fast'])} | {_speed(r.get('fast_whole_batch'))} | "
                     f"{_speed(g)} | {ratio} | {same} |")
    lines += ["", "Sampled (temperature 0.7) and vLLM (greedy):", "",
              "| model | batch | sampled, fast decoder | sampled, model.generate | identical samples | vLLM "
              "| compute limit |", "|---|---|---|---|---|---|---|"]
    for r in doc["runs"]:
        same = f"{r['sampled_identical']}/{n}" if "sampled_identical" in r else "-"
        lines.append(f"| {r['model']} | {r['batch']} | {_speed(r.get('sampled_fast'))} | "
                     f"{_speed(r.get('sampled_generate'))} | {same} | {_vllm(r.get('vllm'))} | "
                     f"{r['compute_limit_tokens_per_s']:,.0f} |")
    return "\n".join(lines) + "\n"


def vllm_agreement(doc: dict) -> str:
    """Per model: responses token-identical (count), answers / finish reasons that agree (%), accuracy (%) and
    tokens/s of each backend, vLLM's engine start, the largest logit gap at a divergence."""
    n = doc["n_prompts"]
    lines = [f"vLLM dtype `{doc['vllm_dtype']}`: {n} toy prompts, greedy, at most {doc['max_tokens']:,} new tokens.", "",
             "| model | responses token-identical | answers agree | finish reasons agree | accuracy transformers / vLLM "
             "| tokens/s transformers / vLLM | vLLM engine start | largest logit gap at a divergence |",
             "|---|---|---|---|---|---|---|---|"]
    for name, m in doc["models"].items():
        gap = m.get("max_abs_logit_gap")
        lines.append(f"| {name} | {round(m['token_identical_pct'] * n / 100)}/{n} | {m['answer_agreement_pct']:.1f}% | "
                     f"{m['finish_agreement_pct']:.1f}% | {m['accuracy_pct']['transformers']:.1f} / "
                     f"{m['accuracy_pct']['vllm']:.1f} | {m['tokens_per_s']['transformers']:,.0f} / "
                     f"{m['tokens_per_s']['vllm']:,.0f} | {m['seconds']['vllm_engine_start']:.0f} s | "
                     + ("-" if gap is None else f"{gap:.3f}") + " |")
    return "\n".join(lines) + "\n"


def _merge_cells(r: dict | None, model_bytes: float) -> str:
    if r is None:
        return "- | - | -"
    return f"{r['seconds']:.1f} | {r['cpu']:.1f} | {r['rss'] / 1e9:.2f} ({r['rss'] / model_bytes:.1%})"


def merges(doc: dict) -> str:
    """Per method: wall and CPU seconds, peak RSS in GB (and over one model's size) of l2s and of mergekit's
    method of the same family, and whether the outputs agree (``benchmarks/merge_bench.py --write``)."""
    size = doc["model_gb"] * 1e9
    lines = [f"Synthetic Qwen2 pair, `{doc['shape']}` shape with {doc['layers']} layers: {doc['params'] / 1e9:.2f}B "
             f"parameters, {doc['model_gb']:.2f} GB bf16 per model. Peak RSS includes the imports (l2s: "
             f"{doc['imports_gb']:.2f} GB).", "",
             "| method | l2s wall s | l2s CPU s | l2s peak GB (/ model) | mergekit | wall s | CPU s | peak GB (/ model) "
             "| outputs |", "|---|---|---|---|---|---|---|---|---|"]
    for row in doc["rows"]:
        for i, mk in enumerate(row["mergekit"]):
            ours = _merge_cells(row["l2s"], size) if i == 0 else "| |"
            lines.append(f"| {row['method'] if i == 0 else ''} | {ours} | {mk['method']} | "
                         f"{_merge_cells(mk['run'], size)} | {mk['outputs']} |")
    return "\n".join(lines) + "\n"


def svd(doc: dict) -> str:
    """Per shape and spectrum: seconds of the randomized rank-r subspace and of the exact SVD, the relative
    difference of the two rank-r approximations and the ratio of their residual norms (1 = as good as exact)."""
    cell = lambda v, f: "not run" if v is None else format(v, f)  # noqa: E731
    lines = [f"Rank {doc['rank']}, oversampling {doc['oversample']}, {doc['iterations']} power iterations, fp32; the "
             f"process peaked at {doc['peak_rss_gb']:.2f} GB (it holds the test matrices).", "",
             "| shape | spectrum | randomized (s) | exact SVD (s) | relative difference of $A_r$ | residual ratio |",
             "|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        lines.append(f"| {r['shape']} | {r['spectrum']} | {r['randomized_s']:.1f} | {cell(r['exact_s'], '.1f')} | "
                     f"{cell(r['rel_diff'], '.1e')} | {cell(r['residual_ratio'], '.4f')} |")
    return "\n".join(lines) + "\n"


def device(doc: dict) -> str:
    """Generation (tokens, seconds, tokens/s, accuracy) and merges (seconds) on the CPU and on CUDA, same
    machine, same run, with how many responses / outputs agree (``benchmarks/device_bench.py --write``)."""
    speed = lambda d: f"{d['tokens']:,} tokens in {d['seconds']:.1f} s ({d['tokens'] / d['seconds']:,.0f} tokens/s)"  # noqa: E731
    lines = [f"{doc['device']}, torch {doc['torch']}; CPU with {doc['threads']} threads.", "",
             "| what | CPU | CUDA | agreement |", "|---|---|---|---|"]
    if g := doc.get("generation"):
        n = g["n"]
        lines.append(f"| generation: {g['what']}, {n} toy prompts, greedy | {speed(g['cpu'])} | {speed(g['cuda'])} | "
                     f"{g['identical']}/{n} responses identical; accuracy {g['cpu']['accuracy']:.1f}% / "
                     f"{g['cuda']['accuracy']:.1f}% |")
    for m in doc.get("merges", []):
        lines.append(f"| merge, {m['method']} | {m['cpu_s']:.1f} s | {m['cuda_s']:.1f} s | {m['outputs']} |")
    return "\n".join(lines) + "\n"
