"""gdna.tracking: find-or-create runs by trial key, per-stage parents, no duplicate metric steps."""
from __future__ import annotations

import math

import pytest

from gdna.tracking import SweepTracker, default_artifact_location, numeric_metrics, trial_params, trial_tags


@pytest.fixture()
def tracker(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return SweepTracker(uri, "swp", default_artifact_location(uri, tmp_path))


def _child(tr: SweepTracker, key="k1", stage="finetune"):
    meta = {"arch": "hyena", "strategy": "scratch", "task": "t", "seed": 1, "fold": 0}
    d = {"model": {"arch": "hyena"}, "train": {"lr": 1e-3, "betas": (0.9, 0.99)}, "init_checkpoint": None}
    return tr.trial_run(stage, key, run_name="r", tags=trial_tags(meta, key), params=trial_params(d, "scratch"), config=d)


def test_schema_and_find_or_create(tracker, tmp_path):
    rid = _child(tracker)
    assert _child(tracker) == rid  # same key → same run
    c = tracker.client
    run = c.get_run(rid)
    t = run.data.tags
    assert t["mlflow.parentRunId"] == tracker.stage_run("finetune")
    for k, v in {"gdna.role": "trial", "gdna.sweep": "swp", "gdna.stage": "finetune", "gdna.trial_key": "k1",
                 "config_hash": "k1", "arch": "hyena", "strategy": "scratch", "task": "t", "seed": "1", "fold": "0",
                 "gdna.status": "running"}.items():
        assert t[k] == v, k
    assert "git_commit" in t
    assert run.data.params["train.lr"] == "0.001" and run.data.params["strategy"] == "scratch"
    assert run.data.params["model.arch"] == "hyena"
    arts = [a.path for a in c.list_artifacts(rid, "config")]
    assert arts == ["config/trial.json"]
    exp = c.get_experiment(tracker.experiment_id)
    assert exp.name == "swp" and exp.tags["gdna.sweep"] == "swp"
    assert exp.artifact_location.startswith("file://") and str(tmp_path) in exp.artifact_location
    parent = c.get_run(tracker.stage_run("finetune"))
    assert parent.info.run_name == "finetune" and parent.data.tags["gdna.role"] == "stage"
    # another stage, same key → a different run; one parent per stage
    assert _child(tracker, stage="pretrain") != rid
    assert tracker.stage_run("pretrain") != tracker.stage_run("finetune")


def test_resume_never_duplicates(tracker):
    rid = _child(tracker)
    assert tracker.log_metrics(rid, {"val_acc": 0.5, "train_loss": 1.0}, step=1) == 2
    assert tracker.log_metrics(rid, {"val_acc": 0.6, "train_loss": 0.9}, step=2) == 2
    assert tracker.log_metrics(rid, {"val_acc": 0.6}, step=2) == 0
    tracker.set_status(rid, "finished")
    # a new driver (restored sweep): fresh tracker on the same store, replays epochs 1..3
    again = SweepTracker(tracker.tracking_uri, "swp", tracker.artifact_location)
    rid2 = _child(again)
    assert rid2 == rid
    assert again.log_metrics(rid, {"val_acc": 0.5, "train_loss": 1.0}, step=1) == 0
    assert again.log_metrics(rid, {"val_acc": 0.6, "train_loss": 0.9}, step=2) == 0
    assert again.log_metrics(rid, {"val_acc": 0.7, "train_loss": 0.8}, step=3) == 2
    hist = again.client.get_metric_history(rid, "val_acc")
    assert sorted(m.step for m in hist) == [1, 2, 3]
    assert again.resumed(rid) and not tracker.resumed(rid)
    # a gap (a report the driver never received before the interruption) can be back-filled once
    assert again.log_metrics(rid, {"test_acc": 0.7}, step=3) == 1
    assert again.log_metrics(rid, {"val_loss": 0.4}, step=2) == 1
    assert again.log_metrics(rid, {"val_loss": 0.3}, step=1) == 1
    assert again.log_metrics(rid, {"val_loss": 0.3}, step=1) == 0
    runs = again.client.search_runs([again.experiment_id], "tags.`gdna.role` = 'trial'")
    assert len(runs) == 1
    assert again.stage_counts() == {"finetune": {"finished": 1}}


def test_tracker_pickles_without_client(tracker):
    import pickle

    _child(tracker)
    t2 = pickle.loads(pickle.dumps(tracker))
    assert t2._client is None and t2.find_trial_run("finetune", "k1") is not None


def test_numeric_metrics_filters_tune_keys():
    m = numeric_metrics({"val_acc": 0.5, "epoch": 2, "training_iteration": 3, "time_this_iter_s": 1.0,
                         "status": "running", "final": False, "test_acc": float("nan"), "config": {}})
    assert set(m) == {"val_acc", "epoch", "test_acc"} and math.isnan(m["test_acc"])
