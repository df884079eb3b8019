"""CNN backbone: pre-norm residual blocks of [causal dilated convolution, MLP] (a causal CNN baseline).

A convolutional baseline in the spirit of the Genomic Benchmarks CNN (stacked convolutions over token
embeddings), but causal, so that it also pretrains as a causal LM; the block is the Transformer++ block
with the attention replaced by a convolution. Block i of n_layers, for input x (B, L, D):
  x ← x + Conv_i(RMSNorm(x));  x ← x + MLP(RMSNorm(x))   (MLP: SwiGLU | GELU, hidden d_inner)
  Conv_i: a dense (all channels to all channels) causal convolution, kernel K = cnn_kernel_size,
  dilation δ_i = cnn_dilation_base^i, no bias: y[b, t, :] = Σ_{j<K} W_j x[b, t - (K-1-j)·δ_i, :] with
  W_j (D, D) and x zero for positions < 0 (left padding only), so the output at t sees tokens ≤ t.
Receptive field 1 + (K-1)·Σ_i δ_i tokens (K=9, base 2, 2 layers: 25). Parameters per block
K·D² + (2 | 3)·D·d_inner + 2·D (linear in d_inner). Conv_i's weight is held as a bias-free nn.Linear over
the (channel, tap) window, (D, D·K), marked residual_out, so the shared GPT-2 init (layers.init_weights)
sets it; weight.view(D, D, K) is the F.conv1d weight.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from gdna.models.layers import MLP, Backbone, RMSNorm, default_hidden
from gdna.registry import ARCHITECTURES, Architecture


@dataclass(frozen=True)
class CNNSettings:
    cnn_kernel_size: int = 9  # taps of each causal convolution
    cnn_dilation_base: int = 2  # block i dilates by cnn_dilation_base**i (1: no dilation)
    mlp: str = "swiglu"  # swiglu | gelu (as in layers.MLP)


class CausalDilatedConv(nn.Module):
    """(B, L, D) → (B, L, D): dense causal convolution, kernel K, dilation δ, left zero padding (K-1)·δ."""

    def __init__(self, d_model: int, kernel_size: int, dilation: int):
        super().__init__()
        self.d_model, self.kernel_size, self.dilation = d_model, kernel_size, dilation
        self.taps = nn.Linear(d_model * kernel_size, d_model, bias=False)  # weight (D, D·K) = conv (D, D, K)
        self.taps.residual_out = True  # the last (only) linear map of the branch: scaled init

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, D) → (B, L, D)
        D, K, dil = self.d_model, self.kernel_size, self.dilation
        u = F.pad(x.transpose(1, 2), ((K - 1) * dil, 0))  # (B, D, (K-1)·δ + L), zeros on the left only
        y = F.conv1d(u, self.taps.weight.view(D, D, K), dilation=dil)  # (B, D, L)
        return y.transpose(1, 2)


class CNNBlock(nn.Module):
    def __init__(self, d_model: int, d_inner: int, kernel_size: int, dilation: int, mlp: str, dropout: float):
        super().__init__()
        self.norm1 = RMSNorm(d_model)
        self.conv = CausalDilatedConv(d_model, kernel_size, dilation)
        self.drop = nn.Dropout(dropout)
        self.norm2 = RMSNorm(d_model)
        self.mlp = MLP(d_model, d_inner, mlp, dropout)  # its w2 is residual_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, D) → (B, L, D)
        x = x + self.drop(self.conv(self.norm1(x)))
        return x + self.mlp(self.norm2(x))


def cnn_backbone(vocab_size: int, d_model: int, n_layers: int, d_inner: int, settings: CNNSettings,
                 dropout: float = 0.0) -> Backbone:
    s = settings
    blocks = [CNNBlock(d_model, d_inner, s.cnn_kernel_size, s.cnn_dilation_base ** i, s.mlp, dropout)
              for i in range(n_layers)]
    return Backbone(vocab_size, d_model, blocks, dropout, n_layers)


def _check(settings: CNNSettings, d_model: int | None) -> str | None:
    for key, low in (("cnn_kernel_size", 2), ("cnn_dilation_base", 1)):
        v = getattr(settings, key)
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            return f"model.{key}: must be an integer ≥ {low}, got {v!r}"
    if settings.mlp not in ("swiglu", "gelu"):
        return f"model.mlp: unknown mlp {settings.mlp!r} (choose from swiglu, gelu)"
    return None


ARCHITECTURES.register(Architecture(
    name="cnn", settings=CNNSettings, build=cnn_backbone,
    default_inner=lambda s, d: default_hidden(d, s.mlp),
    width_step=lambda s: 8,
    check=_check,
    describe=lambda s, dims: (f"kernel={s.cnn_kernel_size} dilation={s.cnn_dilation_base}^layer "
                              f"{s.mlp} hidden={dims.d_inner}"),
    quadratic_in_length=False,
))
