"""mergekit configs mean in ``l2s merge`` what they mean in mergekit 0.1.5: bitwise-equal outputs.

mergekit draws DARE masks from torch's global RNG, we from per-tensor seeded generators. To compare the
math with the SAME masks, mergekit's ``sparsify.bernoulli`` is replaced by one that looks up the mask
our engine uses for that task vector (found by the task vector's bytes) and then applies mergekit's own
``rescaled_masked_tensor``: everything but the draw is mergekit's code.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from l2s_utils.merge import MergeConfigError, merge
from l2s_utils.merge import methods as M
from l2s_utils.merge.checkpoint import Checkpoint
from l2s_utils.merge.methods.mergekit import bernoulli_keep

from conftest import make_qwen2

mergekit = pytest.importorskip("mergekit")


def weights(path: Path) -> dict[str, torch.Tensor]:
    c = Checkpoint(path)
    return {n: c.get(n) for n in c.names()}


def run_mergekit(config: dict, out: Path) -> dict[str, torch.Tensor]:
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge

    run_merge(MergeConfiguration.model_validate(config), str(out), MergeOptions(copy_tokenizer=False, quiet=True))
    return weights(out)


def _key(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().float().contiguous().numpy().tobytes()).hexdigest() + str(tuple(t.shape))


@pytest.fixture(scope="module")
def three(tiny, tmp_path_factory):
    """base + three fine-tuned tiny Qwen2 models (fp32)."""
    ft3 = make_qwen2(tmp_path_factory.mktemp("mk") / "ft3", seed=11, base=tiny["base"], noise=0.05)
    return tiny["base"], [tiny["ft1"], tiny["ft2"], ft3]


def same_masks(monkeypatch, base: Path, models: list[Path], densities: list[float], seed: int) -> None:
    """Make mergekit's Bernoulli sparsification use our masks (keep ~ Bernoulli(density), seeded per tensor)."""
    import mergekit.sparsify as S

    b = weights(base)
    masks = {}
    for i, (m, dk) in enumerate(zip(models, densities)):
        for n, t in weights(m).items():
            d = t - b[n]
            masks[_key(d)] = bernoulli_keep(d.shape, dk, M.tensor_seed(seed, n, i))

    def bernoulli(tensor, density, rescale_norm=None):
        if density >= 1:
            return tensor
        return S.rescaled_masked_tensor(tensor, masks[_key(tensor)], rescale_norm)

    monkeypatch.setattr(S, "bernoulli", bernoulli)


CASES = [
    # (method, global parameters, per-model parameters for the 3 models)
    ("linear", {}, [{"weight": 0.3}, {"weight": 0.7}, {"weight": 0.45}]),
    ("linear", {"normalize": False}, [{"weight": 0.3}, {"weight": 0.7}, {"weight": 0.45}]),
    ("task_arithmetic", {"lambda": 0.8}, [{"weight": 0.6}, {"weight": 0.9}, {"weight": 1.0}]),
    ("task_arithmetic", {"normalize": True}, [{"weight": 0.6}, {"weight": 0.9}, {"weight": 0.2}]),
    ("ties", {}, [{"weight": 1.0, "density": 0.3}, {"weight": 0.5, "density": 0.5}, {"weight": 0.8, "density": 0.2}]),
    ("ties", {"lambda": 0.7, "normalize": False, "rescale": True},
     [{"weight": 1.0, "density": 0.3}, {"weight": 0.5, "density": 0.6}, {"weight": 1.0, "density": 0.9}]),
    ("dare_ties", {"lambda": 1.2}, [{"weight": 1.0, "density": 0.7}, {"weight": 0.6, "density": 0.5}, {"weight": 1.0, "density": 0.9}]),
    ("dare_ties", {"normalize": True, "rescale": False},
     [{"weight": 1.0, "density": 0.7}, {"weight": 0.6, "density": 0.5}, {"weight": 1.0, "density": 0.9}]),
    ("dare_linear", {}, [{"weight": 0.5, "density": 0.6}, {"weight": 0.8, "density": 0.8}, {"weight": 1.0, "density": 0.3}]),
    ("dare_linear", {"lambda": 0.9, "normalize": True}, [{"weight": 0.5, "density": 0.6}, {"weight": 0.8, "density": 0.8},
                                                         {"weight": 1.0, "density": 0.3}]),
]


@pytest.mark.parametrize("method,params,per_model", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_mergekit_config_gives_mergekit_numbers(three, tmp_path, monkeypatch, method, params, per_model):
    """The same YAML, run by mergekit 0.1.5 and by l2s merge: bitwise-equal tensors (fp32 in and out)."""
    base, models = three
    seed = 5
    config = {"merge_method": method, "models": [{"model": str(m), "parameters": p} for m, p in zip(models, per_model)],
              "parameters": params, "dtype": "float32"}
    if method != "linear":
        config["base_model"] = str(base)
    if method.startswith("dare"):
        same_masks(monkeypatch, base, models, [p["density"] for p in per_model], seed)
    expected = run_mergekit(config, tmp_path / "mk")
    got = weights(merge({**config, "seed": seed}, tmp_path / "l2s", progress=False).out)
    assert set(got) == set(expected)
    diff = {n: float((got[n] - expected[n]).abs().max()) for n in got}
    assert all(torch.equal(got[n], expected[n]) for n in got), {n: d for n, d in diff.items() if d}
    # and the merge is not a no-op (every case changes most tensors)
    b = weights(base) if method != "linear" else weights(models[0])
    assert sum(not torch.equal(got[n], b[n]) for n in got) >= len(got) - 2


def test_dare_masks_really_drop(three, tmp_path):
    """dare_linear with density 0.5 keeps about half of each task vector (seeded, reproducible)."""
    base, models = three
    c = {"merge_method": "dare_linear", "base_model": str(base), "models": [{"model": str(models[0])}],
         "parameters": {"density": 0.5, "rescale": False}, "dtype": "float32"}
    a = weights(merge(c, tmp_path / "a", seed=3, progress=False).out)
    b0, f = weights(base), weights(models[0])
    n = "model.layers.0.mlp.down_proj.weight"
    kept = ((a[n] - b0[n]) != 0).float().mean().item()
    assert 0.4 < kept < 0.6
    assert torch.allclose(a[n] - b0[n], torch.where(a[n] != b0[n], f[n] - b0[n], torch.zeros(())), atol=1e-7)
    again = weights(merge(c, tmp_path / "b", seed=3, progress=False).out)
    assert all(torch.equal(a[k], again[k]) for k in a)


def test_l1_rescale_is_not_one_over_density():
    """mergekit's DARE rescale matches the L1 norm: delta = [1, -2, 3, -4], keep [1, 0, 1, 0]:
    masked = [1, 0, 3, 0]; ||delta||_1 = 10, ||masked||_1 = 4; x 10/4 = 2.5 -> [2.5, 0, 7.5, 0]
    (DARE's 1/density = 2 would give [2, 0, 6, 0])."""
    d = torch.tensor([1.0, -2.0, 3.0, -4.0])
    masked = d * torch.tensor([1.0, 0.0, 1.0, 0.0])
    assert torch.equal(M.rescale_l1(d, masked), torch.tensor([2.5, 0.0, 7.5, 0.0]))
    # a norm below 1e-7 leaves the masked tensor as it is (mergekit's eps)
    tiny_d = torch.tensor([1e-9, 0.0])
    assert torch.equal(M.rescale_l1(tiny_d, tiny_d * torch.tensor([0.0, 1.0])), torch.tensor([0.0, 0.0]))


def test_mergekit_ties_hand_computed():
    """ties (mergekit) on one 1x4 tensor, two models, density 0.5, weights 1 and 2, normalize true:
    d1 = [4, -1, 2, -3] -> top-2 |.| keeps [4, 0, 0, -3];  d2 = [-1, 2, -3, 1] -> keeps [0, 2, -3, 0]
    u = w d: u1 = [4, 0, 0, -3], u2 = [0, 4, -6, 0]; sum = [4, 4, -6, -3] -> s = [+, +, -, -]
    agreeing: c1 = [1, 0, 0, 1], c2 = [0, 1, 1, 0]; mixed = [4, 4, -6, -3]; divisor = [1, 2, 2, 1]
    mixed / divisor = [4, 2, -3, -3]."""
    base = torch.zeros(1, 4)
    m1, m2 = torch.tensor([[4.0, -1, 2, -3]]), torch.tensor([[-1.0, 2, -3, 1]])
    out = M.generalized_task_arithmetic(base, [m1, m2], weights=[1.0, 2.0], density=[0.5, 0.5], normalize=True)
    assert torch.equal(out, torch.tensor([[4.0, 2, -3, -3]]))
    # normalize false (dare_ties' default): the weighted sum of agreeing entries
    out = M.generalized_task_arithmetic(base, [m1, m2], weights=[1.0, 2.0], density=[0.5, 0.5], normalize=False)
    assert torch.equal(out, torch.tensor([[4.0, 4, -6, -3]]))


def test_mergekit_defaults_and_refusals(three, tmp_path):
    base, models = three
    # ties without density: mergekit's default density 1 = no trimming -> TIES election on full deltas
    c = {"merge_method": "ties", "base_model": str(base), "models": [{"model": str(models[0])}], "dtype": "float32"}
    got, f = weights(merge(c, tmp_path / "t", progress=False).out), weights(models[0])
    assert all(torch.equal(got[n], f[n]) for n in got)  # K = 1, density 1, lambda 1: the model itself
    for method, params, msg in [("ties", {"k": 0.8}, "l2s_ties"), ("dare_ties", {"p": 0.3}, "l2s_dare_ties"),
                                ("dare_linear", {"p": 0.3}, "dare_ta"), ("ties", {"scope": "global"}, "l2s_ties")]:
        with pytest.raises(MergeConfigError, match=msg):
            merge({**c, "merge_method": method, "parameters": params}, tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()
