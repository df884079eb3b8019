"""`gdna sweep | resume | status | ui`.

    gdna sweep sweeps/quickstart.yaml --plan      # print the stage DAG and trial counts (no Ray)
    gdna sweep sweeps/quickstart.yaml             # run it (refuses if the sweep name exists)
    gdna sweep sweeps/quickstart.yaml --resume    # continue an interrupted sweep (or start it)
    gdna resume quickstart [--storage runs]       # same, from the stored resolved spec
    gdna status quickstart [--storage runs]       # per-stage done / running / errored counts
    gdna ui quickstart [--port 5000]              # MLflow UI on the sweep's tracking store
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="plan or run a sweep spec (sweeps/*.yaml)")
    p.add_argument("spec", help="sweep spec file (or a name in sweeps/)")
    p.add_argument("--plan", action="store_true", help="print the stage DAG and trial counts, run nothing")
    p.add_argument("--resume", action="store_true", help="continue the sweep of this name")
    _common(p)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("resume", help="continue an interrupted sweep")
    p.add_argument("name")
    p.add_argument("--storage", default=None, help="storage path the sweep was started with (default runs)")
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("status", help="per-stage done / running / errored counts of a sweep")
    p.add_argument("name")
    p.add_argument("--storage", default=None)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("ui", help="start the MLflow UI on a sweep's tracking store")
    p.add_argument("name")
    p.add_argument("--storage", default=None)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--print-only", action="store_true", help="print the command and URL, start nothing")
    p.set_defaults(func=cmd_ui)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", default=None, help="override the spec's storage path")
    p.add_argument("--data-root", default=None, help="override the spec's data_root (else GDNA_DATA_ROOT)")
    p.add_argument("--tracking-uri", default=None, help="override the MLflow tracking URI")


def _storage(args) -> str:
    return args.storage or os.environ.get("GDNA_STORAGE") or "runs"


def cmd_sweep(args) -> int:
    from gdna.sweep.spec import load_spec

    overrides = {"storage": args.storage, "data_root": args.data_root, "tracking_uri": args.tracking_uri}
    if args.plan:
        from gdna.sweep.plan import build_plan

        from gdna.cluster.cost import estimate_lines

        spec = load_spec(args.spec, **overrides)
        plan = build_plan(spec)
        print(plan.describe())
        print("\n".join(estimate_lines(plan)))  # GPU-hours from trials measured under the storage
        return 0
    spec = load_spec(args.spec, check_data=True, **overrides)
    from gdna.sweep.run import run_sweep

    return run_sweep(spec, resume=args.resume)


def cmd_resume(args) -> int:
    from gdna.sweep.run import load_sweep, run_sweep

    return run_sweep(load_sweep(args.name, _storage(args)), resume=True)


def sweep_status(name: str, storage: str) -> dict:
    from gdna.sweep.plan import build_plan
    from gdna.sweep.run import load_sweep
    from gdna.tracking import SweepTracker, default_artifact_location

    spec = load_sweep(name, storage)
    plan = build_plan(spec)
    d = spec.sweep_dir()
    try:
        stages = json.loads((d / "stages.json").read_text())
    except (OSError, ValueError):
        stages = {}
    tracker = SweepTracker(spec.tracking(), spec.name, default_artifact_location(spec.tracking(), d))
    counts = tracker.stage_counts()
    errors = tracker.trial_errors()
    from gdna.sweep.state import alive_driver as _alive_driver

    alive = _alive_driver(d) is not None
    planned = {"pretrain": len(plan.pretrain), "finetune": plan.n_finetune}
    out = {"name": name, "dir": str(d), "tracking_uri": spec.tracking(), "driver_running": alive, "stages": {},
           "errors": errors}
    for stage in ("pretrain", "finetune"):
        c = counts.get(stage, {})
        done = c.get("finished", 0) + c.get("diverged", 0) + c.get("stopped", 0)
        out["stages"][stage] = {
            "state": stages.get(stage, {}).get("status", "pending"), "planned": planned[stage], "done": done,
            "diverged": c.get("diverged", 0), "stopped": c.get("stopped", 0), "running": c.get("running", 0),
            "errored": c.get("errored", 0), "not_started": max(0, planned[stage] - sum(c.values())),
        }
    if spec.space.searcher == "optuna":
        out["search"] = _optuna_usage(d, spec.space.num_samples, plan.n_tuning_cells)
    return out


def _optuna_usage(sweep_dir: Path, budget: int, n_cells: int) -> dict:
    """Points proposed per tuning cell so far, from the sweep's Optuna studies (optuna.db)."""
    db = sweep_dir / "optuna.db"
    out = {"budget_per_cell": budget, "cells": n_cells, "proposed": {}}
    if db.is_file():
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        for st in optuna.get_all_study_summaries(f"sqlite:///{db}"):
            out["proposed"][st.study_name] = st.n_trials
    return out


def cmd_status(args) -> int:
    st = sweep_status(args.name, _storage(args))
    if args.json:
        print(json.dumps(st, indent=2))
        return 0
    print(f"sweep {st['name']} ({st['dir']}); driver {'running' if st['driver_running'] else 'not running'}")
    print(f"{'stage':<10}{'state':<10}{'planned':>8}{'done':>6}{'stopped':>9}{'running':>9}{'errored':>9}{'not started':>13}")
    for stage, s in st["stages"].items():
        running = s["running"]
        print(f"{stage:<10}{s['state']:<10}{s['planned']:>8}{s['done']:>6}{s['stopped']:>9}{running:>9}{s['errored']:>9}"
              f"{s['not_started']:>13}")
    print("(done = finished + diverged + stopped; stopped = ended early by the scheduler, tested from its best checkpoint)")
    if "search" in st:
        u = st["search"]
        used = sorted(u["proposed"].values())
        print(f"optuna: {u['cells']} tuning cells × {u['budget_per_cell']} points; proposed so far per cell: "
              + (f"{used[0]}..{used[-1]}" if used and used[0] != used[-1] else f"{used[0] if used else 0}"))
    for e in st["errors"]:
        print(f"  errored {e['stage']} {e['name']}: {e['error']}")
    if st["errors"]:
        print(f"  (full tracebacks: {st['dir']}/errors/; `gdna resume {st['name']}` retries errored trials)")
    if not st["driver_running"] and any(s["running"] for s in st["stages"].values()):
        print(f"(the driver is not running: 'running' trials were interrupted; continue with `gdna resume {st['name']}`)")
    return 0


def cmd_ui(args) -> int:
    from gdna.sweep.run import load_sweep

    spec = load_sweep(args.name, _storage(args))
    uri = spec.tracking()
    if uri.startswith(("http://", "https://")):
        print(f"MLflow for sweep {args.name} is served at {uri} (on a cluster: ssh -L 5000:localhost:5000 <head>)")
        return 0
    mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or shutil.which("mlflow") or "mlflow"
    cmd = [mlflow, "ui", "--backend-store-uri", uri, "--host", args.host, "--port", str(args.port)]
    from gdna.tracking import runs_table_url

    url = runs_table_url(f"http://{args.host}:{args.port}", uri, args.name)
    print(f"MLflow UI for sweep {args.name}: {url}  (experiment '{args.name}': its runs table)")
    print(" ".join(cmd), flush=True)
    if args.print_only:
        return 0
    from gdna.procs import run_in_group

    return run_in_group(cmd)  # Ctrl-C / SIGTERM stop the server and all its workers


def main(argv: list[str] | None = None) -> int:
    """`python -m gdna.sweep.cli ...` is `gdna ...` (the same parser and error handling)."""
    from gdna.cli import main as gdna_main

    return gdna_main(argv)


if __name__ == "__main__":
    sys.exit(main())
