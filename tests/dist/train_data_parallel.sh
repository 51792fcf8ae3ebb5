#!/usr/bin/env bash
# `coco train` data parallel on the cpu backend (DEVICE=cuda: the cuda device, in the emulated build over
# the NCCL shim): N ranks with train.grad_accum g train what one process
# trains with grad_accum N g (same micro_batch, same global batch): every metrics record agrees with the
# one-process run to a relative 1e-5 (measured: 6e-8; the only difference is the order in which the
# ranks' gradients are summed, so not bit-exact), rank 0 alone writes metrics.jsonl with world_size,
# and a run stopped after step 3 on N ranks resumes on one process at the same data position and
# continues like the one-process run; a configuration that differs between ranks is refused (exit 2 on every
# rank); a rank killed by SIGKILL ends the job, and --resume continues exactly (bit for bit on the same ranks);
# a run that logs every 4th step logs those steps' records unchanged, and on cuda its steady step (profiled at
# step 3: the step decided on the device, nothing read back) has 0 syncs, 0 device-to-host copies, 0 cudaMalloc,
# with plain data parallelism and with ZeRO-1 (whose records equal plain data parallelism's within 1e-5), and
# captured as one CUDA graph (both) its records are the uncaptured run's bit for bit and a replayed step is one
# graph launch; a failure on one rank (an exception) ends the job on every rank at once; on cuda in
# f16, N ranks take the same loss scales and skipped steps as one process with grad_accum N, and every record agrees
# within 1e-5 (measured: 2.7e-6).
# usage: train_data_parallel.sh COCO MPIRUN... (MPIRUN: the mpirun command line up to the -np flag)
set -euo pipefail
source "$(dirname "$0")/train_common.sh"
dist_train_setup "$@"
ranks=${RANKS:-2}

make_prepared_data 1 300
python3 - <<'PY'
import json, os
encoder = {"dim": 32, "depth": 1, "heads": 2, "ff_mult": 2, "norm": "post", "embedding_norm": True,
           "qkv_bias": True, "out_bias": True, "relative_position": {"buckets": 8, "max_distance": 16},
           "dropout": {"embedding": 0.1, "attention": 0.1, "residual": 0.1}, "init": "bert", "final_norm": False}
config = {
    "model": {"vocab_size": 64, "max_positions": 16,
              "tie": {"token_embedding": True, "position_embedding": True, "embedding_norm": True},
              "generator_head": "bert", "generator": encoder, "discriminator": dict(encoder, depth=2)},
    "objective": {"preset": "paper", "pad_id": 0, "unk_id": 1, "cls_id": 2, "sep_id": 3, "mask_id": 4, "scl_dim": 32},
    "data": {"dir": "data", "seq_len": 16},
    "optim": {"lr": 3e-3, "betas": [0.9, 0.98], "eps": 1e-6, "weight_decay": 0.01, "warmup_steps": 5,
              "schedule": "linear", "clip_norm": 2.0},
    "train": {"steps": 6, "micro_batch": 4, "grad_accum": 1, "seed": 3, "log_every": 1, "eval_every": 3,
              "eval_batches": 2, "checkpoint_every": 3, "keep_checkpoints": 2},
    "precision": "f32", "runtime": {"device": os.environ.get("DEVICE", "cpu")}}
json.dump(config, open("tiny.json", "w"), indent=1)
PY

# The reference: one process, grad_accum = ranks.
"$coco" train --config tiny.json --out one --set train.grad_accum=$ranks >one.log 2>&1
# N ranks, grad_accum 1.
"${mpirun[@]}" $ranks "$coco" train --config tiny.json --out many >many.log 2>&1
# N ranks stopped (SIGINT on every rank) after step 3, resumed on one process with grad_accum = ranks.
"${mpirun[@]}" $ranks -x COCO_FAULT_INJECT=sigint@after-step:3 "$coco" train --config tiny.json --out moved \
  >moved.log 2>&1
grep -q "stopped by SIGINT after step 3" moved.log || { cat moved.log; echo "FAIL: no clean stop at step 3"; exit 1; }
"$coco" train --config tiny.json --out moved --resume --set train.grad_accum=$ranks >resumed.log 2>&1
grep -q "resuming from .*step-00000003" resumed.log || { cat resumed.log; echo "FAIL: no resume"; exit 1; }

# A configuration that differs between ranks is refused on every rank with exit code 2.
status=0
"${mpirun[@]}" 1 "$coco" train --config tiny.json --out mismatch : -np $((ranks - 1)) "$coco" train \
  --config tiny.json --out mismatch --set train.seed=4 >mismatch.log 2>&1 || status=$?
[[ $status == 2 && $(grep -c "differs between ranks" mismatch.log) == "$ranks" ]] ||
  { cat mismatch.log; echo "FAIL: mismatched configs: exit $status, want 2 with the error on every rank"; exit 1; }

# A rank killed (SIGKILL) after step 4 ends the job non-zero within the bound; --resume on N ranks continues
# from the step-3 checkpoint and ends like the uninterrupted N-rank run.
status=0
start=$SECONDS
timeout 120 "${mpirun[@]}" 1 "$coco" train --config tiny.json --out killed : -np $((ranks - 1)) \
  -x COCO_FAULT_INJECT=after-step:4 "$coco" train --config tiny.json --out killed >killed.log 2>&1 || status=$?
[[ $status != 0 && $status != 124 ]] || { cat killed.log; echo "FAIL: killed rank: exit $status"; exit 1; }
echo "killed rank: the job ended with exit $status in $((SECONDS - start)) s"
"${mpirun[@]}" $ranks "$coco" train --config tiny.json --out killed --resume >killed-resumed.log 2>&1
grep -q "resuming from .*step-00000003" killed-resumed.log || { cat killed-resumed.log; echo "FAIL: no resume"; exit 1; }

# Small buckets (many all-reduces, each started from the backward hook) reduce the same sums: the same run. It
# also logs every 4th step only, so steps 1-3 and 5 are steady steps: on cuda the data-parallel step is decided on
# the device and its record read at the logging cadence, so its step profile (measured at step 3) shows no
# synchronisation, no device-to-host copy and no cudaMalloc, and the records of the logged steps are the same.
"${mpirun[@]}" $ranks "$coco" train --config tiny.json --out buckets --set dist.bucket_mb=0.01 \
  --set train.log_every=4 --set runtime.cuda_graph=false >buckets.log 2>&1
grep -Eq "gradient buckets, [1-9][0-9]* of them all-reduced during backward" buckets.log ||
  { cat buckets.log; echo "FAIL: no bucket all-reduce overlapped with backward"; exit 1; }
# ZeRO-1 on cuda, logging every 4th step, uncaptured: its step is decided on the device too (the shards' statistics
# summed over the ranks on the device), so its steady step reads nothing back either; its records equal plain data
# parallelism's to the reduction order. Then captured (runtime.cuda_graph, on by default), without the evaluation and
# the step-3 checkpoint (each makes the capture wait one more step, and the step after the capture must log nothing
# to be profiled): its step records are the uncaptured run's, bit for bit, and its replayed step is one graph launch.
if [[ "${DEVICE:-cpu}" == cuda ]]; then
  "${mpirun[@]}" $ranks "$coco" train --config tiny.json --out zero --set optim.zero=1 --set train.log_every=4 \
    --set runtime.cuda_graph=false >zero.log 2>&1
  "${mpirun[@]}" $ranks "$coco" train --config tiny.json --out zero-graph --set optim.zero=1 --set train.log_every=4 \
    --set train.eval_every=0 --set train.checkpoint_every=0 >zero-graph.log 2>&1
  grep -q "captured as one CUDA graph" zero-graph.log || { cat zero-graph.log; echo "FAIL: no CUDA graph (ZeRO-1)"; exit 1; }
  # With the step-3 evaluation before the capture, on rank 0 only: it may keep device memory there (measured: it
  # does, and the capture waits from step 4 to 5), and the ranks agree on the step to capture, else their captured
  # and uncaptured collectives would go out of step (dist.timeout_s bounds a hang). Logging every step.
  "${mpirun[@]}" $ranks "$coco" train --config tiny.json --out zero-eval --set optim.zero=1 \
    --set train.checkpoint_every=0 --set dist.timeout_s=60 >zero-eval.log 2>&1
  grep -q "captured as one CUDA graph" zero-eval.log || { cat zero-eval.log; echo "FAIL: no CUDA graph (ZeRO-1)"; exit 1; }
fi
# A failure on some ranks only (every rank but 0) ends the job on every rank at once, with a failing rank's error,
# instead of leaving rank 0 in a collective until dist.timeout_s (100 s here) or ending in std::terminate.
# failing_ranks_end_the_job NAME VAR=VALUE ERROR: ranks 1.. run with VAR=VALUE; the job must end non-zero within 60 s
# with a failing rank's error matching the regular expression ERROR.
failing_ranks_end_the_job() {
  local name=$1 fault=$2 error=$3 status=0 start=$SECONDS
  timeout 200 "${mpirun[@]}" 1 "$coco" train --config tiny.json --out "$name" --set dist.timeout_s=100 : \
    -np $((ranks - 1)) -x "$fault" "$coco" train --config tiny.json --out "$name" \
    --set dist.timeout_s=100 >"$name.log" 2>&1 || status=$?
  local elapsed=$((SECONDS - start))
  [[ $status != 0 && $status != 124 && $elapsed -lt 60 ]] &&
    grep -Eq "error: rank [1-9][0-9]* of $ranks: .*$error.*; aborting the job on every rank" "$name.log" &&
    ! grep -q "terminate called" "$name.log" ||
    { cat "$name.log"; echo "FAIL: $fault on ranks 1-$((ranks - 1)): exit $status after $elapsed s"; exit 1; }
  echo "$fault on ranks 1-$((ranks - 1)): the job ended with exit $status in $elapsed s"
}
# An exception, not a crash (on cuda the capture of the step fails there).
point=after-step:2
[[ "${DEVICE:-cpu}" == cuda ]] && point=step-graph:capture
failing_ranks_end_the_job failed COCO_FAULT_INJECT=throw@$point "COCO_FAULT_INJECT: a failure injected at $point"
# cuda: a kernel fault (the emulator's EMU_FAULT_AT_LAUNCH: a kernel of the 2nd or 3rd step fails as a misaligned
# access would, sticky as on a GPU), naming the fault.
if [[ "${DEVICE:-cpu}" == cuda ]]; then
  failing_ranks_end_the_job faulted EMU_FAULT_AT_LAUNCH=500 "misaligned address"
fi
# runtime.cuda_graph in a data-parallel launch (cuda; on by default for plain data parallelism, so the runs above
# without the key are graphed too): the step with its collectives captured once and replayed logs the records of
# the uncaptured run (buckets, runtime.cuda_graph=false), bit for bit.
if [[ "${DEVICE:-cpu}" == cuda ]]; then
  "${mpirun[@]}" $ranks "$coco" train --config tiny.json --out graph --set train.log_every=4 >graph.log 2>&1
  grep -q "captured as one CUDA graph" graph.log || { cat graph.log; echo "FAIL: no CUDA graph"; exit 1; }
fi
# f16 (cuda): each micro-batch's backward is seeded with loss_scale / (ranks x grad_accum) and the gradients are
# summed over the ranks, so N ranks back-propagate what one process with grad_accum N does, at the same f16
# magnitudes: the dynamic loss scale meets the same overflows (the same skipped steps and loss scales, compared
# exactly; with the former per-rank seed loss_scale / grad_accum and an average over ranks, 2 ranks overflowed at
# the initial scale and skipped steps 1-2 where one process skipped none) and the records agree.
if [[ "${DEVICE:-cpu}" == cuda ]]; then
  "$coco" train --config tiny.json --out one-f16 --set precision=f16 --set train.grad_accum=$ranks \
    --set train.checkpoint_every=0 >one-f16.log 2>&1
  "${mpirun[@]}" $ranks "$coco" train --config tiny.json --out many-f16 --set precision=f16 \
    --set train.checkpoint_every=0 >many-f16.log 2>&1
fi
# bf16 reduction runs (its rounding changes the losses; checked finite and near below).
"${mpirun[@]}" $ranks "$coco" train --config tiny.json --out bf16 --set dist.reduce_dtype=bf16 >bf16.log 2>&1
# A bad dist key is a config error (exit 2) naming it.
status=0
"$coco" train --config tiny.json --out bad --set dist.reduce_dtype=f16 >bad.log 2>&1 || status=$?
[[ $status == 2 ]] && grep -q "dist.reduce_dtype" bad.log || { cat bad.log; echo "FAIL: dist.reduce_dtype=f16 accepted"; exit 1; }

python3 - "$ranks" <<'PY'
import json, os, sys
import records
from records import load  # without the step profile, measured once per process (not a result of the run)
ranks = int(sys.argv[1])
one, many, moved = load("one/metrics.jsonl"), load("many/metrics.jsonl"), load("moved/metrics.jsonl")
assert len(one) == 8 and len(many) == 8 and len(moved) == 8, (len(one), len(many), len(moved))
worst = 0.0
def compare(a, b, what):  # one record pair, every result to a relative 1e-5
    global worst
    worst = max(worst, records.compare([a], [b], what))
for a, b in zip(one, many):
    compare(a, b, f"{ranks} ranks")
    assert b["world_size"] == ranks and "world_size" not in a, (a, b)
for a, b in zip(one, moved):
    compare(a, b, f"{ranks} ranks -> 1 (resume)")
killed = load("killed/metrics.jsonl")
def timeless(records): return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in records]
assert timeless(killed) == timeless(many), "a killed rank's run resumed on the same ranks differs from the uninterrupted one"
buckets = timeless(load("buckets/metrics.jsonl"))
logged = {(r["step"], r.get("split")) for r in buckets}
assert logged == {(3, "valid"), (4, None), (6, None), (6, "valid")}, sorted(logged, key=str)
assert buckets == [r for r in timeless(many) if (r["step"], r.get("split")) in logged], \
    "dist.bucket_mb or train.log_every changed the run"
# tokens_seen (summed over the ranks on the host every step) is exact in a checkpoint between logging steps.
def tokens_seen(run, step):
    return json.load(open(f"{run}/checkpoints/step-{step:08d}/trainer_state.json"))["tokens_seen"]
assert tokens_seen("buckets", 3) == tokens_seen("many", 3) == tokens_seen("one", 3) > 0, \
    (tokens_seen("buckets", 3), tokens_seen("many", 3), tokens_seen("one", 3))
if os.environ.get("DEVICE") == "cuda":
    profile = [json.loads(line) for line in open("buckets/metrics.jsonl") if "profile_step" in line]
    assert len(profile) == 1, profile
    p = profile[0]
    assert p["profile_step"] == 3 and p["step"] == 4, p
    assert p["syncs_per_step"] == 0 and p["d2h_copies_per_step"] == 0 and p["cuda_mallocs_per_step"] == 0, p
    # the gradient buckets and the metric sums, all on the device
    assert p["collectives_per_step"] >= 2, p
    print("data-parallel steady step (rank 0): " +
          ", ".join(f"{k} {v}" for k, v in p.items() if k.endswith("_per_step")))
    assert timeless(load("graph/metrics.jsonl")) == buckets, "runtime.cuda_graph changed the data-parallel run"
    p = [json.loads(line) for line in open("graph/metrics.jsonl") if "profile_step" in line][0]
    assert p["graph_launches_per_step"] == 1 and p["syncs_per_step"] == 0 and p["d2h_copies_per_step"] == 0, p
    assert p["cuda_mallocs_per_step"] == 0, p
    print("data-parallel replayed step (rank 0): " +
          ", ".join(f"{k} {v}" for k, v in p.items() if k.endswith("_per_step")))
    zero_records = load("zero/metrics.jsonl")
    assert {(r["step"], r.get("split")) for r in zero_records} == logged, zero_records
    for a, b in zip([r for r in many if (r["step"], r.get("split")) in logged], zero_records):
        compare(a, b, "ZeRO-1")
    p = [json.loads(line) for line in open("zero/metrics.jsonl") if "profile_step" in line][0]
    assert p["profile_step"] == 3 and p["syncs_per_step"] == 0 and p["d2h_copies_per_step"] == 0, p
    assert p["cuda_mallocs_per_step"] == 0, p
    print("ZeRO-1 steady step (rank 0): " +
          ", ".join(f"{k} {v}" for k, v in p.items() if k.endswith("_per_step")))
    zero_graph = timeless(load("zero-graph/metrics.jsonl"))
    graph_logged = {(r["step"], r.get("split")) for r in zero_graph}
    assert graph_logged == {(4, None), (6, None), (6, "valid")}, sorted(graph_logged, key=str)
    assert zero_graph == [r for r in timeless(zero_records) if (r["step"], r.get("split")) in graph_logged], \
        "runtime.cuda_graph changed the ZeRO-1 run"
    zero_eval = [r for r in timeless(load("zero-eval/metrics.jsonl")) if (r["step"], r.get("split")) in logged]
    assert zero_eval == timeless(zero_records), "runtime.cuda_graph after an evaluation changed the ZeRO-1 run"
    p = [json.loads(line) for line in open("zero-graph/metrics.jsonl") if "profile_step" in line][0]
    assert p["graph_launches_per_step"] == 1 and p["syncs_per_step"] == 0 and p["d2h_copies_per_step"] == 0, p
    assert p["cuda_mallocs_per_step"] == 0 and p["collectives_per_step"] == 0, p
    print("ZeRO-1 replayed step (rank 0): " +
          ", ".join(f"{k} {v}" for k, v in p.items() if k.endswith("_per_step")))
    one_f16, many_f16 = load("one-f16/metrics.jsonl"), load("many-f16/metrics.jsonl")
    assert len(one_f16) == len(many_f16) == 8, (len(one_f16), len(many_f16))
    scales = lambda records: [(r["step"], r["loss_scale"], r["skipped"]) for r in records if "split" not in r]
    assert scales(one_f16) == scales(many_f16), ("f16 loss scales / skipped steps", scales(one_f16), scales(many_f16))
    earlier_worst = worst  # the f16 pair reports its own
    worst = 0.0
    # An accuracy counts argmax hits: a near-tie of f16 scores may flip one (measured: none here); losses compared.
    for a, b in zip(one_f16, many_f16):
        compare({k: v for k, v in a.items() if not k.endswith("_acc")},
                {k: v for k, v in b.items() if not k.endswith("_acc")}, f"f16 {ranks} ranks")
    print(f"f16: {ranks} ranks == 1 process, loss scales {sorted({s for _, s, _ in scales(one_f16)})}, "
          f"worst relative difference {worst:.3g}")
    worst = earlier_worst
for a, b in zip(many, load("bf16/metrics.jsonl")):
    assert b["loss"] is not None and abs(a["loss"] - b["loss"]) < 0.05 * abs(a["loss"]), ("bf16 reduction", a, b)
print(f"{ranks} ranks == 1 process: {len(one)} records, worst relative difference {worst:.3g}")
PY
