"""Pure-PyTorch selective scan (gdna.models.scan): the chunked scan against its per-step reference (CPU)."""
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


def test_chunked_scan_under_autocast_stays_fp32():
    u, delta, A, B, C, Dv, z, bias = _scan_inputs(torch.float32, L=20, requires_grad=True)
    ref = kernels.selective_scan_reference(u, delta, A, B, C, Dv, z, bias, delta_softplus=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = kernels.selective_scan_chunked(u, delta, A, B, C, Dv, z, bias, delta_softplus=True, chunk_size=8)
        out.sum().backward()
    assert out.dtype == torch.float32 and u.grad is not None and u.grad.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
