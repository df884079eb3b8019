"""Test support: crash a training run once, after a given epoch (cls) / step (clm), from outside the loop.

`FailingRuntime` wraps the runtime the loop reports through (gdna.train.runtime): after the report (and its
checkpoint) of epoch/step `fail_after` it raises `InjectedFailure`, once per marker file. The loop itself
has no hook: production code never checks a flag. Ray workers get this module by value (the pip cloudpickle
and Ray's own vendored one, which Ray Train and Tune use), so they need no `tests` package on their path.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import cloudpickle
import ray.cloudpickle as ray_cloudpickle

from gdna.train.loop import run
from gdna.train.runtime import Runtime


class InjectedFailure(RuntimeError):
    """The crash FailingRuntime raises."""


class FailingRuntime(Runtime):
    """`inner` with a crash after the report whose progress reaches `fail_after` (never the final report)."""

    def __init__(self, inner: Runtime, fail_after: int, marker: str | None, progress_key: str):
        self.inner, self.fail_after, self.marker, self.key = inner, int(fail_after), marker, progress_key
        self.rank, self.world_size, self.device = inner.rank, inner.world_size, inner.device
        # decided once at start, identically on every rank (rank 0 writes the marker when it fires)
        self.armed = not (marker and Path(marker).exists())

    def prepare_model(self, model):
        return self.inner.prepare_model(model)

    def all_reduce_sum(self, t):
        return self.inner.all_reduce_sum(t)

    def resume_dir(self):
        return self.inner.resume_dir()

    def log_event(self, event: dict[str, Any]) -> None:
        self.inner.log_event(event)

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        self.inner.report(metrics, checkpoint_dir)
        progress = int(metrics.get(self.key, 0))
        if not self.armed or metrics.get("final") or progress < self.fail_after:
            return
        if self.marker and self.rank == 0:
            Path(self.marker).parent.mkdir(parents=True, exist_ok=True)
            Path(self.marker).write_text(str(progress))
        raise InjectedFailure(f"injected failure after {self.key} {progress}")


def failing(config: dict, inner: Runtime) -> FailingRuntime:
    key = "epoch" if config["trial"]["train"]["objective"] == "cls" else "step"
    return FailingRuntime(inner, config["fail_after"], config.get("fail_marker"), key)


def run_failing(config: dict, inner: Runtime) -> dict[str, Any]:
    """gdna.train.loop.run through a FailingRuntime (config carries fail_after, fail_marker)."""
    return run(config, failing(config, inner))


def failing_loop_per_worker(config: dict) -> None:
    """A TorchTrainer worker function: the production loop, crashing once (build_trainer(loop=...))."""
    from gdna.train.runtime import RayRuntime

    run_failing(config, RayRuntime())


for _pickler in (cloudpickle, ray_cloudpickle):
    _pickler.register_pickle_by_value(sys.modules[__name__])
