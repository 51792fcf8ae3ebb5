#!/usr/bin/env bash
# Compile-only check of every .cu file with nvcc for sm_80 and sm_90, on machines with or without a
# GPU. For kernels/*.cu it also reads ptxas's resource report (-Xptxas -v) and prints a table of
# registers, shared memory and spills per kernel; any spill store/load at sm_90 fails the check.
# Usage: scripts/cu_check.sh [output-dir]   (default build-nvcc/)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-build-nvcc}"
NVCC="${CUDAToolkit_ROOT:-/usr/local/cuda}/bin/nvcc"
mkdir -p "$OUT"
mapfile -t sources < <(git ls-files -co --exclude-standard -- '*.cu' | sort)
if ((${#sources[@]} == 0)); then echo "cu_check: no .cu files" >&2; exit 1; fi
export NVCC OUT
compile() {
  local src="$1" arch="$2"
  local tag; tag="$(echo "$src" | tr '/.' '__')_$arch"
  if "$NVCC" -std=c++20 -arch="$arch" -I. -Xptxas -v --expt-relaxed-constexpr -Xcompiler -Wall,-Wextra \
      -c "$src" -o "$OUT/$tag.o" >"$OUT/$tag.log" 2>&1; then
    echo "ok   $arch $src"
  else
    echo "FAIL $arch $src"; cat "$OUT/$tag.log"; return 1
  fi
}
export -f compile
status=0
printf '%s\n' "${sources[@]}" | sed 's/$/ sm_80/' > "$OUT/jobs"
printf '%s\n' "${sources[@]}" | sed 's/$/ sm_90/' >> "$OUT/jobs"
xargs -P "$(nproc)" -L 1 bash -c 'compile "$0" "$1"' < "$OUT/jobs" || status=1

# coco-bench's cuDNN attention baseline is a host .cpp that only gpu builds with the cuDNN frontend
# compile; compile it here (host compiler, CUDA and frontend include paths) so CI, which has no GPU,
# still proves it builds. Skipped, with a note, when the frontend headers or cudnn.h are missing.
CUDA_INCLUDE="${CUDAToolkit_ROOT:-/usr/local/cuda}/include"
find_frontend="import importlib.metadata as m; print(m.distribution('nvidia-cudnn-frontend').locate_file('include'))"
FRONTEND_INCLUDE="${COCO_CUDNN_FRONTEND_INCLUDE:-$(python3 -c "$find_frontend" 2>/dev/null || true)}"
if [[ -f "$FRONTEND_INCLUDE/cudnn_frontend.h" && -f "$CUDA_INCLUDE/cudnn.h" ]]; then
  if "${CXX:-g++}" -std=c++20 -Wall -Wextra -I. -I"$CUDA_INCLUDE" -isystem "$FRONTEND_INCLUDE" \
      -DCOCO_CUDA_GPU=1 -DCOCO_HAVE_CUDNN_FRONTEND=1 -c bench/cudnn_attention.cpp \
      -o "$OUT/bench_cudnn_attention.o" >"$OUT/bench_cudnn_attention.log" 2>&1; then
    echo "ok   host bench/cudnn_attention.cpp (cuDNN frontend $FRONTEND_INCLUDE)"
    cat "$OUT/bench_cudnn_attention.log"
  else
    echo "FAIL host bench/cudnn_attention.cpp"; cat "$OUT/bench_cudnn_attention.log"; status=1
  fi
else
  echo "skip host bench/cudnn_attention.cpp: cuDNN frontend headers (pip install nvidia-cudnn-frontend, or set" \
       "COCO_CUDNN_FRONTEND_INCLUDE) or $CUDA_INCLUDE/cudnn.h not found"
fi

# Resource table for the project's kernels at sm_90.
python3 - "$OUT" <<'PY' || status=1
import glob, re, subprocess, sys
out = sys.argv[1]
rows, spills = [], []
for log in sorted(glob.glob(f"{out}/kernels_*_sm_90.log")):
    source = log.split("/")[-1].replace("_sm_90.log", "").replace("kernels_", "kernels/", 1)
    kernel = None
    for line in open(log, errors="replace"):
        m = re.search(r"Compiling entry function '([^']+)' for 'sm_90'", line)
        if m: kernel = m.group(1); continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m and kernel: stack, st, ld = map(int, m.groups()); rows.append([kernel, stack, st, ld, None, None]); continue
        m = re.search(r"Used (\d+) registers(?:, used \d+ barriers)?(?:, (\d+) bytes smem)?", line)
        if m and kernel and rows and rows[-1][0] == kernel:
            rows[-1][4] = int(m.group(1)); rows[-1][5] = int(m.group(2) or 0)
names = subprocess.run(["c++filt"], input="\n".join(r[0] for r in rows), capture_output=True, text=True).stdout.split("\n")
print(f"\n{'kernel (sm_90)':<90} {'regs':>5} {'smem':>7} {'stack':>6} {'spill st':>9} {'spill ld':>9}")
for r, name in zip(rows, names):
    name = name if len(name) <= 88 else name[:85] + "..."
    print(f"{name:<90} {r[4] or 0:>5} {r[5] or 0:>7} {r[1]:>6} {r[2]:>9} {r[3]:>9}")
    if r[2] or r[3]: spills.append(name)
print(f"{len(rows)} kernels, {len(spills)} with spills")
if spills:
    print("cu_check: spills in: " + ", ".join(spills)); sys.exit(1)
PY
exit $status
