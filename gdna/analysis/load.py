"""Read a sweep's trial runs from MLflow into one tidy DataFrame (DESIGN.md, "MLflow schema").

`context_len` is the PRETRAINING context length: a `pretrain.context_len` / `pretrain_context_len`
param, else the data.context_len of the pretraining run that exported the run's init_checkpoint,
else the run's own data.context_len.

Columns: `run_id`, `run_name`, `stage`, `arch`, `strategy`, `task`, `seed`, `fold`, `status`
(gdna.status: finished, diverged, stopped (early, by the scheduler; its test metrics are its best
checkpoint's, so it is used like a finished run), errored, running), `lr`, `batch_size`, `context_len`, `n_classes`, `test_acc`, `best_val_acc`,
`val_score` (best_val_acc, else the last val_acc), `test_balanced_acc`, `test_mcc`,
`n_pred_classes` (classes the model predicted on test; NaN when no confusion matrix was logged), `outcome` ("ok", "diverged", "errored",
"no test_acc"), `ok` (bool), plus every raw `params.*`, `metrics.*`, `tags.*` column.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from gdna.errors import GdnaError

TRIAL_FILTER = "tags.`gdna.role` = 'trial'"
FAILED_STATUSES = ("diverged", "errored")
DEFAULT_STORAGE = "runs"


def default_tracking_uri(sweep_name: str, storage: str | Path = DEFAULT_STORAGE) -> str:
    """The sweep's default store, by the same rule the sweep uses (gdna.tracking.sweep_store_uri)."""
    from gdna.tracking import sweep_store_uri

    return sweep_store_uri(sweep_db_path(sweep_name, storage).parent)


def sweep_db_path(sweep_name: str, storage: str | Path = DEFAULT_STORAGE) -> Path:
    return (Path(storage).expanduser() / "sweeps" / sweep_name / "mlflow.db").resolve()


def find_experiment(tracking_uri: str, name_or_id: str):
    """The MLflow experiment named `name_or_id`, else with that id; GdnaError naming both if neither."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(name_or_id)
    if experiment is None and str(name_or_id).isdigit():
        try:
            experiment = client.get_experiment(str(name_or_id))
        except MlflowException:
            experiment = None
    if experiment is None:
        names = [e.name for e in client.search_experiments()]
        raise GdnaError(f"experiment {name_or_id!r} not found in {tracking_uri} "
                        f"(experiments there: {', '.join(names) or 'none'})")
    return experiment


def load_runs(tracking_uri: str, experiment: str, stage: str | None = "finetune") -> pd.DataFrame:
    """All trial child runs of sweep `experiment` (name or id), one row each, columns as above.

    Searches with the trial-role filter (tags.gdna.role = 'trial'); `stage` keeps only runs tagged
    gdna.stage=<stage> (None: every stage). Metrics are each run's latest (final) values.
    """
    exp = find_experiment(tracking_uri, experiment)
    query = TRIAL_FILTER + (f" and tags.`gdna.stage` = '{stage}'" if stage else "")
    raw = search_runs_frame(tracking_uri, exp.experiment_id, query)
    if "params.init_checkpoint" in raw.columns:
        pretrain = search_runs_frame(tracking_uri, exp.experiment_id,
                                     TRIAL_FILTER + " and tags.`gdna.stage` = 'pretrain'")
        raw = attach_pretrain_context(raw, pretrain)
    return normalize_runs(raw)


def attach_pretrain_context(finetune: pd.DataFrame, pretrain: pd.DataFrame) -> pd.DataFrame:
    """Add `params.pretrain_context_len` to fine-tuning runs: the data.context_len of the pretraining
    run whose export_dir holds the run's init_checkpoint (<storage>/pretrain/<key>/backbone.pt)."""
    needed = {"params.export_dir", "params.data.context_len"}
    if pretrain.empty or not needed <= set(pretrain.columns) or "params.pretrain_context_len" in finetune:
        return finetune
    context_of = {str(Path(d)): c for d, c in zip(pretrain["params.export_dir"], pretrain["params.data.context_len"])
                  if isinstance(d, str) and d}
    out = finetune.copy()
    out["params.pretrain_context_len"] = [
        context_of.get(str(Path(p).parent)) if isinstance(p, str) and p else None
        for p in out["params.init_checkpoint"]]
    return out


def search_runs_frame(tracking_uri: str, experiment_id: str, filter_string: str) -> pd.DataFrame:
    """Like mlflow.search_runs(output_format="pandas") (same column names), for an explicit URI."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    rows, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string, max_results=1000, page_token=token)
        for run in page:
            rows.append({"run_id": run.info.run_id, "experiment_id": run.info.experiment_id,
                         "status": run.info.status,
                         **{f"metrics.{k}": v for k, v in run.data.metrics.items()},
                         **{f"params.{k}": v for k, v in run.data.params.items()},
                         **{f"tags.{k}": v for k, v in run.data.tags.items()}})
        token = page.token
        if not token:
            return pd.DataFrame(rows)


def normalize_runs(raw: pd.DataFrame) -> pd.DataFrame:
    """mlflow.search_runs output → the tidy columns of this module (numeric lr/batch/seed...)."""
    df = raw.copy().reset_index(drop=True)

    def col(*names, default=np.nan):
        """Row by row, the first of the columns `names` that has a value (else `default`)."""
        out = pd.Series([None] * len(df), index=df.index, dtype=object)
        for name in names:
            if name in df.columns:
                out = out.where(out.notna(), df[name].astype(object))
        return out.where(out.notna(), default)

    out = pd.DataFrame(index=df.index)
    out["run_id"] = col("run_id")
    out["run_name"] = col("tags.mlflow.runName")
    out["stage"] = col("tags.gdna.stage")
    out["arch"] = col("tags.arch", "params.model.arch")
    out["strategy"] = col("tags.strategy", "params.strategy")
    out["task"] = col("tags.task", "params.data.task")
    out["seed"] = pd.to_numeric(col("tags.seed", "params.train.seed"), errors="coerce")
    out["fold"] = pd.to_numeric(col("tags.fold", "params.data.fold", default=0), errors="coerce").fillna(0)
    out["status"] = col("tags.gdna.status", default="finished").fillna("finished")
    out["lr"] = pd.to_numeric(col("params.train.lr"), errors="coerce")
    out["batch_size"] = pd.to_numeric(col("params.train.batch_size"), errors="coerce")
    out["context_len"] = pd.to_numeric(col("params.pretrain.context_len", "params.pretrain_context_len",
                                           "params.data.context_len"), errors="coerce")
    out["n_classes"] = pd.to_numeric(col("params.model.n_classes"), errors="coerce")
    out["test_acc"] = pd.to_numeric(col("metrics.test_acc"), errors="coerce")
    out["best_val_acc"] = pd.to_numeric(col("metrics.best_val_acc"), errors="coerce")
    out["val_score"] = out["best_val_acc"].fillna(pd.to_numeric(col("metrics.val_acc"), errors="coerce"))
    # from the test confusion matrix (trials since issue 18; NaN for older runs)
    out["test_balanced_acc"] = pd.to_numeric(col("metrics.test_balanced_acc"), errors="coerce")
    out["test_mcc"] = pd.to_numeric(col("metrics.test_mcc"), errors="coerce")
    out["n_pred_classes"] = pd.to_numeric(col("metrics.test_n_pred_classes"), errors="coerce")
    for name in ("seed", "fold", "batch_size", "context_len", "n_classes"):
        out[name] = out[name].astype("Int64")
    out["outcome"] = [outcome_of(s, t) for s, t in zip(out["status"], out["test_acc"])]
    out["ok"] = out["outcome"] == "ok"
    raw_cols = [c for c in df.columns if c.startswith(("params.", "metrics.", "tags."))]
    return pd.concat([out, df[raw_cols]], axis=1)


def outcome_of(status: str, test_acc: float) -> str:
    """"diverged"/"errored" from gdna.status, "no test_acc" when the metric is missing, else "ok"."""
    if status in FAILED_STATUSES:
        return status
    if test_acc is None or not np.isfinite(test_acc):
        return "no test_acc"
    return "ok"
