"""Pure-PyTorch kernels against their slow references (CPU): long conv, attention, depthwise conv, dispatch.

The selective-scan tests are in test_models_scan.py."""
from __future__ import annotations

import pytest
import torch

from gdna.models import kernels


def test_scan_dispatch_uses_pure_path_on_cpu(monkeypatch):
    """Even if mamba_ssm 'imports', CPU tensors never go to the CUDA kernel."""
    def boom(*a, **k):
        raise AssertionError("CUDA kernel called for CPU tensors")
    monkeypatch.setattr(kernels, "_selective_scan_fn", lambda: boom)
    monkeypatch.setattr(kernels, "has_mamba_ssm", lambda: True)
    monkeypatch.setattr(kernels, "_causal_conv1d_fn", lambda: boom)
    monkeypatch.setattr(kernels, "has_causal_conv1d", lambda: True)
    monkeypatch.setattr(kernels, "_flash_attn_func", lambda: boom)
    monkeypatch.setattr(kernels, "has_flash_attn", lambda: True)
    u, delta, B, C = (torch.randn(2, n, 37) for n in (3, 3, 4, 4))
    kernels.selective_scan(u, delta.abs(), -torch.rand(3, 4) - 0.1, B, C)
    kernels.causal_depthwise_conv1d(u, torch.randn(3, 4), activation="silu")
    q = torch.randn(1, 2, 5, 4, dtype=torch.bfloat16)
    kernels.causal_attention(q, q, q)


def test_optional_kernels_report_bools():
    avail = kernels.available_kernels()
    assert set(avail) == {"flash_attn", "mamba_ssm", "causal_conv1d"}
    assert all(isinstance(v, bool) for v in avail.values())


@pytest.mark.parametrize("L", [1, 2, 17, 64])
def test_fft_long_conv_matches_direct(L):
    g = torch.Generator().manual_seed(L)
    u = torch.randn(2, 5, L, generator=g, dtype=torch.float64)
    k = torch.randn(5, L, generator=g, dtype=torch.float64)
    bias = torch.randn(5, generator=g, dtype=torch.float64)
    torch.testing.assert_close(kernels.fft_long_conv(u, k, bias), kernels.direct_long_conv(u, k, bias),
                               rtol=1e-10, atol=1e-10)
    out32 = kernels.fft_long_conv(u.float(), k.float())
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32.double(), kernels.direct_long_conv(u, k), rtol=1e-4, atol=1e-4)


def test_fft_long_conv_is_causal_and_uses_only_first_L_lags():
    u = torch.randn(1, 3, 32, dtype=torch.float64)
    k = torch.randn(3, 48, dtype=torch.float64)  # longer filter: lags ≥ L can never matter
    y = kernels.fft_long_conv(u, k)
    u2 = u.clone()
    u2[..., 20:] += 1.0
    y2 = kernels.fft_long_conv(u2, k)
    assert (y[..., :20] - y2[..., :20]).abs().max() < 1e-12
    assert (y[..., 20:] - y2[..., 20:]).abs().max() > 1e-3


def test_fft_long_conv_gradients_match_direct():
    u = torch.randn(2, 3, 19, dtype=torch.float64, requires_grad=True)
    k = torch.randn(3, 19, dtype=torch.float64, requires_grad=True)
    ga = torch.autograd.grad(kernels.fft_long_conv(u, k).pow(2).sum(), (u, k))
    gb = torch.autograd.grad(kernels.direct_long_conv(u, k).pow(2).sum(), (u, k))
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_sdpa_matches_explicit_softmax_attention(dtype, tol):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 11, 8, generator=g, dtype=dtype) for _ in range(3))
    torch.testing.assert_close(kernels.causal_attention(q, k, v), kernels.attention_reference(q, k, v),
                               rtol=tol, atol=tol)


@pytest.mark.parametrize("K", [1, 3, 4])
@pytest.mark.parametrize("activation", [None, "silu"])
def test_causal_depthwise_conv_matches_loop(K, activation):
    g = torch.Generator().manual_seed(K)
    x = torch.randn(2, 5, 13, generator=g, dtype=torch.float64)
    w = torch.randn(5, K, generator=g, dtype=torch.float64)
    b = torch.randn(5, generator=g, dtype=torch.float64)
    for bias in (b, None):
        torch.testing.assert_close(kernels.causal_depthwise_conv1d(x, w, bias, activation),
                                   kernels.causal_depthwise_conv1d_reference(x, w, bias, activation),
                                   rtol=1e-12, atol=1e-12)


def test_depthwise_conv_rejects_unknown_activation():
    with pytest.raises(ValueError):
        kernels.causal_depthwise_conv1d(torch.zeros(1, 2, 3), torch.zeros(2, 2), activation="relu")
