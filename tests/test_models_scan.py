"""Pure-PyTorch selective scan (gdna.models.scan): the chunked scan against its per-step reference (CPU)."""
from __future__ import annotations

import pytest
import torch

from gdna.models import kernels, scan


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


def _grads_vs_reference(xs_fn, dtype, rtol, atol, **kw):
    """Chunked vs per-step reference: output and the gradients of all eight inputs (weighted sum loss)."""
    xs = xs_fn(dtype, requires_grad=True)
    out = scan.selective_scan_chunked(*xs, delta_softplus=True, **kw)
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
    g_fast = torch.autograd.grad((out * w).sum(), xs)
    ys = xs_fn(dtype, requires_grad=True)
    ref = scan.selective_scan_reference(*ys, delta_softplus=True)
    torch.testing.assert_close(out, ref, rtol=rtol, atol=atol)
    for name, a, b in zip(["u", "delta", "A", "B", "C", "D", "z", "delta_bias"], g_fast,
                          torch.autograd.grad((ref * w).sum(), ys)):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol, msg=lambda m, name=name: f"grad {name}: {m}")


@pytest.mark.parametrize("L,chunk", [(45, 8), (37, 1), (50, 3), (64, 4), (5, 8), (1, None)])
@pytest.mark.parametrize("dtype,rtol,atol", [(torch.float64, 1e-10, 1e-12), (torch.float32, 1e-5, 1e-5)])
def test_chunked_scan_over_many_super_blocks(monkeypatch, L, chunk, dtype, rtol, atol):
    """Tiny super-blocks (one or two chunks each), so states and adjoints cross many super-block edges;
    odd lengths leave a padded tail."""
    monkeypatch.setattr(scan, "_BLOCK_BYTES", 2 * 4 * 3 * 4 * 8 * 2)
    _grads_vs_reference(lambda dt, requires_grad: _scan_inputs(dt, L=L, requires_grad=requires_grad),
                        dtype, rtol, atol, chunk_size=chunk)


@pytest.mark.parametrize("which", [0, 2, 4])  # u, A, C
def test_chunked_scan_with_one_input_requiring_grad(monkeypatch, which):
    """The states entering the super-blocks are kept only when some input needs a gradient: a forward
    without one gives the same output, and a gradient for any one input alone still matches the reference."""
    monkeypatch.setattr(scan, "_BLOCK_BYTES", 2 * 4 * 3 * 4 * 8 * 2)
    xs = list(_scan_inputs(torch.float64, L=45)[:5])
    plain = scan.selective_scan_chunked(*xs, delta_softplus=True, chunk_size=4)
    xs[which].requires_grad_(True)
    out = scan.selective_scan_chunked(*xs, delta_softplus=True, chunk_size=4)
    torch.testing.assert_close(out, plain, rtol=0, atol=0)
    w = torch.randn_like(out)
    (g,) = torch.autograd.grad((out * w).sum(), xs[which])
    (r,) = torch.autograd.grad((scan.selective_scan_reference(*xs, delta_softplus=True) * w).sum(), xs[which])
    torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-12)


def test_chunked_scan_gradcheck_fp64():
    u, delta, A, B, C, Dv, z, bias = _scan_inputs(torch.float64, Bsz=1, D=2, L=7, N=3, requires_grad=True)
    fn = lambda u, delta, A, B, C: scan.selective_scan_chunked(u, delta, A, B, C, delta_softplus=True, chunk_size=2)
    assert torch.autograd.gradcheck(fn, (u, delta, A, B, C))


def test_chunked_scan_extreme_delta_matches_reference():
    """Δ·|A| up to ~1e6: decays underflow to exactly 0 in both paths; outputs and gradients stay finite and agree.

    Inputs ΔuB ~ 1e4 make the gradients sums of large terms with cancellation, so the tolerance is 1e-5
    relative to each tensor's largest entry (both fp32 paths are ~1e-7 of it from an fp64 reference)."""
    u, delta, A, B, C, *_ = _scan_inputs(torch.float32, L=40, D=8, N=16)
    delta, A = delta.abs() * 1e4, A * 100
    xs = [t.clone().requires_grad_() for t in (u, delta, A, B, C)]
    ys = [t.clone().requires_grad_() for t in (u, delta, A, B, C)]
    out = scan.selective_scan_chunked(*xs, chunk_size=8)
    ref = scan.selective_scan_reference(*ys)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(torch.autograd.grad(out.sum(), xs), torch.autograd.grad(ref.sum(), ys)):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * b.abs().max().item())


def test_chunked_scan_scratch_reuse_and_strided_inputs():
    """Scratch buffers are reused across calls of growing/shrinking sizes without touching earlier outputs;
    B, C may be transposed views (as the Mamba block passes them)."""
    big = _scan_inputs(torch.float32, L=60, D=5, N=6)
    small = _scan_inputs(torch.float32, L=9)
    out_big = scan.selective_scan_chunked(*big, delta_softplus=True)
    kept = out_big.clone()
    out_small = scan.selective_scan_chunked(*small, delta_softplus=True)
    torch.testing.assert_close(out_big, kept, rtol=0, atol=0)
    torch.testing.assert_close(out_small, scan.selective_scan_reference(*small, delta_softplus=True),
                               rtol=1e-5, atol=1e-5)
    u, delta, A, B, C, *_ = big
    Bt, Ct = B.transpose(1, 2).contiguous().transpose(1, 2), C.transpose(1, 2).contiguous().transpose(1, 2)
    assert not Bt.is_contiguous()
    torch.testing.assert_close(scan.selective_scan_chunked(u, delta.abs(), A, Bt, Ct),
                               scan.selective_scan_reference(u, delta.abs(), A, B, C), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_chunked_scan_half_inputs_computed_in_fp32(dtype):
    xs = _scan_inputs(torch.float32, L=30)
    out = scan.selective_scan_chunked(*(t.to(dtype) for t in xs), delta_softplus=True)
    ref = scan.selective_scan_reference(*(t.to(dtype).float() for t in xs), delta_softplus=True)
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), ref.to(dtype).float(), rtol=1e-2, atol=1e-2)


def test_auto_chunk_follows_the_state_size():
    """8 chunks side by side for the bench's 2·16·256 state (T = 16, super-block of 128 positions); a state
    big enough on its own gets one chunk per super-block (a plain blocked scan); L caps T."""
    assert scan.auto_chunk(1024, 2 * 16 * 256) == 16
    assert scan._blocking(1024, 16, 2 * 16 * 256, 4) == (8, 128, 1024)
    T = scan.auto_chunk(1024, 8 * 16 * 1536)
    assert scan._blocking(1024, T, 8 * 16 * 1536, 4)[0] == 1
    assert scan.auto_chunk(3, 24) == 3


def test_chunked_scan_in_and_out_of_inference_mode():
    """The reused scratch buffers are normal tensors: inference-mode calls and training calls can alternate."""
    scan._scratch_cache.__dict__.clear()  # buffers (and the plan's views) first made inside inference mode
    scan._plan_cache.__dict__.clear()
    xs = _scan_inputs(torch.float32, L=30, requires_grad=True)
    with torch.inference_mode():
        a = scan.selective_scan_chunked(*(x.detach() for x in xs), delta_softplus=True)
    scan.selective_scan_chunked(*xs, delta_softplus=True).sum().backward()
    with torch.inference_mode():
        b = scan.selective_scan_chunked(*(x.detach() for x in xs), delta_softplus=True)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert xs[0].grad is not None


def test_chunked_scan_follows_a_channels_last_layout():
    """The Mamba mixer's activations are (B, D, L) views of (B, L, D) memory: the output and the gradients
    come back in the layout of the input they belong to, with the same values as for contiguous inputs."""
    xs = _scan_inputs(torch.float64, L=41, requires_grad=True)
    u, delta, A, B, C, Dv, z, bias = xs
    cl = [t.detach().transpose(1, 2).contiguous().transpose(1, 2).requires_grad_() if t.dim() == 3 else
          t.detach().clone().requires_grad_() for t in xs]
    assert scan._channels_last(cl[0]) and not scan._channels_last(u)
    w = torch.randn(u.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    out = scan.selective_scan_chunked(*xs[:7], bias, delta_softplus=True, chunk_size=4)
    out_cl = scan.selective_scan_chunked(*cl[:7], cl[7], delta_softplus=True, chunk_size=4)
    assert out.is_contiguous() and scan._channels_last(out_cl)
    torch.testing.assert_close(out_cl, out, rtol=1e-12, atol=1e-12)
    grads = torch.autograd.grad((out * w).sum(), xs)
    grads_cl = torch.autograd.grad((out_cl * w).sum(), cl)
    for name, g, g_cl, x in zip(["u", "delta", "A", "B", "C", "D", "z", "bias"], grads, grads_cl, cl):
        torch.testing.assert_close(g_cl, g, rtol=1e-10, atol=1e-12, msg=lambda m, name=name: f"grad {name}: {m}")
    for g_cl in grads_cl[3:5]:  # B, C: straight from the scan's backward (u, Δ also pass autograd's sums)
        assert scan._channels_last(g_cl)
