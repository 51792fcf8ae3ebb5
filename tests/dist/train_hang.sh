#!/usr/bin/env bash
# `coco train` with a rank that stops responding (COCO_FAULT_INJECT=hang@after-step:2 on rank 1): rank 0's next
# collective times out after dist.timeout_s = 3 s, it names itself, the failed call and the rank that sent no
# word after the deadline (rank 1), and aborts the job on every rank (the hung one too): exit non-zero within
# the bound, never a hang. The same at start-up on 3 ranks (hang@trainer:start on rank 1, before the trainer's
# first collective): ranks 0 and 2 time out in the configuration check, hear each other, name rank 1 and abort
# through the same path.
# usage: train_hang.sh COCO EXPECT_FAILURE MPIRUN... (MPIRUN: the mpirun command line up to the -np flag)
set -euo pipefail
source "$(dirname "$0")/train_common.sh"
expect=$2
dist_train_setup "$1" "${@:3}"

make_corpus 4 60 1 16
prepare_data
python3 - <<'PY'
import json
encoder = {"dim": 16, "depth": 1, "heads": 2, "ff_mult": 2}
config = {"model": {"max_positions": 16, "generator": encoder, "discriminator": encoder},
          "objective": {"preset": "lucidrains", "sep_id": -1},
          "data": {"dir": "data", "seq_len": 16},
          "train": {"steps": 20, "micro_batch": 2, "log_every": 1, "checkpoint_every": 2},
          "dist": {"timeout_s": 3}, "runtime": {"device": "cpu", "threads": 1}}
json.dump(config, open("hang.json", "w"), indent=1)
PY

"$expect" 90 "error: rank 0 of 2: .* did not complete within 3 s \(rank 1 sent no word .*\); aborting the job on every rank" \
  "${mpirun[@]}" 1 "$coco" train --config hang.json --out run : -np 1 -x COCO_FAULT_INJECT=hang@after-step:2 \
  "$coco" train --config hang.json --out run
"$expect" 90 "error: rank [02] of 3: the argument check of all_gather did not complete within 3 s \(rank 1 sent no word .*\); aborting the job on every rank" \
  "${mpirun[@]}" 1 "$coco" train --config hang.json --out start : -np 1 -x COCO_FAULT_INJECT=hang@trainer:start \
  "$coco" train --config hang.json --out start : -np 1 "$coco" train --config hang.json --out start
