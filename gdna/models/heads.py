"""Heads on top of a backbone's hidden states (B, L, D). The backbone ends with the final RMSNorm
(`backbone.norm_f`), so its output is already normalised when it reaches a head (and the pretrained
final norm travels with the backbone's state_dict)."""
from __future__ import annotations

import torch
import torch.nn as nn


class LMHead(nn.Module):
    """Next-token logits (B, L, V). The weight is tied to the token embedding unless tie=False."""

    def __init__(self, d_model: int, vocab_size: int, embedding: nn.Embedding | None = None):
        super().__init__()
        self.proj = nn.Linear(d_model, vocab_size, bias=False)
        if embedding is not None:
            self.proj.weight = embedding.weight  # tied
        else:
            nn.init.normal_(self.proj.weight, std=0.02)

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.proj(h)  # (B, L, V); positions after the last real token are ignored by the loss


def pool(h: torch.Tensor, mask: torch.Tensor | None, how: str) -> torch.Tensor:
    """(B, L, D) → (B, D). mean: average over real tokens only (pads never pooled); last: the last real
    token (the last True of the mask, wherever it is; position L-1 without a mask)."""
    if how == "mean":
        if mask is None:
            return h.mean(dim=1)
        m = mask.to(h.dtype).unsqueeze(-1)  # (B, L, 1)
        return (h * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)
    if how == "last":
        if mask is None:
            return h[:, -1]
        L = mask.shape[1]
        pos = torch.arange(L, device=mask.device).expand_as(mask)
        last = torch.where(mask.to(torch.bool), pos, -1).amax(dim=1).clamp(min=0)  # (B,)
        return h[torch.arange(h.shape[0], device=h.device), last]
    raise ValueError(f"pooling must be 'mean' or 'last', got {how!r}")


class ClassificationHead(nn.Module):
    """Masked pooling → dropout → Linear(D, n_classes): logits (B, n_classes)."""

    def __init__(self, d_model: int, n_classes: int, pooling: str = "mean", dropout: float = 0.0):
        super().__init__()
        if pooling not in ("mean", "last"):
            raise ValueError(f"pooling must be 'mean' or 'last', got {pooling!r}")
        self.pooling = pooling
        self.drop = nn.Dropout(dropout)
        self.proj = nn.Linear(d_model, n_classes)
        nn.init.normal_(self.proj.weight, std=0.02)
        nn.init.zeros_(self.proj.bias)

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.proj(self.drop(pool(h, mask, self.pooling)))
