"""The streaming merge engine: files, validation, atomicity, tied embeddings, mergekit as an oracle."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from l2s_utils.merge import MergeConfigError, load_config, merge
from l2s_utils.merge import methods as M
from l2s_utils.merge.checkpoint import Checkpoint, CheckpointError

from conftest import make_qwen2


def weights(path: Path) -> dict[str, torch.Tensor]:
    c = Checkpoint(path)
    return {n: c.get(n) for n in c.names()}


def cfg(method, base, models, params=None, **extra):
    d = {"merge_method": method, "models": [{"model": str(m)} for m in models], "parameters": params or {}}
    if base:
        d["base_model"] = str(base)
    d.update(extra)
    return d


def assert_no_output(out: Path):
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")], "partial output left behind"


def test_reader_matches_safetensors_library(tiny, tmp_path):
    c = Checkpoint(tiny["bf16_base"])  # sharded, bf16
    assert len(c.files) > 1
    ref = {}
    for f in c.files:
        ref.update(load_file(f))
    assert set(ref) == set(c.names())
    for n, v in ref.items():
        assert torch.equal(c.get(n, dtype=None), v)


def test_task_arithmetic_alpha_one_and_zero(tiny, tmp_path):
    r = merge(cfg("task_arithmetic", tiny["base"], [tiny["ft1"]], {"alpha": 1.0}, dtype="float32"), tmp_path / "a1", progress=False)
    got, ft, base = weights(r.out), weights(tiny["ft1"]), weights(tiny["base"])
    assert set(got) == set(ft)
    for n in ft:
        assert torch.allclose(got[n], ft[n], atol=1e-6), n
    merge(cfg("task_arithmetic", tiny["base"], [tiny["ft1"]], {"alpha": 0.0}, dtype="float32"), tmp_path / "a0", progress=False)
    got = weights(tmp_path / "a0")
    assert all(torch.equal(got[n], base[n]) for n in base)


def test_output_is_a_loadable_checkpoint_with_provenance(tiny, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "m"
    r = merge(cfg("l2s_ties", tiny["bf16_base"], [tiny["bf16_ft"]], {"k": 0.8}, max_shard_size="16KB",
                  max_position_embeddings=4096), out, progress=False)
    files = sorted(p.name for p in out.iterdir())
    assert "model.safetensors.index.json" in files and "model-00001-of-" in "".join(files)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(Checkpoint(tiny["bf16_base"]).names())
    for f in set(index["weight_map"].values()):
        load_file(out / f)  # readable by the reference implementation
    conf = json.loads((out / "config.json").read_text())
    assert conf["max_position_embeddings"] == 4096 and conf["dtype"] == "bfloat16"
    prov = json.loads((out / "l2s_merge.json").read_text())
    assert prov["method"] == "l2s_ties" and prov["resolved_parameters"]["k"] == [0.8]
    assert len(prov["inputs"]) == 2 and all(len(v["sha256"]) == 64 for v in prov["inputs"].values())
    assert yaml.safe_load((out / "merge_config.yaml").read_text())["merge_method"] == "l2s_ties"
    assert r.tensors_merged == len(index["weight_map"]) and r.bytes_written > 0 and r.peak_rss_bytes > 0
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.dtype == torch.bfloat16
    gen = model.generate(torch.tensor([[1, 5, 7]]), max_new_tokens=4, do_sample=False)
    assert gen.shape == (1, 7)


def test_refuses_to_overwrite_unless_asked(tiny, tmp_path):
    c = cfg("task_arithmetic", tiny["base"], [tiny["ft1"]], {"alpha": 0.5})
    out = tmp_path / "o"
    merge(c, out, progress=False)
    stamp = (out / "l2s_merge.json").read_text()
    with pytest.raises(FileExistsError, match="already exists"):
        merge(c, out, progress=False)
    assert (out / "l2s_merge.json").read_text() == stamp
    c["parameters"]["alpha"] = 0.3
    merge(c, out, overwrite=True, progress=False)
    assert json.loads((out / "l2s_merge.json").read_text())["resolved_parameters"]["alpha"] == 0.3


def test_exclude_keeps_base_values(tiny, tmp_path):
    c = cfg("task_arithmetic", tiny["base"], [tiny["ft1"]], {"alpha": 1.0}, dtype="float32", exclude=[r".*layernorm", r"model\.norm"])
    r = merge(c, tmp_path / "e", progress=False)
    got, base, ft = weights(r.out), weights(tiny["base"]), weights(tiny["ft1"])
    for n in got:
        if "norm" in n:
            assert torch.equal(got[n], base[n]), n
        else:
            assert torch.allclose(got[n], ft[n], atol=1e-6), n
    assert r.tensors_copied == sum("norm" in n for n in got)


def test_global_ties_threshold_is_model_wide(tiny, tmp_path):
    k = 0.7
    r = merge(cfg("l2s_ties", tiny["base"], [tiny["ft1"]], {"k": k, "scope": "global"}, dtype="float32"), tmp_path / "g", progress=False)
    base, ft, got = weights(tiny["base"]), weights(tiny["ft1"]), weights(r.out)
    allabs = torch.cat([(ft[n] - base[n]).abs().reshape(-1) for n in sorted(base)])
    thr = torch.kthvalue(allabs, int(allabs.numel() * k)).values
    for n in base:
        d = ft[n] - base[n]
        assert torch.allclose(got[n], base[n] + torch.where(d.abs() >= thr, d, torch.zeros(())), atol=1e-6), n
    kept = sum(int((got[n] != base[n]).sum()) for n in base)
    assert abs(kept - (allabs.numel() - int(allabs.numel() * k))) <= 2


def test_dare_is_seeded_through_the_engine(tiny, tmp_path):
    c = cfg("dare_ta", tiny["base"], [tiny["ft1"]], {"p": 0.3, "alpha": 0.7})
    a = weights(merge(c, tmp_path / "a", seed=1, progress=False).out)
    b = weights(merge(c, tmp_path / "b", seed=1, progress=False).out)
    d = weights(merge(c, tmp_path / "d", seed=2, progress=False).out)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert any(not torch.equal(a[n], d[n]) for n in a)


# --- tied embeddings ---------------------------------------------------------------------------

def test_tied_base_untied_model_follow_base_ignores_lm_head(tiny, tmp_path):
    assert "lm_head.weight" not in Checkpoint(tiny["tied_base"]).names()
    with pytest.warns(UserWarning, match="untied lm_head.weight"):
        r = merge(cfg("task_arithmetic", tiny["tied_base"], [tiny["untied_ft"]], {"alpha": 0.5}), tmp_path / "f", progress=False)
    assert "lm_head.weight" not in Checkpoint(r.out).names()
    assert json.loads((r.out / "config.json").read_text())["tie_word_embeddings"] is True


def test_untie_merges_lm_head_separately(tiny, tmp_path):
    r = merge(cfg("task_arithmetic", tiny["tied_base"], [tiny["untied_ft"]], {"alpha": 0.5}, dtype="float32",
                  tied_embeddings="untie"), tmp_path / "u", progress=False)
    got = weights(r.out)
    base, ft = weights(tiny["tied_base"]), Checkpoint(tiny["untied_ft"])
    assert json.loads((r.out / "config.json").read_text())["tie_word_embeddings"] is False
    emb = base["model.embed_tokens.weight"]
    expected = emb + 0.5 * (ft.get("lm_head.weight") - emb)
    assert torch.allclose(got["lm_head.weight"], expected, atol=1e-6)
    assert not torch.allclose(got["lm_head.weight"], got["model.embed_tokens.weight"])
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(r.out).generate(torch.tensor([[1, 2]]), max_new_tokens=2, do_sample=False)


def test_tied_pair_stays_tied(tiny, tmp_path):
    r = merge(cfg("l2s_ties", tiny["tied_base"], [tiny["tied_ft"]], {"k": 0.5}), tmp_path / "t", progress=False)
    assert "lm_head.weight" not in Checkpoint(r.out).names()
    assert json.loads((r.out / "config.json").read_text())["tie_word_embeddings"] is True


# --- bad inputs: a clear error and no output --------------------------------------------------

def corrupt_copy(src: Path, dst: Path, how: str) -> Path:
    shutil.copytree(src, dst)
    f = dst / "model.safetensors"
    if how == "truncate":
        data = f.read_bytes()
        f.write_bytes(data[: len(data) // 2])
    elif how == "header":
        f.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    elif how == "nan":
        sd = load_file(f)
        sd["model.layers.1.mlp.down_proj.weight"][0, 0] = float("nan")
        save_file(sd, f, metadata={"format": "pt"})
    elif how == "pickle":
        sd = load_file(f)
        f.unlink()
        torch.save(sd, dst / "pytorch_model.bin")
    elif how == "missing_tensor":
        sd = load_file(f)
        del sd["model.layers.0.self_attn.q_proj.bias"]
        save_file(sd, f, metadata={"format": "pt"})
    elif how == "no_config":
        (dst / "config.json").unlink()
    return dst


@pytest.mark.parametrize("how,match", [
    ("truncate", r"lies outside the file|truncated"),
    ("header", r"corrupt safetensors header"),
    ("nan", r"tensor 'model.layers.1.mlp.down_proj.weight'.*NaN"),
    ("pickle", r"only pickle weights.*allow_pickle"),
    ("missing_tensor", r"tensor 'model.layers.0.self_attn.q_proj.bias'.*missing"),
    ("no_config", r"missing config.json"),
])
def test_bad_model_files(tiny, tmp_path, how, match):
    bad = corrupt_copy(tiny["ft1"], tmp_path / f"bad_{how}", how)
    out = tmp_path / "out"
    with pytest.raises((CheckpointError, MergeConfigError), match=match) as e:
        merge(cfg("task_arithmetic", tiny["base"], [bad], {"alpha": 0.7}), out, progress=False)
    if how not in ("nan",):
        assert str(bad) in str(e.value)
    assert_no_output(out)


def test_pickle_allowed_when_asked(tiny, tmp_path):
    bad = corrupt_copy(tiny["ft1"], tmp_path / "pk", "pickle")
    r = merge(cfg("task_arithmetic", tiny["base"], [bad], {"alpha": 1.0}, dtype="float32", allow_pickle=True), tmp_path / "o", progress=False)
    assert torch.allclose(weights(r.out)["lm_head.weight"], weights(tiny["ft1"])["lm_head.weight"], atol=1e-6)


def test_mismatched_architectures(tiny, tmp_path):
    wide = make_qwen2(tmp_path / "wide", seed=9, hidden=48)
    out = tmp_path / "out"
    with pytest.raises(CheckpointError, match=r"hidden_size = 48.*must match"):
        merge(cfg("l2s_ties", tiny["base"], [wide], {"k": 0.8}), out, progress=False)
    assert_no_output(out)
    vocab = make_qwen2(tmp_path / "vocab", seed=9, vocab=100)
    with pytest.raises(CheckpointError, match="vocab_size"):
        merge(cfg("l2s_ties", tiny["base"], [vocab], {"k": 0.8}), out, progress=False)
    assert_no_output(out)


def test_shape_mismatch_named(tiny, tmp_path):
    odd = shutil.copytree(tiny["ft1"], tmp_path / "odd")
    sd = load_file(odd / "model.safetensors")
    sd["model.norm.weight"] = torch.ones(31)
    save_file(sd, odd / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"'model.norm.weight' has shape \(31,\)"):
        merge(cfg("l2s_ties", tiny["base"], [odd], {"k": 0.8}), tmp_path / "out", progress=False)
    assert_no_output(tmp_path / "out")


@pytest.mark.parametrize("params,match", [
    ({"k": 1.0}, "out of range"), ({"k": -0.1}, "out of range"), ({"density": 0.2}, "fraction DROPPED"),
    ({"alpha": float("nan")}, "out of range"), ({"bogus": 1}, "unknown parameter 'bogus'"),
])
def test_bad_hyperparameters(tiny, tmp_path, params, match):
    with pytest.raises(MergeConfigError, match=match):
        merge(cfg("l2s_ties", tiny["base"], [tiny["ft1"]], params), tmp_path / "out", progress=False)
    assert_no_output(tmp_path / "out")


def test_nonfinite_result_is_an_error(tiny, tmp_path):
    # finite in fp32, but overflows when cast to the float16 output
    with pytest.raises(MergeConfigError, match=r"merged tensor .*float16.* NaN or Inf"):
        merge(cfg("task_arithmetic", tiny["base"], [tiny["ft1"]], {"alpha": 1e7}, dtype="float16"), tmp_path / "out", progress=False)
    assert_no_output(tmp_path / "out")


def test_bad_config_files(tiny, tmp_path):
    p = tmp_path / "c.yaml"
    for text, match in [
        ("merge_method: ties\nmodels: []\n", "non-empty list"),
        ("models: [{model: x}]\n", "missing 'merge_method'"),
        ("merge_method: task_arithmetic\nmodels: [{model: x}]\n", "needs 'base_model'"),
        ("merge_method: ties\nbase_model: b\nmodels: [{model: x}]\ndtype: int8\n", "dtype 'int8'"),
        ("merge_method: ties\nbase_model: b\nmodels: [{model: x}]\nfoo: 1\n", r"unknown key\(s\) \['foo'\]"),
        ("merge_method: [oops\n", "invalid YAML"),
        ("merge_method: ties\nbase_model: b\nmodels: [{model: x}]\nexclude: ['(']\n", "not a valid regex"),
        ("!!python/object/apply:os.system ['echo hi']\n", "invalid YAML"),
    ]:
        p.write_text(text)
        with pytest.raises(MergeConfigError, match=match):
            load_config(p)
    with pytest.raises(MergeConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_missing_model_dir(tiny, tmp_path):
    with pytest.raises(CheckpointError, match="nope.*not found"):
        merge(cfg("l2s_ties", tiny["base"], [tmp_path / "nope"], {"k": 0.8}), tmp_path / "out", progress=False)
    assert_no_output(tmp_path / "out")


# --- mergekit as an oracle -----------------------------------------------------------------------

def run_mergekit(config: dict, out: Path) -> dict[str, torch.Tensor]:
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge

    run_merge(MergeConfiguration.model_validate(config), str(out), MergeOptions(copy_tokenizer=False, quiet=True))
    return weights(out)


@pytest.mark.parametrize("method,ours,theirs,pair", [
    ("task_arithmetic", {"alpha": 0.7}, ({"weight": 0.7}, {}), "bf16"),
    ("task_arithmetic", {"alpha": 0.5}, ({"weight": 1.0}, {"lambda": 0.5}), "bf16"),
    # TIES on fp32 inputs: bf16 deltas have many equal magnitudes at the threshold, where our topk and
    # mergekit's argsort may keep different (equal-|x|) entries -- a tie-break, not a difference in math.
    ("ties", {"density": 0.2, "alpha": 1.0}, ({"density": 0.2, "weight": 1.0}, {}), "fp32"),
    ("ties", {"density": 0.6, "alpha": 0.55}, ({"density": 0.6, "weight": 1.0}, {"lambda": 0.55}), "fp32"),
])
def test_equal_to_mergekit_single_model(tiny, tmp_path, method, ours, theirs, pair):
    """Same math, same fp32 computation, one cast to bf16: bitwise-equal outputs (more in test_mergekit.py)."""
    base, ft = (tiny["bf16_base"], tiny["bf16_ft"]) if pair == "bf16" else (tiny["base"], tiny["ft1"])
    mk = {"merge_method": method, "base_model": str(base),
          "models": [{"model": str(ft), "parameters": theirs[0]}], "parameters": theirs[1],
          "dtype": "float32", "out_dtype": "bfloat16"}
    expected = run_mergekit(mk, tmp_path / "mk")
    got = weights(merge(cfg(method, base, [ft], ours), tmp_path / "l2s", progress=False).out)
    assert set(got) == set(expected)
    for n in got:
        assert torch.equal(got[n], expected[n]), n


def test_l2s_ties_and_mergekit_ties_differ_by_the_trim_rule(tiny, tmp_path):
    """l2s_ties k = 0.8 keeps n - m + 1 entries per tensor (m = int(0.8 n)); mergekit ties density 0.2 keeps int(0.2 n)."""
    a = weights(merge(cfg("l2s_ties", tiny["base"], [tiny["ft1"]], {"k": 0.8}, dtype="float32"), tmp_path / "a", progress=False).out)
    b = weights(merge(cfg("ties", tiny["base"], [tiny["ft1"]], {"density": 0.2}, dtype="float32"), tmp_path / "b", progress=False).out)
    base = weights(tiny["base"])
    n = "model.layers.0.mlp.down_proj.weight"
    numel = base[n].numel()
    assert int((a[n] != base[n]).sum()) == numel - int(numel * 0.8) + 1
    assert int((b[n] != base[n]).sum()) == int(numel * 0.2)


# --- CLI and shipped configs ----------------------------------------------------------------------

def test_cli_merge_and_errors(tiny, tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(cfg("l2s_ties", tiny["base"], [tiny["ft1"]], {"k": 0.8})))
    r = subprocess.run([sys.executable, "-m", "l2s_utils.cli", "merge", str(p), str(tmp_path / "out"), "--quiet"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "merged model:" in r.stdout and "peak RSS" in r.stdout
    r = subprocess.run([sys.executable, "-m", "l2s_utils.cli", "merge", str(p), str(tmp_path / "out")], capture_output=True, text=True)
    assert r.returncode == 2 and "already exists" in r.stderr
    r = subprocess.run([sys.executable, "-m", "l2s_utils.cli", "merge", "--list"], capture_output=True, text=True)
    assert r.returncode == 0 and "dare_ties" in r.stdout and "DROPPED" in r.stdout
    assert "l2s_dare_ties" in r.stdout and "equals mergekit 0.1.5" in r.stdout and "Long-to-Short-via-Model-Merging" in r.stdout


def test_shipped_paper_configs_parse():
    root = Path(__file__).parents[1] / "data" / "configs"
    files = sorted(root.rglob("*.yaml"))
    assert len(files) >= 20
    for f in files:
        c = load_config(f)
        assert c.models and M.get_method(c.merge_method)


def test_shipped_configs_match_table7(tmp_path):
    from l2s_utils.study.paper import paper_merge_configs, write_configs

    root = Path(__file__).parents[1] / "data" / "configs"
    for f in write_configs(tmp_path):
        assert (root / f.relative_to(tmp_path)).read_text() == f.read_text(), f"{f.name} is stale: python -m l2s_utils.study.paper"
    ties7 = paper_merge_configs("7b")["ties"]
    assert ties7["parameters"] == {"k": 0.8, "alpha": 1.0}
    assert paper_merge_configs("14b")["ties"]["parameters"] == {"k": 0.2, "alpha": 0.5}
    assert paper_merge_configs("7b")["task_arithmetic"]["parameters"]["alpha"] == 0.7


@pytest.mark.parametrize("method,params", [
    ("task_arithmetic", {"alpha": 0.7}), ("average", {}), ("l2s_ties", {"k": 0.8}), ("l2s_ties", {"k": 0.3, "alpha": 0.5}),
    ("dare", {"p": 0.3}), ("dare_ta", {"p": 0.4, "alpha": 0.7}), ("l2s_dare_ties", {"p": 0.3, "k": 0.8}),
    ("l2s_dare_ties", {"p": 0.3, "k": 0.8, "path": "exact", "alpha": 0.6}),
    ("l2s_ties", {"k": 0.8, "scope": "global"}), ("l2s_ties", {"k": 0.3, "alpha": 0.5, "scope": "global"}), ("linear", {}),
])
def test_row_chunked_streaming_equals_whole_tensors(tiny, tmp_path, monkeypatch, method, params):
    """Large tensors are processed in row chunks; the result must not depend on it (DARE masks included)."""
    import l2s_utils.merge.engine as engine

    c = cfg(method, tiny["base"], [tiny["base"], tiny["ft1"]] if method in ("average", "dare", "linear") else [tiny["ft1"], tiny["ft2"]],
            params, dtype="float32")
    whole = weights(merge(c, tmp_path / "whole", progress=False).out)
    monkeypatch.setattr(engine, "CHUNK_ELEMENTS", 100)  # every matrix is split into many row chunks
    assert len(engine.row_chunks((96, 32))) > 10
    chunked = weights(merge(c, tmp_path / "chunked", progress=False).out)
    for n in whole:
        assert torch.equal(whole[n], chunked[n]), n


def test_streamed_kth_abs_is_kthvalue():
    """The two-histogram streamed rank equals torch.kthvalue on the concatenation, ties and signs included."""

    g = torch.Generator().manual_seed(0)
    a = torch.randn(70_000, generator=g) * 0.01
    b = torch.randn(50_000, generator=g).to(torch.bfloat16).float()  # many equal magnitudes
    b[:5000] = 0.0
    chunks = [(a[i:i + 9000], b[i:i + 9000]) for i in range(0, 70_000, 9000)]
    for ms in ([1, 1], [35_000, 25_000], [69_999, 50_000], [0, 4_999], [0, 5_001]):
        got = M.streamed_kth_abs(lambda: iter([[x, y] for x, y in chunks]), ms)
        want = [0.0 if m == 0 else float(torch.kthvalue(t.abs(), m).values) for t, m in zip((a, b), ms)]
        assert got == want, (ms, got, want)


def test_reads_into_reused_buffers_equal_fresh_reads(tiny):
    """Checkpoint.get with out/scratch returns the same values as a plain read, and views the buffer."""
    from l2s_utils.merge.checkpoint import Checkpoint

    out, scratch = torch.empty(1 << 16), torch.empty(1 << 18, dtype=torch.uint8)
    for model in (tiny["ft1"], tiny["bf16_ft"]):  # fp32: read straight into out; bf16: via scratch
        c = Checkpoint(model)
        for n in c.names():
            shape = c.info(n).shape
            for rows in ((1, min(3, shape[0])) if len(shape) == 2 else None, None):
                got = c.get(n, rows=rows, out=out, scratch=scratch)
                assert torch.equal(got, c.get(n, rows=rows)), n
                assert got.data_ptr() == out.data_ptr(), n
    small = torch.empty(4)  # does not fit: a fresh tensor, same values
    assert torch.equal(c.get(c.names()[0], out=small, scratch=scratch), c.get(c.names()[0]))


def test_twin_randomized_is_streamed(tiny, tmp_path, monkeypatch):
    """twin with svd: randomized reads every matrix in row chunks (V_r by streamed passes): the result does not
    depend on the chunking beyond fp32 rounding, and at full rank it gives the fine-tuned model back."""
    import l2s_utils.merge.engine as engine

    params = {"rank": 4, "alpha": 0.7, "svd": "randomized"}
    c = cfg("twin", tiny["base"], [tiny["ft1"]], params, dtype="float32")
    whole = weights(merge(c, tmp_path / "whole", progress=False).out)
    monkeypatch.setattr(engine, "CHUNK_ELEMENTS", 100)
    chunked = weights(merge(c, tmp_path / "chunked", progress=False).out)
    for n in whole:
        assert torch.allclose(whole[n], chunked[n], atol=1e-6), n
    full = weights(merge(cfg("twin", tiny["base"], [tiny["ft1"]], {**params, "rank": 96}, dtype="float32"),
                         tmp_path / "full", progress=False).out)
    ft = weights(tiny["ft1"])
    for n in full:
        assert torch.allclose(full[n], ft[n], atol=1e-5), n
