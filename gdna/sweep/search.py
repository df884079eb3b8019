"""The sweep's search space in Ray Tune's terms: param spaces, searchers and schedulers per stage.

Pretraining: a grid over the pretraining jobs. Fine-tuning: a grid over the plan's cells (arch × strategy
× task × seed × fold) × the search space's grid axes; `random` samples the distributions per grid point;
`optuna` proposes (cell, axes, distributions) points with TPE.
"""
from __future__ import annotations

from typing import Any

from gdna.config import finetune_recipe
from gdna.sweep.plan import Plan


def grid(values: list):
    from ray import tune

    return tune.grid_search(list(values))


def pretrain_space(job_keys: list[str]) -> dict:
    return {"job": grid(job_keys)}


def finetune_space(plan: Plan) -> dict:
    from ray import tune

    s = plan.spec.space
    cells = [c.id for c in plan.cells]
    axes = s.axes()
    if s.searcher == "optuna":
        space: dict[str, Any] = {"cell": tune.choice(cells)}
        space.update({k: tune.choice(v) for k, v in axes.items()})
    else:
        space = {"cell": grid(cells)}
        space.update({k: grid(v) for k, v in axes.items()})
    for k, dist in s.distributions.items():
        (kind, args), = dist.items()
        if kind == "choice":
            space[k] = tune.choice(list(args))
        elif kind == "loguniform":
            space[k] = tune.loguniform(float(args[0]), float(args[1]))
        elif kind == "uniform":
            space[k] = tune.uniform(float(args[0]), float(args[1]))
        else:
            space[k] = tune.randint(int(args[0]), int(args[1]))
    return space


def finetune_search(plan: Plan) -> tuple[Any, Any, int]:
    """(search_alg, scheduler, num_samples) of the fine-tuning stage."""
    spec, s = plan.spec, plan.spec.space
    search_alg, scheduler, num_samples = None, None, 1
    if s.searcher == "optuna":
        from optuna.samplers import TPESampler
        from ray.tune.search.optuna import OptunaSearch

        search_alg = OptunaSearch(sampler=TPESampler(seed=0))
        num_samples = s.num_samples
    elif s.searcher == "random":
        num_samples = s.num_samples
    if spec.scheduler == "asha":
        from ray.tune.schedulers import ASHAScheduler

        max_epochs = max(finetune_recipe(st, **spec.overrides.train).epochs for st in spec.strategies)
        scheduler = ASHAScheduler(time_attr="training_iteration", max_t=max(max_epochs, spec.asha_grace_period),
                                  grace_period=spec.asha_grace_period)
    return search_alg, scheduler, num_samples


def reporter(plan: Plan, stage: str):
    """Tune's progress table for a stage (shown with verbose ≥ 1)."""
    from ray.tune import CLIReporter

    spec = plan.spec
    if stage == "pretrain":
        metrics = {"step": "step", "train_loss": "train_loss", "val_loss": "val_loss", "val_ppl": "val_ppl"}
        params = {"job": "job"}
    else:
        metrics = {"epoch": "epoch", "train_loss": "train_loss", "val_acc": "val_acc", "test_acc": "test_acc"}
        params = {"cell": "cell", **{k: k.split(".")[-1] for k in spec.space.axes()},
                  **{k: k.split(".")[-1] for k in spec.space.distributions}}
    return CLIReporter(metric_columns=metrics, parameter_columns=params, max_report_frequency=30,
                       sort_by_metric=False, max_progress_rows=40, max_column_length=48,
                       print_intermediate_tables=spec.verbose >= 1)
