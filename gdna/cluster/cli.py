"""`gdna cluster check cluster.yaml` and `gdna cluster mlflow-server` (the head's tracking server)."""
from __future__ import annotations

import argparse
import logging
import sys


def register(sub) -> None:
    p = sub.add_parser("cluster", help="Ray cluster: check cluster.yaml, the head's MLflow server")
    csub = p.add_subparsers(dest="cluster_command", required=True)

    c = csub.add_parser("check", help="validate a Ray cluster config offline (Ray's schema + gdna's rules); exit 2 on problems")
    c.add_argument("config", nargs="?", default="cluster.yaml")
    c.set_defaults(func=cmd_check)

    m = csub.add_parser("mlflow-server", help="start (idempotent) or stop the head's MLflow tracking server")
    m.add_argument("--storage", default=None, help="the shared storage path (artifacts go to <storage>/mlflow-artifacts)")
    m.add_argument("--host", default=None, help="address to bind (default: this node's private IP; never 0.0.0.0)")
    m.add_argument("--port", type=int, default=5000)
    m.add_argument("--data-root", default=None, help="GDNA_DATA_ROOT written to head.env (default <storage>/data)")
    m.add_argument("--workers", type=int, default=1, help="server worker processes (1: one process, no supervisor restarts)")
    m.add_argument("--stop", action="store_true", help="stop the server this node started")
    m.set_defaults(func=cmd_mlflow_server)


def cmd_check(args) -> int:
    from gdna.cluster.check import check_file

    for name in ("ray.autoscaler", "ray.autoscaler._private.util"):
        logging.getLogger(name).setLevel(logging.WARNING)
    problems, notes = check_file(args.config)
    for line in problems:
        print(line, file=sys.stderr)
    if problems:
        return 2
    for n in notes:
        print(f"note: {n}")
    print(f"{args.config}: ok (Ray's cluster schema and gdna's cluster rules)")
    return 0


def cmd_mlflow_server(args) -> int:
    from gdna.cluster.head import start_server, stop_server
    from gdna.errors import ConfigError

    if args.stop:
        stop_server()
        return 0
    if not args.storage:
        raise ConfigError("--storage: required (the shared storage path, e.g. /mnt/gdna)")
    start_server(args.storage, host=args.host, port=args.port, data_root=args.data_root, workers=args.workers)
    return 0
