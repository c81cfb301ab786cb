"""The model organism at micro scale: tokenizer round trip, training, caching, determinism, loading."""

import json
from pathlib import Path

import pytest
import torch

from l2s_utils.organism import task as T
from l2s_utils.organism import training as O
from l2s_utils.study.premise import evaluate_toy, premise_checks


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    return O.build("micro", cache=tmp_path_factory.mktemp("cache"), progress=False)


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
        texts += [O.PROMPT.format(question=p.question) + T.system2_trace(p, rng) + O.END, T.system1_trace(p)]
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
        ids = tok(O.PROMPT.format(question="3+4"), return_tensors="pt")
        out = model.generate(**ids, max_new_tokens=5, do_sample=False)
        assert out.shape[1] > ids["input_ids"].shape[1]


def test_cache_hit_on_second_build(micro):
    again = O.build("micro", cache=micro.root.parents[1], progress=False)
    assert again.root == micro.root and again.manifest["created"] == micro.manifest["created"]


def test_same_seed_same_weights(micro, tmp_path):
    from safetensors.torch import load_file

    other = O.build("micro", cache=tmp_path, progress=False)
    for stage in ("base", "system1", "system2"):
        a = load_file(getattr(micro, stage) / "model.safetensors")
        b = load_file(getattr(other, stage) / "model.safetensors")
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), stage


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
    ] + [{"model": "System 2", "level": lv, "tokens": 40 * lv, "correct": True, "reflective": True} for lv in range(1, 6)])
    checks = {c["check"]: c for c in premise_checks(fake)}
    assert all(c["passed"] for c in checks.values())
    fake.loc[fake.model == "System 1", "reflective"] = True
    assert not {c["check"]: c for c in premise_checks(fake)}["s1_reflective"]["passed"]
