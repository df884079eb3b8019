"""Genomic Benchmarks tasks (the fallback task kind: any task name that is a folder of this layout).

Layout: `<root>/genomic_benchmarks/<task>/{train,test}/<class>/<id>.txt`, one bare sequence per file.
Class ids come from the sorted class-folder names (identical in train and test), files are read in
sorted name order, so labels and example order never depend on the directory listing order.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from gdna.config import DataConfig
from gdna.errors import ConfigError, DataError
from gdna.data.splits import STREAM_SUB_TEST, STREAM_SUB_TRAIN, STREAM_SUB_VAL, split_train_val, subsample
from gdna.data.tokenizer import BYTE_TO_ID, INVALID
from gdna.registry import TASK_KINDS, TaskKind

GB_DIR = "genomic_benchmarks"
SPLITS = ("train", "test")
# The eight tasks of the full benchmark (the shared data holds a chr20 subset of four of them).
ALL_TASKS = (
    "demo_coding_vs_intergenomic_seqs",
    "demo_human_or_worm",
    "dummy_mouse_enhancers_ensembl",
    "human_enhancers_cohn",
    "human_enhancers_ensembl",
    "human_ensembl_regulatory",
    "human_nontata_promoters",
    "human_ocr_ensembl",
)


@dataclass(frozen=True)
class Split:
    """One split of a task: sequences (bytes), labels (N,) int64 and the file of each example."""

    seqs: tuple[bytes, ...]
    labels: np.ndarray  # (N,) int64, read-only
    files: tuple[str, ...]  # path of each example's file

    def __len__(self) -> int:
        return len(self.seqs)

    def __getitem__(self, i: int) -> tuple[bytes, int]:
        return self.seqs[i], int(self.labels[i])

    def __iter__(self) -> Iterator[tuple[bytes, int]]:
        return (self[i] for i in range(len(self)))

    @property
    def lengths(self) -> np.ndarray:  # (N,) int64
        return np.fromiter((len(s) for s in self.seqs), dtype=np.int64, count=len(self.seqs))


@dataclass(frozen=True)
class Task:
    name: str
    path: Path
    classes: tuple[str, ...]  # sorted class names; label i = classes[i]
    train: Split
    test: Split

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def max_len(self) -> int:
        """Longest sequence of the task (train and test)."""
        return int(max(self.train.lengths.max(), self.test.lengths.max()))


def task_dir(root: str | os.PathLike, task: str) -> Path:
    return Path(root) / GB_DIR / task


def list_tasks(root: str | os.PathLike) -> list[str]:
    """Task folders present under `<root>/genomic_benchmarks/` (sorted)."""
    base = Path(root) / GB_DIR
    if not base.is_dir():
        return []
    return sorted(e.name for e in os.scandir(base) if e.is_dir() and not e.name.startswith("."))


def load_task(root: str | os.PathLike, task: str, *, cache: bool = True) -> Task:
    """Read one task (cached per (root, task) and process: many trials load the same task)."""
    if cache:
        return _load_task_cached(str(Path(root).resolve()), task)
    return _read_task(Path(root), task)


@functools.lru_cache(maxsize=16)
def _load_task_cached(root: str, task: str) -> Task:
    return _read_task(Path(root), task)


def _read_task(root: Path, task: str) -> Task:
    path = task_dir(root, task)
    if not path.is_dir():
        present = ", ".join(list_tasks(root)) or "none"
        raise DataError(f"{path}: task folder not found (tasks present: {present}; try `gdna data download`)")
    return read_task_dir(path, task)


def read_task_dir(path: Path, task: str) -> Task:
    """Read and check a task folder holding train/ and test/ (also used on freshly unpacked downloads)."""
    class_sets = {}
    for split in SPLITS:
        split_dir = path / split
        if not split_dir.is_dir():
            raise DataError(f"{split_dir}: split folder not found")
        class_sets[split] = sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith("."))
        if len(class_sets[split]) < 2:
            raise DataError(f"{split_dir}: needs at least 2 class folders, found {len(class_sets[split])}")
    if class_sets["train"] != class_sets["test"]:
        raise DataError(
            f"{path}: class folders differ between train ({', '.join(class_sets['train'])}) "
            f"and test ({', '.join(class_sets['test'])})"
        )
    classes = tuple(class_sets["train"])
    train, test = (_read_split(path / split, classes) for split in SPLITS)
    return Task(name=task, path=path, classes=classes, train=train, test=test)


def _read_split(split_dir: Path, classes: Sequence[str]) -> Split:
    seqs: list[bytes] = []
    labels: list[int] = []
    files: list[str] = []
    for label, name in enumerate(classes):
        class_dir = split_dir / name
        names = sorted(e.name for e in os.scandir(class_dir) if e.name.endswith(".txt") and e.is_file())
        if not names:
            raise DataError(f"{class_dir}: class folder has no <id>.txt sequence files")
        for fname in names:
            fpath = os.path.join(class_dir, fname)
            with open(fpath, "rb") as f:
                seq = f.read().strip()
            if not seq:
                raise DataError(f"{fpath}: empty sequence file")
            seqs.append(seq)
            files.append(fpath)
        labels.extend([label] * len(names))
    _check_alphabet(seqs, files)
    lab = np.asarray(labels, dtype=np.int64)
    lab.flags.writeable = False
    return Split(seqs=tuple(seqs), labels=lab, files=tuple(files))


def _check_alphabet(seqs: Sequence[bytes], files: Sequence[str]) -> None:
    """One vectorized pass over all bytes; the first bad byte names its file."""
    buf = np.frombuffer(b"".join(seqs), dtype=np.uint8)
    bad = BYTE_TO_ID[buf] == INVALID
    if bad.any():
        pos = int(np.argmax(bad))
        ends = np.cumsum([len(s) for s in seqs])
        owner = int(np.searchsorted(ends, pos, side="right"))
        at = pos - (int(ends[owner - 1]) if owner else 0)
        raise DataError(f"{files[owner]}: invalid character {chr(int(buf[pos]))!r} at position {at} (expected A/C/G/T/N)")


# ---------------------------------------------------------------------------------------------
# Torch datasets for fine-tuning (plain sequence tokens, right padded per batch)


def pack_tokens(seqs: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Sequences → (flat token ids (T,) uint8, offsets (N+1,) int64), one vectorized lookup."""
    offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
    np.cumsum([len(s) for s in seqs], out=offsets[1:])
    flat = BYTE_TO_ID[np.frombuffer(b"".join(seqs), dtype=np.uint8)]
    if (flat == INVALID).any():
        raise DataError("sequence contains a character other than A/C/G/T/N")
    return flat, offsets


class ClassificationDataset(Dataset):
    """Items: (ids (L,) int64, mask (L,) bool, label int), L = min(len(seq), max_len), truncated on the right."""

    def __init__(self, seqs: Sequence[bytes], labels: np.ndarray, max_len: int):
        if max_len < 1:
            raise ConfigError(f"data.max_len: must be > 0, got {max_len}")
        self.tokens, self.offsets = pack_tokens(seqs)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.max_len = int(max_len)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        start = int(self.offsets[i])
        end = min(int(self.offsets[i + 1]), start + self.max_len)
        ids = torch.from_numpy(self.tokens[start:end].astype(np.int64))  # (L,)
        return ids, torch.ones(len(ids), dtype=torch.bool), int(self.labels[i])


def task_split_indices(task: Task, data_cfg: DataConfig, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, val_idx) into task.train: the stratified fold split, then seeded subsampling."""
    tr, va = split_train_val(task.train.labels, seed, data_cfg.n_folds, data_cfg.fold, data_cfg.val_fraction)
    return (
        subsample(tr, data_cfg.max_train_examples, seed, STREAM_SUB_TRAIN),
        subsample(va, data_cfg.max_eval_examples, seed, STREAM_SUB_VAL),
    )


def classification_datasets(
    data_cfg: DataConfig, seed: int
) -> tuple[ClassificationDataset, ClassificationDataset, ClassificationDataset, int]:
    """(train_ds, val_ds, test_ds, n_classes) for data_cfg.task; val is fold `fold` of the task's train split."""
    task = load_task(data_cfg.root(), data_cfg.task)
    max_len = data_cfg.max_len or task.max_len
    tr, va = task_split_indices(task, data_cfg, seed)
    te = subsample(np.arange(len(task.test)), data_cfg.max_eval_examples, seed, STREAM_SUB_TEST)

    def make(split: Split, idx: np.ndarray) -> ClassificationDataset:
        return ClassificationDataset([split.seqs[i] for i in idx], split.labels[idx], max_len)

    return make(task.train, tr), make(task.train, va), make(task.test, te), task.n_classes


def task_clm_sequences(data_cfg: DataConfig, task_name: str, seed: int) -> tuple[list[bytes], list[bytes]]:
    """(train part, val part) of one task's TRAIN split, by the fine-tuning fold split; never test."""
    task = load_task(data_cfg.root(), task_name)
    tr, va = split_train_val(task.train.labels, seed, data_cfg.n_folds, data_cfg.fold, data_cfg.val_fraction)
    return [task.train.seqs[i] for i in tr], [task.train.seqs[i] for i in va]


def task_files(root: Path, task: str) -> list[Path]:
    """Every sequence file of the task (train and test), for the data fingerprint."""
    out = []
    for split in SPLITS:
        for dirpath, _, names in os.walk(task_dir(root, task) / split):
            out += [Path(dirpath) / n for n in names if n.endswith(".txt")]
    return out


def _classes(root: Path, task: str) -> list[str]:
    d = task_dir(root, task) / "train"
    return sorted(e.name for e in os.scandir(d) if e.is_dir() and not e.name.startswith(".")) if d.is_dir() else []


def _check(root: Path, task: str) -> str | None:
    if (task_dir(root, task) / "train").is_dir():
        return None
    have = ", ".join(list_tasks(root)) or "none"
    return f"unknown task {task!r}: no {task_dir(root, task) / 'train'} (available: {have})"


def _summary(root: Path, name: str) -> list[str]:
    task = load_task(root, name)
    lines = [f"classes {', '.join(task.classes)}"]
    for split_name, split in (("train", task.train), ("test", task.test)):
        counts = np.bincount(split.labels, minlength=task.n_classes)
        per_class = ", ".join(f"{c}={n}" for c, n in zip(task.classes, counts))
        lens = split.lengths
        lines.append(f"{split_name:5s} {len(split):7d}  ({per_class})  length {lens.min()}-{lens.max()}")
    return lines


TASK_KINDS.register(TaskKind(
    name="genomic_benchmarks", serves=lambda task: bool(task) and "/" not in task, classes=_classes, check=_check,
    files=task_files, datasets=classification_datasets, corpus=task_clm_sequences, fallback=True,
    discover=list_tasks, summary=_summary,
    describe="<data_root>/genomic_benchmarks/<task>/{train,test}/<class>/<id>.txt",
))
