"""The sweep driver's MLflow writer: a Ray Tune callback that mirrors one stage's trials into MLflow.

It is the ONLY MLflow writer of a sweep (it runs in the driver: one writer per sqlite store, and on a
cluster the workers need no route to the tracking server). Child runs are found by the trial identity
(`gdna.trial_key`), so a restored sweep never duplicates runs or metric steps; reports a killed driver
never received are back-filled from the Train checkpoint's history when the trial finishes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ray.tune import Callback

from gdna.tracking import SweepTracker, numeric_metrics, trial_params, trial_tags


class MLflowTrackingCallback(Callback):
    """Mirrors one stage's trials into MLflow: the only MLflow writer (runs in the driver)."""

    def __init__(self, tracker: SweepTracker, stage: str, resolver: Callable[[dict], tuple], train_storage: str = ""):
        self.tracker, self.stage, self.resolver = tracker, stage, resolver
        self.train_storage = train_storage
        self._runs: dict[str, str] = {}
        self._status: dict[str, str] = {}

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
        """A resumed trial: log the reports that workers made before the interruption but this
        driver never received (they are in the Train checkpoint's history); steps already logged are skipped."""
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
        self._runs, self._status = {}, {}

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
        self.tracker.set_status(self._run(trial), "running")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        rid = self._run(trial)
        self.tracker.log_metrics(rid, numeric_metrics(result), self._step_of(result))
        if result.get("final") and self.tracker.resumed(rid):
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

    def on_trial_complete(self, iteration, trials, trial, **info):
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
        self.tracker.set_status(rid, st)

    def on_trial_error(self, iteration, trials, trial, **info):
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
