"""`gdna analyze <sweep-name | experiment id>`: baselines, tables, significance, LR sensitivity, importance;
`gdna baseline <sweep>`: the baselines alone."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from gdna.analysis.baselines import DEFAULT_K
from gdna.analysis.load import DEFAULT_STORAGE, default_tracking_uri
from gdna.analysis.significance import ALPHA
from gdna.errors import ConfigError, DataError, GdnaError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "analyze", help="tables, LR-sensitivity figures and hyperparameter importance of a sweep",
        description="Read a sweep's fine-tuning trial runs from MLflow and write the paper's tables "
                    "(Markdown + CSV), LR-sensitivity figures and fANOVA importance to --out; the "
                    "folder is also logged as artifacts of the sweep's `analysis` MLflow run.")
    p.add_argument("sweep", help="sweep name (= MLflow experiment name) or MLflow experiment id")
    p.add_argument("--out", help="output folder (default: <storage>/sweeps/<name>/analysis)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: "
                   "sqlite:///<storage>/sweeps/<name>/mlflow.db)")
    p.add_argument("--storage", default=DEFAULT_STORAGE, help="sweep storage root (default: runs)")
    p.add_argument("--stage", default="finetune", help="gdna.stage of the trial runs (default: finetune)")
    p.add_argument("--no-mlflow-log", action="store_true", help="do not log the outputs to MLflow")
    p.add_argument("--alpha", type=float, default=ALPHA, help=f"significance level (default {ALPHA})")
    _baseline_args(p)
    p.add_argument("--no-baselines", action="store_true", help="skip the majority / k-mer LR baselines")
    p.set_defaults(func=run_analyze)

    p = subparsers.add_parser(
        "baseline", help="majority-class and k-mer logistic-regression baselines on a sweep's splits",
        description="Fit the majority-class and k-mer logistic-regression baselines on every train/val/test "
                    "split the sweep's fine-tuning trials used (same tasks, seeds, folds, subsampling); "
                    "print them, write <out>/tables/baselines*.csv and log one MLflow run per baseline "
                    "in the sweep's experiment (reused by later runs and by `gdna analyze`).")
    p.add_argument("sweep", help="sweep name (= MLflow experiment name) or MLflow experiment id")
    p.add_argument("--out", help="output folder (default: <storage>/sweeps/<name>/analysis)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///<storage>/sweeps/<name>/mlflow.db)")
    p.add_argument("--storage", default=DEFAULT_STORAGE, help="sweep storage root (default: runs)")
    p.add_argument("--stage", default="finetune", help="gdna.stage of the trial runs (default: finetune)")
    p.add_argument("--no-mlflow-log", action="store_true", help="do not log the baselines to MLflow")
    _baseline_args(p)
    p.set_defaults(func=run_baseline)


def _baseline_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--k", type=int, default=DEFAULT_K, help=f"k-mer length of the logistic regression (default {DEFAULT_K})")
    p.add_argument("--data-root", help="data root holding the tasks (default: each trial's data.data_root "
                                       "when it exists here, else GDNA_DATA_ROOT)")


def run_analyze(args: argparse.Namespace) -> int:
    tracking_uri = args.tracking_uri or default_tracking_uri(args.sweep, args.storage)
    _check_store_exists(tracking_uri, explicit=bool(args.tracking_uri))
    print(f"[analyze] reading trial runs of {args.sweep!r} from {tracking_uri}", flush=True)

    from gdna.analysis.load import find_experiment, load_runs
    from gdna.analysis.report import analyze_runs, log_to_mlflow

    experiment = find_experiment(tracking_uri, args.sweep)
    df = load_runs(tracking_uri, experiment.experiment_id, stage=args.stage)
    pretrain = _pretrain_runs(tracking_uri, experiment.experiment_id)
    out_dir = Path(args.out) if args.out else Path(args.storage) / "sweeps" / experiment.name / "analysis"
    if df.empty and not pretrain.empty:  # a pretraining-only study (sweeps/scaling_*.yaml): the scaling figures
        from gdna.analysis.report import analyze_scaling

        print(f"[analyze] {len(pretrain)} pretraining runs of experiment {experiment.name!r} (no fine-tuning runs)")
        outputs = analyze_scaling(pretrain, out_dir, experiment.name, log=lambda m: print(m, flush=True))
        print()
        print(outputs.main_table or outputs.answer)
        return _finish(args, tracking_uri, experiment, outputs, out_dir)
    if df.empty:
        raise GdnaError(f"sweep {experiment.name!r}: no trial runs with gdna.stage={args.stage} in {tracking_uri}")
    print(f"[analyze] {len(df)} trial runs of experiment {experiment.name!r} (id {experiment.experiment_id})",
          flush=True)
    if not 0.0 < args.alpha < 1.0:
        raise ConfigError(f"--alpha: must be in (0, 1), got {args.alpha}")
    baselines = None if args.no_baselines else _baselines(args, tracking_uri, experiment, df)
    outputs = analyze_runs(df, out_dir, experiment.name, log=lambda m: print(m, flush=True),
                           baselines=baselines, alpha=args.alpha, pretrain=pretrain)

    print()
    print(outputs.main_table)
    print()
    print(f"[analyze] {outputs.n_runs} runs, {outputs.n_excluded} excluded from means"
          + (f" ({', '.join(f'{n} {k}' for k, n in outputs.excluded_by_outcome.items())})"
             if outputs.n_excluded else ""))
    return _finish(args, tracking_uri, experiment, outputs, out_dir)


def _pretrain_runs(tracking_uri: str, experiment_id: str) -> pd.DataFrame:
    """The sweep's pretraining trial runs (for the scaling figures)."""
    from gdna.analysis.load import TRIAL_FILTER, search_runs_frame

    return search_runs_frame(tracking_uri, experiment_id, TRIAL_FILTER + " and tags.`gdna.stage` = 'pretrain'")


def _finish(args, tracking_uri: str, experiment, outputs, out_dir: Path) -> int:
    from gdna.analysis.report import log_to_mlflow

    print(f"[analyze] wrote {len(outputs.files)} files to {out_dir} (summary: {out_dir / 'summary.md'})")
    if not args.no_mlflow_log:
        try:
            run_id = log_to_mlflow(tracking_uri, experiment.experiment_id, experiment.name, outputs)
            print(f"[analyze] logged to MLflow run 'analysis' ({run_id}) of experiment {experiment.experiment_id}")
        except Exception as e:  # the files are written; a tracking hiccup must not lose them
            print(f"[analyze] warning: could not log to MLflow: {type(e).__name__}: {e}", file=sys.stderr)
    return 0


def _baselines(args, tracking_uri: str, experiment, df):
    """Baselines on the trials' splits: reused from the experiment's baseline runs when logged
    before, else fitted (and logged unless --no-mlflow-log)."""
    from gdna.analysis import baselines as bl

    units = bl.split_units(df, args.data_root)
    problem = bl.data_problem(units)
    if problem:
        print(f"[baseline] skipped: {problem}", file=sys.stderr, flush=True)
        return bl.BaselineResult(pd.DataFrame(), {"all tasks": problem}, args.k)
    known = bl.load_logged(tracking_uri, experiment.experiment_id)
    print(f"[baseline] {len(units)} split(s) of {len({u.task for u in units})} task(s); "
          f"majority class and {args.k}-mer LR", flush=True)
    result = bl.compute_baselines(units, k=args.k, known=known, log=lambda m: print(m, flush=True))
    if not args.no_mlflow_log:
        try:
            n = bl.log_baselines(tracking_uri, experiment.experiment_id, experiment.name, result)
            if n:
                print(f"[baseline] logged {n} baseline run(s) to MLflow (parent run 'baselines')", flush=True)
        except Exception as e:  # the numbers are computed; a tracking hiccup must not lose them
            print(f"[baseline] warning: could not log to MLflow: {type(e).__name__}: {e}", file=sys.stderr)
    return result


def run_baseline(args: argparse.Namespace) -> int:
    from gdna.analysis import baselines as bl
    from gdna.analysis.load import find_experiment, load_runs
    from gdna.analysis.tables import format_cell, markdown_table

    tracking_uri = args.tracking_uri or default_tracking_uri(args.sweep, args.storage)
    _check_store_exists(tracking_uri, explicit=bool(args.tracking_uri))
    experiment = find_experiment(tracking_uri, args.sweep)
    df = load_runs(tracking_uri, experiment.experiment_id, stage=args.stage)
    if df.empty:
        raise GdnaError(f"sweep {experiment.name!r}: no trial runs with gdna.stage={args.stage} in {tracking_uri}")
    units = bl.split_units(df, args.data_root)
    problem = bl.data_problem(units)
    if problem:
        raise DataError(problem)
    result = _baselines(args, tracking_uri, experiment, df)
    if result.frame.empty:
        raise DataError("no baseline could be computed: " + "; ".join(f"{t}: {w}" for t, w in result.problems.items()))
    out_dir = Path(args.out) if args.out else Path(args.storage) / "sweeps" / experiment.name / "analysis"
    (out_dir / "tables").mkdir(parents=True, exist_ok=True)
    summary = bl.summarize(result.frame)
    summary.to_csv(out_dir / "tables" / "baselines.csv", index=False)
    result.frame.to_csv(out_dir / "tables" / "baselines_per_split.csv", index=False)
    print()
    print(markdown_table(["task", "baseline", "test acc (%)", "balanced acc (%)", "splits"],
                         [[r.task, bl.method_label(r.method, args.k), format_cell(r.test_mean, r.test_spread),
                           f"{100 * r.test_balanced_mean:.1f}", r.n] for r in summary.itertuples()], n_text=2))
    print(f"\n[baseline] wrote {out_dir / 'tables' / 'baselines.csv'} and baselines_per_split.csv")
    return 0


def _check_store_exists(tracking_uri: str, explicit: bool) -> None:
    """A sqlite store that does not exist would be created empty by MLflow: refuse instead."""
    if not tracking_uri.startswith("sqlite:///"):
        return
    path = Path(tracking_uri[len("sqlite:///"):])
    if not path.exists():
        hint = "" if explicit else " (run the sweep first, or pass --storage / --tracking-uri)"
        raise GdnaError(f"no MLflow store at {path}{hint}")
