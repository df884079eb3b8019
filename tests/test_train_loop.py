"""The training loop in-process (LocalRuntime: the same code path Ray runs, minus Ray): determinism,
bit-exact resume, divergence, pretraining → export → fine-tuning, gradient accumulation."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from fault_injection import InjectedFailure, run_failing
from gdna.train import checkpoint as C
from gdna.train.export import DONE_FILE, EXPORT_FILE
from gdna.train.loop import initial_model, run
from gdna.train.runtime import LocalRuntime
from gdna.train.trainer import count_training_starts, read_events
from trials import clm_trial, cls_trial

pytestmark = pytest.mark.usefixtures("one_thread")


def final_state(run_dir) -> dict:
    rt = LocalRuntime(run_dir)
    with rt.resume_dir() as d:
        return C.load_state(d)


def assert_same_tensors(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def cls_reference(tmp_path_factory, data_root):
    """One uninterrupted cls run (seed 0) shared by several tests."""
    d = tmp_path_factory.mktemp("cls_ref")
    rt = LocalRuntime(d)
    final = run({"trial": cls_trial(data_root).to_dict()}, rt)
    return d, rt.reports, final


def test_cls_reports_the_contract_metrics(cls_reference):
    _, reports, final = cls_reference
    assert [r["epoch"] for r in reports] == [1, 2, 3]
    for r in reports[:-1]:
        assert {"epoch", "step", "train_loss", "val_loss", "val_acc", "lr", "status"} <= r.keys()
        assert r["status"] == "running" and r["final"] is False
    assert final == reports[-1]
    assert final["status"] == "finished" and final["final"] is True
    assert {"test_acc", "test_loss", "best_val_acc", "best_epoch"} <= final.keys()
    # the best epoch is chosen on validation, and the test accuracy is that model's
    best = max(reports, key=lambda r: r["val_acc"])
    assert final["best_val_acc"] == best["val_acc"]
    assert final["best_epoch"] == min(r["epoch"] for r in reports if r["val_acc"] == best["val_acc"])
    assert 0.0 <= final["test_acc"] <= 1.0


def test_same_seed_same_metrics_different_seed_differs(cls_reference, tmp_path, data_root):
    _, ref_reports, _ = cls_reference
    rt = LocalRuntime(tmp_path / "again")
    run({"trial": cls_trial(data_root).to_dict()}, rt)
    drop = lambda rs: [{k: v for k, v in r.items() if k not in ("tokens_per_s", "time_train_s")} for r in rs]
    assert drop(rt.reports) == drop(ref_reports)
    # another seed: another init, another train/val split, other metrics
    a = initial_model(cls_trial(data_root, seed=0)).state_dict()
    b = initial_model(cls_trial(data_root, seed=1)).state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)
    from gdna.data.tasks import classification_datasets

    v0 = classification_datasets(cls_trial(data_root, seed=0).data, 0)[1]
    v1 = classification_datasets(cls_trial(data_root, seed=1).data, 1)[1]
    assert [v0[i][0].tolist() for i in range(8)] != [v1[i][0].tolist() for i in range(8)]
    rt1 = LocalRuntime(tmp_path / "seed1")
    run({"trial": cls_trial(data_root, seed=1, epochs=1).to_dict()}, rt1)
    assert rt1.reports[0]["train_loss"] != ref_reports[0]["train_loss"]


def test_cls_kill_and_resume_is_bit_exact(cls_reference, tmp_path, data_root):
    ref_dir, _, ref_final = cls_reference
    cfg = {"trial": cls_trial(data_root).to_dict(), "fail_after": 1, "fail_marker": str(tmp_path / "marker")}
    d = tmp_path / "run"
    with pytest.raises(InjectedFailure):
        run_failing(cfg, LocalRuntime(d))
    final = run_failing(cfg, LocalRuntime(d))  # the marker disarms the hook: resumes from epoch 1
    drop = lambda r: {k: v for k, v in r.items() if k not in ("tokens_per_s", "time_train_s")}
    assert drop(final) == drop(ref_final)
    got, want = final_state(d), final_state(ref_dir)
    assert_same_tensors(got["model"], want["model"])
    assert_same_tensors(got["best"]["model"], want["best"]["model"])
    assert got["step"] == want["step"] and got["done"] and got["final"]["status"] == "finished"
    starts = [e for e in read_events(tmp_path, "run") if e["event"] == "start"]
    assert [e["resumed_from"] for e in starts] == [None, 1]
    assert count_training_starts(str(tmp_path), "run") == 2


def test_finished_run_is_rereported_not_redone(cls_reference, data_root):
    ref_dir, _, ref_final = cls_reference
    before = count_training_starts(str(ref_dir.parent), ref_dir.name)
    rt = LocalRuntime(ref_dir)
    final = run({"trial": cls_trial(data_root).to_dict()}, rt)
    assert final == ref_final and rt.reports == [ref_final]
    assert count_training_starts(str(ref_dir.parent), ref_dir.name) == before
    assert read_events(str(ref_dir.parent), ref_dir.name)[-1]["event"] == "rereport"


def test_resume_refuses_another_trials_checkpoint(cls_reference, data_root):
    from gdna.errors import ConfigError

    ref_dir, _, _ = cls_reference
    with pytest.raises(ConfigError, match="another trial config"):
        run({"trial": cls_trial(data_root, lr=1e-3).to_dict()}, LocalRuntime(ref_dir))


def test_gradient_accumulation_matches_full_batch(tmp_path, data_root):
    a = LocalRuntime(tmp_path / "full")
    b = LocalRuntime(tmp_path / "micro")
    run({"trial": cls_trial(data_root, epochs=1).to_dict()}, a)
    run({"trial": cls_trial(data_root, epochs=1, micro_batch_size=8).to_dict()}, b)
    assert a.reports[0]["train_loss"] == pytest.approx(b.reports[0]["train_loss"], rel=1e-5)
    sa, sb = final_state(tmp_path / "full")["model"], final_state(tmp_path / "micro")["model"]
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=1e-4, atol=1e-5)


def test_absurd_lr_ends_diverged_without_crashing(tmp_path, data_root):
    rt = LocalRuntime(tmp_path / "div")
    final = run({"trial": cls_trial(data_root, lr=1e6, epochs=2).to_dict()}, rt)
    assert final["status"] == "diverged" and final["final"] is True
    assert rt.reports[-1] == final
    # and a restart of the diverged run re-reports instead of training again
    rt2 = LocalRuntime(tmp_path / "div")
    assert run({"trial": cls_trial(data_root, lr=1e6, epochs=2).to_dict()}, rt2)["status"] == "diverged"
    assert count_training_starts(str(tmp_path), "div") == 1


def test_injected_nan_ends_diverged(tmp_path, data_root, monkeypatch):
    """A NaN loss in the middle of training (not at the start) also ends the trial cleanly."""
    import gdna.models.build as build
    from nan_injection import nan_after

    monkeypatch.setattr(build, "build_model", nan_after(build.build_model, 5))
    rt = LocalRuntime(tmp_path / "nan")
    final = run({"trial": cls_trial(data_root, epochs=3).to_dict()}, rt)
    # 160 examples / 32 = 5 steps per epoch: epoch 1 is clean, the first step of epoch 2 is NaN
    assert final["status"] == "diverged" and final["step"] == 5 and final["train_loss"] != final["train_loss"]
    assert [r["status"] for r in rt.reports] == ["running", "diverged"]
    assert final["best_epoch"] == 1 and 0.0 <= final["test_acc"] <= 1.0  # the best valid model is still tested


def test_pretrain_export_then_finetune_from_it(tmp_path, data_root):
    export = tmp_path / "export"
    rt = LocalRuntime(tmp_path / "clm")
    final = run({"trial": clm_trial(data_root, export).to_dict()}, rt)
    assert [r["step"] for r in rt.reports] == [20, 40, 60]
    for r in rt.reports:
        assert {"step", "epoch", "train_loss", "val_loss", "val_ppl", "lr"} <= r.keys()
    assert rt.reports[-1]["val_loss"] < rt.reports[0]["val_loss"]  # it learns
    assert final["status"] == "finished" and final["best_step"] in (20, 40, 60)
    assert final["best_val_loss"] == min(r["val_loss"] for r in rt.reports)
    assert final["export_path"] == str(export / EXPORT_FILE)
    done = json.loads((export / DONE_FILE).read_text())
    assert done["metrics"]["best_val_loss"] == final["best_val_loss"]
    payload = torch.load(export / EXPORT_FILE, weights_only=False)
    assert payload["model_config"]["arch"] == "transformer" and payload["metrics"]["status"] == "finished"
    best = final_state(tmp_path / "clm")["best"]["model"]
    assert_same_tensors(payload["backbone"], {k[9:]: v for k, v in best.items() if k.startswith("backbone.")})

    # fine-tuning from the export: the backbone is the pretrained one, the head is fresh
    ft = dataclasses.replace(cls_trial(data_root, epochs=1), init_checkpoint=str(export / EXPORT_FILE))
    model = initial_model(ft)
    assert_same_tensors(model.backbone.state_dict(), payload["backbone"])
    scratch = initial_model(cls_trial(data_root, epochs=1))
    assert_same_tensors(model.head.state_dict(), scratch.head.state_dict())
    rt_ft = LocalRuntime(tmp_path / "ft")
    assert run({"trial": ft.to_dict()}, rt_ft)["status"] == "finished"


def test_clm_resume_mid_epoch_is_bit_exact(tmp_path, data_root):
    # 160 windows / 16 = 10 steps per pass, evaluations every 6 steps: checkpoints fall mid-pass
    trial = clm_trial(data_root, max_steps=14, eval_every=6)
    ref = LocalRuntime(tmp_path / "ref")
    ref_final = run({"trial": trial.to_dict()}, ref)
    cfg = {"trial": trial.to_dict(), "fail_after": 12, "fail_marker": str(tmp_path / "marker")}
    with pytest.raises(InjectedFailure):
        run_failing(cfg, LocalRuntime(tmp_path / "cut"))
    assert final_state(tmp_path / "cut")["pos"] == 2  # step 12 = pass 1, 2 steps in
    final = run_failing(cfg, LocalRuntime(tmp_path / "cut"))
    drop = lambda r: {k: v for k, v in r.items() if k not in ("tokens_per_s", "time_train_s")}
    assert drop(final) == drop(ref_final)
    assert_same_tensors(final_state(tmp_path / "cut")["model"], final_state(tmp_path / "ref")["model"])


def test_early_stopping_with_patience(tmp_path, data_root):
    # an lr so small that validation accuracy cannot improve: stop after `patience` flat epochs
    rt = LocalRuntime(tmp_path / "es")
    final = run({"trial": cls_trial(data_root, lr=1e-9, min_lr=1e-10, epochs=10, patience=2).to_dict()}, rt)
    assert [r["epoch"] for r in rt.reports] == [1, 2, 3]
    assert final["status"] == "finished" and final["best_epoch"] == 1
