"""Kernel micro-benchmarks (CPU or whatever device is given), printed side by side in one run.

    python bench/kernels.py [--device cpu] [--repeats 5] [--threads N] [--only scan|hyena] [--batches 1,2,16]

1. Selective scan at L=1024, d=256, N=16: the per-step reference vs the chunked scan, as a speed-up ratio,
   forward at batch 1, 2 and 16 and forward+backward at batch 1 and 2 (`--batches`). The goal (≥ 10×) is
   for the goal's shape, one sequence (batch 1; the Hyena goal below is batch 1 too). Larger batches are
   printed beside it because the ratio falls with the batch: the per-step loop's ops grow big enough to
   hide its per-op dispatch, which is most of what the chunked scan saves (about 10× at batch 2, 2-5× at
   batch 16 on a 2-vCPU VM).
2. Hyena operator and block (d_model=256, batch 1) at L=16384 over L=1024, as a time ratio
   (goal ≤ 20: a 16× longer sequence, i.e. close to L log L scaling).
Timing (`timeit`): `repeats` rounds; in each round every candidate runs `block` times back to back and the
candidates take turns (a a a b b b a a a ...), so that drifting load from other processes hits them alike.
A candidate's time is the median over its back-to-back calls after the first of each block: the steady
state a training loop sees, as timeit and torch.utils.benchmark measure it. The first call of each block
(right after the other candidate, with caches holding the other's data and the second core asleep) is
printed apart as "first call" (on a 2-vCPU VM it cost the chunked scan up to 3 ms more in some runs).
Wall time and process CPU time (the honest number on an oversubscribed machine); torch's thread count is
left as it is.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gdna.models import kernels  # noqa: E402
from gdna.models.hyena import HyenaBlock, HyenaOperator  # noqa: E402


def timeit(fns: dict, repeats: int, block: int = 3, device: str = "cpu") -> dict:
    """{name: {"steady": (wall, cpu), "first": (wall, cpu)}} in seconds, for each fn() in `fns` (see the
    module docstring): medians over `repeats` rounds of `block` back-to-back calls per candidate."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for fn in fns.values():  # warm-up: lazy init, plan and scratch buffers, allocator
        fn()
    sync()
    times: dict = {k: {"steady": ([], []), "first": ([], [])} for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            for i in range(block):
                t0, c0 = time.perf_counter(), time.process_time()
                fn()
                sync()
                w, c = times[k]["first" if i == 0 else "steady"]
                w.append(time.perf_counter() - t0)
                c.append(time.process_time() - c0)
    return {k: {m: (statistics.median(w), statistics.median(c)) for m, (w, c) in v.items() if w}
            for k, v in times.items()}


def ratio_line(label: str, a_name: str, a: dict, b_name: str, b: dict, what: str) -> str:
    """One line per timing mode of `timeit`: steady state (the goal's number), then first call if measured."""
    r = (lambda x, y: x / y) if what == "speed-up" else (lambda x, y: y / x)
    lines = []
    for mode in ("steady", "first"):
        if mode in a and mode in b:
            x, y = a[mode], b[mode]
            lines.append(f"  {label:12s} {mode:6s} {a_name} {1e3 * x[0]:8.1f} ms   {b_name} {1e3 * y[0]:8.1f} ms   "
                         f"{what} {r(x[0], y[0]):5.1f}x   | CPU time {1e3 * x[1]:8.1f} / {1e3 * y[1]:8.1f} ms   "
                         f"{what} {r(x[1], y[1]):5.1f}x")
    return "\n".join(lines)


def scan_inputs(Bsz, D, L, N, device, requires_grad=False):
    g = torch.Generator(device=device).manual_seed(0)
    u = torch.randn(Bsz, D, L, device=device, generator=g)
    delta = torch.randn(Bsz, D, L, device=device, generator=g) - 2.0
    A = -torch.arange(1, N + 1, device=device, dtype=torch.float32).repeat(D, 1)  # S4D-real
    B = torch.randn(Bsz, N, L, device=device, generator=g)
    C = torch.randn(Bsz, N, L, device=device, generator=g)
    Dv = torch.ones(D, device=device)
    xs = [u, delta, A, B, C, Dv]
    return [x.requires_grad_(requires_grad) for x in xs]


def bench_scan(device: str, repeats: int, batches=(1, 2, 16)) -> None:
    D, L, N = 256, 1024, 16
    print(f"selective scan  d={D} L={L} N={N}, per-step reference vs chunked, by batch size B   "
          f"[goal: speed-up >= 10x at B=1]")

    def fwd_bwd(fn, gs):
        def run():
            y = fn(*gs, delta_softplus=True)
            torch.autograd.grad(y.sum(), gs)
        return run

    for i, Bsz in enumerate(batches):
        xs = scan_inputs(Bsz, D, L, N, device)
        rounds = repeats if Bsz <= 2 else max(2, repeats // 2)  # a big batch's per-step loop is slow
        with torch.no_grad():
            ref = kernels.selective_scan_reference(*xs, delta_softplus=True)
            out = kernels.selective_scan_chunked(*xs, delta_softplus=True)
            err = ((out - ref).abs().max() / ref.abs().max()).item()
            fwd = timeit({"ref": lambda: kernels.selective_scan_reference(*xs, delta_softplus=True),
                          "chunked": lambda: kernels.selective_scan_chunked(*xs, delta_softplus=True)}, rounds,
                         device=device)
        print(f"  B={Bsz}: chunk {kernels.auto_chunk(L, Bsz * N * D)}, max rel err {err:.1e}")
        print(ratio_line(f"fwd B={Bsz}", "per-step", fwd["ref"], "chunked", fwd["chunked"], "speed-up"))
        if i < 2:  # the per-step backward is very slow (seconds per call from B=16)
            gs = scan_inputs(Bsz, D, L, N, device, requires_grad=True)
            bwd = timeit({"ref": fwd_bwd(kernels.selective_scan_reference, gs),
                          "chunked": fwd_bwd(kernels.selective_scan_chunked, gs)},
                         max(1, repeats // 2), block=2, device=device)
            print(ratio_line(f"fwd+bwd B={Bsz}", "per-step", bwd["ref"], "chunked", bwd["chunked"], "speed-up"))


def bench_hyena(device: str, repeats: int, d_model: int = 256) -> None:
    torch.manual_seed(0)
    op = HyenaOperator(d_model).to(device).eval()
    block = HyenaBlock(d_model, 8 * d_model // 3, "swiglu", 2, 64, 3, 0.0).to(device).eval()
    xs = {L: torch.randn(1, L, d_model, device=device) for L in (1024, 16384)}
    with torch.no_grad():
        res = timeit({(name, L): (lambda m=m, x=x: m(x)) for name, m in (("operator", op), ("block", block))
                      for L, x in xs.items()}, max(repeats, 7), device=device)
    print(f"hyena  d_model={d_model} batch=1, forward   [goal: time(L=16384) / time(L=1024) <= 20; linear = 16]")
    for name in ("operator", "block"):
        print(ratio_line(name, "L=1024", res[(name, 1024)], "L=16384", res[(name, 16384)], "ratio"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (default: left as it is)")
    p.add_argument("--only", choices=("scan", "hyena"), help="run one section (default: both)")
    p.add_argument("--batches", default="1,2,16", help="scan batch sizes, comma-separated (default 1,2,16; the goal is for B=1)")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, device {a.device}, threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f}, optional kernels {kernels.available_kernels()}")
    if a.only != "hyena":
        bench_scan(a.device, a.repeats, tuple(int(b) for b in a.batches.split(",")))
    if a.only != "scan":
        bench_hyena(a.device, a.repeats)


if __name__ == "__main__":
    main()
