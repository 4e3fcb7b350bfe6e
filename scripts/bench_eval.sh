#!/usr/bin/env bash
# Evaluation throughput of lwc vs an ONNX Runtime evaluation loop over the same 10 000
# Fashion-MNIST test images (IDX from Debian's dataset-fashion-mnist, uncompressed first for both),
# same preprocessing, same run.
#   [ROUNDS=5] scripts/bench_eval.sh [MODEL ...]   (default: testdata/mnv2_fmnist.onnx)
# Each round runs lwc, then ONNX Runtime; the machine's load moves single runs a lot, so compare the
# per-round ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
LWC=build/apps/lwc/lwc
PRE=testdata/fmnist_sample/preprocess.json
[ -x "$LWC" ] || { echo "bench_eval: build lwc first (bash scripts/build.sh)" >&2; exit 1; }
# Uncompressed copies for both tools: ort_tool.js gunzips the whole file before its timer starts,
# lwc eval reads batch by batch inside its timed loop (reading is part of its images/s), so with
# the .gz files lwc's figure also paid for decompression (lenet300: lwc/ORT 0.44 vs 0.52).
DATA=build/bench_eval
mkdir -p "$DATA"
for f in t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  [ -s "$DATA/$f" ] || { gunzip -c "/usr/share/datasets/fashion-mnist/$f.gz" >"$DATA/$f.tmp" && mv "$DATA/$f.tmp" "$DATA/$f"; }
done
IMAGES=$DATA/t10k-images-idx3-ubyte
LABELS=$DATA/t10k-labels-idx1-ubyte
models=("$@")
[ ${#models[@]} -gt 0 ] || models=(testdata/mnv2_fmnist.onnx)
field() { /usr/bin/python3 -c "import json,sys; j=json.load(sys.stdin); print(j['$1'])"; }
ROUNDS=${ROUNDS:-5}
echo "# lwc eval vs ONNX Runtime eval loop, 10 000 images, batch 100, 2 threads, $ROUNDS alternating rounds, $(date -u +%Y-%m-%d)"
echo "# img/s: median of the rounds; lwc/ORT: median (range) of the per-round ratios"
printf "| %-28s | %12s | %12s | %18s | %9s | %9s |\n" model "lwc img/s" "ORT img/s" "lwc/ORT" "lwc top1" "ORT top1"
printf "|%s|%s|%s|%s|%s|%s|\n" "------------------------------" "--------------" "--------------" "--------------------" "-----------" "-----------"
for m in "${models[@]}"; do
  ls=(); os=()
  for ((r = 0; r < ROUNDS; r++)); do
    lj=$("$LWC" eval "$m" --data "$IMAGES" --labels "$LABELS" --preprocess "$PRE" --batch 100 --threads 2 --json)
    oj=$(node scripts/ort/ort_tool.js eval "$m" --images "$IMAGES" --labels "$LABELS" --preprocess "$PRE" --batch 100 --threads 2 --json)
    ls+=("$(echo "$lj" | field images_per_s)"); os+=("$(echo "$oj" | field images_per_s)")
  done
  /usr/bin/python3 - "$(basename "$m")" "$(echo "$lj" | field top1_correct)" "$(echo "$oj" | field correct)" \
      "${ls[*]}" "${os[*]}" <<'PY'
import statistics as st, sys
name, lt, ot = sys.argv[1:4]
l = [float(v) for v in sys.argv[4].split()]
o = [float(v) for v in sys.argv[5].split()]
r = [a / b for a, b in zip(l, o)]
ratio = f"{st.median(r):.2f} ({min(r):.2f}-{max(r):.2f})"
print(f"| {name:28s} | {st.median(l):12.0f} | {st.median(o):12.0f} | {ratio:>18s} | {lt:>9s} | {ot:>9s} |")
PY
done
