"""Long sequences stay linear: time and peak memory of one training step per sequence length, side by side.

    python bench/long_context.py [--lengths 4096,16384,65536] [--layers 2] [--budget 1600000] [--threads N]
                                 [--device cpu] [--quadratic-max 16384] [--repeats 2]

For every registered architecture (gdna.registry), one causal-LM training step (forward, backward, AdamW
step) on ONE sequence of each length, the model at the parameter budget (width solved, as in the sweeps).
Each (architecture, length) runs in a fresh subprocess so its peak memory is its own: the child builds the
model and optimizer, records its resident memory, resets the kernel's high-water mark
(/proc/self/clear_refs), runs one step, and the peak minus the start is the step's memory (activations,
gradients, optimizer state and the kernels' scratch buffers; only the activations and scratch grow with L).
Time: the median of `repeats` further steps (wall and process CPU). Ratios are to the shortest length: for
linear scaling the time and memory ratios are ≈ L / L0 and the "/ (L/L0)" column ≈ 1 (a quadratic model
gives ≈ L / L0 there). On CUDA the peak is torch.cuda.max_memory_allocated.
An architecture whose registry entry says quadratic_in_length is run up to --quadratic-max and reported
as skipped (quadratic) beyond it, with its measured growth, never hidden.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def child(arch: str, length: int, layers: int, budget: int, device: str, repeats: int, threads: int) -> dict:
    import torch

    from gdna.config import ModelConfig, TrainConfig
    from gdna.models.build import build_model, count_params
    from gdna.train.schedule import build_optimizer

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = ModelConfig.for_arch(arch, n_layers=layers, param_budget=budget)
    model = build_model(cfg, "lm").to(device)
    opt = build_optimizer(model, TrainConfig(objective="clm", lr=1e-4))
    ids = torch.randint(6, 10, (1, length + 1), device=device)
    inp, tgt = ids[:, :-1], ids[:, 1:]

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        logits = model(inp, None)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), tgt.reshape(-1))
        loss.backward()
        opt.step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
    else:
        start = _rss_kb("VmRSS") * 1024
        try:  # reset VmHWM to the current RSS (Linux ≥ 4.0)
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass
    t0 = time.perf_counter()
    step()
    first = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() if device.startswith("cuda") else _rss_kb("VmHWM") * 1024
    walls, cpus = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return {"arch": arch, "L": length, "params": count_params(model.backbone), "d_model": model.dims.d_model,
            "mem": max(0, peak - start), "first": first, "wall": statistics.median(walls),
            "cpu": statistics.median(cpus), "threads": torch.get_num_threads()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", default="4096,16384,65536")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--budget", type=int, default=1_600_000)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch threads in each child (0: torch's default)")
    ap.add_argument("--quadratic-max", type=int, default=16384, help="longest length for quadratic architectures")
    ap.add_argument("--archs", default="", help="comma-separated architectures (default: all registered)")
    ap.add_argument("--child", default="", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        arch, length = a.child.split(":")
        print(json.dumps(child(arch, int(length), a.layers, a.budget, a.device, a.repeats, a.threads)))
        return 0

    from gdna.registry import ARCHITECTURES

    lengths = [int(x) for x in a.lengths.split(",")]
    archs = [x for x in a.archs.split(",") if x] or list(ARCHITECTURES.names())
    print(f"one training step (fwd + bwd + AdamW) on 1 sequence, {a.layers} layers, budget {a.budget:,}, "
          f"device {a.device}, {os.cpu_count()} CPUs; each (arch, L) in its own process", flush=True)
    print(f"{'arch':<12} {'L':>7} {'params':>10} {'wall s':>8} {'cpu s':>8} {'time/L0':>8} {'/ (L/L0)':>9} "
          f"{'peak MB':>9} {'mem/L0':>7} {'/ (L/L0)':>9}", flush=True)
    for arch in archs:
        quadratic = ARCHITECTURES.get(arch).quadratic_in_length
        base = None
        for L in lengths:
            if quadratic and L > a.quadratic_max:
                print(f"{arch:<12} {L:>7}  skipped: quadratic in length (attention); beyond --quadratic-max "
                      f"{a.quadratic_max}" + (f", measured time growth ×{last['wall'] / base['wall']:.1f} for "
                                              f"×{last['L'] // base['L']} in L" if base and last is not base else ""),
                      flush=True)
                continue
            cmd = [sys.executable, __file__, "--child", f"{arch}:{L}", "--layers", str(a.layers), "--budget",
                   str(a.budget), "--device", a.device, "--repeats", str(a.repeats), "--threads", str(a.threads)]
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode != 0:
                print(f"{arch:<12} {L:>7}  failed: {(res.stderr.strip().splitlines() or ['?'])[-1]}", flush=True)
                continue
            r = json.loads(res.stdout.strip().splitlines()[-1])
            base = base or r
            last = r
            k = r["L"] / base["L"]
            t, m = r["wall"] / base["wall"], r["mem"] / max(1, base["mem"])
            print(f"{arch:<12} {L:>7} {r['params']:>10,} {r['wall']:>8.3f} {r['cpu']:>8.3f} {t:>8.2f} {t / k:>9.2f} "
                  f"{r['mem'] / 2**20:>9.1f} {m:>7.2f} {m / k:>9.2f}" + ("  (quadratic in length)" if quadratic else ""),
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
