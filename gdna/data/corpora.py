"""Causal-LM pretraining corpora: genome | task | domain. Items are token windows ids (L+1,) int64.

input = ids[:-1], target = ids[1:]; PAD (0) only ever appears at the right end and `collate_clm` turns
pad targets into -100 (ignored by cross-entropy).

Which sequences each corpus uses (test sequences are NEVER read into a corpus):
- genome: train_ds = `windows_per_epoch` windows of the BED's `train` split, redrawn per epoch
  (`set_epoch`, reproducible from (seed, epoch)); val_ds = `eval_windows` fixed windows of `valid`;
  `clm_test_dataset`: `eval_windows` fixed windows of `test` (the pretraining's test perplexity).
- task: the task's train split, cut by the same seeded fold split as fine-tuning
  (`split_train_val(labels, seed, n_folds, fold, val_fraction)`): train_ds = its train part, val_ds =
  its val part. So a task_spt pretraining run with the same (seed, fold) as the fine-tuning it feeds never
  sees that fine-tuning's validation sequences (model selection stays unbiased).
- domain: the same rule applied to every task in `domain_tasks`, concatenated.
  Each task's part comes from its task kind (gdna.data.tasks.task_clm_sequences; e.g. great apes give
  every species' whole blocks of the fine-tuning block split's train (val) part), never a test sequence.
The three corpora are registered here (gdna.registry.CORPORA); a strategy names the corpus it uses.
Sequences longer than L+1 tokens are cut into consecutive L+1 chunks; the last chunk is right padded
(chunks of a single token, which have no target, are dropped).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from gdna.config import DataConfig
from gdna.errors import ConfigError, DataError
from gdna.data.genome import GenomeWindows
from gdna.data.genomic_benchmarks import pack_tokens
from gdna.data.splits import STREAM_SUB_TRAIN, STREAM_SUB_VAL, subsample
from gdna.data.tasks import task_clm_sequences
from gdna.data.tokenizer import PAD_ID
from gdna.fingerprint import files_fingerprint
from gdna.registry import CORPORA, Corpus, task_kind

IGNORE_INDEX = -100


class WindowDataset(Dataset):
    """A fixed set of windows (N, L+1) → items ids (L+1,) int64."""

    def __init__(self, windows: np.ndarray):
        self.windows = np.ascontiguousarray(windows, dtype=np.uint8)  # (N, L+1) token ids

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(self.windows[i].astype(np.int64))  # (L+1,)


class GenomeEpochDataset(Dataset):
    """`n` genome windows whose content depends on the epoch: call set_epoch(e) before each pass
    (like DistributedSampler; with DataLoader workers, use non-persistent workers so they see it).
    The same (seed, epoch) gives the same windows on every rank and in every run."""

    def __init__(self, genome: GenomeWindows, n: int, epoch: int = 0):
        if n < 1:
            raise ConfigError(f"data.windows_per_epoch: must be > 0, got {n}")
        self.genome, self.n = genome, int(n)
        self.epoch = -1
        self.set_epoch(epoch)

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.windows = self.genome.epoch_windows(epoch, self.n).astype(np.uint8)  # (n, L+1)
            self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(self.windows[i].astype(np.int64))  # (L+1,)


def collate_clm(batch: Sequence[torch.Tensor], trim: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Windows ids (L+1,) → inputs (B,L) int64, targets (B,L) int64 (-100 at pads), mask (B,L) bool.

    trim=True drops trailing columns that are padding in every row (shorter task batches, same loss).
    """
    ids = torch.stack(list(batch))  # (B, L+1)
    if trim:
        real = int((ids != PAD_ID).sum(dim=1).max())
        ids = ids[:, : max(real, 2)]
    inputs, targets = ids[:, :-1], ids[:, 1:].clone()
    targets[targets == PAD_ID] = IGNORE_INDEX
    return inputs, targets, inputs != PAD_ID


def chunk_windows(seqs: Sequence[bytes], window: int) -> np.ndarray:
    """Sequences → windows (N, window) uint8: consecutive chunks, last one right padded with PAD."""
    flat, offsets = pack_tokens(seqs)
    lengths = np.diff(offsets)
    n_chunks = -(-lengths // window)  # (S,)
    first_row = np.cumsum(n_chunks) - n_chunks  # (S,) first window of each sequence
    out = np.full((int(n_chunks.sum()), window), PAD_ID, dtype=np.uint8)
    dest = out.reshape(-1)
    for a, b, r in zip(offsets[:-1].tolist(), offsets[1:].tolist(), first_row.tolist()):
        dest[r * window:r * window + b - a] = flat[a:b]  # one contiguous copy per sequence
    k = np.arange(len(out)) - np.repeat(first_row, n_chunks)  # chunk index within its sequence
    size = np.minimum(window, np.repeat(lengths, n_chunks) - k * window)
    return out[size >= 2]  # a chunk of a single token has no target


def genome_datasets(data_cfg: DataConfig, seed: int) -> tuple[Dataset, Dataset]:
    """Windows of the BED's train intervals (redrawn per epoch) and fixed windows of its valid intervals."""
    L = data_cfg.context_len
    fasta, bed = data_cfg.path(data_cfg.genome_fasta), data_cfg.path(data_cfg.genome_bed)
    train = GenomeEpochDataset(GenomeWindows(fasta, bed, "train", L, seed), data_cfg.windows_per_epoch)
    val = GenomeWindows(fasta, bed, "valid", L, seed).fixed_windows(data_cfg.eval_windows)
    return train, WindowDataset(val)


def genome_test(data_cfg: DataConfig, seed: int) -> Dataset | None:
    """`eval_windows` fixed windows of the BED's `test` intervals (test perplexity); None if it has none."""
    L = data_cfg.context_len
    fasta, bed = data_cfg.path(data_cfg.genome_fasta), data_cfg.path(data_cfg.genome_bed)
    try:
        return WindowDataset(GenomeWindows(fasta, bed, "test", L, seed).fixed_windows(data_cfg.eval_windows))
    except DataError as e:
        if "no intervals for split" in str(e) or "interval is at least" in str(e):
            return None
        raise


def task_windows(data_cfg: DataConfig, names: Sequence[str], seed: int) -> tuple[Dataset, Dataset]:
    """The train (val) parts of the named tasks' train splits, cut into L+1 windows, seeded subsamples."""
    L = data_cfg.context_len
    train_seqs: list[bytes] = []
    val_seqs: list[bytes] = []
    for name in names:
        tr, va = task_clm_sequences(data_cfg, name, seed)
        train_seqs += tr
        val_seqs += va
    train_w, val_w = chunk_windows(train_seqs, L + 1), chunk_windows(val_seqs, L + 1)
    train_w = train_w[subsample(np.arange(len(train_w)), data_cfg.max_train_examples, seed, STREAM_SUB_TRAIN)]
    val_w = val_w[subsample(np.arange(len(val_w)), data_cfg.max_eval_examples, seed, STREAM_SUB_VAL)]
    if not len(train_w) or not len(val_w):
        raise DataError(f"{data_cfg.root()}: the {data_cfg.corpus} corpus is empty")
    return WindowDataset(train_w), WindowDataset(val_w)


def _one_task(data_cfg: DataConfig, seed: int) -> tuple[Dataset, Dataset]:
    if not data_cfg.task:
        raise ConfigError("data.task: the task corpus needs a task")
    return task_windows(data_cfg, (data_cfg.task,), seed)


def _all_tasks(data_cfg: DataConfig, seed: int) -> tuple[Dataset, Dataset]:
    if not data_cfg.domain_tasks:
        raise ConfigError("data.domain_tasks: the domain corpus needs at least one task")
    return task_windows(data_cfg, tuple(data_cfg.domain_tasks), seed)


def clm_datasets(data_cfg: DataConfig, seed: int) -> tuple[Dataset, Dataset]:
    """(train_ds, val_ds) of ids (L+1,) windows for data_cfg.corpus (see the module docstring)."""
    data_cfg.validate()
    return CORPORA.get(data_cfg.corpus, "data.corpus").datasets(data_cfg, seed)


def clm_test_dataset(data_cfg: DataConfig, seed: int) -> Dataset | None:
    """Test windows of the corpus (the genome's BED `test` split), or None when it has no test split
    (task corpora: the tasks' test sequences are never read into a corpus)."""
    corpus = CORPORA.get(data_cfg.corpus, "data.corpus")
    return corpus.test(data_cfg, seed) if corpus.test is not None else None


def corpus_fingerprint(data_cfg: DataConfig) -> str:
    """Fingerprint of every file the corpus of `data_cfg` reads (the same data elsewhere: the same value)."""
    return files_fingerprint(CORPORA.get(data_cfg.corpus, "data.corpus").files(data_cfg), data_cfg.root())


def _task_files(data_cfg: DataConfig, names: Sequence[str]) -> list[Path]:
    return [p for t in names if t for p in task_kind(t).files(data_cfg.root(), t)]


CORPORA.register(Corpus(
    name="genome", reads="none", datasets=genome_datasets,
    files=lambda d: [d.path(d.genome_fasta), d.path(d.genome_bed)],
    describe="the genome's BED train windows", needs=("genome_fasta", "genome_bed"), test=genome_test,
))
CORPORA.register(Corpus(name="task", reads="task", datasets=_one_task,
                        files=lambda d: _task_files(d, (d.task,)), describe="each task's train split"))
CORPORA.register(Corpus(name="domain", reads="all_tasks", datasets=_all_tasks,
                        files=lambda d: _task_files(d, d.domain_tasks), describe="all tasks' train splits"))
