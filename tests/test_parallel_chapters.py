"""Chapters side by side (``l2s study --jobs``): the locks that make shared artefacts once, and the driver's runs.

Each test can fail: without the lock a second writer generates / merges again; a driver that ignores ``jobs`` runs
the kernels with all cores as threads; a lost failure would not raise.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from l2s_utils.evaluate import pipeline as P
from l2s_utils.evaluate.generation import Generation, Sampling


def test_wait_lock_serialises_holders(tmp_path):
    events = []

    def hold(tag, delay):
        time.sleep(delay)
        with P.wait_lock(tmp_path / ".locks" / "x.lock"):
            events.append(f"{tag} in")
            time.sleep(0.3)
            events.append(f"{tag} out")

    ts = [threading.Thread(target=hold, args=("a", 0.0)), threading.Thread(target=hold, args=("b", 0.1))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert events == ["a in", "a out", "b in", "b out"]
    assert (tmp_path / ".locks" / "x.lock").is_file()


def test_concurrent_cached_generate_generates_once(tmp_path, monkeypatch):
    calls = []

    def fake_generate(model, prompts, sampling, backend=None, progress=False, on_batch=None, **options):
        calls.append(list(prompts))
        time.sleep(0.4)  # the other caller arrives meanwhile
        return [Generation(f"answer to {p}", 3, "stop") for p in prompts]

    monkeypatch.setattr(P, "generate", fake_generate)
    model = tmp_path / "model"
    model.mkdir()
    prompts = [f"q{i}" for i in range(5)]
    got = {}

    def run(tag):
        got[tag] = P.cached_generate(model, prompts, Sampling(max_tokens=8), backend="transformers",
                                     cache_dir=tmp_path / "gen", fingerprint="fp", progress=False)

    ts = [threading.Thread(target=run, args=(t,)) for t in "ab"]
    for t in ts:
        t.start()
        time.sleep(0.05)
    for t in ts:
        t.join()
    assert len(calls) == 1 and calls[0] == sorted(prompts, key=P._sha)  # the second caller waited and reused
    assert [g.text for g in got["a"]] == [g.text for g in got["b"]] == [f"answer to {p}" for p in prompts]


def test_other_prompts_of_one_key_do_not_wait(tmp_path, monkeypatch):
    """Shards of one key (``l2s eval --shard`` on several nodes or GPUs) ask for other prompts: no lock between them."""
    def fake_generate(model, prompts, sampling, backend=None, progress=False, on_batch=None, **options):
        time.sleep(0.6)
        return [Generation(f"answer to {p}", 3, "stop") for p in prompts]

    monkeypatch.setattr(P, "generate", fake_generate)
    model = tmp_path / "model"
    model.mkdir()
    ts = [threading.Thread(target=P.cached_generate, args=(model, [f"{tag}{i}" for i in range(3)], Sampling(max_tokens=8)),
                           kwargs=dict(backend="transformers", cache_dir=tmp_path / "gen", fingerprint="fp", progress=False))
          for tag in "ab"]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert time.perf_counter() - t0 < 1.1  # side by side (one after the other: >= 1.2 s)
    done = P.read_cached(tmp_path / "gen", next((tmp_path / "gen").glob("*.jsonl")).name[:-6])
    assert len(done) == 6


def test_wait_lock_goes_on_where_the_file_system_cannot_lock(tmp_path, monkeypatch):
    import errno
    import fcntl

    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    ran = []
    with pytest.warns(UserWarning, match="cannot lock"):
        with P.wait_lock(tmp_path / "x.lock"):
            ran.append(1)
    assert ran == [1]


def test_concurrent_study_merges_merge_once(tmp_path, monkeypatch):
    import l2s_utils.merge as M
    from l2s_utils.study.study import Study

    calls = []

    def fake_merge(cfg, path, overwrite=False, progress=False):
        calls.append(path)
        time.sleep(0.4)
        Path(path).mkdir(parents=True)
        (Path(path) / "l2s_merge.json").write_text("{}")
        return type("R", (), {"seconds": 0.4})()

    monkeypatch.setattr(M, "merge", fake_merge)
    monkeypatch.setattr(Study, "merge_config", lambda self, method, scale=None, calibration=None, **o: {"m": method})
    st = Study("smoke", out=tmp_path / "run")
    paths = []
    ts = [threading.Thread(target=lambda: paths.append(st.merged("ta"))) for _ in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert len(calls) == 1 and paths[0] == paths[1] and (paths[0] / "l2s_merge.json").is_file()


def _notebook(path: Path, code: str) -> None:
    cells = [{"cell_type": "code", "metadata": {"tags": ["parameters"]}, "execution_count": None, "outputs": [],
              "source": 'profile = "smoke"\nout = None\n'},
             {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [], "source": code}]
    path.write_text(json.dumps({"cells": cells, "metadata": {"kernelspec": {"name": "python3", "language": "python",
                                                                              "display_name": "Python 3"}},
                                "nbformat": 4, "nbformat_minor": 5}))


@pytest.fixture
def fake_repo(tmp_path, monkeypatch):
    from l2s_utils.study import driver

    root = tmp_path / "repo"
    (root / "notebooks").mkdir(parents=True)
    monkeypatch.setattr(driver, "ROOT", root)
    monkeypatch.setattr(driver, "organism_models", lambda prof, progress=False, verbose=False: [])
    return driver, root


def test_chapters_side_by_side_run_in_child_kernels_with_their_share_of_threads(fake_repo):
    driver, root = fake_repo
    code = ("import os, time, torch\ntime.sleep(1)\n"
            "open(os.path.join(os.environ['L2S_T'], f'{profile}-' + str(os.getpid())), 'w').write(str(torch.get_num_threads()))\n")
    for name in ("c1", "c2", "c3"):
        _notebook(root / "notebooks" / f"{name}.ipynb", code.replace("{profile}", name))
    marks = root / "marks"
    marks.mkdir()
    import os

    os.environ["L2S_T"] = str(marks)
    try:
        report = driver.run_notebooks("smoke", root / "runs", root / "book" / "chapters", ["c1", "c2", "c3"],
                                      progress=False, jobs=2)
    finally:
        del os.environ["L2S_T"]
    assert [r["notebook"] for r in report] == ["c1", "c2", "c3"]  # the given order, whatever ran first
    assert all(r["status"] == "executed" for r in report)
    got = {p.name.split("-")[0]: int(p.read_text()) for p in marks.iterdir()}
    assert got == {n: max(1, driver._cores() // 2) for n in ("c1", "c2", "c3")}
    assert all((root / "book" / "chapters" / f"{n}.ipynb").is_file() for n in ("c1", "c2", "c3"))
    again = driver.run_notebooks("smoke", root / "runs", root / "book" / "chapters", ["c1", "c2", "c3"],
                                 progress=False, jobs=2)
    assert all(r["status"] == "unchanged" for r in again)


def test_a_failing_chapter_side_by_side_names_its_notebook_and_cell(fake_repo):
    driver, root = fake_repo
    _notebook(root / "notebooks" / "good.ipynb", "x = 1\n")
    _notebook(root / "notebooks" / "bad.ipynb", "raise ValueError('broken on purpose')\n")
    with pytest.raises(driver.StudyError, match=r"notebook bad: cell \d+ failed: ValueError: broken on purpose"):
        driver.run_notebooks("smoke", root / "runs", root / "book" / "chapters", ["good", "bad"], progress=False,
                             jobs=2)
    assert not (root / "book" / "chapters" / "bad.ipynb").exists()
    _notebook(root / "notebooks" / "bad2.ipynb", "raise KeyError('also broken')\n")
    with pytest.raises(driver.StudyError) as e:  # both failures named, the first in the given order first
        driver.run_notebooks("smoke", root / "runs", root / "book" / "chapters", ["bad", "bad2"], progress=False,
                             jobs=2)
    msg = str(e.value)
    assert msg.startswith("notebook bad: ") and "1 more: notebook bad2: " in msg and "also broken" in msg


def test_jobs_default_and_environment(monkeypatch):
    from l2s_utils.study import driver
    from l2s_utils.study.profiles import load_profile

    prof = load_profile("toy")
    monkeypatch.setenv("L2S_STUDY_JOBS", "3")
    assert driver.default_jobs(prof) == 3
    for bad in ("0", "two"):
        monkeypatch.setenv("L2S_STUDY_JOBS", bad)
        with pytest.raises(driver.StudyError, match="L2S_STUDY_JOBS"):
            driver.default_jobs(prof)
    monkeypatch.delenv("L2S_STUDY_JOBS")
    monkeypatch.setattr(driver, "_cores", lambda: 2)
    assert driver.default_jobs(prof) == 2
    assert driver.default_jobs(load_profile("toy-vllm")) == 1  # vLLM engines: one chapter at a time
    monkeypatch.setattr(driver, "_cores", lambda: 1)
    assert driver.default_jobs(prof) == 1


def test_results_dir_keeps_one_name_at_two_scales(tmp_path):
    """A name evaluated at two scales (chapter 04's ladder and chapter 01's main pair both have "TA alpha=0.1") kept
    one results file, whichever chapter wrote last: the study now gives each ladder scale its own results directory."""
    from l2s_utils.evaluate.benchmarks import load_benchmark

    root = Path(__file__).resolve().parents[1]
    model = next((root / "data" / "organism").glob("s-*/system1"))
    items = load_benchmark("toy", toy_per_level=1, seed=0)
    kw = dict(items=items, prompt="toy", backend="transformers", sampling=Sampling(max_tokens=16), out=tmp_path / "eval",
              progress=False, model_name="TA alpha=0.1")
    P.evaluate(model, "toy", **kw)
    P.evaluate(model, "toy", results_dir=tmp_path / "eval" / "results" / "scale-m", **kw)
    assert (tmp_path / "eval" / "results" / "TA alpha=0.1" / "toy.parquet").is_file()
    assert (tmp_path / "eval" / "results" / "scale-m" / "TA alpha=0.1" / "toy.parquet").is_file()
