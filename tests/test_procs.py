"""Every process gdna starts ends with it: SIGTERM / SIGINT to `gdna ui` stop the MLflow server and all
of its workers (a real `gdna ui` in a subprocess, real signals, the process tree read from /proc)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from gdna.sweep.spec import load_spec
from gdna.sweep.state import SweepState
from servers import free_port
from sweeps_support import alive as is_alive
from sweeps_support import descendants

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.mark.parametrize("sig", [signal.SIGTERM, pytest.param(signal.SIGINT, marks=pytest.mark.reliability)])
def test_signal_to_gdna_ui_stops_the_server_and_its_workers(sig, tmp_path, data_root):
    spec = load_spec(REPO / "sweeps" / "quickstart.yaml", data_root=str(data_root), storage=str(tmp_path))
    SweepState(spec).dir.mkdir(parents=True)
    (SweepState(spec).dir / "spec.yaml").write_text(yaml.safe_dump(spec.to_yaml_dict(), sort_keys=False))
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gdna.cli", "ui", "quickstart", "--storage", str(tmp_path),
                             "--port", str(port)], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    children: set[int] = set()
    try:
        deadline = time.monotonic() + 240  # mlflow ui starts slowly on a loaded 2-core box
        while time.monotonic() < deadline:  # up: the port answers
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert proc.poll() is None, "gdna ui exited before serving"
            time.sleep(0.5)
        else:
            pytest.fail("the MLflow UI did not come up in 240 s")
        children = descendants(proc.pid)
        assert children, "gdna ui started no server process"
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == 128 + sig
        deadline = time.monotonic() + 30
        while any(is_alive(p) for p in children) and time.monotonic() < deadline:
            time.sleep(0.2)
        alive = sorted(p for p in children if is_alive(p))
        assert not alive, f"left running after {sig.name}: {alive}"
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0
    finally:  # stop what this test started (gdna ui and the server's own process group), also on failure
        ours = os.getpgid(0)
        for pid in [*children, *descendants(proc.pid)]:
            try:
                group = os.getpgid(pid)
                if group != ours:
                    os.killpg(group, signal.SIGKILL)
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        proc.kill()
        proc.wait(timeout=30)
