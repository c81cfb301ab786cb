"""Data-parallel generation and multi-node shards: balanced sharding, one cache part per writer, the union
read back, resume after a replica is killed (SIGKILL, a real process), failures named, ``--shard i/N``.

Real replicas: two spawned CPU processes running the transformers backend on the shipped organism.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import yaml

from l2s_utils.evaluate import pipeline
from l2s_utils.evaluate.benchmarks import load_benchmark
from l2s_utils.evaluate.generation import Sampling, generate_transformers
from l2s_utils.evaluate.prompts import build_prompt, stop_strings

ROOT = Path(__file__).resolve().parents[1]
MODEL = next((ROOT / "data" / "organism").glob("s-*/system2"))  # the shipped main pair's System 2
SAMPLING = Sampling(max_tokens=40, stop=stop_strings("toy"))


@pytest.fixture(scope="module")
def prompts():
    return [build_prompt(it.question, "toy") for it in load_benchmark("toy", toy_per_level=2, seed=0)]


@pytest.fixture(scope="module")
def reference(prompts):
    return generate_transformers(MODEL, prompts, SAMPLING, batch_size=1, progress=False)


def _no_generation(*a, **k):
    raise AssertionError("nothing should be generated: everything is cached")


def test_balanced_shards_hand_computed():
    # LPT: 5->s0 (5), 4->s1 (4), 3->s1 (7), 3->s0 (8), 2->s1 (9), 1->s0 (9)
    assert pipeline.balanced_shards([5, 4, 3, 3, 2, 1], 2) == [[0, 3, 5], [1, 2, 4]]
    w = [7, 1, 1, 1, 9, 3, 3, 2]
    shards = pipeline.balanced_shards(w, 3)
    assert sorted(i for s in shards for i in s) == list(range(len(w)))  # a partition
    loads = [sum(w[i] for i in s) for s in shards]
    assert max(loads) - min(loads) <= max(w)
    assert shards == pipeline.balanced_shards(w, 3)  # deterministic: every node computes the same
    assert pipeline.balanced_shards([1], 3) == [[0], [], []]
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="shards"):
            pipeline.balanced_shards([1, 2], bad)


def test_parse_shard():
    assert pipeline.parse_shard("0/4") == (0, 4) and pipeline.parse_shard("3/4") == (3, 4)
    for bad in ("4/4", "-1/2", "1/0", "a/b", "1", "1/2/3"):
        with pytest.raises(ValueError, match="shard"):
            pipeline.parse_shard(bad)


def test_two_cpu_replicas_match_one_process_and_resume(tmp_path, prompts, reference, monkeypatch):
    cache = tmp_path / "gen"
    got = pipeline.cached_generate(MODEL, prompts, SAMPLING, backend="transformers", cache_dir=cache, fingerprint="fp",
                                   data_parallel_size=2, batch_size=1)
    assert [(g.text, g.n_tokens, g.finish_reason) for g in got] == \
           [(g.text, g.n_tokens, g.finish_reason) for g in reference]
    parts = sorted(cache.glob("*.part-*.jsonl"))
    assert len(parts) == 2 and all(".part-" in f.name for f in cache.glob("*.jsonl"))  # one file per replica, no shared file
    per_part = [{json.loads(line)["prompt_sha"] for line in p.read_text().splitlines()} for p in parts]
    assert not per_part[0] & per_part[1] and len(per_part[0] | per_part[1]) == len(set(prompts))
    assert abs(len(per_part[0]) - len(per_part[1])) <= 2  # balanced
    monkeypatch.setattr(pipeline, "generate", _no_generation)  # the union of the parts is a complete cache
    again = pipeline.cached_generate(MODEL, prompts, SAMPLING, backend="transformers", cache_dir=cache,
                                     fingerprint="fp", data_parallel_size=2, batch_size=1)
    assert [g.text for g in again] == [g.text for g in got]


def test_killed_replica_loses_only_its_unfinished_prompts(tmp_path, prompts, reference):
    """A replica process killed with SIGKILL after its first batch: its part keeps that batch, the rerun does the rest."""
    cache = tmp_path / "gen"
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from l2s_utils.evaluate import pipeline
        from l2s_utils.evaluate.generation import Sampling
        real = pipeline.generate
        def dying(*a, on_batch=None, **k):
            def once(idx, gens):
                on_batch(idx, gens)
                os.kill(os.getpid(), signal.SIGKILL)  # killed right after its first batch was written
            return real(*a, on_batch=once, **k)
        pipeline.generate = dying
        prompts = {prompts!r}
        pipeline.cached_generate({str(MODEL)!r}, prompts, Sampling(**{SAMPLING.key()!r}), backend="transformers",
                                 cache_dir=Path({str(cache)!r}), fingerprint="fp", part_file=True, batch_size=3)
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == -9, r.stderr[-2000:]
    (part,) = cache.glob("*.part-*.jsonl")
    assert len(part.read_text().splitlines()) == 3  # the finished batch survived the kill
    calls = []
    real = pipeline.generate

    def counting(model, ps, *a, **k):
        calls.append(len(ps))
        return real(model, ps, *a, **k)

    pipeline.generate = counting
    try:
        got = pipeline.cached_generate(MODEL, prompts, SAMPLING, backend="transformers", cache_dir=cache,
                                       fingerprint="fp", batch_size=1)
    finally:
        pipeline.generate = real
    assert calls == [len(set(prompts)) - 3]  # only the killed replica's unfinished prompts
    assert [g.text for g in got] == [g.text for g in reference]


def test_failed_replica_is_named_and_others_are_kept(tmp_path, prompts):
    cache = tmp_path / "gen"
    with pytest.raises(RuntimeError, match=r"replica\(s\) failed: rank 0 .*rank 1 .*run again"):
        pipeline.cached_generate(MODEL, prompts, SAMPLING, backend="transformers", cache_dir=cache, fingerprint="fp",
                                 data_parallel_size=2, batch_size=0)  # batch_size 0 fails inside each replica
    with pytest.raises(ValueError, match="data_parallel_size"):
        pipeline.cached_generate(MODEL, prompts, SAMPLING, backend="transformers", cache_dir=cache, fingerprint="fp",
                                 data_parallel_size=0)


def test_shards_then_one_grading_run(tmp_path, monkeypatch):
    items = load_benchmark("toy", toy_per_level=2, seed=0)
    out = tmp_path / "eval"
    kw = dict(items=items, prompt="toy", backend="transformers", sampling=SAMPLING, out=out, progress=False,
              model_name="m", batch_size=4)
    with pytest.raises(ValueError, match="shard"):
        pipeline.evaluate(MODEL, "toy", shard="2/2", **kw)
    assert not out.exists()  # a bad shard writes nothing
    a = pipeline.evaluate(MODEL, "toy", shard="0/2", **kw)
    b = pipeline.evaluate(MODEL, "toy", shard=(1, 2), **kw)
    assert set(a.id).isdisjoint(b.id) and len(a) + len(b) == len(items)
    assert (out / "results" / "m" / "toy.shard-0of2.parquet").is_file()
    gens = list((out / "generations").glob("*.jsonl"))  # one part per writing process (here: this one)
    assert len(gens) == 1 and ".part-" in gens[0].name
    monkeypatch.setattr(pipeline, "generate", _no_generation)
    full = pipeline.evaluate(MODEL, "toy", **kw)  # grades the union of the shards; generates nothing
    assert sorted(full.id) == sorted([*a.id, *b.id])
    merged = full.set_index("id").loc[sorted(full.id)]
    shards = pd.concat([a, b]).set_index("id").loc[sorted(full.id)]
    assert (merged.response == shards.response).all() and (merged.correct == shards.correct).all()


def test_profile_and_cli_accept_data_parallel(tmp_path):
    from l2s_utils.study.profiles import ProfileError, load_profile

    prof = yaml.safe_load((ROOT / "data" / "profiles" / "smoke.yaml").read_text())
    prof["backend"]["data_parallel_size"] = 2
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(prof))
    assert load_profile(tmp_path / "p.yaml")["backend"]["data_parallel_size"] == 2
    prof["backend"]["data_parallel_size"] = 0
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(prof))
    with pytest.raises(ProfileError, match="data_parallel_size"):
        load_profile(tmp_path / "p.yaml")
    r = subprocess.run([sys.executable, "-m", "l2s_utils.cli", "eval", "--model", str(MODEL), "--benchmark", "toy",
                        "--shard", "3/2", "--out", str(tmp_path / "o")], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and "shard" in r.stderr and not (tmp_path / "o").exists()
