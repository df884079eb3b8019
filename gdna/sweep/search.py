"""The sweep's search space in Ray Tune's terms: param spaces, searchers and schedulers per stage.

Pretraining: a grid over the pretraining jobs. Fine-tuning: a grid over the plan's cells (arch × strategy
× task × seed × fold) × the search space's grid axes; `random` samples the distributions per grid point;
`optuna` runs one TPE study per tuning cell (arch × strategy × task), `num_samples` points each, every
point evaluated on all the cell's seeds/folds (`gdna.sweep.cells.CellSearch`). `scheduler: asha` is one
ASHA per tuning cell (`gdna.sweep.cells.CellScheduler`), on `epoch`, up to the cell's own epochs.
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
    if s.searcher == "optuna":  # the searcher proposes every config (cell + point)
        return {}
    cells = [c.id for c in plan.cells]
    space: dict[str, Any] = {"cell": grid(cells)}
    space.update({k: grid(v) for k, v in s.axes().items()})
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


def finetune_search(plan: Plan, max_concurrent: int = 0) -> tuple[Any, Any, int]:
    """(search_alg, scheduler, num_samples) of the fine-tuning stage."""
    from gdna.sweep import cells as C

    spec, s = plan.spec, plan.spec.space
    search_alg, scheduler, num_samples = None, None, 1
    tcells = C.tuning_cells(plan)
    if s.searcher == "optuna":
        search_alg = C.CellSearch(
            tcells, C.optuna_space(s), s.num_samples, max_concurrent=max_concurrent, in_flight=s.points_in_flight,
            n_startup_trials=s.n_startup_trials, sweep_dir=str(spec.sweep_dir()), sweep=spec.name)
        num_samples = plan.n_finetune  # an upper bound: the searcher says when it is done
    elif s.searcher == "random":
        num_samples = s.num_samples
    if spec.scheduler == "asha":
        cell_of = {slot: c.key for c in tcells for slot in c.slots}
        strategy_of = {C.tuning_key(c): c.strategy for c in plan.cells}
        max_t = {k: finetune_recipe(st, **spec.overrides.train).epochs for k, st in strategy_of.items()}
        scheduler = C.CellScheduler(cell_of, max_t, grace_period=spec.asha_grace_period,
                                    sweep_dir=str(spec.sweep_dir()))
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
