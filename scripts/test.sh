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

echo "== all tests"
cd build
ctest -j"$JOBS" --timeout 1800 --output-on-failure
