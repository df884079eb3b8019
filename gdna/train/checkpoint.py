"""Training-state checkpoints: everything needed to continue bit-exactly (on CPU) where a run stopped.

Layout of a checkpoint directory (one file, written by rank 0, uploaded by `ray.train.report`):

    state.pt = {
      "format": 1, "identity": TrialConfig.identity(), "objective": "cls" | "clm",
      "epoch": int,            # cls: epochs completed; clm: the epoch (data pass) in progress
      "pos": int,              # clm: optimizer steps already taken inside that epoch
      "step": int,             # optimizer steps completed
      "model": state_dict, "optimizer": ..., "scheduler": ..., "scaler": ... | None,
      "rng": {"torch", "cuda", "numpy", "python"},   # data order is a pure function of (seed, epoch, pos)
      "best": {"value": float, "at": int, "model": state_dict} | None,   # best on validation
      "bad_epochs": int,       # cls early-stopping counter
      "history": [metrics dict per report],
      "done": bool, "final": final metrics dict | None,   # a finished run is re-reported, not redone
    }
"""
from __future__ import annotations

import copy
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

STATE_FILE = "state.pt"
FORMAT = 1


def capture_rng() -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def restore_rng(rng: dict[str, Any]) -> None:
    torch.set_rng_state(rng["torch"])
    if rng.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    np.random.set_state(rng["numpy"])
    random.setstate(rng["python"])


def cpu_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of the module's state (safe to keep while training goes on)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def save_state(directory: str | os.PathLike, state: dict[str, Any]) -> Path:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / (STATE_FILE + ".tmp")
    torch.save({"format": FORMAT, **state}, tmp)
    os.replace(tmp, d / STATE_FILE)
    return d / STATE_FILE


def load_state(directory: str | os.PathLike) -> dict[str, Any]:
    path = Path(directory) / STATE_FILE
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("format") != FORMAT:
        raise RuntimeError(f"{path}: unsupported checkpoint format {state.get('format')!r}")
    return state


def progress(directory: str | os.PathLike) -> tuple[int, int] | None:
    """How far the checkpoint in `directory` got: (done, optimizer steps); None when it does not load
    (torn by a kill mid-copy, deleted meanwhile, another format)."""
    try:
        st = load_state(directory)
    except Exception:  # noqa: BLE001 - any unreadable state
        return None
    return (int(bool(st.get("done"))), int(st.get("step", 0)))


def furthest(directories: list[str]) -> str | None:
    """The checkpoint that got furthest (`progress`), the first of equals in the given order; None when
    none loads."""
    best, best_p = None, None
    for d in directories:
        p = progress(d)
        if p is not None and (best_p is None or p > best_p):
            best, best_p = d, p
    return best


def older_checkpoints(path: str | os.PathLike) -> list[Path]:
    """The run's other checkpoints older than `path` (siblings named checkpoint_*, whose names sort by
    age: Train's timestamps, Tune's and LocalRuntime's counters), newest first."""
    p = Path(path)
    return sorted((q for q in p.parent.glob("checkpoint_*") if q.is_dir() and q.name < p.name), reverse=True)


def clone_state(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return copy.deepcopy(sd)
