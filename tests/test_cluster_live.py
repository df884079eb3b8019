"""A real 2-node Ray cluster on this machine, a real MLflow tracking server, a sweep submitted the way the
README tells users (`ray job submit` to the head), and a node lost mid-trial.

- head: `ray start --head` with its own temp dir and ports, token auth (RAY_AUTH_MODE=token plus a token
  only this test knows), advertising the trial-driver resource `gdna_driver` (as cluster.yaml's head does)
  and `live_head`; worker: a second `ray start --address` with its own temp dir, ports and `live_worker`.
  Each `ray start` runs in its own session: every process of that node (raylet, agents, workers, and on
  the head GCS, dashboard and the job's driver) keeps that session id, which is how the test finds them.
- MLflow: `gdna cluster mlflow-server --host 127.0.0.1` (sqlite on the "head's disk", artifacts on the
  test's shared storage), as cluster.yaml's head starts it; the head's Ray is started with the head.env it
  writes, and the tracking URI the job uses carries a planted password (basic auth user:password@).
- the sweep: 4 tiny fine-tuning trials (1 worker of 1.5 CPU each; 2 CPUs per node), two at a time: one
  lands on each node (a driver takes 0.1 CPU of the head).
  When a trial on the worker node has logged an epoch, every process of the worker node is SIGKILLed
  (by session id). Its Train controller, on the head with the trial's driver, restarts the worker group on
  the head from the last checkpoint.
Asserts: trials ran on both nodes (node ids recorded per child run), every driver ran on the head, all
child runs + artifacts are on the server, no duplicate runs or metric steps, the killed trial resumed from
a checkpoint (not from scratch), the analysis runs against the server, the password appears nowhere.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RAY = str(BIN / "ray")
GDNA = [sys.executable, "-m", "gdna.cli"]
EPOCHS = 8
N_TRIALS = 4


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def _session_pids(sid: int) -> list[int]:
    out = subprocess.run(["ps", "-eo", "pid=,sid="], capture_output=True, text=True).stdout
    return [int(p) for p, s in (line.split() for line in out.splitlines() if line.strip()) if int(s) == sid and int(p) != os.getpid()]


def _kill_session(sid: int, sig=signal.SIGKILL, wait_s: float = 30.0) -> None:
    """Signal every process of one `ray start` session (one Ray node) and wait until none is left."""
    t0 = time.time()
    while True:
        pids = _session_pids(sid)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, sig if time.time() - t0 < wait_s / 2 else signal.SIGKILL)
            except ProcessLookupError:
                pass
        if time.time() - t0 > wait_s:
            return
        time.sleep(0.3)


class Node:
    def __init__(self, name: str, temp_dir: Path, env: dict, log: Path):
        self.name, self.temp_dir, self.env, self.log = name, temp_dir, env, log
        self.sid: int | None = None

    def start(self, args: list[str], timeout: float = 180) -> None:
        with open(self.log, "ab") as f:
            proc = subprocess.Popen([RAY, "start", f"--temp-dir={self.temp_dir}", "--disable-usage-stats", *args],
                                    env=self.env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO)
            self.sid = proc.pid  # the session every process of this node keeps
            rc = proc.wait(timeout=timeout)
        assert rc == 0, f"ray start ({self.name}) failed:\n{self.log.read_text()[-3000:]}"

    def kill(self, sig=signal.SIGKILL) -> None:
        if self.sid is not None:
            _kill_session(self.sid, sig)

    def alive(self) -> bool:
        return self.sid is not None and bool(_session_pids(self.sid))


def _spec(d: Path, storage: Path) -> Path:
    space = d / "space_live.yaml"
    space.write_text(yaml.safe_dump({"grid": {"train.lr": [1e-3, 3e-3], "train.batch_size": [32]}, "seeds": [0, 1]}))
    spec = {
        "name": "live",
        "tasks": ["human_enhancers_cohn"],
        "architectures": ["transformer"],
        "strategies": ["scratch"],
        "search_space": str(space),
        "model": {"d_model": 32},
        "data": {"max_len": 128, "max_train_examples": 3000, "max_eval_examples": 64, "n_folds": 1},
        "train": {"epochs": EPOCHS, "patience": None},
        "resources": {"workers_per_trial": 1, "cpus_per_worker": 1.5, "cpus_per_trial": 0.1, "max_failures": 2},
        "verbose": 0,
    }
    p = d / "live.yaml"
    p.write_text(yaml.safe_dump(spec))
    return p


def _run(cmd: list[str], env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)


@pytest.fixture(scope="module")
def cluster(data_root):
    d = Path(tempfile.mkdtemp(prefix="gcl", dir="/tmp"))  # short: Ray's socket paths have a length limit
    shared = d / "shared"  # the "shared filesystem" both nodes see (one machine)
    shared.mkdir()
    head_home = d / "headhome"  # the head's own disk (~/.gdna): sqlite DB, head.env, server pid
    planted = "pw-" + secrets.token_hex(8)
    token = secrets.token_hex(16)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "GDNA_", "MLFLOW_"))}
    base.update(PATH=f"{BIN}:{os.environ.get('PATH', '')}", PYTHONUNBUFFERED="1",
                RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token,  # token auth on every node and client
                RAY_TRAIN_HEALTH_CHECK_INTERVAL_S="0.2", GDNA_HEAD_DIR=str(head_home))
    (gcs, dash, client, *ports) = _free_ports(17)
    mlflow_port = ports.pop()
    state = {"dir": d, "shared": shared, "planted": planted, "env": base, "dash": f"http://127.0.0.1:{dash}",
             "mlflow": f"http://127.0.0.1:{mlflow_port}", "head_home": head_home}
    head = Node("head", d / "h", base, d / "head.log")
    worker = Node("worker", d / "w", base, d / "worker.log")
    state.update(head=head, worker=worker)
    try:
        # the head's MLflow server, as cluster.yaml's head start commands run it
        r = _run([*GDNA, "cluster", "mlflow-server", "--storage", str(shared), "--host", "127.0.0.1",
                  "--port", str(mlflow_port), "--data-root", str(data_root)], base, timeout=180)
        assert r.returncode == 0, r.stdout + r.stderr
        head_env = dict(line.split("=", 1) for line in (head_home / "head.env").read_text().splitlines() if "=" in line)
        assert head_env == {"GDNA_TRACKING_URI": state["mlflow"], "GDNA_STORAGE": str(shared), "GDNA_DATA_ROOT": str(data_root)}
        # a user who protects the server puts user:password into the head's tracking URI
        head_env["GDNA_TRACKING_URI"] = f"http://gdna:{planted}@127.0.0.1:{mlflow_port}"
        head_env_full = {**base, **head_env}
        head.env = head_env_full
        a = ports
        head.start(["--head", f"--port={gcs}", f"--dashboard-port={dash}", "--dashboard-host=127.0.0.1",
                    f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={a[0]}",
                    f"--dashboard-agent-grpc-port={a[1]}", f"--metrics-export-port={a[2]}",
                    f"--runtime-env-agent-port={a[3]}", f"--node-manager-port={a[4]}", f"--object-manager-port={a[5]}",
                    f"--min-worker-port={a[6]}", f"--max-worker-port={a[6] + 200}", "--num-cpus=2", "--num-gpus=0",
                    "--object-store-memory=150000000",
                    '--resources={"gdna_driver": 1000, "live_head": 1}'])
        address = (d / "h" / "ray_current_cluster").read_text().split()[0]  # Ray writes the GCS address here
        state["gcs"] = address
        worker.start([f"--address={address}", f"--dashboard-agent-listen-port={a[7]}",
                      f"--dashboard-agent-grpc-port={a[8]}", f"--metrics-export-port={a[9]}",
                      f"--runtime-env-agent-port={a[10]}", f"--node-manager-port={a[11]}",
                      f"--object-manager-port={a[12]}", f"--min-worker-port={a[6] + 300}",
                      f"--max-worker-port={a[6] + 500}", "--num-cpus=2", "--num-gpus=0",
                      "--object-store-memory=150000000", '--resources={"live_worker": 1}'])
        state["nodes"] = _node_ids(state)
        yield state
    finally:
        worker.kill()
        head.kill()
        _run([*GDNA, "cluster", "mlflow-server", "--stop"], base, timeout=60)
        assert not worker.alive() and not head.alive()
        if os.environ.get("GDNA_KEEP_LIVE") != "1":
            shutil.rmtree(d, ignore_errors=True)


def _node_ids(state) -> dict[str, str]:
    """{'head': node id, 'worker': node id} from the cluster's own state API (by their custom resources)."""
    for _ in range(60):
        r = _run([RAY, "list", "nodes", "--address", state["dash"], "--format", "json", "--detail"], state["env"])
        if r.returncode == 0:
            nodes = [n for n in json.loads(r.stdout) if n.get("state") == "ALIVE"]
            ids = {}
            for n in nodes:
                res = n.get("resources_total", {})
                if "live_head" in res:
                    ids["head"] = n["node_id"]
                if "live_worker" in res:
                    ids["worker"] = n["node_id"]
            if len(ids) == 2:
                return ids
        time.sleep(1)
    raise AssertionError(f"nodes did not register: {r.stdout[-2000:]} {r.stderr[-2000:]}")


def _client(state):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=state["mlflow"])


def _children(state):
    c = _client(state)
    exp = c.get_experiment_by_name("live")
    if exp is None:
        return c, None, []
    runs = c.search_runs([exp.experiment_id], "tags.`gdna.role` = 'trial'", max_results=1000)
    return c, exp, runs


@pytest.fixture(scope="module")
def live_sweep(cluster, data_root):
    st = cluster
    spec = _spec(st["dir"], st["shared"])
    env = st["env"]
    t0 = time.time()
    # as the README says (the head's head.env supplies $GDNA_STORAGE / $GDNA_TRACKING_URI / $GDNA_DATA_ROOT)
    r = _run([RAY, "job", "submit", "--address", st["dash"], "--no-wait", "--submission-id", "gdna-live", "--",
              "bash", "-c", f"gdna sweep {spec} --storage $GDNA_STORAGE --tracking-uri $GDNA_TRACKING_URI "
              "--data-root $GDNA_DATA_ROOT"], env)
    assert r.returncode == 0, r.stdout + r.stderr
    killed = None
    status = None
    while time.time() - t0 < 1200:
        if killed is None:
            try:
                _, _, runs = _children(st)
            except Exception:  # noqa: BLE001 - the experiment may not exist yet
                runs = []
            for run in runs:
                on_worker = st["nodes"]["worker"] in run.data.tags.get("gdna.worker_nodes", "")
                epoch = run.data.metrics.get("epoch", 0)
                if on_worker and 1 <= epoch < EPOCHS - 1 and run.data.tags.get("gdna.status") == "running":
                    killed = {"key": run.data.tags["gdna.trial_key"], "epoch": epoch, "at": time.time() - t0,
                              "run_id": run.info.run_id}
                    st["worker"].kill()  # node loss: every process of the worker node, SIGKILL
                    assert not st["worker"].alive()
                    break
        s = _run([RAY, "job", "status", "--address", st["dash"], "gdna-live"], env)
        m = re.search(r"Job '[^']*' (succeeded|failed|stopped)", s.stdout + s.stderr)  # ray job status's last line
        status = m.group(1).upper() if m else None
        if status:
            break
        time.sleep(0.5)
    logs = _run([RAY, "job", "logs", "--address", st["dash"], "gdna-live"], env).stdout
    (st["dir"] / "job.log").write_text(logs)
    return {"status": status, "killed": killed, "logs": logs, "seconds": time.time() - t0, "spec": spec}


def test_sweep_on_two_nodes_survives_node_loss(cluster, live_sweep):
    from gdna.train.events import read_events

    st, res = cluster, live_sweep
    tail = "\n".join(res["logs"].splitlines()[-60:])
    print(f"live sweep: {res['seconds']:.0f} s; killed {res['killed']}")
    assert res["status"] == "SUCCEEDED", tail
    assert res["killed"] is not None, "no trial was seen on the worker node mid-run\n" + tail
    c, exp, runs = _children(st)
    # every child run reached the server, once
    assert len(runs) == N_TRIALS, [r.info.run_name for r in runs]
    assert max(Counter(r.data.tags["gdna.trial_key"] for r in runs).values()) == 1
    nodes = st["nodes"]
    worker_nodes = set()
    for r in runs:
        t = r.data.tags
        assert t["gdna.status"] == "finished" and r.info.status == "FINISHED", (r.info.run_name, t)
        # trial drivers (Tune trainable + Train controller) ran on the head
        assert t["gdna.driver_node"] == nodes["head"], (r.info.run_name, t)
        worker_nodes.update(t["gdna.worker_nodes"].split(","))
        # no duplicate metric steps; every epoch logged
        for key in ("val_acc", "train_loss"):
            steps = [m.step for m in c.get_metric_history(r.info.run_id, key)]
            assert sorted(steps) == list(range(1, EPOCHS + 1)), (r.info.run_name, key, steps)
        # artifacts went through the server to the shared storage
        assert [a.path for a in c.list_artifacts(r.info.run_id, "config")] == ["config/trial.json"]
        assert list((st["shared"] / "mlflow-artifacts").rglob(f"{r.info.run_id}/artifacts/config/trial.json"))
    assert worker_nodes == {nodes["head"], nodes["worker"]}, worker_nodes  # trials ran on both nodes
    # the trial on the lost node continued from its checkpoint, on the head
    killed = res["killed"]
    run = c.get_run(killed["run_id"])
    assert run.data.tags["gdna.worker_nodes"].split(",") == [nodes["worker"], nodes["head"]]
    events = read_events(str(st["shared"] / "sweeps" / "live" / "train"), killed["key"])
    starts = [e for e in events if e.get("event") == "start"]
    assert len(starts) == 2, events
    assert starts[0]["resumed_from"] is None and starts[1]["resumed_from"] >= 1, starts
    # the tracking DB is the server's (on the head's disk), not a sqlite file in the sweep dir
    assert not (st["shared"] / "sweeps" / "live" / "mlflow.db").exists()
    assert (st["head_home"] / "mlflow" / "mlflow.db").is_file()


def test_analysis_against_the_server(cluster, live_sweep):
    st = cluster
    assert live_sweep["status"] == "SUCCEEDED"
    out = st["dir"] / "analysis"
    r = _run([*GDNA, "analyze", "live", "--tracking-uri", st["mlflow"], "--storage", str(st["shared"]),
              "--out", str(out), "--no-baselines"], st["env"], timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    c = _client(st)
    exp = c.get_experiment_by_name("live")
    ana = c.search_runs([exp.experiment_id], "tags.`gdna.role` = 'analysis'")
    assert len(ana) == 1 and c.list_artifacts(ana[0].info.run_id), ana
    assert any(out.rglob("*.md"))


def test_password_never_reaches_mlflow_or_logs(cluster, live_sweep):
    st = cluster
    pw = st["planted"]
    c = _client(st)
    exp = c.get_experiment_by_name("live")
    for r in c.search_runs([exp.experiment_id], max_results=1000):
        blob = json.dumps({"tags": r.data.tags, "params": r.data.params, "metrics": r.data.metrics, "name": r.info.run_name})
        assert pw not in blob, r.info.run_name
        assert "gdna.driver_node" in r.data.tags or r.data.tags.get("gdna.role") != "trial"
    assert pw not in json.dumps(exp.tags)
    assert pw not in live_sweep["logs"]
    # nothing written anywhere on the shared storage or in the server's files holds it
    for root in (st["shared"], st["head_home"]):
        for f in root.rglob("*"):
            if f.is_file() and f.stat().st_size < 50_000_000:
                assert pw.encode() not in f.read_bytes(), f
    # nor the head node's Ray session logs (the job driver's output included)
    for f in (st["dir"] / "h").rglob("*.log"):
        if f.is_file():
            assert pw.encode() not in f.read_bytes(), f
    for f in (st["dir"] / "h").rglob("*.out"):
        if f.is_file():
            assert pw.encode() not in f.read_bytes(), f
