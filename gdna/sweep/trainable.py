"""One Tune trial: resolve its config, then build the stage's TorchTrainer and fit it.

Trial = a Tune function trainable that builds the TorchTrainer through
`gdna.train.trainer.build_trainer(trial, resources, name=<trial key>, storage_path=<sweep>/train,
callbacks=report_callbacks())` (TuneReportCallback + node ids) and calls `fit()`. The stable Train run name (the trial identity)
makes an interrupted trial continue from its last checkpoint; a finished trial leaves
`<sweep>/train/<key>/gdna_result.json` so that it is never trained again (a restored Tune experiment may
replay a trial whose completion was not yet saved: the trainable then only re-reports the stored final
metrics). A finished pretraining (this sweep's or another's) is recognised by its export.

With `resources.runner: inline` the trial instead runs the same `gdna.train.loop.run` in its own Tune
process (`run_inline`: reports through `tune.report`, Tune checkpoints, the same marker and events under
`<sweep>/train/<key>/`); Tune reuses the process for the next trial (`reuse_actors`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Mapping

from gdna.config import ResourcesConfig, TrialConfig, from_dict
from gdna.sweep.plan import Cell, Plan
from gdna.train.export import is_exported, read_export_metrics

RESULT_MARKER = "gdna_result.json"


class Resolver:
    """Tune config → (trial key, resolved trial dict, meta, run name). Picklable (travels with the Tuner)."""

    def __init__(self, plan: Plan, stage: str, selected: Mapping[str, str] | None = None):
        self.stage = stage
        self.spec = plan.spec
        self.plan = plan
        self.selected = dict(selected or {})
        self.jobs = {j.key: j for j in plan.pretrain}
        self.cells = {c.id: c for c in plan.cells}
        self._cache: dict[str, tuple] = {}

    def __getstate__(self):
        d = self.__dict__.copy()
        d["_cache"] = {}
        return d

    def __call__(self, config: Mapping[str, Any]) -> tuple[str, dict, dict, str]:
        ck = json.dumps(config, sort_keys=True, default=str)
        if ck in self._cache:
            return self._cache[ck]
        if self.stage == "pretrain":
            job = self.jobs[config["job"]]
            t = job.trial
            name = f"{job.group}-lr{t.train.lr:g}-ctx{t.data.context_len}"
            meta = job.meta()
            out = (job.key, t.to_dict(), meta, name)
        else:
            cell: Cell = self.cells[config["cell"]]
            axes = {k: v for k, v in config.items() if k != "cell"}
            trial, key = self.plan.finetune_trial(cell, axes, self.selected)
            meta = self.plan.cell_meta(cell, axes)
            pre = self.jobs.get(self.selected.get(cell.group or "", ""))
            if pre is not None:  # which pretraining this fine-tuning starts from (for the analysis)
                meta["params"] = {"pretrain_key": pre.key, "pretrain_context_len": pre.trial.data.context_len,
                                  "pretrain_lr": pre.trial.train.lr}
            t = trial.train
            ctx = f"-c{cell.context_len}" if cell.context_len else ""
            name = f"{cell.arch}-{cell.strategy}-{cell.task}{ctx}-lr{t.lr:g}-b{t.batch_size}-s{cell.seed}-f{cell.fold}"
            out = (key, trial.to_dict(), meta, name)
        out[2]["data_fingerprint"] = out[1]["data"].get("fingerprint", "")
        self._cache[ck] = out
        return out


def trainable(config: dict, resolver: Resolver, resources: dict, train_storage: str) -> None:
    """One Tune trial: build the TorchTrainer (stable name = trial key) and fit it; re-raise failures."""
    from ray import tune

    key, trial_dict, meta, _ = resolver(config)
    marker = Path(train_storage) / key / RESULT_MARKER
    trial = TrialConfig.from_dict(trial_dict)
    exported = trial.export_dir is not None and is_exported(trial.export_dir)
    if marker.is_file() or exported:
        # finished before (this sweep, or another sweep for a shared pretraining): replay, don't train
        final = json.loads(marker.read_text()) if marker.is_file() else read_export_metrics(trial.export_dir)
        final = {k: v for k, v in final.items() if isinstance(v, (int, float, str, bool))}
        final.setdefault("status", "finished")
        final["final"] = True
        final["gdna_replayed"] = True
        tune.report(final)
        return
    if resources.get("runner") == "inline":  # the loop in this process (reused by Tune for the next trial)
        _write_marker(marker, run_inline(trial, from_dict(ResourcesConfig, resources), key, train_storage))
        return
    from gdna.cluster.nodes import report_callbacks
    from gdna.train.trainer import build_trainer, prune_unrecorded_checkpoints

    trainer = build_trainer(  # TuneReportCallback + the nodes the driver and workers run on
        trial, from_dict(ResourcesConfig, resources), name=key, storage_path=train_storage,
        callbacks=report_callbacks(),
    )
    result = trainer.fit()
    if getattr(result, "error", None) is not None:
        raise result.error
    prune_unrecorded_checkpoints(train_storage, key)
    metrics = dict(result.metrics or {})
    metrics = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool))}
    if getattr(result, "checkpoint", None) is not None:
        metrics.setdefault("checkpoint_path", result.checkpoint.path)
    marker.parent.mkdir(parents=True, exist_ok=True)
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(json.dumps(metrics, default=str))
    tmp.replace(marker)


def run_inline(trial: TrialConfig, resources: ResourcesConfig, key: str, train_storage: str,
               loop: Callable[[dict, Any], dict] | None = None, **loop_extra: Any) -> dict[str, Any]:
    """`resources.runner: inline`: `gdna.train.loop.run` in this Tune trial's own process through a
    `TuneRuntime` (reports via `tune.report`, Tune checkpoints, events in `<train_storage>/<key>/`), after
    resetting what the previous trial of a reused process may have left (`fresh_process_state`).
    `loop(config, runtime)` replaces `gdna.train.loop.run` and `loop_extra` goes into its config (the
    tests' fault injection wraps the same loop this way, as with build_trainer)."""
    import ray

    from gdna.cluster.nodes import DRIVER_NODE_KEY, WORKER_IPS_KEY, WORKER_NODES_KEY
    from gdna.train.events import run_dir
    from gdna.train.loop import run
    from gdna.train.runtime import TuneRuntime, fresh_process_state
    from gdna.train.trainer import loop_config

    device = fresh_process_state(resources.cpus_per_worker, gpu=resources.gpus_per_worker > 0)
    node = ray.get_runtime_context().get_node_id()
    extra = {DRIVER_NODE_KEY: node, WORKER_NODES_KEY: node, WORKER_IPS_KEY: ray.util.get_node_ip_address()}
    rt = TuneRuntime(run_dir(train_storage, key), device=device, extra=extra)
    final = (loop or run)(loop_config(trial, **loop_extra), rt)
    metrics = {k: v for k, v in final.items() if isinstance(v, (int, float, str, bool))}
    if rt.last_checkpoint:
        metrics["checkpoint_path"] = rt.last_checkpoint
    return metrics


def inline_resources(r: ResourcesConfig) -> dict[str, float]:
    """What an inline trial requests from Tune: its one worker's CPUs and GPU (it trains in that
    process: no separate driver, and no driver resource, so it runs where the GPUs are)."""
    req = {"cpu": float(r.cpus_per_worker)}
    if r.gpus_per_worker > 0:
        req["gpu"] = float(r.gpus_per_worker)
    return req


def _write_marker(marker: Path, metrics: dict[str, Any]) -> None:
    marker.parent.mkdir(parents=True, exist_ok=True)
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(json.dumps(metrics, default=str))
    tmp.replace(marker)
