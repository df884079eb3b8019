"""Sequence-mixing kernels: the optional CUDA packages (imported lazily, here only) and their pure-PyTorch twins.

Every public op picks its fast path only when the package imports AND the tensors are on CUDA (AND the
dtype is one the kernel supports); otherwise it runs the pure-PyTorch implementation below. Importing gdna
never needs flash_attn / mamba_ssm / causal_conv1d. The `*_reference` functions are slow, obviously-correct
versions used by the tests (and bench/kernels.py) to check the fast ones.

Layouts (the ones the CUDA packages use, so the dispatch is a plain call):
  attention:        q, k, v (B, H, L, hd)
  long conv:        u (B, D, L), k (D, L) filter over lags 0..L-1
  depthwise conv:   x (B, D, L), weight (D, K)
  selective scan:   u, delta, z (B, D, L); A (D, N); B, C (B, N, L); D, delta_bias (D,)
"""
from __future__ import annotations

import functools
import importlib
import math

import torch
import torch.nn.functional as F

# ---------------------------------------------------------------------------------------------
# Optional CUDA packages (lazy, cached)


@functools.lru_cache(maxsize=None)
def _optional(module: str, attr: str):
    """`module.attr` if the package imports (any failure → None: broken CUDA builds must not break gdna)."""
    try:
        return getattr(importlib.import_module(module), attr)
    except Exception:  # ImportError, OSError (missing .so), RuntimeError (CUDA mismatch), ...
        return None


def _flash_attn_func():
    return _optional("flash_attn", "flash_attn_func")


def _selective_scan_fn():
    return _optional("mamba_ssm.ops.selective_scan_interface", "selective_scan_fn")


def _causal_conv1d_fn():
    return _optional("causal_conv1d", "causal_conv1d_fn")


def has_flash_attn() -> bool:
    return _flash_attn_func() is not None


def has_mamba_ssm() -> bool:
    return _selective_scan_fn() is not None


def has_causal_conv1d() -> bool:
    return _causal_conv1d_fn() is not None


def available_kernels() -> dict[str, bool]:
    """Which optional CUDA kernels import here (for logs)."""
    return {"flash_attn": has_flash_attn(), "mamba_ssm": has_mamba_ssm(), "causal_conv1d": has_causal_conv1d()}


# ---------------------------------------------------------------------------------------------
# Causal attention


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0,
                     use_fast: bool = True) -> torch.Tensor:
    """Causal softmax attention, q/k/v (B, H, L, hd) → (B, H, L, hd); scale 1/sqrt(hd).

    flash_attn when importable, on CUDA, fp16/bf16 and hd ≤ 256; else PyTorch SDPA(is_causal=True).
    """
    if (use_fast and q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and q.shape[-1] <= 256
            and has_flash_attn()):
        out = _flash_attn_func()(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                 dropout_p=dropout_p, causal=True)  # (B, L, H, hd)
        return out.transpose(1, 2)
    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)


def attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Explicit softmax(q kᵀ/√hd + causal mask) v, (B, H, L, hd) → (B, H, L, hd)."""
    L = q.shape[-2]
    att = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])  # (B, H, L, L)
    future = torch.ones(L, L, dtype=torch.bool, device=q.device).triu(1)
    att = att.masked_fill(future, float("-inf")).softmax(dim=-1)
    return att @ v


# ---------------------------------------------------------------------------------------------
# Long convolution (Hyena)


def _fft_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def long_conv_spectrum(k: torch.Tensor, L: int, bias: torch.Tensor | None = None) -> torch.Tensor:
    """rfft of the causal filter k[..., :L] zero-padded to 2L, (D, L') → (D, L+1) complex (fp32 or fp64).

    A skip term bias·u[t] is a lag-0 tap, whose spectrum is the constant `bias`: it is added here, so the
    convolution needs no separate pass over u for it."""
    k_f = torch.fft.rfft(k[..., :L].to(_fft_dtype(k)), n=2 * L)  # (D, L+1)
    return k_f if bias is None else k_f + bias.to(k_f.real.dtype).unsqueeze(-1)


def fft_conv_with_spectrum(u: torch.Tensor, k_f: torch.Tensor) -> torch.Tensor:
    """Causal conv of u (B, D, L) with the filter whose long_conv_spectrum is k_f (D, L+1) → (B, D, L), u's dtype."""
    L = u.shape[-1]
    u_f = torch.fft.rfft(u.to(k_f.real.dtype), n=2 * L)  # (B, D, L+1); the zero padding is implicit
    return torch.fft.irfft(u_f * k_f, n=2 * L)[..., :L].to(u.dtype)  # a view of the first half when no cast


def fft_long_conv(u: torch.Tensor, k: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Causal long convolution y[t] = Σ_{s≤t} k[s]·u[t-s] (+ bias·u[t]) in O(L log L) by FFT.

    u (B, D, L), k (D, L') with L' ≥ L (lags beyond L are unused), bias (D,) → (B, D, L) in u's dtype.
    Zero-padding to 2L turns the FFT's circular convolution into a linear one, so nothing wraps
    around from the future. Computed in fp32 (or fp64 if the input is fp64).
    """
    k_f = long_conv_spectrum(k.to(_fft_dtype(u)), u.shape[-1], bias)
    return fft_conv_with_spectrum(u, k_f)


def direct_long_conv(u: torch.Tensor, k: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Reference for fft_long_conv: an explicit lower-triangular Toeplitz matrix T[t, s] = k[t-s], O(L²)."""
    L = u.shape[-1]
    t = torch.arange(L, device=u.device)
    lag = t[:, None] - t[None, :]  # (L, L)
    T = k[:, lag.clamp(min=0)] * (lag >= 0)  # (D, L, L)
    y = torch.einsum("dts,bds->bdt", T.to(u.dtype), u)
    if bias is not None:
        y = y + u * bias.unsqueeze(-1)
    return y


# ---------------------------------------------------------------------------------------------
# Causal depthwise conv1d (Mamba's short conv, Hyena's short filter)


def causal_depthwise_conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                            activation: str | None = None, use_fast: bool = True) -> torch.Tensor:
    """y[b, d, t] = Σ_j weight[d, j]·x[b, d, t-(K-1)+j] (+ bias), then optional SiLU. x (B, D, L), weight (D, K).

    causal_conv1d_fn when importable, on CUDA and 2 ≤ K ≤ 4 (its supported widths); else K
    multiply-adds of the shifted input (the causal left padding is implicit).
    """
    if activation not in (None, "silu"):
        raise ValueError(f"activation must be None or 'silu', got {activation!r}")
    K = weight.shape[-1]
    if use_fast and x.is_cuda and 2 <= K <= 4 and has_causal_conv1d():
        return _causal_conv1d_fn()(x.contiguous(), weight.contiguous(), bias, activation=activation)
    # K shifted multiply-adds: the same sum as F.conv1d(F.pad(x, (K-1, 0)), weight[:, None], bias, groups=D),
    # but without oneDNN's slow depthwise path (several times slower on CPU, worst on the transposed
    # activations the mixers produce), and without the padded copy: tap j reads x shifted right by
    # s = K-1-j, which is added in place into y[..., s:] (the first s outputs only see the zero padding)
    L = x.shape[-1]
    w = weight.unsqueeze(-1)  # (D, K, 1)
    y = x * w[:, K - 1]  # (B, D, L)
    if bias is not None:
        y += bias.unsqueeze(-1)  # (in place: ~2× faster on CPU than addcmul with a broadcast bias)
    for j in range(K - 1):
        s = K - 1 - j
        if s < L:
            y[..., s:].addcmul_(x[..., :L - s], w[:, j])
    return F.silu(y) if activation == "silu" else y


def causal_depthwise_conv1d_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                                      activation: str | None = None) -> torch.Tensor:
    """Direct loop over output positions and taps (reference for causal_depthwise_conv1d)."""
    B, D, L = x.shape
    K = weight.shape[-1]
    out = []
    for t in range(L):
        acc = x.new_zeros(B, D) if bias is None else bias.expand(B, D).clone()
        for j in range(K):
            s = t - (K - 1) + j
            if s >= 0:
                acc = acc + weight[:, j] * x[:, :, s]
        out.append(acc)
    y = torch.stack(out, dim=-1)
    return F.silu(y) if activation == "silu" else y


# ---------------------------------------------------------------------------------------------
# Selective scan (Mamba): the pure-PyTorch paths live in gdna/models/scan.py

from gdna.models.scan import auto_chunk, selective_scan_chunked, selective_scan_reference  # noqa: E402,F401


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   use_fast: bool = True, chunk_size: int | None = None):
    """Selective scan → y (B, D, L). mamba_ssm's CUDA selective_scan_fn when importable and on CUDA,
    else selective_scan_chunked. Arguments as in mamba_ssm (see the module docstring for shapes)."""
    if use_fast and u.is_cuda and has_mamba_ssm():
        return _selective_scan_fn()(u.contiguous(), delta.contiguous(), A.contiguous(), B.contiguous(),
                                    C.contiguous(), D, None if z is None else z.contiguous(),
                                    delta_bias, delta_softplus)
    return selective_scan_chunked(u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk_size=chunk_size)
