"""Building blocks shared by the backbones: RMSNorm, the MLP (SwiGLU | GELU), weight init, padding helpers."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    """x / rms(x) · weight over the last dim, computed in fp32."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (xf * self.weight.float()).to(x.dtype)


MLP_KINDS = ("swiglu", "gelu")


def default_hidden(d_model: int, mlp: str) -> int:
    """MLP hidden width: 8/3·d for SwiGLU (three matrices), 4·d for GELU (two), rounded up to a multiple of 8."""
    h = 8 * d_model / 3 if mlp == "swiglu" else 4 * d_model
    return int(8 * math.ceil(h / 8))


class MLP(nn.Module):
    """SwiGLU: w2(SiLU(w1 x) ⊙ w3 x); GELU: w2(GELU(w1 x)). No biases."""

    def __init__(self, d_model: int, hidden: int, kind: str = "swiglu", dropout: float = 0.0):
        super().__init__()
        if kind not in MLP_KINDS:
            raise ValueError(f"mlp must be one of {MLP_KINDS}, got {kind!r}")
        self.kind = kind
        self.w1 = nn.Linear(d_model, hidden, bias=False)
        self.w3 = nn.Linear(d_model, hidden, bias=False) if kind == "swiglu" else None
        self.w2 = nn.Linear(hidden, d_model, bias=False)
        self.w2.residual_out = True  # scaled init (see init_weights)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, D) → (B, L, D)
        h = F.silu(self.w1(x)) * self.w3(x) if self.kind == "swiglu" else F.gelu(self.w1(x))
        return self.dropout(self.w2(h))


def init_weights(module: nn.Module, n_layers: int) -> None:
    """nanoGPT/GPT-2 init: N(0, 0.02) for Linear and Embedding, zero biases, residual output projections
    (marked `residual_out`) with std 0.02/√(2·n_layers). Modules with their own init run theirs after."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            std = 0.02 / math.sqrt(2 * n_layers) if getattr(m, "residual_out", False) else 0.02
            nn.init.normal_(m.weight, mean=0.0, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
    for m in module.modules():
        if m is not module and hasattr(m, "reset_special_parameters"):
            m.reset_special_parameters()


def right_align(ids: torch.Tensor, mask: torch.Tensor | None):
    """Make every row right-padded (real tokens first, in order): the backbones are causal, so with right
    padding no real token ever sees a pad. Returns (ids, mask, perm) with perm None when the batch is
    already right-padded (the usual case: gdna.data pads on the right), else the per-row gather index
    that was applied (undo with `restore_order`)."""
    if mask is None:
        return ids, mask, None
    mask = mask.to(torch.bool)
    if not (mask[:, 1:] & ~mask[:, :-1]).any():  # no pad is followed by a real token
        return ids, mask, None
    perm = torch.sort((~mask).to(torch.int8), dim=1, stable=True).indices  # real first, order kept
    return ids.gather(1, perm), mask.gather(1, perm), perm


def restore_order(h: torch.Tensor, perm: torch.Tensor | None) -> torch.Tensor:
    """Inverse of right_align on hidden states h (B, L, D)."""
    if perm is None:
        return h
    out = torch.empty_like(h)
    out.scatter_(1, perm.unsqueeze(-1).expand_as(h), h)
    return out


class Backbone(nn.Module):
    """Token embedding → n_layers blocks → final RMSNorm. Shared by every architecture.

    forward(ids (B, L) int64, mask (B, L) bool | None, True = real token) → hidden states (B, L, D).
    """

    def __init__(self, vocab_size: int, d_model: int, blocks: list[nn.Module], dropout: float, n_layers: int):
        super().__init__()
        self.d_model = d_model
        self.embed = nn.Embedding(vocab_size, d_model)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(blocks)
        self.norm_f = RMSNorm(d_model)  # the final norm before any head
        init_weights(self, n_layers)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        ids, _, perm = right_align(ids, mask)
        x = self.drop(self.embed(ids))  # (B, L, D)
        for block in self.blocks:
            x = block(x)
        return restore_order(self.norm_f(x), perm)
