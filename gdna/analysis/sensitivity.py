"""Learning-rate sensitivity as the study reports it, per architecture, with its uncertainty.

For one strategy, at every (task, arch, lr) the other hyperparameters are the validation-selected
ones (as in the LR figures, `plots.lr_curves`). Then, for each seed/fold separately:
- `gap`: test accuracy at that seed's best LR minus at its worst LR (over the LRs with a result);
- `within_1pt`: the fraction of the LR grid (every LR tried for that task × architecture) whose
  test accuracy is within `TOLERANCE` (1 point) of that seed's best: how likely a mis-chosen LR
  still gives a near-best model. An LR whose run diverged or errored counts as not within.
Each is reported as mean ± spread over seeds/folds (the study's spread: max − min), per task and
averaged over tasks (per seed/fold the mean over the tasks, then mean ± spread over seeds/folds).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from gdna.analysis.tables import UNIT_KEYS, markdown_table, mean_spread, ordered, select_on_validation, \
    varying_config_keys
from gdna.registry import ARCHITECTURES

TOLERANCE = 0.01  # "within 1 point of the best"
ALL_TASKS = "mean over tasks"


def per_unit(df: pd.DataFrame, strategy: str) -> pd.DataFrame:
    """Per (task, arch, seed, fold): gap, within_1pt, n_lrs (grid size), n_failed (LRs without a result)."""
    runs = df[df["strategy"] == strategy]
    if runs.empty or "lr" not in runs or runs["lr"].nunique() < 2:
        return pd.DataFrame()
    others = [k for k in varying_config_keys(runs) if k != "lr"]
    group = ["task", "arch", "lr"]
    selection = select_on_validation(runs, group, others)
    keys = group + others
    chosen = runs.merge(selection[keys].dropna(subset=others) if others else selection[keys], on=keys, how="inner")
    rows = []
    for (task, arch), g in chosen.groupby(["task", "arch"]):
        grid = sorted(runs[(runs["task"] == task) & (runs["arch"] == arch)]["lr"].dropna().unique())
        for unit, u in g.groupby(list(UNIT_KEYS)):
            acc = u[u["ok"]].groupby("lr")["test_acc"].mean().reindex(grid)
            finite = acc.dropna()
            if finite.empty:
                continue
            best = float(finite.max())
            rows.append({"task": task, "arch": arch, **dict(zip(UNIT_KEYS, unit)),
                         "gap": best - float(finite.min()) if len(finite) > 1 else np.nan,
                         "within_1pt": float((finite >= best - TOLERANCE - 1e-12).sum()) / len(grid),
                         "best_lr": float(finite.idxmax()), "n_lrs": len(grid), "n_failed": int(acc.isna().sum())})
    return pd.DataFrame(rows)


def sensitivity_table(df: pd.DataFrame, strategy: str) -> pd.DataFrame:
    """Per (task | "mean over tasks", arch): gap and within_1pt as mean ± spread over seeds/folds."""
    units = per_unit(df, strategy)
    if units.empty:
        return pd.DataFrame()
    rows = []
    for (task, arch), g in units.groupby(["task", "arch"]):
        rows.append(_summary(task, arch, g))
    for arch, g in units.groupby("arch"):
        avg = g.groupby(list(UNIT_KEYS)).agg(gap=("gap", "mean"), within_1pt=("within_1pt", "mean"),
                                             n_lrs=("n_lrs", "max"), n_failed=("n_failed", "sum"))
        rows.append(_summary(ALL_TASKS, arch, avg.reset_index(), n_tasks=g["task"].nunique()))
    out = pd.DataFrame(rows)
    out.insert(0, "strategy", strategy)
    return out


def _summary(task, arch, g: pd.DataFrame, n_tasks: int = 1) -> dict:
    gap, gap_spread, n_gap = mean_spread(g["gap"])
    within, within_spread, n = mean_spread(g["within_1pt"])
    return {"task": task, "arch": arch, "gap_mean": gap, "gap_spread": gap_spread, "within_1pt_mean": within,
            "within_1pt_spread": within_spread, "n_units": n, "n_lrs": int(g["n_lrs"].max()),
            "n_failed": int(g["n_failed"].sum()), "n_tasks": n_tasks}


def sensitivity_markdown(table: pd.DataFrame) -> str:
    """Task (+ mean over tasks) × architecture, two numbers per cell: the gap and the share of
    the LR grid within 1 point of the best, each mean ± spread over seeds/folds."""
    if table.empty:
        return "_fewer than two learning rates: no sensitivity to report_"
    archs = ordered(table["arch"].unique(), ARCHITECTURES)
    cells = {(r.task, r.arch): r for r in table.itertuples()}
    tasks = sorted(t for t in table["task"].unique() if t != ALL_TASKS) + [ALL_TASKS]
    rows = []
    for task in tasks:
        row = [f"**{task}**" if task == ALL_TASKS else task]
        for arch in archs:
            r = cells.get((task, arch))
            if r is None:
                row.append("–")
                continue
            gap = "–" if not np.isfinite(r.gap_mean) else f"{100 * r.gap_mean:.1f} ± {100 * r.gap_spread:.1f}"
            row.append(f"{gap} pp · {100 * r.within_1pt_mean:.0f} ± {100 * r.within_1pt_spread:.0f}% of "
                       f"{r.n_lrs} LRs" + (f" ({r.n_failed} failed)" if r.n_failed else ""))
        rows.append(row)
    return markdown_table(["task"] + archs, rows)
