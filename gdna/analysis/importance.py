"""Hyperparameter importance for test accuracy with Optuna's fANOVA evaluator.

The ok runs become COMPLETE trials of an in-memory Optuna study (value = test_acc) over the
hyperparameters that vary independently in the sweep (`param_importances` names what it left out
and why: constant, defined for some strategies only — analysed within them —, or following the
others): arch, strategy, lr (log-float), batch size, and task /
context length when those vary, plus any other MLflow param that is an independent axis of the
sweep (it varies among runs that agree on all of the above; seed/fold/paths excluded): a param
that merely follows another one (model.n_classes follows the task) would only split its share.
`get_param_importances(..., FanovaImportanceEvaluator(seed=0))` then gives the fraction of
test-accuracy variance each explains (normalised to sum to 1).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from gdna.analysis.tables import pretrained_rows

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
    excluded: dict[str, str] = field(default_factory=dict)  # param → why it is not in the analysis
    scope: str = "all runs"
    subsets: list["ImportanceResult"] = field(default_factory=list)  # strategy-specific params, within their runs

    def excluded_text(self) -> str:
        return "; ".join(f"{p}: {why}" for p, why in self.excluded.items())

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


def param_importances(df: pd.DataFrame, seed: int = 0, scope: str = "all runs",
                      subsets: bool = True) -> ImportanceResult:
    """fANOVA importances of the hyperparameters that vary INDEPENDENTLY among `df`'s ok runs.

    A candidate is left out, with the reason in `excluded`, when it is constant, when it is not
    defined for every run (the pretraining context length means nothing for a run without
    pretraining: it is analysed in a sub-analysis over the runs that have it, `subsets`), or when
    it follows the other parameters (no two runs differ in it alone: e.g. a context length that
    each strategy fixes), since fANOVA would credit it with part of their effect.
    """
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    runs = df[df["ok"]].dropna(subset=["test_acc"]).copy()
    if "context_len" in runs and "strategy" in runs:  # defined only where there was a pretraining
        runs.loc[~pretrained_rows(runs), "context_len"] = pd.NA
    excluded: dict[str, str] = {}
    partial: list[str] = []
    candidates = []
    for p in CANDIDATE_PARAMS:
        if p not in runs.columns or runs[p].isna().all():
            continue
        values = runs[p].dropna()
        if runs[p].isna().any():
            partial.append(p)
            excluded[p] = (f"defined for {len(values)} of {len(runs)} runs only"
                           + (" (pretrained strategies)" if p == "context_len" else "") + ": analysed within them")
        elif values.nunique() < 2:
            excluded[p] = f"constant ({_plain(values.iloc[0])})"
        else:
            candidates.append(p)
    extra = extra_axes(runs, candidates)
    runs = runs.rename(columns={c: c[len("params."):] for c in extra})
    for p in (c[len("params."):] for c in extra):  # numeric-looking params as numbers, so that choices sort naturally
        numeric = pd.to_numeric(runs[p], errors="coerce")
        if numeric.notna().all():
            runs[p] = numeric
        candidates.append(p)
    params = independent(runs, candidates, excluded)
    runs = runs.dropna(subset=params)
    result = ImportanceResult(n_trials=len(runs), params=params, excluded=excluded, scope=scope)
    if len(runs) < 2:
        result.message = f"importance skipped: {len(runs)} finished run(s) with test_acc, need at least 2"
    elif not params:
        result.message = "importance skipped: no hyperparameter varies independently across the finished runs"
    elif runs["test_acc"].nunique() < 2:  # fANOVA has no variance to attribute (it raises on it)
        result.message = (f"importance skipped: test_acc is the same ({runs['test_acc'].iloc[0]:.4g}) in all "
                          f"{len(runs)} finished runs")
    elif len(params) == 1:
        result.importances = {params[0]: 1.0}
        result.message = (f"importance trivial: only {params[0]} varies across the finished runs, "
                          "so it explains all of the variance")
    else:
        study = build_study(runs, params)
        importances = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=seed))
        result.importances = {k: float(v) for k, v in importances.items()}
        result.message = f"fANOVA over {len(runs)} runs and {len(params)} hyperparameters"
    if subsets:
        for p in partial:
            sub = df[df["ok"]].copy()
            if p == "context_len" and "strategy" in sub:
                sub = sub[pretrained_rows(sub)]
            sub = sub[sub[p].notna()]
            result.subsets.append(param_importances(sub, seed, scope=f"runs with {p} ({len(sub)})", subsets=False))
    return result


def independent(runs: pd.DataFrame, candidates: list[str], excluded: dict[str, str]) -> list[str]:
    """The candidates that vary on their own: some two runs agree on every other kept candidate
    and differ in this one. Checked from the last candidate back (the study's own axes come first,
    so of two aliases, e.g. strategy and a context length each strategy fixes, the later one is
    dropped); a parameter found to follow the others is dropped (and named in `excluded`) before
    the next one is checked."""
    kept = list(candidates)
    for p in reversed(list(candidates)):
        others = [o for o in kept if o != p]
        sub = runs.dropna(subset=[p] + others)
        if sub.empty:
            continue
        varies = sub[p].nunique() > 1 if not others else (sub.groupby(others, dropna=False)[p].nunique() > 1).any()
        if not varies:
            kept.remove(p)
            excluded[p] = (f"follows {', '.join(others)} (never varies alone)" if others else "constant")
    return kept


def _plain(value):
    """numpy / pandas scalars → Python ones (Optuna categorical choices must be plain)."""
    return value.item() if hasattr(value, "item") else value
