#!/usr/bin/env bash
# shellcheck disable=SC2317  # the *_phase functions are called by name: "${phase}_phase"
# One device call's work on a lent GPU machine (H100/H200: sm_90, CUDA toolkit, CMake, python3, no
# network). Run it THERE, in the repository root, as the single command of a device call that carries
# .gpu-deps (made here by scripts/gpu_deps.sh) and, for the train phase, data/demo:
#
#   carry [".gpu-deps", "data/demo"]   command: bash scripts/gpu_session.sh [PHASE...]
#
# Phases, run in this order whatever order they are named in:
#   build   configure COCO_CUDA_MODE=gpu for sm_90 with the .gpu-deps hints, build every target
#   test    ctest, every label, per-test timeout; coco_bench_validation is left to `bench`
#   bench   coco-bench --config paper-base, then seed-readme; one merged JSON report
#   train   a short `coco train` of configs/demo.json on the GPU in bf16; prints tokens/s
# No phase named: all four. test, bench and train configure and build what they need first (a no-op
# while the machine keeps the previous call's build-gpu/). A device call may run 10 minutes; the phases
# share a budget (GPU_SESSION_BUDGET_S, default 570 s when $OUT is set, else unlimited): a phase that no
# longer fits is skipped and the summary names the command for the next call. On a fresh machine,
# expect the build alone to take several minutes; if `all` does not fit, split it:
#   call 1: bash scripts/gpu_session.sh build test      call 2: bash scripts/gpu_session.sh bench train
#
# Output: short progress lines on stdout; full logs under $OUT (runs/gpu-session/ when $OUT is unset):
#   session.log (this stdout), build.log (configure + build), ctest.log, bench.log,
#   <date>-<gpu>.json (coco-bench report; copy it to bench/results/), train.log, train-metrics.jsonl.
# Environment: BUILD_DIR (build-gpu), JOBS (nproc), TEST_TIMEOUT_S (per test, 300), TRAIN_DATA
# (data/demo), TRAIN_STEPS (250; at least the demo's 25 warm-up steps), GPU_SESSION_BUDGET_S, COCO_CMAKE_ARGS
# (extra configure arguments).
# Exit status: 0 when every requested phase succeeded, 1 otherwise, 2 on bad usage. Phases that need a
# GPU fail at once with "no CUDA device" on a machine without one.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
ROOT="$(pwd)"
START_SECONDS=$SECONDS

OUT_DIR="${OUT:-$ROOT/runs/gpu-session}"
BUILD_DIR="${BUILD_DIR:-build-gpu}"
[[ "$BUILD_DIR" == /* ]] || BUILD_DIR="$ROOT/$BUILD_DIR"
JOBS="${JOBS:-$(nproc)}"
TEST_TIMEOUT_S="${TEST_TIMEOUT_S:-300}"
TRAIN_DATA="${TRAIN_DATA:-data/demo}"
TRAIN_STEPS="${TRAIN_STEPS:-250}"
if [[ -n "${OUT:-}" ]]; then BUDGET_S="${GPU_SESSION_BUDGET_S:-570}"; else BUDGET_S="${GPU_SESSION_BUDGET_S:-0}"; fi
DEPS="$ROOT/.gpu-deps"
RUNTIME="$ROOT/.gpu-deps-runtime"  # unpacked from .gpu-deps/openblas-runtime.tar.xz; never carried
# Seconds each phase needs at the least; an earlier phase leaves them to the phases after it.
declare -A MIN_SECONDS=([build]=60 [test]=60 [bench]=90 [train]=30)

usage() {
  echo "usage: bash scripts/gpu_session.sh [build] [test] [bench] [train] [all]   (default: all)" >&2
  exit 2
}
declare -A requested=()
for arg in "$@"; do
  case "$arg" in
    build | test | bench | train) requested[$arg]=1 ;;
    all) requested=([build]=1 [test]=1 [bench]=1 [train]=1) ;;
    -h | --help) sed -n '3,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_session: unknown phase '$arg'" >&2; usage ;;
  esac
done
((${#requested[@]})) || requested=([build]=1 [test]=1 [bench]=1 [train]=1)
phases=()
for phase in build test bench train; do [[ -n "${requested[$phase]:-}" ]] && phases+=("$phase"); done

mkdir -p "$OUT_DIR" || { echo "gpu_session: cannot create $OUT_DIR" >&2; exit 1; }
LOG="$OUT_DIR/session.log"
: >"$LOG"
say() { echo "gpu_session: $*" | tee -a "$LOG"; }
show() { tee -a "$LOG"; }  # copies command output to stdout and session.log
elapsed() { echo $((SECONDS - START_SECONDS)); }
# Seconds left for this phase after keeping the minimum of each later requested phase; 0 = unlimited.
phase_allowance() {
  local phase="$1" later=0 seen=0 p
  ((BUDGET_S > 0)) || { echo 0; return; }
  [[ "$phase" == build ]] && seen=1  # the build precedes every phase, named or not
  for p in "${phases[@]}"; do
    ((seen)) && [[ "$p" != "$phase" ]] && later=$((later + MIN_SECONDS[$p]))
    [[ "$p" == "$phase" ]] && seen=1
  done
  echo $((BUDGET_S - $(elapsed) - later))
}
# with_limit SECONDS CMD...: the command under `timeout` when a limit applies.
with_limit() {
  local limit="$1"; shift
  if ((limit > 0)); then timeout --kill-after=15 "$limit" "$@"; else "$@"; fi
}

declare -A status=()
say "phases: ${phases[*]}; output in $OUT_DIR; build dir $BUILD_DIR; $JOBS jobs;" \
  "budget $( ((BUDGET_S > 0)) && echo "${BUDGET_S} s" || echo unlimited)"

# --- the machine
HAVE_GPU=0
GPU_SLUG=no-gpu
if command -v nvidia-smi >/dev/null && smi="$(timeout 30 nvidia-smi -L 2>&1)" && grep -q "^GPU [0-9]" <<<"$smi"; then
  HAVE_GPU=1
  echo "$smi" | show
  timeout 30 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv 2>&1 | show
  GPU_SLUG="$(timeout 30 nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr '[:upper:]' '[:lower:]' |
    sed -E 's/^nvidia //; s/[^a-z0-9]+/-/g; s/^-+|-+$//g')"
  [[ -n "$GPU_SLUG" ]] || GPU_SLUG=gpu
else
  say "no CUDA device: nvidia-smi -L lists no GPU${smi:+ ($(head -1 <<<"$smi"))}"
fi

CUDA_ROOT="${CUDAToolkit_ROOT:-${CUDA_HOME:-${CUDA_PATH:-}}}"
NVCC="$(command -v nvcc || true)"
if [[ -z "$NVCC" ]]; then
  for candidate in "$CUDA_ROOT" /usr/local/cuda /usr/local/cuda-13.0; do
    [[ -n "$candidate" && -x "$candidate/bin/nvcc" ]] && { NVCC="$candidate/bin/nvcc"; break; }
  done
fi
[[ -n "$NVCC" ]] || { say "FAILED: nvcc not found (PATH, CUDAToolkit_ROOT, CUDA_HOME, /usr/local/cuda)"; exit 1; }
[[ -n "$CUDA_ROOT" ]] || CUDA_ROOT="$(dirname "$(dirname "$(readlink -f "$NVCC")")")"
# CUDACXX, not -DCMAKE_CUDA_COMPILER: CMake wipes an existing cache (and every -D with it) when the
# compiler path given differs in spelling from the cached one.
export CUDACXX="$NVCC"
say "nvcc $("$NVCC" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p') ($NVCC); $(cmake --version | head -1);" \
  "$(c++ --version 2>/dev/null | head -1); $(nproc) cores; $(free -g 2>/dev/null | awk '/^Mem/ {print $2 " GiB memory"}')"

# --- dependencies: the .gpu-deps copies when carried, else whatever the system has
cmake_args=(-DCOCO_CUDA_MODE=gpu -DCMAKE_CUDA_ARCHITECTURES=90 -DCUDAToolkit_ROOT="$CUDA_ROOT"
  -DCMAKE_BUILD_TYPE=Release)
library_path=()
if [[ -d "$DEPS" ]]; then
  archive="$DEPS/openblas-runtime.tar.xz"
  [[ -f "$archive" ]] || { say "FAILED: $archive is missing; re-run scripts/gpu_deps.sh where .gpu-deps was made"; exit 1; }
  stamp="$(sha256sum "$archive" | cut -d' ' -f1)"
  if [[ "$(cat "$RUNTIME/.stamp" 2>/dev/null)" != "$stamp" ]]; then
    rm -rf "$RUNTIME" "$RUNTIME.tmp"
    # python3's tarfile, not tar -J: the machine may have no xz.
    if ! python3 - "$archive" "$RUNTIME.tmp" <<'PY'; then
import sys, tarfile
with tarfile.open(sys.argv[1]) as archive:
    archive.extractall(sys.argv[2], **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
PY
      say "FAILED: could not unpack $archive"; exit 1
    fi
    echo "$stamp" >"$RUNTIME.tmp/.stamp"
    mv "$RUNTIME.tmp" "$RUNTIME"
    say "unpacked OpenBLAS runtime into $RUNTIME/lib"
  fi
  library_path+=("$RUNTIME/lib")
  # The Fortran runtime copies only where the system has none: a newer system copy wins.
  system_libraries="$(/sbin/ldconfig -p 2>/dev/null || ldconfig -p 2>/dev/null)"
  for fallback in "$RUNTIME"/lib/fallback/*; do
    [[ -e "$fallback" ]] || continue
    if ! grep -q "^[[:space:]]*$(basename "$fallback") " <<<"$system_libraries"; then
      library_path+=("$RUNTIME/lib/fallback")
      break
    fi
  done
  export PKG_CONFIG_LIBDIR="$DEPS/lib/pkgconfig"  # only the .gpu-deps .pc files, not the system's
  export PKG_CONFIG_PATH=""
  pkg_config="$(command -v pkg-config || echo "$DEPS/bin/pkg-config")"
  gtest_dir="$(dirname "$(find "$DEPS/lib" -name GTestConfig.cmake -print -quit)")"
  # -U: forget what an earlier configure found, so that these copies are the ones used.
  cmake_args+=(-U "__pkg_config_*" -U "OPENBLAS_*" -U "pkgcfg_lib_OPENBLAS_*"
    -DCMAKE_PREFIX_PATH="$DEPS" -Dnlohmann_json_DIR="$DEPS/share/cmake/nlohmann_json" -DGTest_DIR="$gtest_dir"
    -DPKG_CONFIG_EXECUTABLE="$pkg_config")
  if [[ -f "$DEPS/cudnn-frontend/include/cudnn_frontend.h" ]]; then
    cmake_args+=(-DCOCO_CUDNN_FRONTEND_INCLUDE="$DEPS/cudnn-frontend/include")
  fi
else
  say "no .gpu-deps here (scripts/gpu_deps.sh makes it; carry it): configuring with the system's packages"
fi

# libcudnn: the toolkit's, else a PyPI nvidia-cudnn-cu* wheel's (e.g. torch's virtual environment).
cudnn_in_toolkit="$(find "$CUDA_ROOT"/lib64 "$CUDA_ROOT"/lib "$CUDA_ROOT"/targets/*/lib -maxdepth 1 -name 'libcudnn.so*' -print -quit 2>/dev/null)"
if [[ -n "$cudnn_in_toolkit" ]]; then
  say "cuDNN: $cudnn_in_toolkit (CUDA toolkit)"
else
  site_dirs="$(python3 -c 'import site, sys; print("\n".join(site.getsitepackages() + [site.getusersitepackages()] + sys.path))' 2>/dev/null)"
  cudnn_lib="$(for dir in $site_dirs /opt/*/.venv/lib/python3*/site-packages /usr/local/lib/python3*/dist-packages; do
    [[ -d "$dir/nvidia" ]] && find "$dir/nvidia" -maxdepth 3 -name 'libcudnn.so*' -path '*/lib/*' 2>/dev/null
  done | head -1)"
  if [[ -n "$cudnn_lib" && -f "$(dirname "$(dirname "$cudnn_lib")")/include/cudnn.h" ]]; then
    cudnn_root="$(dirname "$(dirname "$cudnn_lib")")"
    say "cuDNN: $cudnn_lib (PyPI wheel; passed as COCO_CUDNN_ROOT=$cudnn_root)"
    cmake_args+=(-DCOCO_CUDNN_ROOT="$cudnn_root" -DCUDNN_LIBRARY="$cudnn_lib")
    library_path+=("$cudnn_root/lib")
  else
    say "cuDNN: none in $CUDA_ROOT or python3's site-packages${cudnn_lib:+ (found $cudnn_lib without include/cudnn.h)};" \
      "coco-bench is built without the cuDNN attention baseline"
  fi
fi
if ((${#library_path[@]})); then
  LD_LIBRARY_PATH="$(IFS=:; echo "${library_path[*]}")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export LD_LIBRARY_PATH  # the linker resolves libopenblas's own needs through it, and so do the runs
  say "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
fi
if [[ -n "${COCO_CMAKE_ARGS:-}" ]]; then
  read -r -a extra_args <<<"$COCO_CMAKE_ARGS"
  cmake_args+=("${extra_args[@]}")
fi

# --- build: configure, then the targets the requested phases need
targets=()
if [[ -n "${requested[build]:-}${requested[test]:-}" ]]; then
  targets=(all)
else
  [[ -n "${requested[bench]:-}" ]] && targets+=(coco-bench)
  [[ -n "${requested[train]:-}" ]] && targets+=(coco)
fi
BUILD_OK=0
build_phase() {
  local build_log="$OUT_DIR/build.log" limit t0=$SECONDS
  limit="$(phase_allowance build)"
  if ((BUDGET_S > 0 && limit < MIN_SECONDS[build])); then
    say "skipped build: $((BUDGET_S - $(elapsed))) s of the ${BUDGET_S} s budget left"; status[build]="skipped (budget)"; return 1
  fi
  local generator=()
  if [[ ! -f "$BUILD_DIR/CMakeCache.txt" ]] && command -v ninja >/dev/null; then generator=(-G Ninja); fi
  say "configuring $BUILD_DIR (log: $build_log)"
  if ! cmake -S "$ROOT" -B "$BUILD_DIR" "${generator[@]}" "${cmake_args[@]}" >"$build_log" 2>&1; then
    tail -40 "$build_log" | show
    say "FAILED: configure (see build.log)"; status[build]=FAILED; return 1
  fi
  grep -E "cocolm:|Found (nlohmann_json|GTest|PkgConfig|openblas)|Checking for module" "$build_log" | show
  if ! grep -q "^COCO_CUDA_MODE:STRING=gpu$" "$BUILD_DIR/CMakeCache.txt"; then
    say "FAILED: $BUILD_DIR is not configured in gpu mode after the configure (see build.log)"; status[build]=FAILED; return 1
  fi
  grep -E "^(nlohmann_json_DIR|GTest_DIR|pkgcfg_lib_OPENBLAS_openblas|OPENBLAS_INCLUDE_DIRS|CUDNN_LIBRARY|COCO_CUDNN_FRONTEND_INCLUDE):" \
    "$BUILD_DIR/CMakeCache.txt" | show
  say "building ${targets[*]} with $JOBS jobs$( ((limit > 0)) && echo " (at most ${limit} s)")"
  local target_args=()
  for t in "${targets[@]}"; do target_args+=(--target "$t"); done
  with_limit "$limit" cmake --build "$BUILD_DIR" -j "$JOBS" "${target_args[@]}" >>"$build_log" 2>&1
  local rc=$?
  if ((rc == 124 || rc == 137)); then
    say "build stopped by the budget after $((SECONDS - t0)) s; the next call continues it"; status[build]="stopped (budget)"
    return 1
  fi
  if ((rc != 0)); then
    grep -E -m 30 "error|Error|ptxas|undefined reference" "$build_log" | show
    tail -15 "$build_log" | show
    say "FAILED: build after $((SECONDS - t0)) s (see build.log)"; status[build]=FAILED; return 1
  fi
  say "built ${targets[*]} in $((SECONDS - t0)) s"
  status[build]=ok
  BUILD_OK=1
}

needs_gpu() {  # needs_gpu PHASE: refuses at once without a device
  if ((!HAVE_GPU)); then
    say "FAILED: $1 needs a GPU: no CUDA device (nvidia-smi -L lists none)"; status[$1]="FAILED (no CUDA device)"; return 1
  fi
  if ((!BUILD_OK)); then say "FAILED: $1: no build (${status[build]:-not run})"; status[$1]="FAILED (no build)"; return 1; fi
}
fits() {  # fits PHASE: sets ALLOWANCE (seconds, 0 = unlimited), or skips the phase
  ALLOWANCE="$(phase_allowance "$1")"
  if ((BUDGET_S > 0 && ALLOWANCE < MIN_SECONDS[$1])); then
    say "skipped $1: $((BUDGET_S - $(elapsed))) s of the ${BUDGET_S} s budget left"; status[$1]="skipped (budget)"; return 1
  fi
}

test_phase() {
  needs_gpu test || return 1
  local limit t0=$SECONDS
  fits test || return 1
  limit=$ALLOWANCE
  say "ctest: every label, -j $JOBS, ${TEST_TIMEOUT_S} s per test$( ((limit > 0)) && echo ", at most ${limit} s") (log: ctest.log)"
  # coco_bench_validation would run the whole timed benchmark at paper-base shapes: the bench phase
  # does that (coco-bench validates every case before timing it).
  with_limit "$limit" ctest --test-dir "$BUILD_DIR" --output-on-failure -j "$JOBS" --timeout "$TEST_TIMEOUT_S" \
    -E '^coco_bench_validation$' >"$OUT_DIR/ctest.log" 2>&1
  local rc=$?
  grep -E "tests passed|tests failed|Total Test time" "$OUT_DIR/ctest.log" | show
  sed -n '/The following tests FAILED/,$p' "$OUT_DIR/ctest.log" | head -60 | show
  if ((rc == 124 || rc == 137)); then say "FAILED: ctest ran out of time after $((SECONDS - t0)) s"; status[test]="FAILED (time)"; return 1; fi
  if ((rc != 0)); then say "FAILED: ctest exit status $rc after $((SECONDS - t0)) s"; status[test]=FAILED; return 1; fi
  say "tests passed in $((SECONDS - t0)) s"; status[test]=ok
}

bench_phase() {
  needs_gpu bench || return 1
  local limit t0=$SECONDS report
  fits bench || return 1
  limit=$ALLOWANCE
  report="$OUT_DIR/$(date -u +%F)-$GPU_SLUG.json"
  : >"$OUT_DIR/bench.log"
  local parts=() failed=0
  for config in paper-base seed-readme; do
    local part="$BUILD_DIR/coco-bench-$config.json" part_limit=0
    rm -f "$part"
    if ((limit > 0)); then  # paper-base (the larger set) gets two thirds of what is left, seed-readme the rest
      part_limit=$((limit - (SECONDS - t0)))
      [[ "$config" == paper-base ]] && part_limit=$((part_limit * 2 / 3))
    fi
    say "coco-bench --config $config$( ((part_limit > 0)) && echo " (at most ${part_limit} s)")"
    with_limit "$part_limit" "$BUILD_DIR/coco-bench" --config "$config" --out "$part" >"$part.log" 2>&1
    local rc=$?
    cat "$part.log" >>"$OUT_DIR/bench.log"
    grep -E "^device |INVALID|UNSUPPORTED|cases, |^coco-bench:" "$part.log" | head -40 | show
    ((rc == 124 || rc == 137)) && say "coco-bench --config $config ran out of time"
    ((rc == 0)) || failed=1
    [[ -f "$part" ]] && parts+=("$part")
  done
  if ((${#parts[@]})); then
    python3 - "$report" "${parts[@]}" <<'PY' | show
import json, sys
out, parts = sys.argv[1], sys.argv[2:]
reports = [json.load(open(p)) for p in parts]
merged = {k: v for k, v in reports[0].items() if k != "results"}
merged["runs"] = [{"config": r["results"][0]["config"] if r["results"] else None,
                   "copy_bandwidth_gbps": r.get("copy_bandwidth_gbps"),
                   "cublas_bf16_gemm_tflops": r.get("cublas_bf16_gemm_tflops")} for r in reports]
merged["results"] = [row for r in reports for row in r["results"]]
json.dump(merged, open(out, "w"), indent=2)
print(f"gpu_session: bench report {out}: {len(merged['results'])} rows from {', '.join(str(r['config']) for r in merged['runs'])}")
PY
    [[ -f "$report" ]] || failed=1
    say "copy it into the repository as bench/results/$(basename "$report")"
  fi
  if ((failed)); then say "FAILED: coco-bench (see bench.log) after $((SECONDS - t0)) s"; status[bench]=FAILED; return 1; fi
  say "bench done in $((SECONDS - t0)) s"; status[bench]=ok
}

train_phase() {
  needs_gpu train || return 1
  if [[ ! -f "$TRAIN_DATA/meta.json" ]]; then
    say "FAILED: train needs prepared token shards in $TRAIN_DATA (scripts/main.sh makes data/demo here; carry it)"
    status[train]="FAILED (no data)"; return 1
  fi
  local limit t0=$SECONDS run="$BUILD_DIR/gpu-session-train"
  fits train || return 1
  limit=$ALLOWANCE
  rm -rf "$run"
  say "coco train configs/demo.json: cuda, bf16, $TRAIN_STEPS steps$( ((limit > 0)) && echo ", at most ${limit} s") (log: train.log)"
  with_limit "$limit" "$BUILD_DIR/coco" train --config configs/demo.json --out "$run" --set "data.dir=$TRAIN_DATA" \
    --set runtime.device=cuda --set precision=bf16 --set "train.steps=$TRAIN_STEPS" >"$OUT_DIR/train.log" 2>&1
  local rc=$?
  [[ -f "$run/metrics.jsonl" ]] && cp "$run/metrics.jsonl" "$OUT_DIR/train-metrics.jsonl"
  head -12 "$OUT_DIR/train.log" | show
  echo "..." | show
  tail -4 "$OUT_DIR/train.log" | show
  if [[ -f "$run/metrics.jsonl" ]]; then
    python3 - "$run/metrics.jsonl" <<'PY' | show
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
train = [r for r in rows if r.get("split", "train") == "train" and "tokens_per_s" in r]
if train:
    steady = train[1:] or train  # the first logged interval includes start-up
    print(f"gpu_session: train: {len(train)} logged steps up to step {train[-1]['step']}, loss {train[-1]['loss']:.4f}; "
          f"median {statistics.median(r['tokens_per_s'] for r in steady):,.0f} tokens/s "
          f"(max {max(r['tokens_per_s'] for r in steady):,.0f})")
PY
  fi
  if ((rc != 0)); then say "FAILED: coco train exit status $rc after $((SECONDS - t0)) s"; status[train]=FAILED; return 1; fi
  say "train done in $((SECONDS - t0)) s"; status[train]=ok
}

# Without a device only an explicit `build` builds: the other phases fail at once.
if ((${#targets[@]})) && [[ -n "${requested[build]:-}" ]] || ((HAVE_GPU && ${#targets[@]})); then build_phase; fi
for phase in test bench train; do
  [[ -n "${requested[$phase]:-}" ]] && "${phase}_phase"
done

# --- summary; a device call brings back files of at most 16 MiB, so longer logs keep their two ends
for file in "$OUT_DIR"/*; do
  if [[ -f "$file" ]] && (($(stat -c %s "$file") > 15 * 1024 * 1024)); then
    { head -c 7M "$file"; printf '\n[... %s truncated by gpu_session.sh ...]\n' "$(basename "$file")"; tail -c 7M "$file"; } >"$file.cut"
    mv "$file.cut" "$file"
  fi
done
failed=0
next=()
say "summary after $(elapsed) s:"
for phase in "${phases[@]}"; do
  say "  $phase: ${status[$phase]:-not run}"
  [[ "${status[$phase]:-}" == ok ]] || failed=1
  [[ "${status[$phase]:-}" == "skipped (budget)" ]] && next+=("$phase")
done
# A build stopped by the budget resumes where it stopped: the whole request goes to the next call.
[[ "${status[build]:-}" == "stopped (budget)" ]] && next=("${phases[@]}")
((${#next[@]})) && say "next call: bash scripts/gpu_session.sh ${next[*]}"
say "logs in $OUT_DIR: $(find "$OUT_DIR" -maxdepth 1 -type f -printf '%f\n' | sort | paste -sd' ')"
exit "$failed"
