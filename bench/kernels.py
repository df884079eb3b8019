"""Kernel micro-benchmarks (CPU or whatever device is given), printed side by side in one run.

    python bench/kernels.py [--device cpu] [--repeats 7]

1. Selective scan at L=1024, d=256, N=16, batch 2: the per-step reference vs the chunked scan
   (forward, and forward+backward), as a speed-up ratio (goal ≥ 10×).
2. Hyena operator and block (d_model=256, batch 1) at L=16384 over L=1024, as a time ratio
   (goal ≤ 20: a 16× longer sequence, i.e. close to L log L scaling).
Timing: warmup runs, then the median of `repeats` runs; torch's thread count is left as it is.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gdna.models import kernels  # noqa: E402
from gdna.models.hyena import HyenaBlock, HyenaOperator  # noqa: E402


def timeit(fn, repeats: int, warmup: int = 1, device: str = "cpu") -> float:
    """Median wall time of fn() in seconds."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


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


def bench_scan(device: str, repeats: int) -> None:
    Bsz, D, L, N = 2, 256, 1024, 16
    xs = scan_inputs(Bsz, D, L, N, device)
    with torch.no_grad():
        ref = kernels.selective_scan_reference(*xs, delta_softplus=True)
        out = kernels.selective_scan_chunked(*xs, delta_softplus=True)
        err = ((out - ref).abs().max() / ref.abs().max()).item()
        t_ref = timeit(lambda: kernels.selective_scan_reference(*xs, delta_softplus=True), repeats, device=device)
        t_chk = timeit(lambda: kernels.selective_scan_chunked(*xs, delta_softplus=True), repeats, device=device)
    gs = scan_inputs(Bsz, D, L, N, device, requires_grad=True)

    def fwd_bwd(fn):
        def run():
            y = fn(*gs, delta_softplus=True)
            torch.autograd.grad(y.sum(), gs)
        return run

    tb_ref = timeit(fwd_bwd(kernels.selective_scan_reference), max(3, repeats // 2), device=device)
    tb_chk = timeit(fwd_bwd(kernels.selective_scan_chunked), repeats, device=device)
    print(f"selective scan  B={Bsz} d={D} L={L} N={N} (chunk {kernels._auto_chunk(L)}), max rel err {err:.1e}")
    print(f"  forward         per-step {1e3 * t_ref:9.1f} ms   chunked {1e3 * t_chk:8.1f} ms   "
          f"speed-up {t_ref / t_chk:5.1f}x  (goal >= 10x)")
    print(f"  fwd+bwd         per-step {1e3 * tb_ref:9.1f} ms   chunked {1e3 * tb_chk:8.1f} ms   "
          f"speed-up {tb_ref / tb_chk:5.1f}x")


def bench_hyena(device: str, repeats: int, d_model: int = 256) -> None:
    torch.manual_seed(0)
    op = HyenaOperator(d_model).to(device).eval()
    block = HyenaBlock(d_model, 8 * d_model // 3, "swiglu", 2, 64, 3, 0.0).to(device).eval()
    res = {}
    with torch.no_grad():
        for L in (1024, 16384):
            x = torch.randn(1, L, d_model, device=device)
            res[L] = (timeit(lambda: op(x), repeats, device=device), timeit(lambda: block(x), repeats, device=device))
    print(f"hyena  d_model={d_model} batch=1 (forward)")
    for i, name in enumerate(("operator", "block")):
        t1, t16 = res[1024][i], res[16384][i]
        print(f"  {name:9s}       L=1024 {1e3 * t1:9.1f} ms   L=16384 {1e3 * t16:8.1f} ms   "
              f"ratio {t16 / t1:5.1f}  (goal <= 20; linear would be 16)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=7)
    a = p.parse_args()
    print(f"torch {torch.__version__}, device {a.device}, threads {torch.get_num_threads()}, "
          f"optional kernels {kernels.available_kernels()}")
    bench_scan(a.device, a.repeats)
    bench_hyena(a.device, a.repeats)


if __name__ == "__main__":
    main()
