#!/usr/bin/env bash
# The README's main job: pretrain a small COCO-LM (configs/demo.json) on real English text.
#   1. scripts/setup.sh            installs what is missing (Debian and PyPI packages)
#   2. cmake build of `coco`       (gpu mode when a GPU driver is usable, else emulated; incremental)
#   3. scripts/get_corpus.sh       English prose from Debian's python3.11-doc package (PSF-2.0), ~7 MB
#   4. coco prepare                trains an 8192-token WordPiece vocabulary and writes token shards
#                                  (skipped when inputs and options are unchanged)
#   5. coco train                  250 steps of configs/demo.json, on the GPU if there is one, else the CPU
#                                  (resumes from the last checkpoint when re-run)
#   6. coco plot                   the run's metrics as a picture: $RUN_DIR/metrics.png
# Ends with the first and last logged losses (the metric names of docs/metrics.md) and where the checkpoints,
# metrics and plot are.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
BUILD_DIR="${BUILD_DIR:-build}"
RUN_DIR="${RUN_DIR:-runs/demo}"
DATA_DIR="data/demo"

scripts/setup.sh
configure_log="$(mktemp)"
if ! cmake -S . -B "$BUILD_DIR" ${COCO_CUDA_MODE:+-DCOCO_CUDA_MODE=$COCO_CUDA_MODE} >"$configure_log" 2>&1; then
  cat "$configure_log"; exit 1
fi
grep "cocolm:" "$configure_log" || true
rm -f "$configure_log"
cmake --build "$BUILD_DIR" -j "$(nproc)" --target coco
COCO="$ROOT/$BUILD_DIR/coco"

scripts/get_corpus.sh data/corpus
"$COCO" prepare --vocab-size 8192 --valid-fraction 0.02 --out "$DATA_DIR" data/corpus

device=cpu
if grep -q "COCO_CUDA_MODE:STRING=gpu" "$BUILD_DIR/CMakeCache.txt" && nvidia-smi -L >/dev/null 2>&1; then device=cuda; fi
echo "main: training configs/demo.json on $device into $RUN_DIR"
"$COCO" train --config configs/demo.json --out "$RUN_DIR" --set "data.dir=$DATA_DIR" --set "runtime.device=$device"
"$COCO" plot "$RUN_DIR" --out "$RUN_DIR/metrics.png"

python3 - "$RUN_DIR" <<'PY'
import json, sys
run = sys.argv[1]
rows = [json.loads(l) for l in open(f"{run}/metrics.jsonl") if l.strip()]
train = [r for r in rows if r.get("split", "train") == "train"]
valid = [r for r in rows if r.get("split") == "valid"]
first, last = train[0], train[-1]
def losses(r):
    parts = [f"{key} {r[key]:.4f}" for key in ("mlm_loss", "rtd_loss", "clm_loss", "cl_loss") if key in r]
    return f"loss {r['loss']:.4f} ({', '.join(parts)})"
print(f"main: step {first['step']}: {losses(first)}")
print(f"main: step {last['step']}: {losses(last)}")
if valid:
    v = valid[-1]
    accuracies = ", ".join(f"{key} {v[key]:.3f}" for key in ("mlm_acc", "rtd_acc", "clm_acc", "cl_acc") if key in v)
    print(f"main: held-out at step {v['step']}: loss {v['loss']:.4f}, {accuracies}")
print(f"main: metrics in {run}/metrics.jsonl (names: docs/metrics.md), plot in {run}/metrics.png, "
      f"checkpoints in {run}/checkpoints/ (latest: {run}/checkpoints/latest)")
PY
