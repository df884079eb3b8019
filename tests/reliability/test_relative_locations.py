"""A sweep launched from another working directory with every location relative: the spec path, its
search space (relative to the spec), `--storage`, `GDNA_DATA_ROOT` and a `sqlite:///relative` tracking
store. The driver makes each one absolute once (Tune runs trials in other working directories): every
trial, pretraining included, finishes, and `gdna status` finds the sweep from the repository root."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sweeps_support import REPO, ray_tmp, sweep_env, tail

pytestmark = [pytest.mark.slow, pytest.mark.reliability]


def test_a_sweep_from_another_directory_with_relative_locations(tmp_path, data_root):
    work = tmp_path / "elsewhere"
    (work / "specs" / "spaces").mkdir(parents=True)
    (work / "specs" / "spaces" / "lrs.yaml").write_text(
        yaml.safe_dump({"grid": {"train.lr": [2e-3], "train.batch_size": [32]}, "seeds": [0]}))
    spec = {
        "name": "rel", "tasks": ["human_enhancers_cohn"], "architectures": ["transformer"],
        "strategies": ["scratch", "task_spt"], "search_space": "spaces/lrs.yaml",  # relative to the spec
        "model": {"d_model": 32},
        "data": {"max_len": 128, "max_train_examples": 160, "max_eval_examples": 64, "n_folds": 1},
        "train": {"epochs": 2, "patience": None},
        "pretrain": {"steps": 20, "eval_every": 10, "batch_size": 16, "lrs": [1e-3], "context_lens": [128]},
        "resources": {"runner": "inline", "workers_per_trial": 1, "cpus_per_worker": 1.0, "max_failures": 1},
        "tracking_uri": "sqlite:///tracking/mlflow.db", "verbose": 0,
    }
    (work / "specs" / "rel.yaml").write_text(yaml.safe_dump(spec))
    env = sweep_env(data_root, ray_tmp())
    env["GDNA_DATA_ROOT"] = os.path.relpath(data_root, work)  # relative to where the sweep is launched
    env["PYTHONPATH"] = str(REPO)
    log = tmp_path / "sweep.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen([sys.executable, "-m", "gdna.cli", "sweep", "specs/rel.yaml", "--storage", "runs"],
                                cwd=work, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=900)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    assert rc == 0, tail(log)

    sweep_dir = work / "runs" / "sweeps" / "rel"
    saved = yaml.safe_load((sweep_dir / "spec.yaml").read_text())
    assert saved["storage"] == str(work / "runs")
    assert saved["data_root"] == str(Path(data_root).resolve())
    assert saved["tracking_uri"] == f"sqlite:///{work / 'tracking' / 'mlflow.db'}"
    assert (work / "tracking" / "mlflow.db").is_file() and not (sweep_dir / "mlflow.db").exists()
    results = [json.loads(p.read_text()) for p in sweep_dir.glob("train/*/gdna_result.json")]
    assert len(results) == 3 and {r["status"] for r in results} == {"finished"}, results  # pretraining, scratch, task_spt

    # from the repository root, by name and absolute storage: the sweep and its MLflow runs are found
    st = subprocess.run([sys.executable, "-m", "gdna.cli", "status", "rel", "--storage", str(work / "runs")],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert st.returncode == 0, st.stdout + st.stderr
    rows = {line.split()[0]: line.split()[1:] for line in st.stdout.splitlines() if line.startswith(("pretrain", "finetune"))}
    assert rows == {"pretrain": ["done", "1", "1", "0", "0", "0", "0"],
                    "finetune": ["done", "2", "2", "0", "0", "0", "0"]}, st.stdout

    from mlflow.tracking import MlflowClient

    client = MlflowClient(saved["tracking_uri"])
    exp = client.get_experiment_by_name("rel")
    trials = client.search_runs([exp.experiment_id], "tags.`gdna.role` = 'trial'")
    assert sorted(r.data.tags["gdna.status"] for r in trials) == ["finished"] * 3  # 1 pretraining + 2 fine-tunings
