"""The GPU-hour cost of a planned sweep, estimated from trials measured before (`gdna sweep --plan`).

Measurements: the finished child runs of every sweep under `<storage>/sweeps/*/` (its MLflow store:
the sweep's tracking server or its sqlite file), each giving `time_train_s` (the loop's training time,
without Ray start-up), the epochs (fine-tuning) or optimizer steps (pretraining) it ran, and the GPUs it
held (`workers_per_trial × gpus_per_worker` of that sweep's spec.yaml). Only trials that held GPUs count.
Rate = GPU-seconds per epoch / per step, by (stage, arch, task) when measured, else by (stage, arch); an
architecture never measured is listed as not estimated (speeds differ too much between them). Estimate = Σ over the plan's trials of rate × planned epochs / steps: an upper bound for
fine-tuning with early stopping. Printed with the numbers it used.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from statistics import mean
from typing import Any

import yaml


def measurements(storage: str | Path) -> list[dict[str, Any]]:
    """One dict per finished, GPU-holding trial of any sweep under `storage`."""
    out = []
    for spec_file in sorted(Path(storage).expanduser().glob("sweeps/*/spec.yaml")):
        try:
            spec = yaml.safe_load(spec_file.read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue
        res = spec.get("resources") or {}
        gpus = float(res.get("workers_per_trial", 1) or 1) * float(res.get("gpus_per_worker", 0) or 0)
        if gpus <= 0:
            continue
        uri = spec.get("tracking_uri") or ""
        if not uri:
            db = spec_file.parent / "mlflow.db"
            if not db.is_file():
                continue
            uri = f"sqlite:///{db.resolve()}"
        for r in _trial_runs(uri, spec_file.parent.name):
            t, m = r.data.tags, r.data.metrics
            stage = t.get("gdna.stage", "")
            units = m.get("step" if stage == "pretrain" else "epoch")
            secs = m.get("time_train_s")
            if t.get("gdna.status") != "finished" or not units or not secs:
                continue
            out.append({"sweep": spec_file.parent.name, "stage": stage, "arch": t.get("arch", ""), "task": t.get("task", ""),
                        "gpus": gpus, "units": float(units), "gpu_s_per_unit": float(secs) * gpus / float(units)})
    return out


def _trial_runs(uri: str, name: str) -> list:
    from gdna.procs import temporary_env

    with temporary_env({"MLFLOW_HTTP_REQUEST_TIMEOUT": "10", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}):
        try:
            from mlflow.tracking import MlflowClient

            c = MlflowClient(tracking_uri=uri)
            exp = c.get_experiment_by_name(name)
            if exp is None:
                return []
            return list(c.search_runs([exp.experiment_id], "tags.`gdna.role` = 'trial'", max_results=50000))
        except Exception:  # noqa: BLE001 - a store we cannot read gives no measurements, not an error
            return []


def _rate(ms: list[dict], stage: str, arch: str, task: str | None) -> tuple[float, str] | None:
    for keys, label in (((stage, arch, task), f"{arch}/{task}"), ((stage, arch), arch)):  # never across architectures
        sel = [m for m in ms if (m["stage"], m["arch"], m["task"])[:len(keys)] == keys]
        if sel:
            return mean(m["gpu_s_per_unit"] for m in sel), f"{label} ({len(sel)} measured)"
    return None


def estimate_lines(plan: Any, storage: str | Path | None = None) -> list[str]:
    """The cost lines `gdna sweep --plan` prints (an estimate, with the numbers it used)."""
    spec = plan.spec
    storage = storage or spec.storage_dir()
    r = spec.resources
    if float(r.gpus_per_worker or 0) <= 0:
        return ["cost: this spec asks for no GPUs (resources.gpus_per_worker 0): no GPU-hour estimate"]
    ms = measurements(storage)
    if not ms:
        return [f"cost: no trial measured on GPUs under {storage} yet: run any sweep there on the cluster, then "
                "`gdna sweep <spec> --plan --storage <it>` estimates GPU-hours from those trials"]
    need: dict[tuple[str, str, str | None], float] = defaultdict(float)  # (stage, arch, task) → epochs / steps
    counts: dict[tuple[str, str, str | None], int] = defaultdict(int)
    for job in plan.pretrain:
        if not job.done:
            k = ("pretrain", job.arch, None)
            need[k] += float(job.trial.train.max_steps)
            counts[k] += 1
    per_cell = plan.n_finetune / max(1, len(plan.cells))
    for cell in plan.cells:
        k = ("finetune", cell.arch, cell.task)
        need[k] += per_cell * _epochs(plan, cell)
        counts[k] += int(round(per_cell))
    total, lines, missing = 0.0, [], []
    for (stage, arch, task), units in sorted(need.items(), key=lambda kv: (kv[0][0] != "pretrain", kv[0][1], kv[0][2] or "")):
        rate = _rate(ms, stage, arch, task)
        if rate is None:
            missing.append(f"{stage} {arch}")
            continue
        hours = rate[0] * units / 3600.0
        total += hours
        unit = "step" if stage == "pretrain" else "epoch"
        lines.append(f"    {stage:<8} {arch:<11} {task or '(all corpora)':<32} {counts[(stage, arch, task)]:>5} runs × "
                     f"{units / max(1, counts[(stage, arch, task)]):>7.0f} {unit}s × {rate[0]:.3g} GPU-s/{unit} [{rate[1]}] = {hours:.3g} GPU-h")
    head = (f"cost estimate: ≈ {total:.3g} GPU-hours of training (an estimate from {len(ms)} trials measured on GPUs "
            f"under {storage}; planned epochs are the maximum, early stopping ends trials sooner; Ray start-up not included)")
    tail = [f"    not estimated (nothing measured): {', '.join(sorted(set(missing)))}"] if missing else []
    return [head, *lines, *tail]


def _epochs(plan: Any, cell: Any) -> int:
    try:
        trial, _ = plan.finetune_trial(cell, plan.points[0] if plan.points else {}, {})
        return int(trial.train.epochs)
    except Exception:  # noqa: BLE001 - e.g. a pretrained strategy whose pretraining is not selected yet
        from gdna.config import finetune_recipe

        return int(finetune_recipe(cell.strategy, **{k: v for k, v in (plan.spec.train or {}).items() if k == "epochs"}).epochs)
