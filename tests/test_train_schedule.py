"""gdna.train recipe pieces without Ray: LR schedule, AdamW groups, global-batch sharding."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gdna.config import ModelConfig, TrainConfig
from gdna.errors import ConfigError
from gdna.train import batches as B
from gdna.train.schedule import WarmupCosine, build_optimizer, build_scheduler, param_groups


def test_warmup_then_cosine_to_min_lr():
    cfg = TrainConfig(lr=1e-3, min_lr=1e-6, warmup_frac=0.1)
    model = torch.nn.Linear(4, 4)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, total_steps=100)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(1e-4)  # step 0 of 10 warmup steps
    assert lrs[9] == pytest.approx(1e-3)  # warmup ends at the peak
    assert all(a < b for a, b in zip(lrs[:9], lrs[1:10]))
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))  # cosine: monotone down
    mid = WarmupCosine(100, 0.1, 1e-3, 1e-6).lr_at(10 + 45)
    assert mid == pytest.approx(1e-6 + (1e-3 - 1e-6) * 0.5)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-6)  # after the last step
    assert WarmupCosine(10, 0.0, 1e-3, 1e-6).lr_at(0) == pytest.approx(1e-3)


def test_adamw_groups_no_decay_on_norms_biases_embeddings():
    from gdna.models.build import build_model

    model = build_model(ModelConfig.for_arch("transformer", d_model=32, n_heads=4, n_classes=2), "cls")
    cfg = TrainConfig(weight_decay=0.1)
    groups = param_groups(model, cfg.weight_decay)
    decay = {id(p) for p in groups[0]["params"]}
    assert groups[0]["weight_decay"] == 0.1 and groups[1]["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    emb = [m for m in model.modules() if isinstance(m, torch.nn.Embedding)]
    assert emb and all(id(p) not in decay for m in emb for p in m.parameters())
    for pid, name in names.items():
        p = dict(model.named_parameters())[name]
        if p.ndim < 2:
            assert pid not in decay, name
    assert any(p.ndim == 2 for p in groups[0]["params"])
    total = sum(len(g["params"]) for g in groups)
    assert total == len({id(p) for p in model.parameters()})  # every parameter exactly once
    opt = build_optimizer(model, cfg)
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["betas"] == cfg.betas


def test_per_worker_batch_and_errors():
    assert B.per_worker_batch(32, 1, None) == (32, 32)
    assert B.per_worker_batch(32, 2, None) == (16, 16)
    assert B.per_worker_batch(32, 2, 8) == (16, 8)
    with pytest.raises(ConfigError, match=r"^train\.batch_size: .*not divisible by the 3 workers"):
        B.per_worker_batch(32, 3, None)
    with pytest.raises(ConfigError, match=r"^train\.micro_batch_size: per-worker batch 16"):
        B.per_worker_batch(32, 2, 6)


@pytest.mark.parametrize("n", [100, 96, 97])
def test_global_batch_is_the_same_for_any_worker_count(n):
    bs, seed, epoch = 16, 3, 2
    ref = B.global_batches(n, bs, 1, seed, epoch)
    for world in (1, 2, 4):
        micro = B.per_worker_batch(bs, world, None)[1] // (2 if world < 4 else 1)
        plans = [B.rank_plan(n, bs, world, r, micro, seed, epoch) for r in range(world)]
        assert all(len(p) == B.steps_per_epoch(n, bs, world) for p in plans)
        for step in range(len(plans[0])):
            got = np.concatenate([mb for p in plans for mb in p[step][1]])
            want = ref[step] if step < len(ref) else None
            assert want is not None and np.array_equal(np.sort(got), np.sort(want))
            assert all(p[step][0] == len(want) for p in plans)
            assert all(len(mb) <= micro for p in plans for mb in p[step][1])
    # a remainder smaller than the worker count is dropped (no rank may be left without data)
    assert B.steps_per_epoch(97, 16, 1) == 7 and B.steps_per_epoch(97, 16, 2) == 6
    assert B.steps_per_epoch(100, 16, 4) == 7 and B.steps_per_epoch(99, 16, 4) == 6
    # the order is a pure function of (seed, epoch)
    assert not np.array_equal(B.epoch_permutation(n, seed, 0), B.epoch_permutation(n, seed, 1))
    assert np.array_equal(B.epoch_permutation(n, seed, 1), B.epoch_permutation(n, seed, 1))


def test_eval_shards_cover_each_example_once():
    for world in (1, 2, 3):
        parts = [B.eval_shard(10, world, r) for r in range(world)]
        assert sorted(np.concatenate(parts).tolist()) == list(range(10))
    assert math.isclose(sum(len(p) for p in [B.eval_shard(7, 2, 0), B.eval_shard(7, 2, 1)]), 7)
