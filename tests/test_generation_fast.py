"""The fast greedy decoder gives exactly what ``model.generate`` gives (same tokens, counts, finish reasons)."""

from __future__ import annotations

import pytest
import torch

from l2s_utils.evaluate.generation import Sampling, generate_transformers, greedy_decode, growing_layer_class
from l2s_utils.merge.checkpoint import load_model
from l2s_utils.organism import task as T
from l2s_utils.organism.prompts import TOY


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    from l2s_utils.organism import build

    return build("micro", cache=tmp_path_factory.mktemp("cache"), progress=False, from_scratch=True)


def _same(model_and_tok, prompts, max_tokens, batch_size):
    from l2s_utils.evaluate.generation import fast_decoder_ok

    assert fast_decoder_ok()  # else both calls run model.generate and the comparison proves nothing
    fast = generate_transformers(None, prompts, Sampling(max_tokens=max_tokens), batch_size=batch_size, progress=False,
                                 model_and_tokenizer=model_and_tok, decoder="fast")
    ref = generate_transformers(None, prompts, Sampling(max_tokens=max_tokens), batch_size=batch_size, progress=False,
                                model_and_tokenizer=model_and_tok, decoder="generate")
    return fast, ref


@pytest.mark.parametrize("which", ["system1", "system2"])
def test_fast_decoder_equals_generate_on_the_main_pair(which):
    """The shipped main pair (or the local build) on a slice of the toy test set, every level, ragged batches."""
    from l2s_utils.organism import build

    org = build(progress=False)
    problems = T.make_problems("test", 4, 0)
    prompts = [TOY.format(question=p.question) for p in problems]
    fast, ref = _same(load_model(getattr(org, which), "cpu"), prompts, 1024, 8)  # level 5 runs to ~800 tokens
    assert [(g.text, g.n_tokens, g.finish_reason) for g in fast] == [(g.text, g.n_tokens, g.finish_reason) for g in ref]
    assert {g.finish_reason for g in ref} == {"stop"}


def test_fast_decoder_equals_generate_when_truncated(micro):
    """Rows that run into max_tokens (finish 'length') and rows that stop early in the same batch."""
    problems = T.make_problems("test", 6, 1)
    prompts = [TOY.format(question=p.question) for p in problems]
    for max_tokens in (1, 7, 40):
        fast, ref = _same(load_model(micro.system2, "cpu"), prompts, max_tokens, 5)
        assert [(g.text, g.n_tokens, g.finish_reason) for g in fast] == [(g.text, g.n_tokens, g.finish_reason) for g in ref]


def test_growing_cache_returns_exactly_the_concatenation():
    layer = growing_layer_class()(reserve=2)
    ks, vs = [], []
    g = torch.Generator().manual_seed(0)
    for q in (5, 1, 1, 3, 1, 1, 1, 1, 1, 9):
        k, v = torch.randn(2, 3, q, 4, generator=g), torch.randn(2, 3, q, 4, generator=g)
        ks.append(k)
        vs.append(v)
        kk, vv = layer.update(k, v)
        assert torch.equal(kk, torch.cat(ks, -2)) and torch.equal(vv, torch.cat(vs, -2))
        assert layer.get_seq_length() == kk.shape[-2]


def test_greedy_decode_pads_after_the_stop(micro):
    model, tok = load_model(micro.system1, "cpu")
    enc = tok([TOY.format(question="3+4")], return_tensors="pt", add_special_tokens=False)
    new = greedy_decode(model, enc["input_ids"], enc["attention_mask"], 30, {tok.convert_tokens_to_ids("<|im_end|>")},
                        tok.pad_token_id)
    assert new.shape[0] == 1 and 1 <= new.shape[1] <= 30
    with pytest.raises(ValueError, match="decoder"):
        generate_transformers(None, ["x"], Sampling(max_tokens=2), model_and_tokenizer=(model, tok), decoder="turbo")
