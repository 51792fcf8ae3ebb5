#!/usr/bin/env bash
# Compile-only check of every .cu file with nvcc for sm_80 and sm_90, on machines with or without a
# GPU. For kernels/*.cu it also prints static GPU figures per kernel at sm_90: registers, static
# shared memory and spills (ptxas -v), the block size from __launch_bounds__ and the theoretical
# occupancy it allows, and from the SASS (cuobjdump -sass, PyPI nvidia-cuda-cuobjdump, installed by
# scripts/setup.sh) the global loads by width (128-bit LDG/LD.E.128 vs narrower) and the tensor-core
# instructions (HMMA/HGMMA/IMMA/DMMA...). Any spill store/load at sm_90 fails the check.
# Usage: scripts/cu_check.sh [output-dir]   (default build-nvcc/)
# CU_CHECK_ARCHS="sm_90" limits the architectures (default "sm_80 sm_90").
# CU_CHECK_SOURCES="kernels/*.cu" limits the sources (a git pathspec; default every tracked or new .cu)
# and skips the host compilation of bench/cudnn_attention.cpp.
# CU_CHECK_TABLE=FILE also writes the kernel table as Markdown to FILE (bench/README.md's table).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-build-nvcc}"
NVCC="${CUDAToolkit_ROOT:-/usr/local/cuda}/bin/nvcc"
mkdir -p "$OUT"
mapfile -t sources < <(git ls-files -co --exclude-standard -- "${CU_CHECK_SOURCES:-*.cu}" | sort)
if ((${#sources[@]} == 0)); then echo "cu_check: no .cu files" >&2; exit 1; fi
archs=(${CU_CHECK_ARCHS:-sm_80 sm_90})
# One nvcc run per source builds every architecture (what -arch=sm_XX gives: SASS plus PTX for each), so
# the host-side compilation, which dominates for the test sources, happens once per file, not per arch.
gencode=()
for arch in "${archs[@]}"; do gencode+=("-gencode=arch=compute_${arch#sm_},code=[$arch,compute_${arch#sm_}]"); done
export NVCC OUT GENCODE="${gencode[*]}" ARCH_NAMES="${archs[*]}"
compile() {
  local src="$1"
  local tag; tag="$(echo "$src" | tr '/.' '__')"
  # shellcheck disable=SC2086  # GENCODE is a list of flags
  if "$NVCC" -std=c++20 $GENCODE -I. -Xptxas -v --expt-relaxed-constexpr -Xcompiler -Wall,-Wextra \
      -c "$src" -o "$OUT/$tag.o" >"$OUT/$tag.log" 2>&1; then
    echo "ok   $ARCH_NAMES $src"
  else
    echo "FAIL $ARCH_NAMES $src"; cat "$OUT/$tag.log"; return 1
  fi
}
# coco-bench's cuDNN attention baseline is a host .cpp that only gpu builds with the cuDNN frontend
# compile; compile it here (host compiler, CUDA and frontend include paths) so CI, which has no GPU,
# still proves it builds. It is the longest single compilation, so it runs as one more job beside the
# nvcc ones. Skipped, with a note, when the frontend headers or cudnn.h are missing.
CUDA_INCLUDE="${CUDAToolkit_ROOT:-/usr/local/cuda}/include"
find_frontend="import importlib.metadata as m; print(m.distribution('nvidia-cudnn-frontend').locate_file('include'))"
FRONTEND_INCLUDE="${COCO_CUDNN_FRONTEND_INCLUDE:-$(python3 -c "$find_frontend" 2>/dev/null || true)}"
export CUDA_INCLUDE FRONTEND_INCLUDE
compile_host() {
  if "${CXX:-g++}" -std=c++20 -Wall -Wextra -I. -I"$CUDA_INCLUDE" -isystem "$FRONTEND_INCLUDE" \
      -DCOCO_CUDA_GPU=1 -DCOCO_HAVE_CUDNN_FRONTEND=1 -c bench/cudnn_attention.cpp \
      -o "$OUT/bench_cudnn_attention.o" >"$OUT/bench_cudnn_attention.log" 2>&1; then
    echo "ok   host bench/cudnn_attention.cpp (cuDNN frontend $FRONTEND_INCLUDE)"
    cat "$OUT/bench_cudnn_attention.log"
  else
    echo "FAIL host bench/cudnn_attention.cpp"; cat "$OUT/bench_cudnn_attention.log"; return 1
  fi
}
export -f compile compile_host
status=0
: > "$OUT/jobs"
if [[ -n "${CU_CHECK_SOURCES:-}" ]]; then
  echo "skip host bench/cudnn_attention.cpp: CU_CHECK_SOURCES limits the check to $CU_CHECK_SOURCES"
else
  if [[ -f "$FRONTEND_INCLUDE/cudnn_frontend.h" && -f "$CUDA_INCLUDE/cudnn.h" ]]; then
    echo "compile_host" >> "$OUT/jobs"  # first: the longest job starts at once
  else
    echo "skip host bench/cudnn_attention.cpp: cuDNN frontend headers (pip install nvidia-cudnn-frontend, or set" \
         "COCO_CUDNN_FRONTEND_INCLUDE) or $CUDA_INCLUDE/cudnn.h not found"
  fi
fi
printf 'compile %s\n' "${sources[@]}" >> "$OUT/jobs"
xargs -P "$(nproc)" -L 1 bash -c '"$0" "$@"' < "$OUT/jobs" || status=1

# Static figures for the project's kernels at sm_90.
CUOBJDUMP="${CUOBJDUMP:-$(command -v cuobjdump || python3 -c "import importlib.metadata as m; print(m.distribution('nvidia-cuda-cuobjdump').locate_file('nvidia/cu13/bin/cuobjdump'))" 2>/dev/null || true)}"
export CUOBJDUMP
python3 - "$OUT" "${CU_CHECK_TABLE:-}" <<'PY' || status=1
import glob, os, re, subprocess, sys
out, table_file = sys.argv[1], sys.argv[2]
cuobjdump = os.environ.get("CUOBJDUMP", "")
if not (cuobjdump and os.access(cuobjdump, os.X_OK)):
    cuobjdump = ""
    print("cu_check: cuobjdump not found (pip install nvidia-cuda-cuobjdump, or set CUOBJDUMP): no SASS columns")

# sm_90 limits (CUDA occupancy calculator, compute capability 9.0).
REGS_PER_SM, REG_UNIT, MAX_WARPS, MAX_BLOCKS = 65536, 256, 64, 32
SMEM_PER_SM, SMEM_UNIT, SMEM_RESERVED = 233472, 128, 1024
TENSOR_OPS = ("HMMA", "HGMMA", "IMMA", "IGMMA", "DMMA", "QMMA", "QGMMA", "BMMA", "UTCMMA", "UTCHMMA")

def ceil_to(x, unit):
    return (x + unit - 1) // unit * unit

def occupancy(regs, smem, threads):
    """Resident warps / 64 for a block of `threads` (static shared memory only)."""
    warps = (threads + 31) // 32
    by_warps = MAX_WARPS // warps
    regs_per_warp = ceil_to(max(regs, 1) * 32, REG_UNIT)
    by_regs = (REGS_PER_SM // regs_per_warp // 4 * 4) // warps  # warps are allocated per sub-partition
    by_smem = SMEM_PER_SM // ceil_to(smem + SMEM_RESERVED, SMEM_UNIT)
    blocks = min(MAX_BLOCKS, by_warps, by_regs, by_smem)
    limit = min((MAX_BLOCKS, "blocks"), (by_warps, "threads"), (by_regs, "registers"), (by_smem, "smem"))[1]
    return blocks * warps / MAX_WARPS, limit

def sass_figures(obj):
    """Per mangled kernel: (128-bit global loads, narrower global loads, tensor-core instruction names)."""
    figures, kernel = {}, None
    text = subprocess.run([cuobjdump, "-sass", "-arch", "sm_90", obj], capture_output=True, text=True).stdout
    for line in text.splitlines():
        m = re.search(r"Function : (\S+)", line)
        if m:
            kernel = m.group(1); figures[kernel] = [0, 0, set()]; continue
        if kernel is None: continue
        # Global loads: LDG, and generic LD (pointers the compiler cannot prove global, e.g. read from
        # a descriptor array, are loaded through the generic address space).
        m = re.search(r"\b(?:LDG|LD)\.E(\S*)", line)
        if m:
            figures[kernel][0 if ".128" in m.group(1) else 1] += 1
        for op in TENSOR_OPS:
            if re.search(r"\b" + op + r"\b", line): figures[kernel][2].add(op)
    return figures

def launch_bounds(obj):
    """Per mangled kernel: the block size from __launch_bounds__ (EIATTR_MAX_THREADS)."""
    bounds, kernel, pending = {}, None, False
    text = subprocess.run([cuobjdump, "-elf", "-arch", "sm_90", obj], capture_output=True, text=True).stdout
    for line in text.splitlines():
        m = re.match(r"\.nv\.info\.(\S+)", line.strip())
        if m: kernel = m.group(1); continue
        if "EIATTR_MAX_THREADS" in line: pending = True; continue
        m = re.search(r"Value:\s+(0x[0-9a-f]+) (0x[0-9a-f]+) (0x[0-9a-f]+)", line)
        if pending and m and kernel:
            x, y, z = (int(v, 16) for v in m.groups()); bounds[kernel] = x * y * z; pending = False
    return bounds

rows, spills = [], []
for log in sorted(glob.glob(f"{out}/kernels_*_cu.log")):
    obj = log[:-4] + ".o"
    source = os.path.basename(log)[:-len("_cu.log")].replace("kernels_", "kernels/", 1) + ".cu"
    sass = sass_figures(obj) if cuobjdump and os.path.exists(obj) else {}
    bounds = launch_bounds(obj) if cuobjdump and os.path.exists(obj) else {}
    kernel = None
    for line in open(log, errors="replace"):
        # The log holds every architecture's ptxas report: only sm_90's entries count here.
        m = re.search(r"Compiling entry function '([^']+)' for '(sm_\d+)'", line)
        if m: kernel = m.group(1) if m.group(2) == "sm_90" else None; continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m and kernel:
            stack, st, ld = map(int, m.groups())
            rows.append(dict(mangled=kernel, source=source, stack=stack, spill_st=st, spill_ld=ld, regs=0, smem=0,
                             block=bounds.get(kernel), sass=sass.get(kernel)))
            continue
        m = re.search(r"Used (\d+) registers(?:, used \d+ barriers)?(?:, (\d+) bytes smem)?", line)
        if m and kernel and rows and rows[-1]["mangled"] == kernel:
            rows[-1]["regs"] = int(m.group(1)); rows[-1]["smem"] = int(m.group(2) or 0)
names = subprocess.run(["c++filt"], input="\n".join(r["mangled"] for r in rows), capture_output=True, text=True).stdout.split("\n")

def base_name(demangled):
    """The kernel without return type, parameters, template arguments and namespaces."""
    name = demangled.strip()
    if name.endswith(")"):  # drop the parameter list: walk back to its opening parenthesis
        depth = 0
        for i in range(len(name) - 1, -1, -1):
            depth += {")": 1, "(": -1}.get(name[i], 0)
            if depth == 0: name = name[:i]; break
    while name.endswith(">"):  # drop template arguments
        depth = 0
        for i in range(len(name) - 1, -1, -1):
            depth += {">": 1, "<": -1}.get(name[i], 0)
            if depth == 0: name = name[:i]; break
    name = name.split(" ")[-1]
    return name.split("::")[-1]

# One row per kernel (all template instantiations together).
groups = {}
for r, name in zip(rows, names):
    if r["spill_st"] or r["spill_ld"]: spills.append(name)
    g = groups.setdefault((r["source"], base_name(name)), dict(n=0, regs=[], smem=0, spill=0, blocks=set(), occ=[],
                                                             ldg128=0, ldg=0, tensor=set(), sass=True))
    g["n"] += 1
    g["regs"].append(r["regs"])
    g["smem"] = max(g["smem"], r["smem"])
    g["spill"] += r["spill_st"] + r["spill_ld"]
    if r["block"]:
        g["blocks"].add(r["block"])
        g["occ"].append(occupancy(r["regs"], r["smem"], r["block"]))
    if r["sass"]:
        g["ldg128"] += r["sass"][0]; g["ldg"] += r["sass"][0] + r["sass"][1]; g["tensor"] |= r["sass"][2]
    else:
        g["sass"] = False

def span(values, fmt=str):
    lo, hi = min(values), max(values)
    return fmt(lo) if lo == hi else f"{fmt(lo)}-{fmt(hi)}"

table = []
for (source, kernel), g in sorted(groups.items()):
    occ = "-"
    if g["occ"]:
        fractions = [o for o, _ in g["occ"]]
        limits = sorted({l for _, l in g["occ"]})
        occ = f"{span(fractions, lambda x: f'{x:.0%}')} ({', '.join(limits)})"
    table.append(dict(kernel=kernel, source=source, n=g["n"], regs=span(g["regs"]), smem=g["smem"], spill=g["spill"],
                      block=",".join(map(str, sorted(g["blocks"]))) or "-", occupancy=occ,
                      ldg=f"{g['ldg128']}/{g['ldg']}" if g["sass"] else "?",
                      tensor=(",".join(sorted(g["tensor"])) or "-") if g["sass"] else "?"))

print(f"\n{'kernel (sm_90)':<34} {'source':<26} {'inst':>4} {'regs':>7} {'smem':>6} {'spill':>5} {'block':>5} "
      f"{'occupancy':>22} {'ld.128/all':>11} tensor")
for r in table:
    print(f"{r['kernel']:<34} {r['source']:<26} {r['n']:>4} {r['regs']:>7} {r['smem']:>6} {r['spill']:>5} "
          f"{r['block']:>5} {r['occupancy']:>22} {r['ldg']:>11} {r['tensor']}")
print(f"{len(table)} kernels ({len(rows)} instantiations), {len(spills)} instantiations with spills, "
      f"{sum(1 for r in table if r['tensor'] not in ('-', '?'))} kernels with tensor-core instructions, "
      f"{sum(1 for r in table if r['block'] != '-')} with __launch_bounds__, "
      f"{sum(1 for r in table if r['ldg'] != '?' and not r['ldg'].startswith('0/'))} with 128-bit global loads")
if table_file:
    with open(table_file, "w") as f:
        f.write("| kernel | source | inst. | regs | static smem (B) | spill (B) | block | occupancy (limit) "
                "| 128-bit / all global loads | tensor-core |\n")
        f.write("|---|---|---:|---:|---:|---:|---:|---|---:|---|\n")
        for r in table:
            f.write(f"| `{r['kernel']}` | {r['source']} | {r['n']} | {r['regs']} | {r['smem']} | {r['spill']} | "
                    f"{r['block']} | {r['occupancy']} | {r['ldg']} | {r['tensor']} |\n")
if spills:
    print("cu_check: spills in: " + ", ".join(spills)); sys.exit(1)
PY
exit $status
