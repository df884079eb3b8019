"""Hyena backbone: pre-norm residual blocks of [Hyena operator (order 2), MLP].

Hyena operator (Poli et al. 2023), for input u (B, L, D):
  in_proj → (order+1)·D channels → short causal depthwise conv (kernel hyena_short_conv) → split into
  x_1..x_order (gates) and v; then for each order o: v ← x_o ⊙ (h_o * v + bias_o ⊙ v), where h_o is a
  long causal filter as long as the sequence, produced implicitly by a small MLP with sine activations
  over positional features of the lag t, times an exponential decay; `*` is an FFT convolution
  (O(L log L), zero-padded to 2L so it stays causal). Finally out_proj.
The filter is a function of the absolute lag only (features are scaled by the fixed FILTER_REF_LEN,
not by the batch's length), so extra right padding never changes the outputs at real positions.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from gdna.models import kernels
from gdna.models.layers import MLP, RMSNorm
from gdna.models.transformer import Backbone

FILTER_REF_LEN = 1024  # lag t is fed to the filter MLP as t / FILTER_REF_LEN (fixed: length-independent filters)
FILTER_EMB_DIM = 5  # positional features: t, and cos/sin of 2 frequency bands


class Sin(nn.Module):
    """sin(freq ⊙ x) with a learnable per-channel frequency."""

    def __init__(self, dim: int, w: float = 1.0):
        super().__init__()
        self.w = w
        self.freq = nn.Parameter(torch.full((dim,), w))

    def reset_special_parameters(self) -> None:
        nn.init.constant_(self.freq, self.w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.freq * x)


class ImplicitFilter(nn.Module):
    """h(t) for t = 0..L-1: MLP(positional features of t) ⊙ exp(-|α_d|·t/ref), channels D·(order-1).

    Positional features (complex exponential, as in Hyena): [t/ref, Re z_k(t), Im z_k(t)],
    z_k(t) = exp(-i·f_k·2π·t/ref), bands f_k = linspace(1e-4, bands-1). The decay rates α_d are spread
    per channel so that the filters fall to `target` at lag fractions between fast and slow.
    """

    def __init__(self, channels: int, filter_dim: int, n_inner: int = 2, fast_decay: float = 0.3,
                 slow_decay: float = 1.5, target: float = 1e-2):
        super().__init__()
        self.channels = channels
        layers: list[nn.Module] = [nn.Linear(FILTER_EMB_DIM, filter_dim), Sin(filter_dim)]
        for _ in range(n_inner):
            layers += [nn.Linear(filter_dim, filter_dim), Sin(filter_dim)]
        layers.append(nn.Linear(filter_dim, channels, bias=False))
        self.mlp = nn.Sequential(*layers)
        max_decay, min_decay = math.log(target) / fast_decay, math.log(target) / slow_decay
        self.register_buffer("decay", torch.linspace(min_decay, max_decay, channels).abs(), persistent=False)
        self.bands = (FILTER_EMB_DIM - 1) // 2
        self._init_mlp()

    def _init_mlp(self) -> None:
        # Linear layers of the filter MLP keep PyTorch's default (Kaiming-uniform) init: the generic
        # N(0, 0.02) init would make every filter ~0.
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                m.reset_parameters()

    def reset_special_parameters(self) -> None:
        self._init_mlp()

    def features(self, L: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        t = torch.arange(L, device=device, dtype=torch.float32)[:, None] / FILTER_REF_LEN  # (L, 1)
        f = torch.linspace(1e-4, self.bands - 1, self.bands, device=device)[None, :]  # (1, bands)
        phase = 2 * math.pi * f * t  # (L, bands)
        return torch.cat([t, torch.cos(phase), -torch.sin(phase)], dim=-1), t  # (L, emb), (L, 1)

    def forward(self, L: int, device) -> torch.Tensor:
        z, t = self.features(L, device)
        h = self.mlp(z.to(self.mlp[0].weight.dtype))  # (L, channels)
        # the exponent is floored at -60 (e^-60 ≈ 1e-26): far lags would otherwise give fp32 denormals,
        # which are both meaningless here and very slow on CPUs
        h = h * torch.exp((-t * self.decay[None, :]).clamp(min=-60.0)).to(h.dtype)
        return h.transpose(0, 1)  # (channels, L)


class HyenaOperator(nn.Module):
    def __init__(self, d_model: int, order: int = 2, filter_dim: int = 64, short_conv: int = 3,
                 dropout: float = 0.0):
        super().__init__()
        if order < 2:
            raise ValueError(f"hyena order must be ≥ 2, got {order}")
        self.d_model, self.order = d_model, order
        self.in_proj = nn.Linear(d_model, (order + 1) * d_model)
        self.short_conv = nn.Conv1d((order + 1) * d_model, (order + 1) * d_model, short_conv,
                                    groups=(order + 1) * d_model)  # applied causally via kernels
        self.filter = ImplicitFilter(d_model * (order - 1), filter_dim)
        self.filter_bias = nn.Parameter(torch.randn(d_model * (order - 1)))  # skip term D of each long conv
        self.out_proj = nn.Linear(d_model, d_model)
        self.out_proj.residual_out = True
        self.dropout = nn.Dropout(dropout)

    def reset_special_parameters(self) -> None:
        nn.init.normal_(self.filter_bias)
        self.short_conv.reset_parameters()

    def forward(self, u: torch.Tensor) -> torch.Tensor:  # (B, L, D) → (B, L, D)
        B, L, D = u.shape
        z = self.in_proj(u).transpose(1, 2)  # (B, (order+1)·D, L)
        z = kernels.causal_depthwise_conv1d(z, self.short_conv.weight.squeeze(1), self.short_conv.bias)
        *x, v = z.split(D, dim=1)  # order × (B, D, L) gates, v (B, D, L)
        k = self.filter(L, u.device).view(self.order - 1, D, L)  # (order-1, D, L)
        bias = self.filter_bias.view(self.order - 1, D)
        for o, x_i in enumerate(reversed(x[1:])):
            v = self.dropout(v * x_i)
            v = kernels.fft_long_conv(v, k[o], bias[o])  # (B, D, L), causal, O(L log L)
        y = (v * x[0]).transpose(1, 2)  # (B, L, D)
        return self.out_proj(y)


class HyenaBlock(nn.Module):
    def __init__(self, d_model: int, d_hidden: int, mlp: str, order: int, filter_dim: int, short_conv: int,
                 dropout: float):
        super().__init__()
        self.norm1 = RMSNorm(d_model)
        self.mixer = HyenaOperator(d_model, order, filter_dim, short_conv, dropout)
        self.norm2 = RMSNorm(d_model)
        self.mlp = MLP(d_model, d_hidden, mlp, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, D)
        x = x + self.drop(self.mixer(self.norm1(x)))
        return x + self.mlp(self.norm2(x))


def hyena_backbone(vocab_size: int, d_model: int, n_layers: int, d_hidden: int, mlp: str = "swiglu",
                   order: int = 2, filter_dim: int = 64, short_conv: int = 3, dropout: float = 0.0) -> Backbone:
    blocks = [HyenaBlock(d_model, d_hidden, mlp, order, filter_dim, short_conv, dropout) for _ in range(n_layers)]
    return Backbone(vocab_size, d_model, blocks, dropout, n_layers)
