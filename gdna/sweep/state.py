"""A sweep's own state under `<storage>/sweeps/<name>/`: the resolved spec, `stages.json`, the driver lock.

- `spec.yaml` is written once; a resume must present the same spec (locations and display keys aside).
- `stages.json` says which stages are done (and which pretraining each group selected); written
  atomically (temporary file + rename), so an interruption never leaves it half written.
- `driver.pid` holds the live driver's pid: a second driver of the same sweep is refused.
- `.space_reserve` is space held while the driver runs and given back when the storage fills up, so the
  last writes of a stopping sweep (Tune's experiment state, MLflow, stages.json) still fit.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from gdna.errors import ConfigError
from gdna.sweep.spec import SweepSpec

STATE_FILE = "stages.json"
SPEC_FILE = "spec.yaml"
PID_FILE = "driver.pid"
RESERVE_FILE = ".space_reserve"
RESERVE_BYTES = 16 * 2**20
# where the sweep lives / how it is displayed: may differ between the launch and a resume
RUNTIME_KEYS = ("storage", "data_root", "tracking_uri", "ray_address", "verbose", "description")


class SweepState:
    def __init__(self, spec: SweepSpec, out=sys.stdout):
        self.spec, self.out = spec, out
        self.dir = spec.sweep_dir()

    @property
    def path(self) -> Path:
        return self.dir / STATE_FILE

    def read(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def save(self, **stages: Any) -> None:
        st = self.read()
        for k, v in stages.items():
            st[k] = {**st.get(k, {}), **v}
        atomic_write(self.path, json.dumps(st, indent=2, sort_keys=True))

    def prepare(self, resume: bool) -> None:
        """Check the spec against a stored one (resume) or refuse an existing name; take the driver lock."""
        spec_file = self.dir / SPEC_FILE
        new = json.loads(json.dumps(self.spec.to_yaml_dict()))
        name = self.spec.name
        if spec_file.exists():
            if not resume:
                raise ConfigError(
                    f"sweep '{name}' already exists at {self.dir} (use --resume to continue it, or give it another name)")
            old = with_defaults(yaml.safe_load(spec_file.read_text()), spec_file)
            diff = first_diff(comparable(old), comparable(new))
            if diff:
                raise ConfigError(
                    f"{diff}: the spec changed since sweep '{name}' started (resume it unchanged with "
                    f"`gdna resume {name}`, or use a new name)")
        elif resume:  # `gdna sweep <spec> --resume` = run or continue (idempotent)
            print(f"sweep '{name}': nothing to resume at {self.dir}; starting it", file=self.out, flush=True)
        pid = alive_driver(self.dir)
        if pid is not None:
            raise ConfigError(f"sweep '{name}' is running right now (driver pid {pid}); see `gdna status {name}`")
        self.dir.mkdir(parents=True, exist_ok=True)
        if not spec_file.exists():
            atomic_write(spec_file, yaml.safe_dump(new, sort_keys=False))
        atomic_write(self.dir / PID_FILE, str(os.getpid()))


def atomic_write(path: Path, text: str) -> None:
    """Write `path` whole or not at all: a temporary file, flushed to disk, renamed over it. A write that
    fails (a full disk, a signal) leaves the old file and no temporary one."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def reserve_space(sweep_dir: Path, size: int = RESERVE_BYTES) -> None:
    """Hold `size` bytes of the storage in `<sweep dir>/.space_reserve` (really allocated). A file system
    that cannot preallocate gets no reserve; one without the space raises OSError(ENOSPC)."""
    path = sweep_dir / RESERVE_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as e:
        os.close(fd)
        fd = -1
        path.unlink(missing_ok=True)
        if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
    finally:
        if fd >= 0:
            os.close(fd)


def release_space(sweep_dir: Path) -> None:
    with contextlib.suppress(OSError):
        (sweep_dir / RESERVE_FILE).unlink()


def alive_driver(sweep_dir: Path) -> int | None:
    """The pid of a live driver of this sweep (another process than us), if any."""
    try:
        pid = int((sweep_dir / PID_FILE).read_text())
    except (OSError, ValueError):
        return None
    if pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    try:  # a recycled pid running something else is not our driver
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        if "gdna" not in cmd:
            return None
    except OSError:
        pass
    return pid


def with_defaults(old: Any, spec_file: Path) -> Any:
    """A stored spec with the keys gdna added since it was written filled in with their defaults (e.g.
    `resources.runner: train`), so that resuming an older sweep is not refused as a changed spec."""
    from gdna.sweep.spec import spec_from_dict

    try:
        filled = spec_from_dict(old, spec_file, check_data=False).to_yaml_dict()
    except Exception:  # noqa: BLE001 - not readable as a spec any more: compare as stored
        return old
    return json.loads(json.dumps(filled))


def comparable(d: Any) -> Any:
    return {k: v for k, v in d.items() if k not in RUNTIME_KEYS} if isinstance(d, dict) else d


def first_diff(a: Any, b: Any, where: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            d = first_diff(a.get(k), b.get(k), f"{where}.{k}" if where else str(k))
            if d:
                return d
        return None
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return where
        for i, (x, y) in enumerate(zip(a, b)):
            d = first_diff(x, y, f"{where}[{i}]")
            if d:
                return d
        return None
    return None if a == b else (where or "spec")
