"""pretrain.per_context: one pretraining group per context length, fine-tuned from each (Table 5)."""
from __future__ import annotations

from pathlib import Path

import pytest

from gdna.errors import ConfigError
from gdna.sweep.plan import build_plan
from gdna.sweep.spec import load_spec, spec_from_dict

REPO = Path(__file__).resolve().parents[1]


def spec(data_root, tmp_path, **pretrain):
    return spec_from_dict({
        "name": "ctx", "tasks": ["human_enhancers_cohn"], "architectures": ["hyena"],
        "strategies": ["scratch", "task_spt"], "search_space": "smoke", "data_root": str(data_root),
        "storage": str(tmp_path / "runs"),
        "pretrain": {"steps": 10, "lrs": [1e-3, 3e-3], "context_lens": [64, 128], **pretrain},
    })


def test_one_group_per_context_and_cells_for_each(data_root, tmp_path):
    plan = build_plan(spec(data_root, tmp_path, per_context=True))
    assert sorted(plan.groups) == ["hyena.task_spt.human_enhancers_cohn.ctx128", "hyena.task_spt.human_enhancers_cohn.ctx64"]
    for g, jobs in plan.groups.items():  # each group tries its own length at every lr
        assert {j.trial.data.context_len for j in jobs} == {int(g.rsplit("ctx", 1)[1])} and len(jobs) == 2
    pretrained = [c for c in plan.cells if c.strategy == "task_spt"]
    scratch = [c for c in plan.cells if c.strategy == "scratch"]
    assert len(pretrained) == 2 * len(scratch) and {c.context_len for c in pretrained} == {64, 128}
    assert len({c.id for c in plan.cells}) == len(plan.cells)  # Tune's cell axis keeps them apart
    # fine-tuning from different pretrainings → different trial keys
    selected = {g: jobs[0].key for g, jobs in plan.groups.items()}
    keys = {plan.finetune_trial(c, {}, selected)[1] for c in pretrained}
    assert len(keys) == len(pretrained)
    assert "(one group per context length; fine-tuned from each)" in plan.describe()


def test_default_selects_one_context_per_group(data_root, tmp_path):
    plan = build_plan(spec(data_root, tmp_path))
    assert list(plan.groups) == ["hyena.task_spt.human_enhancers_cohn"]
    assert len(plan.groups["hyena.task_spt.human_enhancers_cohn"]) == 4  # 2 lr × 2 contexts compete
    assert all(c.context_len is None for c in plan.cells)


def test_per_context_must_be_a_bool(data_root, tmp_path):
    with pytest.raises(ConfigError, match="pretrain.per_context: expected true/false"):
        spec(data_root, tmp_path, per_context="yes")


def test_shipped_context_length_sweep_plans(data_root):
    plan = build_plan(load_spec(REPO / "sweeps" / "context_length.yaml", data_root=str(data_root)))
    assert len(plan.pretrain) == 54 and plan.n_finetune == 1440
