"""The paper's tables from the tidy run frame of `load.load_runs` (only runs with `ok` count).

Every cell is "mean ± spread" of test accuracy over the seeds/folds of ONE hyperparameter
configuration, the one with the best mean validation accuracy (`select_on_validation`): test
accuracy never takes part in the choice. Tables:
- `architecture_tables`: per architecture, task × strategy (Tables 2–4 of the paper);
- `human_regulatory_table`: strategy × architecture, averaged over the `human_*` tasks (Table 1);
- `context_len_tables`: per architecture, (task, strategy) × pretraining context length (Table 5).
Each returns a long DataFrame (CSV) and `*_markdown` renders it, best of a row (or column) in
**bold**, second <u>underlined</u>, compared on the displayed (rounded) values.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from gdna.registry import ARCHITECTURES, STRATEGIES, corpus_of

CONFIG_KEYS = ("lr", "batch_size", "context_len")
UNIT_KEYS = ("seed", "fold")  # one repetition of a configuration
HUMAN_PREFIX = "human_"
DECIMALS = 1  # accuracies are shown in percent with this many decimals


def mean_spread(values: Iterable[float]) -> tuple[float, float, int]:
    """(mean, spread, n) of the finite `values`, the study's "mean ± spread".

    spread = max_i(x_i − mean) − min_i(x_i − mean): the difference between the largest and the
    smallest deviation from the mean, which equals max − min (the full range, not half of it);
    0 for a single value, NaN for none.
    """
    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if x.size == 0:
        return float("nan"), float("nan"), 0
    mean = float(x.mean())
    deviations = x - mean
    return mean, float(deviations.max() - deviations.min()), int(x.size)


def varying_config_keys(df: pd.DataFrame, keys: Sequence[str] = CONFIG_KEYS) -> list[str]:
    """The configuration columns present in `df` (constant ones included: they do no harm)."""
    return [k for k in keys if k in df.columns and df[k].notna().any()]


def select_on_validation(df: pd.DataFrame, group_keys: Sequence[str],
                         config_keys: Sequence[str] | None = None) -> pd.DataFrame:
    """Per group, the configuration with the best mean validation accuracy, and its test accuracy.

    Configurations are compared on the mean `val_score` (best_val_acc) of their ok runs over
    seeds/folds; ties go to the first configuration in sorted order (smallest lr, then batch).
    Columns: group keys, config keys, `val_mean`, `test_mean`, `test_spread`, `n` (ok runs of the
    chosen configuration), `n_excluded` (its diverged/errored/unfinished runs), `n_configs`.
    """
    group_keys = list(group_keys)
    config_keys = list(varying_config_keys(df) if config_keys is None else config_keys)
    rows = []
    for group, runs in df.groupby(group_keys, sort=True, dropna=False):
        group = group if isinstance(group, tuple) else (group,)
        ok = runs[runs["ok"] & runs["val_score"].notna()]
        row = dict(zip(group_keys, group))
        if ok.empty:
            rows.append({**row, **{k: np.nan for k in config_keys}, "val_mean": np.nan,
                         "test_mean": np.nan, "test_spread": np.nan, "n": 0,
                         "n_excluded": int(len(runs)), "n_configs": 0})
            continue
        val_by_config = ok.groupby(config_keys, sort=True)["val_score"].mean() if config_keys else \
            pd.Series([ok["val_score"].mean()], index=[()])
        best = val_by_config.idxmax()  # first maximum in sorted order
        best = best if isinstance(best, tuple) else (best,)
        chosen = _match(runs, config_keys, best)
        mean, spread, n = mean_spread(chosen.loc[chosen["ok"], "test_acc"])
        rows.append({**row, **dict(zip(config_keys, best)), "val_mean": float(val_by_config.max()),
                     "test_mean": mean, "test_spread": spread, "n": n,
                     "n_excluded": int((~chosen["ok"]).sum()), "n_configs": int(len(val_by_config))})
    return pd.DataFrame(rows)


def selected_runs(df: pd.DataFrame, selection: pd.DataFrame, group_keys: Sequence[str],
                  config_keys: Sequence[str]) -> pd.DataFrame:
    """The ok runs of `df` that belong to the configuration `selection` chose for their group."""
    keys = list(group_keys) + list(config_keys)
    chosen = selection.dropna(subset=["test_mean"])[keys]
    merged = df[df["ok"]].merge(chosen, on=keys, how="inner")
    return merged


def architecture_tables(df: pd.DataFrame) -> pd.DataFrame:
    """Tables 2–4: per (arch, task, strategy) the validation-selected test accuracy (long form)."""
    return select_on_validation(df, ["arch", "task", "strategy"])


def human_regulatory_table(df: pd.DataFrame) -> pd.DataFrame:
    """Table 1: per (arch, strategy), test accuracy averaged over the `human_*` tasks.

    Each task uses its own validation-selected configuration; for every seed/fold the accuracy is
    averaged over the human tasks, then mean ± spread is taken over the seeds/folds. Empty when
    there is no human task.
    """
    human = df[df["task"].astype(str).str.startswith(HUMAN_PREFIX)]
    if human.empty:
        return pd.DataFrame(columns=["arch", "strategy", "test_mean", "test_spread", "n", "n_tasks"])
    keys = varying_config_keys(human)
    selection = select_on_validation(human, ["arch", "task", "strategy"], keys)
    runs = selected_runs(human, selection, ["arch", "task", "strategy"], keys)
    rows = []
    for (arch, strategy), group in runs.groupby(["arch", "strategy"]):
        per_unit = group.groupby(list(UNIT_KEYS))["test_acc"].mean()  # mean over tasks per seed/fold
        mean, spread, n = mean_spread(per_unit)
        rows.append({"arch": arch, "strategy": strategy, "test_mean": mean, "test_spread": spread,
                     "n": n, "n_tasks": int(group["task"].nunique())})
    return pd.DataFrame(rows)


def pretrained_rows(df: pd.DataFrame) -> pd.Series:
    """Rows of strategies that start from a pretraining (their strategy names a corpus)."""
    return df["strategy"].map(lambda s: s in STRATEGIES and corpus_of(s) is not None).astype(bool)


def has_context_axis(df: pd.DataFrame) -> bool:
    """True when pretrained runs span more than one pretraining context length."""
    pretrained = df[df["ok"] & pretrained_rows(df)]
    return "context_len" in df and pretrained["context_len"].nunique() > 1


def context_len_tables(df: pd.DataFrame) -> pd.DataFrame:
    """Table 5: per (arch, task, strategy, context_len) of pretrained runs, selected on validation."""
    pretrained = df[pretrained_rows(df)]
    if not has_context_axis(df):
        return pd.DataFrame()
    keys = [k for k in varying_config_keys(pretrained) if k != "context_len"]
    return select_on_validation(pretrained, ["arch", "task", "strategy", "context_len"], keys)


# ---------------------------------------------------------------------------------------------
# Markdown rendering


def architecture_markdown(table: pd.DataFrame, arch: str, references: dict | None = None,
                          flags: dict | None = None) -> str:
    """Task × strategy for one architecture, best strategy of each task bold, second underlined.

    `references`: {label: {task: (mean, spread)}}, extra columns in _italics_ right of the
    strategies (baselines; never marked best). `flags`: {(arch, task, strategy): note}, appended
    to a cell as "⚠ note" (e.g. runs whose model predicts one class)."""
    sub = table[table["arch"] == arch]
    strategies = ordered(sub["strategy"].unique(), STRATEGIES)
    tasks = sorted(sub["task"].unique())
    cells = {(r.task, r.strategy): (r.test_mean, r.test_spread) for r in sub.itertuples()}
    failed = {(r.task, r.strategy): r.n_excluded for r in sub.itertuples() if r.n == 0}
    references, flags = references or {}, flags or {}
    rows = []
    for task in tasks:
        texts = _marked([cells.get((task, s), (np.nan, np.nan)) for s in strategies])
        row = [task] + [f"– (all {failed[task, s]} runs excluded)" if (task, s) in failed else
                        t + (f" ⚠ {flags[arch, task, s]}" if (arch, task, s) in flags else "")
                        for s, t in zip(strategies, texts)]
        row += [_reference(values.get(task)) for values in references.values()]
        rows.append(row)
    return markdown_table(["task"] + strategies + [f"_{label}_" for label in references], rows)


def _reference(cell) -> str:
    return "–" if cell is None else f"_{format_cell(*cell)}_"


def human_regulatory_markdown(table: pd.DataFrame, references: dict | None = None) -> str:
    """Strategy × architecture; for each architecture the best strategy bold, second underlined.
    `references`: {label: (mean, spread)}, one _italic_ reference row each (the same value in
    every column: a baseline does not depend on the architecture)."""
    if table.empty:
        return "_no human_* task in this sweep_"
    archs = ordered(table["arch"].unique(), ARCHITECTURES)
    strategies = ordered(table["strategy"].unique(), STRATEGIES)
    cells = {(r.strategy, r.arch): (r.test_mean, r.test_spread) for r in table.itertuples()}
    columns = [_marked([cells.get((s, a), (np.nan, np.nan)) for s in strategies]) for a in archs]
    rows = [[s] + [col[i] for col in columns] for i, s in enumerate(strategies)]
    rows += [[f"_{label}_"] + [_reference(cell)] * len(archs) for label, cell in (references or {}).items()]
    return markdown_table(["strategy"] + archs, rows)


def context_len_markdown(table: pd.DataFrame, arch: str) -> str:
    """(task, strategy) × context length for one architecture, best length of each row bold."""
    sub = table[table["arch"] == arch]
    lengths = sorted(int(x) for x in sub["context_len"].dropna().unique())
    cells = {(r.task, r.strategy, int(r.context_len)): (r.test_mean, r.test_spread) for r in sub.itertuples()}
    rows = []
    for task in sorted(sub["task"].unique()):
        for strategy in ordered(sub.loc[sub["task"] == task, "strategy"].unique(), STRATEGIES):
            values = [cells.get((task, strategy, L), (np.nan, np.nan)) for L in lengths]
            rows.append([task, strategy] + _marked(values))
    return markdown_table(["task", "strategy"] + [f"L={L}" for L in lengths], rows, n_text=2)


def format_cell(mean: float, spread: float) -> str:
    """"84.7 ± 10.0" (percent), "–" when there is no value."""
    if mean is None or not np.isfinite(mean):
        return "–"
    return f"{100 * mean:.{DECIMALS}f} ± {100 * (spread if np.isfinite(spread) else 0):.{DECIMALS}f}"


def _marked(cells: list[tuple[float, float]]) -> list[str]:
    """Format cells; the best displayed mean in **bold**, the second best <u>underlined</u>."""
    shown = [round(100 * m, DECIMALS) if m is not None and np.isfinite(m) else None for m, _ in cells]
    distinct = sorted({v for v in shown if v is not None}, reverse=True)
    out = []
    for (mean, spread), value in zip(cells, shown):
        text = format_cell(mean, spread)
        if value is not None and value == distinct[0]:
            text = f"**{text}**"
        elif value is not None and len(distinct) > 1 and value == distinct[1]:
            text = f"<u>{text}</u>"
        out.append(text)
    return out


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]], n_text: int = 1) -> str:
    """A GitHub-flavoured Markdown table: the first `n_text` columns left-aligned, the rest right."""
    lines = ["| " + " | ".join(str(h) for h in header) + " |",
             "|" + "|".join([":---"] * n_text + ["---:"] * (len(header) - n_text)) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def ordered(values: Iterable, preferred: Sequence) -> list:
    """`values` in the order of `preferred` (names, or a gdna.registry Registry: its names), unknown
    ones after it, sorted."""
    preferred = list(preferred.names()) if hasattr(preferred, "names") else list(preferred)
    values = [v for v in values if v is not None and v == v]
    known = [p for p in preferred if p in values]
    return known + sorted(v for v in values if v not in preferred)


def _match(runs: pd.DataFrame, keys: Sequence[str], values: Sequence) -> pd.DataFrame:
    mask = pd.Series(True, index=runs.index)
    for key, value in zip(keys, values):
        mask &= runs[key] == value
    return runs[mask]
