"""`resources.runner: inline`: the loop inside the Tune trial's own process.

Fast: the runner's validation, what an inline trial requests, the per-trial reset of a reused process.
Slow (one local Ray, through the sweep's own `trainable` in Tuners built as `fit_stage` builds them):
- the same seeded trial gives identical final metrics and checkpoints with `train` (1 worker) and `inline`;
- three trials in ONE reused process (a diverged one, a mamba of another seed, then the first trial again)
  give exactly what each gives alone in a fresh process; the diverged one ends `diverged`, not errored;
- an inline trial that crashes after epoch 1 is retried by Tune (max_failures) from its Tune checkpoint
  and ends bit-exact with the uninterrupted run.
"""
from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path

import cloudpickle
import numpy as np
import pytest
import torch
from ray import cloudpickle as ray_cloudpickle

from fault_injection import run_failing
from gdna.config import DataConfig, ModelConfig, ResourcesConfig, TrainConfig, TrialConfig
from gdna.errors import ConfigError
from gdna.sweep.trainable import inline_resources
from gdna.train import checkpoint as C
from gdna.train.events import read_events
from gdna.train.runtime import TORCH_DEFAULT_SEED, fresh_process_state

TIMING = ("tokens_per_s", "time_train_s")


def test_inline_needs_one_worker_and_a_known_runner():
    ResourcesConfig(runner="inline", workers_per_trial=1).validate()
    ResourcesConfig(runner="train", workers_per_trial=2).validate()
    with pytest.raises(ConfigError, match=r"resources\.runner: inline .* workers_per_trial is 2") as e:
        ResourcesConfig(runner="inline", workers_per_trial=2).validate()
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match=r"resources\.runner: must be one of train, inline, got 'ddp'"):
        ResourcesConfig(runner="ddp").validate()


def test_an_inline_trial_holds_its_worker_resources_and_no_driver():
    from gdna.cluster.capacity import fit_count, trial_demand

    r = ResourcesConfig(runner="inline", cpus_per_worker=0.5, cpus_per_trial=0.1)
    assert inline_resources(r) == {"cpu": 0.5}
    assert trial_demand(r) == {"CPU": 0.5, "GPU": 0.0}
    assert fit_count({"CPU": 2.0}, r) == 4  # the train runner fits 3: 0.1 driver + 0.5 worker each
    assert fit_count({"CPU": 2.0}, ResourcesConfig(cpus_per_worker=0.5, cpus_per_trial=0.1)) == 3
    g = ResourcesConfig(runner="inline", cpus_per_worker=2, gpus_per_worker=0.25)
    assert inline_resources(g) == {"cpu": 2.0, "gpu": 0.25}
    assert fit_count({"CPU": 16.0, "GPU": 1.0}, g) == 4


def test_fresh_process_state_undoes_what_a_previous_trial_left(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    n = torch.get_num_threads()
    try:
        def reference():
            torch.manual_seed(TORCH_DEFAULT_SEED)
            np.random.seed(0)
            random.seed(0)
            return torch.rand(3), np.random.rand(3), random.random()

        want = reference()
        # a previous trial: other thread count, RNGs advanced, autograd off
        torch.set_num_threads(2)
        torch.manual_seed(123)
        torch.rand(100)
        np.random.rand(100)
        random.random()
        torch.set_grad_enabled(False)
        assert fresh_process_state(0.5) == torch.device("cpu")
        assert torch.get_num_threads() == 1 and torch.is_grad_enabled()
        got = torch.rand(3), np.random.rand(3), random.random()
        assert torch.equal(got[0], want[0]) and np.array_equal(got[1], want[1]) and got[2] == want[2]
        fresh_process_state(2.7)
        assert torch.get_num_threads() == 2  # what Ray gives a 2.7-CPU worker (floor)
        monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's setting wins, as in a Ray worker
        fresh_process_state(0.5)
        assert torch.get_num_threads() == 3
    finally:
        torch.set_grad_enabled(True)
        torch.set_num_threads(n)


# ---------------------------------------------------------------------------------------------
# through Tune


class FixedResolver:
    """A stand-in for the sweep's Resolver: config {"i": n} → the n-th (key, trial dict, meta, name)."""

    def __init__(self, trials: list[TrialConfig]):
        self.out = [(t.identity(), t.to_dict(), {"arch": t.model.arch, "strategy": "scratch"}, f"t{i}")
                    for i, t in enumerate(trials)]

    def __call__(self, config):
        return self.out[config["i"]]


def failing_inline(config, resolver, resources, train_storage, marker):
    """The inline trainable's path with the tests' fault injection (crash once after epoch 1)."""
    from gdna.config import ResourcesConfig as R
    from gdna.config import from_dict
    from gdna.sweep.trainable import run_inline

    key, trial_dict, _, _ = resolver(config)
    run_inline(TrialConfig.from_dict(trial_dict), from_dict(R, resources), key, train_storage,
               loop=run_failing, fail_after=1, fail_marker=marker)


# Ray workers cannot import the tests: this module travels by value (Tune's with_parameters pickles
# with Ray's own cloudpickle), as does the fault injection (registered where it is defined)
for _pickler in (cloudpickle, ray_cloudpickle):
    _pickler.register_pickle_by_value(sys.modules[__name__])


def cls_trial(data_root, arch="transformer", **train) -> TrialConfig:
    t = dict(objective="cls", lr=3e-3, batch_size=32, epochs=2, seed=0)
    t.update(train)
    model = ModelConfig.for_arch(arch, d_model=32, n_heads=4) if arch == "transformer" else ModelConfig.for_arch(arch, d_model=32)
    return TrialConfig(
        model=model,
        data=DataConfig(data_root=str(data_root), task="human_enhancers_cohn", max_len=100,
                        max_train_examples=160, max_eval_examples=64),
        train=TrainConfig(**t),
    ).validate()


@pytest.fixture(scope="module")
def ray_session():
    import ray

    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def tune_stage(tmp: Path, trials: list[TrialConfig], runner: str, fn=None, **fn_kw):
    """Run `trials` one at a time through a Tuner built like `fit_stage`; returns (results by i, train dir)."""
    from ray import tune

    from gdna.sweep.trainable import trainable
    from gdna.train.trainer import CHECKPOINTS_TO_KEEP

    r = ResourcesConfig(runner=runner, workers_per_trial=1, cpus_per_worker=1.0, cpus_per_trial=0.1, max_failures=1)
    train_storage = str(tmp / "train")
    inline = runner == "inline"
    wrapped = tune.with_parameters(fn or trainable, resolver=FixedResolver(trials), resources=r.__dict__.copy(),
                                   train_storage=train_storage, **fn_kw)
    tuner = tune.Tuner(
        tune.with_resources(wrapped, inline_resources(r) if inline else {"cpu": r.cpus_per_trial}),
        param_space={"i": tune.grid_search(list(range(len(trials))))},
        tune_config=tune.TuneConfig(max_concurrent_trials=1, reuse_actors=inline),
        run_config=tune.RunConfig(name="stage", storage_path=str(tmp / "tune"), verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=r.max_failures),
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=CHECKPOINTS_TO_KEEP)),
    )
    grid = tuner.fit()
    out = {}
    for res in grid:
        assert res.error is None, res.error
        out[res.config["i"]] = res.metrics
    return out, train_storage


def final_state(train_storage: str, key: str, metrics: dict) -> dict:
    """The trial's final checkpoint: the inline one's from its reported path, a TorchTrainer's from its run dir."""
    marker = Path(train_storage) / key / "gdna_result.json"
    path = (json.loads(marker.read_text()) if marker.is_file() else metrics).get("checkpoint_path")
    state = C.load_state(path)
    assert state["done"] and state["identity"] == key
    return state


def same_state(a: dict, b: dict) -> None:
    strip = lambda m: {k: v for k, v in m.items() if k not in TIMING}
    assert strip(a["final"]) == strip(b["final"])
    assert [strip(h) for h in a["history"]] == [strip(h) for h in b["history"]]
    for part in ("model",):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    for k in a["best"]["model"]:
        assert torch.equal(a["best"]["model"][k], b["best"]["model"][k]), ("best", k)
    oa, ob = a["optimizer"]["state"], b["optimizer"]["state"]
    assert oa.keys() == ob.keys()
    for i in oa:
        for k in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(oa[i][k], ob[i][k]), (i, k)


def strip_metrics(m: dict) -> dict:
    keep = ("status", "epoch", "step", "train_loss", "val_loss", "val_acc", "test_acc", "test_loss",
            "best_val_acc", "best_epoch", "test_balanced_acc", "final")
    return {k: m[k] for k in keep if k in m}


@pytest.fixture(scope="module")
def runs(ray_session, tmp_path_factory, data_root):
    """a (reference) with train and inline in fresh processes; b (mamba, seed 1) in a fresh process; then
    d (diverges), b, a one after another in one reused process."""
    tmp = tmp_path_factory.mktemp("inline")
    a = cls_trial(data_root)
    b = cls_trial(data_root, arch="mamba", seed=1, lr=2e-3)  # another architecture (scan scratch buffers), seed
    d = cls_trial(data_root, lr=1e6)
    out = {"tmp": tmp, "keys": (a.identity(), b.identity(), d.identity()), "a": a}
    out["train"] = tune_stage(tmp / "train", [a], "train")
    out["fresh_a"] = tune_stage(tmp / "fresh_a", [a], "inline")
    out["fresh_b"] = tune_stage(tmp / "fresh_b", [b], "inline")
    out["reused"] = tune_stage(tmp / "reused", [d, b, a], "inline")
    return out


@pytest.mark.slow
def test_inline_equals_train(runs):
    ka = runs["keys"][0]
    (train_m, train_dir), (fresh_a, fresh_a_dir) = runs["train"], runs["fresh_a"]
    assert train_m[0]["status"] == "finished" and fresh_a[0]["status"] == "finished"
    assert strip_metrics(fresh_a[0]) == strip_metrics(train_m[0])
    same_state(final_state(fresh_a_dir, ka, fresh_a[0]), final_state(train_dir, ka, train_m[0]))
    # the inline checkpoint is a Tune checkpoint of the trial (in the Tune experiment), reported as checkpoint_path
    assert Path(fresh_a[0]["checkpoint_path"]).is_relative_to(runs["tmp"] / "fresh_a" / "tune")
    assert not list(Path(fresh_a_dir, ka).glob("checkpoint_*"))
    assert sum(e["event"] == "start" for e in read_events(fresh_a_dir, ka)) == 1


@pytest.mark.slow
def test_a_reused_process_gives_what_fresh_processes_give(runs):
    ka, kb, kd = runs["keys"]
    (fresh_a, fresh_a_dir), (fresh_b, fresh_b_dir), (reused, reused_dir) = runs["fresh_a"], runs["fresh_b"], runs["reused"]
    # one process ran d, b, a in turn (Tune reused it) ...
    pids = {k: {e["pid"] for e in read_events(reused_dir, k)} for k in (kd, kb, ka)}
    assert all(len(p) == 1 for p in pids.values()) and len(set.union(*pids.values())) == 1, pids
    assert pids[ka] != {e["pid"] for e in read_events(fresh_a_dir, ka)}
    # ... the diverged one ended diverged (not errored), and each other gave what it gives in a fresh process
    assert reused[0]["status"] == "diverged" and reused[0]["final"] is True
    assert strip_metrics(reused[1]) == strip_metrics(fresh_b[0])
    assert strip_metrics(reused[2]) == strip_metrics(fresh_a[0])
    same_state(final_state(reused_dir, kb, reused[1]), final_state(fresh_b_dir, kb, fresh_b[0]))
    same_state(final_state(reused_dir, ka, reused[2]), final_state(fresh_a_dir, ka, fresh_a[0]))
    for k in (kd, kb, ka):
        assert sum(e["event"] == "start" for e in read_events(reused_dir, k)) == 1


@pytest.mark.slow
def test_inline_crash_is_retried_from_its_tune_checkpoint_bit_exact(runs):
    tmp, ka = runs["tmp"], runs["keys"][0]
    ref, ref_dir = runs["fresh_a"]
    got, got_dir = tune_stage(tmp / "crash", [runs["a"]], "inline", fn=failing_inline, marker=str(tmp / "fired"))
    assert (tmp / "fired").read_text() == "1"  # it did crash after epoch 1
    starts = [e for e in read_events(got_dir, ka) if e["event"] == "start"]
    assert [s["resumed_from"] for s in starts] == [None, 1]  # Tune retried it from the epoch-1 checkpoint
    assert strip_metrics(got[0]) == strip_metrics(ref[0])
    same_state(final_state(got_dir, ka, got[0]), final_state(ref_dir, ka, ref[0]))


def test_a_sweep_stored_before_the_runner_key_resumes_and_a_changed_runner_is_refused(tmp_path, data_root, monkeypatch):
    import yaml

    from gdna.sweep.spec import load_spec
    from gdna.sweep.state import SweepState

    monkeypatch.setenv("GDNA_DATA_ROOT", str(data_root))
    spec = load_spec(Path(__file__).resolve().parents[1] / "sweeps" / "quickstart.yaml", storage=str(tmp_path))
    SweepState(spec).prepare(resume=False)
    stored = spec.sweep_dir() / "spec.yaml"
    raw = yaml.safe_load(stored.read_text())
    raw["resources"].pop("runner")  # as written before `runner` existed
    stored.write_text(yaml.safe_dump(raw))
    (spec.sweep_dir() / "driver.pid").unlink()
    SweepState(spec).prepare(resume=True)  # the default (train) fills the missing key
    (spec.sweep_dir() / "driver.pid").unlink()
    raw["resources"]["runner"] = "inline"
    stored.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"^resources\.runner: the spec changed"):
        SweepState(spec).prepare(resume=True)
