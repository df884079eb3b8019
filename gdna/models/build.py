"""Model factory: ModelConfig → backbone + head, the parameter-budget width solver, backbone transfer.

Parameter budget: the solver counts the BACKBONE (token embedding + blocks + final norm), i.e. every
parameter that pretraining exports. The LM head is tied to the embedding (0 extra parameters); the
classification head adds D·n_classes + n_classes (≈ 0.03% at 1.6M). Counting the backbone makes the width
independent of the head and of n_classes, so a pretrained backbone always fits the fine-tuning model.

Width search: d_model over multiples of the architecture's `width_step` with its `default_inner` width
(both registered with the architecture, gdna.registry); the closest width is kept, then the inner width
(MLP hidden / d_inner, a multiple of 8) is adjusted to land as close to the budget as possible (always
within ±3%). Nothing here names an architecture: a new one is a file in gdna/models/ and its registry entry.

Depth: `n_layers: 0` asks the solver for the depth too (the model-size scaling study, from ≈200K to ≈40M
parameters, cannot keep 2 layers): the depth whose solved width per layer (d_model / n_layers) is closest to
DEPTH_ASPECT, the shape of the study's fixed model (6 layers × width 128); d_model / n_layers falls as the
depth grows, so the depth is found by bisection. `describe` (and the loop's reports: `n_params`,
`d_model`, `n_layers`) give the chosen width, depth and exact count.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn as nn

from gdna.config import PAPER_SCALING_CONTEXT_D_MODEL, PAPER_SCALING_CONTEXT_N_LAYERS, ModelConfig
from gdna.errors import ConfigError
from gdna.models.heads import ClassificationHead, LMHead
from gdna.registry import ARCHITECTURES

HEADS = ("lm", "cls")
BUDGET_TOLERANCE = 0.03
DEPTH_ASPECT = PAPER_SCALING_CONTEXT_D_MODEL / PAPER_SCALING_CONTEXT_N_LAYERS  # width per layer, auto depth
MAX_DEPTH = 64


@dataclass(frozen=True)
class Dims:
    """Resolved widths: d_model, and d_inner = MLP hidden (transformer, hyena) or Mamba's expanded width."""

    d_model: int
    d_inner: int
    n_layers: int = 0  # the depth (0: the config's n_layers); resolve_dims always fills it in


def make_backbone(cfg: ModelConfig, dims: Dims) -> nn.Module:
    arch = ARCHITECTURES.get(cfg.arch, "model.arch")
    return arch.build(cfg.vocab_size, dims.d_model, dims.n_layers or cfg.n_layers, dims.d_inner, cfg.settings, cfg.dropout)


def default_inner(cfg: ModelConfig, d_model: int) -> int:
    return ARCHITECTURES.get(cfg.arch, "model.arch").default_inner(cfg.settings, d_model)


def width_step(cfg: ModelConfig) -> int:
    return ARCHITECTURES.get(cfg.arch, "model.arch").width_step(cfg.settings)


@functools.lru_cache(maxsize=1024)
def count_backbone_params(cfg: ModelConfig, dims: Dims) -> int:
    """Exact backbone parameter count. Blocks of one config have the same count (tests/test_scaling_sizes.py
    checks every registered architecture against a full build), so deep models are counted from meta-device
    builds of 1 and 2 layers: embedding + norm + n × block."""
    n = dims.n_layers or cfg.n_layers
    if n <= 2:
        return _meta_count(cfg, dims)
    one, two = (_meta_count(cfg, dataclasses.replace(dims, n_layers=k)) for k in (1, 2))
    return one + (n - 1) * (two - one)


def _meta_count(cfg: ModelConfig, dims: Dims) -> int:
    """Parameter count of a build on the meta device (no memory, no init cost)."""
    with torch.device("meta"):
        return count_params(make_backbone(dataclasses.replace(cfg, dropout=0.0), dims))


@functools.lru_cache(maxsize=256)
def _solve(cfg: ModelConfig) -> Dims:
    budget, step = cfg.param_budget, width_step(cfg)

    def at(d: int, inner: int | None = None) -> int:
        return count_backbone_params(cfg, Dims(d, default_inner(cfg, d) if inner is None else inner))

    # 1. the width (default inner width) closest to the budget: counts grow with d, so bracket the budget
    #    by doubling, bisect to the last width at or under it, then keep whichever neighbour is closer
    lo, hi = 1, 1
    while at(hi * step) <= budget and hi < 4096:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if at(mid * step) <= budget else (lo, mid)
    best = min((lo * step, hi * step), key=lambda d: abs(at(d) - budget))
    # 2. adjust the inner width (multiples of 8; the count is linear in it)
    inner0 = default_inner(cfg, best)
    n0, slope = at(best, inner0), at(best, inner0 + 8) - at(best, inner0)
    inner = max(8, inner0 + 8 * round((budget - n0) / slope))
    dims = Dims(best, inner, cfg.n_layers)
    n = count_backbone_params(cfg, dims)
    if abs(n - budget) > BUDGET_TOLERANCE * budget:
        raise ConfigError(f"model.param_budget: no {cfg.arch} width with n_layers={cfg.n_layers} lands within "
                          f"±3% of {budget} (closest: {n} at d_model={best})")
    return dims


@functools.lru_cache(maxsize=256)
def _solve_depth(cfg: ModelConfig) -> Dims:
    """n_layers = 0: the depth whose solved width per layer is closest to DEPTH_ASPECT (log scale)."""
    def at(n: int) -> Dims | None:
        try:
            return _solve(dataclasses.replace(cfg, n_layers=n))
        except ConfigError:  # no width lands within ±3% at this depth
            return None

    # d_model / n_layers decreases with n: bisect for the last depth at or above the aspect
    lo, hi = 1, MAX_DEPTH
    while hi - lo > 1:
        mid = (lo + hi) // 2
        d = at(mid)
        if d is not None and d.d_model / mid >= DEPTH_ASPECT:
            lo = mid
        else:
            hi = mid
    cands = [(n, d) for n in (lo - 1, lo, hi, hi + 1) if 1 <= n <= MAX_DEPTH for d in [at(n)] if d is not None]
    if not cands:
        raise ConfigError(f"model.param_budget: no {cfg.arch} depth and width land within ±3% of {cfg.param_budget}")
    n, dims = min(cands, key=lambda nd: (abs(math.log(nd[1].d_model / nd[0] / DEPTH_ASPECT)), nd[0]))
    return dims


def resolve_dims(cfg: ModelConfig) -> Dims:
    """The widths build_model uses: cfg.d_model with the default inner width if set, else the budget solver's."""
    cfg = cfg.validate()
    if cfg.d_model is not None:
        return Dims(cfg.d_model, default_inner(cfg, cfg.d_model), cfg.n_layers)
    # only the fields that shape the backbone matter for the solve (cache key)
    key = dataclasses.replace(cfg, dropout=0.0, pooling="mean", n_classes=2)
    return _solve_depth(key) if cfg.n_layers == 0 else _solve(key)


def solve_width(arch: str, n_layers: int, budget: int, **cfg: Any) -> int:
    """d_model whose backbone (embedding + blocks + final norm) lands within ±3% of `budget` parameters.
    Extra keyword arguments are ModelConfig fields (n_heads, mlp, expand, d_state, ...)."""
    mc = ModelConfig.for_arch(arch, {"n_layers": n_layers, "param_budget": budget, **cfg})
    return resolve_dims(dataclasses.replace(mc, d_model=None)).d_model


def count_params(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (unique: tied weights count once) parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def describe(cfg: ModelConfig) -> str:
    """One line: the resolved widths and the exact backbone parameter count against the budget."""
    dims = resolve_dims(cfg)
    n = count_backbone_params(dataclasses.replace(cfg, dropout=0.0), dims)
    inner = ARCHITECTURES.get(cfg.arch, "model.arch").describe(cfg.settings, dims)
    target = (f"budget {cfg.param_budget:,}, {100 * (n - cfg.param_budget) / cfg.param_budget:+.2f}%"
              if cfg.d_model is None else "explicit d_model")
    depth = f"n_layers={dims.n_layers}" + (" (solver-chosen)" if cfg.n_layers == 0 else "")
    return (f"{cfg.arch}: {depth} d_model={dims.d_model} {inner} → {n:,} backbone params "
            f"(embedding + blocks + final norm; {target})")


class GenomicModel(nn.Module):
    """backbone (ids, mask) → (B, L, D), then an LM head (B, L, V) or a classification head (B, n_classes)."""

    def __init__(self, cfg: ModelConfig, head: str):
        super().__init__()
        if head not in HEADS:
            raise ConfigError(f"head: unknown head {head!r} (choose from lm, cls)")
        self.config, self.head_type = cfg, head
        self.dims = resolve_dims(cfg)
        self.backbone = make_backbone(cfg, self.dims)
        if head == "lm":
            self.head = LMHead(self.dims.d_model, cfg.vocab_size, embedding=self.backbone.embed)
        else:
            self.head = ClassificationHead(self.dims.d_model, cfg.n_classes, cfg.pooling, cfg.dropout)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.backbone(ids, mask), mask)

    def extra_repr(self) -> str:
        return f"head={self.head_type}, d_model={self.dims.d_model}, d_inner={self.dims.d_inner}"


def build_model(cfg: ModelConfig, head: str) -> GenomicModel:
    """The model for `cfg` with an "lm" (causal LM, tied weights) or "cls" (n_classes logits) head."""
    return GenomicModel(cfg, head)


def load_backbone(model: GenomicModel, state_dict: Mapping[str, torch.Tensor]) -> GenomicModel:
    """Load a pretrained backbone (strict on backbone keys; a "backbone." prefix is accepted) into `model`;
    the head is left as built (a fresh classification head). Mismatches raise ConfigError in one line."""
    sd = dict(state_dict)
    if sd and all(k.startswith("backbone.") for k in sd):
        sd = {k[len("backbone."):]: v for k, v in sd.items()}
    own = model.backbone.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shapes = sorted(k for k in set(own) & set(sd) if tuple(own[k].shape) != tuple(sd[k].shape))
    if missing or unexpected or shapes:
        parts = [f"{len(missing)} missing (e.g. {missing[0]})" if missing else "",
                 f"{len(unexpected)} unexpected (e.g. {unexpected[0]})" if unexpected else "",
                 (f"{len(shapes)} with other shapes (e.g. {shapes[0]}: {tuple(sd[shapes[0]].shape)} vs "
                  f"{tuple(own[shapes[0]].shape)})") if shapes else ""]
        raise ConfigError("init_checkpoint: backbone does not match model "
                          f"({model.config.arch}, d_model={model.dims.d_model}): " + "; ".join(p for p in parts if p))
    model.backbone.load_state_dict(sd, strict=True)
    return model
