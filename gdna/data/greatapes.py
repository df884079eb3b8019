"""Great-ape species classification: segments of length L from aligned blocks, split by BLOCK.

`<root>/greatapes/<species>.fa` holds the same blocks (records `blockNNNNN`) in every species; the label
is the species' index in the sorted species names. Blocks (never positions inside one block) are split
into train/val/test so no region of the genome is in two splits. The test blocks are the same for every
seed (a fixed benchmark); train/val blocks and every segment position are drawn from the seed.
Only blocks at least L long in every species are used, so each split has the same number of segments
per species (balanced classes). Soft-masked lower case is folded; IUPAC codes read as N.

Long segments (great apes by length, up to 2^15 here): with `data.block_group` G > 1 the split unit is G
consecutive blocks (records are in chromosome order), the unit's blocks joined in order form one sequence
per species, and each unit is tiled by ⌊shortest species' length / L⌋ segments at a seeded offset. The
split is over units, so it is the same for every L (the length study compares lengths on the same units).
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from gdna.config import DataConfig
from gdna.errors import ConfigError, DataError
from gdna.data.genome import GENOME_LUT, FastaReader
from gdna.data.splits import STREAM_SUB_TEST, STREAM_SUB_TRAIN, STREAM_SUB_VAL, split_train_val, subsample
from gdna.data.tokenizer import BASE_IDS, INVALID
from gdna.registry import TASK_KINDS, TaskKind

TASK = "greatapes"  # the task name; its data is <data_root>/greatapes/<species>.fa

# raw FASTA byte → the upper-case base its token stands for (soft-masked lower case folded, IUPAC → N;
# anything else → "?", which the tokenizer then rejects naming the corpus)
_ID_TO_BASE = np.full(256, ord("?"), dtype=np.uint8)
for _base, _id in BASE_IDS.items():
    _ID_TO_BASE[_id] = ord(_base)
_NORMALISE = _ID_TO_BASE[GENOME_LUT]

APES_DIR = TASK  # <data_root>/greatapes/<species>.fa
TEST_FRACTION = 0.1
STREAM_TEST_BLOCKS, STREAM_SEGMENTS = 0x4A01, 0x4A03  # (0x4A02 drew val blocks before they became folds)


def greatapes_fastas(data_root: str | os.PathLike) -> list[Path]:
    """The species FASTAs, <data_root>/greatapes/*.fa, sorted (species i = label i); [] if none."""
    folder = Path(data_root) / APES_DIR
    return sorted(folder.glob("*.fa")) if folder.is_dir() else []


@dataclass(frozen=True)
class GreatApes:
    species: tuple[str, ...]  # sorted; label i = species[i]
    blocks: tuple[str, ...]  # record names common to all species (sorted)
    lengths: np.ndarray  # (S, B) int64: length of block b in species s
    readers: tuple[FastaReader, ...]  # one per species


def load_greatapes(root: str | os.PathLike) -> GreatApes:
    """Species FASTAs under <root>/greatapes (cached per root); block sets must be identical."""
    return _load(str(Path(root).resolve()))


@functools.lru_cache(maxsize=4)
def _load(root: str) -> GreatApes:
    folder = Path(root) / APES_DIR
    files = greatapes_fastas(root)
    if len(files) < 2:
        raise DataError(f"{folder}: needs at least 2 species FASTA files (*.fa), found {len(files)}")
    readers = tuple(FastaReader(f) for f in files)
    blocks = sorted(readers[0].contigs)
    for f, r in zip(files[1:], readers[1:]):
        if sorted(r.contigs) != blocks:
            raise DataError(f"{f}: its records differ from those of {files[0].name} (blocks must be aligned)")
    lengths = np.array([[r.contigs[b].length for b in blocks] for r in readers], dtype=np.int64)
    return GreatApes(tuple(f.stem for f in files), tuple(blocks), lengths, readers)


def split_blocks(n_blocks: int, seed: int, n_folds: int = 1, fold: int = 0, val_fraction: float = 0.1,
                 test_fraction: float = TEST_FRACTION) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Block indices → (train, val, test), sorted. Test: a fixed `test_fraction` of the blocks, the same for
    every seed (a benchmark). Val: fold `fold` of `n_folds` of the other blocks (n_folds=1: `val_fraction` of
    them), by the same seeded rule as a Genomic Benchmarks task's train/val split."""
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"greatapes test_fraction: must be in (0, 1), got {test_fraction}")
    n_test = int(round(n_blocks * test_fraction))
    order = np.random.default_rng([STREAM_TEST_BLOCKS]).permutation(n_blocks)
    test, rest = order[:n_test], order[n_test:]
    tr, va = split_train_val(len(rest), int(seed), n_folds, fold, val_fraction)
    if min(n_test, len(tr), len(va)) < 1:
        raise DataError(f"cannot split {n_blocks} blocks into train/val/test")
    return np.sort(rest[tr]), np.sort(rest[va]), np.sort(test)


class SegmentDataset(Dataset):
    """Items (ids (L,) int64, mask (L,) bool, label int), like the Genomic Benchmarks datasets (collate_cls)."""

    def __init__(self, segments: np.ndarray, labels: np.ndarray, blocks: np.ndarray, starts: np.ndarray):
        self.segments = segments  # (N, L) uint8 token ids
        self.labels = labels  # (N,) int64 species index
        self.blocks = blocks  # (N,) int64 block index of each segment
        self.starts = starts  # (N,) int64 0-based start inside the block

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: np.ndarray) -> "SegmentDataset":
        return SegmentDataset(self.segments[idx], self.labels[idx], self.blocks[idx], self.starts[idx])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        ids = torch.from_numpy(self.segments[i].astype(np.int64))
        return ids, torch.ones(len(ids), dtype=torch.bool), int(self.labels[i])


def sample_segments(apes: GreatApes, blocks: np.ndarray, seq_len: int, per_block: int, rng: np.random.Generator) -> SegmentDataset:
    """`per_block` segments per (block, species) at uniform random positions."""
    S = len(apes.species)
    segs, labels, where, offsets = [], [], [], []
    for s in range(S):
        b = np.repeat(blocks, per_block)  # (n,)
        starts = rng.integers(0, apes.lengths[s, b] - seq_len + 1)
        raw = apes.readers[s].gather_many([apes.blocks[i] for i in b], starts, seq_len)
        segs.append(GENOME_LUT[raw])
        labels.append(np.full(len(b), s, dtype=np.int64))
        where.append(b)
        offsets.append(starts)
    ids = np.concatenate(segs)
    if (ids == INVALID).any():
        s = int(np.flatnonzero((ids == INVALID).any(axis=1))[0] // (len(blocks) * per_block))
        raise DataError(f"{apes.readers[s].path}: invalid character in a sequence (expected A/C/G/T/N)")
    return SegmentDataset(ids, np.concatenate(labels), np.concatenate(where), np.concatenate(offsets))


def greatapes_datasets(
    root: str | os.PathLike,
    seq_len: int,
    seed: int,
    per_block: int = 1,
    n_folds: int = 1,
    fold: int = 0,
    val_fraction: float = 0.1,
    group: int = 1,
) -> tuple[SegmentDataset, SegmentDataset, SegmentDataset, int]:
    """(train_ds, val_ds, test_ds, n_species). The block split covers ALL blocks (so it does not depend on
    seq_len: a self-pretraining run at another length never sees this run's val or test blocks); blocks
    shorter than seq_len in any species are then left out of each part."""
    if seq_len < 1 or per_block < 1:
        raise ConfigError(f"greatapes: seq_len and per_block must be > 0, got {seq_len}, {per_block}")
    apes = load_greatapes(root)
    if group > 1:
        return _unit_datasets(apes, root, seq_len, seed, group, n_folds, fold, val_fraction)
    usable = (apes.lengths >= seq_len).all(axis=0)  # (B,)
    parts = [p[usable[p]] for p in split_blocks(len(apes.blocks), seed, n_folds, fold, val_fraction)]
    if any(len(p) == 0 for p in parts):
        raise DataError(f"{Path(root) / APES_DIR}: too few blocks of at least {seq_len} bp in every species "
                        f"({int(usable.sum())}) to fill train, val and test")
    out = []
    for k, part in enumerate(parts):
        seg_seed = [STREAM_SEGMENTS, k] if k == 2 else [int(seed), STREAM_SEGMENTS, k]  # test segments fixed too
        out.append(sample_segments(apes, part, seq_len, per_block, np.random.default_rng(seg_seed)))
    return out[0], out[1], out[2], len(apes.species)


def classification_datasets(data_cfg: DataConfig, seed: int) -> tuple[SegmentDataset, SegmentDataset, SegmentDataset, int]:
    """The `greatapes` task for a fine-tuning trial: segments of data.max_len (else data.context_len) bp,
    val = fold data.fold of data.n_folds of the non-test blocks; seeded subsamples as for any task."""
    L = data_cfg.max_len or data_cfg.context_len
    train, val, test, n = greatapes_datasets(data_cfg.root(), L, seed, 1, data_cfg.n_folds, data_cfg.fold,
                                             data_cfg.val_fraction, data_cfg.block_group)
    train = train.subset(subsample(np.arange(len(train)), data_cfg.max_train_examples, seed, STREAM_SUB_TRAIN))
    val = val.subset(subsample(np.arange(len(val)), data_cfg.max_eval_examples, seed, STREAM_SUB_VAL))
    test = test.subset(subsample(np.arange(len(test)), data_cfg.max_eval_examples, seed, STREAM_SUB_TEST))
    return train, val, test, n


def clm_sequences(data_cfg: DataConfig, task: str, seed: int) -> tuple[list[bytes], list[bytes]]:
    """(train part, val part) for self-pretraining on `greatapes`: every species' whole train (val) blocks,
    by the fine-tuning block split of (seed, fold); never a test block. Upper case, IUPAC codes as N."""
    apes = load_greatapes(data_cfg.root())
    if data_cfg.block_group > 1:  # whole units, their blocks joined (the fine-tuning unit split)
        G = data_cfg.block_group
        tr, va, _ = split_blocks(_n_units(apes, G), seed, data_cfg.n_folds, data_cfg.fold, data_cfg.val_fraction)
        return ([_NORMALISE[_unit_sequence(apes, s, u, G)].tobytes() for s in range(len(apes.species)) for u in tr],
                [_NORMALISE[_unit_sequence(apes, s, u, G)].tobytes() for s in range(len(apes.species)) for u in va])
    tr, va, _ = split_blocks(len(apes.blocks), seed, data_cfg.n_folds, data_cfg.fold, data_cfg.val_fraction)

    def read(blocks: np.ndarray) -> list[bytes]:
        return [_NORMALISE[r.gather(apes.blocks[b], np.zeros(1, dtype=np.int64), int(apes.lengths[s, b]))[0]].tobytes()
                for s, r in enumerate(apes.readers) for b in blocks]

    return read(tr), read(va)


def _n_units(apes: GreatApes, group: int) -> int:
    return -(-len(apes.blocks) // group)


def _unit_sequence(apes: GreatApes, s: int, u: int, group: int) -> np.ndarray:
    """Raw bytes (uint8) of unit u's blocks joined in order, in species s."""
    blocks = range(u * group, min((u + 1) * group, len(apes.blocks)))
    zero = np.zeros(1, dtype=np.int64)
    return np.concatenate([apes.readers[s].gather(apes.blocks[b], zero, int(apes.lengths[s, b]))[0] for b in blocks])


def _unit_datasets(apes: GreatApes, root, seq_len: int, seed: int, group: int, n_folds: int, fold: int,
                   val_fraction: float) -> tuple[SegmentDataset, SegmentDataset, SegmentDataset, int]:
    """block_group > 1: split by units of `group` consecutive blocks; each unit tiled by segments of seq_len."""
    U, S = _n_units(apes, group), len(apes.species)
    unit_len = np.add.reduceat(apes.lengths, np.arange(0, len(apes.blocks), group), axis=1)  # (S, U)
    per_unit = unit_len.min(axis=0) // seq_len  # (U,) segments per unit and species (balanced classes)
    parts = [p[per_unit[p] > 0] for p in split_blocks(U, seed, n_folds, fold, val_fraction)]
    if any(len(p) == 0 for p in parts):
        raise DataError(f"{Path(root) / APES_DIR}: too few units of {group} blocks with at least {seq_len} bp in every "
                        f"species ({int((per_unit > 0).sum())}) to fill train, val and test")
    out = []
    for k, part in enumerate(parts):
        rng = np.random.default_rng([STREAM_SEGMENTS, k, group] if k == 2 else [int(seed), STREAM_SEGMENTS, k, group])
        segs, labels, units, starts = [], [], [], []
        for s in range(S):
            for u in part.tolist():
                seq, n = _unit_sequence(apes, s, u, group), int(per_unit[u])
                shift = int(rng.integers(0, len(seq) - n * seq_len + 1))
                segs.append(GENOME_LUT[seq[shift:shift + n * seq_len]].reshape(n, seq_len))
                labels.append(np.full(n, s, dtype=np.int64))
                units.append(np.full(n, u, dtype=np.int64))
                starts.append(shift + seq_len * np.arange(n, dtype=np.int64))
        ids = np.concatenate(segs)
        if (ids == INVALID).any():
            raise DataError(f"{Path(root) / APES_DIR}: invalid character in a sequence (expected A/C/G/T/N)")
        out.append(SegmentDataset(ids, np.concatenate(labels), np.concatenate(units), np.concatenate(starts)))
    return out[0], out[1], out[2], S


def _check(root: Path, task: str) -> str | None:
    if len(greatapes_fastas(root)) >= 2:
        return None
    return f"{task} needs at least 2 species FASTA files (*.fa) in {Path(root) / APES_DIR}"


TASK_KINDS.register(TaskKind(
    name=TASK, serves=lambda task: task == TASK,
    classes=lambda root, task: [f.stem for f in greatapes_fastas(root)],
    check=_check,
    files=lambda root, task: [p for f in greatapes_fastas(root) for p in (f, f.with_name(f.name + ".fai")) if p.is_file()],
    datasets=classification_datasets, corpus=clm_sequences,
    discover=lambda root: [TASK] if len(greatapes_fastas(root)) >= 2 else [],
    summary=lambda root, task: [f"species {', '.join(f.stem for f in greatapes_fastas(root))}"] + [
        f"{f.stem}: {len(r.lengths)} records, {sum(r.lengths.values()):,} bp"
        for f, r in ((f, FastaReader(f)) for f in greatapes_fastas(root))],
    describe="species classification: <data_root>/greatapes/<species>.fa, aligned blocks split by block",
))
