"""Mamba backbone: pre-norm residual blocks of the Mamba (selective SSM) mixer (Gu & Dao 2023).

Mixer, for input x (B, L, D), E = d_inner (expand·D):
  in_proj → (x, z) each (B, E, L); x ← SiLU(causal depthwise conv1d(x), kernel d_conv);
  Δ = softplus(dt_proj(x_proj_dt(x)) + dt_bias) with a dt_rank = ⌈D/16⌉ low-rank projection; B_t, C_t
  (B, N, L) from x_proj; A = -exp(A_log) (D_inner, N), S4D-real init A[:, n] = -(n+1);
  y = selective_scan(x, Δ, A, B, C, D) ⊙ SiLU(z); out_proj.
The scan / conv use mamba_ssm / causal_conv1d on CUDA when installed (gdna.models.kernels), else the
pure-PyTorch chunked scan and F.conv1d.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from gdna.models import kernels
from gdna.models.layers import Backbone, RMSNorm
from gdna.registry import ARCHITECTURES, Architecture, below_one


@dataclass(frozen=True)
class MambaSettings:
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2  # d_inner = expand · d_model before the budget solver adjusts it


class MambaMixer(nn.Module):
    def __init__(self, d_model: int, d_inner: int, d_state: int = 16, d_conv: int = 4,
                 dt_min: float = 1e-3, dt_max: float = 1e-1, dt_init_floor: float = 1e-4):
        super().__init__()
        self.d_inner, self.d_state = d_inner, d_state
        self.dt_rank = math.ceil(d_model / 16)
        self.dt_min, self.dt_max, self.dt_init_floor = dt_min, dt_max, dt_init_floor
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False)
        self.conv_weight = nn.Parameter(torch.empty(d_inner, d_conv))
        self.conv_bias = nn.Parameter(torch.empty(d_inner))
        self.x_proj = nn.Linear(d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, d_inner, bias=True)
        self.A_log = nn.Parameter(torch.empty(d_inner, d_state))
        self.D = nn.Parameter(torch.empty(d_inner))
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)
        self.out_proj.residual_out = True
        self.reset_special_parameters()

    @torch.no_grad()
    def reset_special_parameters(self) -> None:
        """Mamba's init: conv as nn.Conv1d; dt_proj weight U(±dt_rank^-½), bias = softplus⁻¹(dt) with dt
        log-uniform in [dt_min, dt_max]; A_log = log(1..N) (S4D-real); D = 1."""
        if self.D.is_meta:  # a meta-device build (parameter counting) has no values to initialise
            return
        bound = 1.0 / math.sqrt(self.conv_weight.shape[-1])  # fan_in of a depthwise conv = kernel size
        nn.init.uniform_(self.conv_weight, -bound, bound)
        nn.init.uniform_(self.conv_bias, -bound, bound)
        std = self.dt_rank ** -0.5
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        dt = torch.exp(torch.rand(self.d_inner, device=self.D.device) * (math.log(self.dt_max) - math.log(self.dt_min))
                       + math.log(self.dt_min)).clamp(min=self.dt_init_floor)
        self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        A = torch.arange(1, self.d_state + 1, dtype=torch.float32, device=self.D.device)
        self.A_log.copy_(torch.log(A).expand(self.d_inner, -1))
        nn.init.ones_(self.D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, D) → (B, L, D)
        B, L, _ = x.shape
        xz = self.in_proj(x).transpose(1, 2)  # (B, 2E, L)
        x, z = xz.chunk(2, dim=1)  # (B, E, L) each
        x = kernels.causal_depthwise_conv1d(x, self.conv_weight, self.conv_bias, activation="silu")
        dbc = self.x_proj(x.transpose(1, 2))  # (B, L, R + 2N)
        dt, Bm, Cm = dbc.split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = (dt @ self.dt_proj.weight.t()).transpose(1, 2)  # (B, E, L); bias added inside the scan
        A = -torch.exp(self.A_log.float())  # (E, N)
        y = kernels.selective_scan(x, dt, A, Bm.transpose(1, 2), Cm.transpose(1, 2), self.D.float(), z,
                                   delta_bias=self.dt_proj.bias.float(), delta_softplus=True)  # (B, E, L)
        return self.out_proj(y.transpose(1, 2))


class MambaBlock(nn.Module):
    def __init__(self, d_model: int, d_inner: int, d_state: int, d_conv: int, dropout: float):
        super().__init__()
        self.norm = RMSNorm(d_model)
        self.mixer = MambaMixer(d_model, d_inner, d_state, d_conv)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, D)
        return x + self.drop(self.mixer(self.norm(x)))


def mamba_backbone(vocab_size: int, d_model: int, n_layers: int, d_inner: int, d_state: int = 16,
                   d_conv: int = 4, dropout: float = 0.0) -> Backbone:
    blocks = [MambaBlock(d_model, d_inner, d_state, d_conv, dropout) for _ in range(n_layers)]
    return Backbone(vocab_size, d_model, blocks, dropout, n_layers)


ARCHITECTURES.register(Architecture(
    name="mamba", settings=MambaSettings,
    build=lambda vocab, d, n_layers, inner, s, dropout: mamba_backbone(vocab, d, n_layers, inner, s.d_state,
                                                                       s.d_conv, dropout),
    default_inner=lambda s, d: s.expand * d,
    check=lambda s, d_model: below_one(s, "d_state", "d_conv", "expand"),
    describe=lambda s, dims: f"d_inner={dims.d_inner} d_state={s.d_state}",
))
