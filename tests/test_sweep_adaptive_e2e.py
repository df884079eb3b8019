"""An adaptive sweep end to end (optuna + asha) on the real data, through the CLI, interrupted by SIGINT.

2 architectures × scratch × 1 task × 2 seeds, 3 Optuna points per tuning cell (12 trials), 4 epochs, ASHA
per cell at epoch 2. SIGINT to the `gdna sweep` process once some trials are done, mid-stage:
exit ≠ 0, the stage is not marked done, `gdna status` says so; `gdna resume` runs every remaining
trial. Then: every cell has exactly its budget (3 points × 2 seeds) in MLflow, no duplicate runs, the
points proposed before the interrupt are the first points of the final studies (continued, not
restarted); trials the scheduler stopped are `stopped` in the summary, `gdna status` and MLflow, with test
metrics; the analysis counts them with their status and reports the per-cell budget.
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

from sweeps_support import REPO, gdna_cmd, kill_tree, launch, mlflow_runs, ray_tmp, run_to_end, sweep_env, tail

pytestmark = [pytest.mark.slow, pytest.mark.reliability]  # ~5 min quiet: make reliability


def _spec(d: Path, name: str) -> Path:
    spec = {
        "name": name,
        "tasks": ["human_enhancers_cohn"],
        "architectures": ["transformer", "cnn"],
        "strategies": ["scratch"],
        "search_space": {"searcher": "optuna", "num_samples": 3, "n_startup_trials": 2, "points_in_flight": 1,
                         "grid": {"train.batch_size": [32]},
                         # from lrs too small to leave the majority class (0.622) to ones that beat it by epoch 2
                         "distributions": {"train.lr": {"loguniform": [1.0e-6, 2.0e-2]}}, "seeds": [0, 1]},
        "model": {"d_model": 32},
        # all 448 training sequences: enough to move off the majority class in epoch 1, so that ASHA's
        # rung at epoch 1 sees different accuracies and stops some trials
        "data": {"max_len": 128, "max_eval_examples": 128, "n_folds": 1},
        "train": {"epochs": 4, "patience": None},
        "scheduler": "asha",
        "asha_grace_period": 2,  # the rung at epoch 2: accuracies tie at the majority class after epoch 1
        "resources": {"workers_per_trial": 1, "cpus_per_worker": 0.25, "cpus_per_trial": 0.1, "max_failures": 1},
        "verbose": 0,
    }
    p = d / f"{name}.yaml"
    p.write_text(yaml.safe_dump(spec))
    return p


def test_adaptive_asha_sweep_sigint_resume(tmp_path, data_root):
    import optuna

    from gdna.analysis.load import load_runs
    from gdna.analysis.report import _budget_section

    name = "adapt"
    storage = tmp_path / "runs"
    sweep_dir = storage / "sweeps" / name
    env = sweep_env(data_root, ray_tmp())
    log = tmp_path / "sweep.log"
    spec = _spec(tmp_path, name)
    proc = launch(gdna_cmd("sweep", str(spec), "--storage", str(storage)), env, log)
    try:
        deadline = time.time() + 900
        while time.time() < deadline and proc.poll() is None:
            done = list((sweep_dir / "train").glob("*/gdna_result.json"))
            if len(done) >= 3:
                break
            time.sleep(0.5)
        assert proc.poll() is None, "the sweep ended before it could be interrupted\n" + tail(log)
        os.kill(proc.pid, signal.SIGINT)  # Ctrl-C to the driver
        rc = proc.wait(timeout=300)
    finally:
        kill_tree(proc)  # its own Ray instance, nothing else
    text = log.read_text(errors="replace")
    assert rc != 0, tail(log)
    assert f"sweep {name}: INTERRUPTED after" in text and "unfinished" in text, tail(log)
    state = json.loads((sweep_dir / "stages.json").read_text()) if (sweep_dir / "stages.json").exists() else {}
    assert state.get("finetune", {}).get("status") != "done"
    st = subprocess.run([*gdna_cmd(), "status", name, "--storage", str(storage), "--json"], capture_output=True, text=True,
                        cwd=REPO, env=env)
    status = json.loads(st.stdout)
    assert status["stages"]["finetune"]["state"] != "done" and not status["driver_running"]
    before = {c: [t.params["train.lr"] for t in optuna.load_study(study_name=c, storage=f"sqlite:///{sweep_dir / 'optuna.db'}").trials]
              for c in ("transformer|scratch|human_enhancers_cohn", "cnn|scratch|human_enhancers_cohn")}

    rc = run_to_end([*gdna_cmd(), "resume", name, "--storage", str(storage)], env, log, timeout=1500)
    assert rc == 0, tail(log)
    text = log.read_text(errors="replace")
    c, runs = mlflow_runs(storage, name)
    trials = [r for r in runs if r.data.tags.get("gdna.role") == "trial"]
    assert len(trials) == 12, [r.info.run_name for r in trials]
    assert max(Counter(r.data.tags["gdna.trial_key"] for r in trials).values()) == 1
    per_cell = Counter(r.data.tags["arch"] for r in trials)
    assert per_cell == {"transformer": 6, "cnn": 6}
    for arch in per_cell:  # 3 points, each on both seeds
        pts = Counter(r.data.params["train.lr"] for r in trials if r.data.tags["arch"] == arch)
        assert sorted(pts.values()) == [2, 2, 2], pts
    statuses = Counter(r.data.tags["gdna.status"] for r in trials)
    assert set(statuses) <= {"finished", "stopped"} and statuses["stopped"] >= 1, statuses
    for r in trials:
        assert "test_acc" in r.data.metrics and "best_val_acc" in r.data.metrics, r.info.run_name
    # the studies continued: the points proposed before the interrupt come first, 3 per cell in all
    for cell, lrs in before.items():
        study = optuna.load_study(study_name=cell, storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
        after = [t.params["train.lr"] for t in study.trials]
        assert len(after) == 3 and after[:len(lrs)] == lrs, (cell, lrs, after)
        assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    # summary, status, analysis
    assert " stopped " in text and "stage finetune: 12 of 12 trials done, 0 errored" in text, tail(log)
    st = json.loads(subprocess.run([*gdna_cmd(), "status", name, "--storage", str(storage), "--json"], capture_output=True,
                                   text=True, cwd=REPO, env=env).stdout)["stages"]["finetune"]
    assert st["state"] == "done" and st["stopped"] == statuses["stopped"] and st["done"] == 12
    df = load_runs(f"sqlite:///{sweep_dir / 'mlflow.db'}", name)
    assert (df["status"] == "stopped").sum() == statuses["stopped"] and df["ok"].all()
    budget = _budget_section(df)
    assert "Every cell tried 3 points." in budget
