"""The paper's optimisation recipe: AdamW (decoupled weight decay, none on norms / biases / embeddings),
linear warmup over `warmup_frac` of all optimizer steps, then cosine decay to `min_lr`.

All numbers come from `gdna.config.TrainConfig`; nothing here has its own defaults.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from gdna.config import TrainConfig


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: matrices decay; biases, norm weights (ndim < 2) and embedding tables do not.

    Parameters shared between modules (e.g. a tied LM head) are listed once.
    """
    no_decay: set[int] = set()
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            no_decay.update(id(p) for p in module.parameters(recurse=False))
    decay, rest, seen = [], [], set()
    for _, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (rest if p.ndim < 2 or id(p) in no_decay else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=tuple(cfg.betas))


class WarmupCosine:
    """LR multiplier for `LambdaLR` at optimizer step `step` (0-based): warmup then cosine to min_lr.

    A plain object (not a closure) so that `LambdaLR.state_dict()` carries it into checkpoints.
    """

    def __init__(self, total_steps: int, warmup_frac: float, lr: float, min_lr: float):
        self.total_steps = max(1, int(total_steps))
        self.warmup_steps = int(warmup_frac * self.total_steps)
        self.lr = float(lr)
        self.min_lr = float(min_lr)

    def lr_at(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        decay = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / decay)
        return self.min_lr + (self.lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def __call__(self, step: int) -> float:
        return self.lr_at(step) / self.lr


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Stepped once per optimizer step; `total_steps` = epochs × steps per epoch (cls) or max_steps (clm)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(total_steps, cfg.warmup_frac, cfg.lr, cfg.min_lr))
