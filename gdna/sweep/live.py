"""What a person sees while a sweep runs: one compact view per stage instead of Ray's tables.

- `ray_output(log_path, verbose, out)`: for the Ray part of a sweep, file descriptors 1 and 2 (so Ray's
  warnings, Tune's status tables, anything Ray's own processes print) go to `<sweep>/ray.log`; gdna
  writes to the terminal through a duplicate of the original stdout. `verbose: 2` (or more) leaves
  Ray's output on the terminal and gdna's view prints plain lines only.
- `LiveView` (a Tune callback in the driver): on a terminal, one refreshing block per stage — done /
  running / errored / pending with an ETA from the measured trial times, each running trial by its
  readable name with its epoch (or step) and last validation metric, the best so far per architecture —
  above which every finished trial leaves one line. Not on a terminal (CI, `ray job` logs, a pipe) or
  with `verbose: 0`: only the one plain line per finished trial, never a redraw.

The view holds no stream (Tune pickles callbacks with the experiment, and a restored sweep runs in
another process): it writes to the console `ray_output` set up for this process.
"""
from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, TextIO

from ray.tune import Callback

RAY_LOG = "ray.log"
REFRESH_S = 0.5  # at most this often
IDLE_REFRESH_S = 5.0  # when nothing but the ETA changed
MAX_RUNNING_LINES = 12


class Console:
    """The terminal stream gdna writes to while Ray's output is redirected, and how (live or plain)."""

    def __init__(self, stream: TextIO, live: bool, log_path: Path | None):
        self.stream, self.live, self.log_path = stream, live, log_path
        self.block_lines = 0  # lines of the live block currently on screen (to be redrawn)

    def width(self) -> int:
        try:
            cols = os.get_terminal_size(self.stream.fileno()).columns
        except (OSError, ValueError, AttributeError):
            cols = 0
        if cols <= 0:  # a terminal that reports no size (some pseudo-terminals)
            env = os.environ.get("COLUMNS", "")
            cols = int(env) if env.isdigit() else 100
        return max(40, cols)

    def clear_block(self) -> None:
        if self.live and self.block_lines:
            self.stream.write(f"\x1b[{self.block_lines}F\x1b[J")  # to the block's first line, erase below
            self.block_lines = 0

    def line(self, text: str) -> None:
        """A permanent line (above the live block, which is redrawn on the next refresh)."""
        self.clear_block()
        self.stream.write(text + "\n")
        self.stream.flush()

    def block(self, lines: list[str]) -> None:
        if not self.live:
            return
        w = self.width() - 1  # never wrap: the redraw counts lines
        self.clear_block()
        self.stream.write("".join(s[:w] + "\n" for s in lines))
        self.stream.flush()
        self.block_lines = len(lines)


_console: Console | None = None


def console() -> Console:
    """This process's console (plain lines on stdout when no `ray_output` is active: tests, tools)."""
    return _console or Console(sys.stdout, live=False, log_path=None)


@contextlib.contextmanager
def ray_output(log_path: Path, verbose: int, out: TextIO = sys.stdout) -> Iterator[TextIO]:
    """Route fd 1 and 2 to `log_path` (verbose < 2) for the block; yields the stream gdna prints to.
    Writes to sys.stdout / sys.stderr (Ray's and libraries' output) never raise meanwhile: the log may
    sit on a full disk, and the sweep must still stop cleanly (`_BestEffort`)."""
    global _console
    show = verbose >= 2
    fd = _fileno(out)
    saved: list[int] = []
    term = out
    std = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _BestEffort(sys.stdout), _BestEffort(sys.stderr)
    try:
        if not show:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            for s in (sys.stdout, sys.stderr, out):
                with contextlib.suppress(Exception):
                    s.flush()
            log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            saved = [os.dup(1), os.dup(2)]
            if fd in (1, 2):  # the caller's stream is about to become the log: keep the terminal
                term = os.fdopen(os.dup(saved[fd - 1]), "w", buffering=1, encoding=getattr(out, "encoding", None) or "utf-8",
                                 errors="replace")
            os.dup2(log_fd, 1)
            os.dup2(log_fd, 2)
            os.close(log_fd)
        live = verbose >= 1 and not show and _isatty(term)
        _console = Console(term, live=live, log_path=None if show else log_path)
        yield term
    finally:
        if _console is not None:
            _console.clear_block()
            with contextlib.suppress(Exception):
                _console.stream.flush()
        _console = None
        sys.stdout, sys.stderr = std
        if saved:
            for s in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    s.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for s in saved:
                os.close(s)
            if term is not out:
                with contextlib.suppress(Exception):
                    term.close()


class _BestEffort:
    """A std stream whose writes never raise OSError (it goes to ray.log, which may sit on a full disk)."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, s):
        try:
            return self._stream.write(s)
        except OSError:
            return len(s)

    def flush(self):
        with contextlib.suppress(OSError):
            self._stream.flush()

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _fileno(s: Any) -> int | None:
    try:
        return s.fileno()
    except (AttributeError, OSError, ValueError):
        return None


def _isatty(s: Any) -> bool:
    try:
        return bool(s.isatty())
    except (AttributeError, OSError, ValueError):
        return False


# ---------------------------------------------------------------------------------------------
class LiveView(Callback):
    """The per-stage view (see the module docstring). `resolver(config) -> (key, trial dict, meta, name)`;
    `total`: the stage's trial count; `metric`/`mode`: what "best" means (per architecture)."""

    def __init__(self, stage: str, resolver: Callable[[dict], tuple], total: int, metric: str, mode: str):
        self.stage, self.resolver, self.total = stage, resolver, int(total)
        self.metric, self.mode = metric, mode
        self._reset()

    def __getstate__(self):
        return {k: self.__dict__[k] for k in ("stage", "resolver", "total", "metric", "mode")}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._reset()

    def _reset(self) -> None:
        self._started: dict[str, float] = {}  # trial id → when this driver saw it start
        self._durations: list[float] = []  # trainable time of trials finished (not replayed)
        self._finished = 0
        self._last_draw = 0.0
        self._last_lines: list[str] = []
        self._best: dict[str, tuple[float, str]] = {}
        self._names: dict[str, tuple[str, str, int]] = {}
        self._ended: dict[str, str] = {}  # trial id → TERMINATED / ERROR (Tune sets it after the callback)

    # what a trial is called -------------------------------------------------------------------------
    def _info(self, trial) -> tuple[str, str, int]:
        """(readable name, architecture, length in epochs / steps) of a trial."""
        tid = trial.trial_id
        if tid not in self._names:
            try:
                _, trial_dict, meta, name = self.resolver(trial.config)
                t = trial_dict.get("train", {})
                n = int(t.get("max_steps") if t.get("objective") == "clm" else t.get("epochs") or 0)
                self._names[tid] = (name, str(meta.get("arch", "")), n)
            except Exception:  # noqa: BLE001 - a view never breaks the sweep
                self._names[tid] = (str(trial), "", 0)
        return self._names[tid]

    @property
    def _progress_key(self) -> str:
        return "step" if self.stage == "pretrain" else "epoch"

    @property
    def _val_key(self) -> str:
        return "val_loss" if self.stage == "pretrain" else "val_acc"

    @property
    def _best_key(self) -> str:
        return "best_val_loss" if self.stage == "pretrain" else "best_val_acc"

    # Tune callbacks ---------------------------------------------------------------------------------
    def on_trial_start(self, iteration, trials, trial, **info):
        self._started.setdefault(trial.trial_id, time.time())
        self._draw(trials, force=True)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._started.setdefault(trial.trial_id, time.time())
        self._draw(trials)

    def on_trial_recover(self, iteration, trials, trial, **info):
        name = self._info(trial)[0]
        console().line(f"{self.stage}  retry  {name}  (failure {getattr(trial, 'num_failures', '?')}; "
                       f"continues from its last checkpoint){_error_hint(trial)}")
        self._draw(trials, force=True)

    def _ended_count(self, trials) -> int:
        """Trials of the stage that ended (also those a restored experiment ended before)."""
        c = self.counts(trials)
        self._finished = max(self._finished + 1, c["done"] + c["errored"])
        return self._finished

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._ended[trial.trial_id] = "TERMINATED"
        n = self._ended_count(trials)
        r = trial.last_result or {}
        name, arch, _ = self._info(trial)
        took = r.get("time_total_s")
        if isinstance(took, (int, float)) and not r.get("gdna_replayed"):
            self._durations.append(float(took))
        best = r.get(self._best_key, r.get(self.metric))
        if isinstance(best, (int, float)) and math.isfinite(best):
            old = self._best.get(arch)
            better = old is None or (best < old[0] if self.mode == "min" else best > old[0])
            if better:
                self._best[arch] = (float(best), name)
        status = r.get("status") if r.get("final") else "stopped"  # stopped early by the scheduler (ASHA)
        parts = [f"{k} {_num(r[k])}" for k in (self._best_key, "test_acc", "best_val_ppl") if k in r]
        when = "replayed (done before)" if r.get("gdna_replayed") else (f"{took:.0f} s" if isinstance(took, (int, float)) else "")
        console().line(f"{self.stage} {n}/{self.total}  {status or 'finished':<8} {name}  "
                       f"{'  '.join(parts)}  ({when})")
        self._draw(trials, force=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._ended[trial.trial_id] = "ERROR"
        n = self._ended_count(trials)
        name = self._info(trial)[0]
        console().line(f"{self.stage} {n}/{self.total}  ERRORED  {name}{_error_hint(trial)}")
        self._draw(trials, force=True)

    def on_step_end(self, iteration, trials, **info):
        self._draw(trials)

    def on_experiment_end(self, trials, **info):
        console().clear_block()

    # the block ----------------------------------------------------------------------------------------
    def _status(self, t) -> str:
        return self._ended.get(t.trial_id, t.status) if t.status in ("RUNNING", "PAUSED", "PENDING") else t.status

    def counts(self, trials) -> dict[str, int]:
        st = [self._status(t) for t in trials]
        done = sum(s == "TERMINATED" for s in st)
        errored = sum(s == "ERROR" for s in st)
        running = sum(s in ("RUNNING", "PAUSED") for s in st)
        pending = max(0, max(self.total, len(trials)) - done - errored - running)
        return {"done": done, "running": running, "errored": errored, "pending": pending}

    def eta_s(self, trials, c: dict[str, int]) -> float | None:
        if not self._durations:
            return None
        mean = sum(self._durations) / len(self._durations)
        now = time.time()
        left = c["pending"] * mean
        for t in trials:
            if self._status(t) == "RUNNING":
                left += max(mean - (now - self._started.get(t.trial_id, now)), 0.1 * mean)
        return left / max(1, c["running"])

    def lines(self, trials) -> list[str]:
        c = self.counts(trials)
        eta = self.eta_s(trials, c)
        head = (f"{self.stage}  {c['done']}/{max(self.total, len(trials))} done · {c['running']} running · "
                f"{c['errored']} errored · {c['pending']} pending · ETA {_duration(eta) if eta is not None else '…'}")
        out = [head]
        running = [t for t in trials if self._status(t) == "RUNNING"]
        for t in running[:MAX_RUNNING_LINES]:
            name, _, n = self._info(t)
            r = t.last_result or {}
            prog = r.get(self._progress_key)
            where = f"{self._progress_key} {prog if prog is not None else 0}/{n or '?'}"
            val = f"{self._val_key} {_num(r[self._val_key])}" if self._val_key in r else "starting"
            out.append(f"  {name}  {where}  {val}")
        if len(running) > MAX_RUNNING_LINES:
            out.append(f"  … and {len(running) - MAX_RUNNING_LINES} more running")
        if self._best:
            label = self._best_key
            out.append(f"  best {label}: " + " · ".join(f"{a or '?'} {_num(v)}" for a, (v, _) in sorted(self._best.items())))
        return out

    def _draw(self, trials, force: bool = False) -> None:
        con = console()
        if not con.live:
            return
        now = time.time()
        if not force and now - self._last_draw < REFRESH_S:
            return
        try:
            lines = self.lines(trials)
            # unchanged: redraw only to tick the ETA (a terminal log stays small)
            if force or not con.block_lines or lines != self._last_lines or now - self._last_draw >= IDLE_REFRESH_S:
                con.block(lines)
                self._last_draw, self._last_lines = now, lines
        except Exception:  # noqa: BLE001 - a view never breaks the sweep
            pass


def _num(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _duration(s: float) -> str:
    s = int(round(s))
    if s >= 3600:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def _error_hint(trial) -> str:
    """': <the exception line>  (<error file>)' from Tune's error file of the trial, when there is one."""
    path = getattr(trial, "error_file", None) or ""
    last = ""
    try:
        text = Path(path).read_text(errors="replace") if path else ""
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        last = next((ln for ln in reversed(lines) if "Error" in ln or "Exception" in ln), lines[-1] if lines else "")
    except OSError:
        pass
    return (f": {last[:160]}" if last else "") + (f"  ({path})" if path else "")
