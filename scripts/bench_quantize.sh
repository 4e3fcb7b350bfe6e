#!/usr/bin/env bash
# INT8 against FP32, in ONNX Runtime and in lwc, measured in one run on the same machine:
# mnv2_fmnist (28x28) and torchvision mobilenet_v2 (224x224, random weights; calibrated on
# Fashion-MNIST images resized to 224 RGB: only the speed matters for it), batch 1 and 32.
# On x86 CPUs without VNNI both files are quantized with --reduce-range (7-bit weights): there ONNX
# Runtime's u8 x s8 kernels saturate with 8-bit weights (wrong results), and lwc runs oneDNN's int8
# kernels only on 7-bit weights (exact); 8-bit weights take its slower exact fp32 path.
# The four measurements of a row take turns in every round, so that a change in machine load hits
# all of them. Latency cells are the lowest of ROUNDS medians; ratios are per round (median and
# range over the rounds), and the last column counts the rounds in which lwc's INT8 was faster.
# With SET=testdata, the five testdata models instead (each quantized the same way, minmax).
# Needs build/apps/lwc/lwc (scripts/build.sh).
#   scripts/bench_quantize.sh [SECONDS_PER_MEASUREMENT] [ROUNDS] [SET: issue (default) | testdata]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-5}
ROUNDS=${2:-3}
SET=${3:-issue}
case "$SET" in issue|testdata) ;; *) echo "bench_quantize: SET must be issue or testdata, not '$SET'" >&2; exit 2;; esac
THREADS=2
LWC=build/apps/lwc/lwc
TV=build/test_models/torchvision
OUT=build/bench_quantize
FM=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
[ -x "$LWC" ] || { echo "bench_quantize: build lwc first (bash scripts/build.sh)" >&2; exit 1; }
mkdir -p "$OUT"
RR=()
WEIGHTS="8-bit weights"
if [ "$(uname -m)" = x86_64 ] && ! grep -q -w -E 'avx512_vnni|avx_vnni' /proc/cpuinfo; then
  RR=(--reduce-range)
  WEIGHTS="7-bit weights (--reduce-range: no VNNI on this CPU)"
fi
PAIRS=()
if [ "$SET" = issue ]; then
  /usr/bin/python3 scripts/gen_torchvision.py --out "$TV" --models mobilenet_v2 >/dev/null
  "$LWC" -q quantize testdata/mnv2_fmnist.onnx -o "$OUT/mnv2_fmnist.int8.onnx" --calib "$FM" --calib-limit 1000 \
    --preprocess testdata/fmnist_sample/preprocess.json --layer-samples 0 --bench-batch 0 "${RR[@]}" >/dev/null
  "$LWC" -q quantize "$TV/mobilenet_v2.onnx" -o "$OUT/mobilenet_v2.int8.onnx" --calib "$FM" --calib-limit 64 \
    --preprocess scripts/imagenet_from_fmnist.json --layer-samples 0 --bench-batch 0 "${RR[@]}" >/dev/null
  PAIRS=("mnv2_fmnist:testdata/mnv2_fmnist.onnx" "mobilenet_v2:$TV/mobilenet_v2.onnx")
else
  for m in lenet300 lenet5 mnv2 resnet tinyformer; do
    "$LWC" -q quantize "testdata/${m}_fmnist.onnx" -o "$OUT/${m}_fmnist.int8.onnx" --calib "$FM" --calib-limit 1000 \
      --preprocess testdata/fmnist_sample/preprocess.json --layer-samples 0 --bench-batch 0 "${RR[@]}" >/dev/null
    PAIRS+=("${m}_fmnist:testdata/${m}_fmnist.onnx")
  done
fi

median() { /usr/bin/python3 -c 'import json,sys; print("%.3f" % json.load(sys.stdin)["median_ms"])'; }
# cells OF OI LF LI: space-separated per-round medians of the four measurements -> one table row.
# Latency cells are the lowest of the rounds; the ratios are taken per round (the four
# measurements of a round ran back to back, under the same load) and shown as their median with
# the range over the rounds, and lwc/ORT INT8 also as how many rounds lwc was faster in.
row() {
  /usr/bin/python3 - "$@" <<'PY'
import statistics, sys
name, batch, *cols = sys.argv[1:]
of, oi, lf, li = ([float(v) for v in c.split()] for c in cols)
def r(a, b):
    q = [x / y for x, y in zip(a, b)]
    return "%.2f (%.2f-%.2f)" % (statistics.median(q), min(q), max(q)) if len(q) > 1 else "%.2f" % q[0]
faster = sum(x < y for x, y in zip(li, oi))
print("| %-14s | %5s | %9.3f | %9.3f | %16s | %9.3f | %9.3f | %16s | %16s | %d/%d |" % (
    name, batch, min(of), min(oi), r(of, oi), min(lf), min(li), r(lf, li), r(li, oi), faster, len(li)))
PY
}

echo "# INT8 vs FP32 (latency: lowest of $ROUNDS median latencies; ratios: median (range) of the $ROUNDS rounds' ratios; $THREADS threads; onnxruntime-node 1.30.0; $WEIGHTS), $(date -u +%Y-%m-%d), $(lscpu | sed -n 's/^Model name: *//p')"
printf "| %-14s | %5s | %9s | %9s | %16s | %9s | %9s | %16s | %16s | %s |\n" model batch "ORT fp32" "ORT int8" "ORT x" \
  "lwc fp32" "lwc int8" "lwc x" "lwc/ORT int8" "lwc faster"
echo "|----------------|------:|----------:|----------:|-----------------:|----------:|----------:|-----------------:|-----------------:|---:|"
for pair in "${PAIRS[@]}"; do
  name=${pair%%:*}
  fp32=${pair#*:}
  int8="$OUT/$name.int8.onnx"
  for batch in 1 32; do
    of="" oi="" lf="" li=""
    for _ in $(seq "$ROUNDS"); do
      of+=" $(node scripts/ort/ort_tool.js bench "$fp32" --batch $batch --threads $THREADS --seconds "$SECS" --json | median)"
      oi+=" $(node scripts/ort/ort_tool.js bench "$int8" --batch $batch --threads $THREADS --seconds "$SECS" --json | median)"
      lf+=" $("$LWC" bench "$fp32" --batch $batch --threads $THREADS --seconds "$SECS" --json | median)"
      li+=" $("$LWC" bench "$int8" --batch $batch --threads $THREADS --seconds "$SECS" --json | median)"
    done
    row "$name" "$batch" "$of" "$oi" "$lf" "$li"
  done
done
echo "(ORT x, lwc x: FP32 latency / INT8 latency, higher is better; lwc/ORT int8: below 1 means lwc is faster; lwc faster: rounds in which lwc's INT8 median was below ONNX Runtime's)"
