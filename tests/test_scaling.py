"""Scaling studies (issue 17): sequence-length warmup, gradient accumulation = one large batch, the
quadratic-attention skip rule, tokens per batch held fixed, and the model-size list within ±3%."""
from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from gdna.config import (PAPER_SCALING_PARAM_BUDGETS, DataConfig, ModelConfig, TrainConfig, TrialConfig)
from gdna.errors import ConfigError
from gdna.models.build import _meta_count, build_model, count_backbone_params, resolve_dims
from gdna.registry import ARCHITECTURES
from gdna.sweep.plan import build_plan, skip_reason
from gdna.sweep.spec import spec_from_dict
from gdna.train import batches as B
from gdna.train import loop as loop_mod
from gdna.train.loop import run
from gdna.train.runtime import LocalRuntime
from gdna.train.schedule import build_optimizer, build_scheduler
from gdna.train.steps import IGNORE, train_step

pytestmark = pytest.mark.usefixtures("one_thread")


# --- sequence-length warmup ------------------------------------------------------------------
def test_schedule_yields_the_configured_lengths_in_order():
    sched = B.seq_len_schedule(4096, 512, 10)
    assert sched == [(0, 512), (10, 1024), (20, 2048), (30, 4096)]
    assert [B.seq_len_at(sched, s) for s in (0, 9, 10, 19, 20, 29, 30, 10_000)] == [512, 512, 1024, 1024, 2048, 2048,
                                                                                      4096, 4096]
    assert B.seq_len_schedule(1024, 1024, 10) == [(0, 1024)]  # start at the target: no warmup
    assert B.seq_len_schedule(1024, 0, 0) == [(0, 1024)]


def test_cut_keeps_every_token_and_target():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(6, 10, (3, 65), generator=g)
    inputs, targets = ids[:, :-1], ids[:, 1:].clone()
    mask = torch.ones_like(inputs, dtype=torch.bool)
    cut_in, cut_tg, cut_mask = B.cut_clm_batch((inputs, targets, mask), 16)
    assert cut_in.shape == (12, 16)
    # the same (input, target) pairs, in the same order: piece i of row r = positions [16i, 16i+16)
    assert torch.equal(cut_in.reshape(3, 64), inputs) and torch.equal(cut_tg.reshape(3, 64), targets)
    targets[2, 40:] = IGNORE  # a padded tail: its last piece has no target and is dropped
    mask = targets != IGNORE
    cut_in, cut_tg, cut_mask = B.cut_clm_batch((inputs, targets, mask), 16)
    assert cut_in.shape == (11, 16) and torch.equal(cut_tg[:10].reshape(-1), targets.reshape(-1)[:160])
    assert int((cut_tg != IGNORE).sum()) == int((targets != IGNORE).sum())
    # a length that does not divide L: padded, pieces without targets dropped, same targets
    c_in, c_tg, _ = B.cut_clm_batch((inputs, targets, mask), 24)
    assert c_in.shape[1] == 24 and int((c_tg != IGNORE).sum()) == int((targets != IGNORE).sum())


def genome_trial(data_root, **train) -> TrialConfig:
    t = dict(objective="clm", lr=3e-3, batch_size=8, max_steps=6, eval_every=3, seed=0)
    t.update(train)
    return TrialConfig(
        model=ModelConfig.for_arch("hyena", d_model=16, n_layers=1),
        data=DataConfig(data_root=str(data_root), corpus="genome", context_len=64, windows_per_epoch=8,
                        eval_windows=8),
        train=TrainConfig(**t)).validate()


def test_warmup_in_the_loop_keeps_tokens_per_step_constant(tmp_path, data_root, monkeypatch):
    seen = []
    real = loop_mod.train_step

    def spy(model, micro_batches, **kw):
        seen.append(([tuple(b[0].shape) for b in micro_batches], kw["global_count"]))
        return real(model, micro_batches, **kw)

    monkeypatch.setattr(loop_mod, "train_step", spy)
    trial = genome_trial(data_root, seq_warmup_start=16, seq_warmup_steps=2, micro_batch_size=4)
    rt = LocalRuntime(tmp_path / "warm")
    final = run({"trial": trial.to_dict()}, rt)
    lengths = [shapes[0][1] for shapes, _ in seen]
    assert lengths == [16, 16, 32, 32, 64, 64]  # the schedule, in order, then the target
    assert {n for _, n in seen} == {8 * 64}  # every optimizer step: 8 windows × 64 target tokens
    assert all(sum(r * c for r, c in shapes) == 8 * 64 for shapes, _ in seen)  # 2 micro-batches, same tokens
    assert final["tokens_seen"] == 6 * 8 * 64 and final["status"] == "finished"
    assert [r["seq_len"] for r in rt.reports] == [32, 64]  # the length at each evaluation's last step
    assert final["test_ppl"] > 0 and final["n_params"] > 0 and final["n_layers"] == 1  # genome BED has a test split


# --- gradient accumulation == one large batch ----------------------------------------------------
class _Rt:
    world_size, rank, device = 1, 0, torch.device("cpu")

    def all_reduce_sum(self, t):
        return t


@pytest.mark.parametrize("arch", ARCHITECTURES.names())
def test_accumulation_gives_the_same_update_as_one_batch(arch):
    torch.manual_seed(0)
    cfg = ModelConfig.for_arch(arch, d_model=16, n_layers=1)
    model = build_model(cfg, "lm").double().float()
    twin = copy.deepcopy(model)
    ids = torch.randint(6, 10, (8, 33), generator=torch.Generator().manual_seed(1))
    inputs, targets = ids[:, :-1], ids[:, 1:].clone()
    targets[5, 20:] = IGNORE  # uneven target counts across micro-batches
    batch = (inputs, targets, torch.ones_like(inputs, dtype=torch.bool))
    count = int((targets != IGNORE).sum())
    tcfg = TrainConfig(objective="clm", lr=1e-2, batch_size=8, max_steps=10, warmup_frac=0.0)
    params = []
    for m, micro in ((model, [batch]), (twin, [tuple(t[i:i + 2] for t in batch) for i in range(0, 8, 2)])):
        opt = build_optimizer(m, tcfg)
        sch = build_scheduler(opt, tcfg, 10)
        scaler = torch.amp.GradScaler("cpu", enabled=False)
        loss, diverged = train_step(m, micro, objective="clm", global_count=count, rt=_Rt(), optimizer=opt,
                                    scheduler=sch, scaler=scaler, grad_clip=1.0, precision="fp32")
        assert not diverged
        params.append((loss, {k: v.detach().clone() for k, v in m.state_dict().items()}))
    assert params[0][0] == pytest.approx(params[1][0], rel=1e-6)
    for k in params[0][1]:
        torch.testing.assert_close(params[0][1][k], params[1][1][k], rtol=1e-5, atol=1e-6)


# --- the plan: tokens per batch, micro-batches, skip rule -------------------------------------------
def scaling_spec(data_root, tmp_path, **pretrain):
    raw = {"name": "scal", "tasks": [], "finetune": False, "architectures": list(ARCHITECTURES.names()),
           "strategies": ["hg38"], "search_space": "smoke", "storage": str(tmp_path), "data_root": str(data_root),
           "model": {"d_model": 16, "n_layers": 1},
           "pretrain": {"steps": 4, "lrs": [1e-3], "context_lens": [256, 1024, 4096], "per_context": True,
                        "tokens_per_batch": 8192, "micro_tokens": 2048, "eval_tokens": 4096, **pretrain}}
    return spec_from_dict(raw)


def test_tokens_per_batch_fixed_with_accumulation_and_skip_rule(data_root, tmp_path):
    quad = [a.name for a in ARCHITECTURES if a.quadratic_in_length]
    assert quad, "some registered architecture is quadratic in length"
    spec = scaling_spec(data_root, tmp_path, quadratic_max_len=1024)
    plan = build_plan(spec)
    for j in plan.pretrain:
        t, L = j.trial.train, j.trial.data.context_len
        assert t.batch_size * L == 8192  # tokens per optimizer step held fixed
        assert t.micro_batch_size * L <= max(2048, L) and t.batch_size % t.micro_batch_size == 0  # ≥ 1 window
        assert j.trial.data.eval_windows * L == 4096 and j.trial.data.windows_per_epoch == t.batch_size
        assert not (j.arch in quad and L > 1024)
    assert {(a, L) for a, L, _ in plan.skipped} == {(a, 4096) for a in quad}
    text = plan.describe()
    for a in quad:
        assert f"skipped: {a} at context 4096 (quadratic in length" in text
    assert "context 1024: batch 8 × 1024 = 8,192 tokens per step (micro-batch 2 × 4 accumulation step(s)" in text
    assert "stage 2 finetune: none" in text and plan.cells == []
    assert skip_reason(spec, quad[0], 1024) is None
    assert all(skip_reason(spec, a.name, 1 << 20) is None for a in ARCHITECTURES if not a.quadratic_in_length)


def test_bad_scaling_keys_fail_with_one_line(data_root, tmp_path):
    with pytest.raises(ConfigError, match=r"^pretrain\.context_lens\[2\]: 3000 does not divide tokens_per_batch"):
        scaling_spec(data_root, tmp_path, context_lens=[256, 1024, 3000])
    with pytest.raises(ConfigError, match=r"^train\.seq_warmup_steps: sequence-length warmup needs both"):
        TrainConfig(seq_warmup_start=64).validate()


# --- model sizes -------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHITECTURES.names())
def test_depth_extrapolated_count_is_exact(arch):
    cfg = ModelConfig.for_arch(arch, d_model=32, n_layers=5)
    dims = resolve_dims(cfg)
    assert count_backbone_params(cfg, dims) == _meta_count(cfg, dims)


@pytest.mark.parametrize("budget", [PAPER_SCALING_PARAM_BUDGETS[0], PAPER_SCALING_PARAM_BUDGETS[2]])
def test_size_list_within_3_percent_fast(budget):
    _check_budget(budget)


@pytest.mark.slow
@pytest.mark.parametrize("budget", PAPER_SCALING_PARAM_BUDGETS)
def test_size_list_within_3_percent_every_budget(budget):
    _check_budget(budget)


def _check_budget(budget):
    depths = {}
    for arch in ARCHITECTURES.names():
        cfg = ModelConfig.for_arch(arch, n_layers=0, param_budget=budget)
        dims = resolve_dims(cfg)
        n = count_backbone_params(dataclasses.replace(cfg, dropout=0.0), dims)
        assert abs(n - budget) <= 0.03 * budget, (arch, budget, dims, n)
        depths[arch] = dims.n_layers
    assert all(d >= 1 for d in depths.values())
