"""The head node's MLflow tracking server (`gdna cluster mlflow-server`, run by cluster.yaml's head
start commands, idempotent).

- Bound to the head's private address (never 0.0.0.0): the sweep driver runs on the head and the UI is
  reached through an SSH port forward; nothing but SSH is open to the outside.
- Backend: `$GDNA_MLFLOW_BACKEND_URI` (e.g. a Postgres URI, kept out of the repository) or sqlite on the
  head's own disk (`~/.gdna/mlflow/mlflow.db`: sqlite must not live on NFS). Artifacts:
  `<storage>/mlflow-artifacts` on the shared storage, served by the server (`--serve-artifacts`).
- Writes `~/.gdna/head.env` (GDNA_TRACKING_URI, GDNA_STORAGE, GDNA_DATA_ROOT): the head's start
  commands source it before `ray start --head`, so `ray job submit` entrypoints inherit it.
- The backend URI is only ever printed redacted; the server's pid is in `~/.gdna/mlflow/server.pid`
  (its process group: `--stop` ends exactly that group).
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from gdna.cluster.uri import redact
from gdna.errors import ConfigError

BACKEND_ENV = "GDNA_MLFLOW_BACKEND_URI"
STATE_ENV = "GDNA_HEAD_DIR"  # default ~/.gdna
WORLD = ("0.0.0.0", "::", "[::]", "*", "")


def state_dir() -> Path:
    return Path(os.environ.get(STATE_ENV) or "~/.gdna").expanduser()


def private_ip() -> str:
    """This node's address as Ray sees it (the interface that routes to other nodes)."""
    from ray._private.services import get_node_ip_address

    return get_node_ip_address()


def _healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not a server
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (OSError, IndexError):
        return True


def _read_pid(d: Path) -> int | None:
    try:
        return int((d / "mlflow" / "server.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def start_server(storage: str, *, host: str | None = None, port: int = 5000, data_root: str | None = None,
                 backend_uri: str | None = None, workers: int = 1, wait_s: float = 180.0, out=sys.stdout) -> str:
    """Start (or find running) the MLflow server; returns its tracking URI (http://<host>:<port>)."""
    if host is not None and host.strip() in WORLD:
        raise ConfigError(f"--host: refusing to bind MLflow to {host or 'all interfaces'!r}: give the head's private address (default) or 127.0.0.1")
    if not storage or not Path(storage).is_absolute():
        raise ConfigError(f"--storage: an absolute path on the shared storage is required, got {storage!r}")
    if not Path(storage).is_dir():
        raise ConfigError(f"--storage: {storage} does not exist (is the shared filesystem mounted?)")
    host = host or private_ip()
    uri = f"http://{host}:{port}"
    d = state_dir()
    (d / "mlflow").mkdir(parents=True, exist_ok=True)
    backend = backend_uri or os.environ.get(BACKEND_ENV) or f"sqlite:///{(d / 'mlflow' / 'mlflow.db').resolve()}"
    artifacts = Path(storage) / "mlflow-artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    env_file = d / "head.env"
    env_file.write_text(
        f"GDNA_TRACKING_URI={uri}\nGDNA_STORAGE={storage}\nGDNA_DATA_ROOT={data_root or Path(storage) / 'data'}\n"
    )
    pid = _read_pid(d)
    if pid is not None and _alive(pid) and _healthy(uri):
        print(f"mlflow server already running (pid {pid}) at {uri}", file=out, flush=True)
        return uri
    mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or shutil.which("mlflow") or "mlflow"
    cmd = [mlflow, "server", "--backend-store-uri", backend, "--artifacts-destination", str(artifacts),
           "--serve-artifacts", "--host", host, "--port", str(port), "--workers", str(workers)]
    log = open(d / "mlflow" / "server.log", "ab")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, cwd=str(d / "mlflow"))
    log.close()
    (d / "mlflow" / "server.pid").write_text(f"{proc.pid}\n")
    print(f"mlflow server pid {proc.pid}: backend {redact(backend)}, artifacts {artifacts}, at {uri}", file=out, flush=True)
    t0 = time.time()
    while time.time() - t0 < wait_s:
        if proc.poll() is not None:
            raise ConfigError(f"mlflow server exited with {proc.returncode} (see {d / 'mlflow' / 'server.log'})")
        if _healthy(uri):
            print(f"mlflow server up in {time.time() - t0:.0f} s: GDNA_TRACKING_URI={uri} (written to {env_file})", file=out, flush=True)
            return uri
        time.sleep(0.5)
    stop_server(out=out)  # ours, and useless: do not leave it behind
    raise ConfigError(f"mlflow server at {uri} not healthy after {wait_s:.0f} s (see {d / 'mlflow' / 'server.log'})")


def stop_server(out=sys.stdout, timeout: float = 30.0) -> bool:
    """Stop the server this node started (its own process group, by the recorded pid)."""
    d = state_dir()
    pid = _read_pid(d)
    if pid is None or not _alive(pid):
        print("mlflow server: not running", file=out)
        return False
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            break
        t0 = time.time()
        while time.time() - t0 < timeout and _alive(pid):
            time.sleep(0.2)
        if not _alive(pid):
            break
    (d / "mlflow" / "server.pid").unlink(missing_ok=True)
    print(f"mlflow server pid {pid} stopped", file=out)
    return True
