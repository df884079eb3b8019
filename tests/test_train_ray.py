"""Through Ray Train V2 (TorchTrainer): 2-worker gloo DDP learns, FailureConfig retry, resume by run
name after a crash (bit-exact vs the uninterrupted run), re-report of a finished run, `gdna train`."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from fault_injection import failing_loop_per_worker
from gdna.config import ResourcesConfig, TrialConfig
from gdna.train import build_trainer, count_training_starts, read_events
from gdna.train.trainer import run_trial
from gdna.train import checkpoint as C
from gdna.train.loop import run
from gdna.train.runtime import LocalRuntime
from trials import cls_trial

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_session():
    import ray

    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def trial(data_root, **train) -> TrialConfig:
    return cls_trial(data_root, n_train=320, n_eval=128, **{"epochs": 4, **train})


def latest_state(run_dir) -> dict:
    ckpts = sorted(p for p in run_dir.iterdir() if p.name.startswith("checkpoint_") and p.is_dir())
    return C.load_state(ckpts[-1])


def test_two_worker_ddp_learns_and_retries_from_checkpoint(ray_session, tmp_path, data_root):
    t = trial(data_root)
    res = ResourcesConfig(workers_per_trial=2, cpus_per_worker=0.5, max_failures=1)
    # crash once after epoch 2: FailureConfig restarts the worker group from the epoch-2 checkpoint
    trainer = build_trainer(t, res, "ddp", str(tmp_path), loop=failing_loop_per_worker, fail_after=2,
                            fail_marker=str(tmp_path / "marker"))
    result = trainer.fit()
    m = result.metrics
    assert m["status"] == "finished" and m["final"] is True and m["epoch"] == 4
    from gdna.data.tasks import classification_datasets

    val = classification_datasets(t.data, t.train.seed)[1]
    majority = np.bincount(val.labels).max() / len(val.labels)
    assert m["best_val_acc"] > majority + 0.05, (m, majority)
    starts = [e for e in read_events(str(tmp_path), "ddp") if e["event"] == "start"]
    assert [(e["resumed_from"], e["world_size"]) for e in starts] == [(None, 2), (2, 2)]
    # the global batch is honoured: 2 DDP workers ≈ the same run on one worker (only float order differs)
    local = LocalRuntime(tmp_path / "local")
    torch.set_num_threads(1)
    run({"trial": t.to_dict()}, local)
    assert m["train_loss"] == pytest.approx(local.reports[-1]["train_loss"], rel=1e-3)
    assert len([p for p in (tmp_path / "ddp").glob("checkpoint_*") if p.is_dir()]) <= 2  # num_to_keep


def _reference_then_crash(data_root, tmp_path, name: str, epoch: int):
    """A 3-epoch 1-worker trial: its uninterrupted reference in-process (the same loop, one thread like
    the Ray worker), then run `name` through a TorchTrainer that crashes after `epoch` (max_failures 0)."""
    t = trial(data_root, epochs=3)
    res = ResourcesConfig(workers_per_trial=1, cpus_per_worker=1.0, max_failures=0)
    torch.set_num_threads(1)
    ref = run({"trial": t.to_dict()}, LocalRuntime(tmp_path / "ref"))
    marker = str(tmp_path / "marker")
    with pytest.raises(Exception, match=f"injected failure after epoch {epoch}"):
        build_trainer(t, res, name, str(tmp_path), loop=failing_loop_per_worker, fail_after=epoch,
                      fail_marker=marker).fit()
    return t, res, ref, marker


def test_resume_by_name_after_crash_is_bit_exact_and_finished_run_rereports(ray_session, tmp_path, data_root):
    t, res, ref, marker = _reference_then_crash(data_root, tmp_path, "cut", epoch=1)
    assert count_training_starts(str(tmp_path), "cut") == 1
    # a NEW trainer with the same name resumes from the run's latest checkpoint (epoch 1)
    got = build_trainer(t, res, "cut", str(tmp_path), loop=failing_loop_per_worker, fail_after=1,
                        fail_marker=marker).fit().metrics
    drop = lambda r: {k: v for k, v in r.items() if k not in ("tokens_per_s", "time_train_s")}
    assert drop(got) == drop(ref)
    a = latest_state(tmp_path / "cut")
    with LocalRuntime(tmp_path / "ref").resume_dir() as d:
        b = C.load_state(d)
    for k in b["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    starts = [e for e in read_events(str(tmp_path), "cut") if e["event"] == "start"]
    assert [e["resumed_from"] for e in starts] == [None, 1]
    # and once finished, the same name re-reports the final metrics instead of training again
    again = build_trainer(t, res, "cut", str(tmp_path)).fit().metrics
    assert drop(again) == drop(ref)
    assert count_training_starts(str(tmp_path), "cut") == 2


def _forget_newest_checkpoint(run_dir) -> str:
    """Put the run's checkpoint manager snapshot back to what Train wrote before it recorded the newest
    checkpoint (the state a driver or worker killed between a worker's upload and the controller's record
    leaves); the checkpoint itself stays on disk. Returns its name."""
    path = run_dir / "checkpoint_manager_snapshot.json"
    snap = json.loads(path.read_text())
    newest = max(p.name for p in run_dir.glob("checkpoint_*") if p.is_dir())
    keep = [i for i, r in enumerate(snap["checkpoint_results"]) if r["checkpoint_dir_name"] != newest]
    snap["checkpoint_report_indices"] = [snap["checkpoint_report_indices"][i] for i in keep]
    snap["checkpoint_results"] = [snap["checkpoint_results"][i] for i in keep]
    snap["latest_checkpoint_result"] = snap["checkpoint_results"][-1] if keep else None
    snap["validated_checkpoint_dir_names"] = [n for n in snap["validated_checkpoint_dir_names"] if n != newest]
    path.write_text(json.dumps(snap))
    return newest


@pytest.mark.parametrize("record", ["stale", "missing"])
def test_resume_starts_from_a_checkpoint_train_never_recorded(ray_session, tmp_path, data_root, record):
    """A worker uploads its checkpoint before Train's controller records it in the run's snapshot: a kill
    in between leaves a newer checkpoint on storage than the snapshot names (stale), or one and no snapshot
    at all (missing). A new trainer of the same run resumes from that newest checkpoint, ends bit-exactly
    like the uninterrupted run, and leaves only the checkpoints Train keeps."""
    t, res, ref, _ = _reference_then_crash(data_root, tmp_path, "lost", epoch=2)
    run_dir = tmp_path / "lost"
    if record == "stale":
        newest = _forget_newest_checkpoint(run_dir)
    else:
        newest = max(p.name for p in run_dir.glob("checkpoint_*") if p.is_dir())
        (run_dir / "checkpoint_manager_snapshot.json").unlink()
    assert C.load_state(run_dir / newest)["epoch"] == 2
    got = run_trial(t, res, "lost", str(tmp_path))
    drop = lambda r: {k: v for k, v in r.items() if k not in ("tokens_per_s", "time_train_s")}
    assert drop(got) == drop(ref)
    starts = [e for e in read_events(str(tmp_path), "lost") if e["event"] == "start"]
    assert [e["resumed_from"] for e in starts] == [None, 2]
    # the unrecorded checkpoint is pruned once the run finished: what is left is what Train keeps
    left = sorted(p.name for p in run_dir.glob("checkpoint_*") if p.is_dir())
    snap = (run_dir / "checkpoint_manager_snapshot.json").read_text()
    assert newest not in left and 1 <= len(left) <= 2 and all(n in snap for n in left), (left, newest)


def test_gdna_train_cli(ray_session, tmp_path, data_root, capsys):
    import yaml

    from gdna.cli import main

    cfg = {
        "model": {"arch": "hyena", "d_model": 32},
        "data": {"data_root": str(data_root), "corpus": "genome", "context_len": 64, "windows_per_epoch": 32,
                 "eval_windows": 16},
        "train": {"objective": "clm", "batch_size": 8, "max_steps": 4, "eval_every": 2},
        "export_dir": str(tmp_path / "export"),
        "resources": {"cpus_per_worker": 0.5},
    }
    path = tmp_path / "trial.yaml"
    path.write_text(yaml.safe_dump(cfg))
    rc = main(["train", "--config", str(path), "--workers", "2", "--storage", str(tmp_path / "runs"), "--name", "cli"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "final metrics" in out and '"status": "finished"' in out
    assert (tmp_path / "export" / "done.json").exists()
    assert count_training_starts(str(tmp_path / "runs"), "cli") == 1


def test_gdna_train_cli_rejects_unknown_keys(tmp_path, capsys):
    from gdna.cli import main

    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  objective: clm\n  lrr: 0.1\n")
    assert main(["train", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gdna: error: train.lrr: unknown key") and "\n" not in err
    path.write_text("resources:\n  workers_per_trial: 0\n")
    assert main(["train", "--config", str(path)]) == 2
    assert "resources.workers_per_trial" in capsys.readouterr().err
