"""Trained long-to-short baselines (TRL): each trains on the micro organism, is cached, and loads; rewards by hand."""

from __future__ import annotations

import dataclasses

import pytest

from l2s_utils.study import baselines as B


class Chars:
    """A tokenizer stand-in for the rewards: one token per character."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": list(text)}


def test_tldr_reward_by_hand():
    right, wrong = "x" * 40 + "\\boxed{7}", "x" * 40 + "\\boxed{8}"  # 49 characters each
    r = B.tldr_reward([right, right, right, wrong], gold=[7, 7, 7, 7], ref_len=[49, 49, 98, 49],
                      level=["long", "short", "short", "long"], tokenizer=Chars())
    assert r == pytest.approx([1.0, 1.0 - 0.5, 1.0, 0.0])  # at l_ref: long free, short pays 0.5; half l_ref: free


def test_budget_reward_by_hand():
    def resp(b, n_body, ans):
        return f"<budget>{b}</budget>" + "x" * (n_body - len(f"<budget>{b}</budget>") - len(f"\\boxed{{{ans}}}")) + f"\\boxed{{{ans}}}"

    texts = [resp(100, 100, 7), resp(50, 100, 7), resp(100, 100, 8), "no budget \\boxed{7}"]
    r = B.budget_reward(texts, gold=[7, 7, 7, 7], ref_len=[200] * 4, tokenizer=Chars())
    assert r == pytest.approx([1 - 0.3 * 0.5, (1 - 0.3 * 0.25) - 1.0, 0.0, -1.0])
    assert B.budget_of(" <budget>120</budget>\n<think>") == 120 and B.budget_of("<think>") is None


def test_tagged_questions():
    assert B.tagged("37+48", "short") == "37+48 [short]"
    with pytest.raises(ValueError, match="length level"):
        B.tagged("1+1", "tiny")
    with pytest.raises(ValueError, match="unknown baseline"):
        B.build("ppo", None)


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    from l2s_utils.organism import build

    return build("micro", cache=tmp_path_factory.mktemp("cache"), progress=False, from_scratch=True)


@pytest.mark.parametrize("method", ["tldr", "selfbudgeter", "dpo"])
def test_each_baseline_trains_on_micro_and_is_cached(method, micro, tmp_path, monkeypatch, capfd):
    from l2s_utils.study import premise

    monkeypatch.setattr(premise, "toy_max_tokens", lambda profile="toy": 48)  # micro writes short, broken traces
    # micro answers nothing right: call every second response right, so that the preference and cold-start data exist
    monkeypatch.setattr(B, "correct", lambda text, gold: len(text) % 2 == 0)
    spec = dataclasses.replace(B.DEFAULTS[method], steps=2, problems_per_level=2, batch=4, generations=2,
                               steps_per_generation=2, coldstart_steps=2)
    got = B.build(method, micro, spec=spec, cache=tmp_path, progress=False)
    printed = capfd.readouterr()
    assert "dataset" not in printed.err + printed.out  # quiet (a notebook): no dataset-preparation progress bars
    assert (got.path / "config.json").is_file() and list(got.path.glob("*.safetensors"))
    assert got.manifest["train_s"] > 0 and got.manifest["spec"]["steps"] == 2
    again = B.build(method, micro, spec=spec, cache=tmp_path)
    assert again.manifest["created"] == got.manifest["created"]  # a cache hit
    from l2s_utils.merge.checkpoint import load_model

    model, tok = load_model(got.path, "cpu")
    assert model.config.num_hidden_layers == 1


def test_shipped_baseline_is_used_verified_and_skipped_from_scratch(micro, tmp_path, monkeypatch):
    """A shipped baseline (``l2s baselines --ship``) loads where no local build exists; tampered files are refused;
    from scratch, the shipped weights are not used."""
    from l2s_utils.study import premise

    monkeypatch.setattr(premise, "toy_max_tokens", lambda profile="toy": 48)
    monkeypatch.setattr(B, "correct", lambda text, gold: len(text) % 2 == 0)
    spec = dataclasses.replace(B.DEFAULTS["dpo"], steps=2, problems_per_level=2, batch=4, generations=2)
    got = B.build("dpo", micro, spec=spec, cache=tmp_path / "a")
    dest = tmp_path / "shipped"
    target = B.ship(got, micro.scale, spec, micro.system2, dest)
    assert target.name == f"micro-dpo-{B.recipe_key(spec, micro.system2)}"
    assert B.recipe_key(spec, micro.system2) != B.baseline_key(spec, micro.system2)  # no versions in the recipe
    m = __import__("json").loads((target / "manifest.json").read_text())
    assert set(m["sha256"]) == {str(f.relative_to(target)) for f in target.rglob("*") if f.is_file()} - {"manifest.json"}
    assert not str(m["system2"]).startswith("/")  # no machine's path in what ships

    def no_training(*a, **k):
        raise AssertionError("trained although shipped weights exist")

    monkeypatch.setattr(B, "_train_dpo", no_training)
    assert B.locate("dpo", micro, spec, cache=tmp_path / "b", shipped_dir=dest).source == "shipped"
    assert B.locate("dpo", micro, spec, cache=tmp_path / "b", shipped_dir=dest, use_shipped=False) is None
    loaded = B.build("dpo", micro, spec=spec, cache=tmp_path / "b", shipped_dir=dest)
    assert loaded.source == "shipped" and loaded.path == target / "model"
    assert (loaded.path / "model.safetensors").read_bytes() == (got.path / "model.safetensors").read_bytes()
    with pytest.raises(ValueError, match="already shipped"):
        B.ship(loaded, micro.scale, spec, micro.system2, dest)
    with pytest.raises(AssertionError, match="trained although"):
        B.build("dpo", micro, spec=spec, cache=tmp_path / "b", shipped_dir=dest, from_scratch=True)
    monkeypatch.setenv("L2S_ORGANISM_FROM_SCRATCH", "1")
    with pytest.raises(AssertionError, match="trained although"):
        B.build("dpo", micro, spec=spec, cache=tmp_path / "b", shipped_dir=dest)
    monkeypatch.delenv("L2S_ORGANISM_FROM_SCRATCH")
    (target / "model" / "model.safetensors").write_bytes(b"tampered")
    with pytest.raises(B.ShippedBaselineError, match="does not match its manifest"):
        B.build("dpo", micro, spec=spec, cache=tmp_path / "b", shipped_dir=dest)
    assert not (tmp_path / "b" / "baselines").exists() or not any((tmp_path / "b" / "baselines").iterdir())


def test_every_shipped_baseline_matches_its_manifest():
    """The repository's data/baselines: each directory's files match their sha256, and its name is its recipe."""
    import json

    from l2s_utils.organism.training import file_hashes

    dirs = sorted(p for p in B.SHIPPED_DIR.iterdir() if p.is_dir()) if B.SHIPPED_DIR.is_dir() else []
    for d in dirs:
        m = json.loads((d / "manifest.json").read_text())
        assert file_hashes(d) == m["sha256"], d
        assert d.name.endswith("-" + m["recipe"]) and d.name.split("-")[1] == m["method"]


def test_cli_loads_the_shipped_baselines_of_the_toy_profile(tmp_path, monkeypatch, capsys):
    """``l2s baselines --profile toy`` on a fresh machine (empty cache): the shipped weights, nothing trained."""
    from l2s_utils import cli

    monkeypatch.setenv("L2S_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(B, "_train_tldr", lambda *a, **k: (_ for _ in ()).throw(AssertionError("would train")))
    assert cli.main(["baselines", "--profile", "toy", "--quiet"]) == 0
    out = capsys.readouterr().out
    for method in ("tldr", "selfbudgeter", "dpo"):
        assert f"baseline {method} (s): shipped weights (data/baselines)" in out
    assert "data/baselines/s-tldr-" in out
