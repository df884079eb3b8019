"""Classification tasks of any kind (gdna.registry.TASK_KINDS): datasets, classes, the task corpus, collate.

The loop, the plan and the analysis call these; each task kind (Genomic Benchmarks folders, great apes,
...) provides them for the task names it serves.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from gdna.config import DataConfig
from gdna.data.tokenizer import PAD_ID
from gdna.errors import ConfigError
from gdna.fingerprint import files_fingerprint
from gdna.registry import task_kind


def classification_datasets(data_cfg: DataConfig, seed: int) -> tuple:
    """(train_ds, val_ds, test_ds, n_classes) for data_cfg.task; val is fold `fold` of the task's train
    split. Items: (ids (L,) int64, mask (L,) bool, label int)."""
    data_cfg.validate()
    if not data_cfg.task:
        raise ConfigError("data.task: a classification trial needs a task")
    return task_kind(data_cfg.task).datasets(data_cfg, seed)


def task_clm_sequences(data_cfg: DataConfig, task: str, seed: int) -> tuple[list[bytes], list[bytes]]:
    """(train part, val part) of one task's training data for a causal-LM corpus; never test sequences."""
    return task_kind(task).corpus(data_cfg, task, seed)


def task_classes(root: Path, task: str) -> list[str]:
    """The task's sorted class names ([] when its data is not here)."""
    return task_kind(task).classes(Path(root), task)


def task_problem(root: Path, task: str) -> str | None:
    """None when the task's data is under `root`, else one line saying what is missing."""
    return task_kind(task).check(Path(root), task)


def task_fingerprint(root: str, task: str) -> str:
    """Fingerprint of every file the task's examples come from (gdna.fingerprint: one stat per file once
    the content hashes are cached)."""
    return files_fingerprint(task_kind(task).files(Path(root), task), Path(root))


def collate_cls(batch: Sequence[tuple[torch.Tensor, torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad to the longest item → ids (B,L) int64 (PAD=0), mask (B,L) bool, labels (B,) int64."""
    L = max(len(item[0]) for item in batch)
    ids = torch.full((len(batch), L), PAD_ID, dtype=torch.int64)
    mask = torch.zeros((len(batch), L), dtype=torch.bool)
    for row, (x, _, _) in enumerate(batch):
        ids[row, : len(x)] = x
        mask[row, : len(x)] = True
    labels = torch.tensor([item[2] for item in batch], dtype=torch.int64)
    return ids, mask, labels
