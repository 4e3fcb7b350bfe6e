#!/usr/bin/env bash
# The main job on bundled data: set up the machine, build lwc, and show what it does.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
mkdir -p build/demo
./build/apps/lwc/lwc info testdata/mnv2_fmnist.onnx
# Cleanup pipeline with evaluation on the 500-image sample and gates (exit code 3 if one fails).
./build/apps/lwc/lwc run configs/cleanup_gated.json testdata/mnv2_fmnist.onnx -o build/demo/mnv2_fmnist.fused.onnx \
  --report build/demo/cleanup_report.json --report-md build/demo/cleanup_report.md
