"""`gdna train --config trial.yaml`: one trial through the same TorchTrainer as a sweep, without Tune.

The YAML is a TrialConfig dict (model / data / train / init_checkpoint / export_dir) plus an optional
`resources:` block (ResourcesConfig). Parsing is strict: an unknown key is a one-line ConfigError.
"""
from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
from typing import Any

from gdna.config import ResourcesConfig, TrialConfig, from_dict
from gdna.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="run one trial (Ray Train, 1+ DDP workers, no Tune)")
    p.add_argument("--config", required=True, help="trial YAML: model/data/train/... plus optional resources:")
    p.add_argument("--workers", type=int, default=None, help="DDP workers (overrides resources.workers_per_trial)")
    p.add_argument("--cpus-per-worker", type=float, default=None, help="overrides resources.cpus_per_worker")
    p.add_argument("--storage", default="runs/train", help="storage path for the run (default runs/train)")
    p.add_argument("--name", default=None, help="run name (default train-<config hash>); the same name resumes")
    p.add_argument("--data-root", default=None, help="overrides data.data_root")
    p.set_defaults(func=main)


def load_config(path: str | os.PathLike) -> tuple[TrialConfig, ResourcesConfig]:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--config: file not found: {p}")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: invalid YAML: {str(e).splitlines()[0]}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level")
    raw = dict(raw)
    resources = from_dict(ResourcesConfig, raw.pop("resources", None), "resources").validate()
    trial = TrialConfig.from_dict(raw).validate()
    return trial, resources


def main(args: argparse.Namespace) -> int:
    import dataclasses

    trial, resources = load_config(args.config)
    if args.workers is not None:
        resources = dataclasses.replace(resources, workers_per_trial=args.workers)
    if args.cpus_per_worker is not None:
        resources = dataclasses.replace(resources, cpus_per_worker=args.cpus_per_worker)
    resources = resources.validate()
    if args.data_root:
        trial = dataclasses.replace(trial, data=dataclasses.replace(trial.data, data_root=args.data_root))
    if not trial.data.root().is_dir():
        raise ConfigError(f"data.data_root: directory not found: {trial.data.root()}")
    name = args.name or f"train-{trial.identity()}"

    from gdna.train.trainer import DEFAULT_HEALTH_CHECK_S, HEALTH_CHECK_ENV, run_trial

    os.environ.setdefault(HEALTH_CHECK_ENV, DEFAULT_HEALTH_CHECK_S)
    import ray

    from gdna.procs import stop_signals_as_ctrl_c, take_stop_signals

    # SIGTERM / SIGHUP stop it as Ctrl-C does; the Ray instance started here is shut down on the way out
    with stop_signals_as_ctrl_c():
        started = not ray.is_initialized()
        if started:
            ray.init(include_dashboard=False, log_to_driver=True, configure_logging=False)
            take_stop_signals()  # (ray.init replaced our SIGTERM handler with one that aborts)
        try:
            print(f"gdna train: run {name} in {Path(args.storage).resolve()} "
                  f"({resources.workers_per_trial} worker(s), objective {trial.train.objective})", flush=True)
            final = run_trial(trial, resources, name, args.storage, verbose=True, log_level="WARNING")
        finally:
            if started:
                ray.shutdown()
    print("final metrics:")
    print(json.dumps({k: _clean(v) for k, v in final.items()}, indent=2, sort_keys=True))
    return 0 if final.get("status") == "finished" else 1


def _clean(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v
