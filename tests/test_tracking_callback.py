"""The driver's MLflow writer fills a trial's history from its checkpoint, whatever happened to the run."""
from __future__ import annotations

from types import SimpleNamespace

from gdna.train.checkpoint import save_state

META = {"stage": "finetune", "arch": "mamba", "strategy": "scratch", "task": "t", "seed": 0, "fold": 0}


def _callback(tmp_path):
    from gdna.tracking import SweepTracker
    from gdna.tracking.callback import MLflowTrackingCallback

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = SweepTracker(uri, "cb", (tmp_path / "artifacts").as_uri())
    resolver = lambda config: ("k0", {"train": {"lr": 1e-3}}, META, "run-k0")  # noqa: E731
    return tracker, MLflowTrackingCallback(tracker, "finetune", resolver, str(tmp_path / "train"))


def test_a_run_created_after_the_interruption_gets_the_epochs_it_never_saw(tmp_path):
    """The driver was killed while its first writes for a trial were still queued (a locked sqlite
    store): the resumed trial's MLflow run is new, and epoch 1 exists only in the checkpoint."""
    tracker, cb = _callback(tmp_path)
    history = [{"epoch": 1, "val_acc": 0.5, "train_loss": 0.9}, {"epoch": 2, "val_acc": 0.6, "train_loss": 0.7}]
    ck = tmp_path / "train" / "k0" / "checkpoint_000001"
    save_state(ck, {"history": history, "epoch": 2})
    trial = SimpleNamespace(trial_id="t0", config={}, last_result=None)
    cb.on_trial_start(0, [], trial)
    cb.on_trial_result(0, [], trial, {**history[-1], "final": True, "status": "finished", "checkpoint_path": str(ck)})
    cb.on_trial_complete(0, [], trial)
    rid = tracker.find_trial_run("finetune", "k0")
    assert not tracker.resumed(rid)
    for key in ("val_acc", "train_loss"):
        steps = sorted(m.step for m in tracker.client.get_metric_history(rid, key))
        assert steps == [1, 2], (key, steps)
    assert tracker.client.get_run(rid).data.tags["gdna.status"] == "finished"


def test_an_uninterrupted_trial_logs_each_step_once(tmp_path):
    tracker, cb = _callback(tmp_path)
    history = [{"epoch": 1, "val_acc": 0.5}, {"epoch": 2, "val_acc": 0.6}]
    ck = tmp_path / "train" / "k0" / "checkpoint_000001"
    save_state(ck, {"history": history, "epoch": 2})
    trial = SimpleNamespace(trial_id="t0", config={}, last_result=None)
    cb.on_trial_start(0, [], trial)
    cb.on_trial_result(0, [], trial, dict(history[0]))
    cb.on_trial_result(0, [], trial, {**history[1], "final": True, "status": "finished", "checkpoint_path": str(ck)})
    rid = tracker.find_trial_run("finetune", "k0")
    assert [m.step for m in tracker.client.get_metric_history(rid, "val_acc")] == [1, 2]


def test_a_long_description_is_cut_at_a_paragraph_and_kept_whole_by_mlflow(tmp_path):
    """MLflow cuts a tag value over its limit mid-line (with a warning); gdna cuts at a paragraph and
    says where the rest is, so what MLflow stores is exactly what gdna wrote."""
    from gdna.tracking import NOTE_TAG, fit_note

    tracker, _ = _callback(tmp_path)
    text = "\n\n".join(f"paragraph {i}: " + "acgt" * 80 for i in range(60))  # ~20,000 characters
    note = fit_note(text)
    assert len(note) < len(text) and note.endswith("`summary.md` of the `analysis` run)")
    assert note.split("\n\n")[-2] == text.split("\n\n")[len(note.split("\n\n")) - 2]  # whole paragraphs
    rid = tracker.stage_run("finetune")
    tracker.client.set_tag(rid, NOTE_TAG, note)
    assert tracker.client.get_run(rid).data.tags[NOTE_TAG] == note
    assert fit_note("short") == "short"
