"""Storage that fills up: a real, small file system (a tmpfs mounted for the test) as the sweep's
`--storage`, filled from outside by a filler file.

1. Full before launch: one line naming the storage and "no space left", exit 2, before Ray starts.
2. Full mid-sweep (filled while a trial is training): the sweep stops by itself within a bounded time
   with one such line and a non-zero exit, no traceback on the console; every file it had written stays
   readable (spec and state JSON parse, no half-written temporary files, the registered checkpoints load,
   the MLflow store opens and lists its runs); once the filler is deleted, `gdna resume` finishes every
   trial, with no duplicate MLflow runs and no finished trial trained again.
"""
from __future__ import annotations

import json
import pickle
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from sweeps_support import (REPO, fill, finished, gdna_cmd, in_flight, kill_tree, launch, mlflow_runs, ray_tmp,
                            run_to_end, small_spec, sweep_env, tail, tmpfs, wait_until)


def _no_space_line(text: str, storage: Path) -> list[str]:
    return [ln for ln in text.splitlines() if "no space left" in ln.lower() and str(storage) in ln]


def _check_readable(p: Path) -> None:
    """A whole JSON file, JSON lines (Tune's result.json, our events.jsonl) or a pickle (Tune's searcher
    state, despite its name): no truncated file."""
    data = p.read_bytes()
    if data[:1] == b"\x80":
        pickle.loads(data)
        return
    try:
        json.loads(data)
    except json.JSONDecodeError:
        for ln in data.splitlines():
            if ln.strip():
                json.loads(ln)


def test_full_storage_at_launch_is_one_line_before_ray_starts(tmp_path, data_root):
    spec = small_spec(tmp_path, "full0", [1e-3])
    with tmpfs(tmp_path / "fs", 4) as fs:
        fill(fs)
        r = subprocess.run(gdna_cmd("sweep", str(spec), "--storage", str(fs)), capture_output=True, text=True,
                           cwd=REPO, env=sweep_env(data_root, "/nonexistent-ray-dir"), timeout=120)
        assert r.returncode == 2, r.stdout + r.stderr
        err = r.stderr.strip()
        assert len(err.splitlines()) == 1 and _no_space_line(err, fs), err
        assert err.startswith("gdna: error: storage: ")
        assert not (fs / "sweeps").exists()  # nothing started (no Ray, no state)


@pytest.mark.slow
@pytest.mark.reliability
def test_storage_filling_up_mid_sweep_stops_cleanly_and_resumes(tmp_path, data_root):
    from gdna.train.checkpoint import load_state
    from gdna.train.trainer import count_training_starts

    spec = small_spec(tmp_path, "full", [1e-3, 2e-3, 3e-3], epochs=3, concurrent=2)
    env = sweep_env(data_root, ray_tmp())
    log = tmp_path / "sweep.log"
    with tmpfs(tmp_path / "fs", 256) as fs:
        sweep_dir, train_dir = fs / "sweeps" / "full", fs / "sweeps" / "full" / "train"
        proc = launch(gdna_cmd("sweep", str(spec), "--storage", str(fs)), env, log)
        try:
            assert wait_until(lambda: finished(train_dir) and in_flight(train_dir), 600, proc), \
                "no trial finished with another mid-training\n" + tail(log)
            assert proc.poll() is None, tail(log)
            filler = fill(fs)
            t0 = time.monotonic()
            rc = proc.wait(timeout=180)
            stop_s = time.monotonic() - t0
        finally:
            kill_tree(proc)
        text = log.read_text(errors="replace")
        assert rc != 0, text
        assert _no_space_line(text, fs), "no one-line 'no space left' error naming the storage\n" + tail(log)
        assert "Traceback" not in text, tail(log, 120)
        print(f"stopped {stop_s:.1f} s after the storage filled up")
        finished_before = finished(train_dir)
        # what was written stays readable
        assert not list(sweep_dir.rglob("*.tmp")), list(sweep_dir.rglob("*.tmp"))
        yaml.safe_load((sweep_dir / "spec.yaml").read_text())
        for p in [*sweep_dir.rglob("*.json"), *sweep_dir.rglob("*.jsonl")]:
            _check_readable(p)
        n_loaded = 0
        for snap in train_dir.glob("*/checkpoint_manager_snapshot.json"):  # the checkpoints Train registered
            registered = snap.read_text()
            for ckpt in snap.parent.glob("checkpoint_*"):
                if ckpt.name in registered:
                    assert load_state(ckpt)["format"], ckpt
                    n_loaded += 1
        assert n_loaded, "no registered checkpoint to load"
        c, runs = mlflow_runs(fs, "full")
        assert runs, "the MLflow store lists no runs"
        # space back: resume finishes every trial
        filler.unlink()
        rc = run_to_end(gdna_cmd("resume", "full", "--storage", str(fs)), env, log, timeout=900)
        assert rc == 0, tail(log)
        c, runs = mlflow_runs(fs, "full")
        trials = [r for r in runs if r.data.tags.get("gdna.role") == "trial"]
        keys = Counter(r.data.tags["gdna.trial_key"] for r in trials)
        assert len(keys) == 3 and max(keys.values()) == 1, keys
        for r in trials:
            assert r.data.tags["gdna.status"] == "finished", r.info.run_name
            steps = [m.step for m in c.get_metric_history(r.info.run_id, "val_acc")]
            assert sorted(steps) == [1, 2, 3], (r.info.run_name, steps)
        for key in finished_before:
            assert count_training_starts(str(train_dir), key) == 1, f"finished trial {key} trained again"
        assert json.loads((sweep_dir / "stages.json").read_text())["finetune"]["status"] == "done"
