"""Shared by the bench scripts (a module, not a bench): time a callable the same way everywhere."""
from __future__ import annotations

import statistics
import time
from typing import Callable


def median_times(fn: Callable[[], object], repeats: int, sync: Callable[[], object] | None = None) -> tuple[float, float]:
    """(wall s, process CPU s): the medians over `repeats` calls of fn() (+ sync(), e.g. a CUDA synchronize).
    No warm-up here: the caller runs what it wants untimed first."""
    walls, cpus = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        if sync is not None:
            sync()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus)
