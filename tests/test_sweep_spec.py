"""Sweep spec validation and the stage plan: one-line errors (exit 2) before Ray starts; --plan counts."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gdna.errors import ConfigError
from gdna.sweep.cli import main as sweep_main
from gdna.sweep.plan import build_plan
from gdna.sweep.spec import load_spec

REPO = Path(__file__).resolve().parents[1]

BASE = {
    "name": "t",
    "tasks": ["human_enhancers_cohn"],
    "architectures": ["transformer", "hyena"],
    "strategies": ["scratch", "task_spt"],
    "search_space": "smoke",
    "model": {"d_model": 32},
    "data": {"max_len": 128},
}


def _write(tmp_path: Path, spec: dict, name: str = "spec.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(spec))
    return p


def _cli(capsys, *argv) -> tuple[int, str, str]:
    rc = sweep_main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def _with(**kw) -> dict:
    d = {k: (dict(v) if isinstance(v, dict) else v) for k, v in BASE.items()}
    for k, v in kw.items():
        if "." in k:
            a, b = k.split(".", 1)
            d[a] = {**d.get(a, {}), b: v}
        else:
            d[k] = v
    return d


BAD = {
    "unknown_key": (_with(tasks_typo=["x"]), "tasks_typo: unknown key"),
    "nested_unknown_key": (_with(**{"train.lrr": 1e-3}), "train.lrr: unknown key"),
    "unknown_arch": (_with(architectures=["transformer", "mambo"]), "architectures[1]: unknown architecture 'mambo'"),
    "unknown_strategy": (_with(strategies=["scratch", "hg19"]), "strategies[1]: unknown strategy 'hg19'"),
    "unknown_task": (_with(tasks=["human_nope"]), "tasks[0]: unknown task 'human_nope'"),
    "missing_search_space": (_with(search_space="nope_space"), "search_space: 'nope_space' not found"),
    "bad_lr": (_with(**{"train.lr": -1.0}), "train.lr: must be > 0"),
    "bad_resources": (_with(resources={"cpus_per_worker": 0}), "resources.cpus_per_worker: must be > 0"),
    "bad_resources_type": (_with(resources={"workers_per_trial": "two"}), "resources.workers_per_trial: expected an integer"),
    "bad_pretrain_lr": (_with(pretrain={"lrs": [0.0]}), "pretrain.lrs[0]: must be > 0"),
    "empty_architectures": (_with(architectures=[]), "architectures: empty list"),
    "bad_name": (_with(name="a b/c"), "name: must be"),
    "bad_scheduler": (_with(scheduler="hyperband"), "scheduler: unknown scheduler 'hyperband'"),
    "arch_in_model": (_with(**{"model.arch": "hyena"}), "model.arch: set by `architectures:`"),
    "bad_d_model": (_with(**{"model.d_model": 30}), "model.d_model: 30 is not divisible by n_heads=8"),
    # values that validate as types but cannot work
    "unreachable_budget": (_with(model={"param_budget": 500}), "model.param_budget: no transformer width"),
    "negative_max_len": (_with(**{"data.max_len": -5}), "data.max_len: must be > 0"),
    "zero_max_examples": (_with(**{"data.max_train_examples": 0}), "data.max_train_examples: must be > 0"),
    "tracking_scheme": (_with(tracking_uri="ftp://host/mlflow"), "tracking_uri: unsupported scheme 'ftp' in 'ftp://host/mlflow'"),
    "tracking_file_store": (_with(tracking_uri="mlruns"), "tracking_uri: unsupported plain path 'mlruns'"),
    "fractional_gpus_ddp": (_with(resources={"workers_per_trial": 2, "gpus_per_worker": 0.5}),
                            "resources.gpus_per_worker:"),
    "unknown_model_key": (_with(**{"model.d_sate": 8}), "model.d_sate: unknown key"),
    "fold_out_of_range": (_with(**{"data.fold": 7}), "data.fold: 7 is outside"),
    "bad_pretrain_context": (_with(pretrain={"context_lens": [0]}), "pretrain.context_lens[0]: must be ≥ 1"),
    "objective_override": (_with(**{"train.objective": "clm"}), "train.objective: set by the stage"),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_spec_one_line_exit_2(kind, tmp_path, capsys, data_root):
    spec, msg = BAD[kind]
    rc, out, err = _cli(capsys, "sweep", str(_write(tmp_path, spec)), "--plan", "--data-root", str(data_root),
                        "--storage", str(tmp_path / "runs"))
    assert rc == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gdna: error: "), err
    assert msg in lines[0], lines[0]
    assert not (tmp_path / "runs").exists()  # nothing written, no Ray started


@pytest.mark.parametrize(
    "space, msg",
    [
        ({"grid": {"train.lr": []}}, "grid.train.lr: empty grid axis"),
        ({"grid": {"train.lr": [1e-3, -2e-3]}}, "grid.train.lr[1]: must be > 0"),
        ({"grid": {"train.lrate": [1e-3]}}, "grid.train.lrate: unknown key"),
        ({"grid": {"train.lr": [1e-3]}, "searcher": "tpe"}, "searcher: unknown searcher 'tpe'"),
        ({"searcher": "optuna", "distributions": {"train.lr": {"loguniform": [0, 1e-3]}}}, "bounds must be > 0"),
        ({"grid": {"train.lr": [1e-3]}, "seeds": []}, "seeds: empty list"),
        ("grid: [unclosed", "invalid YAML"),
    ],
)
def test_bad_search_space(space, msg, tmp_path, capsys, data_root):
    ss = tmp_path / "myspace.yaml"
    ss.write_text(space if isinstance(space, str) else yaml.safe_dump(space))
    spec = _write(tmp_path, _with(search_space=str(ss)))
    rc, _, err = _cli(capsys, "sweep", str(spec), "--plan", "--data-root", str(data_root))
    assert rc == 2 and len(err.strip().splitlines()) == 1 and msg in err, err


def test_yaml_syntax_error(tmp_path, capsys):
    p = tmp_path / "s.yaml"
    p.write_text("name: x\ntasks: [a\n")
    rc, _, err = _cli(capsys, "sweep", str(p), "--plan")
    assert rc == 2 and "invalid YAML" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv, msg", [
    (["resume", "no_such_sweep"], "sweep 'no_such_sweep': no "),
    (["status", "no_such_sweep"], "sweep 'no_such_sweep': no "),
    (["ui", "no_such_sweep", "--print-only"], "sweep 'no_such_sweep': no "),
    (["sweep", "no/such/spec.yaml", "--plan"], "spec: file no/such/spec.yaml not found"),
])
def test_bad_command_line_one_line_exit_2(argv, msg, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, _, err = _cli(capsys, *argv)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and msg in err, err


def test_unwritable_storage_fails_before_ray(tmp_path, capsys, data_root):
    import ray

    (tmp_path / "ro").mkdir()
    (tmp_path / "ro" / "file").write_text("x")  # storage below a regular file: cannot be created
    spec = _write(tmp_path, BASE)
    rc, _, err = _cli(capsys, "sweep", str(spec), "--data-root", str(data_root), "--storage", str(tmp_path / "ro" / "file"))
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "storage: " in err and "is not writable" in err, err
    assert not ray.is_initialized()


def test_missing_data_root(tmp_path, capsys):
    rc, _, err = _cli(capsys, "sweep", str(_write(tmp_path, BASE)), "--plan", "--data-root", str(tmp_path / "nope"))
    assert rc == 2 and "data_root: " in err and "does not exist" in err and len(err.strip().splitlines()) == 1


def test_missing_fasta_for_hg38(tmp_path, capsys, data_root):
    spec = _write(tmp_path, _with(strategies=["hg38"], data={"genome_fasta": "genome/hg38.nope.fa"}))
    rc, _, err = _cli(capsys, "sweep", str(spec), "--plan", "--data-root", str(data_root))
    assert rc == 2 and "data.genome_fasta:" in err and "hg38.nope.fa not found" in err


def test_quickstart_plan(capsys, data_root):
    rc, out, err = _cli(capsys, "sweep", str(REPO / "sweeps" / "quickstart.yaml"), "--plan",
                        "--data-root", str(data_root), "--storage", "/nonexistent/gdna-plan")
    assert rc == 0, err
    assert "4 groups × 1 lr × 1 context = 4 runs" in out
    assert "16 cells × grid (train.lr 2 × train.batch_size 1 = 2 points) = 32 trials" in out
    assert "total: 4 pretraining runs + 32 fine-tuning trials" in out


def test_paper_table1_plan_without_data(tmp_path, capsys):
    # 8 tasks, only 4 exist in the shared data: --plan still works (require_data: false)
    rc, out, err = _cli(capsys, "sweep", str(REPO / "sweeps" / "paper_table1.yaml"), "--plan",
                        "--data-root", str(tmp_path / "no-data"), "--storage", str(tmp_path / "runs"))
    assert rc == 0, err
    assert "30 groups × 2 lr × 1 context = 60 runs" in out
    assert "480 cells × grid (train.lr 4 × train.batch_size 2 = 8 points) = 3840 trials" in out
    assert "scratch 960, hg38 960, task_spt 960, domain_spt 960" in out
    assert not (tmp_path / "runs").exists()


def test_shipped_specs_and_spaces_load(data_root):
    for name in ("quickstart", "paper_table1", "greatapes"):
        load_spec(REPO / "sweeps" / f"{name}.yaml", check_data=False, data_root=str(data_root))
    spec = load_spec(REPO / "sweeps" / "quickstart.yaml", data_root=str(data_root))
    for space in ("paper_grid", "smoke", "optuna_tpe"):
        from gdna.sweep.spec import load_search_space

        load_search_space(space)
    assert spec.space.name == "smoke"


def test_plan_reuses_and_keys(tmp_path, data_root):
    spec = load_spec(_write(tmp_path, _with(pretrain={"lrs": [1e-3, 3e-3], "steps": 20})),
                     data_root=str(data_root), storage=str(tmp_path / "runs"))
    plan = build_plan(spec)
    assert sorted(plan.groups) == ["hyena.task_spt.human_enhancers_cohn", "transformer.task_spt.human_enhancers_cohn"]
    assert len(plan.pretrain) == 4 and all(j.trial.train.objective == "clm" for j in plan.pretrain)
    job = plan.pretrain[0]
    assert Path(job.trial.export_dir) == tmp_path / "runs" / "pretrain" / job.key
    # content-addressed: the same pretraining in another sweep (other name, other storage) has the same key
    spec2 = load_spec(_write(tmp_path, _with(name="other", pretrain={"lrs": [1e-3], "steps": 20}), "b.yaml"),
                      data_root=str(data_root), storage=str(tmp_path / "elsewhere"))
    assert build_plan(spec2).pretrain[0].key in {j.key for j in plan.pretrain}
    # a finished pretraining is seen as done
    (job.export_dir).mkdir(parents=True)
    (job.export_dir / "done.json").write_text("{}")
    assert build_plan(spec).pretrain[0].done
    # fine-tuning trials: scratch has no init checkpoint, task_spt points at the selected group's backbone
    cell = next(c for c in plan.cells if c.strategy == "task_spt")
    trial, key = plan.finetune_trial(cell, {"train.lr": 1e-3, "train.batch_size": 32}, {cell.group: job.key})
    assert trial.init_checkpoint == str(job.export_dir / "backbone.pt")
    assert trial.train.lr == 1e-3 and trial.train.seed == cell.seed and trial.model.d_model == 32
    scratch = next(c for c in plan.cells if c.strategy == "scratch")
    t2, k2 = plan.finetune_trial(scratch, {"train.lr": 1e-3, "train.batch_size": 32}, {})
    assert t2.init_checkpoint is None and t2.train.epochs == 200 and k2 != key
    assert plan.n_finetune == 2 * 2 * 1 * 2 * 2  # arch × strategy × task × seeds × lrs


def test_gdna_cli_help():
    """The sweep commands are wired into the top-level `gdna` CLI once every area registers."""
    r = subprocess.run([sys.executable, "-m", "gdna.sweep.cli", "sweep", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--plan" in r.stdout and "--resume" in r.stdout


def test_searcher_spaces_build_without_ray(tmp_path, data_root):
    """random: cells × grid × num_samples; optuna: one TPE study per tuning cell, num_samples points each on
    every seed (no Ray started)."""
    import ray

    from gdna.sweep import search
    from gdna.sweep.run import SweepRunner
    from gdna.sweep.trainable import Resolver

    for searcher, n in (("random", 3), ("optuna", 5)):
        ss = tmp_path / f"{searcher}.yaml"
        grid = {"train.batch_size": [32, 64]} if searcher == "random" else {}
        ss.write_text(yaml.safe_dump({"searcher": searcher, "num_samples": n, "grid": grid, "seeds": [0],
                                      "distributions": {"train.lr": {"loguniform": [1e-4, 3e-3]}}}))
        spec = load_spec(_write(tmp_path, _with(search_space=str(ss))), data_root=str(data_root),
                         storage=str(tmp_path / "runs"))
        runner = SweepRunner(spec)
        space = search.finetune_space(runner.plan)
        plan = runner.plan
        if searcher == "random":
            assert plan.n_finetune == len(plan.cells) * 2 * 3
            assert space["cell"] == {"grid_search": [c.id for c in plan.cells]}
        else:
            assert plan.n_finetune == len(plan.cells) * 5  # every cell's seeds × 5 points
            assert space == {}  # the searcher proposes whole configs
            alg, _, n = search.finetune_search(plan, max_concurrent=2)
            alg.set_search_properties("val_acc", "max", {})
            cfg = alg.suggest("t0")
            assert n == plan.n_finetune and cfg["cell"] in {c.id for c in plan.cells} and 1e-4 <= cfg["train.lr"] <= 3e-3
        res = Resolver(plan, "finetune", {g: plan.groups[g][0].key for g in plan.groups})
        key, trial, meta, name = res({"cell": plan.cells[-1].id, "train.lr": 2e-4, "train.batch_size": 64})
        assert trial["train"]["lr"] == 2e-4 and trial["train"]["batch_size"] == 64 and meta["stage"] == "finetune"
    assert not ray.is_initialized()


def test_relative_locations_are_fixed_at_load_time(tmp_path, monkeypatch, data_root):
    # Tune runs every trial in its own working directory: a relative storage path resolved there
    # would point the fine-tuning trials at a pretraining checkpoint that is not there.
    monkeypatch.chdir(tmp_path)
    spec = load_spec(REPO / "sweeps" / "quickstart.yaml", data_root=str(data_root), storage="runs")
    assert spec.storage == str(tmp_path / "runs")
    monkeypatch.chdir(REPO)
    assert spec.pretrain_dir() == tmp_path / "runs" / "pretrain"


@pytest.mark.parametrize("how", ["default", "relative env", "relative flag"])
def test_the_data_root_is_fixed_in_the_driver(how, tmp_path, monkeypatch, data_root):
    """The default ../shared/data (and a relative GDNA_DATA_ROOT / --data-root) resolve once, where the
    driver starts: a Tune trial runs in another working directory and must read the same data."""
    import os

    monkeypatch.chdir(REPO)
    rel = os.path.relpath(data_root, REPO)
    monkeypatch.delenv("GDNA_DATA_ROOT", raising=False)
    if how == "relative env":
        monkeypatch.setenv("GDNA_DATA_ROOT", rel)
    kw = {"data_root": rel} if how == "relative flag" else {}
    if how == "default" and not (REPO.parent / "shared" / "data").is_dir():
        pytest.skip("the default data root ../shared/data is not beside this checkout")
    spec = load_spec(REPO / "sweeps" / "quickstart.yaml", storage=str(tmp_path / "runs"), **kw)
    monkeypatch.chdir(tmp_path)  # what a Tune trial sees
    monkeypatch.delenv("GDNA_DATA_ROOT", raising=False)
    plan = build_plan(spec)
    trial, _ = plan.finetune_trial(plan.cells[0], {"train.lr": 1e-3, "train.batch_size": 32}, {})
    assert Path(spec.data_root) == Path(data_root).resolve() == trial.data.root()
