"""`gdna sweep --plan`'s GPU-hour estimate, from trials measured on GPUs in another sweep of the same storage."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _measured_store(storage: Path) -> None:
    """A finished GPU sweep under `storage`: two transformer fine-tunings (100 s and 300 s for 10 epochs on
    1 GPU → 20 GPU-s/epoch), one transformer pretraining (50 s for 100 steps → 0.5 GPU-s/step), one
    errored trial (ignored)."""
    from mlflow.tracking import MlflowClient

    d = storage / "sweeps" / "measured"
    d.mkdir(parents=True)
    (d / "spec.yaml").write_text(yaml.safe_dump({"name": "measured", "resources": {"workers_per_trial": 1, "gpus_per_worker": 1}}))
    c = MlflowClient(tracking_uri=f"sqlite:///{d / 'mlflow.db'}")
    exp = c.create_experiment("measured", artifact_location=(d / "artifacts").as_uri())
    rows = [("finetune", "finished", 100.0, {"epoch": 10}), ("finetune", "finished", 300.0, {"epoch": 10}),
            ("finetune", "errored", 5.0, {"epoch": 1}), ("pretrain", "finished", 50.0, {"step": 100})]
    for stage, status, secs, units in rows:
        r = c.create_run(exp, tags={"gdna.role": "trial", "gdna.stage": stage, "gdna.status": status, "arch": "transformer",
                                    "task": "human_enhancers_cohn" if stage == "finetune" else ""})
        for k, v in {"time_train_s": secs, **units}.items():
            c.log_metric(r.info.run_id, k, v)


def test_plan_estimates_gpu_hours_from_measured_trials(tmp_path):
    storage = tmp_path / "store"
    _measured_store(storage)
    spec = yaml.safe_load((REPO / "sweeps" / "quickstart.yaml").read_text())
    spec["resources"] = {"workers_per_trial": 1, "gpus_per_worker": 1, "cpus_per_worker": 1}
    f = tmp_path / "q.yaml"
    f.write_text(yaml.safe_dump(spec))
    r = subprocess.run([sys.executable, "-m", "gdna.cli", "sweep", str(f), "--plan", "--storage", str(storage)],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    i = next(i for i, x in enumerate(lines) if x.startswith("cost estimate"))
    # transformer: 4 cells (2 strategies × 2 seeds) × 2 lr × 4 epochs × 20 GPU-s + 1 pretraining × 300 steps × 0.5 GPU-s
    hours = (4 * 2 * 4 * 20 + 300 * 0.5) / 3600
    assert lines[i].startswith(f"cost estimate: ≈ {hours:.3g} GPU-hours of training (an estimate from 3 trials measured on GPUs"), lines[i]
    body = "\n".join(lines[i:])
    assert "20 GPU-s/epoch [transformer/human_enhancers_cohn (2 measured)]" in body, body
    assert "0.5 GPU-s/step [transformer (1 measured)]" in body, body
    assert lines[-1] == ("    not estimated (nothing measured): finetune cnn, finetune hyena, finetune mamba, "
                         "pretrain cnn, pretrain hyena, pretrain mamba"), body
