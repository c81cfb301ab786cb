"""The model organism at micro scale: tokenizer round trip, training, caching, determinism, loading,
shipped weights, vLLM-compatible shapes, and the geometry (barrier) measurements."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from l2s_utils.organism import task as T
from l2s_utils.organism import corpus as C
from l2s_utils.organism import training as O
from l2s_utils.organism.prompts import END, TOY as PROMPT
from l2s_utils.study.premise import evaluate_toy, premise_checks


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    return O.build("micro", cache=tmp_path_factory.mktemp("cache"), progress=False, from_scratch=True)


def test_tokenizer_round_trips_through_autotokenizer(tmp_path):
    import random

    from tokenizers import Tokenizer
    from transformers import AutoTokenizer, Qwen2Config

    O.build_tokenizer(tmp_path, seed=0)
    Qwen2Config(vocab_size=512).save_pretrained(tmp_path)  # model_type qwen2: transformers 5 forces Qwen2Tokenizer
    raw = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    auto = AutoTokenizer.from_pretrained(tmp_path)
    assert type(auto).__name__ == "Qwen2Tokenizer" and auto.padding_side == "left"
    rng = random.Random(5)
    texts = []
    for level in T.LEVELS:
        p = T.random_problem(level, rng)
        texts += [PROMPT.format(question=p.question) + T.system2_trace(p, rng) + END, T.system1_trace(p)]
    texts += ["Unseen words: zebra Ωmega 12345 {}\\boxed{-3}\n\n", "<think>\n</think>"]
    for text in texts:
        ids = raw.encode(text).ids
        assert auto(text, add_special_tokens=False)["input_ids"] == ids
        assert auto.decode(ids) == text
    one = auto("1234567890", add_special_tokens=False)["input_ids"]
    assert len(one) == 10  # digits are single tokens
    for t in ("<think>", "</think>", "<|im_start|>", "<|im_end|>"):
        assert len(auto(t, add_special_tokens=False)["input_ids"]) == 1


def test_training_lowers_loss_and_checkpoints_load(micro):
    m = micro.manifest
    for stage in ("base", "system1", "system2"):
        assert m["final_loss"][stage] < m["first_loss"][stage], stage
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for stage in ("base", "system1", "system2"):
        path = getattr(micro, stage)
        assert (path / "model.safetensors").is_file() and not list(path.glob("*.bin"))
        model = AutoModelForCausalLM.from_pretrained(path)
        tok = AutoTokenizer.from_pretrained(path)
        assert type(model).__name__ == "Qwen2ForCausalLM"
        ids = tok(PROMPT.format(question="3+4"), return_tensors="pt")
        out = model.generate(**ids, max_new_tokens=5, do_sample=False)
        assert out.shape[1] > ids["input_ids"].shape[1]


def test_cache_hit_on_second_build(micro):
    again = O.build("micro", cache=micro.root.parents[1], progress=False)
    assert again.root == micro.root and again.manifest["created"] == micro.manifest["created"]


def test_rebuild_in_a_separate_process_is_bit_identical(micro, tmp_path):
    """Two fresh processes build the same recipe into two caches: every file has the same sha256."""
    code = ("import sys; from l2s_utils.organism import training as O; "
            "print(O.build('micro', cache=__import__('pathlib').Path(sys.argv[1]), progress=False, from_scratch=True).root)")
    roots = []
    for i in range(2):
        out = subprocess.run([sys.executable, "-c", code, str(tmp_path / f"c{i}")], capture_output=True, text=True,
                             check=True)
        roots.append(Path(out.stdout.strip().splitlines()[-1]))
    a, b = (O.file_hashes(r) for r in roots)
    assert a == b and any(k.endswith("model.safetensors") for k in a)
    assert a == micro.manifest["sha256"]  # and equal to this process's build


def test_manifest_records_environment_and_key_covers_it(micro, monkeypatch):
    env = micro.manifest["environment"]
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability() and micro.manifest["threads"] == O.TRAIN_THREADS
    spec = O.SCALES["micro"]
    key = O.spec_hash(spec)
    monkeypatch.setattr(O, "environment", lambda: {**env, "cpu_capability": "other"})
    assert O.spec_hash(spec) != key and O.recipe_hash(spec) == micro.manifest["recipe"]
    import dataclasses

    assert O.recipe_hash(dataclasses.replace(spec, seed=1)) != O.recipe_hash(spec)


def test_shipped_weights_are_used_and_verified(micro, tmp_path, monkeypatch):
    monkeypatch.setattr(O, "SHIPPED_DIR", tmp_path / "shipped")
    dest = O.ship(micro)
    empty = tmp_path / "empty-cache"
    org = O.build("micro", cache=empty, progress=False, from_scratch=False)
    assert org.source == "shipped" and org.root == dest and not empty.exists()
    # a corrupted shipped file is refused by name, and nothing is trained or written
    f = dest / "system2" / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-1] + bytes([f.read_bytes()[-1] ^ 1]))
    with pytest.raises(O.ShippedOrganismError, match="system2/model.safetensors"):
        O.build("micro", cache=empty, progress=False, from_scratch=False)
    assert not empty.exists()


def test_every_ladder_scale_is_shipped_for_its_current_recipe():
    """The weights in data/organism must be those of today's recipe (a recipe change must re-ship them)."""
    for scale in (*O.LADDER, O.MAIN_SCALE):
        org = O.shipped(scale, O.SCALES[scale])
        assert org is not None, f"no shipped organism for {scale} recipe {O.recipe_hash(O.SCALES[scale])}"
        assert org.manifest["recipe"] == O.recipe_hash(O.SCALES[scale])
    current = {f"{s}-{O.recipe_hash(O.SCALES[s])}" for s in O.SCALES}
    stale = [d.name for d in O.SHIPPED_DIR.iterdir() if d.is_dir() and d.name not in current]
    assert not stale, f"data/organism holds weights of recipes the code no longer builds: {stale}"


def test_head_sizes_are_served_by_vllm():
    for scale, sp in O.SCALES.items():
        assert sp.hidden % sp.heads == 0 and sp.heads % sp.kv_heads == 0, scale
        assert sp.hidden // sp.heads in (32, 64, 80, 96, 112, 128, 256), scale


def test_unknown_scale():
    with pytest.raises(ValueError, match="unknown organism scale 'huge'"):
        O.build("huge")


def test_ladder_spans_ten_x():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    sizes = []
    for s in O.LADDER:
        sp = O.SCALES[s]
        cfg = Qwen2Config(vocab_size=sp.vocab_size, hidden_size=sp.hidden, intermediate_size=sp.intermediate,
                          num_hidden_layers=sp.layers, num_attention_heads=sp.heads, num_key_value_heads=sp.kv_heads,
                          tie_word_embeddings=False)
        with torch.device("meta"):
            sizes.append(sum(p.numel() for p in Qwen2ForCausalLM(cfg).parameters()))
    assert len(sizes) >= 4 and sizes == sorted(sizes) and sizes[-1] >= 10 * sizes[0]
    assert O.MAIN_SCALE in O.LADDER


def test_generated_answers_parse_and_premise_checks(micro):
    problems = T.make_problems("test", 2, seed=0)
    rows = evaluate_toy(micro.system1, problems, max_tokens=40, progress=False)
    assert len(rows) == len(problems)
    for r in rows:
        assert r["finish_reason"] in ("stop", "length") and 0 < r["tokens"] <= 40
    import pandas as pd

    fake = pd.DataFrame([
        {"model": "System 1", "level": lv, "tokens": 10, "correct": lv < 4, "reflective": False} for lv in range(1, 6)
    ] + [{"model": "System 2", "level": lv, "tokens": 40 * lv, "correct": lv < 5, "reflective": True} for lv in range(1, 6)])
    checks = {c["check"]: c for c in premise_checks(fake)}
    assert all(c["passed"] for c in checks.values()) and checks["s2_headroom"]["value"] == 80.0
    fake.loc[fake.model == "System 2", "correct"] = True
    assert not {c["check"]: c for c in premise_checks(fake)}["s2_headroom"]["passed"]  # no room to rank methods
    fake.loc[(fake.model == "System 2") & (fake.level == 5), "correct"] = False
    fake.loc[fake.model == "System 1", "reflective"] = True
    assert not {c["check"]: c for c in premise_checks(fake)}["s1_reflective"]["passed"]


def test_barrier_and_path_on_hand_computed_cases():
    import pandas as pd

    from l2s_utils.study.premise import alpha_path, barriers

    rows = []
    for a, acc in ((0.0, 0.2), (0.5, 0.1), (1.0, 0.6)):  # linear prediction at 0.5: 40%; measured 10%
        rows += [{"alpha": a, "correct": i < 10 * acc, "tokens": 10, "reflective": False} for i in range(10)]
    path = alpha_path(pd.DataFrame(rows), {0.0: {"system1": 1.0, "system2": 3.0}, 0.5: {"system1": 2.5, "system2": 2.0},
                                           1.0: {"system1": 2.0, "system2": 1.0}})
    b = barriers(path)
    assert b["accuracy"] == pytest.approx(30.0)
    assert b["loss (system1 traces)"] == pytest.approx(1.0) and b["loss (system2 traces)"] == pytest.approx(0.0)
    fake = pd.DataFrame([{"model": m, "level": lv, "tokens": 10 if m == "System 1" else 40 * lv, "correct": True,
                          "reflective": m == "System 2"} for m in ("System 1", "System 2") for lv in range(1, 6)])
    assert {c["check"]: c["passed"] for c in premise_checks(fake, barrier=30.0)}["barrier"] is False
    assert {c["check"]: c["passed"] for c in premise_checks(fake, barrier=4.0)}["barrier"] is True


def test_interpolation_endpoints_and_premise_report(micro):
    from l2s_utils.study.premise import _state, interpolate, premise_report

    s1, s2 = _state(micro.system1), _state(micro.system2)
    assert all(torch.equal(interpolate(s1, s2, 0.0)[k], s1[k]) for k in s1)
    assert all(torch.equal(interpolate(s1, s2, 1.0)[k], s2[k]) for k in s1)
    rep = premise_report(micro, n_per_level=1, max_tokens=8, progress=False, alphas=(0.5,))
    assert list(rep["path"].alpha) == [0.0, 0.5, 1.0]
    assert {c["check"] for c in rep["checks"]} == {k for k, _, _ in __import__("l2s_utils.study.premise",
                                                                                fromlist=["x"]).PREMISE_BARS}
    assert rep["norms"]["relative norm"].gt(0).all()


def test_no_calibration_or_test_question_is_trained_on():
    """Every multi-operation question in the pretraining documents and SFT data comes from the train split."""
    import re

    texts = C.pretrain_texts(3000, seed=0, solution_share=O.SCALES[O.MAIN_SCALE].solution_share)
    pattern = r"(?:<\|im_start\|>user\n)?(\d+(?:[+-]\d+){2,})(?:<\|im_end\|>|:| \|)"
    questions = [m.group(1) for t in texts for m in [re.match(pattern, t)] if m]
    assert len(questions) > 500
    assert {T.split_of(q) for q in questions} == {"train"}
    # worked solutions are in the chat format, half of them long
    sols = [t for t in texts if t.startswith("<|im_start|>")]
    assert sols and all(t.endswith("<|im_end|>") for t in sols)
    assert 0.4 < sum("<think>" in t for t in sols) / len(sols) < 0.6
    for kind in ("system1", "system2"):
        pairs = C.sft_examples(kind, 20, 0, long_share=0.3 if kind == "system1" else 0.0)
        assert {T.split_of(p.split("\n")[1].removesuffix("<|im_end|>")) for p, _ in pairs} == {"train"}


def test_copy_drills_copy_exactly():
    import random
    import re

    rng = random.Random(0)
    drills = [C.copy_drill(rng) for _ in range(200)]
    for d in drills:
        if " | " in d:
            a, b, c = d.split(" | ")
            assert a == b == c
        else:
            chain, peel = d.split(": ", 1)
            takes = [t.removeprefix("take ") for t in peel.rstrip(".").split("; ")]
            first = re.match(r"\d+", chain).group(0)
            assert takes[0] == chain.removeprefix(first)  # each take: the chain from one operation on
            assert all(chain.endswith(t) for t in takes)
            assert [len(re.findall(r"[+-]", t)) for t in takes] == list(range(len(takes), 0, -1))
    assert 0.3 < sum(" | " in d for d in drills) / len(drills) < 0.7
    texts = C.arithmetic_texts(4000, 0)
    assert 0.07 < sum(" | " in t or ": take " in t for t in texts) / len(texts) < 0.13


def test_system1_data_holds_its_share_of_long_traces():
    """System 1's SFT data: a share s1_long_share of long traces (bounded short preference); System 2's: all long."""
    share = O.SCALES[O.MAIN_SCALE].s1_long_share
    s1 = C.sft_examples("system1", 400, 0, long_share=share)
    frac = sum(r.startswith("<think>") for _, r in s1) / len(s1)
    assert abs(frac - share) < 0.03, frac
    assert not any(r.startswith("<think>") for _, r in C.sft_examples("system1", 50, 0))
    assert all(r.startswith("<think>") for _, r in C.sft_examples("system2", 50, 0))
    with pytest.raises(ValueError, match="kind must be"):
        C.sft_examples("system3", 5, 0)


def test_seed_record_and_seeds_table(tmp_path, monkeypatch):
    """The robustness record: one line per seed from a premise report; shown only for today's recipe."""
    import json

    from l2s_utils.study import premise as P

    spec = O.SCALES[O.MAIN_SCALE]
    manifest = {"spec": {"seed": 1}, "recipe": O.recipe_hash(spec), "timings": {"total_s": 480.4}, "n_params": 410_000}
    org = O.Organism(O.MAIN_SCALE, tmp_path, tmp_path / "b", tmp_path / "s1", tmp_path / "s2", manifest)
    path = [{"alpha": a, "accuracy": acc, "accuracy (linear)": 30 + 50 * a, "reflective": r}
            for a, acc, r in ((0.0, 30.0, 0.0), (0.1, 28.0, 0.0), (0.5, 60.0, 100.0), (1.0, 80.0, 100.0))]
    checks = [{"check": "hard_gap", "value": 55.0, "passed": True}, {"check": "barrier", "value": 7.0, "passed": True},
              {"check": "s1_level1", "value": 70.0, "passed": False}]
    rec = P.seed_record(org, {"path": path, "checks": checks, "barrier": {"accuracy": 7.0}})
    assert rec["seed"] == 1 and rec["accuracy"] == {"System 1": 30.0, "System 2": 80.0}
    assert (rec["passed"], rec["bars"], rec["hard_gap"], rec["barrier"]) == (2, 3, 55.0, 7.0)
    assert [p["linear"] for p in rec["path"]] == [30.0, 35.0, 55.0, 80.0]

    monkeypatch.setattr(O, "SHIPPED_DIR", tmp_path)
    assert P.seeds_table() is None  # no record
    f = tmp_path / f"seeds-{O.MAIN_SCALE}.json"
    f.write_text(json.dumps({"recipe": "another", "seeds": [rec]}))
    assert P.seeds_table() is None  # a record of another recipe describes another organism
    f.write_text(json.dumps({"recipe": O.recipe_hash(spec), "seeds": [rec]}))
    t = P.seeds_table()
    assert list(t["seed"]) == [1] and t["bars passed"].iloc[0] == "2 of 3 (fails: s1_level1)"
    assert t["training"].iloc[0] == "480 s (threads not recorded)"


def test_system1_batches_mix_the_styles(tmp_path):
    """System 1's SFT batches hold both styles (its preference then settles at the calibrated value);
    length-bucketed batches, used for the single-style System 2, are nearly all one style."""
    tok = O.build_tokenizer(tmp_path / "tok", seed=0)
    think = tok.convert_tokens_to_ids("<think>")
    pairs = C.sft_examples("system1", 120, 0, long_share=0.25)

    def styles(mixed):
        out = []
        for parts in O._sft_batches(tok, pairs, 24, 25, seed=1, mixed=mixed):
            n_long = sum(int(((lab == think).any(-1)).sum()) for _, _, lab in parts)
            out.append((n_long, sum(len(x) for x, _, _ in parts)))
        return out

    mixed = styles(True)
    assert sum(0 < n < b for n, b in mixed) >= 0.9 * len(mixed)
    assert 0.15 < sum(n for n, _ in mixed) / sum(b for _, b in mixed) < 0.35
    bucketed = styles(False)
    assert sum(n in (0, b) for n, b in bucketed) >= 0.8 * len(bucketed)


def test_micro_batches_give_the_padded_batch_loss(tmp_path):
    """A step over length-sorted micro-batches, each weighted by its share of response tokens, is the mean token
    loss of the whole padded batch (and its gradient), up to float rounding."""
    tok = O.build_tokenizer(tmp_path / "tok", seed=0)
    pairs = C.sft_examples("system1", 30, 0, long_share=0.25)[:24]
    enc = [(tok(p)["input_ids"], tok(r)["input_ids"]) for p, r in pairs]
    parts = O.micro_batches(enc, tok.pad_token_id)
    whole = O.pad_pairs(enc, tok.pad_token_id)
    assert len(parts) == 2 and sum(p[0].numel() for p in parts) < 0.7 * whole[0].numel()
    model = O.new_model(O.SCALES["micro"], len(tok), tok)
    x, att, lab = whole
    ref = model(input_ids=x, attention_mask=att, labels=lab).loss
    counts = [int((lb[:, 1:] != -100).sum()) for _, _, lb in parts]
    acc = sum(model(input_ids=a, attention_mask=b, labels=c).loss * n / sum(counts) for (a, b, c), n in zip(parts, counts))
    assert float(acc) == pytest.approx(float(ref), rel=1e-5)


def test_only_system2_data_holds_slips():
    """Slips and their corrections are what System 2's fine-tune adds: none in pretraining or System 1's data."""
    texts = C.pretrain_texts(2000, seed=0, solution_share=O.SCALES[O.MAIN_SCALE].solution_share)
    long_docs = [t for t in texts if "<think>" in t]
    assert len(long_docs) > 200 and not any(T.SLIP_MARK in t for t in long_docs)
    s1 = [r for _, r in C.sft_examples("system1", 200, 0, long_share=0.25) if r.startswith("<think>")]
    assert len(s1) > 100 and not any(T.SLIP_MARK in r for r in s1)
    s2 = [r for _, r in C.sft_examples("system2", 200, 0)]
    assert sum(T.SLIP_MARK in r for r in s2) > 0.2 * len(s2)
    assert all(not T.check_arithmetic(r) for r in s1 + s2)


def test_fine_tune_exploration_reuses_a_base_only_when_it_is_the_same_base(micro, tmp_path):
    """``base_from`` (organism_explore.py --base-from): a spec that changes only the fine-tunes takes the base of an
    earlier build and gives the very checkpoints a full build of that spec gives; a spec that pretrains otherwise is
    refused before anything is written."""
    import dataclasses

    spec = dataclasses.replace(O.SCALES["micro"], s1_lr=2e-4)
    reused = O.build("micro", spec=spec, cache=tmp_path / "a", progress=False, from_scratch=True, base_from=micro.root)
    full = O.build("micro", spec=spec, cache=tmp_path / "b", progress=False, from_scratch=True)
    assert reused.manifest["timings"]["base_from"] == str(micro.root)
    assert reused.manifest["sha256"] == full.manifest["sha256"] != micro.manifest["sha256"]
    other = dataclasses.replace(O.SCALES["micro"], lr=1e-3)
    with pytest.raises(ValueError, match="pretrained another base"):
        O.build("micro", spec=other, cache=tmp_path / "c", progress=False, from_scratch=True, base_from=micro.root)
    assert not (tmp_path / "c").exists()


def test_cli_help_names_every_scale_and_the_ladder():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "l2s_utils.cli", "organism", "--help"], capture_output=True, text=True,
                         check=True).stdout
    text = " ".join(out.split())
    assert all(f" {s} " in text or f" {s}," in text or f"{s})" in text for s in O.SCALES), text
    assert ", ".join(O.LADDER) in text
