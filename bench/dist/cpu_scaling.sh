#!/usr/bin/env bash
# CPU scaling of `coco train` with the demo config (configs/demo.json, cpu backend): tokens/s of
#   1 rank with 1 thread, 1 rank with 2 threads, and 2 ranks of 1 thread (mpirun, data parallel over MPI);
#   the same global batch of 16 rows per step everywhere: micro_batch 16 on one rank, 8 on each of two,
# each the median of the logged steps after the first WARMUP steps, alternating the configurations ROUNDS times so
# a noisy neighbour hits all alike. Prints one line per run and a table; the header names the CPU (lscpu).
#   bench/dist/cpu_scaling.sh [BUILD_DIR] > bench/results/DATE-dist-cpu-scaling-CPU.txt
# DATA_DIR (default data/demo) is the demo's prepared data; when missing it is made as scripts/main.sh does
# (scripts/get_corpus.sh, coco prepare --vocab-size 8192). STEPS (default 30), WARMUP (5), ROUNDS (2).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
build="${1:-$root/build}"
coco="$build/coco"
data="${DATA_DIR:-$root/data/demo}"
steps="${STEPS:-30}" warmup="${WARMUP:-5}" rounds="${ROUNDS:-2}"
[[ -x $coco ]] || { echo "cpu_scaling: $coco is not built" >&2; exit 1; }
if [[ ! -f $data/meta.json ]]; then
  "$root/scripts/get_corpus.sh" "$root/data/corpus" >&2
  "$coco" prepare --vocab-size 8192 --valid-fraction 0.02 --out "$data" "$root/data/corpus" >&2
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "# $(date -u +%FT%TZ) $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores visible," \
  "$(lscpu | sed -n 's/^Thread(s) per core: *//p') thread(s) per core"
echo "# configs/demo.json on the cpu backend, $steps steps (median tokens/s of the steps after $warmup), data $data"
echo "# load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
common=(--config "$root/configs/demo.json" --set "data.dir=$data" --set runtime.device=cpu --set "train.steps=$steps"
        --set train.log_every=1 --set train.eval_every=0 --set train.checkpoint_every=0)
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR + 1) / 2)]}'; }
rate_of() {  # the median tokens_per_s of a run's train records after the warm-up steps
  python3 - "$1" "$warmup" <<'PY'
import json, statistics, sys
records = [json.loads(l) for l in open(sys.argv[1])]
rates = [r["tokens_per_s"] for r in records if "split" not in r and r["step"] > int(sys.argv[2])]
print(f"{statistics.median(rates):.0f}")
PY
}
declare -A rates
names=("1 rank, 1 thread" "1 rank, 2 threads" "2 ranks, 1 thread each")
for ((r = 1; r <= rounds; ++r)); do
  for i in 0 1 2; do
    out="$work/run$i-$r"
    case $i in
      0) "$coco" train "${common[@]}" --set runtime.threads=1 --set train.micro_batch=16 --out "$out" >/dev/null 2>&1 ;;
      1) "$coco" train "${common[@]}" --set runtime.threads=2 --set train.micro_batch=16 --out "$out" >/dev/null 2>&1 ;;
      2) mpirun --oversubscribe --allow-run-as-root --bind-to none -np 2 "$coco" train "${common[@]}" \
           --set runtime.threads=1 --set train.micro_batch=8 --out "$out" >/dev/null 2>&1 ;;
    esac
    rate=$(rate_of "$out/metrics.jsonl")
    rates[$i]+="$rate "
    echo "${names[$i]} round $r: $rate tokens/s"
  done
done
echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| configuration | tokens/s (median of rounds) | speed-up over 1 rank, 1 thread | rounds |"
echo "|---|---|---|---|"
base=$(median <<<"${rates[0]}")
for i in 0 1 2; do
  m=$(median <<<"${rates[$i]}")
  echo "| ${names[$i]} | $m | $(python3 -c "print(f'{$m / $base:.2f}x')") | ${rates[$i]}|"
done
