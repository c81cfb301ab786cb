"""The Reproduce page's and the README's run figures are written from stored records (l2s_utils.study.reproduce),
never typed by hand; a study run writes its own record (l2s_utils.study.runrecord)."""

import json
import shutil
import re
from pathlib import Path

from l2s_utils.study import reproduce, runrecord
from l2s_utils.study import reproduce_tables as tables

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "book" / "reproduce.md"

STUDY = {"profile": "toy", "created": "2026-12-09T10:00:00+00:00", "commit": "0123456789abcdef", "dirty": False,
         "machine": {"cpu_count": 2, "machine": "x86_64", "gpu": None, "torch": "2.13.0+cpu"},
         "chapters": [{"notebook": "00_testbed", "status": "executed", "seconds": 100.0},
                      {"notebook": "01_task", "status": "unchanged", "seconds": 0.0}],
         "seconds": 1234.4, "book_seconds": 30.2, "generated": {"responses": 1500, "tokens": 123456},
         "results": [{"model": "System 1", "accuracy": 25.84, "mean_tokens": 61.2, "n": 194},
                     {"model": "System 2", "accuracy": 59.79, "mean_tokens": 374.6, "n": 194},
                     {"model": "TIES", "accuracy": 60.3, "mean_tokens": 240.0, "n": 194},
                     {"model": "TA", "accuracy": 60.3, "mean_tokens": 230.5, "n": 194},
                     {"model": "DARE", "accuracy": 50.0, "mean_tokens": 100.0, "n": 194}]}


def test_a_study_record_is_formatted_as_it_is(tmp_path):
    (tmp_path / "study-toy.json").write_text(json.dumps(STUDY))
    text = reproduce.study_runs(tmp_path)
    row = next(line for line in text.splitlines() if line.startswith("| `toy`"))
    assert ("| `toy` | 25.8% at 61 tokens | 59.8% at 375 tokens | TA: 60.3% at 230 tokens | 1,234 s + 30 s book "
            "(1 of 2 executed, 1 unchanged) | 123,456 (1,500 responses) | 2 CPU cores (x86_64); torch 2.13.0+cpu; "
            "commit 0123456789; `") in row  # TA and TIES tie on accuracy: fewer tokens wins
    assert "2026-12-09" in row and "study-toy.json" in row
    # every other built-in profile has no record: the page says so, with the command that measures it
    assert "`qwen-7b` (`l2s study --profile qwen-7b --record`)" in text and "Not measured yet" in text
    assert "`smoke`" not in text


def test_a_record_says_where_its_trained_models_came_from(tmp_path):
    """A run on shipped weights says so beside its time (a cold run that trains nothing is not a run that trains)."""
    from l2s_utils.study import reproduce_tables as RT

    shipped = {**STUDY, "weights": {"organism": {"s": "shipped", "m": "shipped"},
                                    "baselines": {"tldr": "shipped", "dpo": "shipped"}}}
    assert RT.weights_text(shipped) == "organism shipped; trained baselines shipped"
    mixed = {**STUDY, "weights": {"organism": {"s": "trained"}, "baselines": {"tldr": "shipped", "dpo": "trained"}}}
    assert RT.weights_text(mixed) == "organism trained; trained baselines tldr shipped, dpo trained"
    assert RT.weights_text(STUDY) == ""  # an older record: nothing said, nothing guessed
    (tmp_path / "study-toy.json").write_text(json.dumps(shipped))
    row = next(line for line in reproduce.study_runs(tmp_path).splitlines() if line.startswith("| `toy`"))
    assert "(1 of 2 executed, 1 unchanged; organism shipped; trained baselines shipped)" in row
    assert "(organism shipped; trained baselines shipped);" in RT.readme_line(shipped, "2026-12-09")


def test_the_record_looks_up_shipped_weights_without_training(tmp_path, monkeypatch):
    """On a fresh machine (an empty cache) the toy profile's organism and baselines are the shipped ones."""
    from l2s_utils.study import baselines as B
    from l2s_utils.study import runrecord
    from l2s_utils.study.profiles import load_profile

    monkeypatch.setenv("L2S_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(B, "build", lambda *a, **k: (_ for _ in ()).throw(AssertionError("would train")))
    w = runrecord.weights(load_profile("toy"), [{"scale": "s", "source": "shipped"}])
    assert w == {"organism": {"s": "shipped"},
                 "baselines": {"tldr": "shipped", "selfbudgeter": "shipped", "dpo": "shipped"}}
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.safetensors"))


def test_missing_records_say_not_measured(tmp_path):
    frags = reproduce.fragments(tmp_path)
    assert "No study run has been recorded yet" in frags["reproduce-study.md"]
    for name in ("reproduce-generation.md", "reproduce-vllm.md", "reproduce-merge.md", "reproduce-svd.md",
                 "reproduce-device.md"):
        assert reproduce.NOT_RUN in frags[name] and "; run `" in frags[name], name
        assert not RESULT.search(frags[name]), (name, frags[name])
    assert "No study run has been recorded yet" in reproduce.readme_block(tmp_path)


def test_generation_record_table():
    doc = {"machine": "x86_64, 2 CPU cores", "matmul_gflops": 339.7, "prompts": 194, "max_tokens": 1024,
           "runs": [{"model": "System 2", "batch": 128, "compute_limit_tokens_per_s": 291190.9,
                     "fast": {"tokens_per_s": 4838.6, "ms_per_step": 11.056},
                     "generate": {"tokens_per_s": 1424.0, "ms_per_step": 37.57}, "identical": 194,
                     "fast_whole_batch": {"tokens_per_s": 2419.3, "ms_per_step": 22.11},
                     "sampled_fast": {"tokens_per_s": 3000.0, "ms_per_step": 9.0},
                     "sampled_generate": {"tokens_per_s": 1500.0, "ms_per_step": 18.0}, "sampled_identical": 194,
                     "vllm": {"error": "Traceback ... RuntimeError: Engine core initialization failed"}},
                    {"model": "System 1", "batch": 32, "compute_limit_tokens_per_s": 1000.0,
                     "fast": {"tokens_per_s": 100.0, "ms_per_step": 2.0}, "vllm": None}]}
    t = tables.generation(doc)
    assert "| System 2 | 128 | 4,839 (11.1) | 2,419 (22.1) | 1,424 (37.6) | 3.40x | 194/194 |" in t  # 4838.6 / 1424 = 3.398
    assert ("| System 2 | 128 | 3,000 (9.0) | 1,500 (18.0) | 194/194 | failed (see `benchmarks/generation_bench.py`) "
            "| 291,191 |") in t
    assert "| System 1 | 32 | 100 (2.0) | - | - | - | - |" in t  # an older record without the whole-batch run
    assert "| System 1 | 32 | - | - | - | not run (no `.venv-vllm`) | 1,000 |" in t
    assert "Traceback" not in t and "340 GFLOP/s" in t and "at most 1,024 new tokens" in t


def test_vllm_merge_svd_device_tables():
    m = {"token_identical_pct": 59.79381443298969, "answer_agreement_pct": 100.0, "finish_agreement_pct": 99.5,
         "accuracy_pct": {"transformers": 97.938, "vllm": 98.454}, "tokens_per_s": {"transformers": 3457.8, "vllm": 7424.6},
         "seconds": {"vllm_engine_start": 17.08}, "max_abs_logit_gap": 0.0589}
    t = tables.vllm_agreement({"n_prompts": 194, "max_tokens": 600, "vllm_dtype": "auto", "models": {"System 2": m}})
    assert "| System 2 | 116/194 | 100.0% | 99.5% | 97.9 / 98.5 | 3,458 / 7,425 | 17 s | 0.059 |" in t
    run = {"seconds": 6.54, "cpu": 6.0, "rss": 0.27e9, "rss_imports": 0.23e9}
    doc = {"shape": "1b", "layers": 22, "params": 1.12e9, "model_gb": 2.25, "imports_gb": 0.23,
           "rows": [{"method": "task_arithmetic", "l2s": run, "mergekit": [
               {"method": "task_arithmetic, bf16", "run": {**run, "seconds": 19.5, "rss": 3.23e9}, "outputs": "identical"},
               {"method": "task_arithmetic, fp32", "run": None, "outputs": "x"}]}]}
    t = tables.merges(doc)
    assert "| task_arithmetic | 6.5 | 6.0 | 0.27 (12.0%) | task_arithmetic, bf16 | 19.5 | 6.0 | 3.23 (143.6%) | identical |" in t
    assert "|  | | | | task_arithmetic, fp32 | - | - | - | x |" in t
    t = tables.svd({"rank": 8, "oversample": 8, "iterations": 4, "peak_rss_gb": 4.654, "rows": [
        {"shape": "3584 x 3584", "spectrum": "lowrank", "randomized_s": 0.12, "exact_s": 10.04, "rel_diff": 3.4e-6,
         "residual_ratio": 1.00001},
        {"shape": "152064 x 3584", "spectrum": "noise", "randomized_s": 2.3, "exact_s": None, "rel_diff": None,
         "residual_ratio": None}]})
    assert "| 3584 x 3584 | lowrank | 0.1 | 10.0 | 3.4e-06 | 1.0000 |" in t and "| 2.3 | not run | not run | not run |" in t
    t = tables.device({"device": "NVIDIA H100", "torch": "2.11", "threads": 2,
                       "generation": {"what": "System 2", "n": 234, "identical": 234, "same_answer": 234,
                                      "cpu": {"tokens": 51261, "seconds": 5.0, "accuracy": 39.3},
                                      "cuda": {"tokens": 51261, "seconds": 3.3, "accuracy": 39.3}},
                       "merges": [{"method": "ta", "cpu_s": 4.8, "cuda_s": 3.7, "outputs": "identical"}]})
    assert "51,261 tokens in 5.0 s (10,252 tokens/s) | 51,261 tokens in 3.3 s (15,534 tokens/s) | 234/234" in t
    assert "| merge, ta | 4.8 s | 3.7 s | identical |" in t


def test_every_fragment_names_its_source_date_and_machine():
    for name, text in reproduce.fragments().items():
        if reproduce.NOT_RUN in text or "recorded yet" in text:
            continue
        assert "*Source: `benchmarks/results/" in text or "study-" in text, name
        assert re.search(r"\d{4}-\d{2}-\d{2}", text), name


def test_the_page_includes_every_fragment():
    page = PAGE.read_text()
    for name in reproduce.FRAGMENTS:
        assert f"```{{include}} _generated/{name}\n```" in page, name
    assert page.index("reproduce-study.md") < page.index("## Laptop"), "the page opens with the study runs"


def test_readme_holds_the_study_runs_written_from_the_records():
    text = (ROOT / "README.md").read_text()
    got = text[text.index(reproduce.README_BEGIN):text.index(reproduce.README_END) + len(reproduce.README_END)]
    assert got == reproduce.readme_block(), "README's study runs are stale: run python -m l2s_utils.study.reproduce --write"


# a hand-typed run result: seconds, GB, tokens/s, a speed-up, a percentage with decimals
RESULT = re.compile(r"(?<![\w.])\d[\d,.]*(x\b|\s?(s|GB|tokens/s)\b)|\d\.\d+%|\d+ / \d+ s\b")
CONVERTED = (("## Expected results", "## Laptop"), ("## Sizing the machine", "## Several GPUs"),
             ("## Generation speed on CPU", None))


def test_converted_sections_carry_no_hand_typed_run_results():
    page = PAGE.read_text()
    for start, end in CONVERTED:
        section = page[page.index(start):page.index(end) if end else None]
        found = [m.group(0) for m in RESULT.finditer(section)]
        assert not found, f"{start}: hand-typed run figures {found}: render them from a record"
    for old in ("took 1,658 s with vLLM", "7,425 vs 3,458 tokens/s", "accuracy 39.3% on both", "at roughly 50-90x the",
                "0.27-0.29 GB", "testbed 51 / 185 s"):  # the check sees what the page used to carry
        assert RESULT.search(old), old


def test_a_run_counts_only_the_generations_it_added(tmp_path):
    gen = tmp_path / "eval" / "generations"
    gen.mkdir(parents=True)
    line = lambda s, n: json.dumps({"prompt_sha": s, "text": "t", "n_tokens": n, "finish_reason": "stop"}) + "\n"  # noqa: E731
    (gen / "k1.jsonl").write_text(line("a", 10) + line("b", 20))
    before = runrecord.generation_records(tmp_path)
    with open(gen / "k1.jsonl", "a") as f:
        f.write(line("c", 5) + "{broken")
    (gen / "k2.part-host-1.jsonl").write_text(line("a", 7))
    assert runrecord.generated_since(tmp_path, before) == {"responses": 2, "tokens": 12}


def test_the_record_is_saved_and_published_on_request(tmp_path):
    rec = {**STUDY, "profile": "smoke"}
    runrecord.save(rec, tmp_path / "run", publish=False, results_dir=tmp_path / "results")
    assert json.loads((tmp_path / "run" / runrecord.RECORD).read_text()) == rec
    assert not (tmp_path / "results").exists()
    runrecord.save(rec, tmp_path / "run", publish=True, results_dir=tmp_path / "results")
    assert json.loads((tmp_path / "results" / "study-smoke.json").read_text()) == rec


def test_the_study_writes_its_record_and_the_page_fragments(tmp_path, monkeypatch):
    import papermill

    from l2s_utils.study import driver

    def fake_execute(src, dst, parameters, **kw):  # a chapter that generates one response of 9 tokens
        gen = Path(tmp_path / "run" / "eval" / "generations")
        gen.mkdir(parents=True, exist_ok=True)
        (gen / f"{Path(src).stem}.jsonl").write_text(json.dumps(
            {"prompt_sha": "p", "text": "t", "n_tokens": 9, "finish_reason": "stop"}) + "\n")
        Path(dst).write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))

    monkeypatch.setattr(papermill, "execute_notebook", fake_execute)
    monkeypatch.setattr(driver, "organism_models", lambda *a, **k: [])
    monkeypatch.setattr(driver, "build_book", lambda book: book / "index.html")
    monkeypatch.delenv("L2S_STUDY_RECORD", raising=False)
    monkeypatch.setenv("L2S_STUDY_JOBS", "1")  # in this process, where papermill is replaced
    (tmp_path / "book").mkdir()
    names = ("00_testbed", "01_task_vector_merging")
    for _ in range(2):  # the second run finds both chapters unchanged: no seconds, no tokens
        driver.run_study("smoke", out=tmp_path / "run", book=tmp_path / "book", notebooks=names, progress=False)
        rec = json.loads((tmp_path / "run" / runrecord.RECORD).read_text())
        if _ == 0:
            assert [c["status"] for c in rec["chapters"]] == ["executed", "executed"]
            assert rec["generated"] == {"responses": 2, "tokens": 18}
    assert [(c["status"], c["seconds"]) for c in rec["chapters"]] == [("unchanged", 0.0), ("unchanged", 0.0)]
    assert rec["generated"] == {"responses": 0, "tokens": 0} and rec["profile"] == "smoke"
    assert rec["machine"]["cpu_count"] and "book_seconds" in rec and rec["created"][:2] == "20"
    assert sorted(p.name for p in (tmp_path / "book" / "_generated").glob("reproduce-*.md")) == sorted(reproduce.FRAGMENTS)
    assert not (runrecord.RESULTS / "study-smoke.json").exists()  # stored only when asked (--record)


def test_gitinfo_reads_this_checkout_and_answers_none_outside_git(tmp_path):
    from l2s_utils.study import gitinfo

    sha, dirty = gitinfo.head()
    if sha is not None:  # CI runs in a clone; a tarball has no .git
        assert len(sha) == 40 and dirty in (True, False)
        assert gitinfo.describe().startswith(sha[:10])
    assert gitinfo.head(tmp_path) == (None, None)
    assert gitinfo.describe(tmp_path).startswith("unknown")
    assert gitinfo.file_date(tmp_path / "nothing.txt", tmp_path) is None


def test_tables_let_a_value_and_its_interval_wrap_and_settings_stand_side_by_side():
    """A value with its interval may break between the two (never inside either); settings of a few things are one
    column per thing, so the table stays narrow."""
    import pandas as pd

    from l2s_utils.study import reader

    h = reader.table_html(pd.DataFrame({"model": ["A"], "accuracy": ["61.0 [54.0, 68.0]"], "range": ["4 (1 to 9)"]}))
    assert '<span style="white-space:nowrap">61.0</span> <span style="white-space:nowrap">[54.0, 68.0]</span>' in h
    assert '<span style="white-space:nowrap">(1 to 9)</span>' in h
    t = reader.settings([{"name": "tldr", "steps": 48, "lr": 0.0002, "beta": None},
                         {"name": "dpo", "steps": 60, "lr": 1e-4, "minutes": 1.148}], "name")
    assert list(t.columns) == ["setting", "tldr", "dpo"]
    assert t.set_index("setting").to_dict("index") == {
        "steps": {"tldr": "48", "dpo": "60"}, "lr": {"tldr": "0.0002", "dpo": "0.0001"},
        "beta": {"tldr": "-", "dpo": "-"}, "minutes": {"tldr": "-", "dpo": "1.15"}}


def test_reproduce_page_shows_the_side_by_side_comparison(tmp_path):
    from l2s_utils.study import reproduce

    real = ROOT / "benchmarks" / "results"
    shutil.copy(real / "study-toy.json", tmp_path / "study-toy.json")
    assert "Chapters side by side" not in reproduce.study_runs(tmp_path)
    one = {"profile": "toy", "commit": "abcdef1234567", "seconds": 800.0, "book_seconds": 4.0, "jobs": 1}
    two = {**one, "seconds": 500.0, "jobs": 2}
    for same, word in ((True, "results identical"), (False, "results **not identical**")):
        (tmp_path / "study-jobs-toy.json").write_text(json.dumps(
            {"results_identical": same, "one_at_a_time": one, "two_at_a_time": two}))
        text = reproduce.study_runs(tmp_path)
        assert "504 s two at a time against 804 s one at a time (1.60x)" in text and word in text
        assert "commit abcdef1234" in text
