"""Is a difference real? Known answers on synthetic sweeps (no MLflow): identical distributions give
no significant difference, a 5-point shift over 5 paired seeds is detected, too few pairs warn, and
the rank tests across tasks find a consistent winner."""
from __future__ import annotations

import numpy as np
import pytest
from synthetic_store import SyntheticTrial, trials_frame

from gdna.analysis import significance as S

T = SyntheticTrial


def two_archs(shift: float, seeds=range(5), noise=0.01, rng_seed=0, task="human_enhancers_cohn"):
    """transformer and hyena on one task; each seed has its own split difficulty (shared by both
    architectures: that is what pairing removes), hyena = transformer + shift + noise."""
    rng = np.random.default_rng(rng_seed)
    out = []
    for seed in seeds:
        split = 0.70 + rng.normal(0, 0.03)
        out.append(T("transformer", "scratch", task, 1e-3, 128, seed, split + rng.normal(0, noise), 0.7))
        out.append(T("hyena", "scratch", task, 1e-3, 128, seed, split + shift + rng.normal(0, noise), 0.7))
    return out


def verdicts(trials, alpha=S.ALPHA):
    return S.pairwise(S.unit_scores(trials_frame(trials)), "arch", ["task", "strategy"], alpha)


def test_identical_distributions_give_no_significant_difference():
    # 20 independent sweeps where both architectures draw from the same distribution: at α = 0.05
    # a correct test calls a difference in about 1 in 20; every one here is "no significant difference"
    table = verdicts([t for i in range(20) for t in two_archs(0.0, rng_seed=i, task=f"t{i:02d}")])
    assert len(table) == 20 and (table["n_pairs"] == 5).all()
    assert (table["verdict"] == S.NO_DIFFERENCE).sum() >= 18
    row = verdicts(two_archs(0.0, rng_seed=3)).iloc[0]
    assert row["verdict"] == S.NO_DIFFERENCE and row["warning"] == ""
    assert row["ci_low"] < 0 < row["ci_high"]


def test_a_5_point_shift_over_5_paired_seeds_is_detected():
    row = verdicts(two_archs(0.05)).iloc[0]
    assert (row["a"], row["b"], row["n_pairs"]) == ("transformer", "hyena", 5)
    assert row["verdict"] == "hyena > transformer"
    assert row["mean_diff"] == pytest.approx(-0.05, abs=0.015)
    assert row["ci_high"] < 0 and row["p_holm"] < 0.01
    # unpaired, the split-to-split spread (3 points) would hide it: pairing is what detects it
    from scipy import stats

    t = trials_frame(two_archs(0.05))
    assert stats.ttest_ind(t[t.arch == "hyena"].test_acc, t[t.arch == "transformer"].test_acc).pvalue > 0.01


def test_too_few_pairs_warn_and_decide_nothing():
    row = verdicts(two_archs(0.05, seeds=(0, 1))).iloc[0]
    assert row["verdict"] == S.TOO_FEW and row["n_pairs"] == 2
    assert "only 2 paired seed/folds" in row["warning"]
    few = verdicts(two_archs(0.05, seeds=(0, 1, 2))).iloc[0]
    assert few["n_pairs"] == 3 and "only large differences" in few["warning"]
    md = S.pairwise_markdown(verdicts(two_archs(0.05, seeds=(0, 1))), ["task", "strategy"])
    assert "too few pairs" in md and "| 2 |" in md


def test_pairs_use_only_shared_seeds_and_holm_adjusts_within_a_cell():
    trials = two_archs(0.05) + [T("mamba", "scratch", "human_enhancers_cohn", 1e-3, 128, s, 0.7, 0.7)
                                for s in (0, 1, 7)]
    table = verdicts(trials)
    row = table[(table["a"] == "transformer") & (table["b"] == "mamba")].iloc[0]
    assert (row["n_pairs"], row["n_unpaired"]) == (2, 4)  # seeds 0, 1 shared; 2, 3, 4 and 7 not
    tested = table[table["n_pairs"] >= S.MIN_PAIRS]
    assert (tested["p_holm"] >= tested["p"]).all()
    assert S.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert S.holm([0.01, float("nan")])[0] == pytest.approx(0.01)  # NaN is not in the family


def test_selected_configuration_only():
    """Values compared are those of the validation-selected configuration, not the best test."""
    trials = two_archs(0.0)
    trials += [T("hyena", "scratch", "human_enhancers_cohn", 1e-4, 128, s, 0.99, 0.5) for s in range(5)]
    row = verdicts(trials).iloc[0]
    assert row["verdict"] == S.NO_DIFFERENCE  # the 0.99s have worse validation: never compared


def rank_sweep(n_tasks, gain):
    rng = np.random.default_rng(1)
    out = []
    for i in range(n_tasks):
        base = 0.6 + 0.05 * i
        for seed in range(3):
            for arch, g in zip(("transformer", "hyena", "mamba"), gain):
                out.append(T(arch, "scratch", f"task{i}", 1e-3, 128, seed, base + g + rng.normal(0, 0.003), 0.7))
    return trials_frame(out)


def test_rank_test_across_tasks_finds_a_consistent_winner(tmp_path):
    tests = S.rank_tests(S.unit_scores(rank_sweep(8, (0.0, 0.04, 0.0))))
    arch = [t for t in tests if t.family == "architectures, strategy scratch"][0]
    assert arch.done and arch.n_blocks == 8 and arch.pvalue < 0.01
    assert arch.ranks.iloc[0]["level"] == "hyena" and arch.ranks.iloc[0]["mean_rank"] == pytest.approx(1.0)
    verdict = dict(zip(zip(arch.pairs["a"], arch.pairs["b"]), arch.pairs["verdict"]))
    assert verdict["transformer", "hyena"] == "hyena > transformer"
    assert verdict["hyena", "mamba"] == "hyena > mamba"
    assert verdict["transformer", "mamba"] == S.NO_DIFFERENCE
    assert S.plot_critical_difference(arch, tmp_path / "cd.png") and (tmp_path / "cd.png").stat().st_size > 5000
    strategies = [t for t in tests if t.factor == "strategy"]
    assert strategies and all(not t.done and "only 1 strategy" in t.message for t in strategies)


def test_rank_test_needs_five_tasks():
    arch = S.rank_tests(S.unit_scores(rank_sweep(4, (0.0, 0.04, 0.0))))[0]
    assert not arch.done and "needs at least 5" in arch.message and "4 task(s)" in arch.message
