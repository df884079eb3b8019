"""`prune_unrecorded_checkpoints`: after a successful fit, a run keeps exactly the checkpoints Train's
checkpoint manager snapshot refers to; without a readable snapshot nothing is deleted."""
from __future__ import annotations

import json

from gdna.train.trainer import SNAPSHOT_FILE, prune_unrecorded_checkpoints


def _run(tmp_path, names):
    run = tmp_path / "r"
    for n in names:
        (run / n).mkdir(parents=True)
        (run / n / "state.pt").write_bytes(b"x")
    return run


def _result(name):
    return {"version": 0, "checkpoint_dir_name": name, "metrics": {"epoch": 1}}


def test_only_checkpoints_the_snapshot_names_stay(tmp_path):
    a, b, c, d = (f"checkpoint_2026-11-30_17-0{i}-00.000000" for i in range(4))
    run = _run(tmp_path, [a, b, c, d])
    (run / "events.jsonl").write_text("{}\n")
    (run / SNAPSHOT_FILE).write_text(json.dumps({
        "checkpoint_results": [_result(b), _result(d)], "checkpoint_report_indices": [1, 3],
        "latest_checkpoint_result": _result(d), "pending_training_results": [], "pending_validation_specs": [],
        "current_report_index": 4, "validated_checkpoint_dir_names": [b],
        "timed_out_validation_checkpoint_dir_names": [], "failed_validation_checkpoint_dir_names": []}))
    assert prune_unrecorded_checkpoints(str(tmp_path), "r") == [a, c]
    assert sorted(p.name for p in run.iterdir()) == sorted([b, d, "events.jsonl", SNAPSHOT_FILE])


def test_without_a_readable_snapshot_nothing_is_deleted(tmp_path):
    names = ["checkpoint_2026-11-30_17-00-00.000000", "checkpoint_2026-11-30_17-01-00.000000"]
    run = _run(tmp_path, names)
    assert prune_unrecorded_checkpoints(str(tmp_path), "r") == []
    (run / SNAPSHOT_FILE).write_text('{"checkpoint_res')  # torn
    assert prune_unrecorded_checkpoints(str(tmp_path), "r") == []
    assert sorted(p.name for p in run.iterdir() if p.is_dir()) == names
    assert prune_unrecorded_checkpoints(str(tmp_path), "missing") == []
