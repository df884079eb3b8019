"""Stage DAG: which pretraining runs the fine-tuning grid needs, and the resolved trials of each stage.

    pretrain  (one job per architecture × corpus group × pretraining lr × context length)
       │      content-addressed: <storage>/pretrain/<key>/{backbone.pt,done.json}, shared by all sweeps
       ▼      best per group by the selection metric (val_loss / val_ppl)
    finetune  (arch × strategy × task × seed × fold cells × search-space points)
              init_checkpoint = the group's chosen backbone.pt; `scratch` cells need no pretraining

Groups: hg38 → (arch, genome); task_spt → (arch, task) for each task; domain_spt → (arch, all tasks).
A trial's key (its MLflow `gdna.trial_key`, its Ray Train run name) is a content hash of its resolved
config, with data_root left out and the pretrained checkpoint named by its pretraining key (not its path).
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from gdna.config import (
    CORPUS_OF_STRATEGY,
    GREATAPES_TASK,
    TrainConfig,
    TrialConfig,
    config_hash,
    finetune_recipe,
    from_dict,
    greatapes_fastas,
)
from gdna.errors import ConfigError
from gdna.sweep.spec import SweepSpec

STAGES = ("pretrain", "finetune")
FINAL_METRIC = {"val_loss": "best_val_loss", "val_ppl": "best_val_ppl"}


@dataclass
class PretrainJob:
    key: str  # content hash of the pretraining config (export_dir left out)
    group: str  # e.g. "transformer.task_spt.human_enhancers_cohn"
    arch: str
    strategy: str
    task: str | None
    trial: TrialConfig  # objective clm, export_dir = <storage>/pretrain/<key>

    @property
    def export_dir(self) -> Path:
        return Path(self.trial.export_dir)

    @property
    def done(self) -> bool:
        return (self.export_dir / "done.json").is_file()

    def meta(self) -> dict[str, Any]:
        return {
            "stage": "pretrain", "key": self.key, "group": self.group, "arch": self.arch,
            "strategy": self.strategy, "task": self.task or "", "seed": self.trial.train.seed,
            "fold": self.trial.data.fold,
        }


@dataclass(frozen=True)
class Cell:
    """One fine-tuning cell before the search-space axes: arch × strategy × task × seed × fold."""

    arch: str
    strategy: str
    task: str
    seed: int
    fold: int
    group: str | None  # pretraining group (None for scratch)
    context_len: int | None = None  # pretraining context of the group, when pretrain.per_context

    @property
    def id(self) -> str:
        ctx = f"|c{self.context_len}" if self.context_len else ""
        return f"{self.arch}|{self.strategy}|{self.task}|s{self.seed}|f{self.fold}{ctx}"


@dataclass
class Plan:
    spec: SweepSpec
    pretrain: list[PretrainJob] = field(default_factory=list)
    groups: dict[str, list[PretrainJob]] = field(default_factory=dict)
    cells: list[Cell] = field(default_factory=list)
    points: list[dict[str, Any]] = field(default_factory=list)  # grid points over the search-space axes

    # -------------------------------------------------------------------------------------
    @property
    def n_finetune(self) -> int:
        s = self.spec.space
        if s.searcher == "grid":
            return len(self.cells) * len(self.points)
        if s.searcher == "random":
            return len(self.cells) * len(self.points) * s.num_samples
        return s.num_samples

    def finetune_trial(self, cell: Cell, axes: Mapping[str, Any], selected: Mapping[str, str] | None) -> tuple[TrialConfig, str]:
        """The resolved fine-tuning TrialConfig of `cell` at search point `axes`, and its key.

        `selected` maps group → chosen pretraining key (None: not chosen yet → placeholder)."""
        spec = self.spec
        model = dataclasses.replace(spec.base_model(), arch=cell.arch, n_classes=n_classes(spec, cell.task))
        data = spec.base_data(task=cell.task, fold=cell.fold)
        train = finetune_recipe(cell.strategy, **{**_train_overrides(spec.train), "seed": cell.seed})
        d = TrialConfig(model=model, data=data, train=train).to_dict()
        for k, v in axes.items():
            section, name = k.split(".")
            d[section][name] = v
        pre_key = None
        if cell.group is not None:
            pre_key = (selected or {}).get(cell.group)
            if pre_key is None:
                pre_key = f"<best of {cell.group}>"
                d["init_checkpoint"] = pre_key
            else:
                d["init_checkpoint"] = str(spec.pretrain_dir() / pre_key / "backbone.pt")
        trial = TrialConfig.from_dict(d).validate()
        return trial, trial_key(trial, pre_key)

    def cell_meta(self, cell: Cell, axes: Mapping[str, Any]) -> dict[str, Any]:
        return {"stage": "finetune", "arch": cell.arch, "strategy": cell.strategy, "task": cell.task,
                "seed": cell.seed, "fold": cell.fold, "group": cell.group or ""}

    # -------------------------------------------------------------------------------------
    def describe(self) -> str:
        """The DAG and trial counts, as `gdna sweep <spec> --plan` prints them."""
        spec, s = self.spec, self.spec.space
        lines = [f"sweep {spec.name}: {len(spec.architectures)} architectures × {len(spec.strategies)} strategies × "
                 f"{len(spec.tasks)} tasks; search space {s.name or spec.search_space} ({s.searcher})"]
        lines.append(f"  storage {spec.storage_dir()}  tracking {spec.tracking()}")
        n_done = sum(j.done for j in self.pretrain)
        pre = spec.pretrain
        lines.append(
            f"stage 1 pretrain: {len(self.groups)} groups × {len(pre.lrs)} lr × {len(pre.context_lens)} context = "
            f"{len(self.pretrain)} runs ({n_done} already done, {len(self.pretrain) - n_done} to run), "
            f"{pre.steps} steps each, best per group by {pre.selection_metric}"
            + (" (one group per context length; fine-tuned from each)" if pre.per_context else "")
        )
        if len(self.groups) <= 12:
            for g, jobs in self.groups.items():
                d = sum(j.done for j in jobs)
                lines.append(f"    {g:<50s} {len(jobs)} run(s), {d} done  [{', '.join(j.key for j in jobs)}]")
        else:
            per: dict[str, list[int]] = {}
            for jobs in self.groups.values():
                c = per.setdefault(jobs[0].strategy, [0, 0, 0])
                c[0] += 1
                c[1] += len(jobs)
                c[2] += sum(j.done for j in jobs)
            for strat, (ng, nj, nd) in per.items():
                corpus = {"hg38": "genome", "task_spt": "each task's train split", "domain_spt": "all tasks' train splits"}[strat]
                by = f"arch × {corpus}" + (" × context" if pre.per_context else "")
                lines.append(f"    {strat:<11s} {ng:>3} groups ({by}): {nj} runs, {nd} done")
        axes = " × ".join(f"{k} {len(v)}" for k, v in s.axes().items()) or "no grid axes"
        folds = "paired with seeds" if s.folds == "paired" else f"{len(self._folds())} fold(s)"
        ctx = f"(× {len(spec.pretrain.context_lens)} context if pretrained) " if spec.pretrain.per_context else ""
        cell_line = (f"{len(spec.architectures)} arch × {len(spec.strategies)} strategy × {len(spec.tasks)} task × "
                     f"{len(s.seeds)} seed(s) × {folds} {ctx}= {len(self.cells)} cells")
        if s.searcher == "grid":
            how = f"× grid ({axes} = {len(self.points)} points)"
        elif s.searcher == "random":
            how = f"× grid ({axes}) × {s.num_samples} random samples of {', '.join(s.distributions)}"
        else:
            how = f"→ Optuna TPE, {s.num_samples} trials over cell × {', '.join(s.distributions)}"
        lines.append(f"stage 2 finetune: {cell_line} {how} = {self.n_finetune} trials")
        by_strat: dict[str, int] = {}
        per_cell = self.n_finetune / max(1, len(self.cells))
        for c in self.cells:
            by_strat[c.strategy] = by_strat.get(c.strategy, 0) + 1
        lines.append("    per strategy: " + ", ".join(f"{k} {round(v * per_cell)}" for k, v in by_strat.items())
                     + (" (from scratch: no pretraining)" if "scratch" in by_strat else ""))
        r = spec.resources
        per_trial = f"{r.workers_per_trial} worker(s) × {r.cpus_per_worker:g} CPU" + (
            f" + {r.gpus_per_worker:g} GPU" if r.gpus_per_worker else "")
        lines.append(f"resources: {per_trial} per trial, max concurrent "
                     f"{r.max_concurrent_trials or 'auto (fit to the cluster)'}, max_failures {r.max_failures}; "
                     f"scheduler {spec.scheduler}")
        lines.append(f"total: {len(self.pretrain) - n_done} pretraining runs + {self.n_finetune} fine-tuning trials")
        return "\n".join(lines)

    def _folds(self) -> list[int]:
        f = self.spec.space.folds
        if f is None:
            return [self.spec.base_data().fold]
        return list(f) if isinstance(f, tuple) else []


# ---------------------------------------------------------------------------------------------
def build_plan(spec: SweepSpec) -> Plan:
    plan = Plan(spec)
    s = spec.space
    # pretraining groups
    for arch in spec.architectures:
        for strategy in spec.strategies:
            if strategy == "scratch":
                continue
            tasks = list(spec.tasks) if strategy == "task_spt" else [None]
            for task in tasks:
                for ctx_group, ctxs in _context_groups(spec):
                    group = _group_name(arch, strategy, task, ctx_group)
                    jobs = [_pretrain_job(spec, arch, strategy, task, group, lr, ctx)
                            for lr in spec.pretrain.lrs for ctx in ctxs]
                    plan.groups[group] = jobs
                    plan.pretrain.extend(jobs)
    # the same pretraining config may serve two groups only if identical; dedupe by key
    seen: dict[str, PretrainJob] = {}
    for j in plan.pretrain:
        seen.setdefault(j.key, j)
    plan.pretrain = list(seen.values())
    # fine-tuning cells
    folds_of = (lambda seed: [seed % spec.base_data().n_folds]) if s.folds == "paired" else (lambda seed: plan._folds())
    for arch in spec.architectures:
        for strategy in spec.strategies:
            for task in spec.tasks:
                groups = [(None, None)] if strategy == "scratch" else [
                    (_group_name(arch, strategy, task if strategy == "task_spt" else None, c), c)
                    for c, _ in _context_groups(spec)]
                for group, ctx in groups:
                    for seed in s.seeds:
                        for fold in folds_of(seed):
                            plan.cells.append(Cell(arch, strategy, task, seed, fold, group, ctx))
    axes = s.axes()
    keys = list(axes)
    plan.points = [dict(zip(keys, vals)) for vals in itertools.product(*(axes[k] for k in keys))] or [{}]
    return plan


def _context_groups(spec: SweepSpec) -> list[tuple[int | None, tuple[int, ...]]]:
    """[(context of the group or None, the contexts its runs try)]: one group per length with
    pretrain.per_context, else one group trying them all."""
    ctxs = tuple(spec.pretrain.context_lens)
    return [(c, (c,)) for c in ctxs] if spec.pretrain.per_context else [(None, ctxs)]


def _group_name(arch: str, strategy: str, task: str | None, ctx: int | None) -> str:
    return f"{arch}.{strategy}" + (f".{task}" if task else "") + (f".ctx{ctx}" if ctx else "")


def _pretrain_job(spec: SweepSpec, arch: str, strategy: str, task: str | None, group: str, lr: float, ctx: int) -> PretrainJob:
    pre = spec.pretrain
    corpus = CORPUS_OF_STRATEGY[strategy]
    model = dataclasses.replace(spec.base_model(), arch=arch)
    data = from_dict(type(spec.base_data()), {**spec.data, **pre.data}, "pretrain.data")
    data = dataclasses.replace(
        data, data_root=str(spec.root()), corpus=corpus, task=task if corpus == "task" else None,
        domain_tasks=tuple(sorted(pre.domain_tasks or spec.tasks)) if corpus == "domain" else (),
        context_len=ctx,
    )
    train = TrainConfig(**{
        "objective": "clm", "lr": lr, "batch_size": pre.batch_size, "max_steps": pre.steps,
        "eval_every": min(pre.eval_every, pre.steps), "seed": pre.seed, **_train_overrides(pre.train),
    })
    trial = TrialConfig(model=model, data=data, train=train).validate()
    key = trial.identity()
    trial = dataclasses.replace(trial, export_dir=str(spec.pretrain_dir() / key))
    return PretrainJob(key=key, group=group, arch=arch, strategy=strategy, task=task, trial=trial)


def _train_overrides(d: Mapping[str, Any]) -> dict[str, Any]:
    t = from_dict(TrainConfig, d, "train")
    return {k: getattr(t, k) for k in d}


def n_classes(spec: SweepSpec, task: str) -> int:
    """Class count from the task's sorted class folders, or greatapes' species FASTAs (2 when the data is
    not here, e.g. --plan)."""
    if task == GREATAPES_TASK:
        return max(len(greatapes_fastas(spec.root())), 2)
    d = spec.root() / "genomic_benchmarks" / task / "train"
    if d.is_dir():
        n = sum(1 for p in d.iterdir() if p.is_dir())
        return max(n, 2)
    return 2


def trial_key(trial: TrialConfig, pretrain_key: str | None = None) -> str:
    """The trial's identity: content hash of the resolved config, without data_root, checkpoint named by key."""
    d = trial.to_dict()
    d["data"] = {k: v for k, v in d["data"].items() if k != "data_root"}
    if pretrain_key is not None:
        d["init_checkpoint"] = f"pretrain:{pretrain_key}"
    if d.get("export_dir"):
        d["export_dir"] = None
    return config_hash(d)


# ---------------------------------------------------------------------------------------------
def read_pretrain_metrics(export_dir: Path) -> dict[str, Any]:
    """Final metrics of a finished pretraining (done.json, else backbone.pt's "metrics")."""
    metrics: dict[str, Any] = {}
    try:
        raw = json.loads((Path(export_dir) / "done.json").read_text() or "{}")
        if isinstance(raw, dict):
            metrics.update(raw.get("metrics", {}) if isinstance(raw.get("metrics"), dict) else {})
            metrics.update({k: v for k, v in raw.items() if k != "metrics"})
    except (OSError, ValueError):
        pass
    if not any(k in metrics for k in ("best_val_loss", "val_loss", "best_val_ppl", "val_ppl")):
        try:
            import torch

            blob = torch.load(Path(export_dir) / "backbone.pt", map_location="cpu", weights_only=False)
            metrics.update(blob.get("metrics", {}) or {})
        except Exception:  # noqa: BLE001 - best effort: metrics are for display/selection only
            pass
    return metrics


def selection_value(metrics: Mapping[str, Any], metric: str) -> float:
    for k in (FINAL_METRIC[metric], metric):
        v = metrics.get(k)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    if metric == "val_ppl":  # derive from the loss when only the loss is there
        v = metrics.get("best_val_loss", metrics.get("val_loss"))
        if isinstance(v, (int, float)):
            return math.exp(min(float(v), 50.0))
    return math.inf


def select_pretraining(plan: Plan) -> dict[str, str]:
    """group → key of its best finished pretraining (lowest selection metric). Raises if a group has none."""
    metric = plan.spec.pretrain.selection_metric
    out = {}
    for group, jobs in plan.groups.items():
        done = [j for j in jobs if j.done]
        if not done:
            raise ConfigError(f"pretrain: no finished pretraining for group {group} (see the pretrain stage errors)")
        best = min(done, key=lambda j: (selection_value(read_pretrain_metrics(j.export_dir), metric), j.key))
        out[group] = best.key
    return out
