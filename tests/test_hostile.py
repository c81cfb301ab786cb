"""Hostile and clumsy inputs (issue 15): each is refused with a one-line error naming its culprit and exit
code 2, nothing is written, overwritten or lost, and pickle is never loaded unasked.

One section per class: output claims, the pickle policy, safetensors and sharded-index validation,
the generation cache, eval arguments, profiles, and merge-config culprits. Everything runs on the
tiny Qwen2 checkpoints of conftest.py in seconds (the CLI in-process, subprocesses only for races).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from l2s_utils import cli
from l2s_utils.evaluate import pipeline
from l2s_utils.evaluate.generation import Generation, Sampling
from l2s_utils.merge import CheckpointError, MergeConfigError, load_config, merge
from l2s_utils.merge import checkpoint as ck
from l2s_utils.merge.checkpoint import Checkpoint, read_safetensors_header
from l2s_utils.study import driver
from l2s_utils.study.profiles import ProfileError, load_profile

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def run_cli(capsys, *argv) -> tuple[int, str]:
    """``l2s ARGV`` in this process: (exit code, stderr). argparse errors exit 2 too."""
    capsys.readouterr()
    try:
        rc = cli.main([str(a) for a in argv])
    except SystemExit as e:
        rc = e.code
    return rc, capsys.readouterr().err


def assert_clean_error(rc: int, err: str, *needles: str, command: str = "merge") -> None:
    assert rc == 2, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("usage:", " "))]
    assert len(lines) == 1 and lines[0].startswith(f"l2s {command}: error:"), err
    for n in needles:
        assert n in lines[0], (n, err)


def write_config(path: Path, base: Path, models: list[Path], method: str = "task_arithmetic", **extra) -> Path:
    d = {"merge_method": method, "base_model": str(base), "models": [{"model": str(m)} for m in models],
         "parameters": {"alpha": 0.5} if method == "task_arithmetic" else {}, "dtype": "float32", **extra}
    path.write_text(yaml.safe_dump(d))
    return path


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def tree_digest(d: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(d.rglob("*")):
        h.update(str(f.relative_to(d)).encode())
        if f.is_file():
            h.update(f.read_bytes())
    return h.hexdigest()


def pickle_copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    sd = load_file(dst / "model.safetensors")
    (dst / "model.safetensors").unlink()
    torch.save(sd, dst / "pytorch_model.bin")
    return dst


# =================================================================================================
# 1. Output claims
# =================================================================================================

def test_two_concurrent_merges_into_one_new_out_exactly_one_wins(tiny, tmp_path):
    c = write_config(tmp_path / "c.yaml", tiny["base"], [tiny["ft1"]])
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "l2s_utils.cli", "merge", str(c), str(out), "--quiet"]
    procs = [subprocess.Popen(cmd, env=ENV, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert sorted(rc for rc, _ in results) == [0, 2], results
    rc, err = next(r for r in results if r[0] == 2)
    assert_clean_error(rc, err)
    assert "another process" in err or "already exists" in err or "appeared" in err
    assert (out / "l2s_merge.json").is_file() and leftovers(out) == []


def test_out_held_by_another_process_is_refused_at_once(tiny, tmp_path, capsys):
    c = write_config(tmp_path / "c.yaml", tiny["base"], [tiny["ft1"]])
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys
            from l2s_utils.merge.checkpoint import claim_output
            with claim_output({str(out)!r}):
                print("held", flush=True)
                sys.stdin.read()
            """)], env=ENV, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        rc, err = run_cli(capsys, "merge", c, out, "--quiet")
        assert_clean_error(rc, err, "another process", f"pid {holder.pid}")
        assert not out.exists()
    finally:
        holder.communicate("", timeout=60)
    assert holder.returncode == 0
    rc, err = run_cli(capsys, "merge", c, out, "--quiet")  # released: the next run proceeds
    assert rc == 0, err
    assert leftovers(out) == []


@pytest.mark.parametrize("content", [False, True], ids=["empty-dir", "dir-with-a-file"])
def test_out_that_appears_during_the_merge_is_never_replaced(tiny, tmp_path, capsys, monkeypatch, content):
    c = write_config(tmp_path / "c.yaml", tiny["base"], [tiny["ft1"]])
    out = tmp_path / "out"
    real_write = ck.StreamingWriter.write

    def write(self, name, tensor):  # someone else creates OUT while we merge
        if not out.exists():
            out.mkdir()
            if content:
                (out / "theirs.txt").write_text("not yours")
        return real_write(self, name, tensor)

    monkeypatch.setattr(ck.StreamingWriter, "write", write)
    rc, err = run_cli(capsys, "merge", c, out, "--quiet")
    assert_clean_error(rc, err, str(out), "appeared")
    assert [p.name for p in out.iterdir()] == (["theirs.txt"] if content else [])
    assert leftovers(out) == []


@pytest.mark.parametrize("target,overwrite", [
    ("base", True), ("ft1", True), ("models_parent", True), ("dot", False), ("dot", True), ("config_dir", True),
])
def test_out_may_never_be_or_contain_an_input(tiny, tmp_path, capsys, monkeypatch, target, overwrite):
    models = tmp_path / "models"
    base, ft1 = shutil.copytree(tiny["base"], models / "base"), shutil.copytree(tiny["ft1"], models / "ft1")
    cdir = tmp_path / "cfgs"
    cdir.mkdir()
    c = write_config(cdir / "c.yaml", base, [ft1])
    out = {"base": base, "ft1": ft1, "models_parent": models, "dot": Path("."), "config_dir": cdir}[target]
    monkeypatch.chdir(models if target == "dot" else tmp_path)
    before = tree_digest(tmp_path)
    rc, err = run_cli(capsys, "merge", c, out, "--quiet", *(["--overwrite"] if overwrite else []))
    assert_clean_error(rc, err)
    assert "input" in err or "current directory" in err
    assert tree_digest(tmp_path) == before  # the inputs are intact, nothing was written
    assert not any(p.name.startswith(".") for p in tmp_path.rglob("*")), "partial output left behind"


def test_stale_partials_of_a_killed_run_are_cleaned_and_reported(tiny, tmp_path):
    out = tmp_path / "out"
    stale = [tmp_path / ".out.partial-k1ll3d", tmp_path / ".out.inner-4242", tmp_path / ".out.old-123"]
    for s in stale:
        s.mkdir()
        (s / "model.safetensors").write_bytes(b"half")
    unrelated = tmp_path / ".other.partial-xyz"
    unrelated.mkdir()
    cfg = {"merge_method": "task_arithmetic", "base_model": str(tiny["base"]), "models": [{"model": str(tiny["ft1"])}],
           "parameters": {"alpha": 0.5}}
    with pytest.warns(UserWarning, match=r"removed 3 partial output\(s\) left by an interrupted run"):
        merge(cfg, out, progress=False)
    assert (out / "l2s_merge.json").is_file()
    assert not any(s.exists() for s in stale) and unrelated.is_dir()
    assert leftovers(out) == []


def test_a_killed_merge_leaves_nothing_that_blocks_or_looks_complete(tiny, tmp_path):
    c = write_config(tmp_path / "c.yaml", tiny["base"], [tiny["ft1"]])
    out = tmp_path / "out"
    code = textwrap.dedent(f"""
        import os, signal
        from l2s_utils.merge import checkpoint as ck
        real = ck.StreamingWriter.write
        def write(self, name, t):
            real(self, name, t)
            os.kill(os.getpid(), signal.SIGKILL)
        ck.StreamingWriter.write = write
        from l2s_utils.merge import merge
        merge({str(c)!r}, {str(out)!r}, progress=False)
        """)
    r = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == -9
    assert not out.exists() and any(n.startswith(".out.partial-") for n in leftovers(out))
    with pytest.warns(UserWarning, match="interrupted run"):
        merge(c, out, progress=False)  # the dead run's lock does not block; its partial output is removed
    assert (out / "l2s_merge.json").is_file() and leftovers(out) == []


def test_failed_merge_removes_the_parents_it_created(tiny, tmp_path):
    bad = shutil.copytree(tiny["ft1"], tmp_path / "nan")
    sd = load_file(bad / "model.safetensors")
    sd["model.norm.weight"][0] = float("nan")
    save_file(sd, bad / "model.safetensors", metadata={"format": "pt"})
    out = tmp_path / "a" / "b" / "c" / "out"
    cfg = {"merge_method": "task_arithmetic", "base_model": str(tiny["base"]), "models": [{"model": str(bad)}]}
    with pytest.raises(MergeConfigError, match="NaN"):
        merge(cfg, out, progress=False)
    assert not (tmp_path / "a").exists()
    (tmp_path / "keep").mkdir()  # a parent that existed before stays
    with pytest.raises(MergeConfigError, match="NaN"):
        merge(cfg, tmp_path / "keep" / "x" / "out", progress=False)
    assert (tmp_path / "keep").is_dir() and not (tmp_path / "keep" / "x").exists()


def test_merged_directory_has_normal_permissions(tiny, tmp_path):
    old = os.umask(0o022)
    try:
        r = merge({"merge_method": "task_arithmetic", "base_model": str(tiny["base"]),
                   "models": [{"model": str(tiny["ft1"])}]}, tmp_path / "out", progress=False)
    finally:
        os.umask(old)
    assert (r.out.stat().st_mode & 0o777) == 0o755
    assert all((f.stat().st_mode & 0o777) == 0o644 for f in r.out.iterdir())


@pytest.mark.parametrize("how", ["parent-is-a-file", "read-only-parent", "permission-denied", "out-is-a-file",
                                 "out-is-a-file-overwrite"])
def test_unwritable_output_is_named(tiny, tmp_path, capsys, monkeypatch, how):
    if how == "read-only-parent" and IS_ROOT:
        pytest.skip("root writes into read-only directories (permission-denied simulates it)")
    c = write_config(tmp_path / "c.yaml", tiny["base"], [tiny["ft1"]])
    extra = []
    if how == "permission-denied":  # what a read-only parent does for a non-root user, simulated for root
        import errno

        ro = tmp_path / "ro"
        ro.mkdir()
        real_open, real_mkdir = os.open, os.mkdir

        def deny(real):
            def f(path, *a, **k):
                if str(path).startswith(str(ro) + os.sep):
                    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
                return real(path, *a, **k)
            return f

        monkeypatch.setattr(os, "open", deny(real_open))
        monkeypatch.setattr(os, "mkdir", deny(real_mkdir))
        out, named = ro / "out", str(ro)
    elif how == "parent-is-a-file":
        (tmp_path / "f").write_text("x")
        out, named = tmp_path / "f" / "out", str(tmp_path / "f")
    elif how == "read-only-parent":
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        out, named = ro / "out", str(ro)
    else:
        (tmp_path / "out").write_text("a file")
        out, named = tmp_path / "out", str(tmp_path / "out")
        extra = ["--overwrite"] if how.endswith("overwrite") else []
    rc, err = run_cli(capsys, "merge", c, out, "--quiet", *extra)
    assert_clean_error(rc, err, named)
    if how.startswith("out-is-a-file"):
        assert (tmp_path / "out").read_text() == "a file"
    else:
        assert not out.exists()


def test_disk_full_while_writing_is_one_line_and_leaves_nothing(tiny, tmp_path, capsys, monkeypatch):
    import errno

    class FullFile:
        def __init__(self, f):
            self.f, self.n = f, 0

        def write(self, b):
            self.n += len(b)
            if self.n > 2000:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self.f.write(b)

        def close(self):
            self.f.close()

    def fake_open(file, mode="r", *a, **k):
        f = open(file, mode, *a, **k)
        return FullFile(f) if "w" in mode else f

    from l2s_utils.merge.io import writer

    monkeypatch.setattr(writer, "open", fake_open, raising=False)
    c = write_config(tmp_path / "c.yaml", tiny["base"], [tiny["ft1"]])
    out = tmp_path / "deep" / "out"
    rc, err = run_cli(capsys, "merge", c, out, "--quiet")
    assert_clean_error(rc, err, str(out), "No space left on device")
    assert not (tmp_path / "deep").exists()


# =================================================================================================
# 2. One pickle policy
# =================================================================================================

@pytest.mark.parametrize("value", ["false", "true", "no", 1, 0, None, [True]])
def test_allow_pickle_must_be_a_real_boolean(tiny, tmp_path, value):
    c = write_config(tmp_path / "c.yaml", tiny["base"], [tiny["ft1"]], allow_pickle=value)
    with pytest.raises(MergeConfigError, match=r"allow_pickle must be true or false"):
        load_config(c)


def test_quoted_false_never_enables_pickle(tiny, tmp_path, capsys):
    pk = pickle_copy(tiny["ft1"], tmp_path / "pk")
    c = write_config(tmp_path / "c.yaml", tiny["base"], [pk], allow_pickle="false")
    rc, err = run_cli(capsys, "merge", c, tmp_path / "out", "--quiet")
    assert_clean_error(rc, err, "allow_pickle")
    assert not (tmp_path / "out").exists()


def test_pickle_refused_unless_the_flag_that_the_message_names(tiny, tmp_path, capsys):
    pk = pickle_copy(tiny["ft1"], tmp_path / "pk")
    c = write_config(tmp_path / "c.yaml", tiny["base"], [pk])
    rc, err = run_cli(capsys, "merge", c, tmp_path / "out", "--quiet")
    assert_clean_error(rc, err, str(pk), "only pickle weights", "--allow-pickle")
    assert not (tmp_path / "out").exists()
    rc, err = run_cli(capsys, "merge", c, tmp_path / "out", "--quiet", "--allow-pickle")  # the flag exists
    assert rc == 0, err
    assert (tmp_path / "out" / "model.safetensors").is_file()
    rc, err = run_cli(capsys, "merge", c, tmp_path / "out2", "--quiet")  # and is not sticky
    assert rc == 2


def test_eval_refuses_pickle_before_loading_or_writing(tiny, tmp_path, capsys, monkeypatch):
    import transformers

    def boom(*a, **k):
        raise AssertionError("transformers opened the model")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", boom)
    pk = pickle_copy(tiny["ft1"], tmp_path / "pk")
    out = tmp_path / "eval"
    rc, err = run_cli(capsys, "eval", "--model", pk, "--benchmark", "toy", "--limit", "1", "--out", out,
                      "--backend", "transformers", "--quiet")
    assert_clean_error(rc, err, str(pk), "only pickle weights", "--allow-pickle", command="eval")
    assert not out.exists()
    for argv in (["eval", "--model", "m", "--benchmark", "toy"], ["merge", "c.yaml", "out"]):
        assert cli.build_parser().parse_args([*argv, "--allow-pickle"]).allow_pickle is True


@pytest.mark.parametrize("method,params", [("acm", {"base_method": "l2s_ties", "k": 0.8}),
                                           ("aim", {"base_method": "l2s_ties", "k": 0.8}), ("sens", {})])
def test_activation_methods_apply_the_policy_before_transformers(tiny, tmp_path, monkeypatch, method, params):
    import transformers

    def boom(*a, **k):
        raise AssertionError("transformers opened a model before the pickle check")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", boom)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", boom)
    pk = pickle_copy(tiny["ft1"], tmp_path / "pk")
    models = [tiny["base"], pk] if method == "sens" else [pk]
    cfg = {"merge_method": method, "base_model": str(tiny["base"]), "models": [{"model": str(m)} for m in models],
           "parameters": params, "calibration": {"source": "organism", "n": 2}}
    with pytest.raises(CheckpointError, match=r"pk: only pickle weights"):
        merge(cfg, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists() and leftovers(tmp_path / "out") == []


def test_load_model_applies_the_policy_first(tiny, tmp_path, monkeypatch):
    import transformers

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("loaded")))
    pk = pickle_copy(tiny["ft1"], tmp_path / "pk")
    for allow in (False, "false", 1):
        with pytest.raises(CheckpointError, match="only pickle weights"):
            ck.load_model(pk, "cpu", allow_pickle=allow)


def test_malicious_pickle_never_runs_even_when_allowed(tiny, tmp_path):
    pk = shutil.copytree(tiny["ft1"], tmp_path / "evil")
    (pk / "model.safetensors").unlink()
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"x": Evil()}, pk / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"pytorch_model.bin: cannot be loaded as plain tensors"):
        Checkpoint(pk, allow_pickle=True)
    assert not marker.exists()


# =================================================================================================
# 3. Safetensors headers as strict as the safetensors library; sharded indexes against their shards
# =================================================================================================

A = {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}
B = {"dtype": "F32", "shape": [3], "data_offsets": [16, 28]}
ENTRY = json.dumps(A)
HEADERS = {  # name: (header object or raw bytes, data bytes, the tensor the error must name or None)
    "a-json-list": ([A, B], 28, None),
    "entry-not-an-object": ({"a": A, "b": 5}, 28, "b"),
    "entry-a-list": ({"a": A, "b": [1, 2]}, 28, "b"),
    "offsets-cover-too-few-bytes": ({"a": {**A, "data_offsets": [0, 12]}, "b": {**B, "data_offsets": [12, 24]}}, 24, "a"),
    "offsets-cover-too-many-bytes": ({"a": {**A, "data_offsets": [0, 20]}, "b": {**B, "data_offsets": [20, 32]}}, 32, "a"),
    "overlapping-offsets": ({"a": A, "b": {**B, "data_offsets": [12, 24]}}, 24, "b"),
    "gap-between-tensors": ({"a": A, "b": {**B, "data_offsets": [20, 32]}}, 32, "b"),
    "trailing-bytes": ({"a": A, "b": B}, 40, None),
    "truncated-data": ({"a": A, "b": B}, 20, "b"),
    "negative-dim": ({"a": {**A, "shape": [2, -2]}, "b": B}, 28, "a"),
    "string-dim": ({"a": {**A, "shape": [2, "2"]}, "b": B}, 28, "a"),
    "bool-dim": ({"a": {**A, "shape": [True, 4]}, "b": B}, 28, "a"),
    "unknown-dtype": ({"a": {**A, "dtype": "F99"}, "b": B}, 28, "a"),
    "missing-dtype": ({"a": {"shape": [2, 2], "data_offsets": [0, 16]}, "b": B}, 28, "a"),
    "one-offset": ({"a": {**A, "data_offsets": [0]}, "b": B}, 28, "a"),
    "float-offset": ({"a": {**A, "data_offsets": [0, 16.0]}, "b": B}, 28, "a"),
    "end-before-begin": ({"a": {**A, "data_offsets": [16, 0]}, "b": B}, 28, "a"),
    "metadata-not-strings": ({"__metadata__": {"format": 1}, "a": A, "b": B}, 28, None),
    "header-not-utf8": (b'{"a\xff":' + ENTRY.encode() + b"}", 16, None),
    "header-not-json": (b"{not json at all", 0, None),
    "header-length-past-eof": (b"HUGE", 28, None),
}


def craft(path: Path, header, ndata: int) -> Path:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    n = 10**6 if raw == b"HUGE" else len(raw)
    raw = json.dumps({"a": A, "b": B}).encode() if raw == b"HUGE" else raw
    path.write_bytes(struct.pack("<Q", n) + raw + b"\0" * ndata)
    return path


def test_crafted_valid_file_is_accepted_by_both(tmp_path):
    f = craft(tmp_path / "ok.safetensors", {"__metadata__": {"format": "pt"}, "a": A, "b": B}, 28)
    with safe_open(str(f), "pt") as s:
        assert sorted(s.keys()) == ["a", "b"]
    header, start = read_safetensors_header(f)
    assert start == 8 + len(json.dumps({"__metadata__": {"format": "pt"}, "a": A, "b": B}))


@pytest.mark.parametrize("case", sorted(HEADERS))
def test_safetensors_header_as_strict_as_the_library(tiny, tmp_path, capsys, case):
    header, ndata, tensor = HEADERS[case]
    model = shutil.copytree(tiny["ft1"], tmp_path / "m")
    f = craft(model / "model.safetensors", header, ndata)
    with pytest.raises(Exception):  # the reference: the safetensors library refuses the file
        with safe_open(str(f), "pt") as s:
            list(s.keys())
    with pytest.raises(CheckpointError) as e:
        Checkpoint(model)
    msg = str(e.value)
    assert msg.startswith(f"{f}: ") and "\n" not in msg
    if tensor:
        assert f"tensor {tensor!r}" in msg
    c = write_config(tmp_path / "c.yaml", tiny["base"], [model])
    rc, err = run_cli(capsys, "merge", c, tmp_path / "out", "--quiet")
    assert_clean_error(rc, err, str(f))
    assert not (tmp_path / "out").exists()


def test_duplicate_tensor_name_in_one_header_is_refused(tmp_path):
    f = craft(tmp_path / "d.safetensors", b'{"a":' + ENTRY.encode() + b',"a":' + ENTRY.encode() + b"}", 16)
    with pytest.raises(CheckpointError, match=r"tensor 'a' appears twice"):
        read_safetensors_header(f)


def shard_copy(src: Path, dst: Path) -> tuple[Path, dict, list[str]]:
    shutil.copytree(src, dst)
    index = json.loads((dst / ck.INDEX_NAME).read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) >= 2
    return dst, index, shards


def save_index(d: Path, index: dict) -> None:
    (d / ck.INDEX_NAME).write_text(json.dumps(index))


@pytest.mark.parametrize("how,match", [
    ("tensor-in-two-shards", r"tensor '.*' is also in model-0000"),
    ("entry-outside-the-dir", r"points to '\.\./x\.safetensors', outside the model directory"),
    ("absolute-entry", r"outside the model directory"),
    ("missing-shard", r"model-00002-of-\d+\.safetensors: shard listed in .* is missing"),
    ("tensor-not-in-its-shard", r"tensor 'ghost.weight' is not in its shard"),
    ("shard-holds-unlisted-tensor", r"holds tensor '.*' but model.safetensors.index.json does not list it"),
    ("index-maps-elsewhere", r"holds tensor '.*' but model.safetensors.index.json maps it to"),
    ("index-a-list", r"must hold a JSON object"),
    ("weight-map-not-a-mapping", r"corrupt index"),
])
def test_sharded_index_checked_against_shards(tiny, tmp_path, capsys, how, match):
    d, index, shards = shard_copy(tiny["bf16_ft"], tmp_path / "m")
    wm = index["weight_map"]
    first = sorted(n for n, s in wm.items() if s == shards[0])[0]
    if how == "tensor-in-two-shards":  # the same tensor (other values) also in the second shard
        sd = load_file(d / shards[1])
        sd[first] = torch.zeros_like(load_file(d / shards[0])[first])
        save_file(sd, d / shards[1], metadata={"format": "pt"})
    elif how == "entry-outside-the-dir":
        wm[first] = "../x.safetensors"
        (tmp_path / "x.safetensors").write_bytes((d / shards[0]).read_bytes())
    elif how == "absolute-entry":
        wm[first] = str((d / shards[0]).resolve())
    elif how == "missing-shard":
        (d / shards[1]).unlink()
    elif how == "tensor-not-in-its-shard":
        wm["ghost.weight"] = shards[0]
    elif how == "shard-holds-unlisted-tensor":
        del wm[first]
    elif how == "index-maps-elsewhere":
        wm[first] = shards[1]
    elif how == "index-a-list":
        index = [index]
    elif how == "weight-map-not-a-mapping":
        index["weight_map"] = list(wm)
    save_index(d, index)
    with pytest.raises(CheckpointError, match=match) as e:
        Checkpoint(d)
    assert "\n" not in str(e.value) and str(d) in str(e.value)
    c = write_config(tmp_path / "c.yaml", tiny["bf16_base"], [d])
    rc, err = run_cli(capsys, "merge", c, tmp_path / "out", "--quiet")
    assert_clean_error(rc, err, str(d))
    assert not (tmp_path / "out").exists()


def test_intact_sharded_checkpoint_still_reads(tiny):
    c = Checkpoint(tiny["bf16_ft"])
    assert len(c.files) >= 2 and len(c.names()) == len(json.loads((tiny["bf16_ft"] / ck.INDEX_NAME).read_text())["weight_map"])


# =================================================================================================
# 4. The generation cache
# =================================================================================================

@pytest.fixture
def fake_gen(monkeypatch):
    """pipeline.generate replaced by a deterministic fake that reports batches of 2 like the real backend."""
    calls: list[list[str]] = []

    def fake(model, prompts, sampling, backend, progress, on_batch=None, **kw):
        calls.append(list(prompts))
        gens = []
        for start in range(0, len(prompts), 2):
            part = [Generation(f"out:{p}:{sampling.max_tokens}", len(p), "stop") for p in prompts[start:start + 2]]
            gens += part
            if on_batch:
                on_batch(list(range(start, start + len(part))), part)
            if kw.get("die_after") is not None and start // 2 + 1 >= kw["die_after"]:
                raise KeyboardInterrupt
        return gens

    monkeypatch.setattr(pipeline, "generate", fake)
    return calls


def model_dir(tmp_path: Path) -> Path:
    m = tmp_path / "model"
    m.mkdir(exist_ok=True)
    (m / "generation_config.json").write_text(json.dumps({"eos_token_id": 2}))
    (m / "tokenizer.json").write_text(json.dumps({"version": "1.0"}))
    (m / "tokenizer_config.json").write_text(json.dumps({"padding_side": "left"}))
    return m


def gen(model, prompts, cache, sampling=Sampling(max_tokens=10), backend="transformers", **kw):
    return pipeline.cached_generate(model, prompts, sampling, backend=backend, cache_dir=cache, fingerprint="fp",
                                    progress=False, **kw)


@pytest.mark.parametrize("change", ["generation_config.json", "tokenizer.json", "tokenizer_config.json",
                                    "sampling", "backend", "backend-version", "weights"])
def test_cache_key_covers_everything_that_changes_a_generation(tmp_path, fake_gen, monkeypatch, change):
    m, cache, prompts = model_dir(tmp_path), tmp_path / "cache", ["p1", "p2", "p3"]
    gen(m, prompts, cache)
    assert len(fake_gen) == 1
    gen(m, prompts, cache)
    assert len(fake_gen) == 1  # unchanged: all from the cache
    kw: dict = {}
    if change.endswith(".json"):
        (m / change).write_text(json.dumps({"changed": True}))
    elif change == "sampling":
        kw["sampling"] = Sampling(max_tokens=10, temperature=0.7)
    elif change == "backend":
        kw["backend"] = "vllm"
    elif change == "backend-version":
        monkeypatch.setattr(pipeline, "backend_version", lambda b: f"{b} 99.0")
    if change == "weights":
        pipeline.cached_generate(m, prompts, Sampling(max_tokens=10), backend="transformers", cache_dir=cache,
                                 fingerprint="fp-other", progress=False)
    else:
        gen(m, prompts, cache, **kw)
    assert len(fake_gen) == 2 and sorted(fake_gen[-1]) == prompts, change


def test_generation_key_per_sample_and_never_per_grading(tiny, tmp_path, fake_gen):
    """Issue 13 x 15: sample 0 of a multi-sample run has the single-sample run's key, sample s the key of
    seed + s; the grading protocol is not part of the key (grading happens after generation)."""
    import dataclasses

    from l2s_utils.evaluate.benchmarks import Item

    def tok(texts, add_special_tokens=False):
        return {"input_ids": [[0] * len(t) for t in texts]}

    items = [Item("toy", f"q{i}", f"question {i}", "0") for i in range(3)]
    out = tmp_path / "eval"
    kw = dict(items=items, prompt="toy", backend="transformers", out=out, length_tokenizer=tok, model_name="m",
              progress=False, grade_workers=1)
    s = Sampling(max_tokens=8, temperature=0.7, seed=3)
    one = pipeline.evaluate(tiny["base"], "toy", sampling=s, **kw)
    first = {f.stem for f in (out / "generations").glob("*.jsonl")}
    assert len(fake_gen) == 1 and len(first) == 1
    df = pipeline.evaluate(tiny["base"], "toy", sampling=s, n_samples=3, grading="qwen-toolkit", **kw)
    assert len(fake_gen) == 3  # sample 0 came from the single-sample run's cache
    keys = {f.stem for f in (out / "generations").glob("*.jsonl")}
    files = pipeline.generation_files_fingerprint(tiny["base"])
    version = pipeline.backend_version("transformers")
    expect = {pipeline.cache_key(one.model_fingerprint.iloc[0], "transformers", dataclasses.replace(s, seed=3 + k),
                                 files, version, {"top_k": 0}) for k in range(3)}
    assert first < keys and keys == expect
    assert set(df.grading) == {"qwen-toolkit"} and sorted(df["sample"].unique()) == [0, 1, 2]
    again = pipeline.evaluate(tiny["base"], "toy", sampling=s, n_samples=3, grading="strict", **kw)
    assert len(fake_gen) == 3 and set(again.grading) == {"strict"}  # another protocol generates nothing
    assert {f.stem for f in (out / "generations").glob("*.jsonl")} == keys


@pytest.mark.parametrize("argv,flag", [(["-n", "0"], "-n"), (["-n", "x"], "-n"), (["--top-p", "0"], "--top-p"),
                                       (["--top-p", "1.5"], "--top-p"), (["--top-p", "nan"], "--top-p"),
                                       (["--grading", "lenient"], "--grading")])
def test_eval_sampling_and_grading_flags_validated(tiny, tmp_path, capsys, argv, flag):
    out = tmp_path / "eval"
    rc, err = run_cli(capsys, "eval", "--model", tiny["base"], "--benchmark", "toy", "--out", out, *argv)
    assert rc == 2 and flag in err and "Traceback" not in err
    assert not out.exists()


def test_eval_many_greedy_samples_refused_before_writing(tiny, tmp_path, capsys):
    out = tmp_path / "eval"
    rc, err = run_cli(capsys, "eval", "--model", tiny["base"], "--benchmark", "toy", "--out", out, "-n", "2",
                      "--backend", "transformers", "--quiet")
    assert_clean_error(rc, err, "needs temperature > 0", command="eval")
    assert not out.exists()


def test_cache_appends_after_every_batch(tmp_path, fake_gen):
    m, cache, prompts = model_dir(tmp_path), tmp_path / "cache", [f"p{i}" for i in range(7)]
    with pytest.raises(KeyboardInterrupt):  # killed during the third batch of two
        gen(m, prompts, cache, die_after=3)
    f = next(cache.glob("*.jsonl"))
    assert len(f.read_text().splitlines()) == 6  # every finished batch is on disk
    fake_gen.clear()
    out = gen(m, prompts, cache)
    assert len(fake_gen[0]) == 1 and [g.text for g in out] == [f"out:{p}:10" for p in prompts]


def test_transformers_backend_reports_every_batch(tmp_path):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from l2s_utils.evaluate.generation import generate_transformers

    class Tok:
        pad_token_id, eos_token = 0, "</s>"

        def get_vocab(self):
            return {"</s>": 2}

        def convert_tokens_to_ids(self, s):
            return 2

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [3 + (ord(ch) % 40) for ch in text]}

        def decode(self, ids, skip_special_tokens=False):
            return " ".join(map(str, ids))

    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=48, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1)).eval()
    seen = []
    gens = generate_transformers(None, ["ab", "abc", "a", "abcd", "xy"], Sampling(max_tokens=3, stop=("</s>",)),
                                 batch_size=2, progress=False, model_and_tokenizer=(model, Tok()),
                                 on_batch=lambda idx, g: seen.append((list(idx), [x.text for x in g])))
    assert [len(i) for i, _ in seen] == [2, 2, 1]
    assert sorted(i for idx, _ in seen for i in idx) == list(range(5))
    assert all(gens[i].text == t for idx, texts in seen for i, t in zip(idx, texts))


@pytest.mark.parametrize("bad", [b"{not json", b"null", b"[1, 2, 3]", b'"text"', b"42",
                                 b'{"prompt_sha": "SHA", "text": 5, "n_tokens": 1, "finish_reason": "stop"}',
                                 b'{"prompt_sha": "SHA", "text": "x", "n_tokens": "1", "finish_reason": "stop"}',
                                 b'{"prompt_sha": "SHA", "text": "x", "n_tokens": 1, "finish_reason": "maybe"}',
                                 b'{"prompt_sha": "SHA", "text": "x"}',
                                 b'{"prompt_sha": "SHA", "text": "\xff\xfe", "n_tokens": 1, "finish_reason": "stop"}'],
                         ids=["bad-json", "null", "list", "string", "number", "text-not-str", "n-tokens-str",
                              "bad-finish", "missing-keys", "invalid-utf8"])
def test_corrupt_cache_lines_are_skipped_regenerated_and_named(tmp_path, fake_gen, bad):
    m, cache, prompts = model_dir(tmp_path), tmp_path / "cache", ["p0", "p1", "p2"]
    gen(m, prompts, cache)
    f = next(cache.glob("*.jsonl"))
    lines = f.read_bytes().splitlines()
    victim = json.loads(lines[1])["prompt_sha"]
    lines[1] = bad.replace(b"SHA", victim.encode())
    f.write_bytes(b"\n".join(lines) + b"\n")
    fake_gen.clear()
    with pytest.warns(UserWarning, match=re.escape(f"{f}: skipped 1 corrupt cache line(s) (line 2)")):
        out = gen(m, prompts, cache)
    assert [g.text for g in out] == [f"out:{p}:10" for p in prompts]
    assert len(fake_gen) == 1 and len(fake_gen[0]) == 1  # only the corrupt one again
    fake_gen.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the corrupt line is gone: no warning, nothing generated
        gen(m, prompts, cache)
    assert fake_gen == [] and len(f.read_bytes().splitlines()) == 3


def test_cache_disk_full_names_the_file(tmp_path, fake_gen, monkeypatch):
    import errno
    import types

    def full(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    proxy = types.SimpleNamespace(**{k: getattr(os, k) for k in dir(os) if not k.startswith("__")})
    proxy.write = full
    monkeypatch.setattr(pipeline, "os", proxy)
    cache = tmp_path / "cache"
    with pytest.raises(OSError) as e:
        gen(model_dir(tmp_path), ["p1", "p2"], cache)
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(next(cache.glob("*.jsonl")))


# =================================================================================================
# 5. eval arguments
# =================================================================================================

@pytest.mark.parametrize("limit", ["0", "-1", "x", "1.5"])
def test_eval_limit_must_be_positive(tiny, tmp_path, capsys, limit):
    out = tmp_path / "eval"
    rc, err = run_cli(capsys, "eval", "--model", tiny["base"], "--benchmark", "toy", "--limit", limit, "--out", out)
    assert rc == 2 and "--limit" in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("limit", [0, -1, True, 2.5])
def test_evaluate_api_rejects_bad_limit(tiny, tmp_path, limit):
    with pytest.raises(ValueError, match="limit must be a positive number"):
        pipeline.evaluate(tiny["base"], "toy", limit=limit, out=tmp_path / "eval")
    assert not (tmp_path / "eval").exists()


@pytest.mark.parametrize("how", ["missing-model", "model-is-a-file", "model-without-config", "out-is-a-file",
                                 "generations-is-a-file", "corrupt-safetensors", "config-a-list", "bad-provenance"])
def test_eval_bad_paths_write_nothing(tiny, tmp_path, capsys, how):
    model, out = tiny["base"], tmp_path / "eval"
    if how == "missing-model":
        model = tmp_path / "nope"
    elif how == "model-is-a-file":
        model = tmp_path / "file"
        model.write_text("x")
    elif how == "model-without-config":
        model = shutil.copytree(tiny["base"], tmp_path / "m")
        (model / "config.json").unlink()
    elif how == "out-is-a-file":
        out.write_text("keep me")
    elif how == "generations-is-a-file":
        (out).mkdir()
        (out / "generations").write_text("keep me")
    else:
        model = shutil.copytree(tiny["base"], tmp_path / "m")
        f = {"corrupt-safetensors": "model.safetensors", "config-a-list": "config.json",
             "bad-provenance": "l2s_merge.json"}[how]
        (model / f).write_bytes({"model.safetensors": b"\x08\0\0\0\0\0\0\0[1, 2] ", "config.json": b"[1, 2]",
                                  "l2s_merge.json": b'{"nothing": 1}'}[f])
    before = tree_digest(tmp_path)
    rc, err = run_cli(capsys, "eval", "--model", model, "--benchmark", "toy", "--limit", "2", "--out", out,
                      "--backend", "transformers", "--quiet")
    culprit = {"out-is-a-file": out, "generations-is-a-file": out / "generations"}.get(how, model)
    assert_clean_error(rc, err, str(culprit), command="eval")
    assert tree_digest(tmp_path) == before


@pytest.mark.parametrize("line,culprit", [
    (b"null", ":2: cannot read a math500 record (a JSON NoneType"),
    (b"[1, 2]", ":2: cannot read a math500 record (a JSON list"),
    (b"{not json", ":2: cannot read a math500 record"),
    (b'{"problem": "caf\xe9", "answer": "1"}', ":2: cannot read a math500 record ('utf-8' codec"),
    (b'{"answer": "1"}', ":2: cannot read a math500 record (row has none of question"),
    (None, "benchmark file not found (--data)"),
])
def test_eval_bad_benchmark_files_are_named(tiny, tmp_path, capsys, line, culprit):
    data = tmp_path / "data.jsonl"
    if line is not None:
        data.write_bytes(b'{"problem": "1+1?", "answer": "2"}\n' + line + b"\n")
    out = tmp_path / "eval"
    rc, err = run_cli(capsys, "eval", "--model", tiny["base"], "--benchmark", "math500", "--data", data,
                      "--out", out, "--backend", "transformers", "--quiet")
    assert_clean_error(rc, err, str(data), culprit, command="eval")
    assert not out.exists()


# =================================================================================================
# 6. Profiles
# =================================================================================================

SMOKE = ROOT / "data" / "profiles" / "smoke.yaml"


def mutated(tmp_path: Path, fn) -> Path:
    prof = yaml.safe_load(SMOKE.read_text())
    fn(prof)
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(prof))
    return f


@pytest.mark.parametrize("fn,match", [
    (lambda p: p["merge"]["ties"].update(kk=0.8), r"bad\.merge\.ties: .*'kk'"),
    (lambda p: p["merge"]["dare"].update(p=1.5), r"bad\.merge\.dare: .*out of range"),
    (lambda p: p["merge"].update(ties=0.8), r"bad\.merge\.ties: must be a mapping"),
    (lambda p: p["merge"]["aim"].update(base_method="tiez"), r"bad\.merge\.aim: .*base_method"),
    (lambda p: p["benchmarks"][0].update(per_levl=2), r"bad\.benchmarks\[0\]\.per_levl: unknown key"),
    (lambda p: p["benchmarks"][0].update(name="gsm9k"), r"bad\.benchmarks\[0\]\.name: must be a benchmark name"),
    (lambda p: p["benchmarks"][0].update(per_level=0), r"bad\.benchmarks\[0\]\.per_level: must be int >= 1"),
    (lambda p: p["benchmarks"][0].update(limit=-1), r"bad\.benchmarks\[0\]\.limit: must be int >= 1"),
    (lambda p: p.update(benchmarks=["toy"]), r"bad\.benchmarks\[0\]: must be a mapping"),
    (lambda p: p.update(benchmarks=[]), r"bad\.benchmarks: must name at least one"),
    (lambda p: p["calibration"].update(sorce="s1k"), r"bad\.calibration\.sorce: unknown key"),
    (lambda p: p["calibration"].update(content="medium"), r"bad\.calibration\.content: must be short \| long \| both"),
    (lambda p: p["calibration"].update(n=0), r"bad\.calibration\.n: must be int >= 1"),
    (lambda p: p.update(methods=["tiez"]), r"bad\.methods\[0\]: must be a merge method"),
    (lambda p: p["sweeps"].update(alpha="0.5"), r"bad\.sweeps\.alpha: must be a list"),
    (lambda p: p["sweeps"].update(alpha=[0.5, "0.7"]), r"bad\.sweeps\.alpha\[1\]: must be a finite number"),
    (lambda p: p["sweeps"].update(rank=[0]), r"bad\.sweeps\.rank\[0\]: must be int >= 1"),
    (lambda p: p["sweeps"].update(alhpa=[0.5]), r"bad\.sweeps\.alhpa: unknown key"),
    (lambda p: p["backend"].update(name="vlm"), r"bad\.backend\.name: must be transformers \| vllm \| auto"),
    (lambda p: p["backend"].update(batch_size=0), r"bad\.backend\.batch_size: must be int >= 1"),
    (lambda p: p["backend"].update(gpu_memory_utilization=1.5), r"bad\.backend\.gpu_memory_utilization"),
    (lambda p: p["prompts"].update(merged="chatml"), r"bad\.prompts\.merged: must be a prompt style"),
    (lambda p: p["prompts"].pop("merged"), r"bad\.prompts\.merged: missing"),
    (lambda p: p["sampling"].update(temperature="0"), r"bad\.sampling\.temperature: must be a number >= 0"),
    (lambda p: p["sampling"].update(temperature=-1), r"bad\.sampling\.temperature: must be a number >= 0"),
    (lambda p: p["models"].update(scale="huge"), r"bad\.models\.scale: must be an organism scale"),
    (lambda p: p["models"].update(ladder=["micro", "xxl"]), r"bad\.models\.ladder\[1\]: must be an organism scale"),
    (lambda p: p["models"].update(kind="hub"), r"bad\.models\.system1: required for kind 'hub'"),
    (lambda p: p.update(allow_pickle="false"), r"bad\.allow_pickle: must be true or false"),
    (lambda p: p.update(seed=True), r"bad\.seed: must be int >= 0"),
    (lambda p: p.update(geometry="yes"), r"bad\.geometry: must be true or false"),
    (lambda p: p.update(_path="/elsewhere.yaml"), r"bad\._path: unknown key"),
    (lambda p: p.update(merge=None), r"missing required key 'merge'"),
    (lambda p: p.update(sampling=[1]), r"bad\.sampling: must be a mapping"),
])
def test_profile_validated_completely_at_load(tmp_path, fn, match):
    with pytest.raises(ProfileError, match=match) as e:
        load_profile(mutated(tmp_path, fn))
    assert "\n" not in str(e.value)


def _sampled(p, **kw):
    p["sampling"].update(temperature=0.7, **kw)


@pytest.mark.parametrize("fn", [
    lambda p: p.update(grading="qwen-toolkit"),
    lambda p: p.update(grading="strict"),
    lambda p: _sampled(p, n=4, top_p=0.95),
    lambda p: _sampled(p, top_p=1),
    lambda p: p["sampling"].update(n=1),
    lambda p: p["merge"].update(l2s_ties={"k": 0.8, "alpha": 1.0, "scope": "global"}),
    lambda p: p["merge"].update(l2s_dare_ties={"p": 0.3, "k": 0.8, "path": "exact"}),
    lambda p: p["merge"]["dare"].update(path="exact"),
    lambda p: p["merge"].update(linear={"weight": 0.5}, mk_ties={"method": "ties", "density": 0.2},
                                dare_ties={"density": 0.7, "seed": 1}, dare_linear={"density": 0.7}),
    lambda p: p["merge"].update(aim={"omega": 0.4, "tied_embedding": "keep", "base_method": "ties", "density": 0.2}),
])
def test_profile_accepts_grading_sampling_and_method_names(tmp_path, fn):
    """Issue 13's grading / sampling.n / sampling.top_p and issue 12's method names and parameters."""
    load_profile(mutated(tmp_path, fn))


@pytest.mark.parametrize("fn,match", [
    (lambda p: p.update(grading="lenient"), r"bad\.grading: must be strict \| qwen-toolkit"),
    (lambda p: p.update(grading=["strict"]), r"bad\.grading: must be strict \| qwen-toolkit"),
    (lambda p: _sampled(p, n=0), r"bad\.sampling\.n: must be int >= 1"),
    (lambda p: _sampled(p, n=2.0), r"bad\.sampling\.n: must be int >= 1"),
    (lambda p: _sampled(p, n=True), r"bad\.sampling\.n: must be int >= 1"),
    (lambda p: p["sampling"].update(n=4), r"bad\.sampling\.n: n > 1 needs sampling\.temperature > 0"),
    (lambda p: _sampled(p, top_p=0), r"bad\.sampling\.top_p: must be a number in \(0, 1\]"),
    (lambda p: _sampled(p, top_p=1.5), r"bad\.sampling\.top_p: must be a number in \(0, 1\]"),
    (lambda p: _sampled(p, top_p="0.9"), r"bad\.sampling\.top_p: must be a number in \(0, 1\]"),
    (lambda p: p["calibration"].update(batch_size=8), r"bad\.calibration\.batch_size: unknown key"),
    (lambda p: p["merge"]["ties"].pop("method"), r"bad\.merge\.ties: .*'k' is not a parameter of 'ties'.*l2s_ties"),
    (lambda p: p["merge"]["ties"].update(method="tiez"), r"bad\.merge\.ties\.method: unknown merge_method 'tiez'"),
    (lambda p: p["merge"]["ties"].update(method=5), r"bad\.merge\.ties\.method: must be a merge method name"),
    (lambda p: p["merge"].update(linear={"density": 0.5}), r"bad\.merge\.linear: .*unknown parameter 'density'"),
    (lambda p: p["merge"].update(dare_ties={"p": 0.3}), r"bad\.merge\.dare_ties: .*'p' is not a parameter"),
    (lambda p: p["merge"].update(dare_linear={"density": 1.5}), r"bad\.merge\.dare_linear: .*'density'.*out of range"),
    (lambda p: p["merge"]["dare"].update(path="textbook"), r"bad\.merge\.dare: .*'path'.*'authors' or 'exact'"),
    (lambda p: p["merge"]["aim"].update(tied_embedding="tie"), r"bad\.merge\.aim: .*'tied_embedding'"),
    (lambda p: p["merge"]["aim"].update(base_method="ties"), r"bad\.merge\.aim: .*'k' is not a parameter of 'ties'"),
    (lambda p: p["calibration"].update(overlong="truncate"), r"bad\.merge\.aim: .*overlong must be 'skip'"),
])
def test_profile_checks_grading_sampling_and_method_names(tmp_path, fn, match):
    with pytest.raises(ProfileError, match=match) as e:
        load_profile(mutated(tmp_path, fn))
    assert "\n" not in str(e.value)


def test_study_validates_a_profile_given_as_a_dict():
    from l2s_utils.study import Study

    prof = load_profile("smoke")
    prof["merge"]["ties"]["kk"] = 1
    with pytest.raises(ProfileError, match=r"profile smoke\.merge\.ties: .*'kk'"):
        Study(prof)


@pytest.mark.parametrize("text,match", [
    ("name: a\nname: b\n", r"found duplicate key 'name' \(line 2"),
    ("name: smoke\nsampling: {max_tokens: 4, max_tokens: 8}\n", r"duplicate key 'max_tokens'"),
    (b"name: \xff\n", r"not UTF-8"),
    ("!!python/object/apply:os.system ['echo hi']\n", r"invalid YAML"),
])
def test_profile_files_duplicate_keys_encoding_tags(tmp_path, text, match):
    f = tmp_path / "p.yaml"
    f.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ProfileError, match=match) as e:
        load_profile(f)
    assert "\n" not in str(e.value)


def test_shipped_profiles_still_validate():
    for f in sorted((ROOT / "data" / "profiles").glob("*.yaml")):
        assert load_profile(f.stem)["_path"] == str(f.resolve())


def test_profile_path_is_used_as_given_throughout(tmp_path, monkeypatch):
    """A custom file named like a built-in (name: toy) must run itself, never the built-in toy."""
    prof = yaml.safe_load(SMOKE.read_text())
    prof["name"] = "toy"
    prof["sampling"]["max_tokens"] = 7
    custom = tmp_path / "toy.yaml"
    custom.write_text(yaml.safe_dump(prof))
    got = load_profile(custom)
    assert got["_path"] == str(custom.resolve()) and got["sampling"]["max_tokens"] == 7
    seen = []

    import papermill

    def fake_execute(src, dst, parameters, **kw):
        seen.append(parameters["profile"])
        assert load_profile(parameters["profile"])["sampling"]["max_tokens"] == (48 if seen[-1] == "smoke" else 7)
        Path(dst).write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))

    monkeypatch.setattr(papermill, "execute_notebook", fake_execute)
    monkeypatch.setenv("L2S_STUDY_JOBS", "1")  # chapters in this process, where papermill is replaced
    monkeypatch.setattr(driver, "organism_models", lambda *a, **k: [])
    monkeypatch.setattr(driver, "build_book", lambda book: book / "index.html")
    monkeypatch.chdir(tmp_path)
    driver.run_study(str(custom), out=tmp_path / "run", book=tmp_path / "book", notebooks=("00_testbed",),
                     progress=False)
    assert seen == [str(custom.resolve())]
    driver.run_study("smoke", out=tmp_path / "run2", book=tmp_path / "book2", notebooks=("00_testbed",),
                     progress=False)
    assert seen[-1] == "smoke"  # a built-in by its name: the book shows no local path
    with pytest.raises(ProfileError, match="not found"):  # a path that does not exist never falls back to a name
        load_profile(tmp_path / "nope" / "toy.yaml")


# =================================================================================================
# 7. Merge configs and model files whose errors must name the culprit
# =================================================================================================

@pytest.mark.parametrize("change,culprit", [
    ({"parameters": 0.8}, "parameters must be a mapping, got 0.8"),
    ({"parameters": ["alpha", 0.5]}, "parameters must be a mapping"),
    ({"exclude": 5}, "exclude must be a list of regexes"),
    ({"exclude": [5]}, "exclude must be a list of regexes"),
    ({"models": [{"model": "FT1", "parameters": "abc"}]}, "models[0].parameters must be a mapping, got 'abc'"),
    ({"models": [{"model": 5}]}, "models[0].model must be a path or hub id"),
    ({"allow_pickle": "false"}, "allow_pickle must be true or false"),
    ({"seed": True}, "seed must be a non-negative integer"),
    ({"calibration": 5}, "calibration must be a mapping"),
    ({"base_model": ["a", "b"]}, "base_model must be a string"),
    ({"merge_method": ["ties"]}, "merge_method must be a string"),
    (b"dtype: float32\ndtype: bfloat16\n", "found duplicate key 'dtype'"),
    (b"description: caf\xe9\n", "not UTF-8 text"),
    (b"extra: [oops\n", "invalid YAML"),
    (b"!!python/object/apply:os.system ['echo hi']\n", "invalid YAML"),
])
def test_merge_config_errors_name_the_culprit(tiny, tmp_path, capsys, change, culprit):
    c = tmp_path / "c.yaml"
    head = {"merge_method": "task_arithmetic", "base_model": str(tiny["base"]), "models": [{"model": str(tiny["ft1"])}]}
    if isinstance(change, dict):
        head.update(json.loads(json.dumps(change).replace('"FT1"', json.dumps(str(tiny["ft1"])))))
        c.write_text(yaml.safe_dump(head))
    elif change.startswith(b"!!"):
        c.write_bytes(change)
    else:
        c.write_bytes(yaml.safe_dump(head).encode() + change)
    rc, err = run_cli(capsys, "merge", c, tmp_path / "out", "--quiet")
    assert_clean_error(rc, err, str(c), culprit)
    assert not (tmp_path / "out").exists() and leftovers(tmp_path / "out") == []


@pytest.mark.parametrize("calibration,culprit", [
    ({"n": "abc"}, "calibration.n must be an integer >= 1, got 'abc'"),
    ({"n": 0}, "calibration n must be >= 1"),
    ({"n": True}, "calibration.n must be an integer >= 1"),
    ({"seed": -1}, "calibration.seed must be an integer >= 0"),
    ({"max_length": 1.5}, "calibration.max_length must be an integer >= 2"),
    ({"source": "web"}, "calibration.source must be 'organism' or 's1k'"),
    ({"content": ["short"]}, "calibration content must be one of"),
    ({"path": 5}, "calibration.path must be a file path"),
    ({"sorce": "s1k"}, "calibration: unknown key(s) ['sorce']"),
])
def test_calibration_spec_errors_name_the_key(tiny, tmp_path, capsys, calibration, culprit):
    c = tmp_path / "c.yaml"
    c.write_text(yaml.safe_dump({"merge_method": "aim", "base_model": str(tiny["base"]),
                                 "models": [{"model": str(tiny["ft1"])}], "parameters": {"base_method": "ties"},
                                 "calibration": calibration}))
    rc, err = run_cli(capsys, "merge", c, tmp_path / "out", "--quiet")
    assert_clean_error(rc, err, str(c), culprit)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content,culprit", [
    (b"[1, 2]", "must hold a JSON object, not a list"),
    (b'"qwen2"', "must hold a JSON object, not a str"),
    (b'{"model_type": "qwen2\xff"}', "not UTF-8 text"),
    (b"{broken", "not valid JSON"),
])
def test_model_config_json_errors_name_the_file(tiny, tmp_path, capsys, content, culprit):
    m = shutil.copytree(tiny["ft1"], tmp_path / "m")
    (m / "config.json").write_bytes(content)
    c = write_config(tmp_path / "c.yaml", tiny["base"], [m])
    rc, err = run_cli(capsys, "merge", c, tmp_path / "out", "--quiet")
    assert_clean_error(rc, err, str(m / "config.json"), culprit)
    assert not (tmp_path / "out").exists()
