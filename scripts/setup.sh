#!/usr/bin/env bash
# Installs everything lwc's build, tests and scripts need on Debian 12 (run as root).
# Idempotent: packages already present are skipped, the npm package is installed once.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(
  # build
  build-essential cmake ninja-build ccache pkg-config git
  # core dependencies (see README, "Dependencies")
  libonnx-dev libprotobuf-dev protobuf-compiler
  libcli11-dev libspdlog-dev nlohmann-json3-dev catch2
  libdnnl-dev ocl-icd-opencl-dev
  libpng-dev libjpeg62-turbo-dev zlib1g-dev
  # sanitizer and fuzzer runtime
  clang libclang-rt-14-dev
  # data, conformance cases, model training/export scripts
  dataset-fashion-mnist libonnx-testdata
  python3 python3-numpy python3-torch python3-torchvision python3-onnx
  # configs/*.json are validated against configs/pipeline.schema.json in the tests
  python3-jsonschema
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  missing+=(nodejs npm)
fi
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# ONNX Runtime (peer runtime for cross-checks and benchmarks), project-local.
ORT_DIR=scripts/ort
if [ ! -f "$ORT_DIR/node_modules/onnxruntime-node/package.json" ]; then
  echo "setup: installing onnxruntime-node@1.30.0 into $ORT_DIR"
  mkdir -p "$ORT_DIR"
  ( cd "$ORT_DIR" && [ -f package.json ] || echo '{"name":"lwc-ort","private":true}' > package.json
    ONNXRUNTIME_NODE_INSTALL=skip npm install --no-audit --no-fund --loglevel=error onnxruntime-node@1.30.0 )
fi
echo "setup: ok"
