"""A synthetic sweep written to MLflow exactly as DESIGN.md's "MLflow schema" says (test-only data).

`write_sweep(tracking_uri, name, trials, artifact_root)` creates the experiment, one parent run per
stage and one child run per trial; `SyntheticTrial` holds the numbers the analysis should find.
`grid_trials()` makes a paper-like grid (arch × strategy × task × lr × batch × seed) with a known,
deterministic structure (best LR in the middle of the grid, a diverging top LR for one architecture).
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from gdna.config import PAPER_BATCH_SIZES, PAPER_LRS, PAPER_SEEDS


@dataclass
class SyntheticTrial:
    """One fine-tuning (or pretraining) trial and the numbers it reports."""

    arch: str
    strategy: str
    task: str
    lr: float
    batch_size: int
    seed: int
    test_acc: float | None
    best_val_acc: float | None
    fold: int = 0
    n_classes: int = 2
    context_len: int = 1024
    status: str = "finished"
    stage: str = "finetune"
    epochs: int = 3
    extra_params: dict = field(default_factory=dict)
    confusion: list | None = None  # test confusion matrix (rows true, columns predicted), logged as test_* metrics

    @property
    def run_name(self) -> str:
        return (f"{self.task}-{self.arch}-{self.strategy}-lr{self.lr:g}-bs{self.batch_size}"
                f"-L{self.context_len}-s{self.seed}-f{self.fold}")


def write_sweep(tracking_uri: str, name: str, trials: Iterable[SyntheticTrial],
                artifact_root: str | Path, description: str = "a synthetic sweep") -> str:
    """Write `trials` as child runs of per-stage parent runs in experiment `name`; returns its id."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    from gdna.tracking import SweepTracker

    client = MlflowClient(tracking_uri)
    # the experiment and the stage parents as the sweep driver makes them (kind tag, descriptions)
    tracker = SweepTracker(tracking_uri, name, Path(artifact_root).resolve().as_uri(), description=description)
    exp_id = tracker.experiment_id
    parents: dict[str, str] = {}
    now = int(time.time() * 1000)
    for trial in trials:
        if trial.stage not in parents:
            parents[trial.stage] = tracker.stage_run(trial.stage)
        tags = {"mlflow.parentRunId": parents[trial.stage], "gdna.role": "trial", "gdna.sweep": name,
                "gdna.stage": trial.stage, "gdna.trial_key": trial.run_name, "config_hash": "synthetic",
                "git_commit": "synthetic", "arch": trial.arch, "strategy": trial.strategy,
                "task": trial.task, "seed": str(trial.seed), "fold": str(trial.fold),
                "gdna.status": trial.status}
        run = client.create_run(exp_id, run_name=trial.run_name, tags=tags, start_time=now)
        params = {"model.arch": trial.arch, "model.n_classes": trial.n_classes, "train.lr": trial.lr,
                  "train.batch_size": trial.batch_size, "train.seed": trial.seed,
                  "data.task": trial.task, "data.fold": trial.fold,
                  "data.context_len": trial.context_len, "strategy": trial.strategy,
                  **trial.extra_params}
        metrics = []
        if trial.best_val_acc is not None:
            for epoch in range(trial.epochs):  # val_acc rises to best_val_acc at the last epoch
                value = trial.best_val_acc - 0.02 * (trial.epochs - 1 - epoch)
                metrics.append(Metric("val_acc", value, now + epoch, epoch))
            metrics.append(Metric("best_val_acc", trial.best_val_acc, now, trial.epochs - 1))
        if trial.test_acc is not None:
            metrics.append(Metric("test_acc", trial.test_acc, now, trial.epochs - 1))
        for key, value in confusion_metrics(trial).items():
            metrics.append(Metric(key, value, now, trial.epochs - 1))
        client.log_batch(run.info.run_id, metrics=metrics,
                         params=[Param(k, str(v)) for k, v in params.items()])
        client.set_terminated(run.info.run_id, "FAILED" if trial.status == "errored" else "FINISHED")
    for run_id in parents.values():
        client.set_terminated(run_id, "FINISHED")
    return exp_id


GRID_TASKS = {"human_enhancers_cohn": 2, "human_nontata_promoters": 2, "demo_human_or_worm": 2}
GRID_ARCHS = ("transformer", "hyena", "mamba")
GRID_STRATEGIES = ("scratch", "hg38")
GRID_LRS = PAPER_LRS
GRID_BATCHES = PAPER_BATCH_SIZES
GRID_SEEDS = PAPER_SEEDS
GRID_BEST_LR = PAPER_LRS[1]  # the synthetic optimum: the second of the paper's LRs


def grid_trials(tasks: dict[str, int] | None = None, archs=GRID_ARCHS, strategies=GRID_STRATEGIES,
                lrs=GRID_LRS, batches=GRID_BATCHES, seeds=GRID_SEEDS, context_lens=(1024,),
                rng_seed: int = 0) -> list[SyntheticTrial]:
    """A paper-like grid with a known structure; mamba diverges at the largest LR with seed 0."""
    tasks = tasks or GRID_TASKS
    rng = np.random.default_rng(rng_seed)
    task_base = {t: 0.62 + 0.08 * i for i, t in enumerate(tasks)}
    arch_gain = {"transformer": 0.0, "hyena": 0.02, "mamba": 0.04}
    strategy_gain = {"scratch": 0.0, "hg38": 0.03, "task_spt": 0.02, "domain_spt": 0.025}
    out = []
    for task, arch, strategy, lr, bs, ctx, seed in itertools.product(
            tasks, archs, strategies, lrs, batches, context_lens, seeds):
        lr_penalty = 0.03 * abs(np.log(lr / GRID_BEST_LR) / np.log(3)) ** 1.5
        ctx_gain = 0.01 * np.log2(ctx / min(context_lens)) if strategy != "scratch" else 0.0
        mean = (task_base[task] + arch_gain.get(arch, 0) + strategy_gain.get(strategy, 0) - lr_penalty
                + ctx_gain - 0.005 * (bs == 256))
        test = float(np.clip(mean + rng.normal(0, 0.01), 0.5, 0.99))
        val = float(np.clip(mean + rng.normal(0, 0.01), 0.5, 0.99))
        status = "finished"
        if arch == "mamba" and lr == max(lrs) and seed == 0 and len(lrs) > 1:
            status, test, val = "diverged", None, 0.5
        out.append(SyntheticTrial(arch, strategy, task, lr, bs, seed, test, val, n_classes=tasks[task],
                                  context_len=ctx, status=status))
    return out


def confusion_metrics(trial: SyntheticTrial) -> dict[str, float]:
    """The test_* metrics the training loop reports for `trial.confusion` (none without one)."""
    from gdna.train.steps import class_metrics

    return class_metrics(trial.confusion, prefix="test_") if trial.confusion is not None else {}


def trials_frame(trials: Iterable[SyntheticTrial]) -> "pd.DataFrame":
    """The DataFrame `load_runs` would return for `trials`, without MLflow (fast unit tests)."""
    import pandas as pd

    from gdna.analysis.load import normalize_runs

    rows = []
    for i, t in enumerate(trials):
        rows.append({"run_id": f"run{i}", "tags.mlflow.runName": t.run_name, "tags.gdna.stage": t.stage,
                     "tags.arch": t.arch, "tags.strategy": t.strategy, "tags.task": t.task,
                     "tags.seed": str(t.seed), "tags.fold": str(t.fold), "tags.gdna.status": t.status,
                     "params.train.lr": str(t.lr), "params.train.batch_size": str(t.batch_size),
                     "params.data.context_len": str(t.context_len),
                     "params.model.n_classes": str(t.n_classes),
                     **{f"params.{k}": str(v) for k, v in t.extra_params.items()},
                     "metrics.test_acc": t.test_acc, "metrics.best_val_acc": t.best_val_acc,
                     **{f"metrics.{k}": v for k, v in confusion_metrics(t).items()}})
    return normalize_runs(pd.DataFrame(rows))


def known_trials() -> list[SyntheticTrial]:
    """A tiny sweep whose tables are computed by hand in tests/test_analysis_tables.py.

    transformer, 3 seeds, batch 128. human_a: scratch at lr 1e-3 has the better validation
    (0.81 vs 0.72) but the worse test accuracy (0.65 vs 0.91); hg38 at lr 1e-3 has one diverged
    run. human_b: one config per strategy, one run without test_acc. demo_c is not a human task.
    """
    T = SyntheticTrial
    out = []
    for seed, (v1, t1, v2, t2) in enumerate([(0.70, 0.90, 0.80, 0.60), (0.72, 0.91, 0.81, 0.64),
                                             (0.74, 0.92, 0.82, 0.71)]):
        out.append(T("transformer", "scratch", "human_a", 1e-4, 128, seed, t1, v1))
        out.append(T("transformer", "scratch", "human_a", 1e-3, 128, seed, t2, v2))
    for seed, test in enumerate([0.80, 0.82, 0.87]):
        out.append(T("transformer", "hg38", "human_a", 1e-4, 128, seed, test, 0.90))
    out.append(T("transformer", "hg38", "human_a", 1e-3, 128, 0, None, 0.5, status="diverged"))
    for seed in (1, 2):
        out.append(T("transformer", "hg38", "human_a", 1e-3, 128, seed, 0.50, 0.50))
    for seed, test in enumerate([0.70, 0.70, 0.76]):
        out.append(T("transformer", "task_spt", "human_a", 1e-4, 128, seed, test, 0.75))
    for seed, test in enumerate([0.50, 0.60, 0.70]):
        out.append(T("transformer", "scratch", "human_b", 1e-4, 128, seed, test, 0.60))
        out.append(T("transformer", "hg38", "human_b", 1e-4, 128, seed, test + 0.2, 0.80))
        out.append(T("transformer", "task_spt", "human_b", 1e-4, 128, seed, test + 0.1, 0.70))
    out.append(T("transformer", "scratch", "human_b", 1e-4, 128, 3, None, None, status="running"))
    for seed, test in enumerate([0.95, 0.96, 0.97]):
        out.append(T("transformer", "scratch", "demo_c", 1e-4, 128, seed, test, 0.95, n_classes=3))
    return out
