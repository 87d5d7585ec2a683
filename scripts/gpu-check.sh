#!/usr/bin/env bash
# The device check, in one call: CUDA correctness tests, CUDA benchmarks, the cross-check of
# the suite's clock against torch.utils.benchmark (sync and CUDA-events timers), and the
# report. Writes everything under ${OUT:-docs/results/gpu}; commit that folder.
#   OUT=docs/results/gpu bash scripts/gpu-check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-docs/results/gpu}
mkdir -p "$out"
status=0
{
  date -u +"date: %Y-%m-%dT%H:%M:%SZ"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "nvidia-smi: absent"
  python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
} > "$out/machine.txt" 2>&1
cat "$out/machine.txt"

# Correctness first: every stage of every available backend (torch-cuda included) against the reference.
python -m pytest -q -p no:cacheprovider tests/test_kernels.py tests/test_errors.py 2>&1 | tail -n 5 | tee "$out/correctness.txt" || status=1

# The benchmarks: CUDA and the CPU side by side, at the tutorial's size, compute-bound and GPU scale.
python -m pytest perf -q -p no:cacheprovider --perf-backend "${BACKENDS:-torch-cuda,torch-cpu,numpy}" \
  --perf-size "${SIZES:-seed,compute,gpu}" --benchmark-json="$out/results.json" \
  --benchmark-columns=median,iqr,rounds,iterations 2>&1 | tail -n 80 > "$out/benchmarks.txt" || status=1
tail -n 3 "$out/benchmarks.txt"

# The same calls on torch's own clock, both of the suite's CUDA timers.
for timer in sync events; do
  python -m perf.crosscheck --backend "${CROSS_BACKEND:-torch-cuda}" --size "${CROSS_SIZES:-seed,gpu}" --timer "$timer" \
    --out "$out/crosscheck-$timer.md" > /dev/null 2>&1 || status=1
  tail -n +1 "$out/crosscheck-$timer.md" 2>/dev/null | head -n 30
done

python -m perf.report "$out/results.json" --out "$out/report" > /dev/null 2>&1 || status=1
exit $status
