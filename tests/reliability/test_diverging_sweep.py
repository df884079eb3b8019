"""A diverging learning rate in a real sweep: the trial ends `diverged` (not errored, not retried), the
sweep completes with exit code 0 (a diverged trial is a result of the study), the summary, `gdna status`
and its MLflow run say so, and `gdna analyze` lists it among the runs excluded from the means."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sweeps_support import REPO, ray_tmp, small_spec, sweep_env, tail

pytestmark = [pytest.mark.slow, pytest.mark.reliability]


def test_a_diverging_lr_is_a_result_not_a_failure(tmp_path, data_root):
    spec = small_spec(tmp_path, "diverge", [2e-3, 1e6], runner="inline", epochs=2, n_train=160)
    env = sweep_env(data_root, ray_tmp())
    storage = tmp_path / "runs"
    log = tmp_path / "sweep.log"
    gdna = [sys.executable, "-m", "gdna.cli"]
    with open(log, "wb") as f:
        rc = subprocess.run([*gdna, "sweep", str(spec), "--storage", str(storage)], cwd=REPO, env=env, stdout=f,
                            stderr=subprocess.STDOUT, timeout=900, start_new_session=True).returncode
    out = log.read_text()
    assert rc == 0, tail(log)
    # the closing summary: one row per trial with its status
    diverged_rows = [line for line in out.splitlines() if "1e+06" in line and "diverged" in line]
    assert diverged_rows, out[-3000:]
    assert "errored" not in out.split("stage finetune:")[-1].replace("0 errored", ""), out[-3000:]

    results = {json.loads(p.read_text())["status"]
               for p in (storage / "sweeps" / "diverge" / "train").glob("*/gdna_result.json")}
    assert results == {"finished", "diverged"}

    st = subprocess.run([*gdna, "status", "diverge", "--storage", str(storage)], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)
    assert st.returncode == 0, st.stdout + st.stderr
    row = next(line.split() for line in st.stdout.splitlines() if line.startswith("finetune"))
    assert row[:3] == ["finetune", "done", "2"] and row[3] == "2", st.stdout  # done = finished + diverged

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{storage / 'sweeps' / 'diverge' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("diverge")
    runs = client.search_runs([exp.experiment_id], "tags.`gdna.role` = 'trial'")
    by_lr = {float(r.data.params["train.lr"]): r for r in runs}
    assert by_lr[1e6].data.tags["gdna.status"] == "diverged" and by_lr[2e-3].data.tags["gdna.status"] == "finished"

    an = subprocess.run([*gdna, "analyze", "diverge", "--storage", str(storage), "--no-baselines"], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=600)
    assert an.returncode == 0, an.stdout[-3000:] + an.stderr[-3000:]
    assert "1 diverged" in an.stdout, an.stdout[-3000:]
    summary = (storage / "sweeps" / "diverge" / "analysis" / "summary.md").read_text()
    assert "## Excluded runs" in summary and "| diverged | 1 |" in summary, summary
