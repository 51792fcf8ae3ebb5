#!/usr/bin/env bash
# Gathers into .gpu-deps/ what a lent GPU machine (CUDA toolkit, CMake, python3, no network, no
# Debian -dev packages) lacks to configure and build cocolm, so that a device call can carry it
# (carry [".gpu-deps"]) and run scripts/gpu_session.sh there. Run it here, on the development machine,
# after scripts/setup.sh. Idempotent: .gpu-deps/ is rebuilt from the system copies on every run (the
# compressed OpenBLAS archive only when its inputs changed). Prints the total size.
#
#   .gpu-deps/include/nlohmann/, share/cmake/nlohmann_json/     nlohmann_json headers + CMake package
#   .gpu-deps/include/{gtest,gmock}/, lib/<arch>/libg{test,mock}*.a, lib/<arch>/cmake/GTest/
#                                                               GoogleTest + GoogleMock (static) + package
#   .gpu-deps/include/openblas/, lib/pkgconfig/openblas.pc      OpenBLAS headers and a relocatable .pc
#   .gpu-deps/openblas-runtime.tar.xz                           libopenblas.so.0 (+ libgfortran.so.5 and
#                                                               libquadmath.so.0 under fallback/); xz
#                                                               because the .so alone is 36 MB;
#                                                               gpu_session.sh unpacks it into
#                                                               .gpu-deps-runtime/lib (never carried)
#   .gpu-deps/bin/pkg-config, lib/pkgconf/                      pkgconf, for a machine without pkg-config
#   .gpu-deps/cudnn-frontend/include/                           cuDNN frontend headers (PyPI
#                                                               nvidia-cudnn-frontend), if installed here
# The CMake packages are located exactly as this project's CMakeLists.txt finds them, by a probe
# configure of a tiny CMake project, so the copies are the ones the build here uses.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
DEPS="$ROOT/.gpu-deps"
STAGE="$ROOT/.gpu-deps.tmp"
MAX_BYTES=$((40 * 1024 * 1024))

die() { echo "gpu_deps: $*" >&2; exit 1; }
for tool in cmake xz tar readelf python3 sha256sum; do
  command -v "$tool" >/dev/null || die "'$tool' is needed (scripts/setup.sh installs the build tools)"
done

# --- where find_package / pkg-config resolve the dependencies on this machine
probe_dir="$(mktemp -d)"
trap 'rm -rf "$probe_dir" "$STAGE"' EXIT
cat >"$probe_dir/CMakeLists.txt" <<'CMAKE'
cmake_minimum_required(VERSION 3.20)
project(gpu_deps_probe LANGUAGES CXX)
find_package(nlohmann_json 3 REQUIRED)
find_package(GTest REQUIRED)
find_package(PkgConfig REQUIRED)
pkg_check_modules(OPENBLAS REQUIRED openblas)
get_target_property(json_include nlohmann_json::nlohmann_json INTERFACE_INCLUDE_DIRECTORIES)
get_target_property(gtest_include GTest::gtest INTERFACE_INCLUDE_DIRECTORIES)
set(lines "nlohmann_json_DIR=${nlohmann_json_DIR}\nnlohmann_json_VERSION=${nlohmann_json_VERSION}\n")
string(APPEND lines "json_include=${json_include}\nGTest_DIR=${GTest_DIR}\ngtest_include=${gtest_include}\n")
foreach(target GTest::gtest GTest::gtest_main GTest::gmock GTest::gmock_main)
  if(NOT TARGET ${target})
    message(FATAL_ERROR "${target} is not defined by ${GTest_DIR}")
  endif()
  get_target_property(location ${target} LOCATION)
  string(APPEND lines "library=${location}\n")
endforeach()
string(APPEND lines "openblas_version=${OPENBLAS_VERSION}\nopenblas_include=${OPENBLAS_INCLUDE_DIRS}\n")
string(APPEND lines "openblas_libraries=${OPENBLAS_LINK_LIBRARIES}\npkg_config=${PKG_CONFIG_EXECUTABLE}\n")
file(WRITE "${CMAKE_BINARY_DIR}/resolved.txt" "${lines}")
CMAKE
if ! cmake -S "$probe_dir" -B "$probe_dir/build" >"$probe_dir/configure.log" 2>&1; then
  cat "$probe_dir/configure.log" >&2
  die "the probe configure failed: nlohmann_json, GTest or openblas is missing here (run scripts/setup.sh)"
fi
resolved() { sed -n "s/^$1=//p" "$probe_dir/build/resolved.txt"; }
single() {  # the one directory of a CMake list, or an error naming it
  local value="$1" what="$2"
  [[ "$value" != *";"* && -d "$value" ]] || die "expected one existing directory for $what, got '$value'"
  echo "$value"
}

rm -rf "$STAGE"
mkdir -p "$STAGE"

# A CMake package keeps its own depth below the install prefix: its *Targets.cmake climbs that many
# directories from itself to find include/ and lib/, so each copy sits at the same relative path.
copy_package_dir() {  # copy_package_dir PREFIX PACKAGE_DIR
  local prefix="$1" dir="$2"
  [[ "$dir" == "$prefix"/* ]] || die "package directory $dir is not below its prefix $prefix"
  local relative="${dir#"$prefix"/}"
  mkdir -p "$STAGE/$relative"
  cp -p "$dir"/*.cmake "$STAGE/$relative/"
}

# nlohmann_json: the include directory holds nlohmann/ among every other header of the system.
json_include="$(single "$(resolved json_include | tr ';' '\n' | sort -u | paste -sd';')" "nlohmann_json's include directory")"
[[ -f "$json_include/nlohmann/json.hpp" ]] || die "no nlohmann/json.hpp under $json_include"
mkdir -p "$STAGE/include"
cp -rp "$json_include/nlohmann" "$STAGE/include/"
copy_package_dir "$(dirname "$json_include")" "$(resolved nlohmann_json_DIR)"

# GoogleTest and GoogleMock: headers, the four static libraries, the package files.
gtest_include="$(single "$(resolved gtest_include)" "GTest's include directory")"
gtest_prefix="$(dirname "$gtest_include")"
cp -rp "$gtest_include/gtest" "$gtest_include/gmock" "$STAGE/include/"
copy_package_dir "$gtest_prefix" "$(resolved GTest_DIR)"
while read -r library; do
  [[ -f "$library" && "$library" == "$gtest_prefix"/* ]] || die "GTest library '$library' is missing or outside $gtest_prefix"
  relative="${library#"$gtest_prefix"/}"
  mkdir -p "$STAGE/$(dirname "$relative")"
  cp -p "$library" "$STAGE/$relative"
done < <(resolved library)

# OpenBLAS: headers and a .pc found relative to itself (${pcfiledir}); the library and the runtime
# libraries it needs beyond glibc and libgcc_s go into the compressed archive.
openblas_include="$(single "$(resolved openblas_include)" "openblas's include directory")"
openblas_so="$(resolved openblas_libraries | tr ';' '\n' | grep -m1 'libopenblas[^/]*\.so' || true)"
[[ -n "$openblas_so" && -f "$openblas_so" ]] || die "pkg-config's openblas libraries name no libopenblas*.so: '$(resolved openblas_libraries)'"
openblas_real="$(readlink -f "$openblas_so")"
soname="$(readelf -d "$openblas_real" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')"
[[ -n "$soname" ]] || die "$openblas_real has no SONAME"
mkdir -p "$STAGE/include/openblas" "$STAGE/lib/pkgconfig"
cp -p "$openblas_include"/*.h "$STAGE/include/openblas/"
openblas_version="$(resolved openblas_version)"
cat >"$STAGE/lib/pkgconfig/openblas.pc" <<PC
# Written by scripts/gpu_deps.sh from the system's openblas.pc (OpenBLAS $openblas_version). Relocatable:
# headers in .gpu-deps/include/openblas, the library in .gpu-deps-runtime/lib, where
# scripts/gpu_session.sh unpacks .gpu-deps/openblas-runtime.tar.xz.
prefix=\${pcfiledir}/../..
includedir=\${prefix}/include/openblas
libdir=\${prefix}/../.gpu-deps-runtime/lib
version=$openblas_version

Name: openblas
Description: OpenBLAS (copied for a lent GPU machine by scripts/gpu_deps.sh)
Version: \${version}
Libs: -L\${libdir} -lopenblas
Libs.private: -lm -lpthread -lgfortran
Cflags: -I\${includedir}
PC

runtime_stage="$probe_dir/runtime"
mkdir -p "$runtime_stage/lib/fallback"
cp -p "$openblas_real" "$runtime_stage/lib/$soname"
ln -s "$soname" "$runtime_stage/lib/libopenblas.so"
# ldd lists the whole closure; glibc and libgcc_s are on every Linux machine, the Fortran runtime is not.
while read -r dependency; do
  base="$(basename "$dependency")"
  case "$base" in
    libc.so.* | libm.so.* | libpthread.so.* | libdl.so.* | librt.so.* | ld-linux* | libgcc_s.so.*) continue ;;
  esac
  cp -p "$(readlink -f "$dependency")" "$runtime_stage/lib/fallback/$base"
done < <(ldd "$openblas_real" | awk '$2 == "=>" && $3 ~ /^\// {print $3}')
inputs="$(cd "$runtime_stage" && find . \( -type f -o -type l \) | sort | xargs sha256sum)"
archive="$DEPS/openblas-runtime.tar.xz"
if [[ -f "$archive" && -f "$DEPS/openblas-runtime.inputs" ]] && [[ "$(cat "$DEPS/openblas-runtime.inputs")" == "$inputs" ]]; then
  cp -p "$archive" "$DEPS/openblas-runtime.inputs" "$STAGE/"
  echo "gpu_deps: OpenBLAS runtime archive up to date"
else
  echo "gpu_deps: compressing OpenBLAS $openblas_version ($soname, $(find "$runtime_stage/lib/fallback" -type f -printf '%f\n' | sort | paste -sd' ')) with xz"
  tar -C "$runtime_stage" --owner=0 --group=0 --sort=name -cf - lib | xz -9 -T2 >"$STAGE/openblas-runtime.tar.xz"
  printf '%s\n' "$inputs" >"$STAGE/openblas-runtime.inputs"
fi

# pkgconf, wrapped so that it finds its own library: CMake's FindPkgConfig needs an executable.
pkg_config="$(readlink -f "$(resolved pkg_config)")"
mkdir -p "$STAGE/bin" "$STAGE/lib/pkgconf"
cp -p "$pkg_config" "$STAGE/lib/pkgconf/pkgconf"
while read -r dependency; do
  case "$(basename "$dependency")" in libpkgconf.so.*) cp -p "$(readlink -f "$dependency")" "$STAGE/lib/pkgconf/$(basename "$dependency")" ;; esac
done < <(ldd "$pkg_config" | awk '$2 == "=>" && $3 ~ /^\// {print $3}')
cat >"$STAGE/bin/pkg-config" <<'SH'
#!/bin/sh
# pkgconf copied by scripts/gpu_deps.sh, for a machine without pkg-config.
here="$(cd "$(dirname "$0")/../lib/pkgconf" && pwd)"
LD_LIBRARY_PATH="$here${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "$here/pkgconf" "$@"
SH
chmod +x "$STAGE/bin/pkg-config"

# cuDNN frontend headers (header-only), as CMakeLists.txt locates them: the PyPI distribution's include/.
frontend_files="$(python3 - <<'PY' 2>/dev/null || true
import importlib.metadata as m
d = m.distribution("nvidia-cudnn-frontend")
print("version", d.version)
for f in d.files or []:
    if str(f).startswith("include/"):
        print(f, d.locate_file(f), sep="\t")
PY
)"
if [[ -n "$frontend_files" ]]; then
  frontend_version="$(sed -n 's/^version //p' <<<"$frontend_files")"
  while IFS=$'\t' read -r relative absolute; do
    [[ -n "$absolute" ]] || continue
    mkdir -p "$STAGE/cudnn-frontend/$(dirname "$relative")"
    cp -p "$absolute" "$STAGE/cudnn-frontend/$relative"
  done < <(grep -v '^version ' <<<"$frontend_files")
  [[ -f "$STAGE/cudnn-frontend/include/cudnn_frontend.h" ]] || die "nvidia-cudnn-frontend $frontend_version has no include/cudnn_frontend.h"
  echo "gpu_deps: cuDNN frontend $frontend_version headers copied"
else
  echo "gpu_deps: warning: PyPI nvidia-cudnn-frontend is not installed here (scripts/setup.sh installs it);" \
    "the GPU build will leave coco-bench's cuDNN attention baseline out" >&2
fi

cat >"$STAGE/README.txt" <<TXT
Written by scripts/gpu_deps.sh on $(date -u +%F) from this machine's packages: nlohmann_json $(resolved nlohmann_json_VERSION),
GoogleTest $(sed -n 's/.*PACKAGE_VERSION "\(.*\)".*/\1/p' "$(resolved GTest_DIR)/GTestConfigVersion.cmake" | head -1), OpenBLAS $openblas_version${frontend_version:+, cuDNN frontend $frontend_version}.
Carried to a lent GPU machine (device call with carry [".gpu-deps"]) and used by scripts/gpu_session.sh.
TXT

rm -rf "$DEPS"
mv "$STAGE" "$DEPS"

bytes="$(du -sb "$DEPS" | cut -f1)"
# Tracked and untracked-but-not-ignored files: what a device call copies besides the carried paths.
tree_bytes="$(git ls-files -co --exclude-standard -z | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1 || true)"
[[ "$tree_bytes" =~ ^[0-9]+$ ]] || tree_bytes=0
data_bytes=0
[[ -d data/demo ]] && data_bytes="$(du -sb data/demo | cut -f1)"
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
echo "gpu_deps: .gpu-deps is $(mib "$bytes") (limit $(mib "$MAX_BYTES")); working tree $(mib "$tree_bytes")," \
  "data/demo $(mib "$data_bytes"): $(mib $((bytes + tree_bytes + data_bytes))) of the 64 MiB a device call carries"
((bytes <= MAX_BYTES)) || die ".gpu-deps is larger than $(mib "$MAX_BYTES")"
