"""build_trainer wiring (no Ray cluster needed to construct a TorchTrainer) and the loop config."""
from __future__ import annotations

import os

import pytest

from gdna.config import DataConfig, ModelConfig, ResourcesConfig, TrainConfig, TrialConfig
from gdna.train.trainer import CHECKPOINTS_TO_KEEP, HEALTH_CHECK_ENV, build_trainer, loop_config


def _trial(tmp_path) -> TrialConfig:
    return TrialConfig(model=ModelConfig(arch="transformer"), data=DataConfig(data_root="rel/data", task="human_enhancers_cohn"),
                       train=TrainConfig(objective="cls"), init_checkpoint="pre/backbone.pt", export_dir="exp")


def test_build_trainer_maps_resources_and_run_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = ResourcesConfig(workers_per_trial=3, cpus_per_worker=0.5, gpus_per_worker=1.0, max_failures=4)
    tr = build_trainer(_trial(tmp_path), res, "trial-abc", "store")
    sc, rc = tr.scaling_config, tr.run_config
    assert sc.num_workers == 3 and sc.use_gpu is True
    assert sc.resources_per_worker == {"CPU": 0.5, "GPU": 1.0}
    assert rc.name == "trial-abc" and rc.storage_path == str(tmp_path / "store")
    assert rc.failure_config.max_failures == 4
    assert rc.checkpoint_config.num_to_keep == CHECKPOINTS_TO_KEEP
    assert os.environ[HEALTH_CHECK_ENV] and rc.worker_runtime_env["env_vars"][HEALTH_CHECK_ENV] == os.environ[HEALTH_CHECK_ENV]
    # workers run in another cwd: every path they use is absolute
    t = tr.train_loop_config["trial"]
    assert t["data"]["data_root"] == str(tmp_path / "rel/data")
    assert t["init_checkpoint"] == str(tmp_path / "pre/backbone.pt") and t["export_dir"] == str(tmp_path / "exp")
    cpu = build_trainer(_trial(tmp_path), ResourcesConfig(cpus_per_worker=0.25), "x", "store")
    assert cpu.scaling_config.resources_per_worker == {"CPU": 0.25} and cpu.scaling_config.use_gpu is False


def test_loop_config_carries_extra_keys_for_a_wrapped_loop(tmp_path):
    c = loop_config(_trial(tmp_path), fail_after=5, fail_marker="/m", verbose=None)
    assert (c["fail_after"], c["fail_marker"]) == (5, "/m") and "verbose" not in c
    assert set(loop_config(_trial(tmp_path))) == {"trial"}


def test_invalid_resources_are_config_errors(tmp_path):
    from gdna.errors import ConfigError

    with pytest.raises(ConfigError, match="resources.cpus_per_worker"):
        build_trainer(_trial(tmp_path), ResourcesConfig(cpus_per_worker=0.0), "x", str(tmp_path))
