"""Child processes that end with gdna: a long-running tool (the MLflow UI) runs in its own process group,
and SIGINT / SIGTERM to gdna stop that whole group (the server and every worker it forked), then gdna
exits with the child's status. A child that ignores SIGTERM is killed after `grace_s`.
Commands that run Ray in-process (`gdna sweep`, `gdna train`) take SIGTERM / SIGHUP as Ctrl-C
(`stop_signals_as_ctrl_c`), so they stop gracefully and shut down the Ray instance they started."""
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


STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def _as_sigint(signum, frame):  # noqa: ARG001 - signal handler signature
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)
    elif handler != signal.SIG_IGN:
        raise KeyboardInterrupt


def take_stop_signals() -> None:
    """(Re)install the SIGTERM / SIGHUP handler of `stop_signals_as_ctrl_c`, except on a signal that is
    ignored. Call it again after `ray.init`: Ray's core worker installs its own SIGTERM handler in the
    driver (it logs a stack trace and aborts the process, leaving the stage's state unsaved)."""
    for s in STOP_SIGNALS:
        if signal.getsignal(s) != signal.SIG_IGN:
            signal.signal(s, _as_sigint)


@contextlib.contextmanager
def stop_signals_as_ctrl_c() -> Iterator[None]:
    """For the block, SIGTERM and SIGHUP do what Ctrl-C does in the main thread: they call the SIGINT
    handler in effect when they arrive (Ray Tune's during a sweep stage: a graceful stop that saves the
    experiment; the second one, or outside Tune: KeyboardInterrupt). The command's own `finally` blocks
    then run, so the Ray instance it started is shut down. A signal ignored when the block starts (nohup)
    stays ignored."""
    old = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    take_stop_signals()
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


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
