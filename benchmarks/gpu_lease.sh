#!/usr/bin/env bash
# One call on a lent GPU when the lease is short (15 minutes of device time, the machine's start included): what
# `make gpu-check` does, cut into stages that each run under their own time limit, so the call always returns.
#   bash benchmarks/gpu_lease.sh [STAGE...]      default: build tests bench fused (the first run, ~9.5 minutes)
# Stages:
#   build     gpu_check.py info,build: the CUDA extension for this GPU
#   tests     tests/test_cuda.py: every op x dtype x layout against the float64 reference, odd shapes and dims,
#             channels_last over many staged blocks; both backends' fused reductions
#   bench     benchmarks/gpu_summary.py at (2, 19, 512, 1024), fp32 and bf16, both layouts (torch.compile columns
#             while a 40 s budget lasts); writes an AUTO_CUDA table
#   fused     benchmarks/fused_reduction.py: fused mean vs the map + torch sum
#   diag      benchmarks/gpu_diag.py: the bad-gradient segfault call by call, clan's fp32 gradient error at
#             (5000, 19), and a host-time profile of a plain Triton call
#   triton64  tests/test_triton.py float64 on CUDA (the K.f64_args fix, never run on a GPU)
#   pixelvec  the K.PIXEL_VEC experiment: Triton bf16 NCHW tests and gpu_summary with UDA_OPS_TRITON_PIXEL_VEC=4
#             beside the default, one process each
#   sanitize  compute-sanitizer racecheck and initcheck over the fp32 reference tests of the CUDA kernels
#   ncu       Nsight Compute over gpu_diag.py's "kernels" workload (every loss forward+backward at (2, 19, 512, 1024),
#             CUDA and Triton, fp32 and bf16 NCHW, fp32 channels_last): speed of light, occupancy, launch, memory
#             workload and warp-state sections of each loss kernel, as CSV ($R/ncu.csv): why CUDA NCHW reached
#             41-59% of copy bandwidth where Triton reached 74-85%. Needs ncu's counters (Firecracker machines)
#   rows      Triton rows (channels_last) read in place (UDA_OPS_TRITON_ROWS_STAGED=0, what the 2026-11-29 run
#             measured), to set beside the staged default that the bench stage measures: the Triton
#             channels_last GPU tests (staged), then gpu_summary's Triton losses fp32 and bf16 channels_last in place
# The second run (the first one's open questions, and what changed since: the CUDA staged-rows kernels for
# channels_last, the Triton eager path, clan's d, the Triton staged rows), as two calls back to back on the warm
# machine (the build stays). The stages' limits add up to more than a 15-minute lease holds, so the second call
# runs its stages in order of need and may be cut short: everything is packed after each step. The staged-rows
# kernels have never run: their tests come right after the build, and racecheck (their shared memory and
# barriers) in the second call.
#   bash benchmarks/gpu_lease.sh build tests diag bench         (time limits 200 + 100 + 90 + 150 s)
#   bash benchmarks/gpu_lease.sh rows sanitize ncu pixelvec triton64     (115 + 240 + 150 + 150 + 60 s, as time allows)
# Everything lands in /tmp/gpu-lease, packed at the end into $OUT/gpu-lease.tgz (the device tool brings back at most
# 8 files); the short tables are also copied to $OUT.
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
  # packed after every step: a call cut short by the device budget still brings back what finished
  tar czf "$OUT/gpu-lease.tgz" -C /tmp gpu-lease 2>/dev/null
  cp "$R/steps.txt" "$OUT/" 2>/dev/null
}
SAN=$(command -v compute-sanitizer || echo "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer")
BF16_BENCH=(benchmarks/gpu_summary.py --reps 20 --budget-s 0 --impls triton --dtypes bf16 --layouts nchw
            --shapes 2,19,512,1024)
[ $# -gt 0 ] || set -- build tests bench fused
for stage in "$@"; do
  case $stage in
  build) step build 200 $PY benchmarks/gpu_check.py --stages info,build --out "$R/gpu_check" ;;
  tests) step tests 100 $PY -m pytest -p no:cacheprovider -q -rs --maxfail=10 tests/test_cuda.py \
           -k "matches_reference or shapes_and_dims or staged_blocks or warp_per_pixel or (fused_reduction and (native or float32))" \
           --junitxml="$R/tests.xml" ;;
  bench) step bench 150 $PY benchmarks/gpu_summary.py --reps 20 --budget-s 40 --shapes '2,19,512,1024;16384,1000' \
           --json "$R/bench.json" --markdown-out "$R/bench.md" --auto-cuda-out "$R/auto_cuda.json" ;;
  fused) for dt in float32 bfloat16; do
           step "fused-$dt" 15 $PY benchmarks/fused_reduction.py --device cuda --shape 2,19,512,1024 --dtype $dt \
             --rounds 30
         done ;;
  diag) step diag 90 $PY benchmarks/gpu_diag.py badgrad clan hostprof --out "$R/diag" ;;
  triton64) step triton64 60 $PY -m pytest -p no:cacheprovider -q -rs tests/test_triton.py -k "cuda and float64" ;;
  pixelvec)
    step pixelvec-tests 60 env UDA_OPS_TRITON_PIXEL_VEC=4 $PY -m pytest -p no:cacheprovider -q -rs \
      tests/test_triton.py -k "cuda and (bfloat16 or float16)"
    for v in 0 4; do
      step "pixelvec-$v" 45 env UDA_OPS_TRITON_PIXEL_VEC=$v $PY "${BF16_BENCH[@]}" --markdown-out "$R/pixelvec-$v.md"
    done ;;
  ncu)
    NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -n 1)
    step ncu 150 "${NCU:-ncu}" --clock-control none --profile-from-start off --csv --page details \
      --section SpeedOfLight --section Occupancy --section LaunchStats --section MemoryWorkloadAnalysis \
      --section WarpStateStats --kernel-name "regex:planes|rows|_fwd|_bwd|partials" --log-file "$R/ncu.csv" \
      $PY benchmarks/gpu_diag.py kernels --out "$R/diag" ;;
  rows)
    step rows-tests 40 $PY -m pytest -p no:cacheprovider -q -rs tests/test_triton.py -k "cuda_ops and channels_last"
    step rows-0 75 env UDA_OPS_TRITON_ROWS_STAGED=0 $PY benchmarks/gpu_summary.py --reps 20 --budget-s 0 \
      --impls triton --ops sym_kl,kl_div,entropy,self_information,cosine_discrepancy,clan_adversarial \
      --dtypes fp32,bf16 --layouts channels_last --shapes 2,19,512,1024 --markdown-out "$R/rows-0.md" ;;
  sanitize)
    for tool in racecheck initcheck; do
      step "$tool" 120 "$SAN" --tool $tool --error-exitcode 9 $PY -m pytest -p no:cacheprovider -q -x tests/test_cuda.py \
        -k "matches_reference and float32 and (contiguous or channels_last)"
    done ;;
  *) echo "unknown stage $stage" | tee -a "$R/steps.txt" ;;
  esac
done
tail -n 3 "$R/tests.log" >"$R/tests_tail.txt" 2>/dev/null
tar czf "$OUT/gpu-lease.tgz" -C /tmp gpu-lease
cp "$R/steps.txt" "$OUT/" 2>/dev/null
cp "$R/bench.md" "$OUT/" 2>/dev/null
cat "$R"/pixelvec-?.md >"$OUT/pixelvec.md" 2>/dev/null
cp "$R/rows-0.md" "$OUT/" 2>/dev/null
cat "$R/steps.txt"
tail -n 3 "$R/tests.log"
cat "$R"/fused-*.log 2>/dev/null | grep -E "^\||backend"
