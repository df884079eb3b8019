"""Learning-rate sensitivity figures (the paper's Figures 1/3/4) and the best–worst LR gap table.

One figure per pretraining strategy: one panel per task, test accuracy against learning rate (log
x), one line per architecture. At every (task, arch, lr) point the other hyperparameters (batch
size, context length) are chosen on mean validation accuracy, as in the tables; the line is the
mean test accuracy of that configuration over seeds/folds and the band its min–max. Points where
some runs diverged/errored are drawn hollow. The dashed line is chance, 1/model.n_classes.
"""
from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")  # noqa: E402  (headless: no display on a cluster node)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from gdna.analysis.tables import markdown_table, ordered, select_on_validation, selected_runs, \
    varying_config_keys  # noqa: E402
from gdna.registry import ARCHITECTURES  # noqa: E402

# colour-blind safe (Okabe–Ito) colours and markers, given to the architectures in registration order
COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#F0E442", "#000000")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def arch_style(arch: str, j: int) -> tuple[str, str]:
    """(colour, marker) of an architecture: by its registry position, else by its position `j` in the plot."""
    names = ARCHITECTURES.names()
    i = names.index(arch) if arch in names else len(names) + j
    return COLOURS[i % len(COLOURS)], MARKERS[i % len(MARKERS)]
PAPER_RC = {"font.family": "serif", "font.size": 9, "axes.titlesize": 9, "axes.labelsize": 9,
            "legend.fontsize": 8, "xtick.labelsize": 8, "ytick.labelsize": 8,
            "axes.spines.top": False, "axes.spines.right": False, "savefig.dpi": 200}


def lr_curves(df: pd.DataFrame, strategy: str) -> pd.DataFrame:
    """Per (task, arch, lr) of `strategy`: test mean/min/max of the validation-selected config.

    Columns: task, arch, lr, the chosen other config keys, test_mean, test_min, test_max, n,
    n_excluded, n_classes.
    """
    runs = df[df["strategy"] == strategy]
    if runs.empty:
        return pd.DataFrame()
    others = [k for k in varying_config_keys(runs) if k != "lr"]
    group = ["task", "arch", "lr"]
    selection = select_on_validation(runs, group, others).dropna(subset=["test_mean"])
    chosen = selected_runs(runs, selection, group, others)
    spread = chosen.groupby(group)["test_acc"].agg(test_min="min", test_max="max").reset_index()
    curves = selection.merge(spread, on=group, how="left")
    n_classes = runs.groupby("task")["n_classes"].agg(lambda s: s.dropna().max() if s.notna().any() else 2)
    curves["n_classes"] = curves["task"].map(n_classes).astype(float)
    return curves.sort_values(group).reset_index(drop=True)


BASELINE_STYLE = {0: ("0.25", ":"), 1: ("#D55E00", "-.")}  # majority dotted, k-mer LR dash-dot


def plot_lr_sensitivity(curves: pd.DataFrame, title: str | None = None,
                        references: dict | None = None) -> Figure:
    """One panel per task, one labelled line (+ min–max band) per architecture, chance dashed.
    `references`: {label: {task: (mean, spread)}}, one horizontal line each (the baselines)."""
    tasks = sorted(curves["task"].unique())
    archs = ordered(curves["arch"].unique(), ARCHITECTURES.names())
    ncols = min(3, len(tasks))
    nrows = math.ceil(len(tasks) / ncols)
    with plt.rc_context(PAPER_RC):
        fig = Figure(figsize=(3.0 * ncols + 0.4, 2.5 * nrows + 0.7), layout="constrained")
        axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
        lrs = sorted(curves["lr"].unique())
        for i, (ax, task) in enumerate(zip(axes, tasks)):
            sub = curves[curves["task"] == task]
            for j, arch in enumerate(archs):
                line = sub[sub["arch"] == arch].sort_values("lr")
                if line.empty:
                    continue
                colour, marker = arch_style(arch, j)
                ax.fill_between(line["lr"], 100 * line["test_min"], 100 * line["test_max"],
                                color=colour, alpha=0.18, linewidth=0)
                ax.plot(line["lr"], 100 * line["test_mean"], color=colour, marker=marker, markersize=4,
                        linewidth=1.4, label=arch)
                hollow = line[line["n_excluded"] > 0]
                if not hollow.empty:
                    ax.plot(hollow["lr"], 100 * hollow["test_mean"], linestyle="none", marker=marker,
                            markersize=6, markerfacecolor="white", markeredgecolor=colour)
            chance = sub["n_classes"].dropna()
            if not chance.empty:
                ax.axhline(100 / chance.iloc[0], color="0.4", linestyle="--", linewidth=1, label="chance")
            for k, (label, values) in enumerate((references or {}).items()):
                if task in values and np.isfinite(values[task][0]):
                    colour, style = BASELINE_STYLE.get(k, ("0.5", ":"))
                    ax.axhline(100 * values[task][0], color=colour, linestyle=style, linewidth=1.1, label=label)
            ax.set_xscale("log")
            ax.set_xticks(lrs, [_lr_label(x) for x in lrs])
            ax.minorticks_off()
            ax.grid(True, axis="y", color="0.9", linewidth=0.6)
            ax.set_title(task.replace("_", " "))
            if i % ncols == 0:
                ax.set_ylabel("Test accuracy (%)")
            if i >= len(tasks) - ncols:
                ax.set_xlabel("Learning rate")
        for ax in axes[len(tasks):]:
            ax.set_visible(False)
        handles, labels = [], []
        for ax in axes[:len(tasks)]:  # every label once, whichever panel has it
            for h, lab in zip(*ax.get_legend_handles_labels()):
                if lab not in labels:
                    handles.append(h)
                    labels.append(lab)
        if (curves["n_excluded"] > 0).any():
            handles.append(Line2D([], [], linestyle="none", marker="o", markerfacecolor="white",
                                  markeredgecolor="0.3"))
            labels.append("runs excluded (diverged/errored)")
        if title:
            fig.suptitle(title, fontsize=10)
        fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 2 * ncols), frameon=False)  # fits the width
    return fig


def lr_gap_table(curves: pd.DataFrame) -> pd.DataFrame:
    """Per (task, arch): best and worst LR of the curve and their gap in test accuracy."""
    rows = []
    for (task, arch), line in curves.dropna(subset=["test_mean"]).groupby(["task", "arch"]):
        best, worst = line.loc[line["test_mean"].idxmax()], line.loc[line["test_mean"].idxmin()]
        rows.append({"task": task, "arch": arch, "best_lr": best["lr"], "best_acc": best["test_mean"],
                     "worst_lr": worst["lr"], "worst_acc": worst["test_mean"],
                     "gap": best["test_mean"] - worst["test_mean"]})
    return pd.DataFrame(rows)


def lr_gap_markdown(gaps: pd.DataFrame) -> str:
    """Task × architecture: gap in percentage points (best LR → worst LR)."""
    if gaps.empty:
        return "_no learning-rate curve_"
    archs = ordered(gaps["arch"].unique(), ARCHITECTURES.names())
    cells = {(r.task, r.arch): r for r in gaps.itertuples()}
    rows = []
    for task in sorted(gaps["task"].unique()):
        row = [task]
        for arch in archs:
            r = cells.get((task, arch))
            row.append("–" if r is None else
                       f"{100 * r.gap:.1f} ({_lr_label(r.best_lr)} → {_lr_label(r.worst_lr)})")
        rows.append(row)
    return markdown_table(["task"] + archs, rows)


def plot_importance(importances: dict[str, float], title: str = "fANOVA importance for test accuracy") -> Figure:
    """Horizontal bar chart, most important hyperparameter on top."""
    items = sorted(importances.items(), key=lambda kv: kv[1])
    with plt.rc_context(PAPER_RC):
        fig = Figure(figsize=(4.2, 0.45 * len(items) + 1.0), layout="constrained")
        ax = fig.subplots()
        ax.barh([k for k, _ in items], [v for _, v in items], color="#0072B2")
        for y, (_, v) in enumerate(items):
            ax.text(v, y, f" {v:.2f}", va="center", fontsize=8)
        ax.set_xlim(0, max([v for _, v in items] + [0.01]) * 1.2)
        ax.set_xlabel("Importance (fraction of variance)")
        ax.set_title(title)
    return fig


def save_figure(fig: Figure, path) -> None:
    fig.savefig(path, dpi=PAPER_RC["savefig.dpi"], facecolor="white")


def _lr_label(lr: float) -> str:
    """1e-4 → "1e-4", 0.0027 → "2.7e-3"."""
    mantissa, exponent = f"{lr:.1e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"
