"""Model FLOP utilisation: a training step's FLOP/s over this machine's measured fp32 matmul FLOP/s, per
architecture, side by side in one run.

    .venv/bin/python bench/mfu.py [--archs transformer,hyena,mamba] [--d-model 256] [--layers 2]
                                  [--batch 4] [--context 1024] [--steps 3] [--threads 1] [--device cpu]
                                  [--precision fp32] [--matmul-n 1024,2048] [--json out.json]

For each architecture, the model is built by gdna (ModelConfig.for_arch → gdna.models.build.build_model,
LM head) at width --d-model, and one causal-LM optimizer step is gdna's own (gdna.train.steps.train_step:
forward, loss, backward, grad clip, AdamW, LR schedule) on a batch of --batch windows of --context tokens.

  FLOPs per step: torch.utils.flop_counter.FlopCounterMode over one forward + backward. It counts matrix
      products (mm/addmm/bmm), convolutions and attention kernels. gdna adds CPU SDPA
      (`_scaled_dot_product_flash_attention_for_cpu` and its backward, counted like the CUDA kernels:
      the full L×L, not halved for causal) and FFTs (estimated: 2.5·n·log2 n per real transform of
      length n, 5·n·log2 n per complex one; Hyena's long convolutions). NOT counted: elementwise work,
      the Mamba selective scan (a recurrence of elementwise ops, ~ B·L·D·N multiply-adds each way),
      norms, softmax outside SDPA, the optimizer. So the FLOPs are model FLOPs (the useful matmul work),
      not everything the CPU executes: hyena and mamba spend most of their time in uncounted work.
  Step time: the median of --steps timed steps after one warm-up step (wall and process CPU time).
  Peak: torch.matmul of two square matrices of each --matmul-n size (2·n³ FLOPs), median of 5, same dtype,
      threads and device, measured in the same run right before and after the steps (the fastest is kept).
  MFU = counted FLOPs per step / step time / peak.   Goal: ≥ 30% for the transformer.

On a shared machine the wall time moves with the load: the load average is printed with every line, and
process CPU time gives a second MFU (FLOPs per CPU second of the step over FLOPs per CPU second of the
matmul): what the CPU did in the time it ran us, less sensitive to the other jobs. --device cuda works too (peak = cuda matmul, the same model in
--precision bf16 when asked; bf16 peak then measured with bf16 matmuls).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from timing import median_times  # noqa: E402 (bench/timing.py)


def _fft_flops(real: bool):
    """A FlopCounterMode formula for an aten FFT op: n·log2 n per transform of length n along `dim`."""
    def f(x_shape, dim, *args, out_shape=None, **kwargs) -> int:
        dims = dim if isinstance(dim, (list, tuple)) else [dim]
        full = out_shape if not real or math.prod(out_shape) > math.prod(x_shape) else x_shape  # the real side
        n = math.prod(full[d] for d in dims)
        transforms = math.prod(full) // max(1, n)
        return int((2.5 if real else 5.0) * n * math.log2(max(2, n)) * transforms)
    return f


def _raw(f):
    """torch's own formulas are already shape-wrapped: pass them to custom_mapping as they are."""
    def g(*args, **kwargs):
        return f(*args, **kwargs)
    g._get_raw = True
    return g


def flop_mapping() -> dict:
    """FlopCounterMode extras: CPU SDPA (counted as torch counts the CUDA kernels) and FFTs (estimated)."""
    from torch.utils import flop_counter as fc

    aten = torch.ops.aten
    m = {}
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        for cpu_op, counted in ((aten._scaled_dot_product_flash_attention_for_cpu, fc.sdpa_flop),
                                (aten._scaled_dot_product_flash_attention_for_cpu_backward, fc.sdpa_backward_flop)):
            m[cpu_op] = _raw(counted)
    m[aten._fft_r2c] = _fft_flops(real=True)
    m[aten._fft_c2r] = _fft_flops(real=True)
    m[aten._fft_c2c] = _fft_flops(real=False)
    return m


def count_step_flops(model, batch, device, precision) -> tuple[int, dict]:
    """FLOPs of one forward + backward (FlopCounterMode + flop_mapping), total and by op."""
    from torch.utils.flop_counter import FlopCounterMode

    from gdna.train.steps import loss_sum

    mode = FlopCounterMode(display=False, custom_mapping=flop_mapping())
    with mode:
        loss, _ = loss_sum(model, "clm", batch, device, precision)
        loss.backward()
    model.zero_grad(set_to_none=True)
    by_op: dict[str, int] = {}
    for op, n in mode.get_flop_counts().get("Global", {}).items():
        by_op[str(op).split(".")[-1] if "." in str(op) else str(op)] = int(n)
    return int(mode.get_total_flops()), by_op


def matmul_peak(n: int, device: torch.device, dtype: torch.dtype, repeats: int = 5) -> tuple[float, float]:
    """FLOP/s of an n×n @ n×n matmul (median of `repeats` after a warm-up): per wall second and per
    process CPU second (the latter × threads is the peak of the CPU time we were given)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    c = torch.empty(n, n, device=device, dtype=dtype)
    torch.matmul(a, b, out=c)
    sync()
    wall, cpu = median_times(lambda: torch.matmul(a, b, out=c), repeats, sync)
    return 2.0 * n ** 3 / wall, 2.0 * n ** 3 / max(cpu, 1e-9)


def bench_arch(arch: str, args, device: torch.device, tmp: Path) -> dict:
    from gdna.config import ModelConfig, TrainConfig
    from gdna.data.corpora import collate_clm
    from gdna.models.build import build_model, count_params
    from gdna.train.runtime import LocalRuntime
    from gdna.train.schedule import build_optimizer, build_scheduler
    from gdna.train.steps import train_step

    torch.manual_seed(0)
    cfg = ModelConfig.for_arch(arch, d_model=args.d_model, n_layers=args.layers)
    model = build_model(cfg, "lm").to(device)
    model.train()
    tcfg = TrainConfig(objective="clm", lr=1e-4, precision=args.precision)
    opt = build_optimizer(model, tcfg)
    sched = build_scheduler(opt, tcfg, 1000)
    use_scaler = args.precision == "fp16" and device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
    rt = LocalRuntime(tmp / arch, device=device)
    g = torch.Generator().manual_seed(0)
    windows = torch.randint(6, 10, (args.batch, args.context + 1), generator=g)  # A, C, G, T token ids
    batch = collate_clm(list(windows))
    count = int((batch[1] != -100).sum())
    flops, by_op = count_step_flops(model, batch, device, args.precision)
    sync = torch.cuda.synchronize if device.type == "cuda" else None

    def step() -> None:
        train_step(model, [batch], objective="clm", global_count=count, rt=rt, optimizer=opt, scheduler=sched,
                   scaler=scaler, grad_clip=tcfg.grad_clip, precision=args.precision)

    step()  # warm-up: lazy init, scan plans, optimizer state
    wall, cpu = median_times(step, args.steps, sync)
    return {"arch": arch, "params": count_params(model), "flops": flops, "by_op": by_op, "wall_s": wall, "cpu_s": cpu,
            "tokens": args.batch * args.context, "load": os.getloadavg()[0]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", default="transformer,hyena,mamba")
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--context", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (CPU; 0: leave as is)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    ap.add_argument("--matmul-n", default="1024,2048", help="square matmul sizes; the fastest is the peak")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("mfu: no CUDA device here (torch.cuda.is_available() is False); nothing measured")
        return 2
    if args.threads and device.type == "cpu":
        torch.set_num_threads(args.threads)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{os.cpu_count()} CPUs"
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.precision]
    print(f"MFU: one causal-LM training step (gdna train_step), d_model {args.d_model}, {args.layers} layers, batch "
          f"{args.batch} × {args.context} tokens, {args.precision}; device {device} ({name}), torch threads "
          f"{torch.get_num_threads()}, torch {torch.__version__}; load avg {os.getloadavg()[0]:.1f}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="gdna-bench-mfu-"))
    sizes = [int(n) for n in str(args.matmul_n).split(",")]

    def peaks(when: str) -> list[tuple[float, float]]:
        out = [matmul_peak(n, device, dtype) for n in sizes]
        print(f"peak {when}: {args.precision} matmul " + ", ".join(
            f"{n}² {w / 1e9:,.1f} GFLOP/s ({c / 1e9:,.1f} per CPU s)" for n, (w, c) in zip(sizes, out))
            + f"; load avg {os.getloadavg()[0]:.1f}", flush=True)
        return out

    before = peaks("before the steps")
    rows = [bench_arch(a, args, device, tmp) for a in args.archs.split(",")]
    after = peaks("after the steps")
    peak, peak_cpu = max(w for w, _ in before + after), max(c for _, c in before + after)
    print(f"peak used: {peak / 1e9:,.1f} GFLOP/s, {peak_cpu / 1e9:,.1f} GFLOP per CPU second (the fastest of the above)")
    print(f"{'arch':<12}{'params':>11}{'GFLOP/step':>12}{'step s':>9}{'cpu s':>8}{'tok/s':>9}"
          f"{'GFLOP/s':>9}{'MFU':>8}{'MFU cpu':>9}  load  counted FLOPs by op")
    for r in rows:
        r["flops_per_s"] = r["flops"] / r["wall_s"]
        r["mfu"] = r["flops_per_s"] / peak
        # CPU time: FLOPs per CPU second we got, against the matmul's FLOPs per CPU second (load-independent)
        r["mfu_cpu"] = r["flops"] / max(r["cpu_s"], 1e-9) / peak_cpu if device.type == "cpu" else r["mfu"]
        ops = ", ".join(f"{k} {100 * v / max(1, r['flops']):.0f}%" for k, v in sorted(r["by_op"].items(), key=lambda kv: -kv[1]))
        goal = "  (goal >= 30%)" if r["arch"] == "transformer" else ""
        attention = sum(v for k, v in r["by_op"].items() if "attention" in k)
        if attention:  # causal kernels skip the masked half of L×L: the same MFU with attention halved
            r["mfu_causal"] = (r["flops"] - attention / 2) / r["wall_s"] / peak
        print(f"{r['arch']:<12}{r['params']:>11,}{r['flops'] / 1e9:>12.2f}{r['wall_s']:>9.3f}{r['cpu_s']:>8.3f}"
              f"{r['tokens'] / r['wall_s']:>9,.0f}{r['flops_per_s'] / 1e9:>9.1f}{100 * r['mfu']:>7.1f}%"
              f"{100 * r['mfu_cpu']:>8.1f}%  {r['load']:>4.1f}  {ops}{goal}")
    for r in rows:
        if "mfu_causal" in r:
            print(f"{r['arch']}: attention counted as full L×L (torch's formula); with the causal half only: MFU "
                  f"{100 * r['mfu_causal']:.1f}%")
    print("not counted: elementwise ops, norms, the selective scan's recurrence (mamba), the optimizer; FFTs are an "
          "n·log2 n estimate (hyena). MFU cpu: (FLOPs / process CPU s) / (matmul FLOPs / process CPU s).")
    shutil.rmtree(tmp, ignore_errors=True)  # the runs' checkpoints and events
    if args.json:
        Path(args.json).write_text(json.dumps({"peak_flops": peak, "peak_flops_per_cpu_s": peak_cpu, "rows": rows, **vars(args)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
