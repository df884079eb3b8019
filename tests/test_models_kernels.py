"""Pure-PyTorch kernels against their slow references (CPU): scan, long conv, attention, depthwise conv."""
from __future__ import annotations

import pytest
import torch

from gdna.models import kernels


def _scan_inputs(dtype, Bsz=2, D=3, L=37, N=4, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(Bsz, D, L, generator=g, dtype=dtype)
    delta = torch.randn(Bsz, D, L, generator=g, dtype=dtype) * 0.5
    A = -torch.rand(D, N, generator=g, dtype=dtype) * 4 - 0.1  # negative, as -exp(A_log)
    B = torch.randn(Bsz, N, L, generator=g, dtype=dtype)
    C = torch.randn(Bsz, N, L, generator=g, dtype=dtype)
    Dv = torch.randn(D, generator=g, dtype=dtype)
    z = torch.randn(Bsz, D, L, generator=g, dtype=dtype)
    bias = torch.randn(D, generator=g, dtype=dtype) * 0.5
    ts = [u, delta, A, B, C, Dv, z, bias]
    return [t.requires_grad_(requires_grad) for t in ts]


@pytest.mark.parametrize("chunk", [None, 1, 4, 8, 64])
def test_chunked_scan_matches_reference_fp64(chunk):
    u, delta, A, B, C, Dv, z, bias = _scan_inputs(torch.float64)
    ref = kernels.selective_scan_reference(u, delta, A, B, C, Dv, z, bias, delta_softplus=True)
    out = kernels.selective_scan_chunked(u, delta, A, B, C, Dv, z, bias, delta_softplus=True, chunk_size=chunk)
    assert out.dtype == torch.float64 and out.shape == u.shape
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


def test_chunked_scan_optional_terms_fp64():
    """Without D, z, delta_bias, softplus (Δ used as given, must then be ≥ 0)."""
    u, delta, A, B, C, *_ = _scan_inputs(torch.float64, L=50)
    delta = delta.abs()
    ref = kernels.selective_scan_reference(u, delta, A, B, C)
    out = kernels.selective_scan_chunked(u, delta, A, B, C, chunk_size=16)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype,rtol,atol", [(torch.float64, 1e-10, 1e-12), (torch.float32, 1e-5, 1e-5)])
def test_chunked_scan_gradients_match_reference(dtype, rtol, atol):
    names = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias"]
    xs = _scan_inputs(dtype, L=45, requires_grad=True)
    out = kernels.selective_scan_chunked(*xs[:6], xs[6], xs[7], delta_softplus=True, chunk_size=8)
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
    g_fast = torch.autograd.grad((out * w).sum(), xs)
    ys = _scan_inputs(dtype, L=45, requires_grad=True)
    ref = kernels.selective_scan_reference(*ys[:6], ys[6], ys[7], delta_softplus=True)
    torch.testing.assert_close(out, ref, rtol=rtol, atol=atol)
    g_ref = torch.autograd.grad((ref * w).sum(), ys)
    for name, a, b in zip(names, g_fast, g_ref):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol, msg=lambda m, name=name: f"grad {name}: {m}")


def test_chunked_scan_fp32_forward_and_stability():
    """fp32 against the fp64 reference; large Δ·|A| (decays underflow to 0) stays finite."""
    u, delta, A, B, C, Dv, z, bias = _scan_inputs(torch.float64, L=200, D=8, N=16)
    ref = kernels.selective_scan_reference(u, delta, A, B, C, Dv, z, bias, delta_softplus=True)
    out = kernels.selective_scan_chunked(*(t.float() for t in (u, delta, A, B, C, Dv, z, bias)), delta_softplus=True)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
    big = kernels.selective_scan_chunked(u.float(), delta.float().abs() * 1e4, A.float() * 100, B.float(), C.float(),
                                         chunk_size=16)
    assert torch.isfinite(big).all()


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
    u, delta, A, B, C, *_ = _scan_inputs(torch.float32)
    kernels.selective_scan(u, delta.abs(), A, B, C)
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


def test_chunked_scan_under_autocast_stays_fp32():
    u, delta, A, B, C, Dv, z, bias = _scan_inputs(torch.float32, L=20, requires_grad=True)
    ref = kernels.selective_scan_reference(u, delta, A, B, C, Dv, z, bias, delta_softplus=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = kernels.selective_scan_chunked(u, delta, A, B, C, Dv, z, bias, delta_softplus=True, chunk_size=8)
        out.sum().backward()
    assert out.dtype == torch.float32 and u.grad is not None and u.grad.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
