#!/usr/bin/env bash
# Evaluation throughput of lwc vs an ONNX Runtime evaluation loop over the same 10 000
# Fashion-MNIST test images (IDX from Debian's dataset-fashion-mnist), same preprocessing, same run.
#   scripts/bench_eval.sh [MODEL ...]   (default: testdata/mnv2_fmnist.onnx)
set -euo pipefail
cd "$(dirname "$0")/.."
LWC=build/apps/lwc/lwc
IMAGES=/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz
LABELS=/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz
PRE=testdata/fmnist_sample/preprocess.json
[ -x "$LWC" ] || { echo "bench_eval: build lwc first (bash scripts/build.sh)" >&2; exit 1; }
models=("$@")
[ ${#models[@]} -gt 0 ] || models=(testdata/mnv2_fmnist.onnx)
# The ORT tool takes the same keys inline (it has no "color" key: grayscale is implied).
ORT_PRE=$(/usr/bin/python3 -c "import json; j=json.load(open('$PRE')); j.pop('color', None); print(json.dumps(j))")
field() { /usr/bin/python3 -c "import json,sys; j=json.load(sys.stdin); print(j['$1'])"; }
echo "# lwc eval vs ONNX Runtime eval loop, 10 000 images, batch 100, 2 threads, $(date -u +%Y-%m-%d)"
printf "| %-28s | %12s | %12s | %9s | %9s | %9s |\n" model "lwc img/s" "ORT img/s" "lwc/ORT" "lwc top1" "ORT top1"
printf "|%s|%s|%s|%s|%s|%s|\n" "------------------------------" "--------------" "--------------" "-----------" "-----------" "-----------"
for m in "${models[@]}"; do
  lj=$("$LWC" eval "$m" --data "$IMAGES" --labels "$LABELS" --preprocess "$PRE" --batch 100 --threads 2 --json)
  oj=$(node scripts/ort/ort_tool.js eval "$m" --images "$IMAGES" --labels "$LABELS" --preprocess "$ORT_PRE" --batch 100 --threads 2 --json)
  l=$(echo "$lj" | field images_per_s); o=$(echo "$oj" | field images_per_s)
  printf "| %-28s | %12.0f | %12.0f | %9.2f | %9s | %9s |\n" "$(basename "$m")" "$l" "$o" \
    "$(/usr/bin/python3 -c "print($l / $o)")" "$(echo "$lj" | field top1_correct)" "$(echo "$oj" | field correct)"
done
