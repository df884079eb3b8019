"""Transformer++ backbone (nanoGPT layout): pre-norm RMSNorm blocks, rotary embeddings, QK-norm, SwiGLU.

Strictly causal. Padding must be on the right (gdna.data pads on the right; other layouts are moved
there by `right_align` in the backbone): then causal attention never lets a real token see a pad, and
no attention mask beyond the causal one is needed (so SDPA / flash-attn take their `is_causal` path).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from gdna.models import kernels
from gdna.models.layers import MLP, MLP_KINDS, Backbone, RMSNorm, default_hidden
from gdna.registry import ARCHITECTURES, Architecture


@dataclass(frozen=True)
class TransformerSettings:
    n_heads: int = 8
    mlp: str = "swiglu"  # swiglu | gelu


class Rotary(nn.Module):
    """Rotary position embedding (rotate-half form), cos/sin cached per (length, device, dtype)."""

    def __init__(self, head_dim: int, base: float = 10000.0):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary embeddings need an even head_dim, got {head_dim}")
        self.head_dim, self.base = head_dim, base
        self._cache: tuple | None = None

    def cos_sin(self, L: int, device, dtype):
        key = (L, device, dtype)
        if self._cache is None or self._cache[0] != key:
            inv_freq = 1.0 / (self.base ** (torch.arange(0, self.head_dim, 2, device=device).float() / self.head_dim))
            freqs = torch.outer(torch.arange(L, device=device).float(), inv_freq)  # (L, hd/2)
            emb = torch.cat([freqs, freqs], dim=-1)  # (L, hd)
            self._cache = (key, emb.cos().to(dtype), emb.sin().to(dtype))
        return self._cache[1], self._cache[2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, L, hd)
        cos, sin = self.cos_sin(x.shape[-2], x.device, x.dtype)
        x1, x2 = x.chunk(2, dim=-1)
        return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.proj = nn.Linear(d_model, d_model, bias=False)
        self.proj.residual_out = True
        self.q_norm = RMSNorm(self.head_dim)  # QK-norm: per head, over head_dim
        self.k_norm = RMSNorm(self.head_dim)
        self.rotary = Rotary(self.head_dim)
        self.attn_dropout = dropout
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # 3×(B, H, L, hd)
        q, k = self.rotary(self.q_norm(q)), self.rotary(self.k_norm(k))
        y = kernels.causal_attention(q, k, v, dropout_p=self.attn_dropout if self.training else 0.0)  # (B, H, L, hd)
        y = y.transpose(1, 2).reshape(B, L, D)
        return self.resid_dropout(self.proj(y))


class TransformerBlock(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_hidden: int, mlp: str, dropout: float):
        super().__init__()
        self.norm1 = RMSNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_heads, dropout)
        self.norm2 = RMSNorm(d_model)
        self.mlp = MLP(d_model, d_hidden, mlp, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, D)
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def transformer_backbone(vocab_size: int, d_model: int, n_layers: int, n_heads: int, d_hidden: int,
                         mlp: str = "swiglu", dropout: float = 0.0) -> Backbone:
    if (d_model // max(n_heads, 1)) % 2 or d_model % n_heads:
        raise ValueError(f"transformer d_model={d_model} needs d_model % n_heads == 0 and an even head_dim")
    blocks = [TransformerBlock(d_model, n_heads, d_hidden, mlp, dropout) for _ in range(n_layers)]
    return Backbone(vocab_size, d_model, blocks, dropout, n_layers)


def _check(s: TransformerSettings, d_model: int | None) -> str | None:
    if s.n_heads < 1:
        return f"model.n_heads: must be ≥ 1, got {s.n_heads}"
    if s.mlp not in MLP_KINDS:
        return f"model.mlp: unknown mlp {s.mlp!r} (choose from {', '.join(MLP_KINDS)})"
    if d_model is not None and d_model % s.n_heads:
        return f"model.d_model: {d_model} is not divisible by n_heads={s.n_heads}"
    if d_model is not None and (d_model // s.n_heads) % 2:
        return f"model.d_model: head_dim {d_model // s.n_heads} must be even for rotary embeddings"
    return None


ARCHITECTURES.register(Architecture(
    name="transformer", settings=TransformerSettings,
    build=lambda vocab, d, n_layers, inner, s, dropout: transformer_backbone(vocab, d, n_layers, s.n_heads, inner,
                                                                             s.mlp, dropout),
    default_inner=lambda s, d: default_hidden(d, s.mlp),
    width_step=lambda s: math.lcm(8, 2 * s.n_heads),  # heads divide d_model and head_dim is even (RoPE)
    check=_check,
    describe=lambda s, dims: f"heads={s.n_heads} {s.mlp} hidden={dims.d_inner}",
    quadratic_in_length=True,
))
