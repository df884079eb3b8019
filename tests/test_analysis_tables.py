"""Tables from a hand-computed synthetic sweep (no MLflow: the frame load_runs would return)."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from gdna.analysis import tables
from synthetic_store import SyntheticTrial, known_trials, trials_frame


@pytest.fixture(scope="module")
def runs() -> pd.DataFrame:
    return trials_frame(known_trials())


def cell(table: pd.DataFrame, **where) -> pd.Series:
    mask = pd.Series(True, index=table.index)
    for key, value in where.items():
        mask &= table[key] == value
    assert mask.sum() == 1, where
    return table[mask].iloc[0]


def test_mean_spread_is_max_minus_min_deviation_from_the_mean():
    # mean 0.65; deviations -0.05, -0.01, +0.06 → spread 0.06 - (-0.05) = 0.11 (not 2·max|dev|, not std)
    mean, spread, n = tables.mean_spread([0.60, 0.64, 0.71])
    assert (mean, spread, n) == (pytest.approx(0.65), pytest.approx(0.11), 3)
    mean, spread, n = tables.mean_spread([0.80, 0.84, 0.90, float("nan")])
    assert (mean, spread, n) == (pytest.approx(0.8466666667), pytest.approx(0.10), 3)
    assert tables.mean_spread([0.7]) == (pytest.approx(0.7), 0.0, 1)
    mean, spread, n = tables.mean_spread([])
    assert math.isnan(mean) and math.isnan(spread) and n == 0


def test_selection_uses_validation_not_test(runs):
    table = tables.architecture_tables(runs)
    scratch = cell(table, arch="transformer", task="human_a", strategy="scratch")
    # lr 1e-4 has the best TEST accuracy (0.91) but lr 1e-3 the best validation (0.81 > 0.72)
    assert scratch["lr"] == pytest.approx(1e-3)
    assert scratch["val_mean"] == pytest.approx(0.81)
    assert scratch["test_mean"] == pytest.approx(0.65)
    assert scratch["test_spread"] == pytest.approx(0.11)
    assert scratch["n"] == 3 and scratch["n_configs"] == 2


def test_per_architecture_table_means_spreads_and_marks(runs):
    table = tables.architecture_tables(runs)
    expected = {  # (task, strategy): (mean, spread, n, n_excluded)
        ("human_a", "scratch"): (0.65, 0.11, 3, 0),
        ("human_a", "hg38"): (0.83, 0.07, 3, 0),
        ("human_a", "task_spt"): (0.72, 0.06, 3, 0),
        ("human_b", "scratch"): (0.60, 0.20, 3, 1),  # the run without test_acc is counted
        ("human_b", "hg38"): (0.80, 0.20, 3, 0),
        ("human_b", "task_spt"): (0.70, 0.20, 3, 0),
        ("demo_c", "scratch"): (0.96, 0.02, 3, 0),
    }
    assert len(table) == len(expected)
    for (task, strategy), (mean, spread, n, n_excluded) in expected.items():
        row = cell(table, arch="transformer", task=task, strategy=strategy)
        assert row["test_mean"] == pytest.approx(mean), (task, strategy)
        assert row["test_spread"] == pytest.approx(spread), (task, strategy)
        assert (row["n"], row["n_excluded"]) == (n, n_excluded), (task, strategy)
    md = tables.architecture_markdown(table, "transformer").splitlines()
    assert md[0] == "| task | scratch | hg38 | task_spt |"
    assert md[2] == "| demo_c | **96.0 ± 2.0** | – | – |"
    assert md[3] == "| human_a | 65.0 ± 11.0 | **83.0 ± 7.0** | <u>72.0 ± 6.0</u> |"
    assert md[4] == "| human_b | 60.0 ± 20.0 | **80.0 ± 20.0** | <u>70.0 ± 20.0</u> |"


def test_hg38_ignores_the_diverged_run_and_selects_on_validation(runs):
    table = tables.architecture_tables(runs)
    hg38 = cell(table, arch="transformer", task="human_a", strategy="hg38")
    assert hg38["lr"] == pytest.approx(1e-4)  # 0.90 validation vs 0.50 (2 finished + 1 diverged)


def test_human_regulatory_average_per_seed_then_mean_spread(runs):
    table = tables.human_regulatory_table(runs)
    # per seed, mean over human_a and human_b of the selected configs, e.g. scratch:
    # seed 0 (0.60+0.50)/2=0.55, seed 1 (0.64+0.60)/2=0.62, seed 2 (0.71+0.70)/2=0.705
    expected = {"scratch": (0.625, 0.155), "hg38": (0.815, 0.135), "task_spt": (0.71, 0.13)}
    assert len(table) == 3
    for strategy, (mean, spread) in expected.items():
        row = cell(table, arch="transformer", strategy=strategy)
        assert row["test_mean"] == pytest.approx(mean)
        assert row["test_spread"] == pytest.approx(spread)
        assert row["n_tasks"] == 2  # demo_c is not a human_* task
    md = tables.human_regulatory_markdown(table).splitlines()
    assert md[2:] == ["| scratch | 62.5 ± 15.5 |", "| hg38 | **81.5 ± 13.5** |",
                      "| task_spt | <u>71.0 ± 13.0</u> |"]


def test_context_len_table_only_with_that_axis(runs):
    assert not tables.has_context_axis(runs)
    assert tables.context_len_tables(runs).empty
    T = SyntheticTrial
    trials = [T("hyena", "hg38", "human_a", 1e-4, 128, s, t, 0.8, context_len=L)
              for L, tests in ((512, (0.7, 0.8)), (1024, (0.8, 0.9)), (2048, (0.75, 0.75)))
              for s, t in enumerate(tests)]
    trials += [T("hyena", "scratch", "human_a", 1e-4, 128, s, 0.99, 0.99, context_len=1024) for s in (0, 1)]
    # a `pretrain.context_len` param wins over data.context_len
    trials += [T("hyena", "hg38", "human_a", 1e-4, 128, s, 0.5, 0.5, context_len=1024,
                 extra_params={"pretrain.context_len": 4096}) for s in (0, 1)]
    df = trials_frame(trials)
    assert tables.has_context_axis(df)
    table = tables.context_len_tables(df)
    assert sorted(table["context_len"]) == [512, 1024, 2048, 4096]  # scratch runs left out
    row = cell(table, context_len=1024)
    assert (row["test_mean"], row["test_spread"]) == (pytest.approx(0.85), pytest.approx(0.10))
    md = tables.context_len_markdown(table, "hyena").splitlines()
    assert md[0] == "| task | strategy | L=512 | L=1024 | L=2048 | L=4096 |"
    # 512 and 2048 tie on the shown mean (75.0): both underlined
    assert md[2] == "| human_a | hg38 | <u>75.0 ± 10.0</u> | **85.0 ± 10.0** | <u>75.0 ± 0.0</u> | 50.0 ± 0.0 |"


def test_ties_are_all_marked():
    out = tables._marked([(0.8, 0.0), (0.8, 0.01), (0.7, 0.0), (0.6, 0.0), (float("nan"), 0.0)])
    assert out == ["**80.0 ± 0.0**", "**80.0 ± 1.0**", "<u>70.0 ± 0.0</u>", "60.0 ± 0.0", "–"]


def test_outcomes_are_counted(runs):
    assert len(runs) == 28
    assert runs["outcome"].value_counts().to_dict() == {"ok": 26, "diverged": 1, "no test_acc": 1}
    assert runs["lr"].dtype == float and str(runs["seed"].dtype) == "Int64"


def test_pretraining_context_comes_from_the_pretraining_run_of_the_checkpoint():
    from gdna.analysis.load import attach_pretrain_context, normalize_runs

    pretrain = pd.DataFrame({"params.export_dir": ["/s/pretrain/k512", "/s/pretrain/k2048"],
                             "params.data.context_len": ["512", "2048"]})
    finetune = pd.DataFrame({"run_id": ["a", "b", "c"], "tags.strategy": ["hg38", "hg38", "scratch"],
                             "params.init_checkpoint": ["/s/pretrain/k512/backbone.pt",
                                                        "/s/pretrain/k2048/backbone.pt", None],
                             "params.data.context_len": ["1024"] * 3, "metrics.test_acc": [0.7, 0.8, 0.6]})
    df = normalize_runs(attach_pretrain_context(finetune, pretrain))
    assert df["context_len"].tolist() == [512, 2048, 1024]


def test_a_cell_whose_runs_all_failed_says_so():
    T = SyntheticTrial
    trials = [T("hyena", "scratch", "human_a", 1e-4, 128, s, 0.7, 0.7) for s in (0, 1)]
    trials += [T("hyena", "hg38", "human_a", 1e-4, 128, s, None, 0.5, status="errored") for s in (0, 1)]
    md = tables.architecture_markdown(tables.architecture_tables(trials_frame(trials)), "hyena")
    assert md.splitlines()[2] == "| human_a | **70.0 ± 0.0** | – (all 2 runs excluded) |"
