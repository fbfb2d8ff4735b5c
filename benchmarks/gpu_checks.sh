#!/usr/bin/env bash
# The GPU-only checks in one call, for a session that is lent a GPU machine (about 8 minutes on one
# H100): bf16 MFU of the XL/2 video DiT at 4,096 tokens per clip (the benchmark step, eager and
# compiled, flash attention only; then a real FSDP2 + compile run), sequence parallelism on 2 GPUs
# when there are 2, and the GPU trainer configs' fit / checkpoint / resume. Logs under $OUT (or
# /tmp/gpu_checks). Usage: make venv && bash benchmarks/gpu_checks.sh
set -u
OUT=${OUT:-/tmp/gpu_checks}
PY=${PY:-.venv/bin/python}
PEAK=${PEAK:-989}  # H100 / H200 SXM bf16 dense TFLOP/s
mkdir -p "$OUT"
step() {  # step NAME SECONDS COMMAND...: run with a time limit, log, keep going on failure
  local name=$1 limit=$2
  shift 2
  echo "== $name" | tee -a "$OUT/summary.txt"
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  echo "rc=$?" >> "$OUT/$name.log"
  grep -E "TFLOP/s|MFU|rc=|Error" "$OUT/$name.log" | grep -v "^\[rank" | tail -8 | tee -a "$OUT/summary.txt"
}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/summary.txt"
GPUS=$(nvidia-smi -L | wc -l)
step bench_train 240 "$PY" benchmarks/bench_train.py --device cuda --precision bf16 --presets XL/2 \
  --clip 4 16 32 32 --patch 1 2 2 --batch 8 --compile --sdpa flash --peak-tflops "$PEAK"
step run_fsdp2 180 "$PY" benchmarks/bench_run_mfu.py --out "$OUT/fsdp2" --device cuda --preset XL/2 \
  --clip 16 32 32 --patch 1 2 2 --batch 8 --steps 40 --compile --flash --peak-tflops "$PEAK"
if [ "$GPUS" -ge 2 ]; then
  step run_sp2 180 "$PY" benchmarks/bench_run_mfu.py --out "$OUT/sp2" --device cuda --strategy sp \
    --devices 2 --preset XL/2 --clip 16 32 32 --patch 1 2 2 --batch 8 --steps 40 --compile --flash \
    --peak-tflops "$PEAK"
fi
step strategies 150 "$PY" benchmarks/gpu_strategies.py --out "$OUT/strategies" --steps 20
