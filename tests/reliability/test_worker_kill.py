"""SIGKILL of a real Ray Train worker process mid-trial: Train restarts the worker group from the last
checkpoint (FailureConfig.max_failures) and the trial ends with the same metrics as an uninterrupted run
(bit-exact on CPU), the restart counted from the run's own events."""
from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
import time

import pytest
import torch

from gdna.config import ResourcesConfig
from gdna.train import build_trainer, read_events
from gdna.train.loop import run
from gdna.train.runtime import LocalRuntime
from trials import cls_trial

pytestmark = [pytest.mark.slow, pytest.mark.reliability]


def test_sigkill_of_a_training_worker_resumes_from_its_checkpoint(tmp_path, data_root):
    import ray

    t = cls_trial(data_root, n_train=320, n_eval=128, epochs=6)
    torch.set_num_threads(1)  # as in the Ray worker
    ref = run({"trial": t.to_dict()}, LocalRuntime(tmp_path / "ref"))
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
    ray_tmp = tempfile.mkdtemp(prefix="gdna-ray-")  # short: Ray's socket paths are limited to 107 bytes
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False, _temp_dir=ray_tmp)
    try:
        res = ResourcesConfig(workers_per_trial=1, cpus_per_worker=1.0, max_failures=1)
        out: dict = {}
        fit = threading.Thread(target=lambda: out.update(r=build_trainer(t, res, "kill", str(tmp_path)).fit()))
        fit.start()
        run_dir = tmp_path / "kill"
        deadline, killed = time.monotonic() + 600, None
        while time.monotonic() < deadline and fit.is_alive() and killed is None:
            starts = [e for e in read_events(str(tmp_path), "kill") if e["event"] == "start"]
            # two checkpoint dirs on disk: the first is surely registered (the second may be mid-upload)
            if starts and sum(p.is_dir() for p in run_dir.glob("checkpoint_*")) >= 2:
                killed = starts[0]["pid"]
                os.kill(killed, signal.SIGKILL)  # the worker process itself, from outside
            time.sleep(0.05)
        fit.join(timeout=600)
        assert killed is not None, "the trial ended before a checkpoint could be awaited"
        result = out["r"]
        assert result.error is None, result.error
        drop = lambda r: {k: v for k, v in r.items() if k not in ("tokens_per_s", "time_train_s")}  # noqa: E731
        assert drop(result.metrics) == drop(ref)
        starts = [e for e in read_events(str(tmp_path), "kill") if e["event"] == "start"]
        assert len(starts) == 2 and starts[1]["pid"] != killed and starts[1]["resumed_from"] >= 1
    finally:
        ray.shutdown()
        shutil.rmtree(ray_tmp, ignore_errors=True)
