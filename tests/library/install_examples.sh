#!/usr/bin/env bash
# The `library` test: installs the build into a temporary prefix, checks the package's layout, trains a tiny
# checkpoint with the installed `coco`, encodes with `coco encode`, then configures examples/ as a user would
# (find_package(cocolm) against the prefix, nothing of the source tree on the include path), builds every example
# plus one source that includes every installed header, and runs the examples, which assert on their results.
#   install_examples.sh BUILD_DIR WORK_DIR
set -euo pipefail
build="$(cd "$1" && pwd)"
work="$2"
src="$(cd "$(dirname "$0")/../.." && pwd)"
rm -rf "$work"
mkdir -p "$work"
prefix="$work/prefix"
fail() { echo "FAILED: $*" >&2; exit 1; }

echo "== cmake --install $build --prefix $prefix"
cmake --install "$build" --prefix "$prefix" >"$work/install.log"
for f in include/cocolm/cocolm.h include/cocolm/coco/encode.h include/cocolm/engine/tensor.h \
         lib/cmake/cocolm/cocolmConfig.cmake lib/cmake/cocolm/cocolmConfigVersion.cmake \
         lib/cmake/cocolm/cocolmTargets.cmake bin/coco; do
  [[ -e "$prefix/$f" ]] || fail "$f is not installed"
done
[[ ! -e "$prefix/include/cocolm/engine/simt" ]] || fail "the emulator's headers are installed"
[[ ! -e "$prefix/include/cocolm/engine/runtime/launch.cuh" ]] || fail "the launch helper is installed"
# coco/encode.h is the part of the API that must not pull in the engine: standard headers only.
if grep -n '#include "' "$prefix/include/cocolm/coco/encode.h"; then fail "coco/encode.h includes project headers"; fi
echo "installed $(find "$prefix" -type f | wc -l) files"

echo "== a tiny checkpoint with the installed coco"
coco="$prefix/bin/coco"
english="$src/tests/data/english"
"$coco" prepare --vocab-size 300 --valid-fraction 0.3 --doc-boundary line --threads 1 --out "$work/data" \
  "$english/alice.txt" "$english/pride.txt" >"$work/prepare.log"
"$coco" train --config "$src/examples/tiny.json" --out "$work/run" --set "data.dir=$work/data" >"$work/train.log"
[[ -f "$work/run/checkpoints/latest" ]] || fail "coco train wrote no checkpoint (see $work/train.log)"

echo "== coco encode"
printf 'Alice was beginning to get very tired.\nThe rabbit ran away.\nAlice was beginning to get very tired.\n' \
  >"$work/lines.txt"
"$coco" encode --checkpoint "$work/run" --pool mean --out "$work/vectors.jsonl" "$work/lines.txt"
python3 - "$work/vectors.jsonl" <<'PY'
import json, math, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
assert [r["line"] for r in rows] == [1, 2, 3], rows
assert all(r["pool"] == "mean" and len(r["vector"]) == 32 and all(math.isfinite(v) for v in r["vector"]) for r in rows)
assert max(abs(a - b) for a, b in zip(rows[0]["vector"], rows[2]["vector"])) < 1e-5, "same line, other vector"
assert max(abs(a - b) for a, b in zip(rows[0]["vector"], rows[1]["vector"])) > 1e-3, "different lines, same vector"
print("coco encode: %d lines, %d-dim vectors" % (len(rows), len(rows[0]["vector"])))
PY

echo "== examples against the installed package"
compiler="$(sed -n 's/^CMAKE_CXX_COMPILER:[A-Z]*=//p' "$build/CMakeCache.txt")"
launcher=()
if command -v ccache >/dev/null; then launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
cmake -S "$src/examples" -B "$work/examples" -DCMAKE_PREFIX_PATH="$prefix" -DCOCOLM_CHECK_HEADERS=ON \
  -DCMAKE_BUILD_TYPE=Release ${compiler:+-DCMAKE_CXX_COMPILER="$compiler"} "${launcher[@]}" >"$work/examples-configure.log" ||
  { cat "$work/examples-configure.log"; fail "configuring examples/"; }
grep "cocolm examples" "$work/examples-configure.log" || true
cmake --build "$work/examples" -j "${JOBS:-2}" >"$work/examples-build.log" 2>&1 ||
  { tail -50 "$work/examples-build.log"; fail "building examples/"; }
if grep -q "warning:" "$work/examples-build.log"; then grep -B2 -A6 "warning:" "$work/examples-build.log"; fail "warnings"; fi
# The examples see the installed headers only: no include directory of the source or build tree.
for dir in $(grep -rh "^CXX_INCLUDES" "$work/examples" --include=flags.make | tr ' ' '\n' | grep '^/' | sort -u); do
  case "$dir" in
    "$prefix"/*) ;;
    "$src"/* | "$build"/*) fail "the examples' include path reaches into the source or build tree: $dir" ;;
  esac
done

echo "== examples/encode_sentences"
"$work/examples/encode_sentences/encode_sentences" "$work/run" | tee "$work/encode_sentences.log"
grep -qx OK "$work/encode_sentences.log" || fail "encode_sentences did not end with OK"
echo "== examples/train_steps"
"$work/examples/train_steps/train_steps" "$src/examples/tiny.json" "$work/data" "$work/train_steps_run" |
  tee "$work/train_steps.log"
grep -qx OK "$work/train_steps.log" || fail "train_steps did not end with OK"
echo "== examples/custom_model"
"$work/examples/custom_model/custom_model" | tee "$work/custom_model.log"
echo "library_install_examples: OK"
