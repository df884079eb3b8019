"""Write every analysis output of one sweep to a folder, and log that folder to MLflow.

Layout of `out_dir`:
  summary.md                         the answer paragraph, then every table, figure links (also the MLflow note)
  runs.csv                           the tidy run frame (one row per trial run, one_class flag included)
  excluded_runs.csv                  diverged / errored / no-test_acc runs
  tables/baselines.csv|.md           majority class and k-mer LR per task and split (+ per-split rows)
  tables/models_vs_baselines.csv|.md the validation-best model of each task against both, paired by seed
  tables/per_architecture.csv|.md    Tables 2–4 (task × strategy per architecture, baseline columns)
  tables/human_regulatory.csv|.md    Table 1 (strategy × architecture over human_* tasks, baseline rows)
  tables/significance_arch.csv|.md   architecture pairs within each task × strategy (paired over seeds)
  tables/significance_strategy.csv|.md  strategy pairs within each task × architecture
  tables/rank_tests.csv|.md          Friedman + Nemenyi across tasks (architectures; strategies)
  tables/degenerate.csv|.md          cells whose runs predict one class
  tables/context_len.csv|.md         Table 5 (only when the sweep has several context lengths)
  tables/lr_gap.csv|.md              best–worst LR gap of the mean curves per strategy, task and architecture
  tables/lr_sensitivity.csv|.md      per architecture: gap and share of the LR grid within 1 point, ± over seeds
  tables/importance.csv|.md          fANOVA importance (independent parameters only), all runs and per task
  figures/lr_sensitivity_<strategy>.png, figures/importance.png, figures/cd_<family>.png
MLflow: the folder is logged as artifacts of ONE run per sweep named `analysis`, tagged
gdna.role=analysis (found again and overwritten on re-runs), not of the stage parent runs: those
belong to the sweep driver, the only writer of trial/stage runs (DESIGN.md); the answer paragraph
goes into the descriptions of the experiment and of the stage runs (below their own text).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from gdna.analysis import baselines as bl
from gdna.analysis import degenerate, plots, sensitivity, significance, tables
from gdna.analysis import importance as imp
from gdna.analysis import scaling
from gdna.tracking import NOTE_TAG, fit_note
from gdna.registry import ARCHITECTURES, STRATEGIES

METHOD_NOTE = (
    "Cells are test accuracy (%) as mean ± spread over seeds/folds, where spread is the difference "
    "between the largest and the smallest deviation from the mean (= max − min). For every cell the "
    "(learning rate, batch size[, context length]) configuration is the one with the best mean "
    "validation accuracy (best_val_acc) over seeds; test accuracy is never used to choose. "
    "Diverged / errored / unfinished runs are excluded from means and counted below. "
    "**Bold**: best, <u>underlined</u>: second best in the row (Table 1: in the column). _Italic_: "
    "reference baselines fitted by gdna on the same splits and seeds (never marked best). "
    "⚠ k/n one-class: k of the cell's n runs predict a single class on test.")
RUN_COLUMNS = ["run_id", "run_name", "task", "arch", "strategy", "lr", "batch_size", "context_len",
               "seed", "fold", "status", "outcome", "best_val_acc", "test_acc", "test_balanced_acc", "test_mcc",
               "n_pred_classes", "one_class", "one_class_by"]


@dataclass
class AnalysisOutputs:
    out_dir: Path
    files: list[Path] = field(default_factory=list)
    summary: str = ""  # the whole summary.md
    main_table: str = ""  # what the CLI prints
    n_runs: int = 0
    n_excluded: int = 0
    excluded_by_outcome: dict[str, int] = field(default_factory=dict)
    status_counts: dict[str, int] = field(default_factory=dict)  # gdna.status → runs (stopped: by the scheduler)
    answer: str = ""  # the opening paragraph (also the experiment's and stage runs' description)
    metrics: dict[str, float] = field(default_factory=dict)  # logged on the analysis run


def analyze_runs(df: pd.DataFrame, out_dir: str | Path, sweep_name: str,
                 log: Callable[[str], None] = print, baselines: bl.BaselineResult | None = None,
                 alpha: float = significance.ALPHA, pretrain: pd.DataFrame | None = None) -> AnalysisOutputs:
    """Tables, figures, tests and importance of the tidy run frame `df`, written under `out_dir`.
    `baselines`: from `baselines.compute_baselines` on the same splits (None: no reference); `pretrain`: the
    sweep's pretraining runs (search_runs columns) for the scaling figures (gdna.analysis.scaling)."""
    out = AnalysisOutputs(Path(out_dir))
    (out.out_dir / "tables").mkdir(parents=True, exist_ok=True)
    (out.out_dir / "figures").mkdir(parents=True, exist_ok=True)
    base = baselines.frame if baselines is not None else pd.DataFrame()
    k = baselines.k if baselines is not None else bl.DEFAULT_K
    df = degenerate.flag_runs(df, base)
    excluded = df[~df["ok"]]
    out.n_runs, out.n_excluded = len(df), len(excluded)
    out.excluded_by_outcome = excluded["outcome"].value_counts().sort_index().to_dict()
    out.status_counts = df["status"].value_counts().sort_index().to_dict() if "status" in df else {}
    sections = [f"# Analysis of sweep `{sweep_name}`", _count_line(out), METHOD_NOTE, _budget_section(df)]
    _write_csv(out, df[[c for c in RUN_COLUMNS if c in df]], "runs.csv")
    _write_csv(out, excluded[[c for c in RUN_COLUMNS if c in excluded]], "excluded_runs.csv")

    log("[analyze] baselines, tables: per architecture, human regulatory average, context length")
    base_md, versus = _baseline_section(out, df, baselines, alpha)
    sections.append(base_md)
    cells = degenerate.degenerate_cells(df)
    flags = degenerate.flags_by_cell(cells)
    per_arch = tables.architecture_tables(df)
    human = tables.human_regulatory_table(df)
    human_md = tables.human_regulatory_markdown(human, bl.human_references(base, k=k))
    _write_table(out, human, human_md, "human_regulatory")
    sections.append("## Table 1: strategy × architecture, mean over human regulatory tasks\n\n" + human_md)
    arch_md = []
    references = bl.task_references(base, k)
    for arch in tables.ordered(per_arch["arch"].unique(), ARCHITECTURES):
        arch_md.append(f"### {arch}\n\n" + tables.architecture_markdown(per_arch, arch, references, flags))
    _write_table(out, per_arch, "\n\n".join(arch_md), "per_architecture")
    sections.append("## Tables 2–4: task × strategy per architecture\n\n" + "\n\n".join(arch_md))
    out.main_table = ("Table 1: strategy × architecture, mean over human_* tasks (test acc %, mean ± spread)\n\n"
                      + human_md) if not human.empty else "\n\n".join(arch_md)

    log(f"[analyze] significance: paired over seeds/folds within tasks (α={alpha}), rank tests across tasks")
    sig_md, sig = _significance_section(out, df, alpha)
    sections.append(sig_md)
    deg_md = degenerate.degenerate_markdown(cells)
    _write_table(out, cells, deg_md, "degenerate")
    sections.append("## Degenerate models (one predicted class)\n\n"
                    "Over the runs of each cell's validation-selected configuration; a one-class model's "
                    "accuracy is the test rate of that class, its balanced accuracy 1/n_classes.\n\n" + deg_md)
    if tables.has_context_axis(df):
        ctx = tables.context_len_tables(df)
        ctx_md = "\n\n".join(f"### {arch}\n\n" + tables.context_len_markdown(ctx, arch)
                             for arch in tables.ordered(ctx["arch"].unique(), ARCHITECTURES))
        _write_table(out, ctx, ctx_md, "context_len")
        sections.append("## Table 5: pretraining context length per architecture\n\n" + ctx_md)

    strategies = tables.ordered(df["strategy"].unique(), STRATEGIES)
    log(f"[analyze] LR-sensitivity figures: {len(strategies)} strategies × {df['task'].nunique()} tasks")
    lr_md, sens = _lr_section(out, df, strategies, references)
    sections.append(lr_md)

    scaling_md = _scaling_section(out, pretrain, df, log)
    if scaling_md:
        sections.append(scaling_md)

    log(f"[analyze] fANOVA importance over {int(df['ok'].sum())} runs (+ per task)")
    sections.append(_importance_section(out, df))
    sections.append(_excluded_section(excluded))

    out.answer = _answer(sig, versus, cells, sens, baselines, alpha, k)
    sections.insert(1, "## Answer\n\n" + out.answer)
    out.metrics = {"n_runs": out.n_runs, "n_excluded": out.n_excluded,
                   "n_significant_arch_pairs": sig["n_sig_arch"], "n_arch_pairs": sig["n_arch"],
                   "n_one_class_cells": int(cells["flag"].sum()) if not cells.empty else 0}
    out.summary = "\n\n".join(sections) + "\n"
    path = out.out_dir / "summary.md"
    path.write_text(out.summary)
    out.files.append(path)
    return out


def analyze_scaling(pretrain: pd.DataFrame, out_dir: str | Path, sweep_name: str,
                    log: Callable[[str], None] = print) -> AnalysisOutputs:
    """A pretraining-only sweep (the scaling studies): the scaling figures and their tables, summary.md."""
    out = AnalysisOutputs(Path(out_dir))
    out.out_dir.mkdir(parents=True, exist_ok=True)
    frame = scaling.pretrain_frame(pretrain)
    out.n_runs, out.n_excluded = len(frame), int((~frame["ok"]).sum()) if len(frame) else 0
    out.excluded_by_outcome = frame.loc[~frame["ok"], "status"].value_counts().to_dict() if len(frame) else {}
    md = _scaling_section(out, pretrain, pd.DataFrame(), log)
    sel = scaling.select_pretraining(frame)
    best = ", ".join(f"{r.arch} {scaling._size_label(r.n_params)} @ {int(r.context_len)}: {r.ppl:.3f}"
                     for r in sel.sort_values("ppl").head(3).itertuples()) if not sel.empty else ""
    out.answer = (f"{len(sel)} pretraining groups (architecture × context length × model size), each at its "
                  f"validation-selected learning rate" + (f"; lowest perplexity: {best}" if best else "") + ".")
    out.main_table = "\n\n".join(f.markdown for f, _, _ in getattr(out, "_scaling", []))
    out.metrics = {"n_runs": out.n_runs, "n_excluded": out.n_excluded, "n_groups": len(sel)}
    out.summary = "\n\n".join([f"# Analysis of sweep `{sweep_name}`", "## Answer\n\n" + out.answer,
                                 _count_line(out), md or "No finished pretraining run varies a scaling axis."]) + "\n"
    path = out.out_dir / "summary.md"
    path.write_text(out.summary)
    out.files.append(path)
    return out


def _scaling_section(out: AnalysisOutputs, pretrain: pd.DataFrame | None, finetune: pd.DataFrame,
                     log: Callable[[str], None]) -> str:
    """Figure 5 left/right, Figure 6, the seed study's Figure 2 (those whose axis varies): PNG + CSV."""
    made = scaling.write_figures(pretrain if pretrain is not None else pd.DataFrame(), finetune, out.out_dir)
    if made:
        log(f"[analyze] scaling figures: {', '.join(f.name for f, _, _ in made)}")
    out._scaling = made  # type: ignore[attr-defined]
    for _, png, csv in made:
        out.files += [png, csv]
    return scaling.scaling_markdown(made)


def log_to_mlflow(tracking_uri: str, experiment_id: str, sweep_name: str, outputs: AnalysisOutputs) -> str:
    """Log `outputs.out_dir` as artifacts of the sweep's `analysis` run (created once); its run id."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    found = client.search_runs([experiment_id], filter_string="tags.`gdna.role` = 'analysis'",
                               max_results=1, order_by=["attributes.start_time DESC"])
    if found:
        run_id = found[0].info.run_id
    else:
        run_id = client.create_run(experiment_id, run_name="analysis", tags={
            "gdna.role": "analysis", "gdna.sweep": sweep_name}).info.run_id
    client.log_artifacts(run_id, str(outputs.out_dir))
    client.set_tag(run_id, NOTE_TAG, fit_note(outputs.summary))
    metrics = outputs.metrics or {"n_runs": outputs.n_runs, "n_excluded": outputs.n_excluded}
    for key, value in metrics.items():
        client.log_metric(run_id, key, float(value))
    client.set_terminated(run_id, "FINISHED")
    if outputs.answer:
        from gdna.tracking import describe_with_analysis

        describe_with_analysis(client, experiment_id, sweep_name,
                               f"{outputs.answer}\n\nFull analysis: the `analysis` run ({run_id}), summary.md.")
    return run_id


# ---------------------------------------------------------------------------------------------


def _count_line(out: AnalysisOutputs) -> str:
    detail = ", ".join(f"{n} {k}" for k, n in out.excluded_by_outcome.items())
    status = ", ".join(f"{n} {k}" for k, n in out.status_counts.items())
    return (f"{out.n_runs} trial runs: {out.n_runs - out.n_excluded} used, "
            f"{out.n_excluded} excluded from means" + (f" ({detail})" if detail else "")
            + (f". By status: {status}" if status else "")
            + (" (stopped: ended early by the scheduler, tested from its best-validation checkpoint; used like "
               "finished runs)" if out.status_counts.get("stopped") else "") + ".")


def _budget_section(df: pd.DataFrame) -> str:
    """Per tuning cell (task × architecture × strategy [× context]): the hyperparameter points it tried
    (distinct lr × batch size), its runs by status, and whether every cell had the same budget."""
    head = "## Search budget per cell"
    if df.empty:
        return head + "\n\nNo runs."
    keys = [k for k in ("task", "arch", "strategy", "context_len") if k in df]
    rows, points = [], []
    for cell, g in df.groupby(keys, dropna=False, sort=True):
        cell = cell if isinstance(cell, tuple) else (cell,)
        n_points = len(g[["lr", "batch_size"]].drop_duplicates())
        points.append(n_points)
        st = g["status"].value_counts()
        rows.append([*("" if pd.isna(v) else v for v in cell), n_points, len(g),
                     ", ".join(f"{n} {k}" for k, n in sorted(st.items()))])
    same = len(set(points)) == 1
    note = (f"Every cell tried {points[0]} points." if same else
            f"⚠ Cells tried different numbers of points ({min(points)}–{max(points)}): their tables rest on unequal "
            "tuning budgets (an unfinished sweep? `gdna resume` it).")
    return (head + "\n\n" + note + "\n\n"
            + tables.markdown_table([*keys, "points", "runs", "status"], rows, n_text=len(keys)))


def _excluded_section(excluded: pd.DataFrame) -> str:
    head = "## Excluded runs (diverged, errored, or without test_acc)"
    if excluded.empty:
        return head + "\n\nNone."
    counts = (excluded.groupby(["task", "arch", "strategy", "outcome"]).size()
              .rename("runs").reset_index())
    rows = [[r.task, r.arch, r.strategy, r.outcome, r.runs] for r in counts.itertuples()]
    return (head + f"\n\n{len(excluded)} runs, listed in `excluded_runs.csv`.\n\n"
            + tables.markdown_table(["task", "arch", "strategy", "outcome", "runs"], rows, n_text=4))


def _baseline_section(out: AnalysisOutputs, df: pd.DataFrame, baselines: bl.BaselineResult | None,
                      alpha: float) -> tuple[str, pd.DataFrame]:
    """Baselines per task, and the validation-best model of each task against them (paired)."""
    head = "## Reference baselines (same splits and seeds as the trials)"
    if baselines is None:
        return head + "\n\nNot computed (--no-baselines).", pd.DataFrame()
    problems = "".join(f"\n- {task}: no baseline: {why}" for task, why in baselines.problems.items())
    if baselines.frame.empty:
        return head + "\n\nNone could be computed." + problems, pd.DataFrame()
    k = baselines.k
    summary = bl.summarize(baselines.frame)
    rows = [[r.task, bl.method_label(r.method, k), tables.format_cell(r.test_mean, r.test_spread),
             f"{100 * r.test_balanced_mean:.1f}", r.n] for r in summary.itertuples()]
    md = tables.markdown_table(["task", "baseline", "test acc (%)", "balanced acc (%)", "splits"], rows, n_text=2)
    _write_table(out, summary, md, "baselines")
    _write_csv(out, baselines.frame, "tables/baselines_per_split.csv")
    versus = _models_vs_baselines(df, baselines.frame, alpha, k)
    vs_md = _versus_markdown(versus)
    _write_table(out, versus, vs_md, "models_vs_baselines")
    text = (f"{head}\n\nMajority class: the train split's most frequent class. {k}-mer LR: k-mer frequency "
            f"profile, standardised, L2 logistic regression with C chosen on the validation split "
            f"(scikit-learn). Fitted per seed/fold on the sequences the trials saw.{problems}\n\n{md}\n\n"
            f"### The validation-best model of each task against the baselines\n\n"
            f"Best model = the (architecture, strategy) cell with the best mean validation accuracy; "
            f"paired with the baseline by seed/fold (paired t-test, α={alpha}).\n\n{vs_md}")
    return text, versus


def _models_vs_baselines(df: pd.DataFrame, base: pd.DataFrame, alpha: float, k: int) -> pd.DataFrame:
    scores = significance.unit_scores(df)
    selection = tables.select_on_validation(df, significance.CELL_KEYS).dropna(subset=["test_mean"])
    rows = []
    for task, cells in selection.groupby("task"):
        best = cells.loc[cells["val_mean"].idxmax()]
        model = scores[(scores["task"] == task) & (scores["arch"] == best["arch"])
                       & (scores["strategy"] == best["strategy"])].set_index(list(tables.UNIT_KEYS))["test_acc"]
        for method in bl.METHODS:
            ref = base[(base["task"] == task) & (base["method"] == method)]
            if ref.empty:
                continue
            ref = ref.set_index(list(tables.UNIT_KEYS))["test_acc"]
            both = model.index.intersection(ref.index)
            test = significance.paired_test(model.loc[both], ref.loc[both], alpha)
            row = {"task": task, "arch": best["arch"], "strategy": best["strategy"], "baseline": bl.method_label(method, k),
                   "model_mean": float(model.mean()), "baseline_mean": float(ref.mean()), **test}
            row["p_holm"] = test["p"]
            row["a"], row["b"] = "model", "baseline"
            row["verdict"], row["warning"] = significance._verdict(row, alpha)
            row["verdict"] = row["verdict"].replace("model > baseline", "model better").replace(
                "baseline > model", "baseline better")
            rows.append(row)
    return pd.DataFrame(rows)


def _versus_markdown(versus: pd.DataFrame) -> str:
    if versus.empty:
        return "_no task with both a model and a baseline_"
    rows = []
    for r in versus.itertuples():
        ci = "–" if not np.isfinite(r.ci_low) else f"[{100 * r.ci_low:+.1f}, {100 * r.ci_high:+.1f}]"
        rows.append([r.task, f"{r.arch} / {r.strategy}", r.baseline, f"{100 * r.model_mean:.1f}",
                     f"{100 * r.baseline_mean:.1f}", f"{100 * r.mean_diff:+.1f}" if np.isfinite(r.mean_diff) else "–",
                     ci, r.n_pairs, r.verdict, r.warning])
    return tables.markdown_table(["task", "best model", "baseline", "model (%)", "baseline (%)", "Δ (pp)", "CI",
                                  "pairs", "verdict", "note"], rows, n_text=3)


def _significance_section(out: AnalysisOutputs, df: pd.DataFrame, alpha: float) -> tuple[str, dict]:
    scores = significance.unit_scores(df)
    arch = significance.pairwise(scores, "arch", ["task", "strategy"], alpha)
    strat = significance.pairwise(scores, "strategy", ["task", "arch"], alpha)
    arch_md = significance.pairwise_markdown(arch, ["task", "strategy"])
    strat_md = significance.pairwise_markdown(strat, ["task", "arch"])
    _write_table(out, arch, arch_md, "significance_arch")
    _write_table(out, strat, strat_md, "significance_strategy")
    tests = significance.rank_tests(scores, alpha) if not scores.empty else []
    rank_rows, rank_md = [], []
    for t in tests:
        part = significance.rank_markdown(t)
        name = "cd_" + "".join(c if c.isalnum() else "_" for c in t.family).strip("_") + ".png"
        if significance.plot_critical_difference(t, out.out_dir / "figures" / name):
            out.files.append(out.out_dir / "figures" / name)
            part += f"\n\n![critical difference: {t.family}](figures/{name})"
        rank_md.append(part)
        for r in (t.ranks.itertuples() if t.done else []):
            rank_rows.append({"family": t.family, "level": r.level, "mean_rank": r.mean_rank, "mean_acc": r.mean_acc,
                              "n_blocks": t.n_blocks, "pvalue": t.pvalue, "cd": t.cd, "omnibus": t.omnibus})
        if not t.done:
            rank_rows.append({"family": t.family, "level": "", "message": t.message, "n_blocks": t.n_blocks})
    _write_table(out, pd.DataFrame(rank_rows), "\n\n".join(rank_md), "rank_tests")
    text = (f"## Is the difference real? (α = {alpha})\n\n"
            "Within a task, two architectures (strategies) are compared on the seeds/folds they share "
            "(the same seed/fold = the same train/val split): paired t-test on the differences, its "
            f"{100 * (1 - alpha):.0f}% interval, p Holm-adjusted over the pairs of the cell. With fewer than "
            f"{significance.MIN_PAIRS} pairs there is no test; with fewer than {significance.FEW_PAIRS} only large "
            "differences can be detected. Across tasks: Friedman test on the per-task ranks with the Nemenyi "
            f"post-hoc test (autorank), at least {significance.MIN_BLOCKS} tasks.\n\n"
            f"### Architectures within each task × strategy\n\n{arch_md}\n\n"
            f"### Strategies within each task × architecture\n\n{strat_md}\n\n"
            "### Across tasks (rank tests)\n\n" + "\n\n".join(rank_md))
    sig = {"arch": arch, "strategy": strat, "tests": tests, "n_arch": int((arch["verdict"] != significance.TOO_FEW).sum()),
           "n_sig_arch": int(_significant(arch).sum())}
    return text, sig


def _significant(table: pd.DataFrame) -> pd.Series:
    if table.empty:
        return pd.Series(dtype=bool)
    return ~table["verdict"].isin([significance.NO_DIFFERENCE, significance.TOO_FEW])


def _lr_section(out: AnalysisOutputs, df: pd.DataFrame, strategies: list[str],
                references: dict | None = None) -> tuple[str, pd.DataFrame]:
    parts = ["## Learning-rate sensitivity",
             "Per panel (task): mean test accuracy over seeds against learning rate, band = min–max "
             "over seeds; batch size (and context length) chosen on validation at each learning rate. "
             "Hollow markers: some runs of that point were excluded. Dashed: chance (1/n_classes); dotted "
             "and dash-dot: the baselines. Gap table: test accuracy (pp) at the best minus at the worst "
             "learning rate of the mean curve. Sensitivity table (per architecture, per seed/fold then "
             "mean ± spread): the best–worst gap, and the share of the LR grid within 1 point of that "
             "seed's best (a diverged LR counts as not within); the last row averages over tasks."]
    gaps, sens = [], []
    for strategy in strategies:
        curves = plots.lr_curves(df, strategy)
        if curves.empty:
            continue
        name = f"lr_sensitivity_{strategy}.png"
        fig = plots.plot_lr_sensitivity(curves, title=f"Learning-rate sensitivity — {strategy}", references=references)
        plots.save_figure(fig, out.out_dir / "figures" / name)
        out.files.append(out.out_dir / "figures" / name)
        gap = plots.lr_gap_table(curves)
        gaps.append(gap.assign(strategy=strategy))
        table = sensitivity.sensitivity_table(df, strategy)
        if not table.empty:
            sens.append(table)
        parts.append(f"### {strategy}\n\n![LR sensitivity {strategy}](figures/{name})\n\n"
                     + plots.lr_gap_markdown(gap) + "\n\n" + sensitivity.sensitivity_markdown(table))
    if gaps:
        all_gaps = pd.concat(gaps, ignore_index=True)
        _write_table(out, all_gaps[["strategy"] + [c for c in all_gaps if c != "strategy"]],
                     "\n\n".join(parts[2:]), "lr_gap")
    all_sens = pd.concat(sens, ignore_index=True) if sens else pd.DataFrame()
    if not all_sens.empty:
        md = "\n\n".join(f"### {s}\n\n" + sensitivity.sensitivity_markdown(t) for s, t in all_sens.groupby("strategy"))
        _write_table(out, all_sens, md, "lr_sensitivity")
    return "\n\n".join(parts), all_sens


def _importance_section(out: AnalysisOutputs, df: pd.DataFrame) -> str:
    head = "## Hyperparameter importance (fANOVA, test accuracy)"
    overall = imp.param_importances(df)
    columns = {"all runs": overall}
    tasks = sorted(df["task"].dropna().unique())
    if len(tasks) > 1:
        columns.update({task: imp.param_importances(df[df["task"] == task], scope=task) for task in tasks})
    for sub in overall.subsets:
        columns[sub.scope] = sub
    excluded = "\n".join(f"- excluded ({name}): {r.excluded_text()}" for name, r in columns.items() if r.excluded)
    note = ("Only parameters that vary independently in the runs analysed enter fANOVA; a parameter "
            "that is constant, defined for some strategies only, or fixed by the others is left out "
            "(named below), a strategy-specific one is analysed within the runs that have it.")
    if not any(r.importances for r in columns.values()):
        return f"{head}\n\n{note}\n\n{overall.message}" + (f"\n\n{excluded}" if excluded else "")
    params = list(dict.fromkeys(p for r in columns.values() for p in r.importances))
    frame = pd.DataFrame({name: [r.importances.get(p, float("nan")) for p in params]
                          for name, r in columns.items()}, index=pd.Index(params, name="param"))
    rows = [[p] + [("–" if pd.isna(v) else f"{v:.3f}") for v in frame.loc[p]] for p in params]
    md = tables.markdown_table(["param"] + list(columns), rows)
    notes = [f"- {name}: {r.message}" for name, r in columns.items()]
    _write_table(out, frame.reset_index(), md + ("\n\n" + excluded if excluded else ""), "importance")
    text = f"{head}\n\n{note}\n\n{md}\n\n" + "\n".join(notes) + (f"\n{excluded}" if excluded else "")
    if overall.importances:
        fig = plots.plot_importance(overall.importances)
        plots.save_figure(fig, out.out_dir / "figures" / "importance.png")
        out.files.append(out.out_dir / "figures" / "importance.png")
        text += "\n\n![importance](figures/importance.png)"
    return text


def _answer(sig: dict, versus: pd.DataFrame, cells: pd.DataFrame, sens: pd.DataFrame,
            baselines: bl.BaselineResult | None, alpha: float, k: int) -> str:
    """The one paragraph the tables below support."""
    out = []
    arch, strat = sig["arch"], sig["strategy"]
    for name, table in (("architecture", arch), ("strategy", strat)):
        if table.empty:
            continue
        tested = table[table["verdict"] != significance.TOO_FEW]
        real = table[_significant(table)]
        few = int((table["verdict"] == significance.TOO_FEW).sum())
        if tested.empty:
            out.append(f"No {name} comparison can be made: every one of the {len(table)} pairs rests on fewer than "
                       f"{significance.MIN_PAIRS} paired seeds/folds.")
            continue
        listed = "; ".join(f"{r.verdict} on {r.task} / {r[1]} ({100 * abs(r.mean_diff):.1f} pp)"
                           for r in real.head(4).itertuples(index=False)) if not real.empty else ""
        more = f" and {len(real) - 4} more" if len(real) > 4 else ""
        out.append(
            f"Of {len(tested)} {name} pairs compared within a task over paired seeds/folds, "
            + (f"{len(real)} differ{'s' if len(real) == 1 else ''} beyond seed noise at α={alpha} ({listed}{more}) "
               f"and {len(tested) - len(real)} show no significant difference"
               if not real.empty else f"none differs beyond seed noise at α={alpha}")
            + (f"; {few} more rest on too few pairs to say anything" if few else "")
            + (f" (several rest on fewer than {significance.FEW_PAIRS} pairs: only large differences are detectable)"
               if (tested["n_pairs"] < significance.FEW_PAIRS).any() else "") + ".")
    done = [t for t in sig["tests"] if t.done]
    if done:
        found = [f"{p.verdict} ({t.family})" for t in done for p in t.pairs.itertuples()
                 if p.verdict != significance.NO_DIFFERENCE]
        out.append(f"Across tasks, {len(done)} rank test(s) were made: "
                   + ("; ".join(found) if found else "no significant difference in ranks") + ".")
    elif sig["tests"]:
        out.append(f"No rank test across tasks: fewer than {significance.MIN_BLOCKS} tasks.")
    if not versus.empty:
        label = bl.method_label("kmer_lr", k)
        lr_rows = versus[versus["baseline"] == label]
        maj = versus[versus["baseline"] == bl.method_label("majority", k)]
        parts = []
        if not lr_rows.empty:
            better = int((lr_rows["verdict"] == "model better").sum())
            worse = int((lr_rows["verdict"] == "baseline better").sum())
            few = int((lr_rows["verdict"] == significance.TOO_FEW).sum())
            parts.append(f"the validation-best model beats the {label} beyond seed noise on {better} of "
                         f"{len(lr_rows)} task(s)" + (f" and loses to it on {worse}" if worse else "")
                         + (f" ({few} with too few paired seeds to say)" if few else "")
                         + " (" + "; ".join(f"{r.task}: {100 * r.model_mean:.1f}% vs {100 * r.baseline_mean:.1f}%"
                                            for r in lr_rows.head(4).itertuples()) + ")")
        if not maj.empty:
            parts.append(f"it is above the majority-class rate beyond seed noise on "
                         f"{int((maj['verdict'] == 'model better').sum())} of {len(maj)}")
        out.append("Against the baselines on the same splits, " + "; ".join(parts) + ".")
    elif baselines is not None and baselines.problems:
        out.append("No baseline could be computed (" + "; ".join(f"{t}: {w}" for t, w in baselines.problems.items()) + ").")
    if not cells.empty and cells["flag"].any():
        flagged = cells[cells["flag"]]
        out.append(f"{len(flagged)} of {len(cells)} cells have runs whose model predicts a single class (their accuracy "
                   "is a class rate, not learning): " + ", ".join(f"{r.arch}/{r.strategy} on {r.task}"
                                                                  for r in flagged.head(6).itertuples()) + ".")
    if not sens.empty:
        avg = sens[sens["task"] == sensitivity.ALL_TASKS]
        if not avg.empty:
            most = avg.sort_values("gap_mean", ascending=False).iloc[0]
            out.append("Learning-rate sensitivity (best–worst gap, mean over tasks): " + ", ".join(
                f"{r.arch} {r.strategy} {100 * r.gap_mean:.1f} ± {100 * r.gap_spread:.1f} pp" for r in avg.itertuples())
                       + f"; the largest is {most['arch']} ({most['strategy']}).")
    return " ".join(out) if out else "Nothing to compare: no finished run."


def _write_csv(out: AnalysisOutputs, frame: pd.DataFrame, rel: str) -> None:
    path = out.out_dir / rel
    frame.to_csv(path, index=False)
    out.files.append(path)


def _write_table(out: AnalysisOutputs, frame: pd.DataFrame, markdown: str, name: str) -> None:
    _write_csv(out, frame, f"tables/{name}.csv")
    path = out.out_dir / "tables" / f"{name}.md"
    path.write_text(markdown + "\n")
    out.files.append(path)
