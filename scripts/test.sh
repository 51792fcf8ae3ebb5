#!/usr/bin/env bash
# Sets up, builds (emulated CUDA unless a GPU is usable) and runs every test with ctest.
# Usage: scripts/test.sh [extra ctest arguments]. Build directory: build/ (override with BUILD_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
BUILD_DIR="${BUILD_DIR:-build}"
JOBS="${JOBS:-$(nproc)}"
configure_log="$(mktemp)"
if ! cmake -S . -B "$BUILD_DIR" ${COCO_CUDA_MODE:+-DCOCO_CUDA_MODE=$COCO_CUDA_MODE} >"$configure_log" 2>&1; then
  cat "$configure_log"; exit 1
fi
grep "cocolm:" "$configure_log" || true
rm -f "$configure_log"
echo "test: building in $BUILD_DIR with $JOBS jobs"
cmake --build "$BUILD_DIR" -j "$JOBS"
echo "test: running ctest"
cd "$BUILD_DIR"
ctest --output-on-failure -j "$JOBS" "$@"
