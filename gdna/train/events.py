"""A training run's events: `<run dir>/events.jsonl`, one JSON line per training start / end / re-report
(written by rank 0 through the runtime), read back to count how often a run (re)started."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

EVENTS_FILE = "events.jsonl"


def append_line(path: Path, line: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:  # O_APPEND: one write per line, never interleaved
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def run_dir(storage_path: str, name: str) -> Path:
    return Path(storage_path).expanduser().resolve() / name


def read_events(storage_path: str, name: str) -> list[dict[str, Any]]:
    path = run_dir(storage_path, name) / EVENTS_FILE
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a torn last line after a hard kill
    return out


def count_training_starts(storage_path: str, name: str) -> int:
    """How many times training (re)started in run `<storage_path>/<name>` (rank 0's start events)."""
    return sum(1 for e in read_events(storage_path, name) if e.get("event") == "start")
