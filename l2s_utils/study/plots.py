"""Figures for the book. Each function returns the matplotlib Figure.

Rules every figure here follows (``tests/test_plots.py`` checks them on rendered figures):

- **One colour and marker per model in the whole book** (:func:`style`): a merge method's are in its registry
  record (``Method.style``, by display name), System 1 / System 2 and the paper's DPO are in :data:`STYLES`,
  any other name gets a pair picked by the sha256 of its name (the same in every process; never ``hash()``).
- **No text over text**: models are named in a legend or as the tick labels of one row each, never as
  free labels beside points that may cluster; :func:`overlapping_texts` finds any two texts that overlap.
- **Sweeps against their parameter**: accuracy and length in two panels sharing the x axis (:func:`sweep`);
  consecutive measured points are joined only where the grid has no gap (:func:`segments`), so no line is drawn
  across values that were not measured.
- **Readable at the book's width**: at most :data:`MAX_WIDTH_IN` inches wide at :data:`DPI`, fonts of at least
  :data:`MIN_FONT_PT` points (:func:`font_px` is a text's height in pixels on the page).
"""

from __future__ import annotations

import hashlib
import math

import matplotlib.pyplot as plt  # the backend is the caller's: inline in notebooks, Agg headless (MPLBACKEND)
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator
import numpy as np
import pandas as pd
import seaborn as sns

DPI = 100
MAX_WIDTH_IN = 8.0  # the book's text column is ~760 px: a figure this wide is shown at ~95% of its size
PAGE_PX = 760
MIN_FONT_PT = 9
sns.set_theme(style="whitegrid", context="notebook", rc={
    "figure.dpi": DPI, "savefig.dpi": DPI, "font.size": 11, "axes.titlesize": 11.5, "axes.labelsize": 11,
    "xtick.labelsize": 10, "ytick.labelsize": 10, "legend.fontsize": 10, "legend.title_fontsize": 10,
    "figure.titlesize": 12})

# models that are not merge methods (the merge methods' styles are their registry records')
STYLES = {"System 1": ("#000000", "o"), "System 2": ("#d62728", "o"), "DPO": ("#ffbb78", "d")}
# any other name: a colour of tab20b and a marker, picked by the name's sha256
OTHER_COLOURS = ["#393b79", "#5254a3", "#6b6ecf", "#9c9ede", "#637939", "#8ca252", "#b5cf6b", "#cedb9c", "#8c6d31",
                 "#bd9e39", "#e7ba52", "#e7cb94", "#843c39", "#ad494a", "#d6616b", "#e7969c", "#7b4173", "#a55194",
                 "#ce6dbd", "#de9ed6"]
MARKERS = ["s", "D", "^", "v", "<", ">", "p", "h", "P", "X", "*", "d"]
# the paper's names for System 1 / System 2 (7B) -> ours
PAPER_NAMES = {"Qwen2.5-Math-7B": "System 1", "DeepSeek-R1-Distill-Qwen-7B": "System 2"}
REFERENCE = ("System 1", "System 2")


def method_styles() -> dict[str, tuple[str, str]]:
    """{display name: (colour, marker)} of every registered merge method that has a style."""
    from ..merge import all_methods

    return {m.display: m.style for m in all_methods() if all(m.style)}


def style(model: str) -> tuple[str, str]:
    """(colour, marker) of ``model`` in every figure: its registry style, :data:`STYLES`, or by its sha256."""
    known = STYLES.get(model) or method_styles().get(model)
    if known:
        return known
    taken = {c for c, _ in [*STYLES.values(), *method_styles().values()]}
    free = [c for c in OTHER_COLOURS if c not in taken]  # never a colour of a known model
    h = int.from_bytes(hashlib.sha256(model.encode()).digest()[:8], "little")
    return free[h % len(free)], MARKERS[h // len(free) % len(MARKERS)]


def _pal(models) -> dict[str, str]:
    return {m: style(m)[0] for m in dict.fromkeys(models)}


def _marker(model: str) -> str:
    return style(model)[1]


def _order(models) -> list[str]:
    """System 1, System 2, then the others in their first order."""
    models = list(dict.fromkeys(models))
    return [m for m in REFERENCE if m in models] + [m for m in models if m not in REFERENCE]


# -- checks on rendered figures -------------------------------------------------------------------------
def _texts(fig):
    """(Text, its box in pixels) of every text that a draw of ``fig`` shows: tick labels only of the ticks drawn
    (inside the view limits), no empty or invisible text."""
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    ticks, drawn = set(), []
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            for t in axis.get_major_ticks() + axis.get_minor_ticks():
                ticks.update((id(t.label1), id(t.label2)))
            if ax.get_visible() and axis.get_visible():
                for t in axis._update_ticks():
                    drawn += [lab for lab in (t.label1, t.label2) if lab.get_visible()]
    candidates = [t for t in fig.findobj(plt.Text) if id(t) not in ticks] + drawn
    out = []
    for t in candidates:
        if not t.get_visible() or not t.get_text().strip() or t.get_alpha() == 0:
            continue
        if t.axes is not None and not t.axes.get_visible():
            continue
        bb = t.get_window_extent(r)
        if bb.width > 0 and bb.height > 0:
            out.append((t, bb))
    return out


def overlapping_texts(fig, tol: float = 1.0) -> list[tuple[str, str]]:
    """Pairs of visible texts of ``fig`` (tick labels, axis labels, titles, legend entries, annotations) whose
    boxes overlap by more than ``tol`` pixels both ways, as rendered."""
    texts = _texts(fig)
    bad = []
    for i, (a, ba) in enumerate(texts):
        for b, bb in texts[i + 1:]:
            w = min(ba.x1, bb.x1) - max(ba.x0, bb.x0)
            h = min(ba.y1, bb.y1) - max(ba.y0, bb.y0)
            if w > tol and h > tol:
                bad.append((a.get_text(), b.get_text()))
    return bad


def font_px(fig) -> float:
    """The smallest text height on the page in pixels: font size at :data:`DPI`, scaled down when the figure
    (its tight bounding box, as saved) is wider than :data:`PAGE_PX`."""
    fig.canvas.draw()
    width = fig.get_tightbbox(fig.canvas.get_renderer()).width * fig.dpi
    scale = min(1.0, PAGE_PX / width)
    sizes = [t.get_fontsize() for t, _ in _texts(fig)]
    return min(sizes) * fig.dpi / 72 * scale if sizes else float("inf")


def segments(x) -> list[list[int]]:
    """Indices of sorted x values split into runs joined by lines: a gap wider than 1.5x the median gap (a value
    of the grid that was not measured) starts a new run. [0, .2, .4, .5, .6] -> [[0], [1], [2, 3, 4]]."""
    x = np.asarray(x, dtype=float)
    if len(x) < 2:
        return [list(range(len(x)))]
    gaps = np.diff(x)
    step = float(np.median(gaps))
    runs, cur = [], [0]
    for i, g in enumerate(gaps, start=1):
        if g > 1.5 * step + 1e-12:
            runs.append(cur)
            cur = []
        cur.append(i)
    runs.append(cur)
    return runs


def _line(ax, x, y, color, marker, label=None, **kw):
    """Markers at every measured point; lines only within runs of :func:`segments`."""
    order = np.argsort(np.asarray(x, dtype=float))
    x, y = np.asarray(x, dtype=float)[order], np.asarray(y, dtype=float)[order]
    for run in segments(x):
        if len(run) > 1:
            ax.plot(x[run], y[run], "-", color=color, lw=kw.get("lw", 1.6), zorder=2, alpha=kw.get("alpha", 1.0))
    ax.plot(x, y, ls="none", marker=marker, color=color, label=label, markersize=kw.get("markersize", 6), zorder=3,
            alpha=kw.get("alpha", 1.0))
    return order


def _legend_below(fig, handles, labels, ncol: int | None = None):
    ncol = ncol or min(4, len(labels))
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=ncol, frameon=False)


def _model_handles(models) -> tuple[list, list]:
    return ([Line2D([], [], ls="none", marker=_marker(m), color=style(m)[0], markersize=7) for m in models],
            list(models))


# -- figures ---------------------------------------------------------------------------------------------
def by_level(levels: pd.DataFrame, title: str = ""):
    """Accuracy, mean response tokens and reflective share by difficulty level, one line per model; models are
    dodged sideways a little so that equal values (a merge on top of System 2) stay visible."""
    models = _order(levels.model)
    fig, axes = plt.subplots(2, 2, figsize=(7.6, 6.4))
    flat = axes.ravel()
    width = 0.5 / max(1, len(models))
    for ax, col, label in zip(flat, ("accuracy", "mean_tokens", "reflective"),
                              ("accuracy (%)", "mean response tokens", "reflective responses (%)")):
        for i, m in enumerate(models):
            g = levels[levels.model == m].sort_values("level")
            off = (i - (len(models) - 1) / 2) * width
            _line(ax, g.level + off, g[col], style(m)[0], _marker(m), label=m)
        ax.set_xlabel("difficulty level")
        ax.set_ylabel(label)
        ax.set_xticks(sorted(levels.level.unique()))
    flat[3].axis("off")
    flat[3].legend(*_model_handles(models), loc="center", frameon=False, title="model")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def accuracy_vs_length(summary: pd.DataFrame, title: str = "", annotate: bool = False, line: pd.DataFrame | None = None,
                       line_label: str = ""):
    """Each model as a point (mean tokens, accuracy) with 95% CI bars, named in the legend (merges often cluster,
    so names beside the points would overlap; ``annotate`` is accepted for old callers and ignored). An optional
    sweep ``line`` (mean_tokens, accuracy, sorted by its ``alpha`` when given) is drawn in grey; its parameter
    values are in :func:`sweep`'s figure, not written over the points."""
    fig, ax = plt.subplots(figsize=(7.4, 4.6))
    if line is not None and len(line):
        srt = line.sort_values("alpha") if "alpha" in line else line
        ax.plot(srt.mean_tokens, srt.accuracy, "-", color="0.6", marker=".", zorder=1, label=line_label or "sweep")
    for m in _order(summary.model):
        r = summary[summary.model == m].iloc[0]
        ax.errorbar(r.mean_tokens, r.accuracy, yerr=[[r.accuracy - r.acc_lo], [r.acc_hi - r.accuracy]],
                    fmt=_marker(m), color=style(m)[0], capsize=3, zorder=2, label=m, markersize=8, alpha=0.85)
    ax.set_xlabel("mean response tokens")
    ax.set_ylabel("accuracy (%), 95% CI")
    if title:
        ax.set_title(title)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.tight_layout()
    return fig


def sweep(curve: pd.DataFrame, x: str, xlabel: str, title: str = "", references: pd.DataFrame | None = None,
          model: str = "Task Arithmetic"):
    """A sweep of one parameter ``x`` (alpha, rank): accuracy with its 95% CI (left) and mean response tokens
    (right) against ``x``, in ``model``'s colour; ``references`` (rows of a summary, e.g. System 1 and
    System 2) are dashed horizontal lines in their own colours. No line across unmeasured values."""
    fig, axes = plt.subplots(1, 2, figsize=(7.8, 3.6), sharex=True)
    c = curve.sort_values(x)
    colour, marker = style(model)
    for ax, col, lo, hi, label in ((axes[0], "accuracy", "acc_lo", "acc_hi", "accuracy (%), 95% CI"),
                                   (axes[1], "mean_tokens", "tokens_lo", "tokens_hi", "mean response tokens")):
        _line(ax, c[x], c[col], colour, marker, label=model)
        if lo in c and hi in c:
            ax.errorbar(c[x], c[col], yerr=[c[col] - c[lo], c[hi] - c[col]], fmt="none", color=colour, capsize=3,
                        alpha=0.7, zorder=2)
        if references is not None:
            for _, r in references.iterrows():
                ax.axhline(r[col], color=style(r.model)[0], ls="--", lw=1.1, zorder=1)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(label)
    if x == "rank" or (c[x] > 0).all() and c[x].max() / max(c[x].min(), 1e-12) >= 16:
        for ax in axes:
            ax.set_xscale("log", base=2)
            ax.xaxis.set_major_locator(FixedLocator(sorted(c[x].unique())))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_locator(NullLocator())
    else:
        ticks = sorted(c[x].unique())
        if len(ticks) > 6:  # every other value labelled, so that the labels do not touch
            ticks = ticks[::2] if ticks[-1] in ticks[::2] else ticks[::2] + [ticks[-1]]
        for ax in axes:
            ax.set_xticks(ticks)
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    handles, labels = _model_handles([model])
    if references is not None:
        for m in references.model:
            handles.append(Line2D([], [], color=style(m)[0], ls="--"))
            labels.append(m)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _legend_below(fig, handles, labels)
    return fig


def bars(summary: pd.DataFrame, column: str, label: str, title: str = "", ci: tuple[str, str] | None = None):
    """One horizontal bar per model (its name is the row's label), with an optional interval."""
    order = _order(summary.model)
    s = summary.set_index("model").loc[order]
    fig, ax = plt.subplots(figsize=(7.4, 1.2 + 0.36 * len(order)))
    ys = np.arange(len(order))[::-1]
    ax.barh(ys, s[column].values, color=[style(m)[0] for m in order], height=0.7)
    if ci:
        v = s[column].values
        ax.errorbar(v, ys, xerr=[v - s[ci[0]].values, s[ci[1]].values - v], fmt="none", color="black", capsize=3)
    ax.set_yticks(ys)
    ax.set_yticklabels(order)
    ax.set_xlabel(label)
    ax.grid(axis="y", visible=False)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def spectra(spec: pd.DataFrame, title: str = ""):
    """Normalised singular values (sigma_i / sigma_1) of the task vector, per layer type."""
    fig, ax = plt.subplots(figsize=(7.4, 4.4))
    sns.lineplot(data=spec, x="index", y="sigma_norm", hue="layer_type", errorbar=("pi", 50), ax=ax)
    ax.set_yscale("log")
    ax.set_xlabel("singular value index")
    ax.set_ylabel("sigma_i / sigma_1\n(median, 25-75% band over layers)")
    if title:
        ax.set_title(title)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, title="layer type")
    fig.tight_layout()
    return fig


def scale_lines(df: pd.DataFrame, x: str, y: str, hue: str, xlabel: str, ylabel: str, title: str = ""):
    fig, ax = plt.subplots(figsize=(7.4, 4.4))
    for h, g in df.groupby(hue, sort=False):
        _line(ax, g[x], g[y], style(str(h))[0], _marker(str(h)), label=str(h))
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.tight_layout()
    return fig


def alpha_path(path: pd.DataFrame, title: str = ""):
    """The straight path System 1 -> System 2: accuracy against the linear prediction (the gap is the
    barrier), mean response tokens beside it, and the held-out losses against theirs when measured."""
    loss_cols = [c for c in ("loss on system1 traces", "loss on system2 traces") if c in path]
    fig = plt.figure(figsize=(7.8, 7.2 if loss_cols else 3.8))
    gs = fig.add_gridspec(2 if loss_cols else 1, 2)
    acc, length = fig.add_subplot(gs[0, 0]), fig.add_subplot(gs[0, 1])
    p = path.sort_values("alpha")
    s2c = style("System 2")[0]
    _line(acc, p.alpha, p.accuracy, s2c, "o", label="measured")
    acc.plot(p.alpha, p["accuracy (linear)"], "--", color="grey", label="linear between the ends")
    acc.fill_between(p.alpha, p.accuracy, p["accuracy (linear)"], where=p.accuracy < p["accuracy (linear)"],
                     color=s2c, alpha=0.15, label="barrier")
    acc.set_ylabel("accuracy (%)")
    acc.legend(frameon=False, loc="best", fontsize=9)
    _line(length, p.alpha, p.mean_tokens, s2c, "o")
    length.set_ylabel("mean response tokens")
    for ax in (acc, length):
        ax.set_xlabel("alpha (0 = System 1, 1 = System 2)")
    if loss_cols:
        ax = fig.add_subplot(gs[1, :])
        for col, model in zip(loss_cols, REFERENCE):
            c = style(model)[0]
            _line(ax, p.alpha, p[col], c, "o", label=col.replace("loss on ", "held-out ").replace("system", "System "))
            ax.plot(p.alpha, p[col + " (linear)"], "--", color=c, alpha=0.6)
        ax.set_xlabel("alpha (0 = System 1, 1 = System 2)")
        ax.set_ylabel("mean token loss\n(dashed: linear)")
        ax.legend(frameon=False, loc="best")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


NICE_BUDGETS = (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)


def budget_curves(curves: pd.DataFrame, title: str = "", hue: str = "model", log: bool = True):
    """Accuracy within a token budget B (``metrics.budget_curve``), one step line per model; budgets labelled at
    powers of two, at most eight labels."""
    fig, ax = plt.subplots(figsize=(7.4, 4.4))
    keys = _order(curves[hue]) if hue == "model" else list(dict.fromkeys(curves[hue]))
    for k in keys:
        g = curves[curves[hue] == k].sort_values("budget")
        colour, marker = style(str(k))
        ax.step(g.budget, g.accuracy, where="post", color=colour, lw=1.6, label=str(k))
        ax.plot(g.budget, g.accuracy, ls="none", marker=marker, color=colour, markersize=4)
    lo, hi = curves.budget.min(), curves.budget.max()
    if log and lo > 0:
        ax.set_xscale("log")
        ticks = [b for b in NICE_BUDGETS if lo <= b <= hi] or [lo, hi]
        while len(ticks) > 8:
            ticks = ticks[::2]
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.set_xlabel("token budget B (generated tokens)")
    ax.set_ylabel("correct within B (%)")
    ax.legend(*_model_handles(keys), loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def versus_paper(summary: pd.DataFrame, paper: pd.DataFrame, ours_label: str, paper_label: str = "paper, 7B",
                 title: str = ""):
    """Each method on its own row (its name is the row's label, so no name covers another): left, its length
    change vs System 2 (%); right, its accuracy relative to System 2 (%, 100 = System 2), ours as filled markers
    with 95% CI bars, the paper's as hollow markers of the same colour on the same row.

    ``summary`` is a run's summary (model, accuracy, acc_lo, acc_hi, length_change_pct[, tokens_lo, tokens_hi,
    mean_tokens]); ``paper`` has method, avg_accuracy, avg_length_change_pct (``paper_summary()``). Rows: ours in
    their order (System 1 and System 2 first); paper methods we did not run are left out."""
    s = summary.set_index("model")
    s2 = s.accuracy.get("System 2")
    p = paper.rename(columns={"method": "model"}).copy()
    p["model"] = p.model.replace(PAPER_NAMES)
    p = p.set_index("model")
    p2 = p.avg_accuracy.get("System 2")
    models = _order(summary.model)
    ys = {m: len(models) - 1 - i for i, m in enumerate(models)}
    fig, axes = plt.subplots(1, 2, figsize=(7.8, 1.2 + 0.42 * len(models)), sharey=True)
    for m in models:
        colour, marker = style(m)
        y, r = ys[m], s.loc[m]
        xl = r.get("length_change_pct", float("nan"))
        xa = 100 * r.accuracy / s2 if s2 else float("nan")
        if {"tokens_lo", "tokens_hi"} <= set(s.columns) and m != "System 2" and s.mean_tokens.get("System 2"):
            ref = s.mean_tokens["System 2"]
            lo, hi = 100 * (r.tokens_lo / ref - 1), 100 * (r.tokens_hi / ref - 1)
            axes[0].plot([lo, hi], [y, y], color=colour, lw=1.4, zorder=2)
        if s2:
            axes[1].plot([100 * r.acc_lo / s2, 100 * r.acc_hi / s2], [y, y], color=colour, lw=1.4, zorder=2)
        for ax, x in ((axes[0], xl), (axes[1], xa)):
            if not _nan(x):
                ax.plot(x, y, marker=marker, color=colour, markersize=8, ls="none", zorder=3, label=f"ours: {m}")
        if m in p.index:
            pl = p.avg_length_change_pct.get(m)
            pa = 100 * p.avg_accuracy[m] / p2 if p2 else float("nan")
            for ax, x in ((axes[0], pl), (axes[1], pa)):
                if not _nan(x):
                    ax.plot(x, y, marker=marker, color=colour, markerfacecolor="white", markeredgecolor=colour, markeredgewidth=1.6,
                            markersize=8, ls="none", zorder=4, label=f"paper: {m}")
    for ax, ref, label in ((axes[0], 0, "length change vs System 2 (%)"),
                           (axes[1], 100, "accuracy, % of System 2's")):
        ax.axvline(ref, color=style("System 2")[0], lw=0.9, ls="--", zorder=1)
        ax.set_xlabel(label)
        ax.grid(axis="y", visible=False)
    axes[0].set_yticks(list(ys.values()))
    axes[0].set_yticklabels(list(ys.keys()))
    axes[0].set_ylim(-0.7, len(models) - 0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    handles = [Line2D([], [], ls="none", marker="o", color="0.3", markersize=8),
               Line2D([], [], ls="none", marker="o", markerfacecolor="white", markeredgecolor="0.3", markersize=8),
               Line2D([], [], color="0.3", lw=1.4)]
    _legend_below(fig, handles, [ours_label, paper_label, "ours: 95% CI"], ncol=3)
    return fig


def paper_beside_ours(summary: pd.DataFrame, paper: pd.DataFrame, ours_label: str, paper_label: str = "paper, 7B"):
    """Ours beside the paper, both relative to System 2: :func:`versus_paper`."""
    return versus_paper(summary, paper, ours_label, paper_label)


def _nan(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def scale_beside_paper(ours: pd.DataFrame, paper: pd.DataFrame, y: str, ylabel: str, ours_label: str,
                       paper_label: str = "paper (1.5B-32B)"):
    """A quantity ``y`` against model size, ours (the ladder) beside the paper's (``paper_by_scale()``),
    one line per merge method, the same colour and marker in both panels; the legend below both."""
    fig, axes = plt.subplots(1, 2, figsize=(7.8, 3.9), sharey=True)
    models = [m for m in dict.fromkeys(list(ours.model) + list(paper.model)) if m not in REFERENCE]
    shown = []
    for ax, df, label in ((axes[0], ours, ours_label), (axes[1], paper, paper_label)):
        for m in models:
            g = df[df.model == m].sort_values("parameters")
            if not len(g):
                continue
            ax.plot(g.parameters, g[y], "-", marker=_marker(m), color=style(m)[0], markersize=7)
            shown.append(m)
        ax.set_xscale("log")
        sizes = sorted(df.parameters.dropna().unique())  # one tick per scale, labelled 0.13M / 7B
        ax.xaxis.set_major_locator(FixedLocator(sizes))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _size(v)))
        if len(sizes) == 1:
            ax.set_xlim(sizes[0] / 2, sizes[0] * 2)
        ax.set_xlabel("parameters")
        ax.set_title(label)
        ax.axhline(100 if "retained" in y else 0, color=style("System 2")[0], lw=0.8, ls="--")
    axes[0].set_ylabel(ylabel)
    fig.tight_layout()
    _legend_below(fig, *_model_handles(list(dict.fromkeys(shown))))
    return fig


def _size(n: float) -> str:
    """A parameter count for a tick label: 39,904 -> 0.04M, 7.6e9 -> 7.6B."""
    return f"{n / 1e9:.3g}B" if n >= 1e9 else f"{n / 1e6:.2g}M"


# -- contenders: merges, decoding policies and trained baselines in one plane ----------------------------------
KIND_MARKERS = {"reference": "o", "merge": "s", "decoding policy": "^", "trained baseline": "D"}


def pareto_front(tokens, accuracy) -> list[bool]:
    """Which points are on the Pareto front of (fewer tokens, higher accuracy): no other point is at most as long
    and at least as accurate while better in one of the two (ties on both keep every copy)."""
    pts = list(zip(tokens, accuracy))
    return [not any((t2 <= t and a2 >= a) and (t2 < t or a2 > a) for t2, a2 in pts) for t, a in pts]


def place_labels(ax, xs, ys, texts, fontsize: float = 8.5, avoid_points: bool = True) -> list:
    """Write ``texts`` beside the points (xs, ys) of ``ax`` so that no label overlaps another label, a point or the
    axes' edge: each label takes the first free spot on rings of growing radius around its point (a thin leader
    line once it sits away from the point). Call it after the figure's layout is final (its offsets are fixed in
    points). Returns the annotations."""
    import math

    from matplotlib.text import Text
    from matplotlib.transforms import Bbox

    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    centres = ax.transData.transform(list(zip(xs, ys)))
    pad = 5 * fig.dpi / 72
    taken = [Bbox.from_extents(cx - pad, cy - pad, cx + pad, cy + pad) for cx, cy in centres] if avoid_points else []
    angles = [0, 180, 40, -40, 140, -140, 90, -90, 20, -20, 160, -160, 65, -65, 115, -115]
    radii = [7, 14, 24, 36, 50, 66, 84, 104, 126, 150, 176]
    out = []
    for (x, y), text in zip(zip(xs, ys), texts):
        best, best_overlap = None, math.inf
        for r in radii:
            for a in angles:
                dx, dy = r * math.cos(math.radians(a)), r * math.sin(math.radians(a))
                ha = "left" if dx > 1 else "right" if dx < -1 else "center"
                va = "bottom" if dy > 1 else "top" if dy < -1 else "center"
                ann = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", ha=ha, va=va,
                                  fontsize=fontsize, zorder=4,
                                  bbox=dict(boxstyle="square,pad=0.1", fc="white", ec="none", alpha=0.75),
                                  arrowprops=dict(arrowstyle="-", color="0.55", lw=0.6, shrinkA=0, shrinkB=4)
                                  if r > 14 else None)
                ann.update_positions(renderer)
                box = Text.get_window_extent(ann, renderer).padded(2.5)  # the words, not the leader line
                inside = frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1)
                overlap = sum(max(0.0, min(box.x1, b.x1) - max(box.x0, b.x0)) * max(0.0, min(box.y1, b.y1) - max(box.y0, b.y0))
                              for b in taken)
                if inside and overlap == 0:
                    if best is not None:
                        best[0].remove()
                    best, best_overlap = (ann, box), 0
                    break
                score = overlap + (0 if inside else 1e6)
                if score < best_overlap:
                    if best is not None:
                        best[0].remove()
                    best, best_overlap = (ann, box), score
                else:
                    ann.remove()
            if best_overlap == 0:
                break
        taken.append(best[1])
        out.append(best[0])
    return out


def pareto(summary: pd.DataFrame, title: str = "", line: pd.DataFrame | None = None, line_label: str = ""):
    """Contenders in the accuracy-vs-length plane: one point per contender (``summary`` of
    ``Study.contender_summary``: model, kind, accuracy with acc_lo/acc_hi, mean_tokens with tokens_lo/tokens_hi),
    95% CI bars on both axes, the marker telling the kind (merge, decoding policy, trained baseline; the pair as
    circles) and the colour the contender (the same as in every other figure), each point labelled beside it with
    no two labels overlapping, and the Pareto front (fewer tokens and higher accuracy: the dashed steps). ``line``
    (mean_tokens, accuracy) adds a sweep, e.g. task arithmetic's alpha path (weight interpolation)."""
    from matplotlib.lines import Line2D

    fig, ax = plt.subplots(figsize=(10, 6.5))
    if line is not None and len(line):
        ax.plot(line.mean_tokens, line.accuracy, "-", color="0.75", lw=1.2, zorder=1)
    front = pareto_front(summary.mean_tokens, summary.accuracy)
    f = summary[front].sort_values("mean_tokens")
    if len(f) > 1:
        ax.step(f.mean_tokens, f.accuracy, where="post", ls="--", color="0.45", lw=1, zorder=1)
    for _, r in summary.iterrows():
        colour = style(r.model)[0]
        xerr = [[r.mean_tokens - r.tokens_lo], [r.tokens_hi - r.mean_tokens]] if "tokens_lo" in r else None
        ax.errorbar(r.mean_tokens, r.accuracy, yerr=[[r.accuracy - r.acc_lo], [r.acc_hi - r.accuracy]], xerr=xerr,
                    fmt=KIND_MARKERS.get(r.kind, "X"), color=colour, mec="black", mew=0.6, ms=8, capsize=2.5,
                    elinewidth=1, alpha=0.9, zorder=3)
    ax.set_xlabel("mean response tokens (95% CI)")
    ax.set_ylabel("accuracy (%), 95% bootstrap CI")
    ax.set_title(title)
    kinds = [k for k in KIND_MARKERS if k in set(summary.kind)]
    handles = [Line2D([], [], ls="", marker=KIND_MARKERS[k], color="0.6", mec="black", ms=8, label=k) for k in kinds]
    handles.append(Line2D([], [], ls="--", color="0.45", label="Pareto front"))
    if line is not None and len(line):
        handles.append(Line2D([], [], ls="-", color="0.75", label=line_label or "sweep"))
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.11), ncol=min(len(handles), 4),
              frameon=False, fontsize=9)
    lo_x, hi_x = ax.get_xlim()
    lo_y, hi_y = ax.get_ylim()  # room for the labels around the points
    ax.set_xlim(lo_x - 0.06 * (hi_x - lo_x), hi_x + 0.06 * (hi_x - lo_x))
    ax.set_ylim(lo_y - 0.06 * (hi_y - lo_y), hi_y + 0.06 * (hi_y - lo_y))
    fig.tight_layout()
    place_labels(ax, list(summary.mean_tokens), list(summary.accuracy), list(summary.model))
    return fig
