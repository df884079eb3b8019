"""Backbones (Transformer++, Hyena, Mamba), heads and the model factory. See DESIGN.md (gdna.models)."""
from gdna.models.build import (Dims, GenomicModel, build_model, count_params, describe, load_backbone,
                               resolve_dims, solve_width)

__all__ = ["Dims", "GenomicModel", "build_model", "count_params", "describe", "load_backbone", "resolve_dims",
           "solve_width"]
