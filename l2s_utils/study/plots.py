"""Figures for the book (seaborn, labelled, readable). Each returns the matplotlib Figure.

Every model has one colour and marker, the same in every figure (ours and the paper's) and every run
(:func:`style`): a merge method's are in its registry record (by display name), System 1 / System 2 and
the paper's DPO are in :data:`STYLES`, and any other name gets a pair picked by its sha256.
"""

from __future__ import annotations

import hashlib

import matplotlib.pyplot as plt  # the backend is the caller's: inline in notebooks, Agg headless (MPLBACKEND)
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator
import pandas as pd
import seaborn as sns

sns.set_theme(style="whitegrid", context="notebook")
STYLES = {"System 1": ("#4C72B0", "o"), "System 2": ("#C44E52", "o"), "DPO": ("#ffbb78", "d")}  # not merge methods
# any other name: a colour of tab20b and a marker, picked by the name's sha256
OTHER_COLOURS = ["#393b79", "#5254a3", "#6b6ecf", "#9c9ede", "#637939", "#8ca252", "#b5cf6b", "#cedb9c", "#8c6d31",
                 "#bd9e39", "#e7ba52", "#e7cb94", "#843c39", "#ad494a", "#d6616b", "#e7969c", "#7b4173", "#a55194",
                 "#ce6dbd", "#de9ed6"]
MARKERS = ["s", "D", "^", "v", "<", ">", "p", "h", "P", "X", "*", "d"]


def by_level(levels: pd.DataFrame, title: str = ""):
    """Accuracy, mean response tokens and reflective share by difficulty level, one line per model."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, col, label in zip(axes, ("accuracy", "mean_tokens", "reflective"),
                              ("accuracy (%)", "mean response tokens", "reflective responses (%)")):
        sns.lineplot(data=levels, x="level", y=col, hue="model", marker="o", ax=ax, palette=_pal(levels.model))
        ax.set_xlabel("difficulty level")
        ax.set_ylabel(label)
        ax.set_xticks(sorted(levels.level.unique()))
        if ax is not axes[-1]:
            ax.get_legend().remove()
    axes[-1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


# the paper's names for System 1 / System 2 (7B) -> ours
PAPER_NAMES = {"Qwen2.5-Math-7B": "System 1", "DeepSeek-R1-Distill-Qwen-7B": "System 2"}


def method_styles() -> dict[str, tuple[str, str]]:
    """{display name: (colour, marker)} of every registered merge method that has a style."""
    from ..merge import all_methods

    return {m.display: m.style for m in all_methods() if all(m.style)}


def style(model: str) -> tuple[str, str]:
    """(colour, marker) of ``model`` in every figure: its registry style, :data:`STYLES`, or by its sha256."""
    known = STYLES.get(model) or method_styles().get(model)
    if known:
        return known
    h = int.from_bytes(hashlib.sha256(model.encode()).digest()[:8], "little")
    return OTHER_COLOURS[h % len(OTHER_COLOURS)], MARKERS[h // len(OTHER_COLOURS) % len(MARKERS)]


def _pal(models) -> dict[str, str]:
    return {m: style(m)[0] for m in dict.fromkeys(models)}


def _marker(model: str) -> str:
    return style(model)[1]


def accuracy_vs_length(summary: pd.DataFrame, title: str = "", annotate: bool = False, line: pd.DataFrame | None = None,
                       line_label: str = ""):
    """Each model as a point (mean tokens, accuracy) with 95% CI bars; an optional sweep drawn as a line.

    Models are told apart by colour and marker in the legend (merges often cluster, so names written next to
    the points would overlap); ``annotate=True`` writes them beside the points as well."""
    fig, ax = plt.subplots(figsize=(8, 5.5))
    if line is not None and len(line):
        ax.plot(line.mean_tokens, line.accuracy, "-", color="0.6", zorder=1, label=line_label)
        for _, r in line.iterrows():
            ax.annotate(r.get("label", ""), (r.mean_tokens, r.accuracy), textcoords="offset points", xytext=(4, -10),
                        fontsize=8, color="0.4")
    pal = _pal(summary.model)
    for _, r in summary.iterrows():
        ax.errorbar(r.mean_tokens, r.accuracy, yerr=[[r.accuracy - r.acc_lo], [r.acc_hi - r.accuracy]], fmt=_marker(r.model),
                    color=pal[r.model], capsize=3, zorder=2, label=r.model, markersize=8, alpha=0.9)
        if annotate:
            ax.annotate(r.model, (r.mean_tokens, r.accuracy), textcoords="offset points", xytext=(5, 5), fontsize=9)
    ax.set_xlabel("mean response tokens")
    ax.set_ylabel("accuracy (%), 95% bootstrap CI")
    ax.set_title(title)
    handles, labels = ax.get_legend_handles_labels()
    uniq = dict(zip(labels, handles))
    ax.legend(uniq.values(), uniq.keys(), loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, fontsize=9)
    fig.tight_layout()
    return fig


def bars(summary: pd.DataFrame, column: str, label: str, title: str = "", ci: tuple[str, str] | None = None):
    fig, ax = plt.subplots(figsize=(9, 4.5))
    order = list(summary.model)
    sns.barplot(data=summary, x="model", y=column, hue="model", order=order, palette=_pal(order), ax=ax, legend=False)
    if ci:
        lo, hi = summary[ci[0]].values, summary[ci[1]].values
        ax.errorbar(range(len(order)), summary[column].values, yerr=[summary[column].values - lo, hi - summary[column].values],
                    fmt="none", color="black", capsize=3)
    ax.set_xlabel("")
    ax.set_ylabel(label)
    ax.set_title(title)
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    return fig


def spectra(spec: pd.DataFrame, title: str = ""):
    """Normalised singular values (sigma_i / sigma_1) of the task vector, per layer type."""
    fig, ax = plt.subplots(figsize=(8, 5))
    sns.lineplot(data=spec, x="index", y="sigma_norm", hue="layer_type", errorbar=("pi", 50), ax=ax)
    ax.set_yscale("log")
    ax.set_xlabel("singular value index")
    ax.set_ylabel("sigma_i / sigma_1 (median, 25-75% band over layers)")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def scale_lines(df: pd.DataFrame, x: str, y: str, hue: str, xlabel: str, ylabel: str, title: str = ""):
    fig, ax = plt.subplots(figsize=(8, 5))
    sns.lineplot(data=df, x=x, y=y, hue=hue, marker="o", ax=ax)
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.tight_layout()
    return fig


def alpha_path(path: pd.DataFrame, title: str = ""):
    """The straight path System 1 -> System 2: accuracy against the linear prediction (the gap is the
    barrier), and the held-out losses against theirs when measured."""
    loss_cols = [c for c in ("loss on system1 traces", "loss on system2 traces") if c in path]
    fig, axes = plt.subplots(1, 1 + bool(loss_cols), figsize=(13 if loss_cols else 7, 4.5), squeeze=False)
    ax = axes[0][0]
    ax.plot(path.alpha, path.accuracy, "o-", color="#C44E52", label="measured")
    ax.plot(path.alpha, path["accuracy (linear)"], "--", color="grey", label="linear interpolation of the endpoints")
    ax.fill_between(path.alpha, path.accuracy, path["accuracy (linear)"], where=path.accuracy < path["accuracy (linear)"],
                    color="#C44E52", alpha=0.15, label="barrier")
    ax.set_xlabel("alpha (0 = System 1, 1 = System 2)")
    ax.set_ylabel("accuracy (%)")
    ax.legend(frameon=False, loc="best")
    if loss_cols:
        ax = axes[0][1]
        for col, color in zip(loss_cols, ("#4C72B0", "#C44E52")):
            ax.plot(path.alpha, path[col], "o-", color=color, label=col.replace("loss on ", "held-out "))
            ax.plot(path.alpha, path[col + " (linear)"], "--", color=color, alpha=0.6)
        ax.set_xlabel("alpha (0 = System 1, 1 = System 2)")
        ax.set_ylabel("mean token loss (dashed: linear)")
        ax.legend(frameon=False, loc="best")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def budget_curves(curves: pd.DataFrame, title: str = "", hue: str = "model", log: bool = True):
    """Accuracy within a token budget B (``metrics.budget_curve``), one line per model."""
    fig, ax = plt.subplots(figsize=(8, 5))
    sns.lineplot(data=curves, x="budget", y="accuracy", hue=hue, marker="o", markersize=4, ax=ax,
                 palette=_pal(curves[hue]) if hue == "model" else None, drawstyle="steps-post")
    if log:
        ax.set_xscale("log")
    ax.set_xlabel("token budget B (generated tokens)")
    ax.set_ylabel("correct within B (%)")
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def paper_beside_ours(summary: pd.DataFrame, paper: pd.DataFrame, ours_label: str, paper_label: str = "paper, 7B"):
    """Our accuracy-vs-length plane beside the paper's, both normalised to System 2: x = length change vs
    System 2 (%), y = accuracy relative to System 2 (%, 100 = System 2). ``paper`` has columns method,
    avg_accuracy, avg_length_change_pct (``paper_summary()``); the same method has the same colour and marker
    in both panels; the panels share the x axis (each keeps its own y range)."""
    s2 = summary.set_index("model").accuracy.get("System 2")
    ours = pd.DataFrame({"model": summary.model, "x": summary.length_change_pct,
                         "y": 100 * summary.accuracy / s2 if s2 else float("nan")})
    p = paper.rename(columns={"method": "model"}).copy()
    p["model"] = p.model.replace(PAPER_NAMES)
    p2 = p.set_index("model").avg_accuracy.get("System 2")
    # System 1's length change is not in the paper's summary table: its mean length is below every merge
    theirs = pd.DataFrame({"model": p.model, "x": p.avg_length_change_pct, "y": 100 * p.avg_accuracy / p2})
    # same axis semantics, own y range: the toy's System 1 would otherwise squash the paper's panel
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), sharex=True)
    pal = _pal(list(ours.model) + list(theirs.model))
    for ax, df, label in ((axes[0], ours, ours_label), (axes[1], theirs, paper_label)):
        for _, r in df.dropna(subset=["x", "y"]).iterrows():
            ax.scatter(r.x, r.y, marker=_marker(r.model), color=pal[r.model], s=70, label=r.model, zorder=2)
        ax.axhline(100, color="#C44E52", lw=0.8, ls="--", zorder=1)
        ax.axvline(0, color="#C44E52", lw=0.8, ls="--", zorder=1)
        ax.set_title(label)
        ax.set_xlabel("length change vs System 2 (%)")
    for ax in axes:
        ax.set_ylabel("accuracy relative to System 2 (%)")
    handles, labels = [], []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.suptitle("Each method relative to System 2 (dashed lines): ours beside the paper's")
    fig.tight_layout()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(5, len(labels)),
               frameon=False, fontsize=9)
    return fig


def scale_beside_paper(ours: pd.DataFrame, paper: pd.DataFrame, y: str, ylabel: str, ours_label: str,
                       paper_label: str = "paper (1.5B-32B)"):
    """A quantity ``y`` against model size, ours (the ladder) beside the paper's (``paper_by_scale()``),
    one line per merge method, the same colour and marker in both panels."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4), sharey=True)
    models = list(dict.fromkeys(list(ours.model) + list(paper.model)))
    pal = _pal(models)
    for ax, df, label in ((axes[0], ours, ours_label), (axes[1], paper, paper_label)):
        for m, g in df[~df.model.isin(["System 1", "System 2"])].groupby("model", sort=False):
            g = g.sort_values("parameters")
            ax.plot(g.parameters, g[y], "-", marker=_marker(m), color=pal[m], label=m, markersize=7)
        ax.set_xscale("log")
        sizes = sorted(df.parameters.unique())  # one tick per scale, labelled 0.13M / 7B
        ax.xaxis.set_major_locator(FixedLocator(sizes))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _size(v)))
        ax.set_xlabel("parameters")
        ax.set_title(label)
        ax.axhline(100 if "retained" in y else 0, color="#C44E52", lw=0.8, ls="--")
    axes[0].set_ylabel(ylabel)
    handles, labels = [], []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.tight_layout()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(5, len(labels)),
               frameon=False, fontsize=9)
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
