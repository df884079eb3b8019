"""Deterministic data order and sharding: the GLOBAL batch is the same whatever the worker count.

Epoch `e` visits the training set in the permutation drawn from (seed, e). It is cut into global
batches of `batch_size`; each global batch is split into `world_size` contiguous parts (one per rank),
and each part into micro-batches of at most `micro_batch_size` (gradient accumulation). So the state
of the data order is just (epoch, optimizer steps taken in that epoch): nothing to save but integers.
A last partial global batch is kept when every rank gets at least one example, else dropped.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from gdna.errors import ConfigError


def per_worker_batch(batch_size: int, world_size: int, micro_batch_size: int | None) -> tuple[int, int]:
    """(per-worker batch, micro-batch) for a global batch; ConfigError when it does not divide."""
    if batch_size % world_size:
        raise ConfigError(
            f"train.batch_size: global batch {batch_size} is not divisible by the {world_size} workers"
        )
    local = batch_size // world_size
    micro = micro_batch_size or local
    if micro <= 0 or local % micro:
        raise ConfigError(
            f"train.micro_batch_size: per-worker batch {local} (= {batch_size} / {world_size} workers) "
            f"is not divisible by micro_batch_size={micro_batch_size}"
        )
    return local, micro


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([int(seed), int(epoch), 0x5EED]).permutation(n)


def global_batches(n: int, batch_size: int, world_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    order = epoch_permutation(n, seed, epoch)
    out = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    if out and len(out[-1]) < batch_size and len(out[-1]) < world_size:
        out.pop()
    return out


def steps_per_epoch(n: int, batch_size: int, world_size: int) -> int:
    full, rest = divmod(n, batch_size)
    return full + (1 if rest and rest >= world_size else 0)


def rank_plan(
    n: int, batch_size: int, world_size: int, rank: int, micro: int, seed: int, epoch: int
) -> list[tuple[int, list[np.ndarray]]]:
    """For each optimizer step of the epoch: (global batch size, this rank's micro-batches of indices)."""
    plan = []
    for gb in global_batches(n, batch_size, world_size, seed, epoch):
        part = np.array_split(gb, world_size)[rank]
        plan.append((len(gb), [part[i : i + micro] for i in range(0, len(part), micro)]))
    return plan


def eval_shard(n: int, world_size: int, rank: int) -> np.ndarray:
    """This rank's contiguous share of an evaluation set (every example counted exactly once)."""
    return np.array_split(np.arange(n), world_size)[rank]


def loader(
    ds: Dataset, index_batches: Sequence[np.ndarray], collate: Callable[[list], Any], workers: int
) -> Iterator[Any]:
    """Iterate `index_batches` (lists of dataset indices) as collated batches, optionally with loader
    processes. A private generator keeps the DataLoader from drawing on the global torch RNG, so
    resuming mid-epoch leaves dropout's random stream untouched."""
    if not index_batches:
        return iter(())
    batches = [b.tolist() for b in index_batches]
    return iter(
        DataLoader(
            ds,
            batch_sampler=batches,
            collate_fn=collate,
            num_workers=workers,
            generator=torch.Generator(),
            persistent_workers=False,
        )
    )


# ---------------------------------------------------------------------------------------------
# Sequence-length warmup (causal LM): HyenaDNA's schedule of short windows first, doubling up to the target.
def seq_len_schedule(target: int, start: int, steps_per_stage: int) -> list[tuple[int, int]]:
    """[(first optimizer step, sequence length)] in order: `start`, 2·start, 4·start, ... each for
    `steps_per_stage` steps, then `target` from there on. start = 0 (or ≥ target): [(0, target)]."""
    out, length, step = [], int(start), 0
    while 0 < length < target:
        out.append((step, length))
        length, step = length * 2, step + int(steps_per_stage)
    out.append((step, int(target)))
    return out


def seq_len_at(schedule: list[tuple[int, int]], step: int) -> int:
    """The sequence length of optimizer step `step` (0-based) under `schedule`."""
    length = schedule[0][1]
    for first, L in schedule:
        if step >= first:
            length = L
    return length


def cut_clm_batch(batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor], length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A collated causal-LM batch (inputs (B, L), targets (B, L), mask (B, L)) cut into pieces of
    `length` tokens: (B·⌈L/length⌉, length) each, the same tokens and targets (targets[t] = ids[t+1], so
    piece i predicts ids[i·length+1 .. (i+1)·length]), so the tokens per optimizer step do not change.
    A last partial piece is right padded (mask False, target -100); pieces without a target are dropped."""
    inputs, targets, mask = batch
    Bsz, L = inputs.shape
    if length >= L:
        return batch
    pad = (-L) % length
    if pad:
        inputs = torch.nn.functional.pad(inputs, (0, pad), value=0)
        targets = torch.nn.functional.pad(targets, (0, pad), value=-100)
        mask = torch.nn.functional.pad(mask, (0, pad), value=False)
    inputs, targets, mask = (t.reshape(-1, length) for t in (inputs, targets, mask))
    keep = (targets != -100).any(dim=1)
    if not bool(keep.all()):
        inputs, targets, mask = inputs[keep], targets[keep], mask[keep]
    return inputs, targets, mask
