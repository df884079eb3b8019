"""`gdna analyze` end to end on a synthetic MLflow store (sqlite) written per DESIGN.md's schema,
and the MLflow UI showing it in headless Chromium."""
from __future__ import annotations

import argparse
import shutil
import subprocess
import urllib.parse
from pathlib import Path

import matplotlib.image

import pytest

from gdna.analysis.cli import register
from gdna.analysis.load import default_tracking_uri, load_runs
from servers import start_mlflow_server, stop_group
from synthetic_store import known_trials, write_sweep
from gdna.errors import GdnaError

SWEEP = "known"


@pytest.fixture(scope="module")
def storage(tmp_path_factory):
    """<storage>/sweeps/known/mlflow.db, the sweep's default store, holding known_trials()."""
    root = tmp_path_factory.mktemp("storage")
    sweep_dir = root / "sweeps" / SWEEP
    sweep_dir.mkdir(parents=True)
    write_sweep(default_tracking_uri(SWEEP, root), SWEEP, known_trials(), sweep_dir / "artifacts")
    return root


def analyze(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="gdna")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["analyze", *argv])
    return args.func(args)


def test_default_tracking_uri(tmp_path):
    assert default_tracking_uri("s1", tmp_path) == f"sqlite:///{tmp_path.resolve()}/sweeps/s1/mlflow.db"


def test_load_runs_reads_trial_children_with_numbers(storage):
    df = load_runs(default_tracking_uri(SWEEP, storage), SWEEP)
    assert len(df) == len(known_trials()) == 28  # stage parent runs are not trials
    assert set(df["stage"]) == {"finetune"}
    assert df["lr"].dtype == float and sorted(df["lr"].unique()) == [1e-4, 1e-3]
    assert sorted(df["batch_size"].unique()) == [128] and sorted(df["seed"].unique()) == [0, 1, 2, 3]
    assert df["outcome"].value_counts().to_dict() == {"ok": 26, "diverged": 1, "no test_acc": 1}
    row = df[(df["task"] == "demo_c") & (df["seed"] == 1)].iloc[0]
    assert (row["arch"], row["strategy"], row["n_classes"]) == ("transformer", "scratch", 3)
    assert (row["test_acc"], row["best_val_acc"]) == (pytest.approx(0.96), pytest.approx(0.95))


def test_analyze_writes_tables_figures_and_logs_to_mlflow(storage, capsys):
    assert analyze(SWEEP, "--storage", str(storage)) == 0
    out = storage / "sweeps" / SWEEP / "analysis"
    printed = capsys.readouterr().out
    assert "| hg38 | **81.5 ± 13.5** |" in printed  # Table 1, computed by hand in test_analysis_tables
    assert "28 runs, 2 excluded from means (1 diverged, 1 no test_acc)" in printed
    for rel in ("summary.md", "runs.csv", "excluded_runs.csv", "tables/per_architecture.csv",
                "tables/per_architecture.md", "tables/human_regulatory.csv", "tables/lr_gap.csv",
                "tables/importance.csv", "figures/lr_sensitivity_scratch.png",
                "figures/lr_sensitivity_hg38.png", "figures/lr_sensitivity_task_spt.png",
                "figures/importance.png"):
        assert (out / rel).is_file(), rel
    assert not (out / "tables" / "context_len.csv").exists()  # one context length only
    summary = (out / "summary.md").read_text()
    assert "## Excluded runs" in summary and "| human_a | transformer | hg38 | diverged | 1 |" in summary
    assert "| human_a | 65.0 ± 11.0 | **83.0 ± 7.0** | <u>72.0 ± 6.0</u> |" in summary

    from mlflow.tracking import MlflowClient

    client = MlflowClient(default_tracking_uri(SWEEP, storage))
    exp = client.get_experiment_by_name(SWEEP)
    analysis_runs = client.search_runs([exp.experiment_id], "tags.`gdna.role` = 'analysis'")
    assert len(analysis_runs) == 1
    run = analysis_runs[0]
    assert run.data.metrics["n_excluded"] == 2
    assert "Table 1" in run.data.tags["mlflow.note.content"]
    figures = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert "figures/lr_sensitivity_hg38.png" in figures

    # logging again reuses the same analysis run
    from gdna.analysis.report import AnalysisOutputs, log_to_mlflow

    again = log_to_mlflow(default_tracking_uri(SWEEP, storage), exp.experiment_id, SWEEP,
                          AnalysisOutputs(out, summary="again", n_runs=28, n_excluded=2))
    assert again == run.info.run_id
    assert len(client.search_runs([exp.experiment_id], "tags.`gdna.role` = 'analysis'")) == 1


def test_experiment_found_by_id(storage):
    from gdna.analysis.load import find_experiment

    uri = default_tracking_uri(SWEEP, storage)
    exp = find_experiment(uri, SWEEP)
    assert find_experiment(uri, exp.experiment_id).name == SWEEP
    assert len(load_runs(uri, exp.experiment_id)) == 28


def test_user_errors_are_one_line(storage, tmp_path):
    with pytest.raises(GdnaError, match=r"no MLflow store at .*sweeps/nope/mlflow.db \(run the sweep first"):
        analyze("nope", "--storage", str(storage))
    assert not (storage / "sweeps" / "nope").exists()  # nothing created
    with pytest.raises(GdnaError, match=r"experiment 'other' not found .*experiments there: .*known"):
        analyze("other", "--tracking-uri", default_tracking_uri(SWEEP, storage), "--out", str(tmp_path))
    with pytest.raises(GdnaError, match="no trial runs with gdna.stage=pretrain"):
        analyze(SWEEP, "--storage", str(storage), "--stage", "pretrain", "--no-mlflow-log")


# ---------------------------------------------------------------------------------------------
# The MLflow UI (React SPA served by `mlflow server`) in headless Chromium

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def mlflow_server(storage, tmp_path_factory):
    """`mlflow server` on 127.0.0.1:<free port> over the synthetic store; stopped (whole group) after."""
    proc, url = start_mlflow_server(default_tracking_uri(SWEEP, storage), storage / "server-artifacts",
                                    tmp_path_factory.mktemp("server") / "server.log")
    try:
        yield url
    finally:
        stop_group(proc)


def screenshot(url: str, png: Path, profile: Path, budget_ms: int = 15000) -> str:
    """Headless Chromium: write a 1400×900 screenshot of `url` to `png`, return the rendered DOM."""
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage",
           f"--user-data-dir={profile}", "--window-size=1400,900", f"--virtual-time-budget={budget_ms}",
           f"--screenshot={png}", "--dump-dom", url]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    try:
        dom, _ = proc.communicate(timeout=120)
    finally:
        stop_group(proc)
    return dom


def assert_real_screenshot(png: Path) -> None:
    assert png.is_file()
    image = matplotlib.image.imread(png)
    assert image.shape[:2] == (900, 1400)
    assert image[..., :3].std() > 0.05  # not a blank page


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (make browser)")
def test_mlflow_ui_first_open_is_the_runs_view_with_stage_parents_and_children(storage, mlflow_server, tmp_path):
    """What `gdna ui` prints, opened as a new user would (fresh profile): the runs table of the
    sweep (marked as model training), with the stage parent and its child runs, not the GenAI
    traces overview."""
    from gdna.tracking import runs_table_url

    url = runs_table_url(mlflow_server, default_tracking_uri(SWEEP, storage), SWEEP)
    assert "/#/experiments/" in url and url.endswith("/runs?viewStateShareKey=gdna-stages-and-trials")
    client = MlflowClient_(storage)
    exp = client.get_experiment_by_name(SWEEP)
    children = client.search_runs([exp.experiment_id], "tags.`gdna.role` = 'trial'", max_results=1000)
    png = tmp_path / "first_open.png"
    dom = screenshot(url, png, tmp_path / "fresh-profile", budget_ms=25000)
    assert_real_screenshot(png)
    assert ">finetune<" in dom  # the stage parent run, a row of the runs table
    assert "Run Name" in dom  # the runs table's header, not the traces overview
    assert "share key" not in dom  # MLflow's error banner when the saved view cannot be read
    # the stage group is open: its trials are rows of it (MLflow renders the rows that fit the window)
    shown = [r.info.run_name for r in children if f">{r.info.run_name}<" in dom]
    assert len(shown) >= 5, f"only {shown} of the {len(children)} trials shown under the stage on first open"
    assert "Group: finetune" in dom  # grouped by stage (gdna.tracking.view)
    # the saved view's columns (those in the window: the table renders the visible columns only)
    assert "test_acc" in dom and "val_acc" in dom


def MlflowClient_(storage):
    from mlflow.tracking import MlflowClient

    return MlflowClient(default_tracking_uri(SWEEP, storage))


def experiment_id(storage) -> str:
    return MlflowClient_(storage).get_experiment_by_name(SWEEP).experiment_id


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (make browser)")
def test_mlflow_ui_shows_the_sweep_parent_run_and_its_children(storage, mlflow_server, tmp_path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(default_tracking_uri(SWEEP, storage))
    exp = client.get_experiment_by_name(SWEEP)
    parent = client.search_runs([exp.experiment_id], "tags.`gdna.role` = 'stage'")[0]
    children = client.search_runs([exp.experiment_id], "tags.`gdna.role` = 'trial'")
    child_names = {r.info.run_name for r in children}
    assert parent.info.run_name == "finetune" and len(child_names) == 28
    mode = "workflowType=machine_learning"  # the classic "Model training" runs view, not GenAI

    # the experiment's runs page, runs of the finetune stage (the parent and its children) by name
    query = ("searchFilter=" + urllib.parse.quote("tags.`gdna.stage` = 'finetune'")
             + "&orderByKey=" + urllib.parse.quote("tags.`mlflow.runName`") + "&orderByAsc=true")
    runs_png = tmp_path / "experiment_runs.png"
    dom = screenshot(f"{mlflow_server}/#/experiments/{exp.experiment_id}/runs?{mode}&{query}", runs_png,
                     tmp_path / "profile")
    assert_real_screenshot(runs_png)
    assert ">finetune<" in dom and SWEEP in dom
    assert [name for name in child_names if name in dom], "no child run in the experiment's runs page"

    # the parent run's page lists its child runs
    parent_png = tmp_path / "parent_run.png"
    dom = screenshot(f"{mlflow_server}/#/experiments/{exp.experiment_id}/runs/{parent.info.run_id}?{mode}",
                     parent_png, tmp_path / "profile")
    assert_real_screenshot(parent_png)
    assert "finetune" in dom and "Child runs" in dom
    shown = [name for name in child_names if name in dom]
    assert shown, "no child run name in the parent run page"
