"""Build the Ray Train `TorchTrainer` for one trial, run it, and count its training starts.

Resume by name (verified on Ray 2.60 Train V2): `RunConfig(name, storage_path)` → run dir
`<storage_path>/<name>/`. Train V2's CheckpointManager writes `checkpoint_manager_snapshot.json` there
after every reported checkpoint, and a NEW TorchTrainer with the same name and storage path loads that
snapshot, so `ray.train.get_checkpoint()` in the workers returns the run's latest checkpoint. Worker
failures within one `fit()` are retried (FailureConfig.max_failures) from the same latest checkpoint.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Callable, Iterable

from gdna.config import ResourcesConfig, TrialConfig
from gdna.train.events import EVENTS_FILE, count_training_starts, read_events, run_dir  # noqa: F401 (the trainer's API)

# Train V2's controller polls workers every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (default 2 s), which
# is also the latency of every ray.train.report; gdna's default is much lower unless the user set it.
HEALTH_CHECK_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
DEFAULT_HEALTH_CHECK_S = "0.2"
CHECKPOINTS_TO_KEEP = 2
SNAPSHOT_FILE = "checkpoint_manager_snapshot.json"  # Train V2's checkpoint manager state, in the run dir


def resolve_trial(trial: TrialConfig) -> TrialConfig:
    """Absolute paths for everything a worker reads or writes (Ray workers run in another cwd)."""
    data = trial.data
    root = str(data.root().resolve())
    data = dataclasses.replace(data, data_root=root)
    init = str(Path(trial.init_checkpoint).expanduser().resolve()) if trial.init_checkpoint else None
    export = str(Path(trial.export_dir).expanduser().resolve()) if trial.export_dir else None
    return dataclasses.replace(trial, data=data, init_checkpoint=init, export_dir=export).validate()


def loop_config(trial: TrialConfig, **extra: Any) -> dict[str, Any]:
    """The `train_loop_config` a worker receives (see gdna.train.loop)."""
    cfg: dict[str, Any] = {"trial": resolve_trial(trial).to_dict()}
    cfg.update({k: v for k, v in extra.items() if v is not None})
    return cfg


def build_trainer(
    trial: TrialConfig,
    resources: ResourcesConfig,
    name: str,
    storage_path: str,
    callbacks: Iterable[Any] = (),
    *,
    verbose: bool = False,
    log_level: str | None = None,
    loop: Callable[[dict], None] | None = None,
    **loop_extra: Any,
):
    """A TorchTrainer running `train_loop_per_worker` for `trial` (global batch = train.batch_size).

    The same (`name`, `storage_path`) resumes from that run's latest checkpoint; a finished run
    re-reports its final metrics. `log_level` sets Ray Train's own logs (e.g. "WARNING" for quiet
    CLI runs). `loop` replaces the worker function (default gdna.train.loop.train_loop_per_worker) and
    `loop_extra` goes into its config: the tests' fault injection wraps the same loop this way.
    """
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from gdna.train.loop import train_loop_per_worker

    resources = resources.validate()
    os.environ.setdefault(HEALTH_CHECK_ENV, DEFAULT_HEALTH_CHECK_S)  # propagated to controller + workers
    per_worker = {"CPU": float(resources.cpus_per_worker)}
    if resources.gpus_per_worker > 0:
        per_worker["GPU"] = float(resources.gpus_per_worker)
    scaling = ScalingConfig(
        num_workers=int(resources.workers_per_trial),
        use_gpu=resources.gpus_per_worker > 0,
        resources_per_worker=per_worker,
    )
    run_config = RunConfig(
        name=name,
        storage_path=str(Path(storage_path).expanduser().resolve()) if "://" not in str(storage_path) else storage_path,
        callbacks=list(callbacks),
        failure_config=FailureConfig(max_failures=int(resources.max_failures)),
        checkpoint_config=CheckpointConfig(num_to_keep=CHECKPOINTS_TO_KEEP),
        worker_runtime_env={"env_vars": {HEALTH_CHECK_ENV: os.environ[HEALTH_CHECK_ENV]}},
        **({"logging_config": LoggingConfig(log_level=log_level)} if log_level else {}),
    )
    return TorchTrainer(
        loop or train_loop_per_worker,
        train_loop_config=loop_config(trial, verbose=verbose or None, **loop_extra),
        scaling_config=scaling,
        run_config=run_config,
    )


def prune_unrecorded_checkpoints(storage_path: str, name: str) -> list[str]:
    """After a run's `fit()` returned: delete its `checkpoint_*` directories that Train's checkpoint manager
    does not hold (uploaded by a worker killed before the controller recorded them; a resume may have
    started from one: `RayRuntime.resume_dir`). Train deletes only those it recorded (`num_to_keep`), so
    without this they would stay for good. Returns the names deleted."""
    import json

    import pyarrow.fs

    if "://" in str(storage_path):
        try:
            fs, base = pyarrow.fs.FileSystem.from_uri(str(storage_path))
        except (OSError, ValueError):
            return []
    else:
        fs, base = pyarrow.fs.LocalFileSystem(), str(Path(storage_path).expanduser().resolve())
    run = f"{base.rstrip('/')}/{name}"
    try:
        with fs.open_input_stream(f"{run}/{SNAPSHOT_FILE}") as f:
            snapshot = json.loads(f.read())
    except (OSError, ValueError):
        return []  # no snapshot (nothing recorded, or unreadable): nothing is known to be unrecorded
    recorded = set(_checkpoint_names(snapshot))
    gone: list[str] = []
    try:  # housekeeping: a storage error here must not fail a run that trained fine
        infos = fs.get_file_info(pyarrow.fs.FileSelector(run, allow_not_found=True))
        for n in sorted(i.base_name for i in infos if i.type == pyarrow.fs.FileType.Directory
                        and i.base_name.startswith("checkpoint_") and i.base_name not in recorded):
            fs.delete_dir(f"{run}/{n}")
            gone.append(n)
    except OSError:
        pass
    return gone


def _checkpoint_names(obj: Any) -> Iterable[str]:
    """Every checkpoint directory name a checkpoint manager snapshot refers to."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "checkpoint_dir_name" and isinstance(v, str):
                yield v
            else:
                yield from _checkpoint_names(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from ([v] if isinstance(v, str) and v.startswith("checkpoint_") else _checkpoint_names(v))


def run_trial(
    trial: TrialConfig, resources: ResourcesConfig, name: str, storage_path: str, *, verbose: bool = False,
    callbacks: Iterable[Any] = (), log_level: str | None = None,
) -> dict[str, Any]:
    """Run (or resume) one trial through TorchTrainer, without Tune; returns the final metrics."""
    trainer = build_trainer(trial, resources, name, storage_path, callbacks, verbose=verbose, log_level=log_level)
    result = trainer.fit()
    prune_unrecorded_checkpoints(storage_path, name)
    return dict(result.metrics or {})
