"""Figures for the book (seaborn, labelled, readable). Each returns the matplotlib Figure."""

from __future__ import annotations

import matplotlib.pyplot as plt  # the backend is the caller's: inline in notebooks, Agg headless (MPLBACKEND)
import pandas as pd
import seaborn as sns

sns.set_theme(style="whitegrid", context="notebook")
PALETTE = {"System 1": "#4C72B0", "System 2": "#C44E52"}


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


def _pal(models):
    names = list(dict.fromkeys(models))
    others = [m for m in names if m not in PALETTE]
    colors = dict(zip(others, sns.color_palette("tab10", len(others) + 2)[2:]))
    return {m: PALETTE.get(m, colors.get(m)) for m in names}


def accuracy_vs_length(summary: pd.DataFrame, title: str = "", annotate: bool = True, line: pd.DataFrame | None = None,
                       line_label: str = ""):
    """Each model as a point (mean tokens, accuracy) with 95% CI bars; an optional sweep drawn as a line."""
    fig, ax = plt.subplots(figsize=(8, 5.5))
    if line is not None and len(line):
        ax.plot(line.mean_tokens, line.accuracy, "-", color="0.6", zorder=1, label=line_label)
        for _, r in line.iterrows():
            ax.annotate(r.get("label", ""), (r.mean_tokens, r.accuracy), textcoords="offset points", xytext=(4, -10),
                        fontsize=8, color="0.4")
    pal = _pal(summary.model)
    for _, r in summary.iterrows():
        ax.errorbar(r.mean_tokens, r.accuracy, yerr=[[r.accuracy - r.acc_lo], [r.acc_hi - r.accuracy]], fmt="o",
                    color=pal[r.model], capsize=3, zorder=2, label=r.model)
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
