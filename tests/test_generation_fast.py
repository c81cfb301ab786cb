"""The fast decoder gives exactly what ``model.generate`` gives (same tokens, counts, finish reasons), greedy with
finished rows dropped from the batch and sampled with the same random draws."""

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


def _same(model_and_tok, prompts, max_tokens, batch_size, **sampling):
    from l2s_utils.evaluate.generation import fast_decoder_ok

    assert fast_decoder_ok()  # else both calls run model.generate and the comparison proves nothing
    s = Sampling(max_tokens=max_tokens, **sampling)
    fast = generate_transformers(None, prompts, s, batch_size=batch_size, progress=False,
                                 model_and_tokenizer=model_and_tok, decoder="fast")
    ref = generate_transformers(None, prompts, s, batch_size=batch_size, progress=False,
                                model_and_tokenizer=model_and_tok, decoder="generate")
    return fast, ref


def _rows(gens):
    return [(g.text, g.n_tokens, g.finish_reason) for g in gens]


@pytest.mark.parametrize("which", ["system1", "system2"])
def test_fast_decoder_equals_generate_on_the_main_pair(which):
    """The shipped main pair (or the local build) on a slice of the toy test set, every level, ragged batches."""
    from l2s_utils.organism import build

    org = build(progress=False)
    problems = T.make_problems("test", 4, 0)
    prompts = [TOY.format(question=p.question) for p in problems]
    fast, ref = _same(load_model(getattr(org, which), "cpu"), prompts, 1024, 8)  # level 5 runs to ~800 tokens
    assert _rows(fast) == _rows(ref)
    assert {g.finish_reason for g in ref} == {"stop"}


@pytest.mark.parametrize("top_p", [1.0, 0.9])
def test_fast_sampling_equals_generate_on_the_main_pair(top_p):
    """Sampled: the same random draws as ``generate`` (every row, finished ones too), over three batches in a row."""
    from l2s_utils.organism import build

    org = build(progress=False)
    problems = T.make_problems("test", 4, 1)
    prompts = [TOY.format(question=p.question) for p in problems]
    fast, ref = _same(load_model(org.system2, "cpu"), prompts, 1024, 8, temperature=0.7, top_p=top_p, seed=5)
    assert _rows(fast) == _rows(ref)
    greedy = generate_transformers(None, prompts, Sampling(max_tokens=1024), batch_size=8, progress=False,
                                   model_and_tokenizer=load_model(org.system2, "cpu"))
    assert _rows(fast) != _rows(greedy)  # it did sample


def test_dropping_finished_rows_changes_no_token(monkeypatch):
    """Greedy with finished rows dropped at once (share 0), at the default share, and never: the same tokens."""
    import l2s_utils.evaluate.generation as G
    from l2s_utils.organism import build

    org = build(progress=False)
    problems = T.make_problems("test", 6, 2)
    prompts = [TOY.format(question=p.question) for p in problems]
    mt = load_model(org.system2, "cpu")
    outs = []
    for share in (0.0, G.COMPACT_SHARE, 2.0):
        monkeypatch.setattr(G, "COMPACT_SHARE", share)
        outs.append(_rows(generate_transformers(None, prompts, Sampling(max_tokens=1024), batch_size=30,
                                                progress=False, model_and_tokenizer=mt)))
    assert outs[0] == outs[1] == outs[2]


def test_sampling_has_no_top_k(micro):
    """Temperature and top-p only, as vLLM: ``generate`` would add its default top-k of 50 unless told not to. On the
    micro model (nearly flat next-token distributions over ~400 tokens) top-k 50 changes what is drawn."""
    model, tok = load_model(micro.system2, "cpu")
    prompts = [TOY.format(question=p.question) for p in T.make_problems("test", 2, 3)]
    s = Sampling(max_tokens=40, temperature=1.0, seed=7)
    ours = generate_transformers(None, prompts, s, batch_size=16, progress=False, model_and_tokenizer=(model, tok))
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    torch.manual_seed(7)
    k50 = model.generate(**enc, do_sample=True, temperature=1.0, top_k=50, max_new_tokens=40,
                         pad_token_id=tok.pad_token_id)
    torch.manual_seed(7)
    k0 = model.generate(**enc, do_sample=True, temperature=1.0, top_k=0, max_new_tokens=40,
                        pad_token_id=tok.pad_token_id)
    assert not torch.equal(k50, k0)  # top-k matters here, so the next line can fail
    # the fast sampler has no top-k; so, if the two agree, the reference path (generate) has none either
    assert [g.text for g in ours] == [g.text for g in generate_transformers(
        None, prompts, s, batch_size=16, progress=False, model_and_tokenizer=(model, tok), decoder="generate")]


def test_fast_decoder_equals_generate_when_truncated(micro):
    """Rows that run into max_tokens (finish 'length') and rows that stop early in the same batch."""
    problems = T.make_problems("test", 6, 1)
    prompts = [TOY.format(question=p.question) for p in problems]
    for max_tokens in (1, 7, 40):
        fast, ref = _same(load_model(micro.system2, "cpu"), prompts, max_tokens, 5)
        assert _rows(fast) == _rows(ref)
        fast, ref = _same(load_model(micro.system2, "cpu"), prompts, max_tokens, 5, temperature=1.0, seed=max_tokens)
        assert _rows(fast) == _rows(ref)


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
