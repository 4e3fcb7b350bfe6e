#!/usr/bin/env bash
# The main job on bundled data: set up the machine, build lwc, and quantize the bundled
# Fashion-MNIST MobileNetV2 to INT8 with the bundled 500-image calibration sample; the report shows
# size, accuracy on the 10 000 test images (Debian's dataset-fashion-mnist), per-layer error and
# latency (with --reduce-range on x86 CPUs without VNNI). Then the gated cleanup pipeline (exit code 3 if a gate fails).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
mkdir -p build/demo
# On an x86 CPU without VNNI, 7-bit weights: ONNX Runtime's int8 kernels saturate with 8-bit weights
# there, and lwc runs its int8 kernels only on 7-bit weights (8-bit take an exact but slower path).
RR=()
if [ "$(uname -m)" = x86_64 ] && ! grep -q -w -E 'avx512_vnni|avx_vnni' /proc/cpuinfo; then
  echo "demo: this CPU has no VNNI: quantizing with --reduce-range (7-bit weights)"
  RR=(--reduce-range)
fi
./build/apps/lwc/lwc quantize testdata/mnv2_fmnist.onnx --calib testdata/fmnist_sample "${RR[@]}" \
  --eval /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz --preprocess testdata/fmnist_sample/preprocess.json \
  -o build/demo/mnv2_fmnist.int8.onnx --report build/demo/quantize_report.json --report-md build/demo/quantize_report.md
./build/apps/lwc/lwc run configs/cleanup_gated.json testdata/mnv2_fmnist.onnx -o build/demo/mnv2_fmnist.fused.onnx \
  --report build/demo/cleanup_report.json
