"""AIM, Sens-Merging, ACM and their calibration data (micro organism, CPU)."""

import json
from pathlib import Path

import pytest
import torch
import yaml

from l2s_utils.merge import MergeConfigError, merge
from l2s_utils.merge import activation as A
from l2s_utils.merge import calibration as C
from l2s_utils.merge.checkpoint import Checkpoint


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    from l2s_utils.organism import training as O

    return O.build("micro", cache=tmp_path_factory.mktemp("cache"), progress=False)


@pytest.fixture(scope="module")
def tok(micro):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(micro.system1)


def weights(path):
    c = Checkpoint(path)
    return {n: c.get(n) for n in c.names()}


def test_aim_relax_identity_and_one_hot():
    g = torch.Generator().manual_seed(0)
    base, merged = torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g)
    imp = torch.rand(5, generator=g)
    assert torch.equal(A.aim_relax(base, merged, imp, 1.0), merged)  # omega = 1: identity
    one_hot = torch.zeros(5)
    one_hot[2] = 1.0
    out = A.aim_relax(base, merged, one_hot, 0.4)
    assert torch.allclose(out[:, [0, 1, 3, 4]], merged[:, [0, 1, 3, 4]])  # other channels untouched
    assert torch.allclose(out[:, 2], base[:, 2] + 0.4 * (merged[:, 2] - base[:, 2]))
    assert torch.allclose(A.aim_relax(base, merged, one_hot, 0.0)[:, 2], base[:, 2])
    v_base, v_m = torch.randn(5, generator=g), torch.randn(5, generator=g)  # 1-D (norm weights): elementwise
    assert torch.allclose(A.aim_relax(v_base, v_m, one_hot, 0.0), torch.where(one_hot > 0, v_base, v_m))


def test_aim_importance_normalised(micro, tok):
    from l2s_utils.merge.checkpoint import load_model

    model, _ = load_model(micro.system1, "cpu", torch.float32)
    texts = C.organism_texts(8, seed=0, content="short")
    blocks = C.tokenize(texts, tok, max_length=64, overlong="skip").blocks(64)
    imp = A.aim_importance(model, blocks)
    assert imp and not any("embed" in k for k in imp) and "lm_head.weight" in imp
    assert any("layernorm" in k for k in imp)
    for v in imp.values():
        assert float(v.max()) == pytest.approx(1.0) and float(v.min()) >= 0
    assert imp["model.layers.0.self_attn.q_proj.weight"].shape == (model.config.hidden_size,)
    assert imp["model.layers.0.mlp.down_proj.weight"].shape == (model.config.intermediate_size,)


class _Toy(torch.nn.Module):
    """embed (excluded: 'embed' in its name) -> lin; the input of lin is the embedding row of each token."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(3, 2)
        self.embed.weight.data = torch.tensor([[1.0, -2.0], [3.0, 0.0], [0.0, 4.0]])
        self.lin = torch.nn.Linear(2, 1)
        self.device = torch.device("cpu")

    def forward(self, input_ids):
        return self.lin(self.embed(input_ids))


def test_aim_importance_hand_computed():
    """Reference (get_calib_feat): one token-mean of |input| per block, summed over blocks, then / max.

    blocks [[0, 1]] and [[2, 2]]; lin's inputs are embedding rows: block 1 -> |[1, -2]|, |[3, 0]| -> mean [2, 1];
    block 2 -> [0, 4], [0, 4] -> mean [0, 4]. A = [2, 5]; I = A / 5 = [0.4, 1.0]. (One mean over all four
    tokens would give the same here only because the blocks have equal length: that is why blocks are used.)"""
    imp = A.aim_importance(_Toy(), [torch.tensor([[0, 1]]), torch.tensor([[2, 2]])])
    assert set(imp) == {"lin.weight"}
    assert torch.allclose(imp["lin.weight"], torch.tensor([0.4, 1.0]))


def test_aim_calibration_blocks_as_the_reference():
    """Texts longer than the block are dropped, the rest concatenated and cut into full blocks (remainder dropped):
    sequences [1, 2, 3], [4, 5], [6, 7, 8, 9] with block 4 -> [1, 2, 3, 4], [5, 6, 7, 8]; 9 is dropped."""
    cal = C.Calibration([[1, 2, 3], [4, 5], [6, 7, 8, 9]], {})
    assert [b.tolist() for b in cal.blocks(4)] == [[[1, 2, 3, 4]], [[5, 6, 7, 8]]]
    with pytest.raises(C.CalibrationError, match="no block of 16 tokens"):
        cal.blocks(16)

    class Tok:
        def __call__(self, t, add_special_tokens=False):
            return {"input_ids": [ord(c) for c in t]}

    kept = C.tokenize(["abc", "abcdefgh", "de"], Tok(), max_length=4, overlong="skip")
    assert kept.sequences == [[97, 98, 99], [100, 101]]  # the 8-token text is skipped, not truncated
    with pytest.raises(C.CalibrationError, match="unknown key.*batch_size"):
        C.build({"batch_size": 8}, Tok())


def test_discrete_mutual_information_hand_computed():
    """Eq. (1) of Yao et al. 2025, I = sum p(x,y) log(p(x,y) / (p(x) p(y))), every distinct value a symbol."""
    import math

    a = torch.tensor([0.0, 0.0, 1.0, 1.0])
    assert A.discrete_mutual_information(a, a) == pytest.approx(math.log(2))  # I(X;X) = H(X) = log 2
    assert A.discrete_mutual_information(a, torch.tensor([0.0, 1.0, 0.0, 1.0])) == pytest.approx(0.0, abs=1e-15)
    assert A.discrete_mutual_information(a, torch.full((4,), 5.0)) == 0.0  # a constant carries no information
    # x = (0,0,0,1), y = (0,0,1,1): p(0,0) = 1/2, p(0,1) = 1/4, p(1,1) = 1/4; p_x = (3/4, 1/4), p_y = (1/2, 1/2)
    # I = 1/2 log(1/2 / (3/4 * 1/2)) + 1/4 log(1/4 / (3/4 * 1/2)) + 1/4 log(1/4 / (1/4 * 1/2))
    want = 0.5 * math.log(4 / 3) + 0.25 * math.log(2 / 3) + 0.25 * math.log(2)
    x, y = torch.tensor([0.0, 0.0, 0.0, 1.0]), torch.tensor([0.0, 0.0, 1.0, 1.0])
    assert A.discrete_mutual_information(x, y) == pytest.approx(want, rel=1e-12)
    assert A.discrete_mutual_information(y, x) == pytest.approx(want, rel=1e-12)  # symmetric
    # values are only labels: any relabelling (here non-monotone, bf16 values) gives the same MI
    x2 = torch.tensor([-3.5, -3.5, -3.5, 0.25], dtype=torch.bfloat16)
    y2 = torch.tensor([7.0, 7.0, -1.0, -1.0], dtype=torch.bfloat16)
    assert A.discrete_mutual_information(x2, y2) == pytest.approx(want, rel=1e-12)
    assert A.discrete_mutual_information(x.reshape(2, 2), y.reshape(2, 2)) == pytest.approx(want, rel=1e-12)
    with pytest.raises(ValueError):
        A.discrete_mutual_information(x, y[:3])


def test_acm_coefficient_hand_computed():
    """Eq. (2), lambda = 1 - 1 / (1 + exp(-t I)), on I_d - max_d I_d (section 4.1), averaged over the pieces d."""
    import math

    sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    assert A.acm_coefficient([2.0], 0.7) == pytest.approx(0.5)  # one piece: I - max I = 0, 1 - sigmoid(0)
    assert A.acm_coefficient([1.0, 3.0, 2.0], 0.0) == pytest.approx(0.5)  # t = 0
    # I = (1, 3), t = 0.7: shifted (-2, 0); lambda = 1 - (sigmoid(-1.4) + sigmoid(0)) / 2 = 0.651092...
    assert A.acm_coefficient([1.0, 3.0], 0.7) == pytest.approx(1 - (sig(-1.4) + 0.5) / 2, rel=1e-12)
    assert A.acm_coefficient([1.0, 3.0], 0.7) == pytest.approx(0.6510920, abs=1e-7)
    # the general-merging t = -1.8 (section 4.2): 1 - (sigmoid(3.6) + 0.5) / 2 = 0.263299...
    assert A.acm_coefficient([1.0, 3.0], -1.8) == pytest.approx(1 - (sig(3.6) + 0.5) / 2, rel=1e-12)
    # translation invariance (only I_d - max I counts) and bounds 0.5 <= lambda < 1 for t > 0
    assert A.acm_coefficient([11.0, 13.0], 0.7) == pytest.approx(A.acm_coefficient([1.0, 3.0], 0.7), rel=1e-12)
    assert 0.5 < A.acm_coefficient([0.0, 50.0, 50.0], 0.7) < 1.0
    with pytest.raises(ValueError):
        A.acm_coefficient([], 0.7)


def test_acm_layers():
    assert A.acm_layer("model.layers.12.self_attn.q_proj.bias") == 12
    assert A.acm_layer("model.layers.0.input_layernorm.weight") == 0
    assert A.acm_layer("model.embed_tokens.weight") == -1
    assert A.acm_layer("model.norm.weight") == -2
    assert A.acm_layer("lm_head.weight") == -3
    assert A.acm_layer("model.rotary_emb.inv_freq") is None
    assert A.acm_probe_layer("model.layers.3.mlp.down_proj") == 3
    assert A.acm_probe_layer("model.layers.3.mlp") is None and A.acm_probe_layer("model.layers.3.mlp.up_proj") is None
    assert [A.acm_probe_layer(n) for n in ("model.embed_tokens", "model.norm", "lm_head")] == [-1, -2, -3]


def test_sens_equal_sensitivities_reduce_to_task_arithmetic():
    sens = [{"model.layers.0": 1.0, "model.layers.1": 2.0}] * 2
    coeffs = A.sens_coefficients(sens, [0.5, 0.5], temperature=2.0)
    assert all(c == pytest.approx(1.0) for d in coeffs for c in d.values())
    skew = A.sens_coefficients([{"l": 0.1}, {"l": 0.9}], [0.5, 0.5], temperature=0.1, sens_norm="none")
    assert skew[1]["l"] > 1.9 and skew[0]["l"] < 0.1 and skew[0]["l"] + skew[1]["l"] == pytest.approx(2.0)


def test_sensitivity_gradients_match_finite_differences(micro, tok, monkeypatch):
    from transformers import AutoModelForCausalLM
    from transformers.models.qwen2 import modeling_qwen2

    # Qwen2's RMSNorm computes in float32 whatever the model dtype; in float64 end to end, central
    # differences are accurate to ~1e-9 and can check the autograd sensitivities.
    def rmsnorm64(self, h):
        return self.weight * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))

    monkeypatch.setattr(modeling_qwen2.Qwen2RMSNorm, "forward", rmsnorm64)
    model = AutoModelForCausalLM.from_pretrained(micro.system2, dtype=torch.float64, attn_implementation="sdpa")
    cal = C.tokenize(C.organism_texts(2, seed=3), tok, max_length=64)
    ids, att = next(cal.batches(2, model.config.pad_token_id))
    loss = A.causal_lm_loss(model, ids, att)
    loss.backward()
    eps = 1e-6
    checked = 0
    for name in ("model.layers.0.mlp.up_proj.weight", "model.norm.weight", "lm_head.weight"):
        p = dict(model.named_parameters())[name]
        for flat in (0, p.numel() // 2, p.numel() - 1):
            idx = torch.unravel_index(torch.tensor(flat), p.shape)
            with torch.no_grad():
                old = p[idx].item()
                p[idx] = old + eps
                up = A.causal_lm_loss(model, ids, att).item()
                p[idx] = old - eps
                down = A.causal_lm_loss(model, ids, att).item()
                p[idx] = old
            fd = (up - down) / (2 * eps)
            assert p.grad[idx].item() == pytest.approx(fd, rel=1e-4, abs=1e-9), (name, flat)
            checked += 1
    assert checked == 9


def test_calibration_builders_deterministic_and_validated(tok):
    a = C.build({"source": "organism", "n": 6, "content": "both", "seed": 1}, tok)
    assert a.sequences == C.build({"source": "organism", "n": 6, "content": "both", "seed": 1}, tok).sequences
    assert len(a.sequences) == 12 and a.description["content"] == "both"
    short = C.build({"n": 6, "content": "short", "seed": 1}, tok)
    long = C.build({"n": 6, "content": "long", "seed": 1}, tok)
    assert sum(map(len, long.sequences)) > 3 * sum(map(len, short.sequences))
    with pytest.raises(C.CalibrationError, match="n must be >= 1"):
        C.build({"n": 0}, tok)
    with pytest.raises(C.CalibrationError, match="empty"):
        C.tokenize([], tok)
    with pytest.raises(C.CalibrationError, match="longer than max_length"):
        C.build({"n": 3, "content": "long", "max_length": 8, "overlong": "skip"}, tok)
    with pytest.raises(C.CalibrationError, match="outside the model's vocabulary"):
        C.build({"n": 3}, tok, vocab_size=50)
    with pytest.raises(C.CalibrationError, match="content must be one of"):
        C.build({"n": 3, "content": "medium"}, tok)
    with pytest.raises(C.CalibrationError, match="unknown key"):
        C.build({"n": 3, "samples": 4}, tok)
    s1k = [{"question": f"Q{i}?", "solution": f"S{i}", "attempt": f"A{i}", "thinking_trajectories": [f"T{i} " * 5]} for i in range(5)]
    import tempfile
    from pathlib import Path

    p = Path(tempfile.mkdtemp()) / "s1k.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in s1k))
    texts = C.s1k_texts(3, seed=0, content="both", path=str(p))
    assert len(texts) == 6 and any("S" in t for t in texts) and any("T" in t for t in texts)
    assert C.s1k_texts(3, seed=0, content="short", path=str(p), short_field="attempt")[0].split("\n")[-1].startswith("A")


def _yaml(tmp_path, d):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(d))
    return p


def test_aim_acm_sens_from_yaml(micro, tmp_path):
    s1, s2 = str(micro.system1), str(micro.system2)
    cal = {"source": "organism", "n": 6, "content": "short", "seed": 0, "max_length": 256}
    ties = merge({"merge_method": "l2s_ties", "base_model": s1, "models": [{"model": s2}], "parameters": {"k": 0.8}},
                 tmp_path / "ties", progress=False).out
    aim = merge(_yaml(tmp_path, {"merge_method": "aim", "base_model": s1, "models": [{"model": s2}],
                                 "parameters": {"omega": 0.4, "base_method": "l2s_ties", "k": 0.8}, "calibration": cal}),
                tmp_path / "aim", progress=False).out
    wt, wa, wb = weights(ties), weights(aim), weights(micro.system1)
    tied = "lm_head.weight" not in wt
    e = "model.embed_tokens.weight"
    if tied:  # the reference relaxes a tied embedding (it is lm_head's storage) with lm_head's importance
        assert (wa[e] - wb[e]).abs().sum() < (wt[e] - wb[e]).abs().sum()
        keep = merge({"merge_method": "aim", "base_model": s1, "models": [{"model": s2}], "calibration": cal,
                      "parameters": {"omega": 0.4, "k": 0.8, "tied_embedding": "keep"}}, tmp_path / "keep", progress=False).out
        assert torch.equal(weights(keep)[e], wt[e])
    else:
        assert torch.equal(wa[e], wt[e])  # untied: the embedding is not a relaxed module
    assert torch.equal(wa["model.layers.0.self_attn.q_proj.bias"], wt["model.layers.0.self_attn.q_proj.bias"])  # biases too
    q = "model.layers.0.self_attn.q_proj.weight"
    d_t, d_a = (wt[q] - wb[q]).abs().sum(), (wa[q] - wb[q]).abs().sum()
    assert d_a < d_t  # relaxed toward the base
    prov = json.loads((aim / "l2s_merge.json").read_text())
    assert prov["method"] == "aim" and prov["base_method"] == "l2s_ties" and prov["calibration"]["n"] == 6
    assert prov["calibration_blocks"] >= 1 and prov["tied_embedding_relaxed"] is tied
    aim1 = merge({"merge_method": "aim", "base_model": s1, "models": [{"model": s2}], "calibration": cal,
                  "parameters": {"omega": 1.0, "k": 0.8}}, tmp_path / "aim1", progress=False).out
    assert all(torch.equal(weights(aim1)[n], wt[n]) for n in wt)  # omega = 1 is TIES itself
    acm = merge({"merge_method": "acm", "base_model": s1, "models": [{"model": s2}], "calibration": cal,
                 "parameters": {"t": 0.7, "base_method": "task_arithmetic", "alpha": 0.7}}, tmp_path / "acm", progress=False).out
    prov = json.loads((acm / "l2s_merge.json").read_text())
    n_layers = json.loads((Path(s1) / "config.json").read_text())["num_hidden_layers"]
    want = {str(k) for k in range(n_layers)} | {"-1", "-2"} | (set() if tied else {"-3"})
    (lam,) = prov["layer_coefficients"]
    assert set(lam) >= want and all(0.5 <= v < 1 for v in lam.values())  # t > 0: 1 - mean sigmoid(<= 0)
    (mi,) = prov["mutual_information"]
    assert all(len(v) == len(mi["0"]) >= 1 and min(v) >= 0 for v in mi.values())
    assert all(lam[k] == pytest.approx(A.acm_coefficient(mi[k], 0.7)) for k in lam)
    sens = merge(_yaml(tmp_path, {"merge_method": "sens", "base_model": s1, "models": [{"model": s1}, {"model": s2}],
                                  "parameters": {"alpha": 0.7, "T": 2.0}, "calibration": cal}), tmp_path / "sens", progress=False).out
    prov = json.loads((sens / "l2s_merge.json").read_text())
    assert prov["calibration_content"] == ["long", "short"] and len(prov["layer_coefficients"]) == 2
    for c in prov["layer_coefficients"]:
        assert all(0 < v < 2 for v in c.values())


def test_sens_with_uniform_coefficients_equals_task_arithmetic(micro, tmp_path, monkeypatch):
    s1, s2 = str(micro.system1), str(micro.system2)
    monkeypatch.setattr(A, "layer_sensitivity", lambda model, cal, **kw: {"model.layers.0": 1.0, "lm_head.weight": 1.0})
    cal = {"n": 3, "max_length": 128}
    sens = merge({"merge_method": "sens", "base_model": s1, "models": [{"model": s1}, {"model": s2}], "calibration": cal,
                  "parameters": {"alpha": 0.7, "T": 2.0}, "dtype": "float32"}, tmp_path / "s", progress=False).out
    ta = merge({"merge_method": "task_arithmetic", "base_model": s1, "models": [{"model": s2}], "parameters": {"alpha": 0.7},
                "dtype": "float32"}, tmp_path / "t", progress=False).out
    coeffs = json.loads((sens / "l2s_merge.json").read_text())["layer_coefficients"]
    ws, wt = weights(sens), weights(ta)
    if all(abs(v - 1.0) < 1e-12 for c in coeffs for v in c.values()):
        for n in wt:
            assert torch.allclose(ws[n], wt[n], atol=1e-6), n
    else:  # tau differs between the two models; with equal sensitivities sigma still depends on tau
        assert coeffs[0]["model.layers.0"] + coeffs[1]["model.layers.0"] == pytest.approx(2.0)


def test_composite_bad_inputs_write_nothing(micro, tmp_path):
    s1, s2 = str(micro.system1), str(micro.system2)
    out = tmp_path / "out"
    for params, cal, match in [
        ({"omega": 1.5}, {"n": 3}, "omega"), ({"omega": 0.4, "k": 1.2}, {"n": 3}, "'k' = 1.2"),
        ({"omega": 0.4, "base_method": "aim"}, {"n": 3}, "base_method"), ({"omega": 0.4}, {"n": 0}, "n must be >= 1"),
        ({"omega": 0.4}, {"n": 2, "max_length": 4, "overlong": "skip", "content": "long"}, "longer than max_length"),
        ({"omega": 0.4}, {"n": 2, "overlong": "truncate"}, "overlong must be 'skip'"),
        ({"omega": 0.4}, {"n": 1, "max_length": 512}, "no block of 512 tokens"),
    ]:
        with pytest.raises((MergeConfigError, C.CalibrationError), match=match):
            merge({"merge_method": "aim", "base_model": s1, "models": [{"model": s2}], "parameters": params,
                   "calibration": cal}, out, progress=False)
        assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_acm_mutual_information_pairs_pieces(micro, tok):
    """I(A_0; A_i) <= H(A_0) = I(A_0; A_0) on every piece: the fine-tuned model can share at most all of it."""
    from l2s_utils.merge.checkpoint import load_model

    seqs = C.tokenize(C.organism_texts(3, seed=0, content="question"), tok, max_length=64).sequences
    base, _ = load_model(micro.system1, "cpu", torch.float32)
    ft, _ = load_model(micro.system2, "cpu", torch.float32)
    acts = A.acm_activations(base, seqs)
    assert all(len(v) == len(seqs) and v[0].dtype == torch.bfloat16 for v in acts.values())
    self_mi = A.acm_mutual_information(acts, base, seqs)
    ft_mi = A.acm_mutual_information(acts, ft, seqs)
    for k, v in acts.items():
        assert self_mi[k] == pytest.approx([A.discrete_mutual_information(a, a) for a in v])
        assert all(f <= s + 1e-9 for f, s in zip(ft_mi[k], self_mi[k]))
    assert C._pairs_to_texts([("Q? ", "short", "long")], "question") == ["Q? "]


def test_acm_eq3_uses_every_model(micro, tmp_path, monkeypatch):
    """statistics: models, base task_arithmetic with alpha = 1/N is Eq. (3):
    theta^k = theta_0^k + 1/N sum_i lambda_i^k tau_i^k, lambda_i^k from model i's own MI (here fixed by hand)."""
    s1, s2 = str(micro.system1), str(micro.system2)
    half = merge({"merge_method": "task_arithmetic", "base_model": s1, "models": [{"model": s2}],
                  "parameters": {"alpha": 0.5}, "dtype": "float32"}, tmp_path / "half", progress=False).out
    calls = []

    def fake_mi(base_acts, model, sequences, progress=False):  # model 1: I = (0, |k| + 1); model 2: one piece
        calls.append(model)
        return {k: ([0.0, abs(k) + 1.0] if len(calls) == 1 else [1.0]) for k in base_acts}

    monkeypatch.setattr(A, "acm_mutual_information", fake_mi)
    out = merge({"merge_method": "acm", "base_model": s1, "models": [{"model": s2}, {"model": str(half)}],
                 "calibration": {"n": 2, "max_length": 64}, "dtype": "float32",
                 "parameters": {"t": 0.7, "base_method": "task_arithmetic", "alpha": 0.5}}, tmp_path / "acm",
                progress=False).out
    assert len(calls) == 2  # every model of the list
    wb, w1, w2, wa = weights(s1), weights(s2), weights(half), weights(out)
    prov = json.loads((out / "l2s_merge.json").read_text())
    for name in wb:
        k = A.acm_layer(name)
        lam1 = A.acm_coefficient([0.0, abs(k) + 1.0], 0.7)  # 1 - (sigmoid(-0.7 (|k| + 1)) + 1/2) / 2
        assert prov["layer_coefficients"][0][str(k)] == pytest.approx(lam1)
        assert prov["layer_coefficients"][1][str(k)] == pytest.approx(0.5)
        want = wb[name] + 0.5 * (lam1 * (w1[name] - wb[name]) + 0.5 * (w2[name] - wb[name]))
        assert torch.allclose(wa[name], want, atol=1e-6), name


def test_acm_statistics_merged_scales_the_merged_task_vector(micro, tmp_path):
    """statistics: merged (the public ACM script): theta_0 + lambda^k (theta_M - theta_0), lambda^k from theta_M."""
    s1, s2 = str(micro.system1), str(micro.system2)
    cal = {"source": "organism", "n": 3, "content": "question", "max_length": 64}
    ta = merge({"merge_method": "task_arithmetic", "base_model": s1, "models": [{"model": s2}],
                "parameters": {"alpha": 0.7}, "dtype": "float32"}, tmp_path / "ta", progress=False).out
    out = merge({"merge_method": "acm", "base_model": s1, "models": [{"model": s2}], "calibration": cal,
                 "dtype": "float32", "parameters": {"theta": 0.7, "statistics": "merged", "base_method": "task_arithmetic",
                                                    "alpha": 0.7}}, tmp_path / "acm", progress=False).out
    prov = json.loads((out / "l2s_merge.json").read_text())
    lam = prov["layer_coefficients"]
    assert prov["statistics"] == "merged" and prov["composite_parameters"]["t"] == 0.7  # 'theta' is an alias of t
    assert all(lam[k] == pytest.approx(A.acm_coefficient(v, 0.7)) for k, v in prov["mutual_information"].items())
    wb, wt, wa = weights(s1), weights(ta), weights(out)
    for name in wb:
        want = wb[name] + lam[str(A.acm_layer(name))] * (wt[name] - wb[name])
        assert torch.allclose(wa[name], want, atol=1e-6), name
    with pytest.raises(MergeConfigError, match="statistics"):
        merge({"merge_method": "acm", "base_model": s1, "models": [{"model": s2}], "calibration": cal,
               "parameters": {"statistics": "both"}}, tmp_path / "bad", progress=False)


def test_acm_ties_scales_the_task_vector(micro, tmp_path, monkeypatch):
    """ACM-TIES, one model, lambda^k fixed by hand: the base method merges theta_0 + lambda^k tau^k, so
    theta = theta_0 + alpha trim_k(lambda^k tau^k) = theta_0 + alpha lambda^k trim_k(tau^k) (trimming keeps the same
    entries of a positively scaled vector; the disjoint mean of one model is the identity) -- not TIES itself."""
    from l2s_utils.merge.methods import trim_magnitude

    s1, s2 = str(micro.system1), str(micro.system2)
    monkeypatch.setattr(A, "acm_mutual_information",
                        lambda base_acts, model, seqs, progress=False: {k: [0.0, abs(k) + 1.0] for k in base_acts})
    out = merge({"merge_method": "acm", "base_model": s1, "models": [{"model": s2}], "dtype": "float32",
                 "calibration": {"n": 2, "max_length": 64},
                 "parameters": {"base_method": "l2s_ties", "k": 0.8, "alpha": 0.9}}, tmp_path / "acm", progress=False).out
    wb, w1, wa = weights(s1), weights(s2), weights(out)
    for name in wb:
        lam = A.acm_coefficient([0.0, abs(A.acm_layer(name)) + 1.0], 0.7)
        tau = w1[name] - wb[name]
        want = wb[name] + 0.9 * lam * trim_magnitude(tau, 0.8)
        off = (wa[name] - want).abs() > 1e-6
        if off.any():  # only where rounding lambda * tau flips the keep decision of an entry at the threshold
            kept = tau.abs()[trim_magnitude(tau, 0.8) != 0]
            thr = kept.min() if kept.numel() else torch.tensor(0.0)
            assert int(off.sum()) <= 2 and torch.allclose(tau.abs()[off], thr.expand(int(off.sum())), rtol=1e-5), name
        assert lam < 0.99 and not torch.allclose(wa[name], wb[name] + 0.9 * trim_magnitude(w1[name] - wb[name], 0.8))
