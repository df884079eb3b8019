"""gdna.train: the Ray Train loop (cls fine-tuning, clm pretraining), checkpoints and the TorchTrainer builder.

Public API: `build_trainer`, `run_trial`, `count_training_starts` (gdna.train.trainer) and
`train_loop_per_worker` (gdna.train.loop). See DESIGN.md for the metric names.
"""
from gdna.train.trainer import build_trainer, count_training_starts, read_events, run_trial

__all__ = ["build_trainer", "run_trial", "count_training_starts", "read_events"]
