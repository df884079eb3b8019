"""LR-sensitivity figure, LR gap table and fANOVA importance on synthetic grids (no MLflow)."""
from __future__ import annotations

import matplotlib.image
import pytest

from gdna.analysis import importance, plots
from synthetic_store import SyntheticTrial, grid_trials, trials_frame

TASKS = {"human_enhancers_cohn": 2, "human_nontata_promoters": 2, "human_ensembl_regulatory": 3}


@pytest.fixture(scope="module")
def grid():
    return trials_frame(grid_trials(tasks=TASKS, strategies=("hg38",), batches=(128, 256), seeds=(0, 1)))


def test_lr_figure_one_panel_per_task_one_line_per_arch(grid, tmp_path):
    curves = plots.lr_curves(grid, "hg38")
    fig = plots.plot_lr_sensitivity(curves, title="hg38")
    assert len(fig.axes) == 3
    for ax, task in zip(fig.axes, sorted(TASKS)):
        assert ax.get_title() == task.replace("_", " ")
        assert ax.get_xscale() == "log"
        labelled = [line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_")]
        assert labelled == ["transformer", "hyena", "mamba", "chance"]
        chance = [line for line in ax.get_lines() if line.get_label() == "chance"][0]
        assert chance.get_linestyle() == "--"
        assert chance.get_ydata()[0] == pytest.approx(100 / TASKS[task])
        assert len(ax.collections) == 3  # one min–max band per architecture
        mean_line = [line for line in ax.get_lines() if line.get_label() == "mamba"][0]
        assert list(mean_line.get_xdata()) == pytest.approx([1e-4, 3e-4, 9e-4, 2.7e-3])
    path = tmp_path / "lr.png"
    plots.save_figure(fig, path)
    height, width = matplotlib.image.imread(path).shape[:2]
    assert (width, height) == (1880, 640)  # (3·3.0 + 0.4) × (2.5 + 0.7) inches at 200 dpi


def test_lr_curve_points_are_validation_selected_with_min_max_band():
    T = SyntheticTrial
    trials = [T("hyena", "scratch", "t", 1e-3, 128, s, test, 0.9) for s, test in enumerate([0.6, 0.7])]
    trials += [T("hyena", "scratch", "t", 1e-3, 256, s, 0.99, 0.5) for s in (0, 1)]  # worse validation
    trials += [T("hyena", "scratch", "t", 1e-4, 128, s, 0.55, 0.6) for s in (0, 1)]
    curves = plots.lr_curves(trials_frame(trials), "scratch")
    point = curves[curves["lr"] == 1e-3].iloc[0]
    assert point["batch_size"] == 128
    assert (point["test_mean"], point["test_min"], point["test_max"]) == pytest.approx((0.65, 0.6, 0.7))
    gaps = plots.lr_gap_table(curves)
    assert gaps.iloc[0][["best_lr", "worst_lr", "gap"]].tolist() == pytest.approx([1e-3, 1e-4, 0.10])
    assert "10.0 (1e-3 → 1e-4)" in plots.lr_gap_markdown(gaps)


def test_importance_with_fanova(grid):
    result = importance.param_importances(grid[grid["task"] == "human_enhancers_cohn"])
    assert set(result.importances) == {"arch", "lr", "batch_size"}  # strategy and task do not vary
    assert sum(result.importances.values()) == pytest.approx(1.0)
    assert max(result.importances, key=result.importances.get) == "lr"  # by construction of the grid
    assert result.n_trials == int(grid[grid["task"] == "human_enhancers_cohn"]["ok"].sum())
    fig = plots.plot_importance(result.importances)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()][-1] == "lr"


def test_importance_study_distributions(grid):
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    ok = grid[grid["ok"]]
    study = importance.build_study(ok, ["arch", "lr", "task"])
    assert len(study.trials) == len(ok)
    dist = study.trials[0].distributions
    assert isinstance(dist["lr"], FloatDistribution) and dist["lr"].log
    assert isinstance(dist["arch"], CategoricalDistribution)


def test_importance_degenerate_cases(grid):
    one = importance.param_importances(grid.iloc[:1])
    assert one.importances == {} and "need at least 2" in one.message
    only_lr = grid[(grid["arch"] == "hyena") & (grid["batch_size"] == 128) & (grid["task"] == "human_enhancers_cohn")]
    result = importance.param_importances(only_lr)
    assert result.importances == {"lr": 1.0} and "only lr varies" in result.message
    same = importance.param_importances(only_lr[only_lr["lr"] == 1e-4])
    assert same.importances == {} and "no hyperparameter varies" in same.message


def test_importance_includes_independent_extra_axes_only():
    T = SyntheticTrial
    trials = [T(arch, "scratch", task, lr, 128, seed, 0.6 + 0.1 * (dropout == 0.0) + 0.01 * seed, 0.7,
                n_classes=n_classes, extra_params={"model.dropout": dropout, "train.epochs": 10})
              for arch in ("hyena", "mamba") for task, n_classes in (("t2", 2), ("t3", 3))
              for lr in (1e-4, 1e-3) for dropout in (0.0, 0.1) for seed in (0, 1)]
    result = importance.param_importances(trials_frame(trials))
    # model.n_classes follows the task and train.epochs is constant: neither is an axis
    assert result.params == ["arch", "lr", "task", "model.dropout"]
    assert max(result.importances, key=result.importances.get) == "model.dropout"
