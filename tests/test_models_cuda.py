"""GPU-only: the optional CUDA kernels against the pure-PyTorch paths (skipped without CUDA / the package)."""
from __future__ import annotations

import pytest
import torch

from gdna.config import ModelConfig
from gdna.models import build_model, kernels
from gdna.registry import ARCHITECTURES

CUDA = torch.cuda.is_available()
needs_flash = pytest.mark.skipif(not (CUDA and kernels.has_flash_attn()),
                                 reason="needs a CUDA GPU and the flash_attn package (pip install flash-attn)")
needs_mamba = pytest.mark.skipif(not (CUDA and kernels.has_mamba_ssm()),
                                 reason="needs a CUDA GPU and the mamba_ssm package (pip install mamba-ssm)")
needs_conv = pytest.mark.skipif(not (CUDA and kernels.has_causal_conv1d()),
                                reason="needs a CUDA GPU and the causal_conv1d package (pip install causal-conv1d)")
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")

pytestmark = pytest.mark.gpu


@needs_flash
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_flash_attn_matches_sdpa(dtype):
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(2, 8, 300, 32, device="cuda", dtype=dtype, generator=g) for _ in range(3))
    fast = kernels.causal_attention(q, k, v)
    slow = kernels.causal_attention(q.float(), k.float(), v.float(), use_fast=False)
    torch.testing.assert_close(fast.float(), slow, rtol=2e-2, atol=2e-2)


@needs_mamba
def test_mamba_ssm_selective_scan_matches_chunked():
    g = torch.Generator(device="cuda").manual_seed(0)
    Bsz, D, L, N = 2, 64, 1000, 16
    u = torch.randn(Bsz, D, L, device="cuda", generator=g, requires_grad=True)
    delta = (0.5 * torch.randn(Bsz, D, L, device="cuda", generator=g)).requires_grad_()
    A = (-torch.rand(D, N, device="cuda", generator=g) * 4 - 0.1).requires_grad_()
    B = torch.randn(Bsz, N, L, device="cuda", generator=g, requires_grad=True)
    C = torch.randn(Bsz, N, L, device="cuda", generator=g, requires_grad=True)
    Dv = torch.randn(D, device="cuda", generator=g, requires_grad=True)
    z = torch.randn(Bsz, D, L, device="cuda", generator=g, requires_grad=True)
    bias = (0.5 * torch.randn(D, device="cuda", generator=g)).requires_grad_()
    xs = (u, delta, A, B, C, Dv, z, bias)
    fast = kernels.selective_scan(*xs, delta_softplus=True)
    slow = kernels.selective_scan(*xs, delta_softplus=True, use_fast=False)
    torch.testing.assert_close(fast, slow, rtol=1e-3, atol=1e-3)
    w = torch.randn_like(fast)
    g_fast = torch.autograd.grad((fast * w).sum(), xs)
    g_slow = torch.autograd.grad((slow * w).sum(), xs)
    for name, a, b in zip("u delta A B C D z delta_bias".split(), g_fast, g_slow):
        torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-2, msg=lambda m, name=name: f"grad {name}: {m}")


@needs_conv
@pytest.mark.parametrize("K", [2, 3, 4])
def test_causal_conv1d_matches_pure_conv(K):
    g = torch.Generator(device="cuda").manual_seed(K)
    x = torch.randn(2, 64, 257, device="cuda", generator=g)
    w = torch.randn(64, K, device="cuda", generator=g)
    b = torch.randn(64, device="cuda", generator=g)
    for act in (None, "silu"):
        fast = kernels.causal_depthwise_conv1d(x, w, b, act)
        slow = kernels.causal_depthwise_conv1d(x, w, b, act, use_fast=False)
        torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-4)


@needs_cuda
@pytest.mark.parametrize("arch", ARCHITECTURES.names())
def test_models_run_on_cuda_like_on_cpu(arch):
    """Whatever kernels are installed, a CUDA forward agrees with the CPU one (fp32)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch=arch, d_model=64), "cls").eval()
    ids = torch.randint(6, 11, (2, 200))
    mask = torch.ones(2, 200, dtype=torch.bool)
    mask[1, 120:] = False
    with torch.no_grad():
        cpu = model(ids, mask)
        gpu = model.cuda()(ids.cuda(), mask.cuda()).cpu()
    torch.testing.assert_close(gpu, cpu, rtol=1e-3, atol=1e-3)
