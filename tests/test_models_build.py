"""build_model / solve_width / load_backbone / count_params / describe."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from gdna.config import PAPER_PARAM_BUDGET, ModelConfig
from gdna.errors import ConfigError
from gdna.models import build_model, count_params, describe, load_backbone, resolve_dims, solve_width
from gdna.models.build import count_backbone_params
from gdna.registry import ARCHITECTURES

ARCHS = ARCHITECTURES.names()  # every registered architecture (a new one is tested without edits here)


def test_param_counts_at_the_paper_budget_are_within_3_percent():
    counts = {}
    for arch in ARCHS:
        cfg = ModelConfig(arch=arch)  # 2 layers, 1.6M budget, width from the solver
        model = build_model(cfg, "cls")
        counts[arch] = count_params(model.backbone)
        print(f"\n{describe(cfg)} | cls model total {count_params(model):,}")
        assert abs(counts[arch] - PAPER_PARAM_BUDGET) <= 0.03 * PAPER_PARAM_BUDGET
        assert counts[arch] == count_backbone_params(cfg, model.dims)  # the meta count is exact
        assert solve_width(arch, 2, PAPER_PARAM_BUDGET) == model.dims.d_model
    assert max(counts.values()) <= 1.03 * min(counts.values()), counts


def test_transformer_width_respects_heads_and_rope():
    for budget in (200_000, 900_000, 1_600_000):
        d = solve_width("transformer", 2, budget, n_heads=8)
        assert d % 8 == 0 and (d // 8) % 2 == 0
    d = solve_width("transformer", 4, 500_000, n_heads=6)
    assert d % 6 == 0 and (d // 6) % 2 == 0


def test_other_budgets_and_depths_land_within_3_percent():
    for arch in ARCHS:
        for layers, budget in ((1, 300_000), (4, 800_000)):
            cfg = ModelConfig(arch=arch, n_layers=layers, param_budget=budget)
            n = count_backbone_params(cfg, resolve_dims(cfg))
            assert abs(n - budget) <= 0.03 * budget, describe(cfg)


@pytest.mark.parametrize("width", [128, 256])
def test_explicit_widths(width):
    for arch in ARCHS:
        cfg = ModelConfig(arch=arch, d_model=width)
        assert resolve_dims(cfg).d_model == width
        assert "explicit d_model" in describe(cfg)
    with torch.device("meta"):
        model = build_model(ModelConfig(arch="mamba", d_model=width), "lm")
    assert model.backbone.embed.weight.shape == (16, width)
    assert model.dims.d_inner == 2 * width


def test_bad_configs_raise_config_error():
    with pytest.raises(ConfigError, match="model.d_model"):
        resolve_dims(ModelConfig(arch="transformer", d_model=100))  # not divisible by 8 heads
    with pytest.raises(ConfigError, match="model.d_model"):
        resolve_dims(ModelConfig(arch="transformer", d_model=24))  # head_dim 3 is odd
    with pytest.raises(ConfigError, match="head"):
        build_model(ModelConfig(arch="hyena", d_model=16), "seq2seq")


def test_lm_head_is_tied_and_counted_once():
    model = build_model(ModelConfig.for_arch("transformer", d_model=32, n_heads=4), "lm")
    assert model.head.proj.weight is model.backbone.embed.weight
    assert count_params(model) == count_params(model.backbone)


@pytest.mark.parametrize("arch", ARCHS)
def test_pretrained_backbone_transfers_to_a_fresh_cls_model(arch):
    small = dict(arch=arch, d_model=32, n_heads=4, hyena_filter_dim=8, d_state=4)
    torch.manual_seed(0)
    lm = build_model(ModelConfig.for_arch(**small), "lm")
    with torch.no_grad():  # make the "pretrained" weights differ from any fresh init
        for p in lm.backbone.parameters():
            p.add_(0.01 * torch.randn_like(p))
    exported = {k: v.clone() for k, v in lm.backbone.state_dict().items()}
    torch.manual_seed(1)
    cls = build_model(ModelConfig.for_arch(**small, n_classes=5), "cls")
    head_before = cls.head.proj.weight.clone()
    load_backbone(cls, exported)
    ids = torch.randint(6, 11, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(cls.backbone(ids), lm.backbone(ids))
    torch.testing.assert_close(cls.head.proj.weight, head_before)  # head untouched (fresh)
    # the full model's state_dict (keys prefixed "backbone.") is accepted too
    load_backbone(cls, {k: v for k, v in lm.state_dict().items() if k.startswith("backbone.")})
    # strict: another width or architecture is refused in one line
    other = build_model(ModelConfig.for_arch(**{**small, "d_model": 48}), "cls")
    with pytest.raises(ConfigError, match="init_checkpoint: backbone does not match") as e:
        load_backbone(other, exported)
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="missing"):
        load_backbone(cls, {k: v for k, v in exported.items() if "blocks.1." not in k})


def test_width_is_independent_of_head_and_classes():
    a = resolve_dims(ModelConfig(arch="mamba", n_classes=2, pooling="mean"))
    b = resolve_dims(ModelConfig(arch="mamba", n_classes=7, pooling="last", dropout=0.2))
    assert a == b
    cfg = dataclasses.replace(ModelConfig(arch="hyena"), n_classes=9)
    assert build_model(cfg, "cls").dims == build_model(ModelConfig(arch="hyena"), "lm").dims
