"""What does running a trial inside Ray Train cost? The same training loop (gdna.train.loop.run), once
bare in this process (LocalRuntime) and once inside a 1-worker TorchTrainer (RayRuntime):

  throughput ratio = Ray tokens/s / bare tokens/s   (training steps only; goal ≥ 0.90)
  fixed overhead   = Ray fit() wall time − bare run() wall time   (worker start + teardown,
                     process group, report/checkpoint round trips; goal ≤ 3 s)
  reporting share  = time in the loop's report + checkpoint calls / time inside the loop (its `entered`
                     → `end` event), bare and in Ray (goal ≤ 2%; the end event's `report_s`, one report
                     per `--eval-every` steps plus the final one)

    .venv/bin/python bench/trial_overhead.py [--steps 200] [--arch transformer] [--d-model 64]
                                             [--context 256] [--batch 16] [--threads 1] [--gpu]
                                             [--trials 4] [--no-quickstart]

Then the two sweep runners (`resources.runner`), through the sweep's own trainable in a Tuner, --trials
trials of that loop one after another:

  fixed per-trial overhead = (Tuner wall time − the trials' time inside the loop) / trials
      (inside the loop: from the loop's entry to its end event, the span a bare run takes; measured in
      the same run, so load drift on a shared machine cancels; the difference to the same trials run
      bare before is printed too)
      train:  a TorchTrainer per trial (Train controller + worker processes)
      inline: the loop in the Tune trial's process, reused by the next trial (goal ≤ 1.5 s per trial,
              the first trial's process start included)

and the quickstart's fine-tuning stage (sweeps/quickstart.yaml, verbose 0) with each runner on one
storage: its pretrainings run once (inline sweep) and are reused by the train sweep; the stage's wall
time is compared (goal: inline ≤ 0.4× train). --no-quickstart skips that part (it takes minutes).

Ray startup (ray.init) is not counted: a sweep pays it once. Set GDNA_DATA_ROOT if ../shared/data
is not beside the repository.
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--arch", default="transformer")
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--context", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1, help="torch threads bare = CPUs of the Ray worker")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved bare/Ray pairs (the best of each is kept)")
    ap.add_argument("--gpu", action="store_true")
    ap.add_argument("--trials", type=int, default=4, help="trials per runner in the runner comparison")
    ap.add_argument("--no-quickstart", action="store_true", help="skip the quickstart fine-tuning stage comparison")
    ap.add_argument("--json", default=None, help="also write the numbers here")
    args = ap.parse_args()

    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
    import torch

    from gdna.config import DataConfig, ModelConfig, ResourcesConfig, TrainConfig, TrialConfig
    from gdna.train.loop import run
    from gdna.train.runtime import LocalRuntime
    from gdna.train.events import read_events
    from gdna.train.trainer import build_trainer, resolve_trial

    trial = resolve_trial(TrialConfig(
        model=ModelConfig.for_arch(args.arch, d_model=args.d_model, n_heads=4),
        data=DataConfig(corpus="genome", context_len=args.context, windows_per_epoch=max(64, args.batch * 50),
                        eval_windows=2 * args.batch),
        train=TrainConfig(objective="clm", batch_size=args.batch, max_steps=args.steps, eval_every=args.eval_every,
                          precision="bf16" if args.gpu else "fp32", seed=0),
    ))
    tmp = Path(tempfile.mkdtemp(prefix="gdna-bench-"))

    # bare: the loop in this process; Ray: the same loop in a 1-worker TorchTrainer. Interleaved
    # (bare, ray, bare, ray, ...) so that load drifting on a shared machine hits both alike; best kept.
    torch.set_num_threads(args.threads)
    device = "cuda" if args.gpu else "cpu"
    run({"trial": trial.to_dict()}, LocalRuntime(tmp / "warmup", device=device))  # imports, data cache, kernels

    import ray

    ray_tmp = tempfile.mkdtemp(prefix="gb", dir="/tmp")  # a private Ray (short path: socket names fit)
    os.environ["GDNA_RAY_TMPDIR"] = ray_tmp  # and the quickstart sweeps' own Ray (gdna.sweep.ray_env)
    ray.init(num_cpus=max(2, args.threads), num_gpus=1 if args.gpu else 0, include_dashboard=False,
             log_to_driver=False, configure_logging=False, _temp_dir=ray_tmp)
    res = ResourcesConfig(workers_per_trial=1, cpus_per_worker=float(args.threads),
                          gpus_per_worker=1.0 if args.gpu else 0.0, max_failures=0)
    bares, fits = [], []
    for i in range(args.repeats):
        t0 = time.perf_counter()
        m = run({"trial": trial.to_dict()}, LocalRuntime(tmp / f"bare{i}", device=device))
        m["_report"] = report_share(read_events(str(tmp), f"bare{i}"))
        bares.append((time.perf_counter() - t0, m))
        t0, w0 = time.perf_counter(), time.time()
        m = build_trainer(trial, res, f"bench{i}", str(tmp / "ray")).fit().metrics
        wall, w1 = time.perf_counter() - t0, time.time()
        ev = {e["event"]: e for e in read_events(str(tmp / "ray"), f"bench{i}")}
        # fit() → loop entered: Train controller + worker actors (process starts, imports), process group;
        # entered → start event: the loop's own setup (data, model); end event → fit() returns: teardown
        m["_to_enter_s"] = ev["start"]["entered"] - w0
        m["_setup_s"] = ev["start"]["time"] - ev["start"]["entered"]
        m["_after_end_s"] = w1 - ev["end"]["time"]
        m["_report"] = report_share(read_events(str(tmp / "ray"), f"bench{i}"))
        fits.append((wall, m))
    try:
        runners = compare_runners(trial, args, tmp, device)
    finally:
        ray.shutdown()
    bare_wall = min(w for w, _ in bares)
    bare_train = min(m["time_train_s"] for _, m in bares)
    ray_wall, ray_m = min(fits, key=lambda f: f[0])
    ray_train = min(m["time_train_s"] for _, m in fits)

    tokens = args.steps * args.batch * args.context
    out = {
        "device": device, "arch": args.arch, "d_model": args.d_model, "context": args.context, "batch": args.batch,
        "steps": args.steps, "threads": args.threads,
        "bare_tokens_per_s": tokens / bare_train, "ray_tokens_per_s": tokens / ray_train,
        "bare_wall_s": bare_wall, "ray_fit_wall_s": ray_wall, "bare_walls_s": [f[0] for f in bares],
        "ray_fit_walls_s": [f[0] for f in fits],
    }
    out["throughput_ratio"] = out["ray_tokens_per_s"] / out["bare_tokens_per_s"]
    out["overhead_s"] = ray_wall - bare_wall
    out["ray_until_loop_entered_s"], out["loop_setup_s"] = ray_m["_to_enter_s"], ray_m["_setup_s"]
    out["ray_after_loop_end_s"] = ray_m["_after_end_s"]
    out["report_bare"] = min((m["_report"] for _, m in bares), key=lambda r: r["share"])
    out["report_ray"] = min((m["_report"] for _, m in fits), key=lambda r: r["share"])
    try:
        out["load_avg_1m"] = os.getloadavg()[0]
    except OSError:
        pass
    print(f"tokens/s bare {out['bare_tokens_per_s']:,.0f}  ray {out['ray_tokens_per_s']:,.0f}  "
          f"ratio {out['throughput_ratio']:.3f}x (goal >= 0.90)")
    print(f"wall bare {bare_wall:.2f}s (all: {', '.join(f'{w:.2f}' for w, _ in bares)})  ray fit {ray_wall:.2f}s "
          f"(all: {', '.join(f'{w:.2f}' for w, _ in fits)})  "
          f"fixed overhead {out['overhead_s']:.2f}s per trial (goal <= 3 s)")
    print(f"  ray: fit() → train function entered {out['ray_until_loop_entered_s']:.2f}s (Train controller and worker "
          f"actors: process starts, imports, process group); loop setup (data, model) {out['loop_setup_s']:.2f}s; "
          f"loop end → fit() returns {out['ray_after_loop_end_s']:.2f}s; load avg {out.get('load_avg_1m', 0):.1f} "
          f"on {os.cpu_count()} CPUs")
    for name in ("bare", "ray"):
        r = out[f"report_{name}"]
        print(f"reporting {name:<4}: {r['report_s']:.2f}s in {r['reports']} report+checkpoint calls of {r['inside_s']:.2f}s "
              f"inside the loop = {100 * r['share']:.2f}% (goal <= 2%)")
    out["runners"] = runners
    for name, r in runners.items():
        print(f"runner {name:<6}: {r['trials']} trials in {r['tuner_wall_s']:.1f}s, {r['in_loop_total_s']:.1f}s of it inside "
              f"the loop → fixed overhead {r['overhead_per_trial_s']:.2f}s per trial"
              + (" (goal <= 1.5 s)" if name == "inline" else "") + f"  [{r['processes']} trial process(es); "
              f"vs the same trials bare {r['bare_total_s']:.1f}s: {r['overhead_vs_bare_per_trial_s']:.2f}s per trial; "
              f"reporting {100 * r['report_share']:.2f}% of the loop]")
    if not args.no_quickstart:
        try:
            qs = quickstart_stages(tmp)
        finally:
            shutil.rmtree(ray_tmp, ignore_errors=True)
        out["quickstart_finetune_s"] = qs
        print(f"quickstart fine-tuning stage ({qs['trials']} trials): train {qs['train']:.0f}s, inline {qs['inline']:.0f}s "
              f"→ inline/train {qs['inline'] / qs['train']:.2f}x (goal <= 0.4)")
    shutil.rmtree(ray_tmp, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


def report_share(events: list[dict]) -> dict:
    """Time in report + checkpoint calls vs time inside the loop, from one run's start and end events."""
    start = next(e for e in events if e["event"] == "start")
    end = next(e for e in events if e["event"] == "end")
    inside = end["time"] - start["entered"]
    return {"report_s": end["report_s"], "reports": end["reports"], "inside_s": inside,
            "data_wait_s": end["data_wait_s"], "share": end["report_s"] / inside}


class _Fixed:
    """Tune config {"i": n} → the n-th (key, trial dict, meta, name): a stand-in for the sweep's Resolver."""

    def __init__(self, trials):
        self.out = [(t.identity(), t.to_dict(), {"arch": t.model.arch}, f"t{i}") for i, t in enumerate(trials)]

    def __call__(self, config):
        return self.out[config["i"]]


def compare_runners(trial, args, tmp: Path, device: str) -> dict:
    """--trials trials (seeds 0..n-1) bare, then through a Tuner with each runner (one at a time)."""
    import dataclasses

    from ray import tune

    from gdna.config import ResourcesConfig
    from gdna.sweep.trainable import inline_resources, trainable
    from gdna.train.events import read_events
    from gdna.train.loop import run
    from gdna.train.runtime import LocalRuntime
    from gdna.train.trainer import CHECKPOINTS_TO_KEEP

    trials = [dataclasses.replace(trial, train=dataclasses.replace(trial.train, seed=i)) for i in range(args.trials)]
    bare = 0.0
    for i, t in enumerate(trials):
        t0 = time.perf_counter()
        run({"trial": t.to_dict()}, LocalRuntime(tmp / f"runners_bare{i}", device=device))
        bare += time.perf_counter() - t0
    out = {}
    for runner in ("train", "inline"):
        r = ResourcesConfig(runner=runner, workers_per_trial=1, cpus_per_worker=float(args.threads),
                            gpus_per_worker=1.0 if args.gpu else 0.0, max_failures=0)
        storage = tmp / f"runner_{runner}"
        fn = tune.with_parameters(trainable, resolver=_Fixed(trials), resources=r.__dict__.copy(),
                                  train_storage=str(storage / "train"))
        tuner = tune.Tuner(
            tune.with_resources(fn, inline_resources(r) if runner == "inline" else {"cpu": 0.1}),
            param_space={"i": tune.grid_search(list(range(len(trials))))},
            tune_config=tune.TuneConfig(max_concurrent_trials=1, reuse_actors=runner == "inline"),
            run_config=tune.RunConfig(name="bench", storage_path=str(storage / "tune"), verbose=0,
                                      checkpoint_config=tune.CheckpointConfig(num_to_keep=CHECKPOINTS_TO_KEEP)),
        )
        t0 = time.perf_counter()
        grid = tuner.fit()
        wall = time.perf_counter() - t0
        assert not grid.errors, grid.errors
        events = [read_events(str(storage / "train"), t.identity()) for t in trials]
        pids = {e.get("pid") for ev in events for e in ev}
        # the time each trial spent inside gdna's loop (its `entered` → its end event, the span a bare
        # run() takes), measured in the same run as the Tuner's wall time: load drift hits both alike
        inside = sum(next(e["time"] for e in ev if e["event"] == "end") - next(e["entered"] for e in ev if e["event"] == "start")
                     for ev in events)
        out[runner] = {"trials": len(trials), "tuner_wall_s": wall, "bare_total_s": bare, "in_loop_total_s": inside,
                       "overhead_per_trial_s": (wall - inside) / len(trials),
                       "overhead_vs_bare_per_trial_s": (wall - bare) / len(trials),
                       "report_share": sum(report_share(ev)["report_s"] for ev in events) / inside,
                       "processes": len(pids - {None}) if runner == "inline" else len(trials)}
    return out


def quickstart_stages(tmp: Path) -> dict:
    """The quickstart's fine-tuning stage wall time with each runner (pretrainings shared, run once)."""
    import yaml

    from gdna.sweep.run import SweepRunner
    from gdna.sweep.spec import load_spec

    stage_s: dict[str, float] = {}

    class Timed(SweepRunner):
        def fit_stage(self, stage, *a, **kw):
            t0 = time.perf_counter()
            ok = super().fit_stage(stage, *a, **kw)
            if stage == "finetune":
                stage_s[self.spec.resources.runner] = time.perf_counter() - t0
            return ok

    repo = Path(__file__).resolve().parents[1]
    raw = yaml.safe_load((repo / "sweeps" / "quickstart.yaml").read_text())
    storage = tmp / "quickstart"
    n = 0
    for runner in ("inline", "train"):  # inline first: it runs the pretrainings, the train sweep reuses them
        spec_raw = {**raw, "name": f"qs_{runner}", "verbose": 0,
                    "resources": {**raw["resources"], "runner": runner}}
        path = tmp / f"qs_{runner}.yaml"
        path.write_text(yaml.safe_dump(spec_raw))
        spec = load_spec(path, check_data=True, storage=str(storage))
        sweep = Timed(spec)
        if sweep.run() != 0:
            raise SystemExit(f"quickstart sweep with runner {runner} failed")
        n = sweep.plan.n_finetune
    return {**stage_s, "trials": n}


if __name__ == "__main__":
    sys.exit(main())
