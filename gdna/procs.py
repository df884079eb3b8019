"""Child processes that end with gdna: a long-running tool (the MLflow UI) runs in its own process group,
and SIGINT / SIGTERM to gdna stop that whole group (the server and every worker it forked), then gdna
exits with the child's status. A child that ignores SIGTERM is killed after `grace_s`."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from typing import Iterator, Mapping, Sequence

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def run_in_group(cmd: Sequence[str], grace_s: float = 10.0) -> int:
    """Run `cmd` in a new session (process group) in the foreground; return its exit code."""
    proc = subprocess.Popen(list(cmd), start_new_session=True)
    stopping: list[int] = []

    def forward(signum, frame):  # noqa: ARG001 - signal handler signature
        stopping.append(signum)
        _signal_group(proc, signal.SIGTERM)

    old = {s: signal.signal(s, forward) for s in FORWARDED}
    try:
        while True:
            try:
                rc = proc.wait(timeout=grace_s if stopping else None)
                break
            except subprocess.TimeoutExpired:  # asked to stop, still there after the grace period
                _signal_group(proc, signal.SIGKILL)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        _signal_group(proc, signal.SIGTERM)  # workers the leader left behind
    return 128 + stopping[0] if stopping else rc


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # the session leader's pid is the group id
    except (ProcessLookupError, PermissionError):
        pass


@contextlib.contextmanager
def temporary_env(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of a block, then put back what was there (or nothing)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
