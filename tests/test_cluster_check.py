"""`gdna cluster check`: the shipped cluster.yaml passes; broken copies fail with exactly one line each
(exit 2), through the real CLI in a subprocess; plus the pure helpers of gdna.cluster."""
from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gdna.cluster import DRIVER_RESOURCE
from gdna.cluster.capacity import autoscaler_max, fit_count, max_concurrent_trials
from gdna.cluster.check import check_config
from gdna.cluster.nodes import node_tags
from gdna.cluster.uri import apply_credentials, redact, split_credentials
from gdna.config import ResourcesConfig

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "cluster.yaml"


def _cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gdna.cli", "cluster", *args], capture_output=True, text=True, cwd=cwd)


def _shipped() -> dict:
    return yaml.safe_load(SHIPPED.read_text())


def test_shipped_cluster_yaml_passes():
    r = _cli("check", "cluster.yaml")
    assert r.returncode == 0, r.stderr
    assert "cluster.yaml: ok" in r.stdout and r.stderr.strip() == "", (r.stdout, r.stderr)


def _break_typo(c):
    c["max_worker"] = c.pop("max_workers")


def _break_head_type(c):
    c["head_node_type"] = "cpu_head"


def _break_no_gpu(c):
    for name, t in c["available_node_types"].items():
        t["resources"].pop("GPU", None)


def _break_driver(c):
    c["available_node_types"]["head"]["resources"].pop(DRIVER_RESOURCE)


def _break_driver_on_worker(c):
    c["available_node_types"]["gpu_1x"]["resources"][DRIVER_RESOURCE] = 1


def _break_world_port(c):
    c["provider"]["security_group"] = {"IpPermissions": [
        {"FromPort": 5000, "ToPort": 5000, "IpProtocol": "tcp", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]}


def _break_mlflow_world(c):
    c["head_start_ray_commands"] = [x.replace("--port 5000", "--port 5000 --host 0.0.0.0") for x in c["head_start_ray_commands"]]


def _break_mlflow_local(c):
    c["head_start_ray_commands"] = [x.replace("--port 5000", "--port 5000 --host 127.0.0.1") for x in c["head_start_ray_commands"]]


def _break_no_mlflow(c):
    c["head_start_ray_commands"] = [x for x in c["head_start_ray_commands"] if "mlflow-server" not in x]


def _break_sqlite_uri(c):
    c["setup_commands"].append("echo 'export GDNA_TRACKING_URI=sqlite:////mnt/gdna/mlflow.db' >> ~/.bashrc")


def _break_storage_tmp(c):
    c["head_start_ray_commands"] = [x.replace("--storage /mnt/gdna", "--storage /tmp/gdna") for x in c["head_start_ray_commands"]]


def _break_literal_fs(c):
    c["initialization_commands"] = [x.replace('"$GDNA_SHARED_FS"', "fs-0123456789abcdef.efs.us-west-2.amazonaws.com:/")
                                    for x in c["initialization_commands"]]


def _break_no_cuda(c):
    c["setup_commands"] = [x for x in c["setup_commands"] if "[cuda]" not in x]


def _break_dashboard(c):
    c["head_start_ray_commands"] = [x.replace("--dashboard-host=127.0.0.1", "--dashboard-host=0.0.0.0") for x in c["head_start_ray_commands"]]


def _break_venv_sync(c):
    c["rsync_exclude"] = [x for x in c["rsync_exclude"] if x != ".venv"]


BROKEN = {  # name: (edit, a word the one line must contain)
    "schema_typo": (_break_typo, "max_worker"),
    "head_type": (_break_head_type, "head_node_type"),
    "no_gpu_type": (_break_no_gpu, "GPU worker type"),
    "no_driver_resource": (_break_driver, DRIVER_RESOURCE),
    "driver_on_worker": (_break_driver_on_worker, "gpu_1x"),
    "world_open_port": (_break_world_port, "open to the world"),
    "mlflow_0000": (_break_mlflow_world, "0.0.0.0"),
    "mlflow_localhost": (_break_mlflow_local, "unreachable from the worker"),
    "no_mlflow": (_break_no_mlflow, "no MLflow server"),
    "sqlite_tracking": (_break_sqlite_uri, "local store"),
    "storage_tmp": (_break_storage_tmp, "/tmp/gdna"),
    "literal_fs_id": (_break_literal_fs, "GDNA_SHARED_FS"),
    "no_cuda_extra": (_break_no_cuda, "[cuda]"),
    "dashboard_world": (_break_dashboard, "dashboard"),
    "venv_synced": (_break_venv_sync, ".venv"),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_copy_is_rejected_with_one_line(name, tmp_path):
    edit, word = BROKEN[name]
    c = _shipped()
    edit(c)
    f = tmp_path / "cluster.yaml"
    f.write_text(yaml.safe_dump(c, sort_keys=False))
    (tmp_path / "cluster.env").write_text("GDNA_SHARED_FS=nfs.example.internal:/gdna\n")
    r = _cli("check", str(f))
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, (name, r.stdout, r.stderr)
    assert len(lines) == 1, (name, lines)
    assert lines[0].startswith(f"{f}: ") and word in lines[0], (name, lines)


def test_invalid_yaml_and_env_file(tmp_path):
    f = tmp_path / "cluster.yaml"
    f.write_text("cluster_name: gdna\nprovider: [unclosed\n")
    r = _cli("check", str(f))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "not valid YAML" in r.stderr, r.stderr
    f.write_text(SHIPPED.read_text())
    (tmp_path / "cluster.env").write_text("# nothing set\nGDNA_MLFLOW_BACKEND_URI=postgresql://u:p@db/mlflow\n")
    r = _cli("check", str(f))
    assert r.returncode == 2 and r.stderr.strip() == f"{tmp_path / 'cluster.env'}: GDNA_SHARED_FS: not set " \
        "(the NFS export every node mounts, e.g. fs-XXXX.efs.<region>.amazonaws.com:/)", r.stderr
    (tmp_path / "cluster.env").write_text("GDNA_SHARED_FS=10.0.0.5:/gdna\n")
    r = _cli("check", str(f))
    assert r.returncode == 0 and "note" not in r.stdout, (r.stdout, r.stderr)


def test_every_problem_is_listed():
    c = _shipped()
    _break_no_gpu(c)
    _break_mlflow_world(c)
    _break_no_cuda(c)
    assert len(check_config(c)) == 3, check_config(c)
    assert check_config(copy.deepcopy(_shipped())) == []


# -- capacity ------------------------------------------------------------------------------------
def test_capacity_from_live_resources_and_autoscaler():
    one_gpu = ResourcesConfig(workers_per_trial=1, cpus_per_worker=4, gpus_per_worker=1, cpus_per_trial=0.5)
    quarter = ResourcesConfig(workers_per_trial=1, cpus_per_worker=1, gpus_per_worker=0.25, cpus_per_trial=0.1)
    cfg = _shipped()
    live_head_only = {"CPU": 8.0, DRIVER_RESOURCE: 1000.0}
    # nothing up yet but the head: the autoscaler's maximum (8 × g5.2xlarge + 2 × g5.12xlarge = 16 GPUs)
    assert autoscaler_max(cfg, live_head_only) == {"CPU": 8 + 8 * 8 + 2 * 48, "GPU": 16}
    assert max_concurrent_trials(one_gpu, live_head_only, cfg) == 16
    assert max_concurrent_trials(quarter, live_head_only, cfg) == 64  # four trials per GPU
    # a hand-started cluster (no autoscaler): live resources only, GPUs included
    assert max_concurrent_trials(one_gpu, {"CPU": 40.0, "GPU": 2.0}, None) == 2
    assert max_concurrent_trials(quarter, {"CPU": 40.0, "GPU": 2.0}, None) == 8
    assert fit_count({"CPU": 2.0}, ResourcesConfig(workers_per_trial=2, cpus_per_worker=0.25, cpus_per_trial=0.1)) == 3
    assert max_concurrent_trials(ResourcesConfig(max_concurrent_trials=5), {"CPU": 1.0}, cfg) == 5
    # the global max_workers caps the sum of the node types (GPU-richest types first)
    capped = {**cfg, "max_workers": 3}
    assert autoscaler_max(capped, live_head_only)["GPU"] == 2 * 4 + 1


# -- credentials / node tags -----------------------------------------------------------------------
def test_credentials_leave_the_uri(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    assert split_credentials("http://127.0.0.1:5000") == ("http://127.0.0.1:5000", None, None)
    assert split_credentials("sqlite:////x/mlflow.db") == ("sqlite:////x/mlflow.db", None, None)
    clean = apply_credentials("https://ann:p%40ss@mlflow.internal:443/base")
    assert clean == "https://mlflow.internal:443/base"
    import os

    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "ann" and os.environ["MLFLOW_TRACKING_PASSWORD"] == "p@ss"
    assert redact("db postgresql://u:hunter2@db:5432/m and http://a:b@h") == "db postgresql://u:***@db:5432/m and http://a:***@h"


def test_node_tags_union_over_worker_groups():
    t = node_tags({"gdna_driver_node": "H", "gdna_worker_nodes": "W1,W1", "gdna_worker_ips": "10.0.0.2"})
    assert t == {"gdna.driver_node": "H", "gdna.worker_nodes": "W1", "gdna.worker_ips": "10.0.0.2"}
    # the worker group restarted on another node after a node loss: the union, only what changed
    t2 = node_tags({"gdna_driver_node": "H", "gdna_worker_nodes": "W2"}, t)
    assert t2 == {"gdna.worker_nodes": "W1,W2"}
    assert node_tags({"val_acc": 0.5}, t) == {}


# -- GPU packing and the driver resource (before any Ray work) --------------------------------------
def test_fractional_gpus_only_for_single_worker_trials(tmp_path):
    from gdna.errors import ConfigError

    ResourcesConfig(workers_per_trial=1, gpus_per_worker=0.25).validate()  # four trials per GPU
    ResourcesConfig(workers_per_trial=4, gpus_per_worker=1).validate()
    with pytest.raises(ConfigError, match=r"^resources.gpus_per_worker: 0.5 with workers_per_trial 2: DDP trials take whole GPUs"):
        ResourcesConfig(workers_per_trial=2, gpus_per_worker=0.5).validate()
    with pytest.raises(ConfigError, match=r"^resources.gpus_per_worker: 1.5"):
        ResourcesConfig(gpus_per_worker=1.5).validate()
    with pytest.raises(ConfigError, match=r"^resources.driver_resource"):
        ResourcesConfig(driver_resource="CPU").validate()
    # through the CLI: one line, exit 2, nothing started
    spec = yaml.safe_load((REPO / "sweeps" / "quickstart.yaml").read_text())
    spec["resources"] = {"workers_per_trial": 2, "gpus_per_worker": 0.5}
    f = tmp_path / "frac.yaml"
    f.write_text(yaml.safe_dump(spec))
    r = subprocess.run([sys.executable, "-m", "gdna.cli", "sweep", str(f), "--plan"], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith("gdna: error: resources.gpus_per_worker: 0.5 with workers_per_trial 2"), r.stderr


def test_driver_request_follows_the_cluster(monkeypatch):
    import ray

    from gdna.errors import ConfigError
    from gdna.sweep.ray_env import driver_resources

    r = ResourcesConfig(cpus_per_trial=0.5)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 8.0, DRIVER_RESOURCE: 1000.0})
    assert driver_resources(r) == {"cpu": 0.5, DRIVER_RESOURCE: 0.001}  # a cluster.yaml head: drivers go there
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    assert driver_resources(r) == {"cpu": 0.5}  # a laptop: anywhere
    assert driver_resources(ResourcesConfig(driver_resource="")) == {"cpu": 0.1}
    with pytest.raises(ConfigError, match="^resources.driver_resource: no node of this Ray cluster advertises 'safe_nodes'"):
        driver_resources(ResourcesConfig(driver_resource="safe_nodes"))
