"""The sweep driver's MLflow writer: a Ray Tune callback that mirrors one stage's trials into MLflow.

It is the ONLY MLflow writer of a sweep (it runs in the driver: one writer per sqlite store, and on a
cluster the workers need no route to the tracking server). Child runs are found by the trial identity
(`gdna.trial_key`), so a restored sweep never duplicates runs or metric steps; reports a killed driver
never wrote are back-filled from the Train checkpoint's history when the trial finishes.

A tracking server that is down (or a store that cannot be written) never stops training: each write
that fails is queued, in order, and retried before the next one and at the end of the stage (a warning
says so once). Writes are idempotent (runs found by identity, metric steps deduped), so a retry never
duplicates; what is still queued when the driver ends is written by `gdna resume` (finished trials
re-report, histories are back-filled from the checkpoints).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable

from ray.tune import Callback

from gdna.tracking import SweepTracker, numeric_metrics, trial_params, trial_tags


class MLflowTrackingCallback(Callback):
    """Mirrors one stage's trials into MLflow: the only MLflow writer (runs in the driver)."""

    def __init__(self, tracker: SweepTracker, stage: str, resolver: Callable[[dict], tuple], train_storage: str = ""):
        self.tracker, self.stage, self.resolver = tracker, stage, resolver
        self.train_storage = train_storage
        self._runs: dict[str, str] = {}
        self._status: dict[str, str] = {}
        self._pending: list[tuple[Callable, tuple]] = []  # writes that failed, in order

    # a failed write is queued and retried ------------------------------------------------------
    def _write(self, fn: Callable, *args) -> None:
        self._flush()
        if self._pending:  # keep the order: this one goes behind the queued ones
            self._pending.append((fn, args))
            return
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001 - sorted below
            if not tracking_outage(e):
                raise
            self._queue(fn, args, e)

    def _queue(self, fn: Callable, args: tuple, e: Exception) -> None:
        if not self._pending:
            print(f"gdna: MLflow at {self.tracker.tracking_uri} cannot be written ({type(e).__name__}: "
                  f"{str(e).splitlines()[0][:200] if str(e) else ''}); training goes on and the updates are "
                  "queued until it answers", file=sys.stderr, flush=True)
        self._pending.append((fn, args))
        self._next_try = time.monotonic() + RETRY_S

    def _flush(self, force: bool = False) -> None:
        pending = getattr(self, "_pending", None) or []
        if not pending or (not force and time.monotonic() < getattr(self, "_next_try", 0.0)):
            return
        while pending:
            fn, args = pending[0]
            try:
                fn(*args)
            except Exception as e:  # noqa: BLE001
                if not tracking_outage(e):
                    raise
                self._next_try = time.monotonic() + RETRY_S
                return
            pending.pop(0)
        print(f"gdna: MLflow at {self.tracker.tracking_uri} answers again; the queued updates are written",
              file=sys.stderr, flush=True)

    def on_experiment_end(self, trials, **info):
        """The stage ends: write what is queued (retrying for up to END_WAIT_S)."""
        deadline = time.monotonic() + END_WAIT_S
        while getattr(self, "_pending", None) and time.monotonic() < deadline:
            self._flush(force=True)
            if self._pending:
                time.sleep(RETRY_S)
        if getattr(self, "_pending", None):
            print(f"gdna: {len(self._pending)} MLflow updates could not be written; `gdna resume` writes them "
                  "once the tracking server answers", file=sys.stderr, flush=True)

    def __getstate__(self):
        return {"tracker": self.tracker, "stage": self.stage, "resolver": self.resolver,
                "train_storage": self.train_storage}

    def _step_of(self, result) -> int:
        key = "step" if self.stage == "pretrain" else "epoch"
        try:
            return int(result.get(key, result.get("training_iteration", 0)))
        except (TypeError, ValueError):
            return int(result.get("training_iteration", 0) or 0)

    def _backfill(self, rid: str, trial, result) -> None:
        """At a trial's final report: log the reports its workers made that this driver never wrote (they
        are in the Train checkpoint's history); steps already logged are skipped. Needed for any trial that
        was interrupted, also one whose MLflow run did not exist yet (its first writes were still queued
        behind a locked store when the driver was killed: the run is new, its history is not)."""
        key = self.resolver(trial.config)[0]
        ck = result.get("checkpoint_path")
        if not ck or not Path(ck).is_dir():
            storage = getattr(self, "train_storage", "")
            cks = sorted(Path(storage, key).glob("checkpoint_*")) if storage else []
            ck = str(cks[-1]) if cks else None
        if not ck:
            return
        try:
            from gdna.train.checkpoint import load_state

            history = load_state(ck).get("history") or []
        except Exception:  # noqa: BLE001 - best effort: the final metrics are logged regardless
            return
        for h in history:
            self.tracker.log_metrics(rid, numeric_metrics(h), self._step_of(h))

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._runs, self._status, self._pending = {}, {}, []

    def _run(self, trial) -> str:
        rid = self._runs.get(trial.trial_id)
        if rid is None:
            key, trial_dict, meta, run_name = self.resolver(trial.config)
            rid = self.tracker.trial_run(
                self.stage, key, run_name=run_name, tags=trial_tags(meta, key),
                params={**trial_params(trial_dict, meta.get("strategy", "")), **meta.get("params", {})},
                config=trial_dict,
            )
            self._runs[trial.trial_id] = rid
        return rid

    def on_trial_start(self, iteration, trials, trial, **info):
        self._write(self._start, trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._write(self._result, trial, dict(result))

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._write(self._complete, trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._write(self._error, trial)

    # the writes ----------------------------------------------------------------------------------
    def _start(self, trial) -> None:
        self.tracker.set_status(self._run(trial), "running")

    def _result(self, trial, result: dict) -> None:
        rid = self._run(trial)
        self.tracker.log_metrics(rid, numeric_metrics(result), self._step_of(result))
        if result.get("final"):  # (deduped: cheap when nothing is missing)
            self._backfill(rid, trial, result)
        ck = result.get("export_path") or result.get("checkpoint_path")
        if ck:
            self.tracker.client.set_tag(rid, "checkpoint_path", str(ck))
        self._tag_nodes(rid, trial, result)
        st = result.get("status")
        if result.get("final"):  # ("stopped": a replayed early-stopped trial, gdna.sweep.stopped)
            self._status[trial.trial_id] = st if st in ("finished", "diverged", "stopped") else "finished"

    def _tag_nodes(self, rid: str, trial, result) -> None:
        """gdna.driver_node / gdna.worker_nodes / gdna.worker_ips (gdna.cluster.nodes): where the trial ran."""
        from gdna.cluster.nodes import node_tags

        nodes = getattr(self, "_nodes", None)
        if nodes is None:
            nodes = self._nodes = {}
        seen = nodes.setdefault(trial.trial_id, {})
        if not seen:  # a restored driver: the tags already on the run
            seen.update({k: v for k, v in self.tracker.client.get_run(rid).data.tags.items()
                         if k in ("gdna.driver_node", "gdna.worker_nodes", "gdna.worker_ips")})
            seen.setdefault("gdna.driver_node", "")
        for k, v in node_tags(result, seen).items():
            self.tracker.client.set_tag(rid, k, v)
            seen[k] = v

    def _complete(self, trial) -> None:
        rid = self._run(trial)
        st = self._status.get(trial.trial_id)
        last = trial.last_result or {}
        if st is None and last.get("final"):
            st = last.get("status") if last.get("status") in ("finished", "diverged", "stopped") else "finished"
        if st is None:
            # completed without a final report: stopped by the scheduler (ASHA). (Tune calls this only for
            # trials that completed, never for ones a Ctrl-C interrupted.) Recorded in the trial's result
            # marker; its test metrics come from its best checkpoint at the end of the stage.
            from gdna.sweep.stopped import STOPPED, record_stop

            key = self.resolver(trial.config)[0]
            ck = last.get("checkpoint_path") or getattr(getattr(trial, "checkpoint", None), "path", None)
            storage = getattr(self, "train_storage", "")
            st = record_stop(storage, key, last, ck).get("status", STOPPED) if storage else STOPPED
            self._backfill(rid, trial, last)
        self.tracker.set_status(rid, st)

    def _error(self, trial) -> None:
        """errored, with the root cause in one line (`gdna.error`) and where the full error is."""
        from gdna.sweep.failures import explain

        rid = self._run(trial)
        err = getattr(trial, "error_file", None)
        tags = {"gdna.error_file": err} if err else {}
        try:
            exc = trial.get_pickled_error()
        except Exception:  # noqa: BLE001 - an unreadable pickle still leaves the error file
            exc = None
        if exc is not None:
            tags["gdna.error"] = explain(exc)[:500]
        self.tracker.set_status(rid, "errored", **tags)


RETRY_S = 5.0  # at most one retry of the queued writes per this many seconds
END_WAIT_S = 60.0  # how long the end of a stage waits for the tracking store to answer


def tracking_outage(e: Exception) -> bool:
    """A failed write to the tracking store (server down, connection refused or timed out, store locked),
    as opposed to a bug in what we write."""
    from mlflow.exceptions import MlflowException

    return isinstance(e, (MlflowException, OSError, ConnectionError, TimeoutError)) or (
        type(e).__module__.split(".")[0] in ("requests", "urllib3", "sqlalchemy"))
