#!/usr/bin/env bash
# Engine speed against ONNX Runtime, measured in the same run on the same machine.
# Builds nothing: needs build/apps/lwc/lwc (scripts/build.sh) and the torchvision models
# (scripts/gen_torchvision.py, run by ctest or by this script if missing).
#   scripts/bench_engine.sh [SECONDS_PER_ROW] [MODELS (comma-separated gen_torchvision.py names;
#                                              default mobilenet_v2,resnet50)] [BATCHES (default 1,32)]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
MODELS=${2:-mobilenet_v2,resnet50}
BATCHES=${3:-1,32}
THREADS=2
LWC=build/apps/lwc/lwc
TV=build/test_models/torchvision
[ -x "$LWC" ] || { echo "bench_engine: build lwc first (bash scripts/build.sh)" >&2; exit 1; }
/usr/bin/python3 scripts/gen_torchvision.py --out "$TV" --models "$MODELS" >/dev/null

median() { /usr/bin/python3 -c 'import json,sys; print("%.3f" % json.load(sys.stdin)["median_ms"])'; }

echo "# lwc vs ONNX Runtime (onnxruntime-node 1.30.0), $THREADS threads, median latency"
echo "# $(date -u +%Y-%m-%d) $(lscpu | sed -n 's/^Model name: *//p')"
printf "| %-14s | %5s | %10s | %10s | %9s |\n" model batch "lwc ms" "ORT ms" "lwc/ORT"
printf "|%s|%s|%s|%s|%s|\n" "----------------" "-------" "------------" "------------" "-----------"
for model in ${MODELS//,/ }; do
  for batch in ${BATCHES//,/ }; do
    l=$("$LWC" bench "$TV/$model.onnx" --batch $batch --threads $THREADS --seconds "$SECS" --json | median)
    o=$(node scripts/ort/ort_tool.js bench "$TV/$model.onnx" --batch $batch --threads $THREADS --seconds "$SECS" --json | median)
    r=$(/usr/bin/python3 -c "print('%.2f' % ($l / $o))")
    printf "| %-14s | %5d | %10s | %10s | %9s |\n" "$model" "$batch" "$l" "$o" "$r"
  done
done
