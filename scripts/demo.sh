#!/usr/bin/env bash
# The main job on bundled data: set up the machine, build lwc, and show what it does.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
./build/apps/lwc/lwc info --per-layer testdata/mnv2_fmnist.onnx
./build/apps/lwc/lwc eval testdata/mnv2_fmnist.onnx --data testdata/fmnist_sample/png \
  --preprocess testdata/fmnist_sample/preprocess.json
