#!/usr/bin/env bash
# The README's main job: set up, build, and run the main workload.
# Until the training loop and the `coco` CLI exist, this builds the engine and runs the embedding
# example (a two-layer MLP trained with the tape and SGD on the CPU and the CUDA backend), and says so.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
BUILD_DIR="${BUILD_DIR:-build}"
configure_log="$(mktemp)"
if ! cmake -S . -B "$BUILD_DIR" ${COCO_CUDA_MODE:+-DCOCO_CUDA_MODE=$COCO_CUDA_MODE} >"$configure_log" 2>&1; then
  cat "$configure_log"; exit 1
fi
grep "cocolm:" "$configure_log" || true
rm -f "$configure_log"
cmake --build "$BUILD_DIR" -j "$(nproc)" --target example_mlp_regression
echo "main: COCO-LM pretraining is not available yet (the model and the coco CLI are being built);"
echo "main: running the engine example instead."
"$BUILD_DIR/example_mlp_regression"
