"""Every process gdna starts ends with it: real signals to `gdna sweep` and `gdna train` mid-training, as
a user sends them (Ctrl-C: SIGINT to the foreground process group; `kill`: SIGTERM to the one pid).

The process tree (the driver's Ray instance: GCS, raylet, workers, Train controllers and workers) is read
from /proc before the signal. The command must exit within 60 s and every one of those processes must be
gone; the sweep must have saved its state, so `gdna resume` finishes every trial without training a
finished one again, and `gdna train` with the same name continues from its last checkpoint.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from sweeps_support import (REPO, alive, cmdline, descendants, finished, gdna_cmd, in_flight, kill_tree, launch,
                            mlflow_runs, ray_tmp, run_to_end, small_spec, sweep_env, tail, wait_until)

pytestmark = [pytest.mark.slow, pytest.mark.reliability]

EXIT_WITHIN_S = 60


def _send(proc: subprocess.Popen, how: str) -> None:
    if how == "ctrl-c":  # the terminal's SIGINT goes to the whole foreground process group
        os.killpg(proc.pid, signal.SIGINT)
    else:  # `kill <pid>`
        os.kill(proc.pid, signal.SIGTERM)


def _stop_and_check(proc: subprocess.Popen, how: str, log: Path) -> tuple[int, float]:
    """Signal `proc`; assert it exits in time and takes every process it started with it."""
    tree = descendants(proc.pid)
    assert tree, "the command started no process"
    names = {p: cmdline(p) for p in tree}
    t0 = time.monotonic()
    _send(proc, how)
    try:
        rc = proc.wait(timeout=EXIT_WITHIN_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {EXIT_WITHIN_S} s after {how}\n" + tail(log))
    exit_s = time.monotonic() - t0
    wait_until(lambda: not any(alive(p) for p in tree), 10)  # (a killed child may take a moment to be reaped)
    left = {p: names[p] for p in sorted(tree) if alive(p)}
    assert not left, f"left running after {how} ({len(left)} of {len(tree)}): {left}"
    return rc, exit_s


@pytest.mark.parametrize("how", ["kill", "ctrl-c"])
def test_signal_to_gdna_sweep_stops_everything_and_resume_finishes(how, tmp_path, data_root):
    from gdna.train.trainer import count_training_starts

    name = "sig"
    spec = small_spec(tmp_path, name, [1e-3, 2e-3, 3e-3], epochs=3, concurrent=2)
    storage = tmp_path / "runs"
    env = sweep_env(data_root, ray_tmp())
    log = tmp_path / "sweep.log"
    sweep_dir = storage / "sweeps" / name
    train_dir = sweep_dir / "train"
    proc = launch(gdna_cmd("sweep", str(spec), "--storage", str(storage)), env, log)
    tree: set[int] = set()
    try:
        assert wait_until(lambda: finished(train_dir) and in_flight(train_dir), 600, proc), \
            "no trial finished with another mid-training\n" + tail(log)
        tree = descendants(proc.pid)
        rc, exit_s = _stop_and_check(proc, how, log)
    finally:
        kill_tree(proc, tree)
    print(f"gdna sweep exited {exit_s:.1f} s after {how} (exit code {rc}, {len(tree)} processes)")
    assert rc != 0, tail(log)
    text = log.read_text(errors="replace")
    assert "Traceback" not in text, tail(log, 120)
    assert f"sweep {name}: INTERRUPTED after" in text and "unfinished" in text and f"gdna resume {name}" in text, tail(log)
    done_before = finished(train_dir)
    st = json.loads((sweep_dir / "stages.json").read_text()) if (sweep_dir / "stages.json").exists() else {}
    assert st.get("finetune", {}).get("status") != "done"
    s = subprocess.run(gdna_cmd("status", name, "--storage", str(storage)), capture_output=True, text=True, cwd=REPO)
    assert s.returncode == 0 and "not running" in s.stdout, s.stdout + s.stderr

    assert run_to_end(gdna_cmd("resume", name, "--storage", str(storage)), env, log, timeout=900) == 0, tail(log)
    c, runs = mlflow_runs(storage, name)
    trials = [r for r in runs if r.data.tags.get("gdna.role") == "trial"]
    keys = Counter(r.data.tags["gdna.trial_key"] for r in trials)
    assert len(keys) == 3 and max(keys.values()) == 1, keys
    for r in trials:
        assert r.data.tags["gdna.status"] == "finished", r.info.run_name
        assert sorted(m.step for m in c.get_metric_history(r.info.run_id, "val_acc")) == [1, 2, 3]
    for key in done_before:
        assert count_training_starts(str(train_dir), key) == 1, f"finished trial {key} trained again"
    assert json.loads((sweep_dir / "stages.json").read_text())["finetune"]["status"] == "done"


@pytest.mark.parametrize("how", ["kill", "ctrl-c"])
def test_signal_to_gdna_train_stops_everything_and_the_run_continues(how, tmp_path, data_root):
    from gdna.train.trainer import read_events

    cfg = {
        "model": {"arch": "hyena", "d_model": 32},
        "data": {"data_root": str(data_root), "corpus": "genome", "context_len": 64, "windows_per_epoch": 32,
                 "eval_windows": 16},
        "train": {"objective": "clm", "batch_size": 8, "max_steps": 300, "eval_every": 10},
        "resources": {"cpus_per_worker": 0.5},
    }
    path = tmp_path / "trial.yaml"
    path.write_text(yaml.safe_dump(cfg))
    runs = tmp_path / "runs"
    cmd = gdna_cmd("train", "--config", str(path), "--workers", "2", "--storage", str(runs), "--name", "sig")
    env = sweep_env(data_root, ray_tmp())
    env["RAY_TMPDIR"] = env["GDNA_RAY_TMPDIR"]  # (gdna train starts a default local Ray: keep it apart)
    log = tmp_path / "train.log"
    proc = launch(cmd, env, log)
    tree: set[int] = set()
    try:
        assert wait_until(lambda: any((runs / "sig").glob("checkpoint_*")), 600, proc), tail(log)
        assert proc.poll() is None, "the run ended before it could be interrupted\n" + tail(log)
        tree = descendants(proc.pid)
        rc, exit_s = _stop_and_check(proc, how, log)
    finally:
        kill_tree(proc, tree)
    print(f"gdna train exited {exit_s:.1f} s after {how} (exit code {rc}, {len(tree)} processes)")
    assert rc != 0, tail(log)
    assert "Traceback" not in log.read_text(errors="replace"), tail(log, 120)
    assert run_to_end(cmd, env, log, timeout=600) == 0, tail(log)
    starts = [e for e in read_events(str(runs), "sig") if e["event"] == "start"]
    assert len(starts) == 2 and starts[1]["resumed_from"] and starts[1]["resumed_from"] >= 1, starts
