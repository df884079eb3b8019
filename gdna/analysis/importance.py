"""Hyperparameter importance for test accuracy with Optuna's fANOVA evaluator.

The ok runs become COMPLETE trials of an in-memory Optuna study (value = test_acc) over the
hyperparameters that vary in the sweep: arch, strategy, lr (log-float), batch size, and task /
context length when those vary, plus any other MLflow param that is an independent axis of the
sweep (it varies among runs that agree on all of the above; seed/fold/paths excluded): a param
that merely follows another one (model.n_classes follows the task) would only split its share.
`get_param_importances(..., FanovaImportanceEvaluator(seed=0))` then gives the fraction of
test-accuracy variance each explains (normalised to sum to 1).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

# column in the run frame → (name in the study, kind)
CANDIDATE_PARAMS = {
    "arch": "categorical",
    "strategy": "categorical",
    "lr": "log_float",
    "batch_size": "categorical",
    "task": "categorical",
    "context_len": "categorical",
}


@dataclass
class ImportanceResult:
    """`importances` is empty when it could not be computed; `message` then says why."""

    importances: dict[str, float] = field(default_factory=dict)
    n_trials: int = 0
    params: list[str] = field(default_factory=list)
    message: str = ""

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({"param": list(self.importances), "importance": list(self.importances.values())})


# MLflow params never treated as extra axes: repetitions, paths, and the columns above
NOT_AXES = {"train.seed", "data.fold", "data.n_folds", "data.data_root", "init_checkpoint", "export_dir",
            "model.arch", "strategy", "train.lr", "train.batch_size", "data.task", "data.context_len",
            "pretrain.context_len", "pretrain_context_len"}


def varying_params(df: pd.DataFrame) -> list[str]:
    """The candidate hyperparameters that take more than one value among `df`'s runs."""
    return [p for p in CANDIDATE_PARAMS if p in df.columns and df[p].dropna().nunique() > 1]


def extra_axes(df: pd.DataFrame, core: list[str]) -> list[str]:
    """`params.*` columns that vary among runs sharing the same values of `core` (as "params.<key>")."""
    out = []
    for column in sorted(c for c in df.columns if c.startswith("params.")):
        key = column[len("params."):]
        if key in NOT_AXES or df[column].dropna().nunique() < 2:
            continue
        if not core or (df.groupby(core, dropna=False)[column].nunique(dropna=True) > 1).any():
            out.append(column)
    return out


def build_study(df: pd.DataFrame, params: list[str]):
    """An in-memory Optuna study with one COMPLETE trial per run (value = test_acc)."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    distributions = {}
    for p in params:
        values = df[p].dropna()
        if CANDIDATE_PARAMS.get(p) == "log_float":
            distributions[p] = FloatDistribution(float(values.min()), float(values.max()), log=True)
        else:
            distributions[p] = CategoricalDistribution(sorted(_plain(v) for v in values.unique()))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    for _, row in df[params + ["test_acc"]].iterrows():
        trial_params = {p: _plain(row[p]) for p in params}
        study.add_trial(optuna.trial.create_trial(params=trial_params, distributions=distributions,
                                                  value=float(row.test_acc)))
    return study


def param_importances(df: pd.DataFrame, seed: int = 0) -> ImportanceResult:
    """fANOVA importances of the varying hyperparameters for test accuracy over `df`'s ok runs."""
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    runs = df[df["ok"]].dropna(subset=["test_acc"])
    core = varying_params(runs)
    extra = extra_axes(runs, core)
    runs = runs.dropna(subset=core + extra).rename(columns={c: c[len("params."):] for c in extra})
    params = core + [c[len("params."):] for c in extra]
    for p in params[len(core):]:  # numeric-looking params as numbers, so that choices sort naturally
        numeric = pd.to_numeric(runs[p], errors="coerce")
        if numeric.notna().all():
            runs[p] = numeric
    result = ImportanceResult(n_trials=len(runs), params=params)
    if len(runs) < 2:
        result.message = f"importance skipped: {len(runs)} finished run(s) with test_acc, need at least 2"
    elif not params:
        result.message = "importance skipped: no hyperparameter varies across the finished runs"
    elif len(params) == 1:
        result.importances = {params[0]: 1.0}
        result.message = (f"importance trivial: only {params[0]} varies across the finished runs, "
                          "so it explains all of the variance")
    else:
        study = build_study(runs, params)
        importances = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=seed))
        result.importances = {k: float(v) for k, v in importances.items()}
        result.message = f"fANOVA over {len(runs)} runs and {len(params)} hyperparameters"
    return result


def _plain(value):
    """numpy / pandas scalars → Python ones (Optuna categorical choices must be plain)."""
    return value.item() if hasattr(value, "item") else value
