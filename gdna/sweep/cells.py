"""Fair adaptive tuning: one Optuna study per tuning cell, and early stopping within a cell only.

A *tuning cell* is architecture × strategy × task (× pretraining context with `pretrain.per_context`);
its *slots* are the plan's cells of that combination, one per seed/fold. Every tuning cell gets the
same budget: `num_samples` proposed points.

`CellSearch` (a Tune `Searcher`) holds one Optuna TPE study per tuning cell:
- a proposed point (lr, batch, ...) becomes one Tune trial per slot (`{"cell": <plan cell id>, **point}`),
  and the study is told the MEAN validation metric of the point's slots once all of them reported
  (a slot's value: its `best_<metric>`, else the best `<metric>` it reported, e.g. before an early stop);
- proposals are handed out round-robin over the cells until each cell has used its budget;
- reproducible: point k of a cell is proposed by a TPESampler seeded from (cell, k), with exactly the
  results of its points 0 .. k-L told (results are told in point order; L = points in flight per cell),
  so a rerun proposes the same points whatever the timing, and so does a resumed one;
- a point whose seed/fold trial errored is told FAIL (TPE ignores it); if the trial succeeds on
  `gdna resume`, the completed point is added to the study;
- a duplicate proposal (same values as an earlier point of the cell) is not trained again: it is
  told the earlier point's value and still counts towards the budget;
- `save`/`restore` (Tune's experiment checkpoints) keep the whole state, so `Tuner.restore` continues
  every study; the studies are also written to `<sweep dir>/optuna.db` (rewritten from that state when
  a driver starts, so they always match what Tune knows): `optuna-dashboard sqlite:///<sweep dir>/optuna.db`.

`CellScheduler` (a Tune `TrialScheduler`) routes every trial to its tuning cell's own ASHA, so early
stopping never compares trials of different cells; its rungs are kept in `<tune dir>/<stage>_asha.pkl`
(Tune does not checkpoint schedulers), so a resumed sweep keeps the cutoffs it had.

Both run in the sweep driver. `bind_sweep_dir(dir)` tells them where the sweep lives now (the
objects pickled in Tune's experiment keep the path they were created with; storage may have moved).
"""
from __future__ import annotations

import hashlib
import logging
import math
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

OPTUNA_DB = "optuna.db"
_BOUND: dict[str, str] = {}  # "sweep_dir": the sweep directory of this driver (bind_sweep_dir)


def bind_sweep_dir(sweep_dir: str | os.PathLike) -> None:
    _BOUND["sweep_dir"] = str(sweep_dir)


def _sweep_dir(default: str) -> Path:
    return Path(_BOUND.get("sweep_dir") or default)


# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TuningCell:
    key: str  # "arch|strategy|task" (+ "|c<context>")
    slots: tuple[str, ...]  # the plan's cell ids, one per seed/fold


def tuning_key(cell) -> str:
    """The tuning cell of a plan `Cell` (its seed and fold left out)."""
    ctx = f"|c{cell.context_len}" if cell.context_len else ""
    return f"{cell.arch}|{cell.strategy}|{cell.task}{ctx}"


def tuning_cells(plan) -> list[TuningCell]:
    groups: dict[str, list[str]] = {}
    for c in plan.cells:
        groups.setdefault(tuning_key(c), []).append(c.id)
    return [TuningCell(k, tuple(v)) for k, v in groups.items()]


def optuna_space(space) -> dict[str, tuple]:
    """The search space (`gdna.sweep.spec.SearchSpace`) as picklable (kind, args) per key; grid axes
    are categorical parameters of the study."""
    out: dict[str, tuple] = {k: ("choice", tuple(v)) for k, v in space.axes().items()}
    for k, dist in space.distributions.items():
        (kind, args), = dist.items()
        out[k] = (kind, tuple(args))
    return out


def _distributions(space: Mapping[str, tuple]) -> dict[str, Any]:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out = {}
    for k, (kind, args) in space.items():
        if kind == "choice":
            out[k] = CategoricalDistribution(list(args))
        elif kind == "loguniform":
            out[k] = FloatDistribution(float(args[0]), float(args[1]), log=True)
        elif kind == "uniform":
            out[k] = FloatDistribution(float(args[0]), float(args[1]))
        else:  # randint: [low, high) as Tune's randint
            out[k] = IntDistribution(int(args[0]), int(args[1]) - 1)
    return out


def point_seed(cell: str, k: int) -> int:
    """The TPE seed of point k of a cell: the same on every machine and every rerun."""
    return int.from_bytes(hashlib.sha256(f"{cell}#{k}".encode()).digest()[:4], "little")


def points_in_flight(n_cells: int, n_slots: int, max_concurrent: int, budget: int, fixed: int = 0) -> int:
    """Points of one cell evaluated at once: `fixed`, else enough for all cells together to fill the
    concurrent trial slots (at least 1, at most the budget)."""
    if fixed:
        return max(1, min(fixed, budget))
    want = math.ceil(max(1, max_concurrent) / max(1, n_cells * n_slots))
    return max(1, min(want, budget))


# ---------------------------------------------------------------------------------------------
class CellSearch(Searcher):
    """One Optuna TPE study per tuning cell, the same budget each; see the module docstring."""

    def __init__(self, cells: list[TuningCell], space: Mapping[str, tuple], budget: int, *,
                 metric: str = "val_acc", mode: str = "max", max_concurrent: int = 0, in_flight: int = 0,
                 n_startup_trials: int = 10, sweep_dir: str = "", sweep: str = ""):
        super().__init__(metric=metric, mode=mode)
        self.cell_slots = {c.key: list(c.slots) for c in cells}
        self.order = [c.key for c in cells]
        self.space = dict(space)
        self.budget = int(budget)
        self.max_concurrent = int(max_concurrent)
        self.n_startup_trials = int(n_startup_trials)
        self.sweep_dir = sweep_dir
        self.sweep = sweep
        n_slots = max((len(s) for s in self.cell_slots.values()), default=1)
        self.in_flight = points_in_flight(len(cells), n_slots, self.max_concurrent, self.budget, in_flight)
        self._reset_state()
        self._studies: dict[str, Any] = {}
        self._storage = None

    def _reset_state(self) -> None:
        # per cell: its points in proposal order; a point = {"params", "number" (its Optuna trial),
        # "slots": {plan cell id: {"trial", "state" queued|live|done|errored, "value"}}, "dup_of",
        # "told": None | "COMPLETE" | "FAIL", "value"}
        self.points: dict[str, list[dict]] = {c: [] for c in self.order}
        self.told: dict[str, int] = {c: 0 for c in self.order}
        self.queue: list[tuple[str, int, str]] = []  # (cell, point, slot) waiting for a Tune trial
        self.trials: dict[str, tuple[str, int, str]] = {}  # Tune trial id → (cell, point, slot)
        self.live: set[str] = set()
        self.best: dict[str, float] = {}  # Tune trial id → best metric reported so far
        self.started = False

    STATE_KEYS = ("points", "told", "queue", "trials", "live", "best", "started", "in_flight")

    # -- pickling: the studies and the storage are rebuilt, never pickled ------------------------
    def __getstate__(self):
        d = self.__dict__.copy()
        d["_studies"], d["_storage"] = {}, None
        return d

    def __setstate__(self, d):
        self.__dict__.update(d)
        self._studies, self._storage = {}, None

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump({k: getattr(self, k) for k in self.STATE_KEYS}, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            state = pickle.load(f)
        for k in self.STATE_KEYS:
            setattr(self, k, state[k])
        self._studies, self._storage = {}, None  # rewritten from this state at first use

    # -- Tune's Searcher interface --------------------------------------------------------------
    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        if metric:
            self._metric = metric
        if mode:
            self._mode = mode
        return True

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        """Tune's max_concurrent_trials: limited here (a ConcurrencyLimiter would drop the results of
        errored trials that `gdna resume` retries)."""
        self.max_concurrent = int(max_concurrent)
        return True

    def suggest(self, trial_id: str):
        self._start()
        if trial_id in self.trials:
            return None
        if self.max_concurrent and len(self.live) >= self.max_concurrent:
            return None
        if not self.queue:
            return Searcher.FINISHED if self.all_proposed() else None
        cell, k, slot = self.queue.pop(0)
        s = self.points[cell][k]["slots"][slot]
        s.update(trial=trial_id, state="live")
        self.trials[trial_id] = (cell, k, slot)
        self.live.add(trial_id)
        return {"cell": slot, **self.points[cell][k]["params"]}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id not in self.trials:
            return
        v = _number(result.get(self._metric))
        if v is not None:
            old = self.best.get(trial_id)
            self.best[trial_id] = v if old is None else (max(old, v) if self._mode == "max" else min(old, v))

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        where = self.trials.get(trial_id)
        if where is None:
            return
        self._start()
        self.live.discard(trial_id)
        cell, k, slot = where
        point = self.points[cell][k]
        s = point["slots"][slot]
        if error:
            s.update(state="errored", value=None)
        else:
            s.update(state="done", value=self._slot_value(trial_id, result or {}))
        if point["told"] == "FAIL" and all(x["state"] == "done" for x in point["slots"].values()):
            self._add_late(cell, k)  # a retried trial (gdna resume) completed a point told FAIL
        self._advance(cell)

    # -- the studies -----------------------------------------------------------------------------
    def all_proposed(self) -> bool:
        return all(len(self.points[c]) >= self.budget for c in self.order)

    def db_path(self) -> Path:
        return _sweep_dir(self.sweep_dir) / OPTUNA_DB

    def storage(self):
        if self._storage is None:
            import optuna

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            path = self.db_path()
            path.parent.mkdir(parents=True, exist_ok=True)
            self._storage = optuna.storages.RDBStorage(
                f"sqlite:///{path}", engine_kwargs={"connect_args": {"timeout": 60}})
        return self._storage

    def study(self, cell: str):
        """The cell's Optuna study; the first use in a process rewrites it from this searcher's state."""
        st = self._studies.get(cell)
        if st is None:
            st = self._studies[cell] = self._rewrite(cell)
        return st

    def _rewrite(self, cell: str):
        import optuna
        from optuna.trial import TrialState, create_trial

        storage = self.storage()
        try:
            optuna.delete_study(study_name=cell, storage=storage)
        except KeyError:
            pass
        direction = "maximize" if self._mode == "max" else "minimize"
        study = optuna.create_study(study_name=cell, storage=storage, direction=direction)
        study.set_user_attr("sweep", self.sweep)
        study.set_user_attr("budget", self.budget)
        study.set_user_attr("slots", list(self.cell_slots[cell]))
        study.set_user_attr("metric", f"mean {self._metric} over the slots (seeds/folds)")
        dists = _distributions(self.space)
        for k, p in enumerate(self.points[cell]):
            attrs = self._attrs(cell, k)
            if p["told"] is not None:
                state = TrialState.COMPLETE if p["told"] == "COMPLETE" else TrialState.FAIL
                study.add_trial(create_trial(state=state, params=p["params"], distributions=dists,
                                             value=p["value"] if state == TrialState.COMPLETE else None,
                                             user_attrs=attrs))
                p["number"] = k
            else:  # asked, not told: running again, with its params
                study.enqueue_trial(p["params"], user_attrs=attrs, skip_if_exists=False)
                p["number"] = study.ask(dists).number
        return study

    def _attrs(self, cell: str, k: int) -> dict[str, Any]:
        p = self.points[cell][k]
        out: dict[str, Any] = {"point": k, "cell": cell}
        if p.get("dup_of") is not None:
            out["duplicate_of_point"] = p["dup_of"]
        for slot, s in p["slots"].items():
            if s.get("value") is not None:
                out[f"{self._metric} {slot.split('|', 3)[-1]}"] = s["value"]
        return out

    def _start(self) -> None:
        """The studies match this state before anything changes it (rewritten once per process); in a fresh
        sweep, each cell's first L points, round-robin over the cells."""
        if len(self._studies) < len(self.order):
            for cell in self.order:
                self.study(cell)
        if self.started:
            return
        self.started = True
        for _ in range(self.in_flight):
            for cell in self.order:
                if len(self.points[cell]) < self.budget:
                    self._ask(cell)

    def _ask(self, cell: str) -> None:
        from optuna.samplers import TPESampler

        study = self.study(cell)
        k = len(self.points[cell])
        study.sampler = TPESampler(seed=point_seed(cell, k), n_startup_trials=self.n_startup_trials,
                                   constant_liar=True)
        t = study.ask(_distributions(self.space))
        params = {name: _plain(t.params[name]) for name in self.space}
        dup = next((j for j, q in enumerate(self.points[cell]) if q.get("dup_of") is None and q["params"] == params), None)
        point = {"params": params, "number": t.number, "dup_of": dup, "told": None, "value": None, "slots": {}}
        if dup is None:
            point["slots"] = {slot: {"trial": None, "state": "queued", "value": None} for slot in self.cell_slots[cell]}
            self.queue.extend((cell, k, slot) for slot in self.cell_slots[cell])
        self.points[cell].append(point)
        t.set_user_attr("point", k)
        if dup is not None:
            t.set_user_attr("duplicate_of_point", dup)

    def _advance(self, cell: str) -> None:
        """Tell the cell's finished points in order; each tell lets the next point be proposed."""
        pts = self.points[cell]
        while self.told[cell] < len(pts):
            k = self.told[cell]
            outcome = self._outcome(cell, k)
            if outcome is None:
                return
            self._tell(cell, k, *outcome)
            self.told[cell] += 1
            if len(pts) < self.budget:
                self._ask(cell)  # point k + L: it sees exactly the results of points 0 .. k

    def _outcome(self, cell: str, k: int) -> tuple[str, float | None] | None:
        p = self.points[cell][k]
        if p.get("dup_of") is not None:
            q = self.points[cell][p["dup_of"]]
            return (q["told"], q["value"]) if q["told"] is not None else None
        states = [s["state"] for s in p["slots"].values()]
        if any(st in ("queued", "live") for st in states):
            return None
        if "errored" in states:
            return "FAIL", None
        return "COMPLETE", sum(s["value"] for s in p["slots"].values()) / len(states)

    def _tell(self, cell: str, k: int, state: str, value: float | None) -> None:
        from optuna.trial import TrialState

        p = self.points[cell][k]
        p["told"], p["value"] = state, value
        study = self.study(cell)
        storage = self.storage()
        tid = storage.get_trial_id_from_study_id_trial_number(
            storage.get_study_id_from_name(cell), p["number"])
        for key, v in self._attrs(cell, k).items():
            storage.set_trial_user_attr(tid, key, v)
        if state == "COMPLETE":
            study.tell(p["number"], value)
        else:
            study.tell(p["number"], state=TrialState.FAIL)

    def _add_late(self, cell: str, k: int) -> None:
        from optuna.trial import TrialState, create_trial

        p = self.points[cell][k]
        p["told"] = "COMPLETE"
        p["value"] = sum(s["value"] for s in p["slots"].values()) / len(p["slots"])
        self.study(cell).add_trial(create_trial(
            state=TrialState.COMPLETE, params=p["params"], distributions=_distributions(self.space),
            value=p["value"], user_attrs={**self._attrs(cell, k), "retried": True}))

    def _slot_value(self, trial_id: str, result: Mapping[str, Any]) -> float:
        v = _number(result.get(f"best_{self._metric}"))
        if v is None:
            v = self.best.get(trial_id)
        if v is None:
            v = _number(result.get(self._metric))
        if v is None:  # diverged before its first validation: the worst accuracy there is
            v = 0.0 if self._mode == "max" else float("inf")
        return float(v)

    # -- reporting -------------------------------------------------------------------------------
    def usage(self) -> dict[str, dict[str, int]]:
        """cell → {"proposed", "distinct", "told", "budget"}."""
        return {c: {"proposed": len(p), "distinct": sum(q.get("dup_of") is None for q in p),
                    "told": self.told[c], "budget": self.budget} for c, p in self.points.items()}


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def _plain(v: Any) -> Any:
    """numpy scalars → Python (the trial config is JSON and YAML)."""
    return v.item() if hasattr(v, "item") else v


# ---------------------------------------------------------------------------------------------
class CellScheduler(FIFOScheduler):
    """ASHA per tuning cell: every trial is routed to its cell's own AsyncHyperBandScheduler."""

    def __init__(self, cell_of: Mapping[str, str], max_t: Mapping[str, int], *, grace_period: int = 1,
                 reduction_factor: float = 4, time_attr: str = "epoch", sweep_dir: str = "", stage: str = "finetune"):
        super().__init__()
        self._metric, self._mode = "val_acc", "max"
        self.cell_of = dict(cell_of)  # plan cell id → tuning cell
        self.max_t = dict(max_t)  # tuning cell → its epochs
        self.grace_period, self.reduction_factor, self.time_attr = grace_period, reduction_factor, time_attr
        self.sweep_dir, self.stage = sweep_dir, stage
        self.cells: dict[str, Any] = {}  # tuning cell → AsyncHyperBandScheduler
        self.stopped: set[str] = set()  # trial ids this scheduler stopped before their final report
        self._loaded = False

    def set_search_properties(self, metric, mode, **spec) -> bool:
        if metric:
            self._metric = metric
        if mode:
            self._mode = mode
        for s in self.cells.values():
            s._metric, s._mode = self._metric, self._mode
            s._metric_op = 1.0 if self._mode == "max" else -1.0
        return True

    def state_path(self) -> Path:
        return _sweep_dir(self.sweep_dir) / "tune" / f"{self.stage}_asha.pkl"

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        try:
            with open(self.state_path(), "rb") as f:
                saved = pickle.load(f)
            self.cells, self.stopped = saved["cells"], saved["stopped"]
        except (OSError, EOFError, pickle.UnpicklingError, KeyError):
            pass

    def _save(self) -> None:
        path = self.state_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            pickle.dump({"cells": self.cells, "stopped": self.stopped}, f)
        os.replace(tmp, path)

    def cell(self, trial) -> Any:
        from ray.tune.schedulers import ASHAScheduler

        self._load()
        key = self.cell_of.get(trial.config.get("cell"), "")
        s = self.cells.get(key)
        if s is None:
            max_t = max(self.max_t.get(key, 1), self.grace_period)
            s = self.cells[key] = ASHAScheduler(time_attr=self.time_attr, max_t=max_t, grace_period=self.grace_period,
                                                reduction_factor=self.reduction_factor)
            s.set_search_properties(self._metric, self._mode)
        return s

    def on_trial_add(self, tune_controller, trial) -> None:
        s = self.cell(trial)
        if trial.trial_id not in s._trial_info:  # a restored trial keeps its bracket
            s.on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result) -> str:
        if result.get("final"):
            # the trial is ending by itself: let it (a STOP now would kill it before it records its result;
            # ASHA records this value in on_trial_complete)
            return TrialScheduler.CONTINUE
        s = self.cell(trial)
        if trial.trial_id not in s._trial_info:
            s.on_trial_add(tune_controller, trial)
        decision = s.on_trial_result(tune_controller, trial, result)
        if decision == TrialScheduler.STOP:
            self.stopped.add(trial.trial_id)
        self._save()
        return decision

    def on_trial_complete(self, tune_controller, trial, result) -> None:
        s = self.cell(trial)
        if trial.trial_id in s._trial_info:
            s.on_trial_complete(tune_controller, trial, result)
        self._save()

    def on_trial_error(self, tune_controller, trial) -> None:
        self.on_trial_remove(tune_controller, trial)

    def on_trial_remove(self, tune_controller, trial) -> None:
        s = self.cell(trial)
        s._trial_info.pop(trial.trial_id, None)
        self._save()

    def debug_string(self) -> str:
        return f"ASHA per tuning cell ({len(self.cells)} cells): {len(self.stopped)} trials stopped early"
