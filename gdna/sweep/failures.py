"""Why a trial errored, in one line: the root exception under Ray's wrappers, and its full traceback on disk.

A failed trial reaches the driver as `RayTaskError(WorkerGroupError)` around the worker's
`RayTaskError(DataError)` (or a `ControllerError`): the line a user needs ("…: task folder not found")
is several layers down. `root_cause` unwraps RayTaskError.cause, WorkerGroupError.worker_failures (the
lowest rank), ControllerError.controller_failure and `__cause__`; `explain` gives "DataError: <first
line>"; `save_traceback` writes every layer to `<sweep dir>/errors/<trial name>.txt`.
"""
from __future__ import annotations

import re
import traceback
from pathlib import Path

ERRORS_DIR = "errors"


def root_cause(exc: BaseException) -> BaseException:
    seen: set[int] = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        nxt = root_cause_step(exc)
        if nxt is None:
            break
        exc = nxt
    return exc


def explain(exc: BaseException) -> str:
    """'<RootType>: <its first line>' (Ray's own frames and pids left out)."""
    root = root_cause(exc)
    name = type(root).__name__
    name = re.sub(r"^RayTaskError\((\w+)\)$", r"\1", name)
    lines = [ln.strip() for ln in str(root).splitlines() if ln.strip()]
    first = next((ln for ln in lines if not ln.startswith(("ray::", "Traceback", "File "))), lines[0] if lines else "")
    return f"{name}: {first}" if first else name


def save_traceback(sweep_dir: Path, trial_name: str, exc: BaseException) -> Path:
    """Every layer's traceback, outermost first, in <sweep dir>/errors/<trial name>.txt."""
    out = Path(sweep_dir) / ERRORS_DIR / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', trial_name)}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    parts, e, seen = [], exc, set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        parts.append("".join(traceback.format_exception(type(e), e, e.__traceback__)))
        e = root_cause_step(e)
    out.write_text(f"{explain(exc)}\n\n" + "\n--- caused by ---\n".join(parts))
    return out


def root_cause_step(exc: BaseException) -> BaseException | None:
    """The exception one layer below `exc` (Ray's wrappers, then `__cause__`), or None."""
    failures = getattr(exc, "worker_failures", None)
    nxt = (getattr(exc, "cause", None)
           or (failures[min(failures)] if isinstance(failures, dict) and failures else None)
           or getattr(exc, "controller_failure", None)
           or exc.__cause__)
    return nxt if isinstance(nxt, BaseException) else None
