"""`gdna analyze <sweep-name | experiment id>`: tables, LR-sensitivity figures and importance."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gdna.analysis.load import DEFAULT_STORAGE, default_tracking_uri
from gdna.errors import GdnaError


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
    p.set_defaults(func=run_analyze)


def run_analyze(args: argparse.Namespace) -> int:
    tracking_uri = args.tracking_uri or default_tracking_uri(args.sweep, args.storage)
    _check_store_exists(tracking_uri, explicit=bool(args.tracking_uri))
    print(f"[analyze] reading trial runs of {args.sweep!r} from {tracking_uri}", flush=True)

    from gdna.analysis.load import find_experiment, load_runs
    from gdna.analysis.report import analyze_runs, log_to_mlflow

    experiment = find_experiment(tracking_uri, args.sweep)
    df = load_runs(tracking_uri, experiment.experiment_id, stage=args.stage)
    if df.empty:
        raise GdnaError(f"sweep {experiment.name!r}: no trial runs with gdna.stage={args.stage} in {tracking_uri}")
    print(f"[analyze] {len(df)} trial runs of experiment {experiment.name!r} (id {experiment.experiment_id})",
          flush=True)
    out_dir = Path(args.out) if args.out else Path(args.storage) / "sweeps" / experiment.name / "analysis"
    outputs = analyze_runs(df, out_dir, experiment.name, log=lambda m: print(m, flush=True))

    print()
    print(outputs.main_table)
    print()
    print(f"[analyze] {outputs.n_runs} runs, {outputs.n_excluded} excluded from means"
          + (f" ({', '.join(f'{n} {k}' for k, n in outputs.excluded_by_outcome.items())})"
             if outputs.n_excluded else ""))
    print(f"[analyze] wrote {len(outputs.files)} files to {out_dir} (summary: {out_dir / 'summary.md'})")
    if not args.no_mlflow_log:
        try:
            run_id = log_to_mlflow(tracking_uri, experiment.experiment_id, experiment.name, outputs)
            print(f"[analyze] logged to MLflow run 'analysis' ({run_id}) of experiment {experiment.experiment_id}")
        except Exception as e:  # the files are written; a tracking hiccup must not lose them
            print(f"[analyze] warning: could not log to MLflow: {type(e).__name__}: {e}", file=sys.stderr)
    return 0


def _check_store_exists(tracking_uri: str, explicit: bool) -> None:
    """A sqlite store that does not exist would be created empty by MLflow: refuse instead."""
    if not tracking_uri.startswith("sqlite:///"):
        return
    path = Path(tracking_uri[len("sqlite:///"):])
    if not path.exists():
        hint = "" if explicit else " (run the sweep first, or pass --storage / --tracking-uri)"
        raise GdnaError(f"no MLflow store at {path}{hint}")
