"""Hyena backbone: pre-norm residual blocks of [Hyena operator (order 2), MLP].

Hyena operator (Poli et al. 2023), for input u (B, L, D):
  in_proj → (order+1)·D channels → short causal depthwise conv (kernel hyena_short_conv) → split into
  x_1..x_order (gates) and v; then for each order o: v ← x_o ⊙ (h_o * v + bias_o ⊙ v), where h_o is a
  long causal filter as long as the sequence, produced implicitly by a small MLP with sine activations
  over positional features of the lag t, times an exponential decay; `*` is an FFT convolution
  (O(L log L), zero-padded to 2L so it stays causal). Finally out_proj.
The filter is a function of the absolute lag only (features are scaled by the fixed FILTER_REF_LEN,
not by the batch's length), so extra right padding never changes the outputs at real positions.

Why it is fast on CPU (eager PyTorch, same outputs as the plain formulation up to fp32 rounding; see
tests/test_models_hyena_fast.py): at long L every full-size (B, C, L) temporary costs more than its
arithmetic (PyTorch's CPU allocator does not cache, so big tensors come back as fresh pages to fault
in and zero, and they no longer fit in L2/L3). So the operator never materialises its (B, 3D, L)
in_proj output nor transposes between (B, L, C) and (B, C, L):
  1. by position chunks (position_chunk: ~1024 tokens, the whole sequence at L=1024): in_proj as W uᵀ
     written channel-major, the short conv (its K-1 earlier positions recomputed; the in_proj bias folded
     into the conv's bias) and the first gate, all in cache, with the same full-width matrix product
     efficiency as at short L;
  2. by channel groups (channel_group: ~2 MiB per tensor): each group's FFT input gathered from the
     chunks, the filters, their spectra (the skip term folded in as a lag-0 tap) and the FFT
     convolutions, rfft/irfft at n=2L without explicit padding;
  3. by position chunks again: the last gate (gathered from the groups) and out_proj, which HyenaBlock
     continues with its residuals and MLP chunk by chunk (HyenaOperator.chunks; its pre-norm runs in 1),
     so that no intermediate (B, L, ·) or (B, ·, L) tensor is ever made whole, only the block's output;
     what is kept between the phases is compact (a view would keep a whole chunk or 2L irfft outputs alive).
Off CPU there is one chunk and one group (the GPU prefers the big kernels).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from gdna.models import kernels
from gdna.models.layers import MLP, MLP_KINDS, Backbone, RMSNorm, default_hidden
from gdna.registry import ARCHITECTURES, Architecture, below_one


@dataclass(frozen=True)
class HyenaSettings:
    mlp: str = "swiglu"  # swiglu | gelu
    hyena_order: int = 2
    hyena_filter_dim: int = 64  # width of the implicit filter MLP
    hyena_short_conv: int = 3

FILTER_REF_LEN = 1024  # lag t is fed to the filter MLP as t / FILTER_REF_LEN (fixed: length-independent filters)
FILTER_EMB_DIM = 5  # positional features: t, and cos/sin of 2 frequency bands
CPU_CHUNK_TOKENS = 1024  # tokens (batch × positions) per position chunk on CPU
CPU_GROUP_VALUES = 1 << 19  # channels × batch × length per channel group on CPU (2 MiB per fp32 tensor)


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

    def hidden(self, L: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """The MLP up to its last (bias-free, channel-mixing) layer: (L, filter_dim) activations and t (L, 1)."""
        z, t = self.features(L, device)
        return self.mlp[:-1](z.to(self.mlp[0].weight.dtype)), t

    def filters(self, hidden: torch.Tensor, t: torch.Tensor, c0: int, c1: int) -> torch.Tensor:
        """Filters of channels c0..c1-1 from `hidden` (L, filter_dim): (c1-c0, L), lags along the last dim."""
        w = self.mlp[-1].weight[c0:c1]  # (G, filter_dim)
        h = w @ hidden.t()  # (G, L): written channel-major, no transpose copy
        # the exponent is floored at -60 (e^-60 ≈ 1e-26): far lags would otherwise give fp32 denormals,
        # which are both meaningless here and very slow on CPUs
        decay = (-t.t() * self.decay[c0:c1, None]).clamp(min=-60.0)  # (G, L)
        return h * torch.exp(decay).to(h.dtype)

    def forward(self, L: int, device) -> torch.Tensor:
        return self.filters(*self.hidden(L, device), 0, self.channels)  # (channels, L)


def _join(xs: list[torch.Tensor], dim: int) -> torch.Tensor:
    """torch.cat, without a copy for a single tensor."""
    return xs[0] if len(xs) == 1 else torch.cat(xs, dim=dim)


def position_chunk(B: int, L: int, device) -> int:
    """Positions per chunk of the position-wise parts (projections, short conv, norm, MLP): all of them off
    CPU; on CPU CPU_CHUNK_TOKENS // B (at least 64), so that their activations stay in cache and their matrix
    products are as efficient as at short lengths."""
    return L if torch.device(device).type != "cpu" else max(64, CPU_CHUNK_TOKENS // B)


def channel_group(B: int, D: int, L: int, device) -> int:
    """Channels the operator processes at a time: all of them off CPU; on CPU as many as keep one group's
    activations (B·G·L values per tensor) within CPU_GROUP_VALUES, at least 8."""
    if torch.device(device).type != "cpu":
        return D
    return max(8, min(D, CPU_GROUP_VALUES // (B * L)))


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
        return _join(self.chunks(u), dim=1)

    def chunks(self, u: torch.Tensor, pre: nn.Module | None = None) -> list[torch.Tensor]:
        """The output of pre(u) (B, L, D) as position chunks [(B, c, D), ...] (c = position_chunk), for callers
        that go on position-wise (HyenaBlock), so that no full-length input, output or residual is ever
        materialised. pre: a position-wise module (a norm), applied chunk by chunk."""
        B, L, D = u.shape
        n = position_chunk(B, L, u.device)
        spans = [(i, min(i + n, L)) for i in range(0, L, n)]
        parts = [self._project(u, i, j, pre) for i, j in spans]  # position-wise: [x_0, ..., x_{order-2}, v] by chunks
        hidden, t = self.filter.hidden(L, u.device)  # (L, filter_dim), (L, 1): shared by all channels
        G = channel_group(B, D, L, u.device)
        ys = [self._long_convs(parts, hidden, t, c0, min(c0 + G, D)) for c0 in range(0, D, G)]  # (B, G, L) each
        return [self._out_proj(_join([y[..., i:j] for y in ys], dim=1) * p[0])  # last gate x_0, by chunks
                for (i, j), p in zip(spans, parts)]

    def _project(self, u: torch.Tensor, i: int, j: int, pre: nn.Module | None) -> list[torch.Tensor]:
        """pre, in_proj, short conv and the first gate at positions i..j-1 of u (B, L, D): the gates
        x_0..x_{order-2} and dropout(v ⊙ x_{order-1}), each (B, D, j-i). The conv's K-1 earlier positions are
        recomputed."""
        L, s = u.shape[1], max(0, i - (self.short_conv.kernel_size[0] - 1))  # the conv's receptive field starts at s
        w = self.in_proj.weight.expand(u.shape[0], -1, -1)  # (B, (order+1)·D, D)
        u = u[:, s:j] if pre is None else pre(u[:, s:j])  # (B, j-s, D)
        z = torch.bmm(w, u.mT)  # (B, (order+1)·D, j-s): W uᵀ written channel-major (matmul would copy)
        *x, v = self._short_conv(z, at_start=s == 0)[..., i - s:].split(self.d_model, dim=1)
        if j - i < L:  # one of several chunks, kept until the end: the gates' views would keep all of z alive
            x = [x_k.clone() for x_k in x[:-1]] + x[-1:]
        return [*x[:-1], self.dropout(v * x[-1])]

    def _long_convs(self, parts: list[list[torch.Tensor]], hidden: torch.Tensor, t: torch.Tensor,
                    c0: int, c1: int) -> torch.Tensor:
        """Long convolutions and gates x_{order-2}..x_1 of channels c0..c1-1, gathered from the position chunks
        [x_0, ..., x_{order-2}, v] (B, D, c) of _project: → (B, G, L), still to be gated by x_0."""
        v = _join([p[-1][:, c0:c1] for p in parts], dim=-1)  # (B, G, L)
        for o in range(self.order - 1):
            if o:
                x = _join([p[self.order - 1 - o][:, c0:c1] for p in parts], dim=-1)  # (B, G, L)
                v = self.dropout(v * x)
            lo = o * self.d_model  # this order's filters
            k_f = kernels.long_conv_spectrum(self.filter.filters(hidden, t, lo + c0, lo + c1), v.shape[-1],
                                             self.filter_bias[lo + c0:lo + c1])  # (G, L+1), skip term folded in
            v = kernels.fft_conv_with_spectrum(v, k_f)  # (B, G, L), causal, O(L log L)
        # one of several groups, kept until the end: compact, or the view keeps the irfft's 2L outputs alive
        return v.clone() if c1 - c0 < self.d_model else v

    def _short_conv(self, z: torch.Tensor, at_start: bool) -> torch.Tensor:
        """Short causal conv of z + in_proj.bias, z (B, C, l) → (B, C, l), C = (order+1)·D.

        A constant b passes through the conv as b·Σ_j w_j, except at t < K-1, where the causal zero padding
        drops taps j < K-1-t: conv(z + b) = conv(z) + b·Σ_j w_j - b·Σ_{j<K-1-t} w_j. Adding the bias here
        (into the conv's own bias, plus a fix of the first K-1 positions when z starts the sequence) saves a
        full pass over z. When z does not start the sequence, its first K-1 outputs are incomplete."""
        w, b_in = self.short_conv.weight.squeeze(1), self.in_proj.bias  # (C, K), (C,)
        y = kernels.causal_depthwise_conv1d(z, w, torch.addcmul(self.short_conv.bias, b_in, w.sum(-1)))
        n = min(w.shape[-1] - 1, y.shape[-1]) if at_start else 0
        if n > 0:
            dropped = w.cumsum(-1)[:, :w.shape[-1] - 1].flip(-1)[:, :n]  # (C, n): Σ_{j<K-1-t} w_j at t < K-1
            y[..., :n] -= b_in.unsqueeze(-1) * dropped
        return y

    def _out_proj(self, y: torch.Tensor) -> torch.Tensor:
        """out_proj of y (B, D, c) → (B, c, D), reading y transposed (no transpose copy)."""
        w, b = self.out_proj.weight, self.out_proj.bias
        return torch.baddbmm(b, y.mT, w.t().expand(y.shape[0], -1, -1))


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
        m = self.mixer.chunks(x, pre=self.norm1)  # [(B, c, D), ...]: the rest of the block goes by position chunks
        return _join([self._residuals(x_c, m_c) for x_c, m_c in zip(x.split([c.shape[1] for c in m], dim=1), m)],
                     dim=1)  # (B, L, D)

    def _residuals(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:  # (B, c, D), mixer output (B, c, D)
        x = x + self.drop(m)
        return x + self.mlp(self.norm2(x))


def hyena_backbone(vocab_size: int, d_model: int, n_layers: int, d_hidden: int, mlp: str = "swiglu",
                   order: int = 2, filter_dim: int = 64, short_conv: int = 3, dropout: float = 0.0) -> Backbone:
    blocks = [HyenaBlock(d_model, d_hidden, mlp, order, filter_dim, short_conv, dropout) for _ in range(n_layers)]
    return Backbone(vocab_size, d_model, blocks, dropout, n_layers)


def _check(s: HyenaSettings, d_model: int | None) -> str | None:
    if s.mlp not in MLP_KINDS:
        return f"model.mlp: unknown mlp {s.mlp!r} (choose from {', '.join(MLP_KINDS)})"
    return below_one(s, "hyena_order", "hyena_filter_dim", "hyena_short_conv")


ARCHITECTURES.register(Architecture(
    name="hyena", settings=HyenaSettings,
    build=lambda vocab, d, n_layers, inner, s, dropout: hyena_backbone(
        vocab, d, n_layers, inner, s.mlp, s.hyena_order, s.hyena_filter_dim, s.hyena_short_conv, dropout),
    default_inner=lambda s, d: default_hidden(d, s.mlp),
    check=_check,
    describe=lambda s, dims: f"order={s.hyena_order} filter_dim={s.hyena_filter_dim} {s.mlp} hidden={dims.d_inner}",
))
