"""The channel-grouped Hyena operator (gdna/models/hyena.py) against the plain formulation it replaced.

`reference_operator` is the operator's original forward, kept here verbatim in spirit: one in_proj, a
transpose, the short conv over all channels, then the FFT long conv with the skip term added separately.
The fast forward must give the same outputs and the same parameter gradients (fp64: to round-off; fp32:
to fp32 tolerance), with one channel group and with many.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gdna.models import hyena, kernels
from gdna.models.hyena import HyenaBlock, HyenaOperator


def reference_filter(f: hyena.ImplicitFilter, L: int) -> torch.Tensor:
    """(channels, L): MLP(features of t) ⊙ exp(-|α|·t/ref), as the filter was first written."""
    z, t = f.features(L, f.decay.device)
    h = f.mlp(z.to(f.mlp[0].weight.dtype))  # (L, channels)
    h = h * torch.exp((-t * f.decay[None, :]).clamp(min=-60.0)).to(h.dtype)
    return h.transpose(0, 1)


def reference_operator(op: HyenaOperator, u: torch.Tensor, direct: bool = False) -> torch.Tensor:
    """The unoptimised HyenaOperator forward: (B, L, D) → (B, L, D). direct=True: O(L²) Toeplitz long conv."""
    B, L, D = u.shape
    z = op.in_proj(u).transpose(1, 2)  # (B, (order+1)·D, L)
    K = op.short_conv.weight.shape[-1]
    z = F.conv1d(F.pad(z, (K - 1, 0)), op.short_conv.weight, op.short_conv.bias, groups=z.shape[1])
    *x, v = z.split(D, dim=1)
    k = reference_filter(op.filter, L).view(op.order - 1, D, L)
    bias = op.filter_bias.view(op.order - 1, D)
    conv = kernels.direct_long_conv if direct else kernels.fft_long_conv
    for o, x_i in enumerate(reversed(x[1:])):
        v = op.dropout(v * x_i)
        v = conv(v, k[o], bias[o])
    y = (v * x[0]).transpose(1, 2)
    return op.out_proj(y)


def make_op(D=16, order=2, short_conv=3, dtype=torch.float64, seed=0) -> HyenaOperator:
    torch.manual_seed(seed)
    op = HyenaOperator(D, order=order, filter_dim=8, short_conv=short_conv).to(dtype)
    with torch.no_grad():  # non-zero biases everywhere, so every term is exercised
        for p in op.parameters():
            if p.dim() == 1:
                p.normal_()
    return op


def grads(op: HyenaOperator, out: torch.Tensor, w: torch.Tensor) -> dict[str, torch.Tensor]:
    names, params = zip(*op.named_parameters())
    return dict(zip(names, torch.autograd.grad((out * w).sum(), params)))


@pytest.mark.parametrize("order", [2, 3])
@pytest.mark.parametrize("group,chunk", [(None, None), (4, 1), (5, 2), (4, 3), (16, 10)])  # ragged last ones too
@pytest.mark.parametrize("short_conv", [2, 3, 4])
def test_fast_operator_matches_the_reference_fp64(order, group, chunk, short_conv, monkeypatch):
    if group is not None:
        monkeypatch.setattr(hyena, "channel_group", lambda B, D, L, device: group)
        monkeypatch.setattr(hyena, "position_chunk", lambda B, L, device: chunk)
    op = make_op(order=order, short_conv=short_conv)
    u = torch.randn(2, 37, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    w = torch.randn(2, 37, 16, dtype=torch.float64)
    out, ref, direct = op(u), reference_operator(op, u), reference_operator(op, u, direct=True)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out, direct, rtol=1e-10, atol=1e-10)
    g, g_ref = grads(op, out, w), grads(op, direct, w)
    assert g.keys() == g_ref.keys()
    for name in g:
        torch.testing.assert_close(g[name], g_ref[name], rtol=1e-9, atol=1e-9, msg=name)


@pytest.mark.parametrize("group", [None, 32])
def test_fast_operator_matches_the_reference_fp32(group, monkeypatch):
    if group is not None:
        monkeypatch.setattr(hyena, "channel_group", lambda B, D, L, device: group)
        monkeypatch.setattr(hyena, "position_chunk", lambda B, L, device: 64)
    op = make_op(D=64, dtype=torch.float32)
    u = torch.randn(1, 300, 64, generator=torch.Generator().manual_seed(2)).requires_grad_()
    w = torch.randn(1, 300, 64)
    out, ref = op(u), reference_operator(op, u)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    (gu,) = torch.autograd.grad((out * w).sum(), u)
    (gu_ref,) = torch.autograd.grad((ref * w).sum(), u)
    torch.testing.assert_close(gu, gu_ref, rtol=1e-4, atol=1e-4)
    g, g_ref = grads(op, op(u), w), grads(op, reference_operator(op, u), w)
    for name in g:
        torch.testing.assert_close(g[name], g_ref[name], rtol=1e-3, atol=1e-3, msg=name)


def test_parameter_names_and_shapes_are_unchanged():
    op = HyenaOperator(32)
    assert {n: tuple(p.shape) for n, p in op.named_parameters()} == {
        "in_proj.weight": (96, 32), "in_proj.bias": (96,), "short_conv.weight": (96, 1, 3), "short_conv.bias": (96,),
        "filter.mlp.0.weight": (64, 5), "filter.mlp.0.bias": (64,), "filter.mlp.1.freq": (64,),
        "filter.mlp.2.weight": (64, 64), "filter.mlp.2.bias": (64,), "filter.mlp.3.freq": (64,),
        "filter.mlp.4.weight": (64, 64), "filter.mlp.4.bias": (64,), "filter.mlp.5.freq": (64,),
        "filter.mlp.6.weight": (32, 64), "filter_bias": (32,), "out_proj.weight": (32, 32), "out_proj.bias": (32,)}


def test_filter_forward_is_unchanged():
    op = make_op()
    torch.testing.assert_close(op.filter(50, "cpu"), reference_filter(op.filter, 50), rtol=1e-12, atol=1e-12)


def test_block_matches_the_reference_block():
    torch.manual_seed(0)
    block = HyenaBlock(16, 40, "swiglu", 2, 8, 3, 0.0).double()
    x = torch.randn(2, 29, 16, dtype=torch.float64)
    h = x + reference_operator(block.mixer, block.norm1(x))
    ref = h + block.mlp(block.norm2(h))
    torch.testing.assert_close(block(x), ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("chunk", [None, 5, 7])  # one chunk; chunks that divide L; a ragged last chunk
def test_block_in_position_chunks_matches_the_reference_block(chunk, monkeypatch):
    if chunk is not None:
        monkeypatch.setattr(hyena, "position_chunk", lambda B, L, device: chunk)
        monkeypatch.setattr(hyena, "channel_group", lambda B, D, L, device: 6)
    torch.manual_seed(0)
    block = HyenaBlock(16, 40, "swiglu", 2, 8, 3, 0.0).double()
    x = torch.randn(2, 35, 16, dtype=torch.float64, requires_grad=True)
    h = x + reference_operator(block.mixer, block.norm1(x))
    ref = h + block.mlp(block.norm2(h))
    out = block(x)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    w = torch.randn_like(out)
    params = [x, *block.parameters()]
    # RMSNorm computes in fp32 even in an fp64 model: its weight gradient, summed over positions chunk by
    # chunk, matches to fp32 round-off only
    for g, g_ref in zip(torch.autograd.grad((out * w).sum(), params), torch.autograd.grad((ref * w).sum(), params)):
        torch.testing.assert_close(g, g_ref, rtol=1e-6, atol=1e-6)


def test_cpu_chunks_and_groups_only_split_long_sequences():
    assert hyena.position_chunk(1, 1024, "cpu") >= 1024 and hyena.channel_group(1, 256, 1024, "cpu") == 256
    assert hyena.position_chunk(1, 16384, "cpu") < 16384 and 8 <= hyena.channel_group(1, 256, 16384, "cpu") < 256
    assert hyena.position_chunk(4, 16384, "cuda") == 16384 and hyena.channel_group(4, 256, 16384, "cuda") == 256


def test_operator_chunks_join_to_the_output(monkeypatch):
    monkeypatch.setattr(hyena, "position_chunk", lambda B, L, device: 8)
    op = make_op()
    u = torch.randn(2, 30, 16, dtype=torch.float64)
    chunks = op.chunks(u)
    assert [c.shape[1] for c in chunks] == [8, 8, 8, 6]
    torch.testing.assert_close(torch.cat(chunks, dim=1), reference_operator(op, u), rtol=1e-10, atol=1e-10)
