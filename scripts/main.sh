#!/usr/bin/env bash
# The README's main job: pretrain a small COCO-LM (configs/demo.json) on real English text.
#   1. scripts/setup.sh            installs what is missing (Debian and PyPI packages)
#   2. cmake build of `coco`       (gpu mode when a GPU driver is usable, else emulated; incremental)
#   3. scripts/get_corpus.sh       English prose from Debian's python3.11-doc package (PSF-2.0), ~7 MB
#   4. coco prepare                trains an 8192-token WordPiece vocabulary and writes token shards
#                                  (skipped when inputs and options are unchanged)
#   5. coco train                  250 steps of configs/demo.json, on the GPU if there is one, else the CPU
#                                  (resumes from the last checkpoint when re-run)
# Ends with the first and last logged losses and where the checkpoints and metrics are.
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

python3 - "$RUN_DIR" <<'PY'
import json, sys
run = sys.argv[1]
rows = [json.loads(l) for l in open(f"{run}/metrics.jsonl") if l.strip()]
train = [r for r in rows if r.get("split", "train") == "train"]
valid = [r for r in rows if r.get("split") == "valid"]
first, last = train[0], train[-1]
print(f"main: step {first['step']}: loss {first['loss']:.4f} (mlm {first['mlm_loss']:.4f}, copy {first['rtd_loss']:.4f}, "
      f"clm {first.get('clm_loss', 0):.4f}, cl {first['cl_loss']:.4f})")
print(f"main: step {last['step']}: loss {last['loss']:.4f} (mlm {last['mlm_loss']:.4f}, copy {last['rtd_loss']:.4f}, "
      f"clm {last.get('clm_loss', 0):.4f}, cl {last['cl_loss']:.4f})")
if valid:
    v = valid[-1]
    print(f"main: held-out at step {v['step']}: loss {v['loss']:.4f}, mlm accuracy {v['mlm_acc']:.3f}")
print(f"main: metrics in {run}/metrics.jsonl, checkpoints in {run}/checkpoints/ (latest: {run}/checkpoints/latest)")
PY
