"""Run a sweep: one Ray Tune Tuner per stage (pretrain → finetune), MLflow from the driver, resumable.

Trial = a Tune function trainable that builds the stage's TorchTrainer through
`gdna.train.trainer.build_trainer(trial, resources, name=<trial key>, storage_path=<sweep>/train,
callbacks=[TuneReportCallback()])` and calls `fit()`. The stable Train run name makes an interrupted
trial continue from its last checkpoint; a finished trial leaves `<sweep>/train/<key>/gdna_result.json`
so that it is never trained again (a restored Tune experiment may replay a trial whose completion was
not yet saved: the trainable then only re-reports the stored final metrics).

The loop marks its last report `final=True` (never Tune's reserved `done`: Tune would kill the trial
on it before its TorchTrainer released its worker placement group). Reports a killed driver never
received are back-filled on resume from the Train checkpoint's history (MLflow steps are deduped per key).

State under `<storage>/sweeps/<name>/`: spec.yaml (resolved), stages.json, tune/<stage>/ (Tune
experiments, restored with resume_errored=True), train/ (Train runs), mlflow.db + artifacts/.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Mapping

import yaml

from gdna.config import TrialConfig, from_dict, ResourcesConfig
from gdna.errors import ConfigError
from gdna.sweep.plan import (
    Cell,
    Plan,
    build_plan,
    read_pretrain_metrics,
    select_pretraining,
)
from gdna.sweep.spec import SweepSpec, spec_from_dict
from gdna.tracking import (
    SweepTracker,
    default_artifact_location,
    numeric_metrics,
    trial_params,
    trial_tags,
)

from gdna.train.trainer import DEFAULT_HEALTH_CHECK_S, HEALTH_CHECK_ENV

RESULT_MARKER = "gdna_result.json"
ENV_DEFAULTS = {
    HEALTH_CHECK_ENV: DEFAULT_HEALTH_CHECK_S,  # Ray's default 2 s costs 2 s per report
    "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",  # a replayed finished trial reports only final metrics
    "RAY_AIR_NEW_OUTPUT": "0",  # use our CLIReporter columns
    "RAY_DEDUP_LOGS": "1",
    "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "600",  # worker start-up is slow on a loaded 2-core box
}


# ---------------------------------------------------------------------------------------------
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
            out = (job.key, t.to_dict(), job.meta(), name)
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
        self._cache[ck] = out
        return out


def _trainable(config: dict, resolver: Resolver, resources: dict, train_storage: str) -> None:
    """One Tune trial: build the TorchTrainer (stable name = trial key) and fit it; re-raise failures."""
    from ray import tune

    key, trial_dict, meta, _ = resolver(config)
    marker = Path(train_storage) / key / RESULT_MARKER
    trial = TrialConfig.from_dict(trial_dict)
    done_json = Path(trial.export_dir) / "done.json" if trial.export_dir else None
    if marker.is_file() or (done_json is not None and done_json.is_file()):
        # finished before (this sweep, or another sweep for a shared pretraining): replay, don't train
        final = json.loads(marker.read_text()) if marker.is_file() else read_pretrain_metrics(done_json.parent)
        final = {k: v for k, v in final.items() if isinstance(v, (int, float, str, bool))}
        final.setdefault("status", "finished")
        final["final"] = True
        final["gdna_replayed"] = True
        tune.report(final)
        return
    from ray.tune.integration.ray_train import TuneReportCallback

    from gdna.train.trainer import build_trainer

    trainer = build_trainer(
        trial, from_dict(ResourcesConfig, resources), name=key, storage_path=train_storage,
        callbacks=[TuneReportCallback()],
    )
    result = trainer.fit()
    if getattr(result, "error", None) is not None:
        raise result.error
    metrics = dict(result.metrics or {})
    metrics = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool))}
    if getattr(result, "checkpoint", None) is not None:
        metrics.setdefault("checkpoint_path", result.checkpoint.path)
    marker.parent.mkdir(parents=True, exist_ok=True)
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(json.dumps(metrics, default=str))
    tmp.replace(marker)


# ---------------------------------------------------------------------------------------------
def _callback_class():
    from ray.tune import Callback

    class MLflowTrackingCallback(Callback):
        """Mirrors one stage's trials into MLflow: the only MLflow writer (runs in the driver)."""

        def __init__(self, tracker: SweepTracker, stage: str, resolver: Resolver, train_storage: str = ""):
            self.tracker, self.stage, self.resolver = tracker, stage, resolver
            self.train_storage = train_storage
            self._runs: dict[str, str] = {}
            self._status: dict[str, str] = {}

        def __getstate__(self):
            return {"tracker": self.tracker, "stage": self.stage, "resolver": self.resolver,
                    "train_storage": self.train_storage}

        def _step_of(self, result) -> int:
            key = "step" if self.stage == "pretrain" else "epoch"
            try:
                return int(result.get(key, result.get("training_iteration", 0)))
            except (TypeError, ValueError):
                return int(result.get("training_iteration", 0) or 0)

        def _backfill(self, rid: str, trial, result) -> None:
            """A resumed trial: log the reports that workers made before the interruption but this
            driver never received (they are in the Train checkpoint's history); steps already logged are skipped."""
            key = self.resolver(trial.config)[0]
            ck = result.get("checkpoint_path")
            if not ck or not Path(ck).is_dir():
                storage = getattr(self, "train_storage", "")
                cks = sorted(Path(storage, key).glob("checkpoint_*")) if storage else []
                ck = str(cks[-1]) if cks else None
            if not ck:
                return
            try:
                from gdna.train.checkpoint import load_state

                history = load_state(ck).get("history") or []
            except Exception:  # noqa: BLE001 - best effort: the final metrics are logged regardless
                return
            for h in history:
                self.tracker.log_metrics(rid, numeric_metrics(h), self._step_of(h))

        def __setstate__(self, state):
            self.__dict__.update(state)
            self._runs, self._status = {}, {}

        def _run(self, trial) -> str:
            rid = self._runs.get(trial.trial_id)
            if rid is None:
                key, trial_dict, meta, run_name = self.resolver(trial.config)
                rid = self.tracker.trial_run(
                    self.stage, key, run_name=run_name, tags=trial_tags(meta, key),
                    params={**trial_params(trial_dict, meta.get("strategy", "")), **meta.get("params", {})},
                    config=trial_dict,
                )
                self._runs[trial.trial_id] = rid
            return rid

        def on_trial_start(self, iteration, trials, trial, **info):
            self.tracker.set_status(self._run(trial), "running")

        def on_trial_result(self, iteration, trials, trial, result, **info):
            rid = self._run(trial)
            self.tracker.log_metrics(rid, numeric_metrics(result), self._step_of(result))
            if result.get("final") and self.tracker.resumed(rid):
                self._backfill(rid, trial, result)
            ck = result.get("export_path") or result.get("checkpoint_path")
            if ck:
                self.tracker.client.set_tag(rid, "checkpoint_path", str(ck))
            st = result.get("status")
            if result.get("final"):
                self._status[trial.trial_id] = st if st in ("finished", "diverged") else "finished"

        def on_trial_complete(self, iteration, trials, trial, **info):
            rid = self._run(trial)
            st = self._status.get(trial.trial_id)
            extra = {}
            if st is None:
                last = trial.last_result or {}
                st = last.get("status") if last.get("status") in ("finished", "diverged") else "finished"
                if not last.get("final"):
                    extra["gdna.early_stopped"] = "true"  # stopped by the scheduler (ASHA)
            self.tracker.set_status(rid, st, **extra)

        def on_trial_error(self, iteration, trials, trial, **info):
            rid = self._run(trial)
            err = getattr(trial, "error_file", None)
            self.tracker.set_status(rid, "errored", **({"gdna.error_file": err} if err else {}))

    return MLflowTrackingCallback


# ---------------------------------------------------------------------------------------------
class SweepRunner:
    def __init__(self, spec: SweepSpec, resume: bool = False, out=sys.stdout):
        self.spec = spec
        self.resume = resume
        self.out = out
        self.dir = spec.sweep_dir()
        self.plan = build_plan(spec)
        self.tracker = SweepTracker(spec.tracking(), spec.name, default_artifact_location(spec.tracking(), self.dir))
        self.errors: list[str] = []
        self.rows: list[dict] = []

    # state -----------------------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.dir / "stages.json"

    def state(self) -> dict:
        try:
            return json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return {}

    def save_state(self, **stages: Any) -> None:
        st = self.state()
        for k, v in stages.items():
            st[k] = {**st.get(k, {}), **v}
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(st, indent=2, sort_keys=True))
        tmp.replace(self.state_path)

    def prepare(self) -> None:
        spec_file = self.dir / "spec.yaml"
        new = self.spec.to_yaml_dict()
        if spec_file.exists():
            if not self.resume:
                raise ConfigError(
                    f"sweep '{self.spec.name}' already exists at {self.dir} (use --resume to continue it, or give it another name)"
                )
            old = yaml.safe_load(spec_file.read_text())
            diff = _first_diff(_comparable(old), _comparable(json.loads(json.dumps(new))))
            if diff:
                raise ConfigError(
                    f"{diff}: the spec changed since sweep '{self.spec.name}' started (resume it unchanged with `gdna resume {self.spec.name}`, or use a new name)"
                )
        elif self.resume:  # `gdna sweep <spec> --resume` = run or continue (idempotent)
            print(f"sweep '{self.spec.name}': nothing to resume at {self.dir}; starting it", file=self.out, flush=True)
        pid = _alive_driver(self.dir)
        if pid is not None:
            raise ConfigError(f"sweep '{self.spec.name}' is running right now (driver pid {pid}); see `gdna status {self.spec.name}`")
        self.dir.mkdir(parents=True, exist_ok=True)
        if not spec_file.exists():
            spec_file.write_text(yaml.safe_dump(json.loads(json.dumps(new)), sort_keys=False))
        (self.dir / "driver.pid").write_text(str(os.getpid()))

    # ray ---------------------------------------------------------------------------------------
    def init_ray(self) -> None:
        import ray

        for k, v in ENV_DEFAULTS.items():
            os.environ.setdefault(k, v)
        address = self.spec.ray_address or os.environ.get("RAY_ADDRESS") or "local"
        kw: dict[str, Any] = {"address": address, "ignore_reinit_error": True, "log_to_driver": self.spec.verbose >= 2}
        pinned = {}
        if address == "local":
            if os.environ.get("GDNA_RAY_TMPDIR"):
                kw["_temp_dir"] = os.environ["GDNA_RAY_TMPDIR"]
            if os.environ.get("GDNA_RAY_NUM_CPUS"):
                kw["num_cpus"] = float(os.environ["GDNA_RAY_NUM_CPUS"])
            # Pin our GCS port and tell our workers its address: Ray Train's placement-group cleaner
            # looks the cluster up by address, and with several local Ray instances on one machine
            # (several users / test runs) "auto" is ambiguous.
            from ray._private.services import get_node_ip_address

            port = _free_port()
            pinned = {"RAY_GCS_SERVER_PORT": str(port), "RAY_ADDRESS": f"{get_node_ip_address()}:{port}"}
        else:  # a cluster: the workers do not inherit our environment
            kw["runtime_env"] = {"env_vars": {k: os.environ[k] for k in ENV_DEFAULTS if k in os.environ}}
        saved = {k: os.environ.get(k) for k in pinned}
        os.environ.update(pinned)
        try:
            ray.init(**kw)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def max_concurrent(self) -> int:
        """Trials that fit at once: a trial holds cpus_per_trial plus its workers; never start more
        trial actors than worker groups that can run (else fractional trials starve their workers)."""
        r = self.spec.resources
        if r.max_concurrent_trials:
            return r.max_concurrent_trials
        import ray

        res = ray.cluster_resources()
        per_cpu = r.cpus_per_trial + r.workers_per_trial * r.cpus_per_worker
        n = math.floor(res.get("CPU", 1.0) / per_cpu + 1e-9)
        if r.gpus_per_worker:
            n = min(n, math.floor(res.get("GPU", 0.0) / (r.workers_per_trial * r.gpus_per_worker) + 1e-9))
        return max(1, n)

    # stages ------------------------------------------------------------------------------------
    def run(self) -> int:
        self.prepare()
        print(self.plan.describe(), file=self.out, flush=True)
        t0 = time.time()
        self.init_ray()
        try:
            ok = True
            if self.plan.pretrain:
                ok = self.run_pretrain()
            if ok:
                ok = self.run_finetune()
        finally:
            import ray

            ray.shutdown()
        self.print_summary()
        print(f"sweep {self.spec.name}: {'done' if ok and not self.errors else 'FAILED'} in {time.time() - t0:.0f} s; "
              f"MLflow: {self.spec.tracking()} (gdna ui {self.spec.name} --storage {self.spec.storage_dir()})",
              file=self.out, flush=True)
        return 0 if ok and not self.errors else 1

    def run_pretrain(self) -> bool:
        st = self.state().get("pretrain", {})
        if st.get("status") == "done":
            print("stage pretrain: done (skipped)", file=self.out, flush=True)
            return True
        self.tracker.stage_run("pretrain")
        exp = self.dir / "tune" / "pretrain"
        restorable = self._can_restore(exp)
        if not restorable:
            # pretrainings finished before this sweep asked for them (other sweeps): record them as reused
            for job in self.plan.pretrain:
                if job.done and self.tracker.find_trial_run("pretrain", job.key) is None:
                    self.record_reused(job)
        to_run = [j for j in self.plan.pretrain if not j.done]
        if to_run or restorable:
            resolver = Resolver(self.plan, "pretrain")
            space = {"job": _grid([j.key for j in to_run])}
            ok = self.fit_stage("pretrain", resolver, space, exp, restorable, metric="val_loss", mode="min")
            if not ok:
                self.tracker.end_stage("pretrain", "FAILED")
                return False
        else:
            print(f"stage pretrain: all {len(self.plan.pretrain)} pretraining runs already done (reused)", file=self.out, flush=True)
        selected = select_pretraining(self.plan)
        self.save_state(pretrain={"status": "done", "selected": selected})
        self.tracker.end_stage("pretrain")
        for g, k in selected.items():
            print(f"  selected {g}: {k}", file=self.out)
        return True

    def record_reused(self, job) -> None:
        metrics = read_pretrain_metrics(job.export_dir)
        resolver = Resolver(self.plan, "pretrain")
        key, trial_dict, meta, name = resolver({"job": job.key})
        rid = self.tracker.trial_run(
            "pretrain", key, run_name=name, tags={**trial_tags(meta, key), "gdna.reused": "true"},
            params=trial_params(trial_dict, meta["strategy"]), config=trial_dict,
        )
        step = metrics.get("best_step", metrics.get("step", 0))
        self.tracker.log_metrics(rid, numeric_metrics(metrics), int(step) if isinstance(step, (int, float)) else 0)
        st = metrics.get("status") if metrics.get("status") in ("finished", "diverged") else "finished"
        self.tracker.set_status(rid, st, checkpoint_path=str(job.export_dir / "backbone.pt"))

    def run_finetune(self) -> bool:
        st = self.state()
        if st.get("finetune", {}).get("status") == "done":
            print("stage finetune: done (skipped)", file=self.out, flush=True)
            return True
        selected = st.get("pretrain", {}).get("selected", {})
        resolver = Resolver(self.plan, "finetune", selected)
        self.tracker.stage_run("finetune")
        exp = self.dir / "tune" / "finetune"
        restorable = self._can_restore(exp)
        space = self.finetune_space()
        ok = self.fit_stage("finetune", resolver, space, exp, restorable, metric="val_acc", mode="max")
        if ok:
            self.save_state(finetune={"status": "done"})
        self.tracker.end_stage("finetune", "FINISHED" if ok else "FAILED")
        return ok

    def finetune_space(self) -> dict:
        from ray import tune

        s = self.spec.space
        cells = [c.id for c in self.plan.cells]
        axes = s.axes()
        if s.searcher == "optuna":
            space: dict[str, Any] = {"cell": tune.choice(cells)}
            space.update({k: tune.choice(v) for k, v in axes.items()})
        else:
            space = {"cell": _grid(cells)}
            space.update({k: _grid(v) for k, v in axes.items()})
        for k, dist in s.distributions.items():
            (kind, args), = dist.items()
            if kind == "choice":
                space[k] = tune.choice(list(args))
            elif kind == "loguniform":
                space[k] = tune.loguniform(float(args[0]), float(args[1]))
            elif kind == "uniform":
                space[k] = tune.uniform(float(args[0]), float(args[1]))
            else:
                space[k] = tune.randint(int(args[0]), int(args[1]))
        return space

    def fit_stage(self, stage: str, resolver: Resolver, space: dict, exp: Path, restorable: bool, metric: str, mode: str) -> bool:
        from ray import tune

        spec, r = self.spec, self.spec.resources
        train_storage = str(self.dir / "train")
        trainable = tune.with_resources(
            tune.with_parameters(_trainable, resolver=resolver, resources=r.__dict__.copy(), train_storage=train_storage),
            {"cpu": r.cpus_per_trial},
        )
        if restorable:
            print(f"stage {stage}: resuming {exp}", file=self.out, flush=True)
            tuner = tune.Tuner.restore(str(exp), trainable, resume_unfinished=True, resume_errored=True)
        else:
            s = spec.space
            search_alg, scheduler, num_samples = None, None, 1
            if stage == "finetune" and s.searcher == "optuna":
                from optuna.samplers import TPESampler
                from ray.tune.search.optuna import OptunaSearch

                search_alg = OptunaSearch(sampler=TPESampler(seed=0))
                num_samples = s.num_samples
            elif stage == "finetune" and s.searcher == "random":
                num_samples = s.num_samples
            if stage == "finetune" and spec.scheduler == "asha":
                from ray.tune.schedulers import ASHAScheduler

                max_t = max(self._max_epochs(), spec.asha_grace_period)
                scheduler = ASHAScheduler(time_attr="training_iteration", max_t=max_t, grace_period=spec.asha_grace_period)
            cb = _callback_class()(self.tracker, stage, resolver, train_storage)
            reporter = self._reporter(stage)
            tuner = tune.Tuner(
                trainable,
                param_space=space,
                tune_config=tune.TuneConfig(
                    metric=metric, mode=mode, num_samples=num_samples, search_alg=search_alg, scheduler=scheduler,
                    max_concurrent_trials=self.max_concurrent(),
                ),
                run_config=tune.RunConfig(
                    name=stage, storage_path=str(self.dir / "tune"),
                    failure_config=tune.FailureConfig(max_failures=r.max_failures),
                    callbacks=[cb], progress_reporter=reporter, verbose=spec.verbose,
                ),
            )
        results = tuner.fit()
        n_err = n_open = 0
        for res in results:
            m = res.metrics or {}
            # interrupted (Ctrl-C, a lost driver): a trial that never started has no config yet, and one
            # stopped mid-run has no final report (ASHA's early stops are complete without one)
            finished = bool(res.error) or bool(m.get("final")) or (spec.scheduler == "asha" and bool(m))
            if not res.config:
                n_open += 1
                continue
            n_open += not finished
            key, trial_dict, meta, name = resolver(res.config)
            status = "errored" if res.error else (m.get("status") or "finished") if finished else "unfinished"
            row = {**meta, "key": key, "name": name, "lr": trial_dict["train"]["lr"],
                   "batch": trial_dict["train"]["batch_size"], "status": status}
            if stage == "finetune":
                row.update(val=m.get("best_val_acc", m.get("val_acc")), test=m.get("test_acc"))
            else:
                row.update(val=m.get("best_val_loss", m.get("val_loss")), test=m.get("best_val_ppl", m.get("val_ppl")))
            self.rows.append(row)
            if res.error:
                n_err += 1
                self.errors.append(f"{stage} {name}: {type(res.error).__name__}: {str(res.error).splitlines()[0] if str(res.error) else ''}")
        unfinished = f", {n_open} unfinished (continue with `gdna resume {spec.name}`)" if n_open else ""
        print(f"stage {stage}: {len(results)} trials, {n_err} errored{unfinished}", file=self.out, flush=True)
        return n_err == 0 and n_open == 0

    def _max_epochs(self) -> int:
        from gdna.config import finetune_recipe

        return max(finetune_recipe(s, **self.spec.train).epochs for s in self.spec.strategies)

    @staticmethod
    def _can_restore(exp: Path) -> bool:
        from ray import tune

        return exp.is_dir() and tune.Tuner.can_restore(str(exp))

    def _reporter(self, stage: str):
        from ray.tune import CLIReporter

        if stage == "pretrain":
            metrics = {"step": "step", "train_loss": "train_loss", "val_loss": "val_loss", "val_ppl": "val_ppl"}
            params = {"job": "job"}
        else:
            metrics = {"epoch": "epoch", "train_loss": "train_loss", "val_acc": "val_acc", "test_acc": "test_acc"}
            params = {"cell": "cell", **{k: k.split(".")[-1] for k in self.spec.space.axes()},
                      **{k: k.split(".")[-1] for k in self.spec.space.distributions}}
        return CLIReporter(metric_columns=metrics, parameter_columns=params, max_report_frequency=30,
                           sort_by_metric=False, max_progress_rows=40, max_column_length=48,
                           print_intermediate_tables=self.spec.verbose >= 1)

    # summary -----------------------------------------------------------------------------------
    def print_summary(self) -> None:
        if not self.rows:
            return
        print(format_table(self.rows), file=self.out)
        for e in self.errors:
            print(f"  error: {e}", file=self.out)
        self.out.flush()


def format_table(rows: list[dict]) -> str:
    cols = [("stage", 8), ("arch", 11), ("strategy", 10), ("task", 26), ("lr", 8), ("batch", 5), ("seed", 4),
            ("fold", 4), ("status", 9), ("val", 7), ("test", 7)]
    def fmt(v, w):
        if isinstance(v, float):
            v = f"{v:.4g}"
        return f"{'' if v is None else v!s:<{w}.{w}}"
    head = " ".join(f"{c:<{w}}" for c, w in cols)
    lines = [head, "-" * len(head)]
    order = {"pretrain": 0, "finetune": 1}
    for r in sorted(rows, key=lambda r: (order.get(r.get("stage"), 2), r.get("arch", ""), r.get("strategy", ""),
                                         r.get("task", ""), r.get("lr", 0), r.get("batch", 0), r.get("seed", 0))):
        lines.append(" ".join(fmt(r.get(c), w) for c, w in cols))
    lines.append("(val/test: pretrain = best val_loss / val_ppl; finetune = best val_acc / test_acc)")
    return "\n".join(lines)


def _alive_driver(sweep_dir: Path) -> int | None:
    """The pid of a live driver of this sweep (another process than us), if any."""
    try:
        pid = int((sweep_dir / "driver.pid").read_text())
    except (OSError, ValueError):
        return None
    if pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    try:  # a recycled pid running something else is not our driver
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        if "gdna" not in cmd:
            return None
    except OSError:
        pass
    return pid


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def _grid(values: list):
    from ray import tune

    return tune.grid_search(list(values))


# where the sweep lives / how it is displayed: may differ between the launch and a resume
_RUNTIME_KEYS = ("storage", "data_root", "tracking_uri", "ray_address", "verbose", "description")


def _comparable(d: Any) -> Any:
    return {k: v for k, v in d.items() if k not in _RUNTIME_KEYS} if isinstance(d, dict) else d


def _first_diff(a: Any, b: Any, where: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            d = _first_diff(a.get(k), b.get(k), f"{where}.{k}" if where else str(k))
            if d:
                return d
        return None
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return where
        for i, (x, y) in enumerate(zip(a, b)):
            d = _first_diff(x, y, f"{where}[{i}]")
            if d:
                return d
        return None
    return None if a == b else (where or "spec")


# ---------------------------------------------------------------------------------------------
def load_sweep(name: str, storage: str = "runs") -> SweepSpec:
    """The resolved spec of an existing sweep (<storage>/sweeps/<name>/spec.yaml)."""
    path = Path(storage).expanduser().resolve() / "sweeps" / name / "spec.yaml"
    if not path.is_file():
        raise ConfigError(f"sweep '{name}': no {path} (check the name and --storage)")
    raw = yaml.safe_load(path.read_text())
    # the storage given on the command line wins (the same sweep seen through another mount point)
    return spec_from_dict(raw, path, check_data=False, storage=str(path.parents[2]))


def run_sweep(spec: SweepSpec, resume: bool = False, out=sys.stdout) -> int:
    spec.check_data()  # (specs with require_data: false are checked only now)
    return SweepRunner(spec, resume=resume, out=out).run()
