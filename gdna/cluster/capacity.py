"""How many trials fit at once (`resources.max_concurrent_trials: 0`): from the live cluster's
resources, GPUs included, and — when an autoscaler can still add workers — from its maximum.

A trial holds its driver (`cpus_per_trial`, plus a sliver of the head's driver resource) and
`workers_per_trial` Ray Train workers (`cpus_per_worker` + `gpus_per_worker` each). Never start more
trial drivers than worker groups that can run: a started driver whose workers cannot be placed just
waits, and fractional drivers would starve their own workers of CPU.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping

# Written by `ray up` on the head (`ray start --autoscaling-config=~/ray_bootstrap_config.yaml`).
AUTOSCALER_CONFIG_ENV = "GDNA_AUTOSCALER_CONFIG"
DEFAULT_AUTOSCALER_CONFIG = "~/ray_bootstrap_config.yaml"


def trial_demand(r: Any) -> dict[str, float]:
    """Resources one trial holds while it runs (r: a ResourcesConfig or anything with its fields)."""
    if getattr(r, "runner", "train") == "inline":  # trains in the trial's own process: no separate driver
        return {"CPU": float(r.cpus_per_worker), "GPU": float(r.gpus_per_worker or 0.0)}
    w = int(r.workers_per_trial)
    return {"CPU": float(r.cpus_per_trial) + w * float(r.cpus_per_worker), "GPU": w * float(r.gpus_per_worker or 0.0)}


def fit_count(total: Mapping[str, float], r: Any) -> int:
    """Trials that fit in `total` resources (at least 1: Tune queues the rest)."""
    need = trial_demand(r)
    n = math.floor(float(total.get("CPU", 0.0)) / need["CPU"] + 1e-9)
    if need["GPU"] > 0:
        n = min(n, math.floor(float(total.get("GPU", 0.0)) / need["GPU"] + 1e-9))
    return max(1, n)


def autoscaler_max(config: Mapping[str, Any] | None, live: Mapping[str, float]) -> dict[str, float]:
    """CPU/GPU the cluster can reach: the head type's resources (or the live cluster's, whichever is
    larger) plus every worker type at its max_workers, within the global max_workers (GPU-richest
    types first). `config`: an autoscaler (cluster.yaml / ray_bootstrap_config.yaml) dict."""
    if not config or not isinstance(config.get("available_node_types"), Mapping):
        return {"CPU": float(live.get("CPU", 0.0)), "GPU": float(live.get("GPU", 0.0))}
    types = config["available_node_types"]
    head = config.get("head_node_type")
    total = {k: float((types.get(head, {}) or {}).get("resources", {}).get(k, 0.0)) for k in ("CPU", "GPU")}
    left = int(config.get("max_workers", sum(int(t.get("max_workers", 0)) for t in types.values())))
    workers = sorted(
        ((float(t.get("resources", {}).get("GPU", 0.0)), float(t.get("resources", {}).get("CPU", 0.0)),
          int(t.get("max_workers", left))) for name, t in types.items() if name != head),
        reverse=True,
    )
    for gpu, cpu, n in workers:
        n = max(0, min(n, left))
        total["GPU"] += n * gpu
        total["CPU"] += n * cpu
        left -= n
    return {k: max(total[k], float(live.get(k, 0.0))) for k in ("CPU", "GPU")}


def load_autoscaler_config(path: str | None = None) -> dict | None:
    """The autoscaler's config on this node (None on a laptop or a hand-started cluster)."""
    p = Path(path or os.environ.get(AUTOSCALER_CONFIG_ENV) or DEFAULT_AUTOSCALER_CONFIG).expanduser()
    if not p.is_file():
        return None
    import yaml

    try:
        cfg = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError):
        return None
    return cfg if isinstance(cfg, dict) else None


def max_concurrent_trials(r: Any, live: Mapping[str, float], autoscaler_config: Mapping[str, Any] | None = None) -> int:
    """`max_concurrent_trials` for resources `r`: the spec's number, else what fits in the larger of the
    live cluster and the autoscaler's maximum."""
    if getattr(r, "max_concurrent_trials", 0):
        return int(r.max_concurrent_trials)
    return max(fit_count(live, r), fit_count(autoscaler_max(autoscaler_config, live), r))
