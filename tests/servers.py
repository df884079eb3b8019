"""Test support: an `mlflow server` this test starts (its own process group) and stops, and free ports."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_mlflow_server(backend_uri: str, artifact_root: Path, log: Path, port: int | None = None,
                        up_within_s: float = 240.0) -> tuple[subprocess.Popen, str]:
    """`mlflow server` on 127.0.0.1:<port> in its own session; returns (process, url) once /health answers."""
    port = port or free_port()
    out = log.open("a")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri,
         "--default-artifact-root", Path(artifact_root).as_uri(), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    out.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + up_within_s
    while True:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_group(proc)
            raise RuntimeError(f"mlflow server not up (exit {proc.returncode}; see {log})")
        time.sleep(0.5)


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the process group this test started (its own session), SIGKILL after 15 s."""
    if proc.poll() is not None:
        try:  # the leader is gone; its workers may not be
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
