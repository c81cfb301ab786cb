"""Figure style, checked on rendered figures: no text over text, readable fonts at the book's width, one colour
per model from the registry, no line across unmeasured sweep values."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from l2s_utils.merge import all_methods  # noqa: E402
from l2s_utils.study import plots  # noqa: E402
from l2s_utils.study.paper import paper_by_scale, paper_summary  # noqa: E402

MERGES = ["Average Merging", "Task Arithmetic", "Ties-Merging", "DARE", "DARE-TA", "DARE-Ties", "LoRE-Merging",
          "Twin-Merging", "AIM-Ties", "Sens-Merging", "ACM-Ties"]


def _summary(models=("System 1", "System 2", *MERGES), same=True):
    """A run's summary in which every merge lands on System 2 (the case that hid them) unless ``same`` is False."""
    rows = []
    for i, m in enumerate(models):
        acc = 40.0 if m == "System 1" else (90.0 if same else 70 + 2 * i)
        tok = 30.0 if m == "System 1" else (200.0 if same else 120 + 7 * i)
        rows.append({"model": m, "benchmark": "toy", "n": 194, "accuracy": acc, "acc_lo": acc - 4, "acc_hi": acc + 3,
                     "mean_tokens": tok, "tokens_lo": tok - 5, "tokens_hi": tok + 5, "reflective_pct": 50.0})
    df = pd.DataFrame(rows)
    df["length_change_pct"] = 100 * (df.mean_tokens / df.set_index("model").mean_tokens["System 2"] - 1)
    return df


def _sweep():
    alphas = [0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    return pd.DataFrame({"alpha": alphas, "accuracy": [40, 41, 60, 80, 88, 90, 91, 90, 90],
                         "acc_lo": [36, 37, 55, 75, 84, 86, 87, 86, 86], "acc_hi": [44, 45, 65, 85, 92, 94, 95, 94, 94],
                         "mean_tokens": [30, 38, 233, 240, 250, 255, 260, 262, 265],
                         "tokens_lo": [28, 36, 225, 232, 240, 247, 250, 254, 255],
                         "tokens_hi": [32, 40, 240, 248, 260, 263, 270, 270, 275], "model": "TA"})


def _figures():
    s = _summary()
    levels = pd.DataFrame([{"model": m, "level": lv, "accuracy": 90 - 5 * lv, "mean_tokens": 40 * lv, "reflective": 60.0,
                            "n": 40} for m in ("System 1", "System 2", "Average Merging", "Task Arithmetic",
                                                   "Ties-Merging") for lv in range(1, 6)])
    budgets = [8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 600]
    curves = pd.DataFrame([{"model": m, "budget": b, "accuracy": min(90.0, b / 6)} for m in ("System 1", "System 2",
                                                                                           "Task Arithmetic") for b in budgets])
    path = pd.DataFrame({"alpha": [0, .1, .3, .5, .7, .9, 1], "accuracy": [40, 42, 70, 85, 88, 90, 90],
                         "mean_tokens": [30, 38, 233, 240, 250, 255, 260], "reflective": [0, 0, 90, 95, 99, 99, 99],
                         "n": 194})
    path["accuracy (linear)"] = 40 + 50 * path.alpha
    for k in ("system1", "system2"):
        path[f"loss on {k} traces"] = 1 + path.alpha
        path[f"loss on {k} traces (linear)"] = 1 + path.alpha
    spec = pd.DataFrame([{"index": i, "sigma_norm": 1 / (1 + i), "layer_type": t} for t in ("q_proj", "mlp") for i in
                         range(1, 30)])
    pb = paper_by_scale()
    ours = pd.DataFrame([{"model": m, "parameters": p, "accuracy retained (%)": 90.0, "length_change_pct": -10.0}
                         for m in ("Average Merging", "Task Arithmetic", "Ties-Merging") for p in (4e4, 4e5, 1.9e6)])
    rank = _sweep().rename(columns={"alpha": "rank"}).assign(rank=[1, 2, 4, 8, 16, 32, 64, 128, 256])
    return {
        "by_level": plots.by_level(levels, "System 1 vs System 2 by difficulty (toy profile)"),
        "accuracy_vs_length": plots.accuracy_vs_length(s, "Accuracy vs length, task-vector merges (toy profile)"),
        "alpha sweep": plots.sweep(_sweep(), "alpha", "alpha (0 = System 1, 1 = System 2)",
                                   "Task-arithmetic alpha sweep (toy profile)", s[s.model.isin(["System 1", "System 2"])]),
        "rank sweep": plots.sweep(rank, "rank", "Twin rank r", "Twin-Merging rank sweep", model="Twin-Merging"),
        "alpha_path": plots.alpha_path(path, "System 1 -> System 2 along task arithmetic (toy profile)"),
        "budget_curves": plots.budget_curves(curves, "Correct within a token budget (toy profile)"),
        "versus_paper": plots.versus_paper(s, paper_summary(), "ours (toy profile)"),
        "scale_beside_paper": plots.scale_beside_paper(ours, pb[~pb.model.isin(["System 1", "System 2"])],
                                                       "length_change_pct", "length change vs System 2 (%)", "ours (toy)"),
        "spectra": plots.spectra(spec, "Task-vector spectra (toy profile)"),
        "bars": plots.bars(s, "accuracy", "accuracy (%)", "Accuracy", ci=("acc_lo", "acc_hi")),
    }


@pytest.fixture(scope="module")
def figures():
    figs = _figures()
    yield figs
    plt.close("all")


@pytest.mark.parametrize("name", ["by_level", "accuracy_vs_length", "alpha sweep", "rank sweep", "alpha_path",
                                  "budget_curves", "versus_paper", "scale_beside_paper", "spectra", "bars"])
def test_no_text_overlaps_and_fonts_are_readable(figures, name):
    fig = figures[name]
    assert plots.overlapping_texts(fig) == [], f"{name}: texts overlap"
    assert fig.get_size_inches()[0] <= plots.MAX_WIDTH_IN, f"{name}: wider than the book's column"
    assert plots.font_px(fig) >= 11, f"{name}: text {plots.font_px(fig):.1f} px high on the page"


def test_overlap_check_catches_overlapping_labels():
    """The checker itself: labels written on one spot (the old alpha-sweep labels) are reported."""
    fig, ax = plt.subplots()
    ax.plot([1, 1.01], [1, 1.01])
    for v in (0.4, 0.5):
        ax.annotate(f"alpha {v}", (1, 1))
    assert plots.overlapping_texts(fig)
    fig.set_size_inches(20, 4)
    for t in fig.findobj(plt.Text):
        t.set_fontsize(8)
    assert plots.font_px(fig) < 11
    plt.close(fig)


def test_every_model_has_its_own_colour_from_the_registry():
    for m in all_methods():
        assert plots.style(m.display) == m.style, m.name
    names = [m.display for m in all_methods() if all(m.style)] + list(plots.STYLES)
    colours = [plots.style(n)[0].lower() for n in names]
    assert len(set(colours)) == len(colours), "two models share a colour"
    pairs = {plots.style(n) for n in names}
    assert len(pairs) == len(names)
    # System 1 / System 2 are far from every merge's colour (Average was System 1's blue, DARE System 2's red)
    rgb = {n: np.array(matplotlib.colors.to_rgb(plots.style(n)[0])) for n in names}
    for ref in ("System 1", "System 2"):
        for n in names:
            if n != ref:
                assert np.linalg.norm(rgb[ref] - rgb[n]) > 0.25, (ref, n)
    # a name that is no model gets a colour no model has
    assert plots.style("TA alpha=0.5")[0] not in colours and plots.style("my merge")[0] not in colours


def test_the_paper_comparison_gives_each_method_a_row(figures):
    fig = figures["versus_paper"]
    rows = {t.get_text(): t.get_position()[1] for t in fig.axes[0].get_yticklabels()}
    assert set(MERGES) <= set(rows) and len(set(rows.values())) == len(rows)
    assert rows["System 1"] > rows["System 2"] > max(rows[m] for m in MERGES)  # the references on top


def test_sweeps_draw_no_line_across_unmeasured_values(figures):
    assert plots.segments([0.0, 0.2, 0.4, 0.5, 0.6, 0.7]) == [[0], [1], [2, 3, 4, 5]]
    assert plots.segments([0, .1, .3, .5, .7, .9, 1]) == [[0, 1, 2, 3, 4, 5, 6]]
    acc = figures["alpha sweep"].axes[0]
    xs = [tuple(line.get_xdata()) for line in acc.lines if line.get_linestyle() == "-" and len(line.get_xdata()) > 1]
    assert xs and all(min(x) >= 0.4 for x in xs), xs  # nothing joins 0 -> 0.2 -> 0.4
    # both accuracy and length are against alpha
    ylabels = [ax.get_ylabel() for ax in figures["alpha sweep"].axes]
    assert any("accuracy" in y for y in ylabels) and any("tokens" in y for y in ylabels)
    assert all("alpha" in ax.get_xlabel() for ax in figures["alpha sweep"].axes)
    assert any("tokens" in ax.get_ylabel() for ax in figures["alpha_path"].axes)
