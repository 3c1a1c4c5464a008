#!/usr/bin/env bash
# One call on a lent GPU when the lease is short (15 minutes of device time, the machine's start included): what
# `make gpu-check` does, cut to fit ~9.5 minutes, each step under its own time limit so the call always returns.
#   build (gpu_check.py info,build) -> GPU tests (CUDA: every op x dtype x layout against the float64 reference,
#   the fused reductions of both backends) -> benchmarks/gpu_summary.py at (2, 19, 512, 1024), fp32 and bf16, both
#   layouts (torch.compile columns while a 40 s budget lasts) -> benchmarks/fused_reduction.py (fused mean vs the
#   map + torch sum).
# Everything lands in /tmp/gpu-lease, packed at the end into $OUT/gpu-lease.tgz (the device tool brings back at most
# 8 files); the short tables are also copied to $OUT. Usage (device tool): bash benchmarks/gpu_lease.sh
set -u
export PYTHONUNBUFFERED=1
R=/tmp/gpu-lease
OUT=${OUT:-/tmp/gpu-lease-out}
mkdir -p "$R" "$OUT"
PY=python3
t0=$(date +%s)
step() {  # step NAME LIMIT_S CMD...: run with a time limit, log to $R/NAME.log, one status line
  local name=$1 limit=$2
  shift 2
  local s=$(date +%s)
  timeout --kill-after=5 "$limit" "$@" >"$R/$name.log" 2>&1
  local rc=$?
  echo "$name rc=$rc $(($(date +%s) - s))s (t=$(($(date +%s) - t0))s)" | tee -a "$R/steps.txt"
}
step build 300 $PY benchmarks/gpu_check.py --stages info,build --out "$R/gpu_check"
step tests 100 $PY -m pytest -p no:cacheprovider -q -rs --maxfail=10 tests/test_cuda.py \
  -k "matches_reference or (fused_reduction and (native or float32))" --junitxml="$R/tests.xml"
step bench 150 $PY benchmarks/gpu_summary.py --reps 20 --budget-s 40 --shapes 2,19,512,1024 \
  --json "$R/bench.json" --markdown-out "$R/bench.md" --auto-cuda-out "$R/auto_cuda.json"
for dt in float32 bfloat16; do
  step "fused-$dt" 15 $PY benchmarks/fused_reduction.py --device cuda --shape 2,19,512,1024 --dtype $dt --rounds 30
done
tail -n 3 "$R/tests.log" >"$R/tests_tail.txt" 2>/dev/null
tar czf "$OUT/gpu-lease.tgz" -C /tmp gpu-lease
cp "$R/steps.txt" "$OUT/" 2>/dev/null
cp "$R/bench.md" "$OUT/" 2>/dev/null
cat "$R/steps.txt"
tail -n 3 "$R/tests.log"
cat "$R"/fused-*.log 2>/dev/null | grep -E "^\||backend"
