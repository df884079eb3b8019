"""Great-ape species classification: segments of length L from aligned blocks, split by BLOCK.

`<root>/greatapes/<species>.fa` holds the same blocks (records `blockNNNNN`) in every species; the label
is the species' index in the sorted species names. Blocks (never positions inside one block) are split
into train/val/test so no region of the genome is in two splits. The test blocks are the same for every
seed (a fixed benchmark); train/val blocks and every segment position are drawn from the seed.
Only blocks at least L long in every species are used, so each split has the same number of segments
per species (balanced classes). Soft-masked lower case is folded; IUPAC codes read as N.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from gdna.errors import ConfigError, DataError
from gdna.data.genome import GENOME_LUT, FastaReader
from gdna.data.tokenizer import INVALID

APES_DIR = "greatapes"
STREAM_TEST_BLOCKS, STREAM_VAL_BLOCKS, STREAM_SEGMENTS = 0x4A01, 0x4A02, 0x4A03


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
    files = sorted(folder.glob("*.fa")) if folder.is_dir() else []
    if len(files) < 2:
        raise DataError(f"{folder}: needs at least 2 species FASTA files (*.fa), found {len(files)}")
    readers = tuple(FastaReader(f) for f in files)
    blocks = sorted(readers[0].contigs)
    for f, r in zip(files[1:], readers[1:]):
        if sorted(r.contigs) != blocks:
            raise DataError(f"{f}: its records differ from those of {files[0].name} (blocks must be aligned)")
    lengths = np.array([[r.contigs[b].length for b in blocks] for r in readers], dtype=np.int64)
    return GreatApes(tuple(f.stem for f in files), tuple(blocks), lengths, readers)


def split_blocks(n_blocks: int, seed: int, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> tuple[np.ndarray, ...]:
    """Block indices → (train, val, test), sorted; test fixed for all seeds, val drawn from the seed."""
    if len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1) > 1e-6:
        raise ConfigError(f"greatapes fractions: need 3 positive fractions summing to 1, got {fractions}")
    n_test, n_val = int(round(n_blocks * fractions[2])), int(round(n_blocks * fractions[1]))
    if min(n_test, n_val, n_blocks - n_test - n_val) < 1:
        raise DataError(f"cannot split {n_blocks} blocks into train/val/test")
    order = np.random.default_rng([STREAM_TEST_BLOCKS]).permutation(n_blocks)
    test, rest = order[:n_test], order[n_test:]
    rest = np.random.default_rng([int(seed), STREAM_VAL_BLOCKS]).permutation(rest)
    val, train = rest[:n_val], rest[n_val:]
    return np.sort(train), np.sort(val), np.sort(test)


class SegmentDataset(Dataset):
    """Items (ids (L,) int64, mask (L,) bool, label int), like the Genomic Benchmarks datasets (collate_cls)."""

    def __init__(self, segments: np.ndarray, labels: np.ndarray, blocks: np.ndarray, starts: np.ndarray):
        self.segments = segments  # (N, L) uint8 token ids
        self.labels = labels  # (N,) int64 species index
        self.blocks = blocks  # (N,) int64 block index of each segment
        self.starts = starts  # (N,) int64 0-based start inside the block

    def __len__(self) -> int:
        return len(self.labels)

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
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
) -> tuple[SegmentDataset, SegmentDataset, SegmentDataset, int]:
    """(train_ds, val_ds, test_ds, n_species); blocks shorter than seq_len in any species are left out."""
    if seq_len < 1 or per_block < 1:
        raise ConfigError(f"greatapes: seq_len and per_block must be > 0, got {seq_len}, {per_block}")
    apes = load_greatapes(root)
    usable = np.flatnonzero((apes.lengths >= seq_len).all(axis=0))
    parts = split_blocks(len(usable), seed, fractions)
    out = []
    for k, part in enumerate(parts):
        seg_seed = [STREAM_SEGMENTS, k] if k == 2 else [int(seed), STREAM_SEGMENTS, k]  # test segments fixed too
        out.append(sample_segments(apes, usable[part], seq_len, per_block, np.random.default_rng(seg_seed)))
    return out[0], out[1], out[2], len(apes.species)
