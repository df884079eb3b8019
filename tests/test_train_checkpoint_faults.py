"""A truncated or corrupted checkpoint (a real file cut or overwritten on disk) is detected: the run falls
back to the checkpoint before it, or restarts, and ends with the same metrics as an uninterrupted run."""
from __future__ import annotations

import pytest

from fault_injection import InjectedFailure, run_failing
from gdna.config import TrialConfig
from gdna.train.checkpoint import STATE_FILE
from gdna.train.loop import run
from gdna.train.runtime import LocalRuntime
from gdna.train.trainer import read_events
from trials import cls_trial

pytestmark = pytest.mark.usefixtures("one_thread")


def _trial(data_root) -> TrialConfig:
    return cls_trial(data_root, max_len=64, n_train=96, n_eval=48, epochs=4)


def _drop(r: dict) -> dict:
    return {k: v for k, v in r.items() if k not in ("tokens_per_s", "time_train_s")}


@pytest.mark.parametrize("damage", ["truncated", "garbage", "both"])
def test_a_damaged_checkpoint_falls_back_or_restarts(damage, tmp_path, data_root):
    trial = _trial(data_root)
    ref = run({"trial": trial.to_dict()}, LocalRuntime(tmp_path / "ref"))
    cfg = {"trial": trial.to_dict(), "fail_after": 2, "fail_marker": str(tmp_path / "marker")}
    d = tmp_path / "run"
    with pytest.raises(InjectedFailure):
        run_failing(cfg, LocalRuntime(d))  # checkpoints after epochs 1 and 2 are kept
    older, newest = sorted(d.glob("checkpoint_*"))
    state = newest / STATE_FILE
    if damage == "truncated":  # a write cut short (disk full, a killed copy)
        state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    else:
        state.write_bytes(b"not a checkpoint" * 64)
    if damage == "both":
        (older / STATE_FILE).write_bytes(b"")
    rt = LocalRuntime(d)
    final = run_failing(cfg, rt)
    assert _drop(final) == _drop(ref)
    expected = [1, 2, 3, 4] if damage == "both" else [2, 3, 4]  # restarted, or continued from epoch 1
    assert [r["epoch"] for r in rt.reports] == expected
    events = read_events(str(tmp_path), "run")
    bad = [e for e in events if e["event"] == "unreadable_checkpoint"]
    assert [e["path"] for e in bad][:1] == [str(newest)] and len(bad) == (2 if damage == "both" else 1)
    assert any(e["event"] == "restart" for e in events) == (damage == "both")
