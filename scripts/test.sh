#!/usr/bin/env bash
# Set up the machine, build, and run every test: unit, conformance, end-to-end, and the model I/O
# tests again under AddressSanitizer + UndefinedBehaviorSanitizer. CTest's summary line comes last.
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=${JOBS:-$(nproc)}
bash scripts/setup.sh
bash scripts/build.sh

echo "== model I/O and dataset tests under ASan + UBSan"
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DLWC_SANITIZE=ON >/dev/null
cmake --build build-asan -j"$JOBS" --target test_ir test_data
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ./build-asan/tests/test_ir
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ./build-asan/tests/test_data

echo "== fuzzing: huffman decoder, dataset readers (60 s each)"
# Clang builds of the libFuzzer targets (see tests/fuzz/CMakeLists.txt). Each fuzzer works on a copy
# of its seed corpus, so the repository stays unchanged; a crash leaves its input in that copy.
cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLWC_FUZZ=ON \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ >/dev/null
cmake --build build-fuzz -j"$JOBS" --target fuzz_huffman_decode fuzz_dataset
fuzz() {  # fuzz TARGET CORPUS MAX_LEN
  local dir
  dir=$(mktemp -d)
  mkdir "$dir/corpus"
  cp "$2"/* "$dir/corpus/"
  if ! "./build-fuzz/tests/fuzz/$1" -max_total_time=60 -rss_limit_mb=4096 -max_len="$3" \
      -artifact_prefix="$dir/" "$dir/corpus" 2>"$dir/log"; then
    tail -n 60 "$dir/log"
    echo "$1 failed: reproducer (crash-*, timeout-*, oom-*) and log in $dir"
    exit 1
  fi
  echo "$1: $(tail -n 1 "$dir/log")"
  rm -rf "$dir"
}
fuzz fuzz_huffman_decode tests/fuzz/corpus 4096
fuzz fuzz_dataset tests/fuzz/corpus_dataset 16384
# fuzz_model_load is not run here: it has found one fault after another inside ONNX 1.12's shape
# inference (the last, a heap overflow from a Constant with a short raw_data in a Loop body, found in
# 60 s by a CI run on 2026-12-02, is now refused at load; its input is in tests/fuzz/crashes_model_load/).
# README, "Input checking and robustness", says how to run it by hand.

echo "== all tests"
cd build
ctest -j"$JOBS" --timeout 1800 --output-on-failure
