"""MLflow tracking for sweeps, written ONLY from the sweep driver (one writer per sqlite store).

Layout (the schema in DESIGN.md, read by gdna.analysis):
- experiment = sweep name (tag `gdna.sweep`), artifact location explicit for file/sqlite stores;
- one parent run per stage (run name = stage; tags gdna.sweep, gdna.stage, gdna.role=stage);
- one child run per trial (tags mlflow.parentRunId, gdna.role=trial, gdna.sweep, gdna.stage,
  gdna.trial_key, config_hash, git_commit, arch, strategy, task, seed, fold, gdna.status;
  params = flattened resolved TrialConfig + strategy; metrics with step = epoch (cls) or optimizer
  step (clm); artifact config/trial.json; tag checkpoint_path).

Run ids are ours: a child run is found by (stage, gdna.trial_key), so restoring a sweep never creates a
second run for a trial, and on first contact with an existing run we read the highest step already
logged per metric so that re-reported results are never logged twice.
"""
from __future__ import annotations

import math
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Mapping

from gdna.config import flatten
from gdna.tracking.view import save_default_view, view_url

TRIAL_STATUSES = ("running", "finished", "diverged", "stopped", "errored")  # stopped: by the scheduler (ASHA)
# per-report metrics (step-indexed) and final metrics (logged once), as gdna.train reports them
STEP_METRICS = ("train_loss", "val_loss", "val_acc", "val_ppl", "lr", "epoch", "step", "tokens_per_s",
                "tokens_seen", "seq_len")
FINAL_METRICS = ("test_acc", "test_loss", "best_val_acc", "best_epoch", "best_val_loss", "best_val_ppl", "best_step", "time_train_s",
                 "n_params", "d_model", "n_layers")  # the model's resolved size (gdna.models.build)
_METRIC_PREFIXES = ("train_", "val_", "test_", "best_")
# MLflow 3 opens an experiment on its GenAI traces overview unless it is marked as model training
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
NOTE_TAG = "mlflow.note.content"  # the description MLflow shows on an experiment or run page
ANALYSIS_MARK = "\n\n---\n**Analysis** (`gdna analyze`)\n\n"  # the analysis part of a description starts here


def sweep_store_uri(sweep_dir: str | Path) -> str:
    """A sweep's default MLflow store: `sqlite:///<storage>/sweeps/<name>/mlflow.db` (DESIGN.md)."""
    return f"sqlite:///{Path(sweep_dir).expanduser().resolve() / 'mlflow.db'}"


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=10
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def default_artifact_location(tracking_uri: str, sweep_dir: Path) -> str | None:
    """Explicit artifact root for local stores (MLflow 3 refuses to guess); remote servers choose their own."""
    if tracking_uri.startswith(("sqlite:", "file:")) or "://" not in tracking_uri:
        return (Path(sweep_dir) / "artifacts").resolve().as_uri()
    return None


SERVER_REQUEST_LIMITS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
                         "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}


class SweepTracker:
    """Find-or-create MLflow runs for one sweep; dedupes metric steps per (run, key)."""

    def __init__(self, tracking_uri: str, sweep: str, artifact_location: str | None = None, description: str = ""):
        self.tracking_uri = tracking_uri
        self.sweep = sweep
        self.artifact_location = artifact_location
        self.description = description  # the spec's description: the experiment's and stage runs' text
        self._reset()

    def _reset(self) -> None:
        self._client = None
        self._exp_id: str | None = None
        self._parents: dict[str, str] = {}
        self._children: dict[tuple[str, str], str] | None = None
        self._steps: dict[str, dict[str, set[int]]] = {}  # run_id → key → logged steps
        self._preexisting: set[str] = set()  # runs found (not created) by this tracker: resumed trials
        self._created: set[str] = set()
        self._unfilled: set[str] = set()  # runs created whose params / config are not written yet
        self._commit: str | None = None

    def __getstate__(self) -> dict:  # pickled inside Tune's tuner.pkl: keep only the addresses
        return {"tracking_uri": self.tracking_uri, "sweep": self.sweep, "artifact_location": self.artifact_location,
                "description": self.description}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._reset()

    # -------------------------------------------------------------------------------------
    @property
    def client(self):
        if self._client is None:
            from mlflow.tracking import MlflowClient

            if self.tracking_uri.startswith("sqlite:///"):
                Path(self.tracking_uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
            if self.tracking_uri.startswith(("http://", "https://")):
                # a server that is down fails fast: the driver queues the write (gdna.tracking.callback)
                # instead of blocking Tune's event loop in MLflow's minutes of retries
                for k, v in SERVER_REQUEST_LIMITS.items():
                    os.environ.setdefault(k, v)
            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    @property
    def experiment_id(self) -> str:
        if self._exp_id is None:
            exp = self.client.get_experiment_by_name(self.sweep)
            if exp is None:
                self._exp_id = self.client.create_experiment(
                    self.sweep, artifact_location=self.artifact_location,
                    tags={"gdna.sweep": self.sweep, EXPERIMENT_KIND_TAG: EXPERIMENT_KIND,
                          NOTE_TAG: experiment_description(self.sweep, self.description)},
                )
                save_default_view(self.client, self._exp_id)
            else:
                if exp.lifecycle_stage == "deleted":
                    self.client.restore_experiment(exp.experiment_id)
                self._exp_id = exp.experiment_id
                if EXPERIMENT_KIND_TAG not in exp.tags:  # a sweep tracked before the tag existed
                    self.client.set_experiment_tag(self._exp_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return self._exp_id

    @property
    def commit(self) -> str:
        if self._commit is None:
            self._commit = git_commit()
        return self._commit

    def _search(self, filter_string: str) -> list:
        runs, token = [], None
        while True:
            page = self.client.search_runs([self.experiment_id], filter_string, max_results=1000, page_token=token)
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def stage_run(self, stage: str) -> str:
        """The parent run of `stage` (created on first use)."""
        if stage not in self._parents:
            found = self._search(f"tags.`gdna.role` = 'stage' and tags.`gdna.stage` = '{stage}'")
            if found:
                self._parents[stage] = sorted(found, key=lambda r: r.info.start_time)[0].info.run_id
            else:
                run = self.client.create_run(
                    self.experiment_id, run_name=stage,
                    tags={"gdna.sweep": self.sweep, "gdna.stage": stage, "gdna.role": "stage", "git_commit": self.commit,
                          NOTE_TAG: stage_description(self.sweep, stage, self.description)},
                )
                self._parents[stage] = run.info.run_id
        return self._parents[stage]

    def _child_index(self) -> dict[tuple[str, str], str]:
        if self._children is None:
            self._children = {}
            for r in sorted(self._search("tags.`gdna.role` = 'trial'"), key=lambda r: r.info.start_time):
                k = (r.data.tags.get("gdna.stage", ""), r.data.tags.get("gdna.trial_key", ""))
                self._children.setdefault(k, r.info.run_id)
        return self._children

    def find_trial_run(self, stage: str, key: str) -> str | None:
        return self._child_index().get((stage, key))

    def trial_run(
        self, stage: str, key: str, *, run_name: str, tags: Mapping[str, Any], params: Mapping[str, Any],
        config: Mapping[str, Any] | None = None,
    ) -> str:
        """Find the child run of (stage, key) or create it with its tags, params and config artifact."""
        run_id = self.find_trial_run(stage, key)
        if run_id is not None and run_id not in self._unfilled:
            self._load_steps(run_id)
            if run_id not in self._created:
                self._preexisting.add(run_id)
            return run_id
        from mlflow.entities import Param

        if run_id is None:
            parent = self.stage_run(stage)
            all_tags = {
                "mlflow.parentRunId": parent, "gdna.role": "trial", "gdna.sweep": self.sweep, "gdna.stage": stage,
                "gdna.trial_key": key, "git_commit": self.commit, "gdna.status": "running",
                **{k: str(v) for k, v in tags.items()},
            }
            run_id = self.client.create_run(self.experiment_id, run_name=run_name, tags=all_tags).info.run_id
            # indexed at once: if what follows fails (a server gone), the retry fills this run, not a second one
            self._child_index()[(stage, key)] = run_id
            self._steps[run_id] = {}
            self._created.add(run_id)
            self._unfilled.add(run_id)
        items = [Param(k, _param_str(v)) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):  # (logging a param again with the same value is allowed)
            self.client.log_batch(run_id, params=items[i:i + 100])
        if config is not None:
            self.client.log_dict(run_id, dict(config), "config/trial.json")
        self._unfilled.discard(run_id)
        return run_id

    def resumed(self, run_id: str) -> bool:
        """True if the run existed before this tracker saw it (a restored / replayed trial)."""
        return run_id in self._preexisting

    def _load_steps(self, run_id: str) -> None:
        if run_id in self._steps:
            return
        self._steps[run_id] = {
            key: {m.step for m in self.client.get_metric_history(run_id, key)}
            for key in self.client.get_run(run_id).data.metrics
        }

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int) -> int:
        """Log the metrics whose `step` the run does not have yet for that key; returns how many."""
        from mlflow.entities import Metric

        self._load_steps(run_id)
        seen = self._steps[run_id]
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, int(step)) for k, v in metrics.items() if int(step) not in seen.get(k, ())]
        for i in range(0, len(batch), 500):
            self.client.log_batch(run_id, metrics=batch[i:i + 500])
            for m in batch[i:i + 500]:  # marked only once written: a failed batch is logged again later
                seen.setdefault(m.key, set()).add(m.step)
        return len(batch)

    def set_status(self, run_id: str, status: str, **tags: Any) -> None:
        self.client.set_tag(run_id, "gdna.status", status)
        for k, v in tags.items():
            if v is not None:
                self.client.set_tag(run_id, k, str(v))
        if status == "running":
            self.client.update_run(run_id, status="RUNNING")
        else:
            self.client.set_terminated(run_id, "FAILED" if status == "errored" else "FINISHED")

    def end_stage(self, stage: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.stage_run(stage), status)

    # -------------------------------------------------------------------------------------
    def trial_errors(self) -> list[dict[str, str]]:
        """The errored child runs: stage, run name and the root cause line (tag gdna.error)."""
        return [{"stage": r.data.tags.get("gdna.stage", "?"), "name": r.info.run_name or "",
                 "error": r.data.tags.get("gdna.error", "(see the trial's error file)")}
                for r in self._search("tags.`gdna.role` = 'trial' and tags.`gdna.status` = 'errored'")]

    def stage_counts(self) -> dict[str, dict[str, int]]:
        """stage → {gdna.status: count} over the child runs."""
        out: dict[str, dict[str, int]] = {}
        for r in self._search("tags.`gdna.role` = 'trial'"):
            st = r.data.tags.get("gdna.stage", "?")
            s = r.data.tags.get("gdna.status", "?")
            out.setdefault(st, {}).setdefault(s, 0)
            out[st][s] += 1
        return out


def experiment_description(sweep: str, description: str = "") -> str:
    return (f"gdna sweep **{sweep}**" + (f": {description}" if description else "") + ". One parent run per stage "
            "(pretrain, finetune), one child run per trial; `gdna analyze` adds an `analysis` run.")


def stage_description(sweep: str, stage: str, description: str = "") -> str:
    what = {"pretrain": "pretraining runs (causal LM), the best per group is kept",
            "finetune": "fine-tuning trials (test accuracy, confusion matrix)"}.get(stage, "trials")
    return f"Stage **{stage}** of sweep {sweep}: its child runs are the {what}." + (f" Sweep: {description}" if description else "")


def fit_note(text: str, experiment: bool = False) -> str:
    """A description cut to what MLflow keeps in a run (or experiment) tag (it truncates longer values
    mid-line with a warning): whole paragraphs, then a line saying where the rest is."""
    from mlflow.utils.validation import MAX_EXPERIMENT_TAG_VAL_LENGTH, MAX_TAG_VAL_LENGTH

    limit = MAX_EXPERIMENT_TAG_VAL_LENGTH if experiment else MAX_TAG_VAL_LENGTH
    if len(text) <= limit:
        return text
    tail = "\n\n… (cut to fit MLflow's description limit: the whole text is `summary.md` of the `analysis` run)"
    head = text[:limit - len(tail)]
    cut = head.rfind("\n\n")
    return (head[:cut] if cut > 0 else head) + tail


def with_analysis(note: str | None, analysis: str) -> str:
    """`note` with its analysis part (after ANALYSIS_MARK) replaced by `analysis`."""
    return (note or "").split(ANALYSIS_MARK)[0] + ANALYSIS_MARK + analysis


def describe_with_analysis(client, experiment_id: str, sweep: str, analysis: str) -> None:
    """Put `analysis` (the answer paragraph) under the experiment's and every stage run's own
    description, replacing an earlier analysis part; marks the experiment as model training."""
    exp = client.get_experiment(experiment_id)
    note = exp.tags.get(NOTE_TAG) or experiment_description(sweep)
    client.set_experiment_tag(experiment_id, NOTE_TAG, fit_note(with_analysis(note, analysis), experiment=True))
    client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    for run in client.search_runs([experiment_id], "tags.`gdna.role` = 'stage'", max_results=100):
        stage = run.data.tags.get("gdna.stage", run.info.run_name)
        note = run.data.tags.get(NOTE_TAG) or stage_description(sweep, stage)
        client.set_tag(run.info.run_id, NOTE_TAG, fit_note(with_analysis(note, analysis)))


def runs_table_url(base_url: str, tracking_uri: str, sweep: str) -> str:
    """The URL of the sweep experiment's runs table in gdna's saved view (`<base>/#/experiments/<id>/runs?
    viewStateShareKey=…`: runs grouped by stage, gdna.tracking.view); marks the experiment as
    model training and (re)writes the view if an older sweep lacks them. `<base>/` when it does not exist yet."""
    from mlflow.tracking import MlflowClient

    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri[len("sqlite:///"):]).exists():
        return base_url.rstrip("/") + "/"
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(sweep)
    if exp is None:
        return base_url.rstrip("/") + "/"
    if EXPERIMENT_KIND_TAG not in exp.tags:
        client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    save_default_view(client, exp.experiment_id)
    return view_url(base_url, exp.experiment_id)


def _param_str(v: Any) -> str:
    s = "" if v is None else str(list(v) if isinstance(v, tuple) else v)
    return s[:6000]


def numeric_metrics(result: Mapping[str, Any], extra: tuple[str, ...] = ()) -> dict[str, float]:
    """The reported training metrics in a Tune result (Tune's own bookkeeping keys left out)."""
    out = {}
    for k, v in result.items():
        if not (k in STEP_METRICS or k in FINAL_METRICS or k in extra or k.startswith(_METRIC_PREFIXES)):
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if isinstance(v, float) and not math.isfinite(v):
            v = float("nan") if math.isnan(v) else v
        out[k] = float(v)
    return out


def trial_tags(meta: Mapping[str, Any], config_hash: str) -> dict[str, str]:
    return {
        "arch": meta.get("arch", ""), "strategy": meta.get("strategy", ""), "task": meta.get("task", "") or "",
        "seed": str(meta.get("seed", "")), "fold": str(meta.get("fold", "")), "config_hash": config_hash,
        "gdna.data_fingerprint": str(meta.get("data_fingerprint", "")),
    }


def trial_params(trial_dict: Mapping[str, Any], strategy: str) -> dict[str, Any]:
    p = flatten(trial_dict)
    p["strategy"] = strategy
    return p
