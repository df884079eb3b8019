"""Is a difference real? Paired comparisons over seeds/folds, and rank tests across tasks.

Every value compared is the test accuracy of a cell's validation-selected configuration (as in the
tables: `tables.select_on_validation`), one value per seed/fold.

Within a task (`pairwise`): two architectures (or two strategies) of one task × strategy (or
task × architecture) cell are paired by (seed, fold): the same seed/fold means the same train/val
split. The test is the paired t-test on the differences, with its (1 − α) t interval of the mean
difference; it is exact when the differences are normal, and it is the test that can say anything
with the 2–5 seeds of this study: a sign-flip permutation or Wilcoxon signed-rank test has a
smallest two-sided p of 2/2^n (0.0625 with 5 pairs), and a bootstrap interval under-covers at n=5.
The p-values of one cell's pairs are Holm-adjusted (one family per cell). Fewer than `MIN_PAIRS`
pairs: no test, the verdict says so ("too few pairs"); fewer than `FEW_PAIRS`: the verdict stands
with a warning that only large differences can be detected.

Across tasks (`rank_tests`): per strategy, the architectures are ranked on each task (blocks =
tasks, values = the cell's mean test accuracy); the Friedman test with the Nemenyi post-hoc test
and its critical-difference (CD) diagram, by the `autorank` package (forced non-parametric). The
same for the strategies within each architecture. A rank test needs at least `MIN_BLOCKS` complete
blocks (autorank's minimum); with fewer it is skipped and the report says why.
"""
from __future__ import annotations

import contextlib
import io
import itertools
import math
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from gdna.analysis.tables import UNIT_KEYS, ordered, select_on_validation, selected_runs, varying_config_keys
from gdna.registry import ARCHITECTURES, STRATEGIES

ALPHA = 0.05
MIN_PAIRS = 3  # below this: no test at all
FEW_PAIRS = 5  # below this: a warning (only large differences are detectable)
MIN_BLOCKS = 5  # autorank's minimum number of blocks (tasks) for a rank test
NO_DIFFERENCE = "no significant difference"
TOO_FEW = "too few pairs"
CELL_KEYS = ["arch", "task", "strategy"]


def unit_scores(df: pd.DataFrame) -> pd.DataFrame:
    """Per (arch, task, strategy, seed, fold): the test accuracy of the cell's validation-selected
    configuration (ok runs only; a configuration run twice for one seed/fold is averaged)."""
    keys = varying_config_keys(df)
    selection = select_on_validation(df, CELL_KEYS, keys)
    runs = selected_runs(df, selection, CELL_KEYS, keys)
    if runs.empty:
        return pd.DataFrame(columns=CELL_KEYS + list(UNIT_KEYS) + ["test_acc"])
    return runs.groupby(CELL_KEYS + list(UNIT_KEYS), as_index=False)["test_acc"].mean()


def paired_test(a: Sequence[float], b: Sequence[float], alpha: float = ALPHA) -> dict:
    """Paired t-test of a − b: n, mean difference, its (1 − α) t interval and the two-sided p."""
    from scipy import stats

    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    n = int(d.size)
    out = {"n_pairs": n, "mean_diff": float(d.mean()) if n else math.nan, "ci_low": math.nan,
           "ci_high": math.nan, "p": math.nan}
    if n < 2:
        return out
    sd = float(d.std(ddof=1))
    if sd <= 1e-12 * max(1.0, abs(out["mean_diff"])):  # every pair differs by the same amount: no noise
        out["ci_low"] = out["ci_high"] = out["mean_diff"]
        out["p"] = 1.0 if out["mean_diff"] == 0.0 else 0.0
        return out
    res = stats.ttest_1samp(d, 0.0)
    ci = res.confidence_interval(1 - alpha)
    out.update(ci_low=float(ci.low), ci_high=float(ci.high), p=float(res.pvalue))
    return out


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment (NaN stays NaN and is not counted in the family)."""
    p = np.asarray(pvalues, dtype=float)
    valid = np.flatnonzero(np.isfinite(p))
    out = np.full(p.shape, np.nan)
    order = valid[np.argsort(p[valid], kind="stable")]
    m, running = len(order), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


def pairwise(scores: pd.DataFrame, factor: str, within: Sequence[str], alpha: float = ALPHA) -> pd.DataFrame:
    """Every pair of `factor` levels (architectures or strategies) within each `within` cell.

    Columns: within keys, `a`, `b`, `n_pairs`, `n_unpaired` (seeds/folds only one side has),
    `mean_diff` (a − b, accuracy fraction), `ci_low`, `ci_high`, `p`, `p_holm`, `verdict`
    ("a > b", "b > a", "no significant difference", "too few pairs"), `warning`.
    """
    within = list(within)
    preferred = ARCHITECTURES if factor == "arch" else STRATEGIES
    rows = []
    for cell, g in scores.groupby(within, sort=True):
        cell = cell if isinstance(cell, tuple) else (cell,)
        levels = ordered(g[factor].unique(), preferred)
        values = {lv: g[g[factor] == lv].set_index(list(UNIT_KEYS))["test_acc"] for lv in levels}
        cell_rows = []
        for a, b in itertools.combinations(levels, 2):
            both = values[a].index.intersection(values[b].index)
            row = {**dict(zip(within, cell)), "a": a, "b": b,
                   **paired_test(values[a].loc[both], values[b].loc[both], alpha),
                   "n_unpaired": int(len(values[a].index.union(values[b].index)) - len(both))}
            cell_rows.append(row)
        for row, adjusted in zip(cell_rows, holm([r["p"] if r["n_pairs"] >= MIN_PAIRS else math.nan
                                                   for r in cell_rows])):
            row["p_holm"] = adjusted
            row["verdict"], row["warning"] = _verdict(row, alpha)
        rows.extend(cell_rows)
    columns = within + ["a", "b", "n_pairs", "n_unpaired", "mean_diff", "ci_low", "ci_high", "p", "p_holm",
                        "verdict", "warning"]
    return pd.DataFrame(rows, columns=columns)


def _verdict(row: dict, alpha: float) -> tuple[str, str]:
    n = row["n_pairs"]
    if n < MIN_PAIRS:
        return TOO_FEW, (f"only {n} paired seed/fold{'s' if n != 1 else ''}: at least {MIN_PAIRS} are needed "
                         "to say anything")
    warning = (f"only {n} pairs: only large differences can be detected" if n < FEW_PAIRS else "")
    if np.isfinite(row["p_holm"]) and row["p_holm"] < alpha:
        return (f"{row['a']} > {row['b']}" if row["mean_diff"] > 0 else f"{row['b']} > {row['a']}"), warning
    return NO_DIFFERENCE, warning


# ---------------------------------------------------------------------------------------------
# Across tasks: Friedman + Nemenyi (autorank)


@dataclass
class RankTest:
    """One rank-based comparison across tasks (blocks) of `levels` (architectures or strategies)."""

    family: str  # e.g. "architectures, strategy scratch"
    factor: str
    levels: list[str]
    n_blocks: int = 0
    blocks: list[str] = field(default_factory=list)
    pvalue: float = math.nan
    cd: float = math.nan  # Nemenyi critical difference of mean ranks (≥ 3 levels)
    omnibus: str = ""
    ranks: pd.DataFrame = field(default_factory=pd.DataFrame)  # level, mean_rank, median, n
    pairs: pd.DataFrame = field(default_factory=pd.DataFrame)  # a, b, rank_diff, verdict
    message: str = ""
    result: object = None  # autorank's RankResult, for the CD diagram

    @property
    def done(self) -> bool:
        return self.result is not None


def block_matrix(scores: pd.DataFrame, factor: str, block: Sequence[str]) -> pd.DataFrame:
    """Blocks × levels of mean test accuracy (over seeds/folds); incomplete blocks dropped."""
    means = scores.groupby(list(block) + [factor])["test_acc"].mean().unstack(factor)
    preferred = ARCHITECTURES if factor == "arch" else STRATEGIES
    means = means[ordered(means.columns, preferred)]
    means.index = [" / ".join(map(str, i)) if isinstance(i, tuple) else str(i) for i in means.index]
    return means.dropna(axis=0, how="any")


def rank_test(matrix: pd.DataFrame, family: str, factor: str, alpha: float = ALPHA) -> RankTest:
    """Friedman + Nemenyi on a blocks × levels matrix (autorank, non-parametric forced)."""
    test = RankTest(family, factor, [str(c) for c in matrix.columns], n_blocks=len(matrix),
                    blocks=list(matrix.index))
    if matrix.shape[1] < 2:
        test.message = f"{family}: only {matrix.shape[1]} {factor} level(s), nothing to compare"
        return test
    if len(matrix) < MIN_BLOCKS:
        test.message = (f"{family}: {len(matrix)} task(s) with every {factor} present; a rank test across "
                        f"tasks needs at least {MIN_BLOCKS}, so none was made")
        return test
    from autorank import autorank

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # autorank prints
        warnings.simplefilter("ignore")
        result = autorank(matrix.astype(float), alpha=alpha, verbose=False, order="descending",
                          force_mode="nonparametric")
    test.result, test.pvalue, test.omnibus = result, float(result.pvalue), str(result.omnibus)
    test.cd = float(result.cd) if result.cd is not None else math.nan
    rankdf = result.rankdf
    rank_col = "meanrank" if "meanrank" in rankdf else None
    ranks = matrix.rank(axis=1, ascending=False).mean()  # 1 = best, our own (autorank agrees)
    test.ranks = pd.DataFrame({"level": list(matrix.columns), "mean_rank": [float(ranks[c]) for c in matrix.columns],
                               "mean_acc": [float(matrix[c].mean()) for c in matrix.columns],
                               "n_blocks": len(matrix)}).sort_values("mean_rank").reset_index(drop=True)
    if rank_col is not None:
        test.ranks["autorank_mean_rank"] = test.ranks["level"].map(rankdf[rank_col].to_dict())
    rows = []
    significant = test.pvalue < alpha
    for a, b in itertools.combinations(list(matrix.columns), 2):
        diff = float(ranks[a] - ranks[b])  # negative: a ranks better
        if matrix.shape[1] >= 3:
            real = significant and abs(diff) > test.cd
        else:  # two levels: autorank's paired (Wilcoxon) test is the whole answer
            real = significant
        verdict = (f"{a} > {b}" if diff < 0 else f"{b} > {a}") if real else NO_DIFFERENCE
        rows.append({"a": a, "b": b, "rank_diff": diff, "verdict": verdict})
    test.pairs = pd.DataFrame(rows)
    what = (f"Friedman p={test.pvalue:.3g}, Nemenyi CD={test.cd:.2f}" if matrix.shape[1] >= 3
            else f"{test.omnibus} p={test.pvalue:.3g}")
    test.message = f"{family}: {len(matrix)} tasks, {what}"
    return test


def rank_tests(scores: pd.DataFrame, alpha: float = ALPHA) -> list[RankTest]:
    """Architectures across tasks per strategy (and over all task × strategy blocks), strategies
    across tasks per architecture."""
    out = []
    strategies = ordered(scores["strategy"].unique(), STRATEGIES)
    for strategy in strategies:
        sub = scores[scores["strategy"] == strategy]
        out.append(rank_test(block_matrix(sub, "arch", ["task"]), f"architectures, strategy {strategy}", "arch", alpha))
    if len(strategies) > 1:
        out.append(rank_test(block_matrix(scores, "arch", ["task", "strategy"]),
                             "architectures, all task × strategy blocks", "arch", alpha))
    for arch in ordered(scores["arch"].unique(), ARCHITECTURES):
        sub = scores[scores["arch"] == arch]
        out.append(rank_test(block_matrix(sub, "strategy", ["task"]), f"strategies, architecture {arch}",
                             "strategy", alpha))
    return out


def plot_critical_difference(test: RankTest, path) -> bool:
    """autorank's CD diagram (≥ 3 levels) to `path`; False when there is none to draw."""
    if not test.done or len(test.levels) < 3 or not np.isfinite(test.cd):
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from autorank import plot_stats

    from gdna.analysis.plots import PAPER_RC

    with plt.rc_context(PAPER_RC), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        ax = plot_stats(test.result, allow_insignificant=True, width=5)
        fig = ax.get_figure()
        fig.suptitle(f"{test.family}: mean rank over {test.n_blocks} tasks (p={test.pvalue:.3g})", fontsize=9, y=1.12)
        fig.savefig(path, dpi=PAPER_RC["savefig.dpi"], facecolor="white", bbox_inches="tight")
        plt.close(fig)
    return True


# ---------------------------------------------------------------------------------------------
# Markdown


def pairwise_markdown(table: pd.DataFrame, within: Sequence[str]) -> str:
    """One line per pair: cell, comparison, verdict, Δ (pp) with its CI, n pairs, Holm p, warning."""
    from gdna.analysis.tables import markdown_table

    if table.empty:
        return "_no cell has two levels to compare_"
    rows = []
    for r in table.itertuples():
        diff = "–" if not np.isfinite(r.mean_diff) else f"{100 * r.mean_diff:+.1f}"
        ci = ("–" if not np.isfinite(r.ci_low) else f"[{100 * r.ci_low:+.1f}, {100 * r.ci_high:+.1f}]")
        p = "–" if not np.isfinite(r.p_holm) else f"{r.p_holm:.3g}"
        verdict = f"**{r.verdict}**" if r.verdict not in (NO_DIFFERENCE, TOO_FEW) else r.verdict
        rows.append([getattr(r, k) for k in within] + [f"{r.a} vs {r.b}", verdict, diff, ci, r.n_pairs, p,
                                                       (r.warning or "") + (f" ({r.n_unpaired} unpaired)" if r.n_unpaired else "")])
    return markdown_table(list(within) + ["comparison", "verdict", "Δ a−b (pp)", "CI", "pairs", "p (Holm)", "note"],
                          rows, n_text=len(within) + 2)


def rank_markdown(test: RankTest) -> str:
    from gdna.analysis.tables import markdown_table

    if not test.done:
        return f"- {test.message}"
    ranks = markdown_table([test.factor, "mean rank (1 = best)", "mean test acc (%)"],
                           [[r.level, f"{r.mean_rank:.2f}", f"{100 * r.mean_acc:.1f}"] for r in test.ranks.itertuples()])
    pairs = "; ".join(f"{r.a} vs {r.b}: {r.verdict}" for r in test.pairs.itertuples())
    return f"**{test.message}**\n\n{ranks}\n\n{pairs}"
