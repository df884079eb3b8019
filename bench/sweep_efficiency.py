"""How close does a real sweep come to its trials' own time? A small fine-tuning sweep run through gdna's
own sweep code (gdna.sweep.run.SweepRunner: spec → plan → Tuner → MLflow callback → summary), its trials
sized to last about a minute each inside the loop:

  sweep efficiency = sweep wall time / (Σ trials' time inside the loop / concurrency)   (goal ≤ 1.2×)

      sweep wall:   SweepRunner.run(), Ray start and shutdown, plan, MLflow and summary included
      stage wall:   the fine-tuning stage's Tuner alone (printed beside it)
      inside loop:  each trial's `entered` → `end` event (gdna.train.events, the span a bare run takes),
                    read from `<sweep dir>/train/<key>/events.jsonl` after the sweep
  reporting share = Σ time in the loop's report + checkpoint calls / Σ inside-loop time   (goal ≤ 2%)
  data wait share = Σ time waiting on the data loader / Σ inside-loop time               (goal < 5%)

    GDNA_DATA_ROOT=/work/shared/data .venv/bin/python bench/sweep_efficiency.py
        [--runners inline,train] [--trials 3] [--concurrency 1] [--epochs 14] [--d-model 64]
        [--max-len 256] [--arch transformer] [--threads 1]

Defaults: 3 trials (lr grid), one at a time, each ≈ 1 minute inside the loop on a 2-vCPU VM, with both
runners one after the other (`--runners inline` for one): about 8 minutes. Each runner's sweep is its own
sweep (name, storage) with `scratch` fine-tuning only (no pretraining stage), human_enhancers_cohn,
patience off so every trial runs all its epochs. Ray runs in a private temp dir (GDNA_RAY_TMPDIR) and
is shut down by the sweep. The sweep's own output (plan, one line per trial, summary) goes to
<tmp>/<runner>.log.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def spec_dict(args, runner: str, space: Path) -> dict:
    cpus = float(args.threads)
    res = ({"runner": "inline", "workers_per_trial": 1, "cpus_per_worker": cpus} if runner == "inline" else
           {"runner": "train", "workers_per_trial": 1, "cpus_per_worker": cpus, "cpus_per_trial": 0.1})
    return {
        "name": f"bench_sweep_{runner}",
        "tasks": [args.task],
        "architectures": [args.arch],
        "strategies": ["scratch"],
        "search_space": str(space),
        "model": {"d_model": args.d_model},
        "data": {"max_len": args.max_len, "max_eval_examples": 128, "n_folds": 1},
        "train": {"epochs": args.epochs, "patience": None},
        "resources": {**res, "max_concurrent_trials": args.concurrency, "max_failures": 0},
        "verbose": 0,
    }


def run_sweep(args, runner: str, tmp: Path) -> dict:
    import yaml

    from gdna.sweep.run import SweepRunner
    from gdna.sweep.spec import load_spec
    from gdna.train.events import read_events

    lrs = [1e-3 * 2 ** i for i in range(args.trials)]
    space = tmp / "space.yaml"
    space.write_text(yaml.safe_dump({"grid": {"train.lr": lrs, "train.batch_size": [args.batch]}, "seeds": [0]}))
    path = tmp / f"{runner}.yaml"
    path.write_text(yaml.safe_dump(spec_dict(args, runner, space)))
    stage_s: dict[str, float] = {}

    class Timed(SweepRunner):
        def fit_stage(self, stage, *a, **kw):
            t0 = time.perf_counter()
            try:
                return super().fit_stage(stage, *a, **kw)
            finally:
                stage_s[stage] = time.perf_counter() - t0

    spec = load_spec(path, check_data=True, storage=str(tmp / f"storage_{runner}"))
    load0 = os.getloadavg()[0]
    with open(tmp / f"{runner}.log", "w") as log:
        t0 = time.perf_counter()
        sweep = Timed(spec, out=log)
        rc = sweep.run()
        wall = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"the {runner} sweep failed: see {tmp / f'{runner}.log'}")
    train = spec.sweep_dir() / "train"
    ends, inside = [], []
    for d in sorted(p for p in train.iterdir() if (p / "events.jsonl").exists()):
        ev = read_events(str(train), d.name)
        start = [e for e in ev if e["event"] == "start"]
        end = [e for e in ev if e["event"] == "end"]
        if len(start) != 1 or len(end) != 1:
            raise SystemExit(f"{d}: expected one start and one end event, got {len(start)} / {len(end)}")
        inside.append(end[0]["time"] - start[0]["entered"])
        ends.append(end[0])
    if len(inside) != args.trials:
        raise SystemExit(f"{runner}: {len(inside)} trials with events, expected {args.trials}")
    total = sum(inside)
    return {
        "runner": runner, "trials": len(inside), "concurrency": args.concurrency, "sweep_wall_s": wall,
        "stage_wall_s": stage_s.get("finetune", float("nan")), "inside_s": inside, "inside_total_s": total,
        "ratio": wall / (total / args.concurrency), "stage_ratio": stage_s.get("finetune", float("nan")) / (total / args.concurrency),
        "report_s": sum(e.get("report_s", float("nan")) for e in ends),
        "reports": sum(e.get("reports", 0) for e in ends),
        "data_wait_s": sum(e.get("data_wait_s", float("nan")) for e in ends),
        "load_avg_start": load0, "load_avg_end": os.getloadavg()[0],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runners", default="inline,train", help="comma-separated: inline, train (default both)")
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--arch", default="transformer")
    ap.add_argument("--task", default="human_enhancers_cohn")
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--max-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=14, help="sizes a trial (about 1 minute inside the loop by default)")
    ap.add_argument("--threads", type=int, default=1, help="CPUs (torch threads) per trial")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (sweep storage and logs)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="gdna-bench-sweep-"))
    ray_tmp = tempfile.mkdtemp(prefix="gb", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    os.environ["GDNA_RAY_TMPDIR"] = ray_tmp
    os.environ.setdefault("GDNA_RAY_NUM_CPUS", str(max(2, args.concurrency * args.threads)))
    os.environ.pop("RAY_ADDRESS", None)
    print(f"sweep efficiency: {args.trials} {args.arch} fine-tuning trials (d_model {args.d_model}, max_len "
          f"{args.max_len}, {args.epochs} epochs, {args.threads} CPU each), {args.concurrency} at a time; "
          f"{os.cpu_count()} CPUs, load avg {os.getloadavg()[0]:.1f}", flush=True)
    out = []
    try:
        for runner in args.runners.split(","):
            r = run_sweep(args, runner, tmp)
            out.append(r)
            per = ", ".join(f"{s:.1f}" for s in r["inside_s"])
            print(f"runner {runner:<6}: sweep {r['sweep_wall_s']:.1f}s, its stage {r['stage_wall_s']:.1f}s; trials inside "
                  f"the loop {r['inside_total_s']:.1f}s ({per}) / {r['concurrency']} → sweep/trials "
                  f"{r['ratio']:.3f}x (goal <= 1.2), stage/trials {r['stage_ratio']:.3f}x; "
                  f"load avg {r['load_avg_start']:.1f} → {r['load_avg_end']:.1f}", flush=True)
            print(f"  reporting {r['report_s']:.2f}s in {r['reports']} report+checkpoint calls = "
                  f"{100 * r['report_s'] / r['inside_total_s']:.2f}% of trial time (goal <= 2%); data wait "
                  f"{r['data_wait_s']:.2f}s = {100 * r['data_wait_s'] / r['inside_total_s']:.2f}% (goal < 5%)", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
