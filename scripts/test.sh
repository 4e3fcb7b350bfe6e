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

echo "== huffman decoder fuzzing (60 s)"
# A clang build of the libFuzzer target alone (see tests/fuzz/CMakeLists.txt). The fuzzer works on a
# copy of the seed corpus, so the repository stays unchanged; a crash leaves its input in that copy.
cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLWC_FUZZ=ON \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ >/dev/null
cmake --build build-fuzz -j"$JOBS" --target fuzz_huffman_decode
FUZZ_DIR=$(mktemp -d)
mkdir "$FUZZ_DIR/corpus"
cp tests/fuzz/corpus/* "$FUZZ_DIR/corpus/"
if ! ./build-fuzz/tests/fuzz/fuzz_huffman_decode -max_total_time=60 -rss_limit_mb=2048 -max_len=4096 \
    -artifact_prefix="$FUZZ_DIR/" "$FUZZ_DIR/corpus" 2>"$FUZZ_DIR/log"; then
  tail -n 60 "$FUZZ_DIR/log"
  echo "fuzz_huffman_decode failed: reproducer (crash-*, timeout-*, oom-*) and log in $FUZZ_DIR"
  exit 1
fi
tail -n 1 "$FUZZ_DIR/log"
rm -rf "$FUZZ_DIR"

echo "== all tests"
cd build
ctest -j"$JOBS" --timeout 1800 --output-on-failure
