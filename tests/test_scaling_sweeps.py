"""The scaling sweeps (issue 17): the full specs say config's PAPER_SCALING_* numbers and print their plans
(trial counts, token budgets, what is skipped and why); tiny versions of the three run end to end through
the CLI and `gdna analyze` writes their figures (PNG + CSV, on disk and in the sweep's MLflow analysis run)."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest
import yaml

from gdna.config import (PAPER_GREATAPES_LENS, PAPER_SCALING_CONTEXT_LENS, PAPER_SCALING_CONTEXT_STEPS,
                         PAPER_SCALING_PARAM_BUDGETS, PAPER_SCALING_SIZE_CONTEXT, PAPER_SCALING_SIZE_STEPS,
                         PAPER_SCALING_TOKENS_PER_BATCH, PAPER_SEQ_WARMUP_START)
from gdna.sweep.plan import build_plan
from gdna.sweep.spec import load_spec

REPO = Path(__file__).resolve().parents[1]


def test_full_specs_are_configs_numbers_and_plan(tmp_path):
    size = load_spec(REPO / "sweeps" / "scaling_size.yaml", check_data=False, storage=str(tmp_path))
    ctx = load_spec(REPO / "sweeps" / "scaling_context.yaml", check_data=False, storage=str(tmp_path))
    apes = load_spec(REPO / "sweeps" / "greatapes.yaml", check_data=False, storage=str(tmp_path))
    assert size.pretrain.param_budgets == PAPER_SCALING_PARAM_BUDGETS
    assert size.pretrain.context_lens == (PAPER_SCALING_SIZE_CONTEXT,) and size.pretrain.steps == PAPER_SCALING_SIZE_STEPS
    assert ctx.pretrain.context_lens == PAPER_SCALING_CONTEXT_LENS and ctx.pretrain.steps == PAPER_SCALING_CONTEXT_STEPS
    assert size.pretrain.tokens_per_batch == ctx.pretrain.tokens_per_batch == PAPER_SCALING_TOKENS_PER_BATCH
    assert ctx.pretrain.train["seq_warmup_start"] == PAPER_SEQ_WARMUP_START
    assert apes.pretrain.context_lens == PAPER_GREATAPES_LENS and apes.pretrain.match_context
    text = build_plan(size).describe()
    assert "21 runs" in text and "10.5B tokens per run" in text and "stage 2 finetune: none" in text
    text = build_plan(ctx).describe()
    assert "15 runs" in text and "sequence-length warmup 1024 → 2048" in text
    assert "skipped: transformer at context 65536, 262144, 1048576 (quadratic in length" in text
    plan = build_plan(apes)
    assert {c.context_len for c in plan.cells} == set(PAPER_GREATAPES_LENS)
    assert "= 1280 trials" in plan.describe() and "skipped: transformer at context 16384, 32768" in plan.describe()
    trial, _ = plan.finetune_trial(plan.cells[-1], plan.points[0], None)
    assert trial.data.max_len == plan.cells[-1].context_len  # fine-tuned at its pretraining's length


# --- tiny end-to-end versions -------------------------------------------------------------------
RES = {"runner": "inline", "workers_per_trial": 1, "cpus_per_worker": 1.0, "cpus_per_trial": 0.1,
       "max_concurrent_trials": 2, "max_failures": 0}
PRE = {"steps": 4, "eval_every": 2, "lrs": [3e-3], "tokens_per_batch": 512, "micro_tokens": 256, "eval_tokens": 1024}
TINY = {
    "t_size": {"tasks": [], "finetune": False, "architectures": ["transformer", "hyena", "mamba"],
               "strategies": ["hg38"], "model": {"n_layers": 0},
               "pretrain": {**PRE, "context_lens": [64], "param_budgets": [20000, 50000]}},
    "t_context": {"tasks": [], "finetune": False, "architectures": ["transformer", "hyena"],
                  "strategies": ["hg38"], "model": {"n_layers": 1, "d_model": 16},
                  "pretrain": {**PRE, "context_lens": [32, 64, 128], "per_context": True, "quadratic_max_len": 64,
                               "train": {"seq_warmup_start": 32, "seq_warmup_steps": 1}}},
    "t_apes": {"tasks": ["greatapes"], "architectures": ["hyena"], "strategies": ["scratch", "task_spt"],
               "model": {"n_layers": 1, "d_model": 16},
               "data": {"n_folds": 1, "block_group": 64, "max_train_examples": 64, "max_eval_examples": 32},
               "train": {"epochs": 1, "patience": None},
               "pretrain": {**PRE, "context_lens": [64, 128], "per_context": True, "match_context": True}},
}
FIGURES = {"t_size": ["fig5_left_ppl_vs_params"], "t_context": ["fig5_right_ppl_vs_length", "fig2_ppl_vs_tokens"],
           "t_apes": ["fig6_acc_vs_length"]}


@pytest.mark.slow
def test_tiny_scaling_sweeps_end_to_end_with_figures(tmp_path, data_root):
    from mlflow.tracking import MlflowClient

    storage = tmp_path / "runs"
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"grid": {"train.lr": [3e-3], "train.batch_size": [16]}, "seeds": [0]}))
    env = {**os.environ, "GDNA_DATA_ROOT": str(data_root), "PYTHONUNBUFFERED": "1",
           "GDNA_RAY_TMPDIR": tempfile.mkdtemp(prefix="gdna-scal-", dir="/tmp")}
    env.pop("RAY_ADDRESS", None)
    for name, spec in TINY.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({"name": name, "search_space": str(space), "resources": RES, "verbose": 0,
                                        **spec}))
        log = tmp_path / f"{name}.log"
        for cmd in (["sweep", str(path), "--storage", str(storage)],
                    ["analyze", name, "--storage", str(storage), "--no-baselines"]):
            with open(log, "ab") as f:
                rc = subprocess.run([sys.executable, "-m", "gdna.cli", *cmd], env=env, cwd=REPO, stdout=f,
                                    stderr=subprocess.STDOUT, timeout=600, start_new_session=True).returncode
            assert rc == 0, f"{name} {cmd[0]}:\n" + "\n".join(log.read_text().splitlines()[-40:])
        out = storage / "sweeps" / name / "analysis"
        client = MlflowClient(f"sqlite:///{storage / 'sweeps' / name / 'mlflow.db'}")
        exp = client.get_experiment_by_name(name)
        run = client.search_runs([exp.experiment_id], "tags.`gdna.role` = 'analysis'")[0]
        logged = {a.path for d in ("figures", "tables") for a in client.list_artifacts(run.info.run_id, d)}
        for fig in FIGURES[name]:
            png, csv = out / "figures" / f"{fig}.png", out / "tables" / f"{fig}.csv"
            assert png.stat().st_size > 5000 and f"figures/{fig}.png" in logged and f"tables/{fig}.csv" in logged
            frame = pd.read_csv(csv)
            assert len(frame) >= 2, fig
        if name == "t_size":  # both budgets of every architecture, exact counts within ±3%
            frame = pd.read_csv(out / "tables" / "fig5_left_ppl_vs_params.csv")
            assert len(frame) == 6 and ((frame["n_params"] - frame["param_budget"]).abs() <= 0.03 * frame["param_budget"]).all()
            assert (frame["ppl"] > 1).all()
        if name == "t_context":  # the transformer skipped beyond 64: 3 hyena + 2 transformer points
            frame = pd.read_csv(out / "tables" / "fig5_right_ppl_vs_length.csv")
            assert sorted(frame.groupby("arch").size().tolist()) == [2, 3]
            assert (frame["tokens_seen"] == 4 * 512).all()  # tokens per step fixed: the same tokens at every length
        if name == "t_apes":
            frame = pd.read_csv(out / "tables" / "fig6_acc_vs_length.csv")
            assert set(frame["seq_len"]) == {64, 128} and set(frame["strategy"]) == {"scratch", "task_spt"}
