"""Backbones and heads (CPU, tiny widths): causality, padding invariance, shapes, gradients."""
from __future__ import annotations

import pytest
import torch

from gdna.config import ModelConfig
from gdna.data.tokenizer import PAD_ID, VOCAB_SIZE
from gdna.models import build_model
from gdna.registry import ARCHITECTURES

ARCHS = ARCHITECTURES.names()  # every registered architecture (a new one is tested without edits here)


def tiny(arch: str, **kw) -> ModelConfig:
    base = dict(arch=arch, d_model=32, n_heads=4, hyena_filter_dim=8, d_state=4, n_layers=2)
    base.update(kw)
    return ModelConfig.for_arch(**base)


def tokens(B: int, L: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(6, 11, (B, L), generator=torch.Generator().manual_seed(seed))  # A..N


@pytest.mark.parametrize("arch", ARCHS)
def test_backbone_is_strictly_causal(arch):
    torch.manual_seed(0)
    model = build_model(tiny(arch), "lm").double().eval()
    ids = tokens(2, 40)
    with torch.no_grad():
        h = model.backbone(ids)
        for t in (0, 7, 31, 39):
            ids2 = ids.clone()
            ids2[:, t] = 6 + (ids2[:, t] - 5) % 5  # another base at position t
            h2 = model.backbone(ids2)
            assert (h[:, :t] - h2[:, :t]).abs().max().item() <= 1e-6 if t else True, f"{arch}: position <{t} changed"
            assert (h[:, t] - h2[:, t]).abs().max().item() > 1e-4, f"{arch}: position {t} ignores its own token"
    # the strict check: earlier outputs are bit-for-bit identical up to fp64 round-off
    ids2 = ids.clone()
    ids2[:, 20] = 6 + (ids2[:, 20] - 5) % 5
    with torch.no_grad():
        assert (model.backbone(ids)[:, :20] - model.backbone(ids2)[:, :20]).abs().max().item() < 1e-12


@pytest.mark.parametrize("arch", ARCHS)
def test_backbone_is_causal_in_fp32(arch):
    torch.manual_seed(1)
    model = build_model(tiny(arch), "lm").eval()
    ids = tokens(2, 33, seed=3)
    ids2 = ids.clone()
    ids2[:, 17:] = tokens(2, 16, seed=4)
    with torch.no_grad():
        diff = (model.backbone(ids)[:, :17] - model.backbone(ids2)[:, :17]).abs().max().item()
    assert diff <= 1e-6


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_cls_logits_ignore_extra_right_padding(arch, pooling):
    torch.manual_seed(2)
    model = build_model(tiny(arch, pooling=pooling, n_classes=3), "cls").eval()
    ids = tokens(3, 25, seed=5)
    mask = torch.ones(3, 25, dtype=torch.bool)
    mask[1, 14:] = False
    mask[2, 20:] = False
    ids[~mask] = PAD_ID
    pad = 11
    ids_p = torch.cat([ids, torch.full((3, pad), PAD_ID)], dim=1)
    mask_p = torch.cat([mask, torch.zeros(3, pad, dtype=torch.bool)], dim=1)
    ids_g = ids_p.clone()
    ids_g[~mask_p] = tokens(3, 36, seed=6)[~mask_p]  # whatever sits under the pads must not matter either
    with torch.no_grad():
        ref = model(ids, mask)
        assert ref.shape == (3, 3)
        torch.testing.assert_close(model(ids_p, mask_p), ref, rtol=0, atol=1e-5)
        torch.testing.assert_close(model(ids_g, mask_p), ref, rtol=0, atol=1e-5)
        # a row alone, unpadded, gives the same logits as inside the padded batch
        torch.testing.assert_close(model(ids[1:2, :14], mask[1:2, :14]), ref[1:2], rtol=0, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_left_padding_is_moved_to_the_right(arch):
    """Left-padded (or gappy) masks are realigned inside the backbone: same logits as right padding."""
    torch.manual_seed(3)
    model = build_model(tiny(arch, pooling="last"), "cls").eval()
    ids = tokens(2, 12, seed=7)
    mask = torch.ones(2, 12, dtype=torch.bool)
    ids_l = torch.cat([torch.full((2, 5), PAD_ID), ids], dim=1)
    mask_l = torch.cat([torch.zeros(2, 5, dtype=torch.bool), mask], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(model(ids_l, mask_l), model(ids, mask), rtol=0, atol=1e-5)
        h_l = model.backbone(ids_l, mask_l)
        torch.testing.assert_close(h_l[:, 5:], model.backbone(ids, mask), rtol=0, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_shapes_and_every_parameter_gets_a_gradient(arch):
    torch.manual_seed(4)
    for head in ("lm", "cls"):
        model = build_model(tiny(arch, dropout=0.1), head).train()
        ids = tokens(2, 19)
        mask = torch.ones(2, 19, dtype=torch.bool)
        mask[0, 10:] = False
        out = model(ids, mask)
        assert out.shape == ((2, 19, VOCAB_SIZE) if head == "lm" else (2, 2))
        assert model.backbone(ids, mask).shape == (2, 19, 32)
        out.float().pow(2).mean().backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
        assert not missing, f"{arch}/{head}: no finite gradient for {missing}"


def test_gelu_mlp_and_single_token_sequences():
    for arch in ARCHS:
        model = build_model(tiny(arch, mlp="gelu"), "cls").eval()
        with torch.no_grad():
            out = model(tokens(2, 1), torch.ones(2, 1, dtype=torch.bool))
        assert out.shape == (2, 2) and torch.isfinite(out).all()


def test_mean_pooling_never_pools_pads():
    from gdna.models.heads import pool
    h = torch.arange(12, dtype=torch.float32).view(1, 4, 3).repeat(2, 1, 1)
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    torch.testing.assert_close(pool(h, mask, "mean"), torch.stack([h[0, :2].mean(0), h[1].mean(0)]))
    torch.testing.assert_close(pool(h, mask, "last"), torch.stack([h[0, 1], h[1, 3]]))
    torch.testing.assert_close(pool(h, None, "last"), h[:, -1])
