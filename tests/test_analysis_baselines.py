"""Baselines on the trials' own splits, and `gdna analyze` end to end on a synthetic store over a real
task: baseline rows/columns/lines, the significance table, the one-class flag, honest importance,
LR sensitivity, MLflow baseline runs and descriptions."""
from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import pytest
from synthetic_store import SyntheticTrial, trials_frame, write_sweep

from gdna.analysis import baselines as bl
from gdna.analysis import importance, sensitivity
from gdna.analysis.cli import register
from gdna.analysis.load import default_tracking_uri, load_runs
from gdna.config import DataConfig

TASK = "human_enhancers_cohn"


def data_params(data_root) -> dict:
    return {"data.data_root": str(data_root), "data.max_len": 128, "data.n_folds": 3,
            "data.max_train_examples": 200, "data.max_eval_examples": 60, "data.val_fraction": 0.1}


def test_split_units_read_the_trials_data_params(data_root):
    trials = [SyntheticTrial("hyena", "scratch", TASK, lr, 128, seed, 0.7, 0.7, fold=fold,
                             extra_params=data_params(data_root))
              for lr in (1e-4, 1e-3) for seed in (0, 1) for fold in (0, 2)]
    units = bl.split_units(trials_frame(trials))
    assert [(u.task, u.seed, u.fold) for u in units] == [(TASK, 0, 0), (TASK, 0, 2), (TASK, 1, 0), (TASK, 1, 2)]
    d = units[1].data
    assert (d.max_len, d.n_folds, d.fold, d.max_train_examples, d.max_eval_examples) == (128, 3, 2, 200, 60)
    assert d.data_root == str(data_root)
    assert bl.split_units(trials_frame(trials), data_root="/elsewhere")[0].data.data_root == "/elsewhere"


def test_baselines_equal_a_direct_scikit_learn_computation_on_the_same_split(data_root):
    from sklearn.dummy import DummyClassifier
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler, normalize

    from gdna.data.genomic_benchmarks import STREAM_SUB_TEST, load_task, subsample, task_split_indices

    cfg = DataConfig(data_root=str(data_root), task=TASK, max_len=128, n_folds=3, fold=1,
                     max_train_examples=200, max_eval_examples=60)
    unit = bl.SplitUnit(cfg, seed=2)
    rows = {r["method"]: r for r in bl.fit_unit(unit, k=4, c_grid=(0.1, 1.0))}

    # the split, straight from the data module, and the sequences as the trials see them (first 128 bp)
    task = load_task(data_root, TASK)
    tr, va = task_split_indices(task, cfg, 2)
    te = subsample(np.arange(len(task.test)), 60, 2, STREAM_SUB_TEST)

    def part(split, idx):
        return [split.seqs[i].decode()[:128] for i in idx], split.labels[idx]

    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = part(task.train, tr), part(task.train, va), part(task.test, te)
    assert (rows["kmer_lr"]["n_train"], rows["kmer_lr"]["n_val"], rows["kmer_lr"]["n_test"]) == (len(y_tr), len(y_va), 60)

    dummy = DummyClassifier(strategy="most_frequent").fit(x_tr, y_tr)
    assert rows["majority"]["test_acc"] == pytest.approx(dummy.score(x_te, y_te))
    assert rows["majority"]["val_acc"] == pytest.approx(dummy.score(x_va, y_va))
    assert rows["majority"]["test_balanced_acc"] == pytest.approx(0.5)
    assert rows["majority"][f"test_frac_c{rows['majority']['majority_class']}"] == pytest.approx(rows["majority"]["test_acc"])

    vec = CountVectorizer(analyzer="char", ngram_range=(4, 4), lowercase=False).fit(x_tr)
    feats = [normalize(vec.transform(x).astype(float), norm="l1") for x in (x_tr, x_va, x_te)]
    scaler = StandardScaler(with_mean=False).fit(feats[0])
    f_tr, f_va, f_te = (scaler.transform(f) for f in feats)
    fits = {C: LogisticRegression(C=C, max_iter=2000).fit(f_tr, y_tr) for C in (0.1, 1.0)}
    val = {C: m.score(f_va, y_va) for C, m in fits.items()}
    best_C = max(val, key=lambda C: (val[C], -C))
    assert rows["kmer_lr"]["C"] == best_C
    assert rows["kmer_lr"]["val_acc"] == pytest.approx(val[best_C])
    assert rows["kmer_lr"]["test_acc"] == pytest.approx(fits[best_C].score(f_te, y_te))


def test_a_missing_task_is_named_not_dropped(tmp_path):
    unit = bl.SplitUnit(DataConfig(data_root=str(tmp_path), task="human_nowhere", n_folds=1), 0)
    result = bl.compute_baselines([unit], log=lambda m: None)
    assert result.frame.empty and "human_nowhere" in result.problems


# ---------------------------------------------------------------------------------------------
# The whole analysis on a synthetic store over the real task


SWEEP = "h18"


def sweep_trials(data_root) -> list[SyntheticTrial]:
    """transformer / hyena / mamba × scratch, 2 LRs × 5 seeds: hyena is 5 points above transformer
    on every seed; mamba predicts the majority class (confusion matrix with one column)."""
    rng = np.random.default_rng(0)
    out = []
    for seed in range(5):
        split = rng.normal(0, 0.02)
        for lr, penalty in ((1e-4, 0.06), (1e-3, 0.0)):
            for arch, gain in (("transformer", 0.0), ("hyena", 0.05)):
                test = 0.72 + split + gain - penalty + rng.normal(0, 0.005)
                tp = int(round(test * 60)) - 20
                out.append(SyntheticTrial(arch, "scratch", TASK, lr, 128, seed, round(test, 4), 0.75 - penalty,
                                          extra_params=data_params(data_root),
                                          confusion=[[20, 20], [40 - tp, tp]] if 0 < tp <= 40 else None))
            out.append(SyntheticTrial("mamba", "scratch", TASK, lr, 128, seed, 0.6, 0.6 - penalty,
                                      extra_params=data_params(data_root), confusion=[[0, 24], [0, 36]]))
    return out


@pytest.fixture(scope="module")
def store(tmp_path_factory, data_root):
    root = tmp_path_factory.mktemp("storage")
    (root / "sweeps" / SWEEP).mkdir(parents=True)
    write_sweep(default_tracking_uri(SWEEP, root), SWEEP, sweep_trials(data_root), root / "sweeps" / SWEEP / "artifacts",
                description="three architectures on one enhancer task")
    return root


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="gdna")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.func(args)


def test_analyze_shows_baselines_significance_and_one_class_models(store, capsys):
    assert cli("analyze", SWEEP, "--storage", str(store), "--k", "4") == 0
    out = store / "sweeps" / SWEEP / "analysis"
    summary = (out / "summary.md").read_text()
    printed = capsys.readouterr().out
    assert "[baseline] 5 split(s) of 1 task(s)" in printed

    # the answer opens the summary
    answer = summary.split("## Answer\n\n")[1].split("\n\n")[0]
    assert "differ" in answer and "hyena > transformer" in answer and "4-mer LR" in answer
    assert "predicts a single class" in answer or "predict a single class" in answer

    # baselines: their own table, reference rows (Table 1), reference columns (Tables 2–4)
    base = pd.read_csv(out / "tables" / "baselines_per_split.csv")
    assert len(base) == 10 and set(base["method"]) == {"majority", "kmer_lr"}
    table1 = (out / "tables" / "human_regulatory.md").read_text()
    assert "| _majority class_ |" in table1 and "| _4-mer LR_ |" in table1
    per_arch = (out / "tables" / "per_architecture.md").read_text()
    assert "_majority class_" in per_arch.splitlines()[2] or "| _majority class_ | _4-mer LR_ |" in per_arch

    # significance: the 5-point shift over 5 seeds is detected; mamba vs transformer as well (one class)
    sig = pd.read_csv(out / "tables" / "significance_arch.csv")
    row = sig[(sig["a"] == "transformer") & (sig["b"] == "hyena")].iloc[0]
    assert row["verdict"] == "hyena > transformer" and row["n_pairs"] == 5

    # the one-class model is named, with balanced accuracy 50%
    cells = pd.read_csv(out / "tables" / "degenerate.csv")
    mamba = cells[cells["arch"] == "mamba"].iloc[0]
    assert bool(mamba["flag"]) and mamba["n_one_class"] == 5 and mamba["balanced_mean"] == pytest.approx(0.5)
    assert not cells[cells["arch"] != "mamba"]["flag"].any()
    assert "⚠ 5/5 one-class" in per_arch
    runs = pd.read_csv(out / "runs.csv")
    assert runs[runs["arch"] == "mamba"]["test_balanced_acc"].eq(0.5).all()

    # LR sensitivity per architecture, figures with the baseline lines
    sens = pd.read_csv(out / "tables" / "lr_sensitivity.csv")
    avg = sens[(sens["task"] == sensitivity.ALL_TASKS) & (sens["arch"] == "transformer")].iloc[0]
    assert avg["gap_mean"] == pytest.approx(0.06, abs=0.02) and avg["within_1pt_mean"] == pytest.approx(0.5)
    assert (out / "figures" / "lr_sensitivity_scratch.png").is_file()

    # MLflow: baseline runs of their own, and the answer in the experiment's and stage run's descriptions
    from mlflow.tracking import MlflowClient

    client = MlflowClient(default_tracking_uri(SWEEP, store))
    exp = client.get_experiment_by_name(SWEEP)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert "three architectures" in exp.tags["mlflow.note.content"]
    assert "hyena > transformer" in exp.tags["mlflow.note.content"]
    stage = client.search_runs([exp.experiment_id], "tags.`gdna.role` = 'stage'")[0]
    assert stage.data.tags["mlflow.note.content"].startswith("Stage **finetune**")
    assert "hyena > transformer" in stage.data.tags["mlflow.note.content"]
    children = client.search_runs([exp.experiment_id], "tags.`gdna.role` = 'baseline'")
    assert len(children) == 10
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {
        client.search_runs([exp.experiment_id], "tags.`gdna.role` = 'baselines'")[0].info.run_id}

    # a second analysis reuses the logged baselines and replaces (not appends) the analysis text
    capsys.readouterr()
    assert cli("analyze", SWEEP, "--storage", str(store), "--k", "4") == 0
    assert "4-mer LR" in capsys.readouterr().out
    assert len(client.search_runs([exp.experiment_id], "tags.`gdna.role` = 'baseline'")) == 10
    assert client.get_experiment(exp.experiment_id).tags["mlflow.note.content"].count("**Analysis**") == 1


def test_baseline_command(store, capsys, tmp_path):
    assert cli("baseline", SWEEP, "--storage", str(store), "--k", "4", "--out", str(tmp_path), "--no-mlflow-log") == 0
    printed = capsys.readouterr().out
    assert f"| {TASK} | 4-mer LR |" in printed and f"| {TASK} | majority class |" in printed
    assert len(pd.read_csv(tmp_path / "tables" / "baselines.csv")) == 2
    from gdna.errors import GdnaError

    with pytest.raises(GdnaError, match="--k: the k-mer length must be ≥ 1"):
        cli("baseline", SWEEP, "--storage", str(store), "--k", "0", "--out", str(tmp_path), "--no-mlflow-log")
    with pytest.raises(GdnaError, match="--alpha: must be in"):
        cli("analyze", SWEEP, "--storage", str(store), "--alpha", "2", "--no-mlflow-log", "--out", str(tmp_path))


def test_importance_excludes_constant_and_confounded_parameters(store):
    df = load_runs(default_tracking_uri(SWEEP, store), SWEEP)
    result = importance.param_importances(df)
    assert "batch_size" not in result.params and result.excluded["batch_size"] == "constant (128)"
    assert set(result.params) == {"arch", "lr"}

    # context length: only for pretrained strategies, and fixed by the strategy there
    T = SyntheticTrial
    trials = [T(arch, strategy, TASK, lr, 128, seed, 0.7 + 0.05 * (arch == "hyena") + 0.01 * seed, 0.7,
                context_len=ctx)
              for arch in ("transformer", "hyena") for lr in (1e-4, 1e-3) for seed in range(3)
              for strategy, ctx in (("scratch", 1024), ("task_spt", 128), ("hg38", 1024))]
    result = importance.param_importances(trials_frame(trials))
    assert "context_len" not in result.params and "pretrained strategies" in result.excluded["context_len"]
    assert result.subsets and result.subsets[0].excluded["context_len"].startswith("follows")
    assert set(result.params) == {"arch", "strategy", "lr"}
