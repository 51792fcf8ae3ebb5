#!/usr/bin/env bash
# Builds the libFuzzer target tests/fuzz/fuzz_json_readers.cpp (the checked JSON parser and the safetensors
# reader, fed untrusted bytes) with clang++ -fsanitize=fuzzer,address,undefined and runs it for a bounded
# time from the committed seed corpus tests/fuzz/corpus/. Exits non-zero on any crash, sanitizer report,
# leak or timeout. Usage: scripts/fuzz.sh [seconds] [build-dir]   (default 30 s, build-fuzz)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
build=${2:-build-fuzz}
mkdir -p "$build"
binary="$build/fuzz_json_readers"
clang++ -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -I. \
  tests/fuzz/fuzz_json_readers.cpp engine/io/checked_read.cpp engine/io/safetensors.cpp engine/config.cpp \
  engine/runtime/dtype.cpp -o "$binary"
# New inputs go to a scratch corpus (the first directory), never into the committed seeds.
work_corpus="$build/fuzz-corpus"
mkdir -p "$work_corpus"
artifacts="$build/fuzz-artifacts/"
mkdir -p "$artifacts"
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 "$binary" -max_total_time="$seconds" -max_len=4096 -timeout=10 \
  -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$artifacts" "$work_corpus" tests/fuzz/corpus
