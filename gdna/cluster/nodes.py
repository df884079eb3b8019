"""Which Ray nodes a trial ran on, reported with its metrics (the driver writes them to MLflow as tags).

`report_callbacks()` replaces the plain `TuneReportCallback()` a trial's TorchTrainer gets: the same
propagation of metrics to Tune, plus, in every report,
- `gdna_driver_node`: the node id of the Train controller (= the Tune trainable's node: Train V2 pins
  the controller to the trainable's node), i.e. where the trial's driver runs;
- `gdna_worker_nodes` / `gdna_worker_ips`: node ids / IPs of the current worker group, rank order
  (a worker group restarted after a node loss reports its new nodes from then on).
Both callbacks run in the controller process and share one `_Nodes` (pickled together in the RunConfig).
Node ids, not IPs, tell nodes apart: several nodes can share one IP (a test cluster on one machine).
"""
from __future__ import annotations

from typing import Any

DRIVER_NODE_KEY = "gdna_driver_node"
WORKER_NODES_KEY = "gdna_worker_nodes"
WORKER_IPS_KEY = "gdna_worker_ips"


class _Nodes:
    def __init__(self) -> None:
        self.ids: list[str] = []
        self.ips: list[str] = []


def report_callbacks() -> list:
    """[metrics → Tune with node info, worker-group node recorder]; call inside a Tune trainable."""
    from ray.train.v2._internal.execution.callback import WorkerGroupCallback
    from ray.tune.integration.ray_train import TuneReportCallback

    class NodeTuneReportCallback(TuneReportCallback):
        def __init__(self, nodes: _Nodes):
            super().__init__()
            self.nodes = nodes

        def after_report(self, run_context, metrics, checkpoint):
            import ray

            extra = {DRIVER_NODE_KEY: ray.get_runtime_context().get_node_id()}
            if self.nodes.ids:
                extra[WORKER_NODES_KEY] = ",".join(self.nodes.ids)
                extra[WORKER_IPS_KEY] = ",".join(self.nodes.ips)
            metrics = [{**m, **extra} for m in metrics] if metrics else [extra]
            super().after_report(run_context, metrics, checkpoint)

    class WorkerNodesCallback(WorkerGroupCallback):
        def __init__(self, nodes: _Nodes):
            self.nodes = nodes

        def after_worker_group_start(self, worker_group: Any) -> None:
            workers = worker_group.get_workers()
            self.nodes.ids = [w.metadata.node_id for w in workers]
            self.nodes.ips = [w.metadata.node_ip for w in workers]

    nodes = _Nodes()
    return [NodeTuneReportCallback(nodes), WorkerNodesCallback(nodes)]


def node_tags(result: dict, seen: dict[str, str] | None = None) -> dict[str, str]:
    """MLflow tags from a reported result: `gdna.driver_node`, and `gdna.worker_nodes` /
    `gdna.worker_ips` as the union (first-seen order) of every worker group the trial had."""
    seen = dict(seen or {})
    out: dict[str, str] = {}
    if result.get(DRIVER_NODE_KEY):
        out["gdna.driver_node"] = str(result[DRIVER_NODE_KEY])
    for key, tag in ((WORKER_NODES_KEY, "gdna.worker_nodes"), (WORKER_IPS_KEY, "gdna.worker_ips")):
        if result.get(key):
            have = [x for x in seen.get(tag, "").split(",") if x]
            for x in str(result[key]).split(","):
                if x and x not in have:
                    have.append(x)
            out[tag] = ",".join(have)
    return {k: v for k, v in out.items() if seen.get(k) != v}
