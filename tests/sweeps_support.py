"""Test support for sweeps run through the CLI in subprocesses: tiny specs on the real data, the
environment (a private Ray temp dir), the process tree read from /proc, a small tmpfs as storage."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

RESOURCES = {
    "train": {"workers_per_trial": 2, "cpus_per_worker": 0.25, "cpus_per_trial": 0.1, "max_failures": 1},
    "inline": {"runner": "inline", "workers_per_trial": 1, "cpus_per_worker": 1.0, "max_failures": 1},
}


def small_spec(d: Path, name: str, lrs: list[float], runner: str = "train", epochs: int = 3,
               n_train: int = 320, concurrent: int = 0) -> Path:
    """One architecture from scratch (no pretraining stage) × `lrs`: the smallest sweep that trains
    (`concurrent`: at most that many trials at once, so some finish while others train)."""
    space = d / f"space_{name}.yaml"
    space.write_text(yaml.safe_dump({"grid": {"train.lr": lrs, "train.batch_size": [32]}, "seeds": [0]}))
    spec = {
        "name": name, "tasks": ["human_enhancers_cohn"], "architectures": ["transformer"], "strategies": ["scratch"],
        "search_space": str(space), "model": {"d_model": 32},
        "data": {"max_len": 128, "max_train_examples": n_train, "max_eval_examples": 64, "n_folds": 1},
        "train": {"epochs": epochs, "patience": None}, "resources": {**RESOURCES[runner], "max_concurrent_trials": concurrent}, "verbose": 0,
    }
    p = d / f"{name}.yaml"
    p.write_text(yaml.safe_dump(spec))
    return p


def ray_tmp() -> str:
    return tempfile.mkdtemp(prefix="gr", dir="/tmp")  # short: Ray's socket paths are limited to 107 bytes


def sweep_env(data_root: Path, ray_tmp_dir: str) -> dict:
    env = dict(os.environ)
    env.update(GDNA_DATA_ROOT=str(data_root), GDNA_RAY_TMPDIR=ray_tmp_dir, PYTHONUNBUFFERED="1")
    env.pop("RAY_ADDRESS", None)
    return env


def gdna_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "gdna.cli", *args]


def launch(cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
    """`cmd` from the repository root in its own session (its process group holds all it starts)."""
    with open(log, "ab") as f:
        return subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO)


def run_to_end(cmd: list[str], env: dict, log: Path, timeout: float) -> int:
    proc = launch(cmd, env, log)
    try:
        return proc.wait(timeout=timeout)
    finally:
        kill_tree(proc)


def tail(log: Path, n: int = 60) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-n:]) if log.exists() else ""


def mlflow_runs(storage: Path, name: str):
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=f"sqlite:///{storage / 'sweeps' / name / 'mlflow.db'}")
    exp = c.get_experiment_by_name(name)
    return c, (c.search_runs([exp.experiment_id], max_results=1000) if exp else [])


def in_flight(train_dir: Path) -> set[str]:
    """Trials with a checkpoint (a Train checkpoint dir, or an inline trial's `checkpoint` event) and no result."""
    out = set()
    for d in train_dir.iterdir() if train_dir.is_dir() else ():
        if d.is_dir() and not (d / "gdna_result.json").exists():
            events = (d / "events.jsonl").read_text() if (d / "events.jsonl").exists() else ""
            if (any(d.glob("checkpoint_*")) or '"event": "checkpoint"' in events) and '"end"' not in events:
                out.add(d.name)
    return out


def finished(train_dir: Path) -> set[str]:
    return {p.parent.name for p in train_dir.glob("*/gdna_result.json")}


def wait_until(cond, timeout: float, proc: subprocess.Popen | None = None, every: float = 0.3) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        if proc is not None and proc.poll() is not None:
            return bool(cond())
        time.sleep(every)
    return False


# processes ------------------------------------------------------------------------------------
def descendants(pid: int) -> set[int]:
    """Every live descendant of `pid`, from the ppid field of /proc/<pid>/stat."""
    parent = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
                parent[int(d.name)] = int(stat[stat.rindex(")") + 2:].split()[1])
            except (OSError, ValueError):
                continue
    out, frontier = set(), {pid}
    while frontier:
        frontier = {c for c, p in parent.items() if p in frontier} - out
        out |= frontier
    return out


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2] != "Z"
    except OSError:
        return False


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:120]
    except OSError:
        return "?"


def kill_tree(proc: subprocess.Popen, pids: set[int] = frozenset()) -> None:
    """SIGKILL what this test started: the command's process group, its live descendants and `pids`."""
    victims = set(pids) | descendants(proc.pid)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    for pid in victims:
        if alive(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=30)


# storage --------------------------------------------------------------------------------------
@contextlib.contextmanager
def tmpfs(path: Path, size_mb: int) -> Iterator[Path]:
    """A real file system of `size_mb` at `path` (skips the test where mounting is not permitted)."""
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root / CAP_SYS_ADMIN): {r.stderr.strip()[:200]}")
    try:
        yield path
    finally:
        for _ in range(20):  # busy while a killed process still holds a file open
            if subprocess.run(["umount", str(path)], capture_output=True).returncode == 0:
                break
            time.sleep(0.5)
        else:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(fs: Path, name: str = "filler") -> Path:
    """Write `fs/name` until the file system says ENOSPC; returns the filler file."""
    p = fs / name
    chunk = b"\0" * (1 << 20)
    with open(p, "ab", buffering=0) as f:
        while True:
            try:
                f.write(chunk)
            except OSError:
                break
        for n in (1 << 16, 1 << 12, 1 << 8, 1):  # the last blocks too
            with contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * n)
    return p
