"""Run a sweep: one Ray Tune Tuner per stage (pretrain → finetune), MLflow from the driver, resumable.

The pieces, one job per module: `plan` (the stage DAG and resolved trials), `trainable` (one trial),
`search` (Tune's param spaces, searchers, schedulers), `state` (spec.yaml, stages.json, the driver
lock), `ray_env` (Ray start-up, concurrency), `summary` (the table printed at the end) and
`gdna.tracking.callback` (the driver's MLflow writer). This module runs the stages in order.

The loop marks its last report `final=True` (never Tune's reserved `done`: Tune would kill the trial
on it before its TorchTrainer released its worker placement group). Reports a killed driver never
received are back-filled on resume from the Train checkpoint's history (MLflow steps are deduped per key).

State under `<storage>/sweeps/<name>/`: spec.yaml (resolved), stages.json, tune/<stage>/ (Tune
experiments, restored with resume_errored=True), train/ (Train runs), mlflow.db + artifacts/.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import yaml
from ray.tune import Callback

from gdna.errors import ConfigError
from gdna.procs import stop_signals_as_ctrl_c, take_stop_signals
from gdna.sweep import live, ray_env, search
from gdna.sweep.failures import explain, save_traceback
from gdna.sweep.plan import build_plan, select_pretraining
from gdna.sweep.spec import (SweepSpec, StorageFullError, free_bytes, no_space, spec_from_dict, stop_free_bytes,
                             storage_full_message)
from gdna.sweep.state import SweepState, release_space, reserve_space
from gdna.sweep.stopped import STOPPED, evaluate_pending, read_marker
from gdna.sweep.summary import format_table, result_row
from gdna.sweep.trainable import Resolver, inline_resources, trainable
from gdna.tracking import SweepTracker, default_artifact_location, numeric_metrics, trial_params, trial_tags
from gdna.train.export import export_file, read_export_metrics
from gdna.train.trainer import CHECKPOINTS_TO_KEEP


class SweepRunner:
    def __init__(self, spec: SweepSpec, resume: bool = False, out=sys.stdout):
        self.spec = spec
        self.resume = resume
        self.out = out
        self.dir = spec.sweep_dir()
        self.plan = build_plan(spec)
        self.state = SweepState(spec, out)
        self.tracker = SweepTracker(spec.tracking(), spec.name, default_artifact_location(spec.tracking(), self.dir),
                                    description=spec.description)
        self.errors: list[str] = []
        self.rows: list[dict] = []
        self.unfinished = 0  # trials an interruption left to run (all stages)

    def run(self) -> int:
        self.state.prepare(self.resume)
        reserve_space(self.dir)  # given back when the storage fills up (StorageGuard) and on the way out
        try:
            return self.run_stages()
        finally:
            release_space(self.dir)

    def run_stages(self) -> int:
        print(self.plan.describe(), file=self.out, flush=True)
        t0 = time.time()
        log = self.dir / live.RAY_LOG
        if self.spec.verbose < 2:
            print(f"Ray's own output (warnings, status tables): {log} (verbose: 2 shows it here)", file=self.out, flush=True)
        caller_out = self.out
        with live.ray_output(log, self.spec.verbose, self.out) as self.out:  # fd 1/2 → ray.log
            try:
                tracking = _open_meanwhile(lambda: self.tracker.experiment_id)  # a new sqlite store's schema: ~2.5 s
                ray_env.init_ray(self.spec.ray_address, self.spec.verbose)
                tracking.join()
                take_stop_signals()  # (ray.init replaced our SIGTERM handler with one that aborts)
                try:
                    ok = True
                    if self.plan.pretrain:
                        ok = self.run_pretrain()
                    if ok and self.spec.finetune:  # finetune: false = a pretraining-only study
                        ok = self.run_finetune()
                finally:
                    import ray

                    ray.shutdown()
            finally:
                self.out = caller_out
        self.print_summary()
        took = f"{time.time() - t0:.0f} s"
        if ok and not self.errors:
            outcome = f"done in {took}"
        elif self.errors:
            outcome = f"FAILED in {took}"
        else:  # Ctrl-C, SIGTERM: nothing failed, the rest is still to run
            outcome = (f"INTERRUPTED after {took}, {self.unfinished} trial(s) unfinished (continue with "
                       f"`gdna resume {self.spec.name}`)")
        print(f"sweep {self.spec.name}: {outcome}; "
              f"MLflow: {self.spec.tracking()} (gdna ui {self.spec.name} --storage {self.spec.storage_dir()})",
              file=self.out, flush=True)
        return 0 if ok and not self.errors else 1

    # stages ------------------------------------------------------------------------------------
    def run_pretrain(self) -> bool:
        st = self.state.read().get("pretrain", {})
        if st.get("status") == "done":
            print("stage pretrain: done (skipped)", file=self.out, flush=True)
            return True
        self.tracker.stage_run("pretrain")
        exp = self.dir / "tune" / "pretrain"
        restorable = _can_restore(exp)
        if not restorable:
            # pretrainings finished before this sweep asked for them (other sweeps): record them as reused
            for job in self.plan.pretrain:
                if job.done and self.tracker.find_trial_run("pretrain", job.key) is None:
                    self.record_reused(job)
        to_run = [j for j in self.plan.pretrain if not j.done]
        if to_run or restorable:
            resolver = Resolver(self.plan, "pretrain")
            space = search.pretrain_space([j.key for j in to_run])
            ok = self.fit_stage("pretrain", resolver, space, exp, restorable, metric="val_loss", mode="min")
            if not ok:
                self._end_stage("pretrain", self._stage_outcome())
                return False
        else:
            print(f"stage pretrain: all {len(self.plan.pretrain)} pretraining runs already done (reused)", file=self.out, flush=True)
        selected = select_pretraining(self.plan)
        self.state.save(pretrain={"status": "done", "selected": selected})
        self._end_stage("pretrain")
        for g, k in selected.items():
            print(f"  selected {g}: {k}", file=self.out)
        return True

    def record_reused(self, job) -> None:
        metrics = read_export_metrics(job.export_dir)
        key, trial_dict, meta, name = Resolver(self.plan, "pretrain")({"job": job.key})
        rid = self.tracker.trial_run(
            "pretrain", key, run_name=name, tags={**trial_tags(meta, key), "gdna.reused": "true"},
            params=trial_params(trial_dict, meta["strategy"]), config=trial_dict,
        )
        step = metrics.get("best_step", metrics.get("step", 0))
        self.tracker.log_metrics(rid, numeric_metrics(metrics), int(step) if isinstance(step, (int, float)) else 0)
        st = metrics.get("status") if metrics.get("status") in ("finished", "diverged") else "finished"
        self.tracker.set_status(rid, st, checkpoint_path=str(export_file(job.export_dir)))

    def run_finetune(self) -> bool:
        st = self.state.read()
        if st.get("finetune", {}).get("status") == "done":
            print("stage finetune: done (skipped)", file=self.out, flush=True)
            return True
        selected = st.get("pretrain", {}).get("selected", {})
        resolver = Resolver(self.plan, "finetune", selected)
        self.tracker.stage_run("finetune")
        exp = self.dir / "tune" / "finetune"
        restorable = _can_restore(exp)
        ok = self.fit_stage("finetune", resolver, search.finetune_space(self.plan), exp, restorable,
                            metric="val_acc", mode="max")
        if ok:
            self.state.save(finetune={"status": "done"})
        self._end_stage("finetune", "FINISHED" if ok else self._stage_outcome())
        return ok

    def fit_stage(self, stage: str, resolver: Resolver, space: dict, exp: Path, restorable: bool, metric: str, mode: str) -> bool:
        from ray import tune

        from gdna.sweep.cells import bind_sweep_dir
        from gdna.tracking.callback import MLflowTrackingCallback

        bind_sweep_dir(self.dir)  # where the per-cell searcher and scheduler keep their state (storage may have moved)
        spec, r = self.spec, self.spec.resources
        train_storage = str(self.dir / "train")
        inline = r.runner == "inline"  # the loop in the trial's own (reused) process, else a TorchTrainer per trial
        fn = tune.with_resources(
            tune.with_parameters(trainable, resolver=resolver, resources=r.__dict__.copy(), train_storage=train_storage),
            # a TorchTrainer trial's driver goes to the head of a cluster (cluster.yaml's gdna_driver)
            inline_resources(r) if inline else ray_env.driver_resources(r),
        )
        total = len(space["job"]["grid_search"]) if stage == "pretrain" else self.plan.n_finetune
        print(f"stage {stage}: {total} trials, runner {r.runner}", file=self.out, flush=True)
        if restorable:
            print(f"stage {stage}: resuming {exp}", file=self.out, flush=True)
            tuner = tune.Tuner.restore(str(exp), fn, resume_unfinished=True, resume_errored=True)
        else:
            search_alg, scheduler, num_samples = (search.finetune_search(self.plan, ray_env.max_concurrent(r))
                                                  if stage == "finetune" else (None, None, 1))
            if search_alg is not None:
                print(f"stage {stage}: one Optuna study per tuning cell ({self.plan.n_tuning_cells} cells × "
                      f"{spec.space.num_samples} points, {search_alg.in_flight} in flight per cell); "
                      f"optuna-dashboard sqlite:///{search_alg.db_path()}", file=self.out, flush=True)
            tuner = tune.Tuner(
                fn,
                param_space=space,
                tune_config=tune.TuneConfig(
                    metric=metric, mode=mode, num_samples=num_samples, search_alg=search_alg, scheduler=scheduler,
                    max_concurrent_trials=ray_env.max_concurrent(r),
                    # inline: the next trial runs in the finished one's process. Not for TorchTrainer trials:
                    # Tune may cache a stopped trial's process while its fit() still trains on
                    reuse_actors=inline,
                ),
                run_config=tune.RunConfig(
                    name=stage, storage_path=str(self.dir / "tune"),
                    failure_config=tune.FailureConfig(max_failures=r.max_failures),
                    callbacks=[MLflowTrackingCallback(self.tracker, stage, resolver, train_storage),
                               live.LiveView(stage, resolver, total, metric, mode), StorageGuard()],
                    # Tune's tables: into ray.log (live.ray_output), or here with verbose 2
                    progress_reporter=search.reporter(self.plan, stage), verbose=max(1, spec.verbose),
                    # inline trials' checkpoints are Tune's (the same number kept as a TorchTrainer keeps)
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=CHECKPOINTS_TO_KEEP),
                ),
            )
        StorageGuard.watch(spec.storage_dir(), spec.name, self.dir)
        results = tuner.fit()
        if StorageGuard.full is not None:  # stopped by the guard: the trials' outcome cannot be recorded now
            raise StorageFullError(storage_full_message(spec.storage_dir(), spec.name, StorageGuard.full))
        n_err = n_open = 0
        stopped: dict[str, tuple[dict, dict]] = {}  # key → (trial dict, its row)
        for res in results:
            m = res.metrics or {}
            if not res.config:  # interrupted before it started
                n_open += 1
                continue
            key, trial_dict, meta, name = resolver(res.config)
            marker = read_marker(train_storage, key) if not res.error and not m.get("final") else None
            if res.error:
                status = "errored"
            elif m.get("final"):
                status = m.get("status") or "finished"
            elif marker is not None and marker.get("status") == STOPPED:  # by the scheduler (gdna.sweep.stopped)
                status, m = STOPPED, marker
            else:  # interrupted mid-run (Ctrl-C, a lost driver): never taken for stopped or finished
                status = "unfinished"
                n_open += 1
            row = result_row(stage, key, name, trial_dict, meta, m, status)
            self.rows.append(row)
            if status == STOPPED:
                stopped[key] = (trial_dict, row)
            if res.error:
                n_err += 1
                tb = save_traceback(self.dir, name, res.error)
                self.errors.append(f"{stage} {name}: {explain(res.error)} (traceback: {tb})")
        n_open += _not_created(exp, len(results), total, search_alg_used=stage == "finetune" and spec.space.searcher == "optuna")
        if stopped and not n_open:
            n_err += self.evaluate_stopped(stage, stopped, train_storage)
        self.unfinished += n_open
        unfinished = f", {n_open} unfinished (continue with `gdna resume {spec.name}`)" if n_open else ""
        n_stopped = f", {len(stopped)} stopped early by the scheduler" if stopped else ""
        n_done = sum(row["status"] in ("finished", "diverged", STOPPED) for row in self.rows if row["stage"] == stage)
        print(f"stage {stage}: {n_done} of {total} trials done, {n_err} errored{n_stopped}{unfinished}",
              file=self.out, flush=True)
        return n_err == 0 and n_open == 0

    def evaluate_stopped(self, stage: str, stopped: dict[str, tuple[dict, dict]], train_storage: str) -> int:
        """Test metrics of the trials the scheduler stopped, from their best checkpoints (Ray tasks); logged
        to their MLflow runs and rows. Returns how many failed (the stage is then not done: resume retries)."""
        todo = {k: t for k, (t, _) in stopped.items() if (read_marker(train_storage, k) or {}).get("test_pending")}
        if todo:
            print(f"stage {stage}: test evaluation of {len(todo)} stopped trial(s) from their best checkpoints",
                  file=self.out, flush=True)
        done = evaluate_pending(train_storage, todo, self.spec.resources)
        n_fail = 0
        for key, (_, row) in stopped.items():
            final = done.get(key)
            if isinstance(final, Exception):
                n_fail += 1
                self.errors.append(f"{stage} {row['name']}: test evaluation of the stopped trial failed: "
                                   f"{type(final).__name__}: {str(final).splitlines()[0] if str(final) else ''}")
                continue
            final = final or read_marker(train_storage, key) or {}
            row.update(val=final.get("best_val_acc", row.get("val")), test=final.get("test_acc"))
            rid = self.tracker.find_trial_run(stage, key)
            if rid is not None and "test_acc" in final:  # (steps already logged are skipped)
                step = final.get("epoch", 0)
                self.tracker.log_metrics(rid, numeric_metrics(final), int(step) if isinstance(step, (int, float)) else 0)
                self.tracker.set_status(rid, STOPPED)
        return n_fail

    def _stage_outcome(self) -> str:
        """MLflow's status of a stage that did not finish: FAILED (a trial errored) or KILLED (interrupted)."""
        return "FAILED" if self.errors else "KILLED"

    def _end_stage(self, stage: str, status: str = "FINISHED") -> None:
        """Close the stage's parent run; a tracking store that does not answer only costs a warning."""
        from gdna.tracking.callback import tracking_outage

        try:
            self.tracker.end_stage(stage, status)
        except Exception as e:  # noqa: BLE001
            if not tracking_outage(e):
                raise
            print(f"gdna: could not close the {stage} run in MLflow ({type(e).__name__}); `gdna resume` does",
                  file=self.out, flush=True)

    def print_summary(self) -> None:
        if not self.rows:
            return
        print(format_table(self.rows), file=self.out)
        for e in self.errors:
            print(f"  error: {e}", file=self.out)
        self.out.flush()


def _open_meanwhile(first_use: Callable[[], Any]) -> threading.Thread:
    """Run `first_use` in a thread (join it before relying on it). A failure is left for the next use
    to raise again, where the caller handles it."""
    def quietly() -> None:
        with contextlib.suppress(Exception):
            first_use()

    t = threading.Thread(target=quietly, name="gdna-open-tracking", daemon=True)
    t.start()
    return t


class StorageGuard(Callback):
    """Stops the stage like Ctrl-C (Tune's graceful stop: running trials are paused at their last
    checkpoint and the experiment state is saved) when the sweep's storage has less free space than
    `stop_free_bytes()`, checked about once a second in the driver. It first gives back the sweep's space
    reserve, so that those last writes fit; the stage then raises StorageFullError.
    Its state is the class's: Tune pickles its callbacks with the experiment and a restored stage runs
    the unpickled copy, which must watch this driver's storage (`watch`)."""

    storage: Path | None = None
    name = ""
    sweep_dir: Path | None = None
    full: int | None = None  # the free bytes seen when it stopped the stage
    every_s = 1.0
    _next = 0.0

    @classmethod
    def watch(cls, storage: Path, name: str, sweep_dir: Path) -> None:
        cls.storage, cls.name, cls.sweep_dir, cls.full, cls._next = storage, name, sweep_dir, None, 0.0

    def on_step_begin(self, iteration, trials, **info):  # noqa: ARG002 - Tune's signature
        cls, now = type(self), time.monotonic()
        if cls.full is not None or cls.storage is None or now < cls._next:
            return
        cls._next = now + cls.every_s
        free = free_bytes(cls.storage)
        if free < stop_free_bytes():
            cls.full = free
            release_space(cls.sweep_dir)
            if callable(signal.getsignal(signal.SIGUSR1)):  # Tune's stop handlers are in place while it runs
                os.kill(os.getpid(), signal.SIGINT)  # Tune's documented manual stop, as Ctrl-C sends it
            else:  # Tune not in the main thread: no graceful stop to ask for
                raise StorageFullError(storage_full_message(cls.storage, cls.name, free))


def _not_created(exp: Path, n_results: int, total: int, search_alg_used: bool) -> int:
    """Trials of the stage that an interruption kept from being created at all: an adaptive searcher
    that had not proposed its whole budget yet (its SearchGenerator neither said FINISHED nor reached
    num_samples) counts 1;
    a grid / random stage with fewer trials than planned, the difference."""
    if search_alg_used:
        import pickle

        states = sorted(exp.glob("search_gen_state-*.json"))  # (Tune pickles it, despite the name)
        try:
            with open(states[-1], "rb") as f:
                st = pickle.load(f)
        except (IndexError, OSError, EOFError, pickle.UnpicklingError, AttributeError, ImportError):
            st = {}
        done = st.get("finished") or st.get("counter", 0) >= st.get("total_samples", float("inf"))
        return 0 if done else 1
    return max(0, total - n_results)


def _can_restore(exp: Path) -> bool:
    from ray import tune

    return exp.is_dir() and tune.Tuner.can_restore(str(exp))


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
    """Run (or continue) the sweep. SIGTERM / SIGHUP stop it as Ctrl-C does (the stage saves its state,
    the Ray instance it started is shut down); a write that fails for lack of space anywhere in the
    driver is one StorageFullError line."""
    spec.check_data()  # (specs with require_data: false are checked only now)
    spec.check_storage()
    try:
        with stop_signals_as_ctrl_c():
            return SweepRunner(spec, resume=resume, out=out).run()
    except StorageFullError:
        raise
    except Exception as e:
        if no_space(e):
            raise StorageFullError(storage_full_message(spec.storage_dir(), spec.name)) from None
        raise
