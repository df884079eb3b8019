"""Test helper: a `build_model` whose models start returning NaN logits after `n` training forwards."""
from __future__ import annotations


def nan_after(real_build_model, n: int):
    """Wrap gdna.models.build.build_model: models it builds output NaN from training forward n+1 on."""

    def build_model(cfg, head):
        model = real_build_model(cfg, head)
        fwd, calls = model.forward, {"n": 0}

        def forward(ids, mask=None):
            out = fwd(ids, mask)
            calls["n"] += model.training
            return out * float("nan") if calls["n"] > n else out

        model.forward = forward
        return model

    return build_model
