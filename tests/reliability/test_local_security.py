"""On a workstation nothing gdna starts listens beyond this machine, and a password in the tracking URI
is written nowhere: `gdna ui` (the MLflow server and its workers) and the local Ray's dashboard listen on
127.0.0.1 only (read from the kernel's socket table, /proc/net/tcp*); a sweep tracked by a server through
`http://user:password@host` leaves the password in no file of its storage, the server's store and logs,
Ray's session logs, or what `gdna sweep` and `gdna status` print."""
from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from servers import free_port, start_mlflow_server, stop_group
from sweeps_support import REPO, descendants, ray_tmp, small_spec, sweep_env, tail

pytestmark = [pytest.mark.slow, pytest.mark.reliability]


def listening(pids: set[int]) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket in LISTEN state held by one of `pids`."""
    inodes = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                try:
                    link = os.readlink(fd)
                except OSError:
                    continue
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
        except OSError:
            continue
    out = set()
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if f[3] != "0A" or f[9] not in inodes:  # 0A: LISTEN
                continue
            hex_ip, hex_port = f[1].split(":")
            raw = bytes.fromhex(hex_ip)
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))  # the kernel's words are little-endian
            out.add((socket.inet_ntop(family, raw), int(hex_port, 16)))
    return out


LOCAL = ("127.0.0.1", "::1", "::ffff:127.0.0.1")


def test_gdna_ui_listens_on_localhost_only(tmp_path, data_root):
    import yaml

    from gdna.sweep.spec import load_spec
    from gdna.tracking import SweepTracker, default_artifact_location

    spec = load_spec(small_spec(tmp_path, "sec", [1e-3]), data_root=str(data_root), storage=str(tmp_path / "runs"))
    d = spec.sweep_dir()
    d.mkdir(parents=True)
    (d / "spec.yaml").write_text(yaml.safe_dump(spec.to_yaml_dict(), sort_keys=False))
    SweepTracker(spec.tracking(), "sec", default_artifact_location(spec.tracking(), d)).stage_run("finetune")
    port = free_port()
    log = tmp_path / "ui.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen([sys.executable, "-m", "gdna.cli", "ui", "sec", "--storage", str(tmp_path / "runs"),
                                 "--port", str(port)], cwd=REPO, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while (port not in {p for _, p in listening(descendants(proc.pid))} and time.monotonic() < deadline
               and proc.poll() is None):
            time.sleep(0.5)
        time.sleep(2)  # the server's workers
        socks = listening({proc.pid} | descendants(proc.pid))
        assert port in {p for _, p in socks}, tail(log)
        assert {a for a, _ in socks} <= set(LOCAL), socks
    finally:
        stop_group(proc)


def test_the_local_ray_dashboard_listens_on_localhost_only(monkeypatch):
    import ray

    from gdna.sweep.ray_env import init_ray

    monkeypatch.setenv("GDNA_RAY_TMPDIR", tempfile.mkdtemp(prefix="gr", dir="/tmp"))
    monkeypatch.setenv("GDNA_RAY_NUM_CPUS", "1")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    if ray.is_initialized():
        pytest.skip("a Ray is already connected in this process")
    init_ray("", 0)
    try:
        url = ray.get_runtime_context().dashboard_url if hasattr(ray.get_runtime_context(), "dashboard_url") else None
        url = url or ray._private.worker.get_dashboard_url()
        host, port = url.split("://")[-1].rsplit(":", 1)
        assert host == "127.0.0.1", url
        dash = {pid for pid in descendants(os.getpid())
                if "dashboard" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")}
        socks = listening(dash)
        assert int(port) in {p for _, p in socks}, (url, socks)
        assert {a for a, _ in socks if _ == int(port)} <= set(LOCAL), socks
    finally:
        ray.shutdown()


def test_a_password_in_the_tracking_uri_is_written_nowhere(tmp_path, data_root):
    planted = "pw-" + secrets.token_hex(8)
    server_dir = tmp_path / "server"
    server_dir.mkdir()
    server, url = start_mlflow_server(f"sqlite:///{server_dir / 'mlflow.db'}", server_dir / "artifacts",
                                      server_dir / "server.log")
    try:
        spec = small_spec(tmp_path, "secret", [2e-3], runner="inline", epochs=1, n_train=96)
        tmp_ray = ray_tmp()
        env = sweep_env(data_root, tmp_ray)
        secret_uri = url.replace("http://", f"http://gdna:{planted}@")  # as a user protecting the server gives it
        storage = tmp_path / "runs"
        printed = []
        for cmd in (["sweep", str(spec), "--storage", str(storage), "--tracking-uri", secret_uri],
                    ["status", "secret", "--storage", str(storage)]):
            p = subprocess.run([sys.executable, "-m", "gdna.cli", *cmd], cwd=REPO, env=env, capture_output=True,
                               text=True, timeout=900, start_new_session=True)
            printed.append(p.stdout + p.stderr)
            assert p.returncode == 0, printed[-1][-3000:]
        assert "gdna:***@" in printed[0] or url in printed[0], printed[0][-2000:]  # the URI is shown, redacted
    finally:
        stop_group(server)
    for text in printed:
        assert planted not in text
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{server_dir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("secret")
    assert len(client.search_runs([exp.experiment_id])) >= 2  # the stage and its trial were tracked there
    for root in (storage, server_dir, Path(tmp_ray)):
        for f in root.rglob("*"):
            if f.is_file() and not f.is_symlink() and f.stat().st_size < 50_000_000:
                assert planted.encode() not in f.read_bytes(), f
