"""Pure-PyTorch selective scan (Mamba-1): the chunked fast path and its per-step reference.

Layout (mamba_ssm's): u, delta, z (B, D, L); A (D, N); B, C (B, N, L); D, delta_bias (D,).
`gdna.models.kernels.selective_scan` dispatches between mamba_ssm's CUDA kernel and this module.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

# ---------------------------------------------------------------------------------------------
# Selective scan (Mamba):  h_t = exp(Δ_t A) ⊙ h_{t-1} + Δ_t B_t u_t ;  y_t = C_t · h_t + D u_t ;  y ⊙= SiLU(z)


def _scan_prologue(u, delta, A, D, z, delta_bias, delta_softplus):
    """Shared input handling: fp32 (fp64 kept) compute, Δ bias + softplus."""
    dt = torch.float64 if u.dtype == torch.float64 else torch.float32
    delta = delta.to(dt)
    if delta_bias is not None:
        delta = delta + delta_bias.to(dt).unsqueeze(-1)
    if delta_softplus:
        delta = F.softplus(delta)
    return dt, u.to(dt), delta, A.to(dt)


def _scan_epilogue(y, u, D, z, out_dtype):
    if D is not None:
        y = y + u * D.to(y.dtype).unsqueeze(-1)
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y.to(out_dtype)


def _auto_chunk(L: int) -> int:
    """Chunk length T ≈ √(L/2) (power of two in [8, 128]): minimises the 2T + L/T Python steps."""
    t = 8
    while t < 128 and 2 * t * t < L:
        t *= 2
    return t


def _time_major(t: torch.Tensor, T: int) -> torch.Tensor:
    """(B, C, L) → (T, B, nc, C) contiguous, L = nc·T: step t of every chunk is one contiguous slice."""
    Bsz, Ch, L = t.shape
    return t.view(Bsz, Ch, L // T, T).permute(3, 0, 2, 1).contiguous()


def _from_time_major(t: torch.Tensor) -> torch.Tensor:
    """(T, B, nc, C) → (B, C, L)."""
    T, Bsz, nc, Ch = t.shape
    return t.permute(1, 3, 2, 0).reshape(Bsz, Ch, nc * T)


def _chunk_views(u, delta, A, Bm, Cm, T):
    """Time-major chunked tensors (L = nc·T): Δ, u (T, B, nc, D); B_t, C_t (T, B, nc, N); decays
    exp(ΔA) ≤ 1 and inputs ΔBu (T, B, nc, D, N)."""
    d4, u4, Bt, Ct = (_time_major(t, T) for t in (delta, u, Bm, Cm))
    dA = torch.exp(d4.unsqueeze(-1) * A)  # (T, B, nc, D, N)
    x = (d4 * u4).unsqueeze(-1) * Bt.unsqueeze(-2)  # (T, B, nc, D, N): Δ_t u_t B_t
    return d4, u4, Bt, Ct, dA, x


class _ChunkedScan(torch.autograd.Function):
    """y = scan(u, Δ, A, B, C) (no D, z, bias: those are plain autograd ops around it), L a multiple of T.

    Forward keeps only the inputs and the (B, nc, D, N) states entering each chunk; backward recomputes
    the states, runs the adjoint recurrence g_t = C_t·gy_t + exp(Δ_{t+1}A) ⊙ g_{t+1} backwards with the
    same blocked scheme, and forms every gradient with a few whole-tensor (batched matmul) products: no
    per-step autograd graph, memory O(inputs) between forward and backward, time ~2-3 forwards."""

    @staticmethod
    def forward(ctx, u, delta, A, Bm, Cm, T: int):
        d4, u4, Bt, Ct, dA, x = _chunk_views(u, delta, A, Bm, Cm, T)
        nc = d4.shape[2]
        # 1. local scans from zero, all chunks at once → chunk end states
        h = x[0]
        for t in range(1, T):
            h = torch.addcmul(x[t], dA[t], h)  # (B, nc, D, N)
        # 2. carry across chunks: S_c = exp(A·ΣΔ_{chunk c-1}) ⊙ S_{c-1} + end_{c-1}
        chunk_decay = torch.exp(d4.sum(0).unsqueeze(-1) * A)  # (B, nc, D, N), ≤ 1
        states = [h.new_zeros(h[:, 0].shape)]
        for c in range(nc - 1):
            states.append(torch.addcmul(h[:, c], chunk_decay[:, c], states[-1]))
        S = torch.stack(states, dim=1)  # (B, nc, D, N): the state entering each chunk
        # 3. exact scans from the entering states, reading out y_t = C_t · h_t
        y = torch.empty_like(d4)  # (T, B, nc, D)
        h = S
        for t in range(T):
            h = torch.addcmul(x[t], dA[t], h)
            torch.matmul(h, Ct[t].unsqueeze(-1), out=y[t].unsqueeze(-1))
        ctx.T = T
        ctx.save_for_backward(u, delta, A, Bm, Cm, S, chunk_decay)
        return _from_time_major(y)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy):
        with torch.autocast(device_type=gy.device.type, enabled=False):
            return _ChunkedScan._backward(ctx, gy)

    @staticmethod
    def _backward(ctx, gy):
        u, delta, A, Bm, Cm, S, chunk_decay = ctx.saved_tensors
        gy = gy.to(u.dtype)
        T = ctx.T
        d4, u4, Bt, Ct, dA, x = _chunk_views(u, delta, A, Bm, Cm, T)
        nc = d4.shape[2]
        gy4 = _time_major(gy, T).unsqueeze(-1)  # (T, B, nc, D, 1)
        Cn = Ct.unsqueeze(-2)  # (T, B, nc, 1, N)
        # recompute every state h_t
        H = torch.empty_like(x)
        h = S
        for t in range(T):
            h = torch.addcmul(x[t], dA[t], h)
            H[t] = h
        del x
        # adjoint g_t = r_t + dA_{t+1} ⊙ g_{t+1}, r_t = gy_t C_t: local reverse scans, carry, exact reverse scans
        e = torch.zeros_like(S)
        for t in reversed(range(T)):
            e = dA[t] * torch.addcmul(e, gy4[t], Cn[t])
        carries = [torch.zeros_like(S[:, 0])]  # E_c: what flows into chunk c's last step from the right
        for c in range(nc - 1, 0, -1):
            carries.append(torch.addcmul(e[:, c], chunk_decay[:, c], carries[-1]))
        e = torch.stack(carries[::-1], dim=1)  # (B, nc, D, N)
        G = torch.empty_like(H)
        for t in reversed(range(T)):
            g = torch.addcmul(e, gy4[t], Cn[t])
            G[t] = g
            e = dA[t] * g
        gC = torch.matmul(H.transpose(-1, -2), gy4).squeeze(-1)  # (T, B, nc, N): Σ_d gy_t h_t
        gB = torch.matmul(G.transpose(-1, -2), (d4 * u4).unsqueeze(-1)).squeeze(-1)  # Σ_d g_t Δ_t u_t
        s = torch.matmul(G, Bt.unsqueeze(-1)).squeeze(-1)  # (T, B, nc, D): Σ_n g_t B_t
        H[1:] = H[:-1].clone()  # h_{t-1}
        H[0] = S
        q = G.mul_(H).mul_(dA)  # g_t ⊙ h_{t-1} ⊙ exp(Δ_t A): the gradient reaching Δ_t A
        del H, dA
        gA = torch.matmul(q.flatten(0, 2).permute(1, 2, 0), d4.flatten(0, 2).t().unsqueeze(-1)).squeeze(-1)  # (D, N)
        gdelta = s * u4 + q.mul_(A).sum(-1)  # ... + Σ_n q A
        return (_from_time_major(s * d4), _from_time_major(gdelta), gA, _from_time_major(gB),
                _from_time_major(gC), None)


def selective_scan_chunked(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                           chunk_size: int | None = None):
    """Pure-PyTorch selective scan as a blocked (two-level) recurrence; same semantics as mamba_ssm.

    The sequence is cut into nc chunks of T steps. Three vectorised phases, O(2T + nc) Python steps
    instead of O(L) (T ≈ √(L/2), i.e. ~3√L steps):
      1. local scan: every chunk is scanned from a zero state, all chunks at once (T steps over
         (B, D, nc, N) slices) → each chunk's end state;
      2. carry: the state entering chunk c is S_c = exp(A·ΣΔ over chunk c-1) ⊙ S_{c-1} + end_{c-1}: the
         chunk's total decay is the exp of the sum of its log-decays ΔA ≤ 0 (nc steps over (B, D, N));
      3. exact scan: every chunk again, all at once, now from its true entering state, reading y_t = C_t·h_t.
    Only decays exp(ΔA) ≤ 1 are ever formed (A < 0, Δ ≥ 0): no exp of positive numbers, so the scan
    is as stable as the step-by-step recurrence; fp32 throughout (fp64 inputs stay fp64). The backward is
    hand-written (_ChunkedScan): the adjoint recurrence runs backwards with the same blocked scheme.

    (Mamba-1's decays differ per (channel, state) pair, so SSD's T×T segment-sum trick would need a
    (B, D, N, T, T) tensor per chunk with no matmul to hide it in; the blocked recurrence does the same
    work as the sequential scan with √L-fold fewer Python steps.)
    """
    out_dtype = u.dtype
    dt, u_, delta, A_ = _scan_prologue(u, delta, A, D, z, delta_bias, delta_softplus)
    L = u_.shape[-1]
    T = chunk_size or _auto_chunk(L)
    pad = -L % T
    Bm, Cm = B.to(dt), C.to(dt)
    if pad:  # Δ = 0 past the end: decay 1 and no input, so the padding changes nothing before it
        u_p, delta_p, Bm, Cm = (F.pad(t, (0, pad)) for t in (u_, delta, Bm, Cm))
    else:
        u_p, delta_p = u_, delta
    with torch.autocast(device_type=u.device.type, enabled=False):  # the scan itself is always fp32/fp64
        y = _ChunkedScan.apply(u_p.contiguous(), delta_p.contiguous(), A_.contiguous(), Bm.contiguous(),
                               Cm.contiguous(), T)[..., :L]
    return _scan_epilogue(y, u_, D, z, out_dtype)


def selective_scan_reference(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """Per-timestep reference scan (tests and bench only): one Python step per position."""
    out_dtype = u.dtype
    dt, u_, delta, A_ = _scan_prologue(u, delta, A, D, z, delta_bias, delta_softplus)
    Bsz, Dm, L = u_.shape
    Bm, Cm = B.to(dt), C.to(dt)
    h = u_.new_zeros(Bsz, Dm, A_.shape[-1])
    ys = []
    for t in range(L):
        dA = torch.exp(delta[:, :, t, None] * A_)  # (B, D, N)
        dBu = (delta[:, :, t] * u_[:, :, t])[:, :, None] * Bm[:, None, :, t]  # (B, D, N)
        h = dA * h + dBu
        ys.append(torch.einsum("bdn,bn->bd", h, Cm[:, :, t]))
    y = torch.stack(ys, dim=-1)
    return _scan_epilogue(y, u_, D, z, out_dtype)
