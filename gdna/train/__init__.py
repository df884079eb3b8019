"""gdna.train: the Ray Train loop (cls fine-tuning, clm pretraining), checkpoints and the TorchTrainer builder.

Public API: `build_trainer`, `run_trial`, `count_training_starts`, `read_events` (gdna.train.trainer) and
`train_loop_per_worker` (gdna.train.loop). See DESIGN.md for the metric names. Imports are lazy so
that `gdna <other command>` does not pay for torch / Ray.
"""
from __future__ import annotations

from typing import Any

__all__ = ["build_trainer", "run_trial", "count_training_starts", "read_events", "train_loop_per_worker"]


def __getattr__(name: str) -> Any:
    if name == "train_loop_per_worker":
        from gdna.train.loop import train_loop_per_worker

        return train_loop_per_worker
    if name in __all__:
        from gdna.train import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'gdna.train' has no attribute {name!r}")
