"""Seeded train/val splits and subsamples, shared by every task kind and corpus (one rule for all).

The random streams are independent (np.random.SeedSequence entropy): no two uses share draws.
"""
from __future__ import annotations

import numpy as np

from gdna.errors import ConfigError, DataError

# independent random streams (np.random.SeedSequence entropy) so no two uses share draws
STREAM_SPLIT, STREAM_SUB_TRAIN, STREAM_SUB_VAL, STREAM_SUB_TEST = 0x5B11, 0x5B12, 0x5B13, 0x5B14



def split_train_val(
    n_or_labels: int | Sequence[int] | np.ndarray,
    seed: int,
    n_folds: int = 5,
    fold: int = 0,
    val_fraction: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/val split of range(n) → (train_idx, val_idx), both sorted int64.

    n_folds > 1: a seeded permutation is cut into n_folds near-equal parts and part `fold` is the val set
    (over all folds the val sets partition range(n)). n_folds == 1: the first round(n * val_fraction) of
    the permutation. Given labels (an array), the split is stratified: each class is split on its own.
    """
    if isinstance(n_or_labels, (int, np.integer)):
        n = int(n_or_labels)
        groups = [np.arange(n)]
    else:
        labels = np.asarray(n_or_labels)
        n = len(labels)
        groups = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    if n_folds < 1:
        raise ConfigError(f"data.n_folds: must be ≥ 1, got {n_folds}")
    if not 0 <= fold < n_folds:
        raise ConfigError(f"data.fold: {fold} is outside 0..{n_folds - 1}")
    if n_folds == 1 and not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction: must be in (0, 1), got {val_fraction}")
    if n < max(n_folds, 2):
        raise DataError(f"cannot split {n} examples into train and val ({n_folds} folds)")
    rng = np.random.default_rng([int(seed), STREAM_SPLIT])
    val_parts = []
    for idx in groups:
        perm = rng.permutation(idx)
        if n_folds > 1:
            val_parts.append(np.array_split(perm, n_folds)[fold])
        else:
            val_parts.append(perm[: int(round(len(perm) * val_fraction))])
    val = np.sort(np.concatenate(val_parts)).astype(np.int64)
    is_val = np.zeros(n, dtype=bool)
    is_val[val] = True
    train = np.flatnonzero(~is_val).astype(np.int64)
    if not len(val) or not len(train):
        raise DataError(f"split of {n} examples left an empty train or val set (n_folds={n_folds})")
    return train, val


def subsample(idx: np.ndarray, k: int | None, seed: int, stream: int) -> np.ndarray:
    """At most k of `idx`, drawn without replacement from (seed, stream); order kept (sorted input stays sorted)."""
    idx = np.asarray(idx, dtype=np.int64)
    if k is None or k >= len(idx):
        return idx
    if k <= 0:
        raise ConfigError(f"data.max_*_examples: must be > 0, got {k}")
    rng = np.random.default_rng([int(seed), int(stream)])
    return idx[np.sort(rng.choice(len(idx), size=k, replace=False))]
