"""Write every analysis output of one sweep to a folder, and log that folder to MLflow.

Layout of `out_dir`:
  summary.md                         all tables, excluded runs, figure links (also the MLflow note)
  runs.csv                           the tidy run frame (one row per trial run)
  excluded_runs.csv                  diverged / errored / no-test_acc runs
  tables/per_architecture.csv|.md    Tables 2–4 (task × strategy per architecture)
  tables/human_regulatory.csv|.md    Table 1 (strategy × architecture over human_* tasks)
  tables/context_len.csv|.md         Table 5 (only when the sweep has several context lengths)
  tables/lr_gap.csv|.md              best–worst LR gap per strategy, task and architecture
  tables/importance.csv|.md          fANOVA importance, all runs and per task
  figures/lr_sensitivity_<strategy>.png, figures/importance.png
MLflow: the folder is logged as artifacts of ONE run per sweep named `analysis`, tagged
gdna.role=analysis (found again and overwritten on re-runs), not of the stage parent runs: those
belong to the sweep driver, the only writer of trial/stage runs (DESIGN.md).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd

from gdna.analysis import importance as imp
from gdna.analysis import plots, tables
from gdna.config import ARCHITECTURES, STRATEGIES

METHOD_NOTE = (
    "Cells are test accuracy (%) as mean ± spread over seeds/folds, where spread is the difference "
    "between the largest and the smallest deviation from the mean (= max − min). For every cell the "
    "(learning rate, batch size[, context length]) configuration is the one with the best mean "
    "validation accuracy (best_val_acc) over seeds; test accuracy is never used to choose. "
    "Diverged / errored / unfinished runs are excluded from means and counted below. "
    "**Bold**: best, <u>underlined</u>: second best in the row (Table 1: in the column).")
RUN_COLUMNS = ["run_id", "run_name", "task", "arch", "strategy", "lr", "batch_size", "context_len",
               "seed", "fold", "status", "outcome", "best_val_acc", "test_acc"]


@dataclass
class AnalysisOutputs:
    out_dir: Path
    files: list[Path] = field(default_factory=list)
    summary: str = ""  # the whole summary.md
    main_table: str = ""  # what the CLI prints
    n_runs: int = 0
    n_excluded: int = 0
    excluded_by_outcome: dict[str, int] = field(default_factory=dict)


def analyze_runs(df: pd.DataFrame, out_dir: str | Path, sweep_name: str,
                 log: Callable[[str], None] = print) -> AnalysisOutputs:
    """Tables, figures and importance of the tidy run frame `df`, written under `out_dir`."""
    out = AnalysisOutputs(Path(out_dir))
    (out.out_dir / "tables").mkdir(parents=True, exist_ok=True)
    (out.out_dir / "figures").mkdir(parents=True, exist_ok=True)
    excluded = df[~df["ok"]]
    out.n_runs, out.n_excluded = len(df), len(excluded)
    out.excluded_by_outcome = excluded["outcome"].value_counts().sort_index().to_dict()
    sections = [f"# Analysis of sweep `{sweep_name}`", _count_line(out), METHOD_NOTE]
    _write_csv(out, df[[c for c in RUN_COLUMNS if c in df]], "runs.csv")
    _write_csv(out, excluded[[c for c in RUN_COLUMNS if c in excluded]], "excluded_runs.csv")
    sections.append(_excluded_section(excluded))

    log("[analyze] tables: per architecture, human regulatory average, context length")
    per_arch = tables.architecture_tables(df)
    human = tables.human_regulatory_table(df)
    human_md = tables.human_regulatory_markdown(human)
    _write_table(out, human, human_md, "human_regulatory")
    sections.append("## Table 1: strategy × architecture, mean over human regulatory tasks\n\n" + human_md)
    arch_md = []
    for arch in tables.ordered(per_arch["arch"].unique(), ARCHITECTURES):
        arch_md.append(f"### {arch}\n\n" + tables.architecture_markdown(per_arch, arch))
    _write_table(out, per_arch, "\n\n".join(arch_md), "per_architecture")
    sections.append("## Tables 2–4: task × strategy per architecture\n\n" + "\n\n".join(arch_md))
    out.main_table = ("Table 1: strategy × architecture, mean over human_* tasks (test acc %, mean ± spread)\n\n"
                      + human_md) if not human.empty else "\n\n".join(arch_md)
    if tables.has_context_axis(df):
        ctx = tables.context_len_tables(df)
        ctx_md = "\n\n".join(f"### {arch}\n\n" + tables.context_len_markdown(ctx, arch)
                             for arch in tables.ordered(ctx["arch"].unique(), ARCHITECTURES))
        _write_table(out, ctx, ctx_md, "context_len")
        sections.append("## Table 5: pretraining context length per architecture\n\n" + ctx_md)

    strategies = tables.ordered(df["strategy"].unique(), STRATEGIES)
    log(f"[analyze] LR-sensitivity figures: {len(strategies)} strategies × {df['task'].nunique()} tasks")
    sections.append(_lr_section(out, df, strategies))

    log(f"[analyze] fANOVA importance over {int(df['ok'].sum())} runs (+ per task)")
    sections.append(_importance_section(out, df))

    out.summary = "\n\n".join(sections) + "\n"
    path = out.out_dir / "summary.md"
    path.write_text(out.summary)
    out.files.append(path)
    return out


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
    client.set_tag(run_id, "mlflow.note.content", outputs.summary[:60000])
    for key, value in (("n_runs", outputs.n_runs), ("n_excluded", outputs.n_excluded)):
        client.log_metric(run_id, key, value)
    client.set_terminated(run_id, "FINISHED")
    return run_id


# ---------------------------------------------------------------------------------------------


def _count_line(out: AnalysisOutputs) -> str:
    detail = ", ".join(f"{n} {k}" for k, n in out.excluded_by_outcome.items())
    return (f"{out.n_runs} trial runs: {out.n_runs - out.n_excluded} used, "
            f"{out.n_excluded} excluded from means" + (f" ({detail})" if detail else ""))


def _excluded_section(excluded: pd.DataFrame) -> str:
    head = "## Excluded runs (diverged, errored, or without test_acc)"
    if excluded.empty:
        return head + "\n\nNone."
    counts = (excluded.groupby(["task", "arch", "strategy", "outcome"]).size()
              .rename("runs").reset_index())
    rows = [[r.task, r.arch, r.strategy, r.outcome, r.runs] for r in counts.itertuples()]
    return (head + f"\n\n{len(excluded)} runs, listed in `excluded_runs.csv`.\n\n"
            + tables.markdown_table(["task", "arch", "strategy", "outcome", "runs"], rows, n_text=4))


def _lr_section(out: AnalysisOutputs, df: pd.DataFrame, strategies: list[str]) -> str:
    parts = ["## Learning-rate sensitivity",
             "Per panel (task): mean test accuracy over seeds against learning rate, band = min–max "
             "over seeds; batch size (and context length) chosen on validation at each learning rate. "
             "Hollow markers: some runs of that point were excluded. Dashed: chance (1/n_classes). "
             "Gap table: test accuracy (pp) at the best minus at the worst learning rate."]
    gaps = []
    for strategy in strategies:
        curves = plots.lr_curves(df, strategy)
        if curves.empty:
            continue
        name = f"lr_sensitivity_{strategy}.png"
        fig = plots.plot_lr_sensitivity(curves, title=f"Learning-rate sensitivity — {strategy}")
        plots.save_figure(fig, out.out_dir / "figures" / name)
        out.files.append(out.out_dir / "figures" / name)
        gap = plots.lr_gap_table(curves)
        gaps.append(gap.assign(strategy=strategy))
        parts.append(f"### {strategy}\n\n![LR sensitivity {strategy}](figures/{name})\n\n"
                     + plots.lr_gap_markdown(gap))
    if gaps:
        all_gaps = pd.concat(gaps, ignore_index=True)
        _write_table(out, all_gaps[["strategy"] + [c for c in all_gaps if c != "strategy"]],
                     "\n\n".join(parts[2:]), "lr_gap")
    return "\n\n".join(parts)


def _importance_section(out: AnalysisOutputs, df: pd.DataFrame) -> str:
    head = "## Hyperparameter importance (fANOVA, test accuracy)"
    overall = imp.param_importances(df)
    columns = {"all runs": overall}
    tasks = sorted(df["task"].dropna().unique())
    if len(tasks) > 1:
        columns.update({task: imp.param_importances(df[df["task"] == task]) for task in tasks})
    if not overall.importances:
        return f"{head}\n\n{overall.message}"
    params = list(overall.importances)
    frame = pd.DataFrame({name: [r.importances.get(p, float("nan")) for p in params]
                          for name, r in columns.items()}, index=pd.Index(params, name="param"))
    rows = [[p] + [("–" if pd.isna(v) else f"{v:.3f}") for v in frame.loc[p]] for p in params]
    md = tables.markdown_table(["param"] + list(columns), rows)
    notes = [f"- {name}: {r.message}" for name, r in columns.items()]
    _write_table(out, frame.reset_index(), md, "importance")
    fig = plots.plot_importance(overall.importances)
    plots.save_figure(fig, out.out_dir / "figures" / "importance.png")
    out.files.append(out.out_dir / "figures" / "importance.png")
    return f"{head}\n\n{md}\n\n" + "\n".join(notes) + "\n\n![importance](figures/importance.png)"


def _write_csv(out: AnalysisOutputs, frame: pd.DataFrame, rel: str) -> None:
    path = out.out_dir / rel
    frame.to_csv(path, index=False)
    out.files.append(path)


def _write_table(out: AnalysisOutputs, frame: pd.DataFrame, markdown: str, name: str) -> None:
    _write_csv(out, frame, f"tables/{name}.csv")
    path = out.out_dir / "tables" / f"{name}.md"
    path.write_text(markdown + "\n")
    out.files.append(path)
