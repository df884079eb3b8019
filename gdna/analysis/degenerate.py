"""Degenerate models: a trial whose model predicts one class for every test example.

Its accuracy is the test rate of that class (the majority rate when it is the majority class),
its balanced accuracy 1/n_classes and its MCC 0: a "74%" that only restates the class balance.
A run is flagged from its test confusion matrix (`n_pred_classes` = 1, logged by every trial
since issue 18). For runs without one (older sweeps) the baselines' per-split class rates stand in:
the run is flagged when its test accuracy equals the rate of some class on its own test split
(to within half an example), and the flag says it rests on that coincidence.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from gdna.analysis.tables import UNIT_KEYS, markdown_table, ordered, select_on_validation, selected_runs, \
    varying_config_keys
from gdna.registry import ARCHITECTURES, STRATEGIES

CELL_KEYS = ["arch", "task", "strategy"]


def flag_runs(df: pd.DataFrame, baselines: pd.DataFrame | None = None) -> pd.DataFrame:
    """`df` plus `one_class` (bool; False when unknown) and `one_class_by` ("confusion matrix",
    "accuracy = class rate", or "")."""
    out = df.copy()
    by_cm = out["n_pred_classes"].notna() if "n_pred_classes" in out else pd.Series(False, index=out.index)
    one = pd.Series(False, index=out.index)
    how = pd.Series("", index=out.index, dtype=object)
    if by_cm.any():
        one[by_cm] = out.loc[by_cm, "n_pred_classes"] <= 1
        how[by_cm & one] = "confusion matrix"
    if baselines is not None and not baselines.empty:
        rates = _class_rates(baselines)
        for i in out.index[~by_cm & out["ok"]]:
            key = (out.at[i, "task"], _int(out.at[i, "seed"]), _int(out.at[i, "fold"]))
            if key not in rates:
                continue
            fracs, n_test = rates[key]
            if np.any(np.abs(fracs - out.at[i, "test_acc"]) < 0.5 / max(n_test, 1)):
                one[i], how[i] = True, "accuracy = class rate"
    out["one_class"], out["one_class_by"] = one, how
    return out


def _class_rates(baselines: pd.DataFrame) -> dict:
    cols = sorted((c for c in baselines if c.startswith("test_frac_c")), key=lambda c: int(c[len("test_frac_c"):]))
    rates = {}
    for r in baselines.drop_duplicates(["task", "seed", "fold"]).to_dict("records"):
        fracs = np.array([r[c] for c in cols if r.get(c) is not None and np.isfinite(r[c])], dtype=float)
        rates[(r["task"], _int(r["seed"]), _int(r["fold"]))] = (fracs, int(r.get("n_test") or 0))
    return rates


def _int(v) -> int:
    return int(v) if v is not None and not pd.isna(v) else 0


def degenerate_cells(flagged: pd.DataFrame) -> pd.DataFrame:
    """Per (arch, task, strategy), over the runs of its validation-selected configuration: `n`,
    `n_one_class`, `by`, `test_mean`, `balanced_mean` (NaN without confusion matrices), `flag`
    (True when any of them predicts one class)."""
    keys = varying_config_keys(flagged)
    selection = select_on_validation(flagged, CELL_KEYS, keys)
    runs = selected_runs(flagged, selection, CELL_KEYS, keys)
    rows = []
    for cell, g in runs.groupby(CELL_KEYS, sort=True):
        n_one = int(g["one_class"].sum())
        rows.append({**dict(zip(CELL_KEYS, cell)), "n": len(g), "n_one_class": n_one,
                     "by": ", ".join(sorted(set(g.loc[g["one_class"], "one_class_by"]))),
                     "test_mean": float(g["test_acc"].mean()),
                     "balanced_mean": float(g["test_balanced_acc"].mean()) if "test_balanced_acc" in g
                     and g["test_balanced_acc"].notna().any() else np.nan,
                     "flag": n_one > 0})
    return pd.DataFrame(rows, columns=CELL_KEYS + ["n", "n_one_class", "by", "test_mean", "balanced_mean", "flag"])


def flags_by_cell(cells: pd.DataFrame) -> dict[tuple[str, str, str], str]:
    """(arch, task, strategy) → the note a table cell carries ("1/2 one-class")."""
    return {(r.arch, r.task, r.strategy): f"{r.n_one_class}/{r.n} one-class"
            for r in cells.itertuples() if r.flag}


def degenerate_markdown(cells: pd.DataFrame) -> str:
    flagged = cells[cells["flag"]]
    if cells.empty:
        return "_no finished run_"
    if flagged.empty:
        known = "" if cells["balanced_mean"].notna().any() else (
            " (no run logged a confusion matrix; checked against the class rates of the baselines where known)")
        return f"No selected configuration predicts a single class{known}."
    rows = []
    for arch in ordered(flagged["arch"].unique(), ARCHITECTURES):
        sub = flagged[flagged["arch"] == arch]
        for r in sub.sort_values(["task"]).itertuples():
            if r.strategy not in ordered(sub["strategy"].unique(), STRATEGIES):
                continue
            bal = "–" if not np.isfinite(r.balanced_mean) else f"{100 * r.balanced_mean:.1f}"
            rows.append([r.task, r.arch, r.strategy, f"{r.n_one_class} of {r.n}", f"{100 * r.test_mean:.1f}", bal, r.by])
    return markdown_table(["task", "arch", "strategy", "runs predicting one class", "test acc (%)",
                           "balanced acc (%)", "flagged by"], rows, n_text=3)


__all__ = ["flag_runs", "degenerate_cells", "flags_by_cell", "degenerate_markdown", "UNIT_KEYS"]
