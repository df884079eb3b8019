"""Fair adaptive tuning (gdna.sweep.cells), driven like Tune drives it, with a fast fake objective.

- every tuning cell gets exactly its budget even when one architecture scores far higher, each point
  on every seed/fold of its cell, the study told the mean validation metric;
- proposals are reproducible per cell whatever the completion order, and a searcher restored from a
  checkpoint (as Tuner.restore does) continues the studies with the same proposals and never exceeds
  the budget; optuna.db holds each cell's study, rewritten to match the restored state;
- duplicates and errored seed trials; the per-cell ASHA never stops a trial because of another cell.
"""
from __future__ import annotations

import math
import pickle
import random

import optuna
import pytest
from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.search import Searcher

from gdna.sweep.cells import CellScheduler, CellSearch, TuningCell, point_seed

ARCHS = {"transformer": 0.55, "hyena": 0.6, "mamba": 0.95}  # mamba scores far higher
SPACE = {"train.lr": ("loguniform", (1e-4, 1e-2)), "train.batch_size": ("choice", (32, 64))}


def _cells(archs=ARCHS, seeds=(0, 1)) -> list[TuningCell]:
    return [TuningCell(f"{a}|scratch|t", tuple(f"{a}|scratch|t|s{s}|f0" for s in seeds)) for a in archs]


def _objective(cfg: dict) -> float:
    arch = cfg["cell"].split("|")[0]
    seed = int(cfg["cell"].split("|")[3][1:])
    lr = cfg.get("train.lr", 1e-3)
    return ARCHS[arch] - 0.05 * (math.log10(lr) + 3) ** 2 + 0.01 * seed + (0.002 if cfg["train.batch_size"] == 32 else 0)


def _search(tmp_path, budget=6, **kw) -> CellSearch:
    s = CellSearch(_cells(kw.pop("archs", ARCHS)), kw.pop("space", SPACE), budget, sweep_dir=str(tmp_path),
                   sweep="t", **{"max_concurrent": 4, "n_startup_trials": 3, **kw})
    s.set_search_properties("val_acc", "max", {})
    return s


class Sim:
    """Tune's side: ask while there is room, finish live trials in a random order."""

    def __init__(self, searcher: CellSearch, seed: int, concurrency: int = 4):
        self.s, self.rng, self.concurrency = searcher, random.Random(seed), concurrency
        self.configs: dict[str, dict] = {}
        self.live: list[str] = []
        self.n = 0
        self.finished = False

    def fill(self) -> None:
        while len(self.live) < self.concurrency and not self.finished:
            tid = f"t{self.n:04d}"
            cfg = self.s.suggest(tid)
            if cfg == Searcher.FINISHED:
                self.finished = True
            elif cfg is None:
                return
            else:
                self.n += 1
                self.configs[tid] = cfg
                self.live.append(tid)

    def step(self, error: bool = False) -> str:
        tid = self.live.pop(self.rng.randrange(len(self.live)))
        v = _objective(self.configs[tid])
        self.s.on_trial_result(tid, {"val_acc": v - 0.01, "epoch": 1})
        self.s.on_trial_complete(tid, None if error else {"val_acc": v, "best_val_acc": v, "final": True}, error=error)
        return tid

    def run(self, max_steps: int = 10_000) -> None:
        for _ in range(max_steps):
            self.fill()
            if not self.live:
                assert self.finished, "nothing live and the searcher is not finished: it would stall Tune"
                return
            self.step()
        raise AssertionError("did not finish")


def _proposals(s: CellSearch) -> dict[str, list[dict]]:
    return {c: [p["params"] for p in pts] for c, pts in s.points.items()}


def test_every_cell_gets_exactly_its_budget_and_the_mean_over_seeds(tmp_path):
    s = _search(tmp_path, budget=6)
    sim = Sim(s, seed=0)
    sim.run()
    per_cell: dict[str, list[dict]] = {}
    for cfg in sim.configs.values():
        per_cell.setdefault(cfg["cell"].rsplit("|", 2)[0], []).append(cfg)
    assert set(per_cell) == {f"{a}|scratch|t" for a in ARCHS}
    for cell, cfgs in per_cell.items():
        points = {(c["train.lr"], c["train.batch_size"]) for c in cfgs}
        distinct = sum(p.get("dup_of") is None for p in s.points[cell])
        assert len(s.points[cell]) == 6 and len(points) == distinct
        # every point on every seed of the cell, once
        for p in points:
            seeds = sorted(c["cell"].split("|")[3] for c in cfgs if (c["train.lr"], c["train.batch_size"]) == p)
            assert seeds == ["s0", "s1"], (cell, p, seeds)
    study = optuna.load_study(study_name="mamba|scratch|t", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert len(study.trials) == 6 and all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    for t in study.trials:  # the study saw the mean over the two seeds
        cfg = {"train.lr": t.params["train.lr"], "train.batch_size": t.params["train.batch_size"]}
        want = sum(_objective({**cfg, "cell": f"mamba|scratch|t|s{s}|f0"}) for s in (0, 1)) / 2
        assert t.value == pytest.approx(want)
    assert s.usage()["transformer|scratch|t"] == {"proposed": 6, "distinct": distinct_of(s, "transformer|scratch|t"),
                                                  "told": 6, "budget": 6}


def distinct_of(s: CellSearch, cell: str) -> int:
    return sum(p.get("dup_of") is None for p in s.points[cell])


def test_proposals_are_reproducible_whatever_the_timing(tmp_path):
    a = _search(tmp_path / "a", budget=8)
    Sim(a, seed=1, concurrency=4).run()
    b = _search(tmp_path / "b", budget=8)
    Sim(b, seed=99, concurrency=3).run()  # another completion order, less room
    assert _proposals(a) == _proposals(b)
    # TPE took over after the 3 random startup points (proposals depend on the results, not only the seed)
    assert a.n_startup_trials < 8
    lrs = [p["params"]["train.lr"] for p in a.points["mamba|scratch|t"]]
    assert len(set(lrs)) == len(lrs)
    assert point_seed("mamba|scratch|t", 0) != point_seed("hyena|scratch|t", 0)


def test_restore_continues_the_studies(tmp_path):
    ref = _search(tmp_path / "ref", budget=8)
    Sim(ref, seed=5).run()

    d = tmp_path / "run"
    first = _search(d, budget=8)
    pickled = pickle.dumps(first)  # what Tuner pickles at the start (tuner.pkl)
    sim = Sim(first, seed=5)
    for _ in range(9):
        sim.fill()
        sim.step()
    ckpt = d / "searcher-state.pkl"
    first.save(str(ckpt))  # an experiment checkpoint
    saved_trials = dict(sim.configs)
    saved_live = list(sim.live)
    for _ in range(4):  # progress after the checkpoint is lost with the driver (SIGKILL) ...
        sim.fill()
        sim.step()
    n_db = sum(len(optuna.load_study(study_name=c, storage=f"sqlite:///{d / 'optuna.db'}").trials) for c in first.order)
    assert n_db > sum(len(first.points[c]) for c in first.order) - 12  # (the db was written as it went)

    second = pickle.loads(pickled)
    second.restore(str(ckpt))
    sim2 = Sim(second, seed=5)
    sim2.configs = dict(saved_trials)
    sim2.live = saved_live  # Tune reruns the trials that were live at the checkpoint, same ids
    sim2.n = len(saved_trials)
    sim2.run()
    assert _proposals(second) == _proposals(ref)  # the same points as an uninterrupted run
    for c in second.order:
        study = optuna.load_study(study_name=c, storage=f"sqlite:///{d / 'optuna.db'}")
        assert len(study.trials) == 8, c  # rewritten from the restored state: never beyond the budget
        assert [t.params for t in study.trials] == [p["params"] for p in second.points[c]]
    keys = [(c["cell"], c["train.lr"], c["train.batch_size"]) for c in sim2.configs.values()]
    assert len(keys) == len(set(keys))  # no point evaluated twice on a seed


def test_duplicate_proposals_count_but_do_not_train_again(tmp_path):
    s = _search(tmp_path, budget=6, space={"train.batch_size": ("choice", (32, 64))}, archs={"mamba": 0.9})
    sim = Sim(s, seed=2)
    sim.run()
    pts = s.points["mamba|scratch|t"]
    assert len(pts) == 6
    assert sum(p["dup_of"] is None for p in pts) <= 2
    assert len(sim.configs) == 2 * sum(p["dup_of"] is None for p in pts)
    assert all(p["told"] == "COMPLETE" for p in pts)
    for p in pts:
        if p["dup_of"] is not None:
            assert p["value"] == pts[p["dup_of"]]["value"]


def test_an_errored_seed_fails_the_point_and_a_retry_completes_it(tmp_path):
    s = _search(tmp_path, budget=4, archs={"hyena": 0.6}, max_concurrent=2)
    sim = Sim(s, seed=3, concurrency=2)
    sim.fill()
    bad = sim.step(error=True)
    sim.run()  # the cell does not stall: the point is told FAIL and the budget goes on
    cell = "hyena|scratch|t"
    _, k, _ = s.trials[bad]
    assert s.points[cell][k]["told"] == "FAIL" and len(s.points[cell]) == 4
    # `gdna resume` retries the errored trial under the same id
    s.on_trial_complete(bad, {"best_val_acc": 0.7, "val_acc": 0.7})
    assert s.points[cell][k]["told"] == "COMPLETE"
    study = optuna.load_study(study_name=cell, storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    states = [t.state.name for t in study.trials]
    assert states.count("FAIL") == 1 and states.count("COMPLETE") == 4


# ---------------------------------------------------------------------------------------------
class _Trial:
    def __init__(self, tid: str, cell: str):
        self.trial_id, self.config = tid, {"cell": cell}


def _feed(scheduler, trials: list[_Trial], values: dict[str, float], epochs: int = 4) -> dict[str, int]:
    """Epoch by epoch, every trial reports; returns trial id → epoch it was stopped at."""
    stopped: dict[str, int] = {}
    for t in trials:
        scheduler.on_trial_add(None, t)
    for epoch in range(1, epochs + 1):
        for t in trials:
            if t.trial_id in stopped:
                continue
            res = {"epoch": epoch, "training_iteration": epoch, "val_acc": values[t.trial_id], "final": epoch == epochs}
            if scheduler.on_trial_result(None, t, res) == TrialScheduler.STOP and epoch < epochs:
                stopped[t.trial_id] = epoch
    return stopped


def test_asha_compares_trials_only_within_their_cell(tmp_path):
    good = [_Trial(f"g{i}", f"mamba|scratch|t|s{i}|f0") for i in range(8)]
    weak = [_Trial(f"w{i}", f"transformer|scratch|t|s{i}|f0") for i in range(8)]
    values = {**{t.trial_id: 0.90 - 0.01 * i for i, t in enumerate(good)},  # later trials worse
              **{t.trial_id: 0.50 - 0.01 * i for i, t in enumerate(weak)}}
    cell_of = {t.config["cell"]: t.config["cell"].rsplit("|", 2)[0] for t in good + weak}
    per_cell = CellScheduler(cell_of, {c: 4 for c in cell_of.values()}, grace_period=1, reduction_factor=2,
                             sweep_dir=str(tmp_path))
    per_cell.set_search_properties("val_acc", "max")
    stopped = _feed(per_cell, good + weak, values)
    # one global ASHA on the same reports stops weak trials because of the good ones
    glob = ASHAScheduler(time_attr="epoch", max_t=4, grace_period=1, reduction_factor=2)
    glob.set_search_properties("val_acc", "max")
    stopped_global = _feed(glob, good + weak, values)
    assert sum(k.startswith("w") for k in stopped_global) > sum(k.startswith("w") for k in stopped)
    # within each cell it still stops the weaker half of a rung, never the best trial of the cell
    for prefix, group in (("g", good), ("w", weak)):
        got = [k for k in stopped if k.startswith(prefix)]
        assert got and group[0].trial_id not in got
    assert set(per_cell.stopped) == set(stopped)
    # the rungs survive a new driver (Tune does not checkpoint schedulers)
    again = pickle.loads(pickle.dumps(CellScheduler(cell_of, {c: 4 for c in cell_of.values()}, grace_period=1,
                                                    reduction_factor=2, sweep_dir=str(tmp_path))))
    again.set_search_properties("val_acc", "max")
    for t in (good[0], weak[0]):
        rungs = [dict(r) for _, r in again.cell(t)._brackets[0]._rungs]
        assert rungs == [dict(r) for _, r in per_cell.cell(t)._brackets[0]._rungs] and any(rungs)
    assert again.stopped == per_cell.stopped
    # a final report is never stopped (the trial ends by itself and records its result)
    late = _Trial("late", good[0].config["cell"])
    per_cell.on_trial_add(None, late)
    assert per_cell.on_trial_result(None, late, {"epoch": 4, "val_acc": 0.1, "final": True}) == TrialScheduler.CONTINUE


def test_a_stage_is_unfinished_while_its_searcher_has_budget_left(tmp_path):
    from gdna.sweep.run import _not_created

    exp = tmp_path / "finetune"
    exp.mkdir()
    assert _not_created(exp, 4, 12, search_alg_used=True) == 1  # no searcher state at all
    for state, want in (({"counter": 5, "total_samples": 12, "finished": False}, 1),
                        ({"counter": 5, "total_samples": 12, "finished": True}, 0),  # said FINISHED
                        ({"counter": 12, "total_samples": 12, "finished": False}, 0)):
        (exp / "search_gen_state-2026-01-01_00-00-00.json").write_bytes(pickle.dumps(state))
        assert _not_created(exp, 5, 12, search_alg_used=True) == want
    assert _not_created(exp, 6, 8, search_alg_used=False) == 2  # a grid with trials never created


def test_a_stopped_run_is_tested_from_its_best_checkpoint(tmp_path, data_root):
    """gdna.train.loop.evaluate_stopped on the checkpoint of epoch 2 of 3: the best-validation model of
    epochs 1–2 on test, with the same metrics a finished run reports."""
    from gdna.config import DataConfig, ModelConfig, TrainConfig, TrialConfig
    from gdna.train.loop import evaluate_stopped, run
    from gdna.train.runtime import LocalRuntime, Runtime

    trial = TrialConfig(
        model=ModelConfig.for_arch("cnn", d_model=32),
        data=DataConfig(data_root=str(data_root), task="human_enhancers_cohn", max_len=100,
                        max_train_examples=160, max_eval_examples=96),
        train=TrainConfig(objective="cls", lr=3e-3, batch_size=32, epochs=3, seed=0),
    ).validate()
    rt = LocalRuntime(tmp_path / "run", device="cpu", keep=5)
    final = run({"trial": trial.to_dict()}, rt)
    ckpts = sorted((tmp_path / "run").glob("checkpoint_*"))
    assert len(ckpts) == 3
    got = evaluate_stopped({"trial": trial.to_dict()}, str(ckpts[1]), Runtime())
    vals = [r["val_acc"] for r in rt.reports[:2]]
    assert got["status"] == "stopped" and got["final"] is True and got["epoch"] == 2
    assert got["best_val_acc"] == max(vals) and got["best_epoch"] == 1 + vals.index(max(vals))
    assert 0.0 <= got["test_acc"] <= 1.0 and {"test_loss", "test_balanced_acc", "test_mcc"} <= set(got)
    if final["best_epoch"] <= 2:  # the same best model: the same test metrics as the finished run
        assert got["test_acc"] == final["test_acc"] and got["test_loss"] == pytest.approx(final["test_loss"])
