"""End-to-end sweeps on the real shared data (tiny models), through the CLI in subprocesses.

Every test runs with both runners: `train` (each trial a 2-worker DDP TorchTrainer at 0.25 CPU per worker)
and `inline` (each trial one process, the loop inside the Tune trial, processes reused between trials).
1. `gdna sweep`: 2 architectures × {scratch, task_spt} × 2 lr × 1 seed:
   pretraining ran once per architecture and was reused by both lrs; one MLflow parent per stage,
   exactly one child per trial with params, tags and metrics; a second launch of the name refuses.
2. resume: a second sweep on the same storage (its pretraining is reused from sweep 1) is SIGKILLed
   (its whole process group: driver + its own Ray instance) after its first trial finishes, then
   `gdna resume` finishes it: no finished trial trains again, no duplicate runs or metric steps.
Each sweep runs its own local Ray (its own temp dir) and every process it starts is in its process
group, so killing that group stops everything it started and nothing else.
"""
from __future__ import annotations

import json
import re
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from sweeps_support import (REPO, RESOURCES, gdna_cmd, in_flight, kill_tree, launch, ray_tmp, run_to_end,
                            sweep_env, tail)

pytestmark = pytest.mark.slow

def _spec(name: str, lrs: list[float], runner: str = "train") -> dict:
    return {
        "name": name,
        "tasks": ["human_enhancers_cohn"],
        "architectures": ["transformer", "hyena"],
        "strategies": ["scratch", "task_spt"],
        "search_space": "smoke",  # overridden below by an inline file
        "model": {"d_model": 32},
        "data": {"max_len": 128, "max_train_examples": 160, "max_eval_examples": 64, "n_folds": 1},
        "train": {"epochs": 2, "patience": None},
        "pretrain": {"steps": 20, "eval_every": 10, "batch_size": 16, "lrs": [1e-3], "context_lens": [128]},
        "resources": RESOURCES[runner],
        "verbose": 0,
        "_lrs": lrs,
    }


def _write_spec(d: Path, name: str, lrs: list[float], runner: str = "train") -> Path:
    spec = _spec(name, lrs, runner)
    lrs = spec.pop("_lrs")
    space = d / f"space_{name}.yaml"
    space.write_text(yaml.safe_dump({"grid": {"train.lr": lrs, "train.batch_size": [32]}, "seeds": [0]}))
    spec["search_space"] = str(space)
    p = d / f"{name}.yaml"
    p.write_text(yaml.safe_dump(spec))
    return p


def _runs(storage: Path, name: str):
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=f"sqlite:///{storage / 'sweeps' / name / 'mlflow.db'}")
    exp = c.get_experiment_by_name(name)
    runs = c.search_runs([exp.experiment_id], max_results=1000)
    return c, exp, runs


# the inline runner's copy of these sweeps runs in `make reliability` (make test keeps under 15 minutes)
@pytest.fixture(scope="module", params=["train", pytest.param("inline", marks=pytest.mark.reliability)])
def sweep1(request, tmp_path_factory, data_root):
    runner = request.param
    d = tmp_path_factory.mktemp(f"e2e_{runner}")
    storage = d / "runs"
    ray_dir = ray_tmp()
    spec = _write_spec(d, "e2e", [1e-3, 3e-3], runner)
    log = d / "sweep1.log"
    t0 = time.time()
    rc = run_to_end([*gdna_cmd(), "sweep", str(spec), "--storage", str(storage)], sweep_env(data_root, ray_dir), log, timeout=900)
    return {"dir": d, "storage": storage, "spec": spec, "rc": rc, "log": log, "ray_tmp": ray_dir,
            "seconds": time.time() - t0, "runner": runner}


def test_sweep_end_to_end(sweep1):
    from gdna.train.trainer import count_training_starts

    storage, log = sweep1["storage"], sweep1["log"]
    assert sweep1["rc"] == 0, tail(log)
    print(f"sweep1 ({sweep1['runner']}) took {sweep1['seconds']:.0f} s")
    c, exp, runs = _runs(storage, "e2e")
    assert exp.tags["gdna.sweep"] == "e2e"
    parents = [r for r in runs if r.data.tags.get("gdna.role") == "stage"]
    assert sorted(r.data.tags["gdna.stage"] for r in parents) == ["finetune", "pretrain"]
    assert sorted(r.info.run_name for r in parents) == ["finetune", "pretrain"]
    children = [r for r in runs if r.data.tags.get("gdna.role") == "trial"]
    pre = [r for r in children if r.data.tags["gdna.stage"] == "pretrain"]
    fin = [r for r in children if r.data.tags["gdna.stage"] == "finetune"]
    assert len(pre) == 2 and len(fin) == 8, [r.info.run_name for r in children]
    keys = Counter((r.data.tags["gdna.stage"], r.data.tags["gdna.trial_key"]) for r in children)
    assert max(keys.values()) == 1  # exactly one child per trial
    pid = {p.data.tags["gdna.stage"]: p.info.run_id for p in parents}
    for r in children:
        t, p, m = r.data.tags, r.data.params, r.data.metrics
        assert t["mlflow.parentRunId"] == pid[t["gdna.stage"]]
        for k in ("arch", "strategy", "task", "seed", "fold", "config_hash", "git_commit", "gdna.sweep", "checkpoint_path"):
            assert t.get(k), (k, r.info.run_name)
        assert t["gdna.status"] == "finished" and r.info.status == "FINISHED"
        assert t["task"] == "human_enhancers_cohn"
        assert p["model.arch"] == t["arch"] and p["strategy"] == t["strategy"] and "train.lr" in p
        assert [a.path for a in c.list_artifacts(r.info.run_id, "config")] == ["config/trial.json"]
        if t["gdna.stage"] == "finetune":
            for k in ("train_loss", "val_loss", "val_acc", "test_acc", "best_val_acc"):
                assert k in m, (k, r.info.run_name)
            assert sorted(x.step for x in c.get_metric_history(r.info.run_id, "val_acc")) == [1, 2]
        else:
            assert p["train.objective"] == "clm" and "best_val_loss" in m and "val_ppl" in m
    # pretraining: once per architecture, reused by both lrs of task_spt
    train_dir = str(storage / "sweeps" / "e2e" / "train")
    backbones = {}
    for r in pre:
        key = r.data.tags["gdna.trial_key"]
        assert count_training_starts(train_dir, key) == 1
        assert (storage / "pretrain" / key / "done.json").is_file()
        backbones[r.data.tags["arch"]] = str(storage / "pretrain" / key / "backbone.pt")
    for r in fin:
        t = r.data.tags
        assert count_training_starts(train_dir, t["gdna.trial_key"]) == 1
        if t["strategy"] == "task_spt":
            assert r.data.params["init_checkpoint"] == backbones[t["arch"]]
            assert backbones[t["arch"]].endswith(f"/{r.data.params['pretrain_key']}/backbone.pt")
            assert r.data.params["pretrain_context_len"] == "128"
        else:
            assert r.data.params["init_checkpoint"] in ("", "None")
    assert Counter(r.data.params["init_checkpoint"] for r in fin if r.data.tags["strategy"] == "task_spt") == {
        b: 2 for b in backbones.values()}
    # summary table and state
    text = log.read_text(errors="replace")
    assert "stage finetune: 8 of 8 trials done, 0 errored" in text
    # not a terminal: no redraws, one plain line per finished trial by its readable name, no Ray output
    assert "\x1b[" not in text
    for stage, n, names in (("pretrain", 2, {r.info.run_name for r in pre}), ("finetune", 8, {r.info.run_name for r in fin})):
        lines = [ln.split() for ln in text.splitlines() if ln.startswith(f"{stage} ") and f"/{n}  finished " in ln]
        assert sorted(ln[1] for ln in lines) == sorted(f"{i}/{n}" for i in range(1, n + 1)), text
        assert {ln[3] for ln in lines} == names
    assert not re.search(r"== Status ==|Trial name|\(raylet\)|\(pid=|WARNING .*ray", text), text
    assert "== Status ==" in (storage / "sweeps" / "e2e" / "ray.log").read_text()
    state = json.loads((storage / "sweeps" / "e2e" / "stages.json").read_text())
    assert state["pretrain"]["status"] == "done" and state["finetune"]["status"] == "done"


def test_relaunch_refuses_and_status(sweep1, data_root):
    r = subprocess.run([*gdna_cmd(), "sweep", str(sweep1["spec"]), "--storage", str(sweep1["storage"])],
                       capture_output=True, text=True, cwd=REPO, env=sweep_env(data_root, sweep1["ray_tmp"]))
    assert r.returncode == 2 and "already exists" in r.stderr and "--resume" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    s = subprocess.run([*gdna_cmd(), "status", "e2e", "--storage", str(sweep1["storage"]), "--json"],
                       capture_output=True, text=True, cwd=REPO)
    st = json.loads(s.stdout)["stages"]
    assert st["pretrain"]["done"] == 2 and st["finetune"]["done"] == 8 and st["finetune"]["errored"] == 0
    u = subprocess.run([*gdna_cmd(), "ui", "e2e", "--storage", str(sweep1["storage"]), "--print-only", "--port", "5123"],
                       capture_output=True, text=True, cwd=REPO)
    assert "http://127.0.0.1:5123" in u.stdout and "--backend-store-uri sqlite:///" in u.stdout


def test_kill_and_resume(sweep1, data_root):
    from gdna.train.trainer import count_training_starts, read_events

    assert sweep1["rc"] == 0
    d, storage = sweep1["dir"], sweep1["storage"]
    spec = _write_spec(d, "e2e_resume", [2e-3], sweep1["runner"])
    env = sweep_env(data_root, ray_tmp())
    log = d / "resume.log"
    sweep_dir = storage / "sweeps" / "e2e_resume"
    train_dir = sweep_dir / "train"
    proc = launch([*gdna_cmd(), "sweep", str(spec), "--storage", str(storage)], env, log)
    try:
        finished: set[str] = set()
        deadline = time.time() + 600
        while time.time() < deadline and proc.poll() is None:
            finished = {p.parent.name for p in train_dir.glob("*/gdna_result.json")}
            if finished:
                break
            time.sleep(0.5)
        assert finished, "no trial finished before the deadline\n" + tail(log)
        # prefer to interrupt while another trial is mid-training (it has a checkpoint, no result yet)
        t_end = time.time() + 20
        while time.time() < t_end and proc.poll() is None and not in_flight(train_dir):
            time.sleep(0.2)
        assert proc.poll() is None, "the sweep ended before it could be interrupted\n" + tail(log)
    finally:
        kill_tree(proc)  # SIGKILL: driver + its Ray instance, nothing else
    finished = {p.parent.name for p in train_dir.glob("*/gdna_result.json")}
    mid_training = in_flight(train_dir)
    saved_at_kill = {key: _checkpointed_epoch(train_dir, key) for key in mid_training}
    started_before = {p.name: count_training_starts(str(train_dir), p.name) for p in train_dir.iterdir() if p.is_dir()}

    st = subprocess.run([*gdna_cmd(), "status", "e2e_resume", "--storage", str(storage)], capture_output=True, text=True, cwd=REPO)
    assert st.returncode == 0 and "not running" in st.stdout, st.stdout + st.stderr

    rc = run_to_end([*gdna_cmd(), "resume", "e2e_resume", "--storage", str(storage)], env, log, timeout=900)
    assert rc == 0, tail(log)

    c, exp, runs = _runs(storage, "e2e_resume")
    children = [r for r in runs if r.data.tags.get("gdna.role") == "trial"]
    parents = [r for r in runs if r.data.tags.get("gdna.role") == "stage"]
    assert sorted(r.data.tags["gdna.stage"] for r in parents) == ["finetune", "pretrain"]
    fin = [r for r in children if r.data.tags["gdna.stage"] == "finetune"]
    pre = [r for r in children if r.data.tags["gdna.stage"] == "pretrain"]
    assert len(fin) == 4 and len(pre) == 2
    # the pretraining of sweep 1 was reused (recorded, not retrained)
    for r in pre:
        assert r.data.tags.get("gdna.reused") == "true" and "best_val_loss" in r.data.metrics
        assert not (train_dir / r.data.tags["gdna.trial_key"]).exists()
    keys = Counter(r.data.tags["gdna.trial_key"] for r in children)
    assert max(keys.values()) == 1, keys  # no duplicate child runs
    for r in fin:
        key = r.data.tags["gdna.trial_key"]
        assert r.data.tags["gdna.status"] == "finished", r.info.run_name
        n = count_training_starts(str(train_dir), key)
        if key in finished:
            assert n == 1, f"finished trial {key} trained again"
        else:
            assert n >= 1
        for k in r.data.metrics:  # no duplicate metric steps
            steps = [m.step for m in c.get_metric_history(r.info.run_id, k)]
            assert len(steps) == len(set(steps)), (r.info.run_name, k, steps)
        assert sorted(m.step for m in c.get_metric_history(r.info.run_id, "val_acc")) == [1, 2]
    assert finished and all(started_before.get(k) == 1 for k in finished)
    lost = {}
    for key in mid_training:  # interrupted mid-training: continued from its last checkpoint, not from scratch
        resumed = [e.get("resumed_from") for e in read_events(str(train_dir), key) if e.get("event") == "start"]
        assert len(resumed) == 2 and resumed[1] is not None and resumed[1] >= 1, resumed
        # the epochs trained again: those after the resume point that had begun before the kill. Every
        # epoch completed before the kill had a checkpoint (counted above from the checkpoints and events),
        # so resuming from the newest one loses at most the epoch that was in progress
        assert resumed[1] >= saved_at_kill[key], (key, resumed, saved_at_kill[key])
        lost[key] = saved_at_kill[key] + 1 - resumed[1]
    assert all(n <= 1 for n in lost.values()), lost
    print(f"interrupted with {len(finished)} finished and {len(mid_training)} mid-training trial(s); "
          f"epochs trained again per in-flight trial: {sorted(lost.values())}")


def _checkpointed_epoch(train_dir: Path, key: str) -> int:
    """The newest epoch a trial had checkpointed: its Train checkpoints' states (train runner) and its
    checkpoint events (inline runner: Tune's checkpoints)."""
    from gdna.train.checkpoint import load_state
    from gdna.train.trainer import read_events

    epochs = [int(e.get("epoch", 0)) for e in read_events(str(train_dir), key) if e.get("event") == "checkpoint"]
    for ck in (train_dir / key).glob("checkpoint_*"):
        try:
            epochs.append(int(load_state(ck).get("epoch", 0)))
        except Exception:  # noqa: BLE001 - one being written at the kill is not a checkpoint
            pass
    return max(epochs, default=0)
