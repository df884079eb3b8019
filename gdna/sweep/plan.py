"""Stage DAG: which pretraining runs the fine-tuning grid needs, and the resolved trials of each stage.

    pretrain  (one job per architecture × corpus group × pretraining lr × context length)
       │      content-addressed: <storage>/pretrain/<key>/{backbone.pt,done.json}, shared by all sweeps
       ▼      best per group by the selection metric (val_loss / val_ppl)
    finetune  (arch × strategy × task × seed × fold cells × search-space points)
              init_checkpoint = the group's chosen backbone.pt; `scratch` cells need no pretraining

Groups follow the strategy's corpus (gdna.registry): a corpus that reads nothing task-specific (the
genome) → (arch, corpus); one that reads each task → (arch, task) per task; one over all tasks → (arch,
all tasks). A trial's key (its MLflow `gdna.trial_key`, its Ray Train run name, its resume check) is
`TrialConfig.identity()`: the resolved config without locations, the pretrained checkpoint named by its
pretraining key, and the fingerprint of the data it reads (computed here, once per task / corpus).
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from gdna.config import TrainConfig, TrialConfig, finetune_recipe
from gdna.errors import ConfigError
from gdna.registry import ARCHITECTURES, corpus_of
from gdna.train.export import export_file, is_exported, read_export_metrics
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
        return is_exported(self.export_dir)

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
    fingerprints: dict[str, str] = field(default_factory=dict)  # task → data fingerprint ("" if not here)
    skipped: list[tuple[str, int, str]] = field(default_factory=list)  # (arch, context length, why) not run

    def task_fingerprint(self, task: str) -> str:
        if task not in self.fingerprints:
            self.fingerprints[task] = _fingerprint(lambda: _task_fingerprint(self.spec, task))
        return self.fingerprints[task]

    # -------------------------------------------------------------------------------------
    @property
    def n_finetune(self) -> int:
        s = self.spec.space
        if s.searcher == "grid":
            return len(self.cells) * len(self.points)
        if s.searcher == "random":
            return len(self.cells) * len(self.points) * s.num_samples
        return len(self.cells) * s.num_samples  # optuna: num_samples points per tuning cell × its seeds/folds

    @property
    def n_tuning_cells(self) -> int:
        """arch × strategy × task (× pretraining context): what an adaptive searcher tunes separately."""
        return len({(c.arch, c.strategy, c.task, c.context_len) for c in self.cells})

    def finetune_trial(self, cell: Cell, axes: Mapping[str, Any], selected: Mapping[str, str] | None) -> tuple[TrialConfig, str]:
        """The resolved fine-tuning TrialConfig of `cell` at search point `axes`, and its key.

        `selected` maps group → chosen pretraining key (None: not chosen yet → placeholder)."""
        spec = self.spec
        model = dataclasses.replace(spec.overrides.models[cell.arch], n_classes=n_classes(spec, cell.task))
        data = spec.base_data(task=cell.task, fold=cell.fold, fingerprint=self.task_fingerprint(cell.task))
        if spec.pretrain.match_context and cell.context_len:  # fine-tune at the pretraining's length
            data = dataclasses.replace(data, max_len=cell.context_len)
        train = finetune_recipe(cell.strategy, **{**spec.overrides.train, "seed": cell.seed})
        d = TrialConfig(model=model, data=data, train=train).to_dict()
        for k, v in axes.items():
            section, name = k.split(".")
            if section != "model" or name in d["model"]:  # another architecture's model key: not this trial's
                d[section][name] = v
        if cell.group is not None:
            pre_key = (selected or {}).get(cell.group)
            if pre_key is None:  # not chosen yet (--plan): a placeholder
                d["init_from"] = d["init_checkpoint"] = f"<best of {cell.group}>"
            else:
                d["init_from"] = pre_key
                d["init_checkpoint"] = str(export_file(spec.pretrain_dir() / pre_key))
        trial = TrialConfig.from_dict(d).validate()
        return trial, trial.identity()

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
                corpus = corpus_of(strat)
                by = f"arch × {corpus.describe or corpus.name}" + (" × context" if pre.per_context else "")
                lines.append(f"    {strat:<11s} {ng:>3} groups ({by}): {nj} runs, {nd} done")
        lines += self._scaling_lines()
        if not spec.finetune:
            lines.append("stage 2 finetune: none (finetune: false, a pretraining-only study)")
            lines.append(f"total: {len(self.pretrain) - n_done} pretraining runs")
            return "\n".join(lines)
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
            nt = self.n_tuning_cells
            slots = len(self.cells) // max(1, nt)
            flight = s.points_in_flight or "auto"
            how = (f"→ Optuna TPE per tuning cell (arch × strategy × task{' × context' if ctx else ''}): "
                   f"{nt} cells × {s.num_samples} points of {' × '.join([*s.axes(), *s.distributions])} "
                   f"(the first {min(s.n_startup_trials, s.num_samples)} random; {flight} in flight per cell) "
                   f"× {slots} seed/fold(s) each")
        lines.append(f"stage 2 finetune: {cell_line} {how} = {self.n_finetune} trials")
        if s.searcher == "optuna":
            lines.append(f"    budget: {s.num_samples} points × {slots} seed/fold(s) = {s.num_samples * slots} trials per tuning "
                         f"cell, the same for all {nt}; {self.n_finetune} in total; studies in {spec.sweep_dir() / 'optuna.db'}")
        by_strat: dict[str, int] = {}
        per_cell = self.n_finetune / max(1, len(self.cells))
        for c in self.cells:
            by_strat[c.strategy] = by_strat.get(c.strategy, 0) + 1
        scratch = [k for k in by_strat if corpus_of(k) is None]
        lines.append("    per strategy: " + ", ".join(f"{k} {round(v * per_cell)}" for k, v in by_strat.items())
                     + (f" ({', '.join(scratch)}: no pretraining)" if scratch else ""))
        r = spec.resources
        per_trial = f"{r.workers_per_trial} worker(s) × {r.cpus_per_worker:g} CPU" + (
            f" + {r.gpus_per_worker:g} GPU" if r.gpus_per_worker else "")
        lines.append(f"resources: {per_trial} per trial (runner {r.runner}), max concurrent "
                     f"{r.max_concurrent_trials or 'auto (fit to the cluster)'}, max_failures {r.max_failures}; "
                     f"scheduler {spec.scheduler}"
                     + (f" (one per tuning cell, on epoch, grace period {spec.asha_grace_period})"
                        if spec.scheduler == "asha" else ""))
        lines.append(f"total: {len(self.pretrain) - n_done} pretraining runs + {self.n_finetune} fine-tuning trials")
        return "\n".join(lines)

    def _scaling_lines(self) -> list[str]:
        """Token budgets per context length, model sizes, and what the quadratic-length rule skips."""
        pre, lines = self.spec.pretrain, []
        if pre.param_budgets:
            lines.append(f"    model sizes: {len(pre.param_budgets)} parameter budgets "
                         + ", ".join(_short(b) for b in pre.param_budgets)
                         + f" (±3%; n_layers {self.spec.model.get('n_layers', 'default')}"
                         + (": the solver chooses depth and width" if self.spec.model.get("n_layers") == 0 else "")
                         + "; each run logs n_params, d_model, n_layers)")
            from gdna.models.build import count_backbone_params, resolve_dims

            for b in pre.param_budgets:
                sizes = []
                for arch in self.spec.architectures:
                    m = dataclasses.replace(self.spec.overrides.models[arch], param_budget=b, d_model=None, dropout=0.0)
                    d = resolve_dims(m)
                    sizes.append(f"{arch} {d.n_layers}×{d.d_model} = {count_backbone_params(m, d):,}")
                lines.append(f"      {_short(b):>5}: " + "; ".join(sizes))
        seen: dict[int, TrialConfig] = {}
        for j in self.pretrain:
            seen.setdefault(j.trial.data.context_len, j.trial)
        total = 0
        for L, t in sorted(seen.items()):
            tr = t.train
            per_step = tr.batch_size * L
            n_runs = sum(j.trial.data.context_len == L for j in self.pretrain)
            total += per_step * tr.max_steps * n_runs
            micro = tr.micro_batch_size or tr.batch_size // self.spec.resources.workers_per_trial
            acc = tr.batch_size // self.spec.resources.workers_per_trial // micro
            warm = ""
            if tr.seq_warmup_start and tr.seq_warmup_start < L:
                from gdna.train.batches import seq_len_schedule

                sched = seq_len_schedule(L, tr.seq_warmup_start, tr.seq_warmup_steps)
                warm = (f"; sequence-length warmup {' → '.join(str(x) for _, x in sched)} "
                        f"({tr.seq_warmup_steps} steps each)")
            lines.append(f"    context {L}: batch {tr.batch_size} × {L} = {per_step:,} tokens per step "
                         f"(micro-batch {micro} × {acc} accumulation step(s) per worker), {tr.max_steps} steps = "
                         f"{_short(per_step * tr.max_steps)} tokens per run × {n_runs} run(s){warm}")
        if seen:
            lines.append(f"    token budget: {_short(total)} training tokens over all pretraining runs")
        by_arch: dict[tuple[str, str], list[int]] = {}
        for arch, L, why in self.skipped:
            by_arch.setdefault((arch, why), []).append(L)
        for (arch, why), Ls in by_arch.items():
            lines.append(f"    skipped: {arch} at context {', '.join(str(x) for x in sorted(set(Ls)))} ({why})")
        return lines

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
            corpus = corpus_of(strategy)
            if corpus is None:
                continue
            for task in _group_tasks(spec, strategy):
                for ctx_group, ctxs in _context_groups(spec):
                    for budget in spec.pretrain.param_budgets or (None,):
                        ok = []
                        for ctx in ctxs:
                            why = skip_reason(spec, arch, ctx)
                            if why:
                                plan.skipped.append((arch, ctx, why))
                            else:
                                ok.append(ctx)
                        if not ok:
                            continue
                        group = _group_name(arch, strategy, task, ctx_group, budget)
                        jobs = [_pretrain_job(spec, arch, strategy, task, group, lr, ctx, budget)
                                for lr in spec.pretrain.lrs for ctx in ok]
                        plan.groups[group] = jobs
                        plan.pretrain.extend(jobs)
    # the same pretraining config may serve two groups only if identical; dedupe by key
    seen: dict[str, PretrainJob] = {}
    for j in plan.pretrain:
        seen.setdefault(j.key, j)
    plan.pretrain = list(seen.values())
    # fine-tuning cells
    folds_of = (lambda seed: [seed % spec.base_data().n_folds]) if s.folds == "paired" else (lambda seed: plan._folds())
    for arch in spec.architectures if spec.finetune else ():
        for strategy in spec.strategies:
            for task in spec.tasks:
                groups = [(None, None)] if corpus_of(strategy) is None else [
                    (_group_name(arch, strategy, task if _per_task(strategy) else None, c), c)
                    for c, _ in _context_groups(spec)]
                if corpus_of(strategy) is None and spec.pretrain.match_context:  # scratch once per length too
                    groups = [(None, c) for c, _ in _context_groups(spec)]
                # a length the quadratic rule skips has no pretraining: no cell either
                groups = [(g, c) for g, c in groups if not (c and skip_reason(spec, arch, c))]
                for group, ctx in groups:
                    for seed in s.seeds:
                        for fold in folds_of(seed):
                            plan.cells.append(Cell(arch, strategy, task, seed, fold, group, ctx))
    for task in spec.tasks:  # once, in the driver (the plan travels to the trials with them)
        plan.task_fingerprint(task)
    axes = s.axes()
    keys = list(axes)
    plan.points = [dict(zip(keys, vals)) for vals in itertools.product(*(axes[k] for k in keys))] or [{}]
    return plan


def _per_task(strategy: str) -> bool:
    corpus = corpus_of(strategy)
    return corpus is not None and corpus.reads == "task"


def _group_tasks(spec: SweepSpec, strategy: str) -> list[str | None]:
    """The tasks a strategy's pretraining groups are per: each task, or one group (None)."""
    return list(spec.tasks) if _per_task(strategy) else [None]


def _context_groups(spec: SweepSpec) -> list[tuple[int | None, tuple[int, ...]]]:
    """[(context of the group or None, the contexts its runs try)]: one group per length with
    pretrain.per_context, else one group trying them all."""
    ctxs = tuple(spec.pretrain.context_lens)
    return [(c, (c,)) for c in ctxs] if spec.pretrain.per_context else [(None, ctxs)]


def _group_name(arch: str, strategy: str, task: str | None, ctx: int | None, budget: int | None = None) -> str:
    return (f"{arch}.{strategy}" + (f".{task}" if task else "") + (f".ctx{ctx}" if ctx else "")
            + (f".p{_short(budget)}" if budget else ""))


def skip_reason(spec: SweepSpec, arch: str, ctx: int) -> str | None:
    """Why `arch` is not run at context length `ctx` (None: it is): an architecture whose cost grows as L²
    (its registry entry's quadratic_in_length) beyond pretrain.quadratic_max_len."""
    limit = spec.pretrain.quadratic_max_len
    if limit and ctx > limit and ARCHITECTURES.get(arch).quadratic_in_length:
        return f"quadratic in length: attention cost grows as L², skipped beyond pretrain.quadratic_max_len {limit}"
    return None


def _short(n: float) -> str:
    """1_048_576 → '1.05M', 10_485_760_000 → '10.5B'."""
    for unit, div in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:g}"


def _pretrain_job(spec: SweepSpec, arch: str, strategy: str, task: str | None, group: str, lr: float, ctx: int,
                  budget: int | None = None) -> PretrainJob:
    from gdna.data.corpora import corpus_fingerprint

    pre = spec.pretrain
    corpus = corpus_of(strategy)
    model = spec.overrides.models[arch]
    if budget:  # a budget no width (and depth) reaches within ±3% fails here, before Ray starts
        from gdna.models.build import resolve_dims

        model = dataclasses.replace(model, param_budget=budget, d_model=None)
        resolve_dims(model)
    data = dataclasses.replace(
        spec.overrides.pretrain_data, corpus=corpus.name, task=task if corpus.reads == "task" else None,
        domain_tasks=tuple(sorted(pre.domain_tasks or spec.tasks)) if corpus.reads == "all_tasks" else (),
        context_len=ctx,
    )
    batch, extra = pre.batch_size, {}
    if pre.tokens_per_batch:  # tokens per step fixed: batch = tokens / L; an epoch = one fresh global batch
        batch = pre.tokens_per_batch // ctx
        data = dataclasses.replace(data, windows_per_epoch=batch)
    if pre.eval_tokens:
        data = dataclasses.replace(data, eval_windows=max(1, pre.eval_tokens // ctx))
    if pre.micro_tokens:  # gradient accumulation: the largest micro-batch within micro_tokens that divides
        local = max(1, batch // spec.resources.workers_per_trial)
        cap = max(1, pre.micro_tokens // ctx)
        extra["micro_batch_size"] = max(m for m in range(1, min(local, cap) + 1) if local % m == 0)
    data = dataclasses.replace(data, fingerprint=_fingerprint(lambda: corpus_fingerprint(data)))
    train = TrainConfig(**{
        "objective": "clm", "lr": lr, "batch_size": batch, "max_steps": pre.steps,
        "eval_every": min(pre.eval_every, pre.steps), "seed": pre.seed, **extra, **spec.overrides.pretrain_train,
    })
    trial = TrialConfig(model=model, data=data, train=train).validate()
    key = trial.identity()
    trial = dataclasses.replace(trial, export_dir=str(spec.pretrain_dir() / key))
    return PretrainJob(key=key, group=group, arch=arch, strategy=strategy, task=task, trial=trial)


def _task_fingerprint(spec: SweepSpec, task: str) -> str:
    from gdna.data.tasks import task_fingerprint

    return task_fingerprint(str(spec.root()), task)


def _fingerprint(compute) -> str:
    """A data fingerprint, or "" when the data is not here (`--plan` of a spec for another machine)."""
    try:
        return compute()
    except OSError:
        return ""


def n_classes(spec: SweepSpec, task: str) -> int:
    """Class count of the task (its kind reads it from the data; 2 when the data is not here, e.g. --plan)."""
    from gdna.data.tasks import task_classes

    return max(len(task_classes(spec.root(), task)), 2)


# ---------------------------------------------------------------------------------------------
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
        best = min(done, key=lambda j: (selection_value(read_export_metrics(j.export_dir), metric), j.key))
        out[group] = best.key
    return out
