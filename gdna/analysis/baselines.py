"""Reference baselines per task and split: the majority class and a k-mer logistic regression.

Each baseline is fitted on exactly the examples a fine-tuning trial saw: for every distinct
(task, seed, fold, data settings) among the sweep's trial runs, the trial's `data.*` params and
`train.seed` are turned back into a `DataConfig` and `gdna.data`'s `classification_datasets` builds
the train / val / test datasets, the same call the training loop makes (same split, same
subsampling, sequences truncated to data.max_len as the models see them).

- `majority`: predicts the most frequent class of the train split (ties: the lowest class id).
- `kmer_lr`: each sequence → its k-mer frequency profile (scikit-learn `CountVectorizer` over
  characters, counts divided by the sequence's k-mer count), standardised (`StandardScaler`, no
  centring: sparse), then an L2 `LogisticRegression`; C is chosen from `C_GRID` on the VALIDATION
  split (never on test), as the trials' hyperparameters are.

Results are one row per (method, task, seed, fold) with val_acc, test_acc, test_balanced_acc,
test_mcc, the chosen C and per-class test frequencies (`test_frac_c{i}`: the accuracy a model that
predicts only class i gets, used to name degenerate models). `log_baselines` writes them as runs
of the sweep's experiment (a `baselines` parent, one child per row, found again by
`gdna.baseline_key` so a rerun reuses, never duplicates them).
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable, Iterable, Mapping

import numpy as np
import pandas as pd

from gdna.config import DataConfig, default_data_root
from gdna.errors import ConfigError, GdnaError

DEFAULT_K = 6
C_GRID = (0.01, 0.1, 1.0, 10.0)
METHODS = ("majority", "kmer_lr")
ROLE_PARENT, ROLE_CHILD = "baselines", "baseline"
# DataConfig fields that decide which examples a classification trial sees
SPLIT_FIELDS = ("task", "max_len", "context_len", "n_folds", "fold", "val_fraction", "max_train_examples",
                "max_eval_examples")
_ID_TO_BASE = np.frombuffer(b"??????ACGTN" + b"?" * 245, dtype=np.uint8)  # tokenizer ids A=6 .. N=10


def method_label(method: str, k: int = DEFAULT_K) -> str:
    """How a method is named in tables and figures."""
    return {"majority": "majority class", "kmer_lr": f"{k}-mer LR"}.get(method, method)


@dataclass(frozen=True)
class SplitUnit:
    """One train/val/test split a set of trials shares: the data settings and the seed."""

    data: DataConfig
    seed: int

    @property
    def task(self) -> str:
        return str(self.data.task)

    @property
    def fold(self) -> int:
        return int(self.data.fold)

    @property
    def key(self) -> str:
        d = self.data
        return (f"{d.task}|seed={self.seed}|fold={d.fold}/{d.n_folds}|val={d.val_fraction:g}|max_len={d.max_len}"
                f"|ctx={d.context_len}|train<={d.max_train_examples}|eval<={d.max_eval_examples}")


# ---------------------------------------------------------------------------------------------
# Which splits the sweep's trials used


def split_units(runs: pd.DataFrame, data_root: str | None = None) -> list[SplitUnit]:
    """The distinct splits of `runs` (the frame of `load.load_runs`: needs its `params.data.*` and
    seed columns). `data_root`: an explicit data root; else each run's data.data_root when it
    exists here, else GDNA_DATA_ROOT / the default."""
    units: dict[str, SplitUnit] = {}
    for _, row in runs.iterrows():
        if pd.isna(row.get("task")) or pd.isna(row.get("seed")):
            continue
        unit = SplitUnit(data_config_from_params(row, data_root, task=str(row["task"]),
                                                 fold=int(row.get("fold", 0) or 0)), int(row["seed"]))
        units.setdefault(unit.key, unit)
    return sorted(units.values(), key=lambda u: (u.task, u.seed, u.fold, u.key))


def data_config_from_params(row: Mapping, data_root: str | None = None, **override) -> DataConfig:
    """A DataConfig from a run's `params.data.<field>` strings (MLflow params are text: "" / "None"
    is None); `override` wins; fields that do not change the split keep their defaults."""
    kwargs = {}
    types = {f.name: f.type for f in fields(DataConfig)}
    for name in SPLIT_FIELDS:
        raw = row.get(f"params.data.{name}")
        if raw is None or (isinstance(raw, float) and math.isnan(raw)):
            continue
        kwargs[name] = _parse(str(raw), types[name], f"params.data.{name}")
    kwargs.update(override)
    kwargs["data_root"] = resolve_data_root(data_root, row.get("params.data.data_root"))
    return DataConfig(**kwargs)


def resolve_data_root(explicit: str | None, from_run: object) -> str:
    if explicit:
        return str(explicit)
    if isinstance(from_run, str) and from_run and Path(from_run).is_dir():
        return from_run
    return default_data_root()


def _parse(text: str, annotation: str, where: str):
    if text in ("", "None"):
        return None
    kind = str(annotation)
    try:
        if kind.startswith("int"):
            return int(float(text))
        if kind.startswith("float"):
            return float(text)
    except ValueError:
        raise ConfigError(f"{where}: cannot read {text!r} as a number") from None
    return text


# ---------------------------------------------------------------------------------------------
# Fitting


def split_data(unit: SplitUnit):
    """(train, val, test, n_classes), each part (sequences as str, labels int64), from the same
    `classification_datasets` call a fine-tuning trial makes."""
    from gdna.data.tasks import classification_datasets  # the task's kind builds them (gdna.registry)

    train_ds, val_ds, test_ds, n_classes = classification_datasets(unit.data, unit.seed)
    return (*(_texts_and_labels(ds) for ds in (train_ds, val_ds, test_ds)), int(n_classes))


def _texts_and_labels(ds) -> tuple[list[str], np.ndarray]:
    texts, labels = [], np.empty(len(ds), dtype=np.int64)
    for i in range(len(ds)):
        ids, mask, label = ds[i]
        ids = np.asarray(ids)[np.asarray(mask, dtype=bool)] if mask is not None else np.asarray(ids)
        texts.append(_ID_TO_BASE[ids.astype(np.uint8)].tobytes().decode("ascii"))
        labels[i] = int(label)
    return texts, labels


def kmer_pipeline(k: int, C: float):
    """k-mer frequency profile → standardised → L2 logistic regression (scikit-learn)."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    return make_pipeline(
        CountVectorizer(analyzer="char", ngram_range=(k, k), lowercase=False, dtype=np.float64),
        FunctionTransformer(_row_frequencies, accept_sparse=True),
        StandardScaler(with_mean=False),
        LogisticRegression(C=C, max_iter=2000),
    )


def _row_frequencies(X):
    """Counts → frequencies per sequence (rows sum to 1; empty rows stay 0)."""
    import scipy.sparse as sp

    totals = np.asarray(X.sum(axis=1)).ravel()
    return sp.diags(1.0 / np.where(totals > 0, totals, 1.0)) @ X


def fit_unit(unit: SplitUnit, k: int = DEFAULT_K, c_grid: Iterable[float] = C_GRID) -> list[dict]:
    """Both baselines on one split: one result dict per method."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, matthews_corrcoef

    (x_tr, y_tr), (x_va, y_va), (x_te, y_te), n_classes = split_data(unit)
    base = {"task": unit.task, "seed": unit.seed, "fold": unit.fold, "n_classes": n_classes,
            "n_train": len(y_tr), "n_val": len(y_va), "n_test": len(y_te), "split_key": unit.key}
    fracs = {f"test_frac_c{i}": float(np.mean(y_te == i)) for i in range(n_classes)}

    def scores(pred_va, pred_te) -> dict:
        return {"val_acc": float(accuracy_score(y_va, pred_va)), "test_acc": float(accuracy_score(y_te, pred_te)),
                "test_balanced_acc": float(balanced_accuracy_score(y_te, pred_te)),
                "test_mcc": float(matthews_corrcoef(y_te, pred_te))}

    majority = int(np.bincount(y_tr, minlength=n_classes).argmax())
    rows = [{**base, "method": "majority", "k": np.nan, "C": np.nan, "majority_class": majority,
             **scores(np.full(len(y_va), majority), np.full(len(y_te), majority)), **fracs}]
    best = None
    for C in c_grid:
        model = kmer_pipeline(k, C).fit(x_tr, y_tr)
        val = float(np.mean(model.predict(x_va) == y_va))
        if best is None or val > best[0]:  # ties: the smaller C (the grid is ascending)
            best = (val, C, model)
    _, C, model = best
    rows.append({**base, "method": "kmer_lr", "k": k, "C": C, "majority_class": majority,
                 **scores(model.predict(x_va), model.predict(x_te)), **fracs})
    return rows


@dataclass
class BaselineResult:
    """`frame`: one row per (method, task, seed, fold); `problems`: task → why it has no baseline."""

    frame: pd.DataFrame
    problems: dict[str, str]
    k: int = DEFAULT_K


def compute_baselines(units: Iterable[SplitUnit], k: int = DEFAULT_K, c_grid: Iterable[float] = C_GRID,
                      known: pd.DataFrame | None = None, log: Callable[[str], None] = print) -> BaselineResult:
    """Fit both baselines on every split; rows of `known` (e.g. read back from MLflow) with the
    same split key and k are reused instead of refitted. A task whose data cannot be read is
    listed in `problems` (one line each), not dropped silently."""
    if k < 1:
        raise ConfigError(f"--k: the k-mer length must be ≥ 1, got {k}")
    rows, problems = [], {}
    reuse = {}
    if known is not None and not known.empty:
        for r in known.to_dict("records"):
            if r.get("method") == "majority" or int(r.get("k") or 0) == k:
                reuse.setdefault(r["split_key"], []).append(r)
    for unit in units:
        if unit.task in problems:
            continue
        got = reuse.get(unit.key, [])
        if {r["method"] for r in got} >= set(METHODS):
            rows.extend(r for r in got if r["method"] in METHODS)
            continue
        started = time.monotonic()
        try:
            fitted = fit_unit(unit, k, c_grid)
        except GdnaError as e:
            problems[unit.task] = str(e)
            log(f"[baseline] {unit.task}: skipped: {e}")
            continue
        rows.extend(fitted)
        kmer = fitted[-1]
        log(f"[baseline] {unit.task} seed {unit.seed} fold {unit.fold}: majority {100 * fitted[0]['test_acc']:.1f}%, "
            f"{k}-mer LR {100 * kmer['test_acc']:.1f}% (C={kmer['C']:g} on val, {time.monotonic() - started:.1f} s)")
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame = frame.sort_values(["task", "method", "seed", "fold"], kind="stable").reset_index(drop=True)
    return BaselineResult(frame, problems, k)


def summarize(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (task, method): test/val accuracy mean ± spread over the splits (the trials' convention)."""
    from gdna.analysis.tables import mean_spread

    rows = []
    if frame.empty:
        return pd.DataFrame(columns=["task", "method", "test_mean", "test_spread", "n", "val_mean",
                                     "test_balanced_mean"])
    for (task, method), g in frame.groupby(["task", "method"], sort=True):
        mean, spread, n = mean_spread(g["test_acc"])
        rows.append({"task": task, "method": method, "k": g["k"].iloc[0], "test_mean": mean, "test_spread": spread,
                     "n": n, "val_mean": float(g["val_acc"].mean()),
                     "test_balanced_mean": float(g["test_balanced_acc"].mean())})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# MLflow: runs of their own in the sweep's experiment


def load_logged(tracking_uri: str, experiment_id: str) -> pd.DataFrame:
    """Baseline rows already logged to the experiment (finished baseline runs), for reuse."""
    from gdna.analysis.load import search_runs_frame

    raw = search_runs_frame(tracking_uri, experiment_id, f"tags.`gdna.role` = '{ROLE_CHILD}'")
    if raw.empty or "tags.gdna.split_key" not in raw or "metrics.test_acc" not in raw:
        return pd.DataFrame()
    out = pd.DataFrame({
        "task": raw["tags.task"], "seed": pd.to_numeric(raw["tags.seed"]), "fold": pd.to_numeric(raw["tags.fold"]),
        "method": raw["tags.gdna.method"], "split_key": raw["tags.gdna.split_key"],
        "k": pd.to_numeric(raw.get("params.k"), errors="coerce"),
    })
    for col in [c for c in raw.columns if c.startswith("metrics.")]:
        out[col[len("metrics."):]] = pd.to_numeric(raw[col], errors="coerce")
    for col in ("seed", "fold", "n_classes", "n_train", "n_val", "n_test", "majority_class"):
        if col in out:
            out[col] = out[col].astype("Int64")
    return out.dropna(subset=["test_acc"])


def log_baselines(tracking_uri: str, experiment_id: str, sweep_name: str, result: BaselineResult) -> int:
    """Find-or-create the `baselines` parent and one child run per baseline row; returns how many
    child runs were written (rows already logged under the same key are left alone)."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    if result.frame.empty:
        return 0
    client = MlflowClient(tracking_uri)
    parents = client.search_runs([experiment_id], f"tags.`gdna.role` = '{ROLE_PARENT}'", max_results=1)
    if parents:
        parent = parents[0].info.run_id
    else:
        parent = client.create_run(experiment_id, run_name="baselines", tags={
            "gdna.role": ROLE_PARENT, "gdna.sweep": sweep_name,
            "mlflow.note.content": "Reference baselines on the trials' own splits: majority class and a "
                                   "k-mer logistic regression (gdna.analysis.baselines); one child run per "
                                   "method × task × seed/fold."}).info.run_id
    existing = {r.data.tags.get("gdna.baseline_key") for r in
                client.search_runs([experiment_id], f"tags.`gdna.role` = '{ROLE_CHILD}'", max_results=10000)}
    now, written = int(time.time() * 1000), 0
    for row in result.frame.to_dict("records"):
        k = int(row["k"]) if row["method"] == "kmer_lr" else None
        key = f"{row['method']}|k={k}|{row['split_key']}"
        if key in existing:
            continue
        name = f"{row['method'] if k is None else f'{k}mer_lr'}-{row['task']}-s{row['seed']}-f{row['fold']}"
        run = client.create_run(experiment_id, run_name=name, tags={
            "mlflow.parentRunId": parent, "gdna.role": ROLE_CHILD, "gdna.sweep": sweep_name,
            "gdna.baseline_key": key, "gdna.split_key": row["split_key"], "gdna.method": row["method"],
            "task": row["task"], "seed": str(row["seed"]), "fold": str(row["fold"]),
            "mlflow.note.content": f"{method_label(row['method'], k or DEFAULT_K)} on {row['task']}, "
                                   f"the split of seed {row['seed']} fold {row['fold']}"})
        params = [Param("method", row["method"]), Param("task", row["task"])]
        if k is not None:
            params += [Param("k", str(k)), Param("C_grid", str(list(C_GRID)))]
        metrics = [Metric(c, float(row[c]), now, 0) for c in row
                   if c not in ("task", "method", "split_key", "k", "seed", "fold") and _finite(row[c])]
        client.log_batch(run.info.run_id, metrics=metrics, params=params)
        client.set_terminated(run.info.run_id, "FINISHED")
        written += 1
    client.set_terminated(parent, "FINISHED")
    return written


def _finite(v) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def data_problem(units: list[SplitUnit]) -> str | None:
    """One line when no unit's data root exists (nothing to fit), else None."""
    roots = {u.data.data_root for u in units}
    missing = [r for r in roots if not os.path.isdir(r)]
    if roots and len(missing) == len(roots):
        return f"data root {sorted(missing)[0]} does not exist (pass --data-root or set GDNA_DATA_ROOT)"
    return None



def task_references(frame: pd.DataFrame, k: int = DEFAULT_K) -> dict[str, dict[str, tuple[float, float]]]:
    """{method label: {task: (test mean, spread)}} for the per-task reference columns."""
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for r in summarize(frame).itertuples():
        out.setdefault(method_label(r.method, k), {})[r.task] = (r.test_mean, r.test_spread)
    return {label: out[label] for label in (method_label(m, k) for m in METHODS) if label in out}


def human_references(frame: pd.DataFrame, prefix: str = "human_", k: int = DEFAULT_K) -> dict[str, tuple[float, float]]:
    """{method label: (mean, spread)} over the human tasks as Table 1 averages the models: per
    seed/fold the mean over tasks, then mean ± spread over seeds/folds."""
    from gdna.analysis.tables import mean_spread

    if frame.empty:
        return {}
    human = frame[frame["task"].astype(str).str.startswith(prefix)]
    out = {}
    for method in METHODS:
        sub = human[human["method"] == method]
        if not sub.empty:
            mean, spread, _ = mean_spread(sub.groupby(["seed", "fold"])["test_acc"].mean())
            out[method_label(method, k)] = (mean, spread)
    return out
