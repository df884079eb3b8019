"""Where the training loop runs: inside a Ray Train worker (`RayRuntime`), inside a Tune trial's own
process (`TuneRuntime`, `resources.runner: inline`) or in-process (`LocalRuntime`).

The loop in `gdna.train.loop` is ONE code path; only these few operations differ: rank / world size /
device, wrapping the model for DDP, all-reduce, `report(metrics, checkpoint_dir)`, the checkpoint to
resume from, and where the run's `events.jsonl` lives. `LocalRuntime` exists for tests of the loop
math and for the overhead benchmark; sweeps go through `RayRuntime` (TorchTrainer, runner `train`) or
`TuneRuntime` (runner `inline`).
"""
from __future__ import annotations

import contextlib
import json
import os
import posixpath
import shutil
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.distributed as dist

from gdna.train.events import EVENTS_FILE, append_line, read_events


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
        """The furthest complete checkpoint of this run: Train's latest (from the run's checkpoint manager
        snapshot, or kept across `max_failures` retries) or one further on in the run directory that Train's
        controller never recorded. A worker uploads its checkpoint before the controller processes the
        report and saves its snapshot; a driver or worker killed in between leaves that newer checkpoint on
        storage, and trusting only `get_checkpoint()` would train its epochs again. Every rank decides by
        itself from the same listing and the same files (no collective), so all ranks resume alike."""
        from gdna.train.checkpoint import furthest

        train_ckpt = self._train.get_checkpoint()
        train_name = posixpath.basename(train_ckpt.path) if train_ckpt is not None else ""
        # Train's own and every later one (an unrecorded one is newer: names are upload timestamps), newest first
        candidates = [c for c in self._run_checkpoints() if posixpath.basename(c.path) >= train_name][::-1] or (
            [train_ckpt] if train_ckpt is not None else [])
        with contextlib.ExitStack() as stack:
            dirs = [stack.enter_context(c.as_directory()) for c in candidates]  # local storage: the directories
            # one candidate (the usual case) is the loop's to load; with more, the furthest that loads, else
            # Train's own (the oldest), for the loop's fallback to report as unreadable and go back from
            fallback = (dirs[-1] if train_ckpt is not None else dirs[0]) if dirs else None
            yield (furthest(dirs) if len(dirs) > 1 else None) or fallback

    def _run_checkpoints(self) -> list:
        """This run's `checkpoint_*` directories on its storage, oldest first (names are timestamps)."""
        import pyarrow.fs
        from ray.train import Checkpoint

        fs = self._storage.storage_filesystem
        try:
            infos = fs.get_file_info(pyarrow.fs.FileSelector(self._storage.experiment_fs_path, allow_not_found=True))
        except OSError:
            return []
        dirs = sorted((i for i in infos if i.type == pyarrow.fs.FileType.Directory
                       and i.base_name.startswith("checkpoint_")), key=lambda i: i.base_name)
        return [Checkpoint(path=i.path, filesystem=fs) for i in dirs]

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


class TuneRuntime(Runtime):
    """Inside a Tune function trainable (runner `inline`): rank 0 of 1 in the trial's own process.

    `report` → `ray.tune.report(metrics, checkpoint=...)`: the checkpoint directory (the same `state.pt`
    a TorchTrainer run writes) becomes a Tune checkpoint of the trial, and the report carries its
    persisted path as `checkpoint_path` (as Train's TuneReportCallback does). `resume_dir` yields the
    newest complete checkpoint of this trial: Tune's (`ray.tune.get_checkpoint()`, restored by
    `max_failures` retries and `Tuner.restore`) or, when the driver was killed before its experiment
    state caught up, a newer one already persisted (found through the trial's events). Events go to
    `run_dir/events.jsonl` (`<sweep>/train/<trial key>/`, where a TorchTrainer run of the trial writes
    them), one `checkpoint` line per persisted checkpoint besides the loop's start / end lines.
    `extra` is added to every report (the node the trial runs on)."""

    def __init__(self, run_dir: str | os.PathLike, device: str | torch.device | None = None,
                 extra: dict[str, Any] | None = None):
        self.run_dir = Path(run_dir)
        self.device = torch.device(device or "cpu")
        self.extra = dict(extra or {})
        self.last_checkpoint: str | None = None

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        from ray import tune

        metrics = {**metrics, **self.extra}
        ckpt = tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        if ckpt is not None:
            path = _next_tune_checkpoint_path()
            if path:
                metrics["checkpoint_path"] = path
        tune.report(metrics, checkpoint=ckpt)
        if ckpt is not None:
            persisted = tune.get_checkpoint()  # the session's latest: the one just persisted
            self.last_checkpoint = persisted.path if persisted is not None else None
            progress = {k: metrics[k] for k in ("epoch", "step") if k in metrics}
            self.log_event({"event": "checkpoint", "path": self.last_checkpoint, **progress})

    @contextlib.contextmanager
    def resume_dir(self) -> Iterator[str | None]:
        from ray import tune

        ckpt = tune.get_checkpoint()
        newer = self._newer_logged_checkpoint(ckpt.path if ckpt is not None else None)
        if newer is not None:
            yield newer
            return
        with _local_dir(ckpt) as d:
            yield d

    def log_event(self, event: dict[str, Any]) -> None:
        if event.get("event") == "checkpoint" and event.get("path"):
            with contextlib.suppress(ValueError):  # also relative to the sweep dir: storage may move
                event = {**event, "rel": os.path.relpath(event["path"], self.run_dir.parent.parent)}
        append_line(self.run_dir / EVENTS_FILE, json.dumps({**event, "pid": os.getpid()}, sort_keys=True) + "\n")

    def _newer_logged_checkpoint(self, tune_path: str | None) -> str | None:
        """A complete checkpoint of this trial (by its `checkpoint` events) further on than Tune's.

        Tune persists a trial's checkpoint (in the trial's process) before the driver records it, and the
        driver saves its experiment state only every ≥ 10 s: a driver killed in between restores the trial
        from an older checkpoint, or regenerates it afresh in a new trial directory. The newer checkpoint
        is on disk already (local or shared filesystems), and the trial's events say where."""
        from gdna.train.checkpoint import furthest

        paths: list[Path] = []
        for e in read_events(str(self.run_dir.parent), self.run_dir.name)[::-1]:
            if e.get("event") != "checkpoint":
                continue
            for c in (self.run_dir.parent.parent / e["rel"] if e.get("rel") else None, e.get("path")):
                if c and Path(c).is_dir():
                    paths.append(Path(c))
                    break
            if len(paths) >= CHECKPOINTS_SCANNED:
                break

        tune_dir = Path(tune_path).resolve() if tune_path and Path(tune_path).is_dir() else None
        # Tune's first: an equal one further down is no better
        best = furthest(([str(tune_dir)] if tune_dir else []) + [str(d) for d in paths])
        return None if best is None or (tune_dir is not None and Path(best).resolve() == tune_dir) else best


# how many of a trial's most recent logged checkpoints an inline resume considers
CHECKPOINTS_SCANNED = 3


# torch's default generator seed at process start (c10's default_rng_seed_val)
TORCH_DEFAULT_SEED = 67280421310721


def fresh_process_state(cpus: float, gpu: bool = False) -> torch.device:
    """Put a reused trial process back into the state a fresh Ray worker process starts in, so that a
    trial's result never depends on which trial ran before it in the process; returns the device.

    - threads: what Ray gives a worker of `cpus` CPUs (OMP_NUM_THREADS = max(1, floor(cpus)), or the
      user's OMP_NUM_THREADS);
    - RNGs (torch, CUDA, numpy, python): reset to fixed states (the loop seeds them anyway before use);
    - autograd on, no anomaly detection; CUDA: cached blocks freed, the trial's GPU (cuda:0 = Ray's
      CUDA_VISIBLE_DEVICES) current.
    Caches that stay are keyed by everything they depend on: task data by (root, task) (read-only),
    the selective scan's scratch buffers and plans by shape and thread (each trial runs in a new thread)."""
    import gc
    import math
    import random

    import numpy as np

    env = os.environ.get("OMP_NUM_THREADS", "")
    torch.set_num_threads(int(env) if env.isdigit() and int(env) > 0 else max(1, math.floor(cpus)))
    torch.manual_seed(TORCH_DEFAULT_SEED)  # (also every CUDA device)
    np.random.seed(0)
    random.seed(0)
    torch.set_grad_enabled(True)
    torch.autograd.set_detect_anomaly(False)
    gc.collect()
    if gpu and torch.cuda.is_available():
        torch.cuda.set_device(0)
        torch.cuda.empty_cache()
        return torch.device("cuda", 0)
    return torch.device("cpu")


def _tune_storage():
    """The Tune session's StorageContext (Ray 2.60 private API), or None outside a Tune trial."""
    try:
        from ray.train._internal.session import get_session

        return get_session().storage
    except Exception:  # noqa: BLE001 - no session / another Ray version: the callers degrade gracefully
        return None


def _next_tune_checkpoint_path() -> str | None:
    """Where `tune.report` will persist the checkpoint it is given (trial dir / checkpoint_<index + 1>)."""
    st = _tune_storage()
    try:
        from ray.train._internal.storage import StorageContext

        return f"{st.trial_fs_path}/{StorageContext._make_checkpoint_dir_name(st.current_checkpoint_index + 1)}"
    except Exception:  # noqa: BLE001
        return None


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


@contextlib.contextmanager
def _local_dir(ckpt) -> Iterator[str | None]:
    """A Train/Tune checkpoint as a local directory for the block (None: no checkpoint)."""
    if ckpt is None:
        yield None
        return
    with ckpt.as_directory() as d:
        yield d
