#!/usr/bin/env bash
# Side-by-side CPU step benchmark: runs `coco-bench --cpu-step` of two builds (BEFORE, AFTER) on the
# issue #18 shapes at 1 and 2 threads, alternating the builds run by run (so a noisy neighbour hits
# both alike), and prints one line per run plus the medians.
#   bench/cpu_step_compare.sh BEFORE_BIN AFTER_BIN [ROUNDS] > bench/results/DATE-cpu-step.txt
set -euo pipefail
before="$1"
after="$2"
rounds="${3:-3}"
cd "$(dirname "$0")/.."
demo=(--cpu-step configs/demo.json --set objective.preset=lucidrains)
large=("${demo[@]}" --set model.generator.dim=256 --set model.discriminator.dim=256
       --set model.discriminator.depth=6 --set model.generator.depth=2 --set data.seq_len=128)
echo "# $(date -u +%FT%TZ) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores visible"
echo "# load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
declare -A rates
for shape in demo large; do
  for threads in 1 2; do
    for ((r = 1; r <= rounds; ++r)); do
      for build in before after; do
        bin="$before"; [[ $build == after ]] && bin="$after"
        if [[ $shape == demo ]]; then args=("${demo[@]}"); else args=("${large[@]}"); fi
        line="$("$bin" "${args[@]}" --threads "$threads" --warmup 2 --steps 5 --runs 1 | grep '^median')"
        rate="$(awk '{print $2}' <<<"$line")"
        rates[$shape,$threads,$build]+="$rate "
        echo "$shape threads=$threads $build round $r: $line"
      done
    done
  done
done
echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| shape | threads | before tokens/s (median) | after tokens/s (median) | runs before | runs after |"
echo "|---|---|---|---|---|---|"
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR + 1) / 2)]}'; }
for shape in demo large; do
  for threads in 1 2; do
    b="${rates[$shape,$threads,before]}"; a="${rates[$shape,$threads,after]}"
    echo "| $shape | $threads | $(median <<<"$b") | $(median <<<"$a") | $b| $a|"
  done
done
