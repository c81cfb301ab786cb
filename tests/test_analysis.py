"""The self-correction and spectrum analyses on hand-made inputs."""

import pandas as pd
import pytest

from l2s_utils.study import analysis


def test_self_correction_counts_flags_fixes_and_unflagged_errors():
    rows = pd.DataFrame({
        "model": ["A", "A", "B"],
        "response": [
            "Units: 7+8=14. Wait, that is wrong. 7+8=15. Tens: 4+3=7.",   # real slip, right fix
            "Units: 2+2=4. Wait, that is wrong. 2+2=5. So 9-4=6.",         # false alarm, wrong fix; 1 unflagged step, wrong
            "3+4=7. 7+1=9.",                                              # no flags, 1 unflagged error of 2 steps
        ],
        "correct": [True, False, False],
    })
    s = analysis.self_correction(rows).set_index("model")
    assert s.loc["A", "flags per response"] == 1.0
    assert s.loc["A", "flagged steps that were wrong (%)"] == 50.0
    assert s.loc["A", "corrections that are right (%)"] == 50.0
    assert s.loc["A", "unflagged wrong steps (%)"] == 50.0  # flagged pairs excluded: 2 steps left, 1 wrong
    assert s.loc["B", "unflagged wrong steps (%)"] == 50.0 and pd.isna(s.loc["B", "corrections that are right (%)"])


def test_spectra_of_a_rank_one_task_vector(tmp_path):
    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    base = {"model.layers.0.mlp.up_proj.weight": torch.randn(8, 6, generator=g)}
    u, v = torch.randn(8, 1, generator=g), torch.randn(1, 6, generator=g)
    ft = {"model.layers.0.mlp.up_proj.weight": base["model.layers.0.mlp.up_proj.weight"] + u @ v}
    for name, sd in (("a", base), ("b", ft)):
        (tmp_path / name).mkdir()
        save_file(sd, tmp_path / name / "model.safetensors")
        (tmp_path / name / "config.json").write_text("{}")
    spec = analysis.task_vector_spectra(tmp_path / "a", tmp_path / "b")
    assert spec.sigma_norm.iloc[0] == 1.0 and spec.sigma_norm.iloc[1] < 1e-5  # rank one
    summ = analysis.spectrum_summary(spec)
    assert summ.loc[0, "rank share for 90% energy"] == pytest.approx(1 / 6, abs=1e-3)
