"""The MLflow tracking SERVER stopped mid-sweep and restarted (a real `mlflow server`, stopped with a
signal): the driver's callback never raises or stalls, queues what it could not write, and once the server
is back every report is in MLflow exactly once (one child run, each metric step once)."""
from __future__ import annotations

import time

import pytest

from gdna.tracking import SweepTracker
from gdna.tracking.callback import MLflowTrackingCallback
from servers import free_port, start_mlflow_server, stop_group

pytestmark = [pytest.mark.slow, pytest.mark.reliability]


class _Trial:  # what Tune's Trial gives the callback
    def __init__(self):
        self.trial_id, self.config, self.last_result, self.error_file = "t0", {"cell": "c"}, {}, None


def _report(epoch: int, final: bool = False) -> dict:
    return {"epoch": epoch, "train_loss": 1.0 / epoch, "val_acc": 0.5 + epoch / 100, "status": "finished" if final
            else "running", "final": final, **({"test_acc": 0.6} if final else {})}


def test_a_stopped_tracking_server_loses_nothing_and_duplicates_nothing(tmp_path):
    db, port = f"sqlite:///{tmp_path / 'mlflow.db'}", free_port()
    server, url = start_mlflow_server(db, tmp_path / "artifacts", tmp_path / "server.log", port)
    try:
        tracker = SweepTracker(url, "outage")
        tracker.stage_run("finetune")
        meta = {"stage": "finetune", "arch": "cnn", "strategy": "scratch", "task": "t", "seed": 0, "fold": 0}
        cb = MLflowTrackingCallback(tracker, "finetune",
                                    lambda config: ("k0", {"train": {"lr": 1e-3}}, meta, "cnn-scratch-t"), "")
        trial = _Trial()
        cb.on_trial_start(0, [], trial)
        cb.on_trial_result(0, [], trial, _report(1))
        stop_group(server)  # the server goes away mid-trial
        t0 = time.monotonic()
        for epoch in (2, 3, 4):
            cb.on_trial_result(0, [], trial, _report(epoch))  # training goes on: no exception
        assert time.monotonic() - t0 < 90, "the callback stalled the driver while the server was down"
        assert cb._pending, "the failed writes were not queued"
        server, _ = start_mlflow_server(db, tmp_path / "artifacts", tmp_path / "server.log", port)
        cb._next_try = 0.0  # (the next retry is due)
        trial.last_result = _report(5, final=True)
        cb.on_trial_result(0, [], trial, trial.last_result)
        cb.on_trial_complete(0, [], trial)
        cb.on_experiment_end([])
        assert not cb._pending
        fresh = SweepTracker(url, "outage")
        runs = fresh._search("tags.`gdna.role` = 'trial'")
        assert len(runs) == 1 and runs[0].data.tags["gdna.status"] == "finished"
        steps = sorted(m.step for m in fresh.client.get_metric_history(runs[0].info.run_id, "val_acc"))
        assert steps == [1, 2, 3, 4, 5]
        assert runs[0].data.params["train.lr"] == "0.001"
    finally:
        stop_group(server)
