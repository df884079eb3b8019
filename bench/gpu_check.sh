#!/usr/bin/env bash
# One prepared check for a GPU machine that has PyTorch (CUDA) but no Ray and no internet.
#
#     bash bench/gpu_check.sh [OUT_FILE]        (default: bench/gpu_check.out; PYTHON=... picks the interpreter)
#
# From the repository root. Runs, each under its own time limit (about 8 minutes in all on one GPU):
#   1. the GPU-only tests: every tests/test_*.py that carries the `gpu` marker and imports no Ray
#      (today tests/test_models_cuda.py: the optional CUDA kernels vs the pure-PyTorch paths, each
#      architecture's forward/backward on CUDA), `-m gpu`; skipped tests say which package is missing
#   2. bench/mfu.py on cuda: a training step's FLOP/s vs the GPU's matmul FLOP/s, per architecture,
#      fp32 and bf16 (the training-throughput measurement: tokens/s is printed beside it)
#   3. bench/kernels.py on cuda: the selective scan and Hyena scaling
# Everything goes to OUT_FILE (and the terminal). Without CUDA it says "no CUDA" and exits 2 before
# running anything. Exit status: 0 when every part passed, else 1.
set -u
cd "$(dirname "$0")/.."
OUT=${1:-bench/gpu_check.out}
PY=${PYTHON:-}
if [ -z "$PY" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
: > "$OUT"
log() { echo "$@" | tee -a "$OUT"; }

log "gpu_check: $(date -u '+%Y-%m-%d %H:%M:%S UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), host $(hostname)"
if ! "$PY" - >>"$OUT" 2>&1 <<'EOF'
import sys
import torch
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, CUDA build {torch.version.cuda}")
if not torch.cuda.is_available():
    print("no CUDA: torch.cuda.is_available() is False; nothing to check on this machine")
    sys.exit(2)
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"cuda:{i} {p.name}, {p.total_memory / 2**30:.0f} GiB, capability {p.major}.{p.minor}")
from gdna.models import kernels
print(f"optional kernels: {kernels.available_kernels()}")
EOF
then
    tail -n 1 "$OUT"
    exit 2
fi
tail -n +2 "$OUT"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total,utilization.gpu --format=csv >>"$OUT" 2>&1

status=0
part() {  # part <label> <seconds> <command...>
    local label=$1 limit=$2; shift 2
    log ""
    log "=== $label (limit ${limit}s): $*"
    local t0=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee -a "$OUT"
    local rc=${PIPESTATUS[0]}
    log "=== $label: exit $rc after $((SECONDS - t0))s$([ "$rc" = 124 ] && echo ' (time limit)')"
    [ "$rc" = 0 ] || status=1
}

# GPU-marked test files that do not import Ray (this machine has none)
TESTS=$(grep -l "pytest.mark.gpu" tests/test_*.py | xargs grep -L -E "^\s*(import ray|from ray)" | tr '\n' ' ')
if "$PY" -c "import pytest" 2>/dev/null; then
    part "GPU tests" 200 "$PY" -m pytest -q -m gpu -p no:cacheprovider -o addopts="" -ra $TESTS
else
    log "=== GPU tests: skipped, pytest is not installed for $PY ($TESTS)"
    status=1
fi
part "MFU fp32" 120 "$PY" bench/mfu.py --device cuda --precision fp32 --batch 16 --context 1024 --steps 10 --d-model 256 --matmul-n 4096,8192
part "MFU bf16" 120 "$PY" bench/mfu.py --device cuda --precision bf16 --batch 16 --context 1024 --steps 10 --d-model 256 --matmul-n 4096,8192
part "kernels" 90 "$PY" bench/kernels.py --device cuda --repeats 5
log ""
log "gpu_check: done, status $status; output in $OUT"
exit $status
