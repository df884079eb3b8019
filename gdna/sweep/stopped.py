"""Trials stopped early by the scheduler (ASHA): a first-class outcome, `stopped`, with test metrics.

When Tune stops a trial, its process (and the Train run inside it) ends; nothing runs after the stop in
the trial. The driver (the MLflow callback's `on_trial_complete`, called only for trials that really
completed, never for ones interrupted by Ctrl-C) records the stop in the trial's result marker
`<sweep>/train/<key>/gdna_result.json`: the last reported metrics, `status: stopped`, the checkpoint
it was stopped at and `test_pending: true`. At the end of the stage `evaluate_pending` runs, for every
such trial, a Ray task with one worker's resources that loads the checkpoint's best-validation model
and evaluates it on test (`gdna.train.loop.evaluate_stopped`); the marker is rewritten with the test
metrics (no longer pending) and the MLflow run gets them. A stage interrupted before that finishes does
it on `gdna resume`. A restored Tune experiment that reruns a stopped trial only replays its marker.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from gdna.config import ResourcesConfig

STOPPED = "stopped"
RESULT_MARKER = "gdna_result.json"  # = gdna.sweep.trainable.RESULT_MARKER


def marker_path(train_storage: str | os.PathLike, key: str) -> Path:
    return Path(train_storage) / key / RESULT_MARKER


def read_marker(train_storage: str | os.PathLike, key: str) -> dict[str, Any] | None:
    try:
        return json.loads(marker_path(train_storage, key).read_text())
    except (OSError, ValueError):
        return None


def write_marker(train_storage: str | os.PathLike, key: str, metrics: Mapping[str, Any]) -> None:
    path = marker_path(train_storage, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(dict(metrics), default=str))
    os.replace(tmp, path)


def latest_checkpoint(train_storage: str | os.PathLike, key: str) -> str | None:
    """The newest complete `checkpoint_*` of the trial's run directory (state.pt present)."""
    from gdna.train.checkpoint import STATE_FILE

    d = Path(train_storage) / key
    cands = [p for p in d.glob("checkpoint_*") if (p / STATE_FILE).is_file()] if d.is_dir() else []
    return str(max(cands, key=lambda p: p.stat().st_mtime)) if cands else None


def record_stop(train_storage: str, key: str, last: Mapping[str, Any], checkpoint: str | None) -> dict[str, Any]:
    """Mark the trial stopped (unless it already has a final result) and return what was recorded."""
    old = read_marker(train_storage, key)
    if old is not None and (old.get("status") != STOPPED or not old.get("test_pending")):
        return old  # finished before the stop was processed, or already evaluated
    m = {k: v for k, v in last.items() if isinstance(v, (int, float, str, bool)) and k not in ("done", "final")}
    ck = checkpoint if checkpoint and Path(checkpoint).is_dir() else latest_checkpoint(train_storage, key)
    m.update(status=STOPPED, final=True, test_pending=True, checkpoint_path=ck or "")
    write_marker(train_storage, key, m)
    return m


def pending(train_storage: str, keys: list[str]) -> list[str]:
    return [k for k in keys if (read_marker(train_storage, k) or {}).get("test_pending")]


def _evaluate(trial_dict: dict, checkpoint: str, gpu: bool) -> dict[str, Any]:
    import torch

    from gdna.train.loop import evaluate_stopped
    from gdna.train.runtime import Runtime
    from gdna.train.trainer import loop_config
    from gdna.config import TrialConfig

    rt = Runtime()
    rt.device = torch.device("cuda" if gpu and torch.cuda.is_available() else "cpu")
    return evaluate_stopped(loop_config(TrialConfig.from_dict(trial_dict)), checkpoint, rt)


def evaluate_pending(train_storage: str, trials: Mapping[str, dict], resources: ResourcesConfig) -> dict[str, Any]:
    """Test-evaluate every stopped trial of `trials` (key → resolved trial dict) still pending, as Ray
    tasks with one worker's resources; rewrites their markers. key → final metrics, or the exception."""
    import ray

    todo = {}
    for key, trial_dict in trials.items():
        m = read_marker(train_storage, key) or {}
        if not m.get("test_pending"):
            continue
        ck = m.get("checkpoint_path") or ""
        if not ck or not Path(ck).is_dir():
            ck = latest_checkpoint(train_storage, key) or ""
        todo[key] = (m, ck)
    if not todo:
        return {}
    gpu = resources.gpus_per_worker > 0
    task = ray.remote(num_cpus=float(resources.cpus_per_worker), num_gpus=float(resources.gpus_per_worker),
                      max_retries=1)(_evaluate)
    refs = {key: task.remote(trials[key], ck, gpu) for key, (m, ck) in todo.items() if ck}
    out: dict[str, Any] = {key: FileNotFoundError(f"no checkpoint of stopped trial {key}")
                           for key, (m, ck) in todo.items() if not ck}
    for key, ref in refs.items():
        try:
            final = ray.get(ref)
        except Exception as e:  # noqa: BLE001 - reported by the caller, retried on resume
            out[key] = e
            continue
        m, ck = todo[key]
        final = {**{k: v for k, v in m.items() if k != "test_pending"}, **final, "checkpoint_path": ck}
        write_marker(train_storage, key, final)
        out[key] = final
    return out
