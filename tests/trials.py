"""Test support: tiny trial configs on the real data (one place for the sizes the loop/Ray tests use)."""
from __future__ import annotations

from gdna.config import DataConfig, ModelConfig, TrainConfig, TrialConfig

TASK = "human_enhancers_cohn"


def cls_trial(data_root, *, arch: str = "transformer", max_len: int = 100, n_train: int = 160, n_eval: int = 96,
              **train) -> TrialConfig:
    """Fine-tuning on TASK: a 32-wide model, `n_train` / `n_eval` seeded examples of `max_len` tokens."""
    t = {"objective": "cls", "lr": 3e-3, "batch_size": 32, "epochs": 3, "seed": 0, **train}
    return TrialConfig(
        model=ModelConfig.for_arch(arch, d_model=32, n_heads=4),
        data=DataConfig(data_root=str(data_root), task=TASK, max_len=max_len, max_train_examples=n_train,
                        max_eval_examples=n_eval),
        train=TrainConfig(**t),
    ).validate()


def clm_trial(data_root, export_dir=None, **train) -> TrialConfig:
    """Genome pretraining: 160 windows of 128 tokens per pass, 64 fixed validation windows."""
    t = {"objective": "clm", "lr": 3e-3, "batch_size": 16, "max_steps": 60, "eval_every": 20, "seed": 0, **train}
    return TrialConfig(
        model=ModelConfig.for_arch("transformer", d_model=32, n_heads=4),
        data=DataConfig(data_root=str(data_root), corpus="genome", context_len=128, windows_per_epoch=160,
                        eval_windows=64),
        train=TrainConfig(**t),
        export_dir=str(export_dir) if export_dir else None,
    ).validate()
