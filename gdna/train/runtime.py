"""Where the training loop runs: inside a Ray Train worker (`RayRuntime`) or in-process (`LocalRuntime`).

The loop in `gdna.train.loop` is ONE code path; only these few operations differ: rank / world size /
device, wrapping the model for DDP, all-reduce, `report(metrics, checkpoint_dir)`, the checkpoint to
resume from, and where the run's `events.jsonl` lives. `LocalRuntime` exists for tests of the loop
math and for the overhead benchmark; production runs always go through `RayRuntime` (TorchTrainer).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.distributed as dist

from gdna.train.events import EVENTS_FILE, append_line


class Runtime:
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.to(self.device)

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum over ranks (in place and returned); a no-op with one worker."""
        if self.world_size > 1:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        raise NotImplementedError

    @contextlib.contextmanager
    def resume_dir(self) -> Iterator[str | None]:
        """The directory of the checkpoint to resume from, or None for a fresh start."""
        yield None

    def log_event(self, event: dict[str, Any]) -> None:
        """Append one JSON line to the run's events.jsonl (rank 0 only)."""


class RayRuntime(Runtime):
    """Inside `TorchTrainer`: Ray Train V2 context, `prepare_model` (DDP when world_size > 1)."""

    def __init__(self) -> None:
        import ray.train
        import ray.train.torch

        self._train = ray.train
        ctx = ray.train.get_context()
        self.rank = ctx.get_world_rank()
        self.world_size = ctx.get_world_size()
        self.device = ray.train.torch.get_device()
        self._storage = ctx.get_storage()

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        import ray.train.torch

        return ray.train.torch.prepare_model(model)

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        from ray.train import Checkpoint

        ckpt = Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        self._train.report(metrics, checkpoint=ckpt)

    @contextlib.contextmanager
    def resume_dir(self) -> Iterator[str | None]:
        ckpt = self._train.get_checkpoint()
        if ckpt is None:
            yield None
            return
        with ckpt.as_directory() as d:
            yield d

    def log_event(self, event: dict[str, Any]) -> None:
        import pyarrow.fs

        fs = self._storage.storage_filesystem
        path = f"{self._storage.experiment_fs_path}/{EVENTS_FILE}"
        line = json.dumps(event, sort_keys=True) + "\n"
        if isinstance(fs, pyarrow.fs.LocalFileSystem):
            append_line(Path(path), line)
            return
        old = b""
        with contextlib.suppress(FileNotFoundError, OSError):
            with fs.open_input_stream(path) as f:
                old = f.read()
        with fs.open_output_stream(path) as f:  # object stores have no append: rewrite
            f.write(old + line.encode())


class LocalRuntime(Runtime):
    """In-process, single worker. Checkpoints are copied to `<run_dir>/checkpoint_<n>` (the newest
    `keep` are kept) and `resume_dir` yields the newest, which mimics TorchTrainer's resume by name."""

    def __init__(self, run_dir: str | os.PathLike, device: str | torch.device | None = None, keep: int = 2):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.keep = keep
        self.reports: list[dict[str, Any]] = []

    def _checkpoints(self) -> list[Path]:
        return sorted(self.run_dir.glob("checkpoint_*"), key=lambda p: int(p.name.split("_")[1]))

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        self.reports.append(dict(metrics))
        if checkpoint_dir:
            existing = self._checkpoints()
            n = int(existing[-1].name.split("_")[1]) + 1 if existing else 0
            shutil.copytree(checkpoint_dir, self.run_dir / f"checkpoint_{n:06d}")
            for old in self._checkpoints()[: -self.keep]:
                shutil.rmtree(old, ignore_errors=True)

    @contextlib.contextmanager
    def resume_dir(self) -> Iterator[str | None]:
        existing = self._checkpoints()
        yield str(existing[-1]) if existing else None

    def log_event(self, event: dict[str, Any]) -> None:
        append_line(self.run_dir / EVENTS_FILE, json.dumps(event, sort_keys=True) + "\n")
