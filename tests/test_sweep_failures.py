"""An errored trial says why: the root exception under Ray's wrappers, in one line, in the summary,
`gdna status` and the trial's MLflow run; the full traceback in a file under the sweep directory."""
from __future__ import annotations

from pathlib import Path

import yaml
from ray.exceptions import RayTaskError
from ray.train import ControllerError, WorkerGroupError

from gdna.errors import DataError
from gdna.sweep.failures import explain, root_cause, save_traceback

MSG = "/w/finetune/working_dirs/shared/data/genomic_benchmarks/t: task folder not found"


def _as_ray_delivers_it() -> BaseException:
    """RayTaskError(WorkerGroupError) ⊃ {rank 1: RayTaskError(DataError), rank 0: ...} as the driver gets it."""
    try:
        raise DataError(MSG)
    except DataError as e:
        worker = RayTaskError("train_fn", "Traceback (most recent call last): ...", e, pid=7, ip="10.0.0.2")
    other = RayTaskError("train_fn", "tb", RuntimeError("rank 1 saw rank 0 go"), pid=8, ip="10.0.0.2")
    group = WorkerGroupError("worker 0 failed", {1: other, 0: worker})
    return RayTaskError("ImplicitFunc.train", "ray::ImplicitFunc.train() (pid=9, ip=...)", group, pid=9,
                        ip="10.0.0.1").as_instanceof_cause()


def test_the_root_cause_is_found_under_every_ray_wrapper(tmp_path):
    exc = _as_ray_delivers_it()
    assert type(exc).__name__ == "RayTaskError(WorkerGroupError)"
    assert isinstance(root_cause(exc), DataError)
    assert explain(exc) == f"DataError: {MSG}"
    assert explain(ControllerError(ValueError("bad scaling config"))) == "ValueError: bad scaling config"
    path = save_traceback(tmp_path, "mamba-scratch-t-lr0.001-b32-s0-f0", exc)
    assert path == tmp_path / "errors" / "mamba-scratch-t-lr0.001-b32-s0-f0.txt"
    text = path.read_text()
    assert text.splitlines()[0] == f"DataError: {MSG}" and "WorkerGroupError" in text and "caused by" in text


class _ErroredTrial:  # the two things Tune's Trial gives the callback
    trial_id, config, error_file = "t0", {"cell": "c"}, "/sweep/tune/finetune/t0/error.txt"

    def get_pickled_error(self):
        return _as_ray_delivers_it()


def test_the_cause_reaches_mlflow_and_gdna_status(tmp_path, capsys, data_root):
    from gdna.cli import main
    from gdna.sweep.spec import load_spec
    from gdna.tracking import SweepTracker, default_artifact_location
    from gdna.tracking.callback import MLflowTrackingCallback

    repo = Path(__file__).resolve().parents[1]
    spec = load_spec(repo / "sweeps" / "quickstart.yaml", data_root=str(data_root), storage=str(tmp_path))
    d = spec.sweep_dir()
    d.mkdir(parents=True)
    (d / "spec.yaml").write_text(yaml.safe_dump(spec.to_yaml_dict(), sort_keys=False))
    tracker = SweepTracker(spec.tracking(), spec.name, default_artifact_location(spec.tracking(), d))
    tracker.stage_run("finetune")
    meta = {"stage": "finetune", "arch": "mamba", "strategy": "scratch", "task": "t", "seed": 0, "fold": 0}
    resolver = lambda config: ("k0", {"train": {"lr": 1e-3}}, meta, "mamba-scratch-t-lr0.001-b32-s0-f0")  # noqa: E731
    cb = MLflowTrackingCallback(tracker, "finetune", resolver, str(d / "train"))
    cb.on_trial_error(0, [], _ErroredTrial())
    run = tracker.client.get_run(tracker.find_trial_run("finetune", "k0"))
    assert run.data.tags["gdna.status"] == "errored" and run.data.tags["gdna.error"] == f"DataError: {MSG}"
    assert main(["status", spec.name, "--storage", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"errored finetune mamba-scratch-t-lr0.001-b32-s0-f0: DataError: {MSG}" in out
