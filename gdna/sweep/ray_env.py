"""Ray for a sweep: the environment its processes need, a private local Ray or the cluster's, concurrency."""
from __future__ import annotations

import os
import socket
from typing import Any

from gdna.config import ResourcesConfig
from gdna.procs import temporary_env
from gdna.errors import ConfigError
from gdna.train.trainer import DEFAULT_HEALTH_CHECK_S, HEALTH_CHECK_ENV

ENV_DEFAULTS = {
    HEALTH_CHECK_ENV: DEFAULT_HEALTH_CHECK_S,  # Ray's default 2 s costs 2 s per report
    "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",  # a replayed finished trial reports only final metrics
    "RAY_AIR_NEW_OUTPUT": "0",  # use our CLIReporter columns
    "RAY_DEDUP_LOGS": "1",
    "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "600",  # worker start-up is slow on a loaded 2-core box
}


def init_ray(ray_address: str, verbose: int) -> None:
    """Connect to `ray_address` (or RAY_ADDRESS), else start a private local Ray.

    A local Ray is pinned to its own GCS port (and GDNA_RAY_TMPDIR / GDNA_RAY_NUM_CPUS when set): Ray
    Train's placement-group cleaner looks the cluster up by address, and with several local Ray instances
    on one machine (several users / test runs) "auto" is ambiguous."""
    import ray

    for k, v in ENV_DEFAULTS.items():
        os.environ.setdefault(k, v)
    address = ray_address or os.environ.get("RAY_ADDRESS") or "local"
    kw: dict[str, Any] = {"address": address, "ignore_reinit_error": True, "log_to_driver": verbose >= 2}
    pinned = {}
    if address == "local":
        if os.environ.get("GDNA_RAY_TMPDIR"):
            kw["_temp_dir"] = os.environ["GDNA_RAY_TMPDIR"]
        if os.environ.get("GDNA_RAY_NUM_CPUS"):
            kw["num_cpus"] = float(os.environ["GDNA_RAY_NUM_CPUS"])
        from ray._private.services import get_node_ip_address

        port = free_port()
        pinned = {"RAY_GCS_SERVER_PORT": str(port), "RAY_ADDRESS": f"{get_node_ip_address()}:{port}"}
    else:  # a cluster: the workers do not inherit our environment
        kw["runtime_env"] = {"env_vars": {k: os.environ[k] for k in ENV_DEFAULTS if k in os.environ}}
    try:
        with temporary_env(pinned):
            ray.init(**kw)
    except ray.exceptions.AuthenticationError as e:  # a cluster started with RAY_AUTH_MODE=token
        raise ConfigError(f"ray_address {address}: the cluster uses token authentication: run with RAY_AUTH_MODE=token "
                          f"and its token in RAY_AUTH_TOKEN or ~/.ray/auth_token ({str(e).splitlines()[0][:120]})") from None


def max_concurrent(r: ResourcesConfig) -> int:
    """Trials that fit at once (gdna.cluster.capacity): the spec's number, else what fits in the live
    cluster's resources, GPUs included, or in the autoscaler's maximum when workers are not up yet."""
    if r.max_concurrent_trials:
        return r.max_concurrent_trials
    import ray

    from gdna.cluster.capacity import load_autoscaler_config, max_concurrent_trials

    return max_concurrent_trials(r, ray.cluster_resources(), load_autoscaler_config())


def driver_resources(r: ResourcesConfig) -> dict[str, float]:
    """What each trial's driver (the Tune trainable; Train V2 pins its controller to the same node)
    requests: `cpus_per_trial`, plus a sliver of the driver resource so that drivers only run on the
    nodes that advertise it (cluster.yaml's head): a lost worker node then loses only Train workers."""
    import ray

    from gdna.cluster import DRIVER_RESOURCE, DRIVER_SLIVER

    req: dict[str, float] = {"cpu": r.cpus_per_trial}
    name = DRIVER_RESOURCE if r.driver_resource == "auto" else r.driver_resource
    if name:
        if name in ray.cluster_resources():
            req[name] = DRIVER_SLIVER
        elif r.driver_resource != "auto":
            raise ConfigError(f"resources.driver_resource: no node of this Ray cluster advertises {name!r} "
                              "(cluster.yaml's head advertises gdna_driver; or use 'auto')")
    return req


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]
