"""The merging kernels against hand-computed cases and closed forms."""

import math

import pytest
import torch

from l2s_utils.merge import MergeConfigError
from l2s_utils.merge import methods as M


def t(*xs):
    return torch.tensor(xs, dtype=torch.float32)


def test_average_hand_computed():
    out = M.average(None, [t(1, 2, 3), t(3, 6, 9)], weights=[1.0, 1.0])
    assert torch.equal(out, t(2, 4, 6))
    out = M.average(None, [t(0, 0), t(4, 8)], weights=[3.0, 1.0])
    assert torch.allclose(out, t(1, 2))


def test_task_arithmetic_hand_computed_and_closed_forms():
    base, ft = t(1, 1, 1), t(2, 0, 1)
    assert torch.allclose(M.task_arithmetic(base, [ft], weights=[1.0], alpha=0.5), t(1.5, 0.5, 1.0))
    assert torch.allclose(M.task_arithmetic(base, [ft, base], weights=[1.0, 1.0], alpha=0.7), t(1.7, 0.3, 1.0))
    g = torch.Generator().manual_seed(0)
    b, f = torch.randn(50, 40, generator=g), torch.randn(50, 40, generator=g)
    assert torch.allclose(M.task_arithmetic(b, [f], weights=[1.0], alpha=1.0), f, atol=1e-6)  # alpha=1: System 2
    assert torch.equal(M.task_arithmetic(b, [f], weights=[1.0], alpha=0.0), b)  # alpha=0: System 1
    # Average of [System 1, System 2] is task arithmetic with alpha = 0.5 (paper section 4.2)
    assert torch.allclose(M.average(None, [b, f], weights=[1.0, 1.0]), M.task_arithmetic(b, [f], weights=[1.0], alpha=0.5), atol=1e-6)


def test_ties_hand_computed_two_models():
    base = torch.zeros(4)
    d1, d2 = t(3, -1, 0.5, -4), t(-2, -2, 1, 1)
    # k=0.5: m=2. d1 threshold = 2nd smallest |.| = 1 -> [3,-1,0,-4]; d2 threshold 1 -> all kept.
    # elected signs of [1,-3,1,-3] = [+,-,+,-]; disjoint means: [3, (-1-2)/2, 1, -4]
    out = M.ties(base, [d1, d2], weights=[1.0, 1.0], k=[0.5, 0.5], alpha=1.0)
    assert torch.allclose(out, t(3, -1.5, 1, -4))
    out = M.ties(base + 1, [d1 + 1, d2 + 1], weights=[1.0, 1.0], k=[0.5, 0.5], alpha=0.5)
    assert torch.allclose(out, 1 + 0.5 * t(3, -1.5, 1, -4))
    # normalize=False: sums instead of means
    out = M.ties(base, [d1, d2], weights=[1.0, 1.0], k=[0.5, 0.5], normalize=False)
    assert torch.allclose(out, t(3, -3, 1, -4))


@pytest.mark.parametrize("n", [7, 1000, 70_001, 300_000])
def test_kth_smallest_abs_matches_kthvalue(n):
    g = torch.Generator().manual_seed(n)
    x = torch.randn(n, generator=g)
    x[: n // 10] = 0.0  # many exact ties at zero
    x[n // 10: n // 5] = 0.5
    for m in {1, n // 7 + 1, n // 2, n - 1, n}:
        assert M.kth_smallest_abs(x, m) == torch.kthvalue(x.abs(), m).values


def test_ties_single_model_is_magnitude_pruning():
    g = torch.Generator().manual_seed(1)
    base, ft = torch.randn(300, 300, generator=g), torch.randn(300, 300, generator=g)
    k = 0.8
    d = ft - base
    m = int(d.numel() * k)
    thr = torch.kthvalue(d.abs().reshape(-1), m).values
    expected = base + 0.6 * torch.where(d.abs() >= thr, d, torch.zeros(()))
    out = M.ties(base, [ft], weights=[1.0], k=[k], alpha=0.6)
    assert torch.allclose(out, expected, atol=1e-6)
    kept = (out - base != 0).sum().item()
    assert kept == d.numel() - m + 1  # the L2S rule keeps n - m + 1 on tie-free data
    out_topk = M.generalized_task_arithmetic(base, [ft], weights=[1.0], density=[1 - k], alpha=0.6, normalize=True)
    assert (out_topk - base != 0).sum().item() == int(d.numel() * (1 - k))  # mergekit keeps int(n * density)
    assert torch.equal(M.ties(base, [ft], weights=[1.0], k=[0.0], alpha=1.0), M.task_arithmetic(base, [ft], weights=[1.0], alpha=1.0))


def test_dare_closed_forms_and_expectation():
    g = torch.Generator().manual_seed(2)
    base, ft = torch.randn(64, 64, generator=g), torch.randn(64, 64, generator=g)
    ta = M.task_arithmetic(base, [ft], weights=[1.0], alpha=0.7)
    # p = 0: DARE-TA is TA
    assert torch.allclose(M.dare(base, [ft], weights=[1.0], p=[0.0], combine="task_arithmetic", alpha=0.7, name="w"), ta)
    # the mask drops about p of the entries and rescales the rest by 1/(1-p)
    out = M.dare(base, [ft], weights=[1.0], p=[0.3], combine="task_arithmetic", alpha=1.0, seed=0, name="w")
    d, dt = ft - base, out - base
    dropped = (dt == 0).float().mean().item()
    assert abs(dropped - 0.3) < 0.03
    kept = dt != 0
    assert torch.allclose(dt[kept], d[kept] / 0.7, atol=1e-5)
    # expectation: the mean over many seeds approaches task arithmetic
    mean = sum(M.dare(base, [ft], weights=[1.0], p=[0.3], combine="task_arithmetic", alpha=0.7, seed=s, name="w")
               for s in range(400)) / 400
    err = (mean - ta).abs().mean() / (ta - base).abs().mean()
    assert err < 0.04
    # the same seed and name give the same mask; another name or seed another one
    a = M.dare(base, [ft], weights=[1.0], p=[0.3], seed=5, name="a")
    assert torch.equal(a, M.dare(base, [ft], weights=[1.0], p=[0.3], seed=5, name="a"))
    assert not torch.equal(a, M.dare(base, [ft], weights=[1.0], p=[0.3], seed=5, name="b"))
    assert not torch.equal(a, M.dare(base, [ft], weights=[1.0], p=[0.3], seed=6, name="a"))
    # plain DARE over [System 1, System 2] is base + 0.5 * masked delta
    two = M.dare(base, [base, ft], weights=[1.0, 1.0], p=[0.3, 0.3], combine="average", seed=1, name="w")
    one = M.dare(base, [base, ft], weights=[1.0, 1.0], p=[0.3, 0.3], combine="task_arithmetic", alpha=0.5, seed=1, name="w")
    assert torch.allclose(two, one, atol=1e-6)


def test_dare_ties_with_p0_is_ties():
    g = torch.Generator().manual_seed(3)
    base, f1, f2 = (torch.randn(40, 30, generator=g) for _ in range(3))
    a = M.dare(base, [f1, f2], weights=[1.0, 1.0], p=[0.0, 0.0], combine="ties", k=[0.5, 0.5], alpha=0.9, path="exact")
    b = M.ties(base, [f1, f2], weights=[1.0, 1.0], k=[0.5, 0.5], alpha=0.9)
    assert torch.allclose(a, b)


def test_svd_lowrank_is_exact_at_rank_r():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(30, 3, generator=g) @ torch.randn(3, 20, generator=g)
    assert torch.allclose(M.svd_lowrank_exact(x, 3), x, atol=1e-4)
    assert not torch.allclose(M.svd_lowrank_exact(x, 2), x, atol=1e-2)


def test_twin_full_rank_and_rank_r():
    g = torch.Generator().manual_seed(5)
    base, ft = torch.randn(16, 12, generator=g), torch.randn(16, 12, generator=g)
    assert torch.allclose(M.twin(base, [ft], weights=[1.0], alpha=0.7, rank=12), ft, atol=1e-5)
    bias_b, bias_f = torch.randn(12, generator=g), torch.randn(12, generator=g)
    assert torch.allclose(M.twin(bias_b, [bias_f], weights=[1.0], alpha=0.3, rank=1), bias_f, atol=1e-6)
    # rank 1: shared expert + the rank-1 part of the residual (1 - alpha) delta
    out = M.twin(base, [ft], weights=[1.0], alpha=0.7, rank=1)
    shared = base + 0.7 * (ft - base)
    assert torch.allclose(out, shared + M.svd_lowrank_exact(ft - shared, 1), atol=1e-5)
    assert torch.linalg.matrix_rank(out - shared).item() == 1


def test_twin_randomized_svd():
    """svd: randomized is the exact rank-r SVD when the spectrum has a gap (low rank + small noise), full rank
    gives the model back, and a row-chunked stream gives the same subspace as the whole matrix."""
    g = torch.Generator().manual_seed(7)
    base = torch.randn(300, 40, generator=g)
    ft = base + torch.randn(300, 4, generator=g) @ torch.randn(4, 40, generator=g) + 1e-4 * torch.randn(300, 40, generator=g)
    kw = dict(weights=[1.0], alpha=0.5, rank=4)
    exact = M.twin(base, [ft], **kw)
    rand = M.twin(base, [ft], svd="randomized", **kw)
    assert float((rand - exact).norm() / (exact - base).norm()) < 1e-5
    assert torch.allclose(M.twin(base, [ft], svd="randomized", weights=[1.0], alpha=0.5, rank=40), ft, atol=1e-4)
    a = ft - (base + 0.5 * (ft - base))
    whole = M.top_right_subspace(lambda: iter([a]), 40, 4, seed=3)
    chunked = M.top_right_subspace(lambda: iter([a[:100], a[100:250], a[250:]]), 40, 4, seed=3)
    assert torch.allclose(a @ whole @ whole.t(), a @ chunked @ chunked.t(), atol=1e-5)
    with pytest.raises(M.MergeConfigError, match="svd"):
        M.resolve_params(M.get_method("twin"), {"svd": "lanczos"}, [{}])


def test_lore_squared_nuclear_prox_and_update_order():
    """nuclear: squared -- the prox is the minimiser of ||d - x||^2 + mu ||d||_*^2 (no random perturbation of it
    does better) and the objective never increases; last: deltas -- the average post-merge is not mean(theta_i),
    while with last: base it would be (refused)."""
    g = torch.Generator().manual_seed(8)
    x = torch.randn(20, 12, generator=g)
    mu = 0.05
    f = lambda d: float(((d - x) ** 2).sum()) + mu * float(torch.linalg.svdvals(d).sum()) ** 2  # noqa: E731
    d = M.prox_nuclear(x, mu, "squared")
    assert all(f(d) <= f(d + 1e-3 * torch.randn(20, 12, generator=g)) for _ in range(20))
    s = torch.linalg.svdvals(x).double()
    tau = M.squared_nuclear_threshold(s, mu)
    assert abs(tau - mu * float(torch.clamp(s - tau, min=0).sum())) < 1e-9
    common = torch.randn(24, 18, generator=g)
    models = [common + 0.3 * torch.randn(24, 2, generator=g) @ torch.randn(2, 18, generator=g) for _ in range(2)]
    prev = math.inf
    for it in range(6):
        theta0, deltas = M.lore_decompose(models, 0.02, it, nuclear="squared")
        obj = M.lore_objective(models, theta0, deltas, 0.02, nuclear="squared")
        assert obj <= prev * (1 + 1e-5)  # float32 noise: a relative tolerance (1.2e-6 absolute seen on 5.1)
        prev = obj
    theta0, deltas = M.lore_decompose(models, 0.02, 3, nuclear="squared", last="deltas")
    assert M.lore_objective(models, theta0, deltas, 0.02, "squared") <= prev * (1 + 1e-5)
    three = models + [common + 0.3 * torch.randn(24, 2, generator=g) @ torch.randn(2, 18, generator=g)]
    avg = M.lore(None, three, weights=[1.0] * 3, mu=0.5, iterations=3, combine="average", last="deltas")
    assert not torch.allclose(avg, sum(three) / 3, atol=1e-4)
    # a PAIR is symmetric: delta_2 = -delta_1 and theta_0 = mean at every step, whatever the order or penalty,
    # so with equal weights every post-merge gives the plain average of the two models (the L2S setting)
    for nuclear in ("plain", "squared"):
        for last in ("base", "deltas"):
            ta = M.lore(None, models, weights=[1.0, 1.0], mu=0.5, iterations=3, alpha=0.7, nuclear=nuclear, last=last)
            assert torch.allclose(ta, (models[0] + models[1]) / 2, atol=1e-5)
    with pytest.raises(MergeConfigError, match="last: deltas"):
        M.lore(None, models, weights=[1.0, 1.0], combine="average")


def test_lore_objective_never_increases_and_mu0_is_exact():
    g = torch.Generator().manual_seed(6)
    common = torch.randn(24, 18, generator=g)
    models = [common + 0.3 * torch.randn(24, 2, generator=g) @ torch.randn(2, 18, generator=g) + 0.01 * torch.randn(24, 18, generator=g)
              for _ in range(3)]
    mu = 0.5
    prev = math.inf
    for it in range(0, 8):
        theta0, deltas = M.lore_decompose(models, mu, it)
        f = M.lore_objective(models, theta0, deltas, mu)
        assert f <= prev + 1e-4
        prev = f
    theta0, deltas = M.lore_decompose(models, mu, 10)
    assert max(torch.linalg.matrix_rank(d, atol=1e-4).item() for d in deltas) <= 6  # low rank
    # mu = 0: the decomposition is exact and TA(alpha=1) on one model returns it
    out = M.lore(None, models[:1], weights=[1.0], mu=0.0, iterations=3, alpha=1.0)
    assert torch.allclose(out, models[0], atol=1e-5)


def test_resolve_params_names_ranges_and_aliases():
    ties = M.get_method("l2s_ties")
    kw = M.resolve_params(ties, {"k": 0.8, "lambda": 0.5}, [{}, {"k": 0.25}])
    assert kw["k"] == [0.8, 0.25] and kw["alpha"] == 0.5 and kw["weights"] == [1.0, 1.0]
    mk = M.get_method("ties")  # mergekit's: density = fraction kept, default 1 (no trim), normalize true
    kw = M.resolve_params(mk, {"density": 0.2}, [{}])
    assert kw["density"] == [0.2] and kw["normalize"] is True and kw["rescale"] is False
    kw = M.resolve_params(M.get_method("dare_ties"), {}, [{}])
    assert kw["density"] == [1.0] and kw["normalize"] is False and kw["rescale"] is True
    assert kw["sparsification"] == "random" and kw["consensus"] is True
    assert M.resolve_params(M.get_method("dare_linear"), {"density": 0.7}, [{}])["consensus"] is False
    # the other convention is refused, naming the method that takes it
    with pytest.raises(MergeConfigError, match="'density'.*fraction DROPPED.*merge_method: ties"):
        M.resolve_params(ties, {"density": 0.2}, [{}])
    with pytest.raises(MergeConfigError, match="'k'.*merge_method: l2s_ties"):
        M.resolve_params(mk, {"k": 0.8}, [{}])
    with pytest.raises(MergeConfigError, match="'p'.*merge_method: l2s_dare_ties"):
        M.resolve_params(M.get_method("dare_ties"), {"p": 0.3}, [{}])
    with pytest.raises(MergeConfigError, match="'p'.*merge_method: dare_ta"):
        M.resolve_params(M.get_method("dare_linear"), {"p": 0.3}, [{}])
    with pytest.raises(MergeConfigError, match="'density'.*dare_linear"):
        M.resolve_params(M.get_method("l2s_dare_ties"), {"density": 0.7}, [{}])
    with pytest.raises(MergeConfigError, match="'density'.*no sparsification"):
        M.resolve_params(M.get_method("task_arithmetic"), {"density": 0.7}, [{}])
    with pytest.raises(MergeConfigError, match=r"'k' = 1.0 is out of range"):
        M.resolve_params(ties, {"k": 1.0}, [{}])
    with pytest.raises(MergeConfigError, match=r"'density' = 1.5 is out of range"):
        M.resolve_params(mk, {"density": 1.5}, [{}])
    with pytest.raises(MergeConfigError, match=r"'p' = 1.0 is out of range"):
        M.resolve_params(M.get_method("dare"), {"p": 1.0}, [{}])
    with pytest.raises(MergeConfigError, match=r"'p' = -0.1 is out of range"):
        M.resolve_params(M.get_method("dare_ta"), {}, [{"p": -0.1}])
    with pytest.raises(MergeConfigError, match="'path' = 'bf16'"):
        M.resolve_params(M.get_method("l2s_dare_ties"), {"path": "bf16"}, [{}])
    with pytest.raises(MergeConfigError, match="'rank' = 0"):
        M.resolve_params(M.get_method("twin"), {"rank": 0}, [{}])
    with pytest.raises(MergeConfigError, match="'alpha' = nan"):
        M.resolve_params(M.get_method("task_arithmetic"), {"alpha": float("nan")}, [{}])
    with pytest.raises(MergeConfigError, match="'alpha' = inf"):
        M.resolve_params(M.get_method("task_arithmetic"), {"alpha": float("inf")}, [{}])
    with pytest.raises(MergeConfigError, match="unknown parameter 'densty'"):
        M.resolve_params(mk, {"densty": 0.2}, [{}])
    with pytest.raises(MergeConfigError, match="must be bool"):
        M.resolve_params(ties, {"normalize": "yes"}, [{}])
    with pytest.raises(MergeConfigError, match="global parameter"):
        M.resolve_params(ties, {}, [{"alpha": 0.3}])
    with pytest.raises(MergeConfigError, match="unknown merge_method 'tie'"):
        M.get_method("tie")
    assert M.get_method("average_merging") is M.get_method("average")
    assert M.get_method("linear") is not M.get_method("average")  # mergekit's linear is its own method
    assert M.resolve_params(M.get_method("l2s_dare_ties"), {}, [{}])["combine"] == "ties"
    assert M.resolve_params(M.get_method("l2s_dare_ties"), {}, [{}])["path"] == "authors"


def test_every_method_has_formula_paper_and_reference():
    for m in M.REGISTRY.values():
        assert "arXiv" in m.paper
        assert m.kernel.__doc__ and len(m.kernel.__doc__) > 100
        assert len(m.reference) > 60, f"{m.name}: say which reference it equals and how it differs"


def test_trim_topk_keeps_exactly_keep_entries_even_with_ties():
    g = torch.Generator().manual_seed(7)
    x = torch.randn(200_000, generator=g)
    for d in (0.2, 0.5, 0.9):
        keep = int(x.numel() * d)
        ref = torch.zeros_like(x)
        idx = torch.topk(x.abs(), keep).indices
        ref[idx] = x[idx]
        assert torch.equal(M.trim_topk(x, d), ref)
    tied = torch.tensor([1.0, -1.0, 1.0, 2.0, 0.5, 1.0])
    out = M.trim_topk(tied, 0.5)  # keep 3: the 2.0 and the first two of the four |1.0|
    assert torch.equal(out, torch.tensor([1.0, -1.0, 0.0, 2.0, 0.0, 0.0]))
