#!/usr/bin/env bash
# Side-by-side CPU step benchmark on the issue #18 shapes (demo, and d = 256 / 6 + 2 layers / T = 128)
# at 1 and 2 threads, runs alternating (so a noisy neighbour hits every contender alike); prints one
# line per run plus a table of medians (tokens/s).
#   bench/cpu_step_compare.sh BEFORE_BIN AFTER_BIN [ROUNDS]         two coco-bench builds
#   bench/cpu_step_compare.sh --pytorch PYTHON COCO_BENCH [ROUNDS]  coco-bench vs PyTorch eager and
#       torch.compile (bench/pytorch_cpu_step.py; PYTHON has torch, coco-lm-pytorch 0.0.2, x-transformers 0.8.4)
# SHAPES="large" / THREADS="2" (environment) restrict the runs, so a long comparison can be split in chunks.
# Results: bench/results/DATE-cpu-step-CPU.txt.
set -euo pipefail
pytorch=""
if [[ "${1:-}" == --pytorch ]]; then
  pytorch="$2"
  shift 2
  contenders=(cocolm eager compile)
  cocolm="$1"
  rounds="${2:-2}"
else
  contenders=(before after)
  before="$1"
  after="$2"
  rounds="${3:-3}"
fi
cd "$(dirname "$0")/.."
demo=(--cpu-step configs/demo.json --set objective.preset=lucidrains)
large=("${demo[@]}" --set model.generator.dim=256 --set model.discriminator.dim=256
       --set model.discriminator.depth=6 --set model.generator.depth=2 --set data.seq_len=128)
echo "# $(date -u +%FT%TZ) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores visible"
echo "# load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
declare -A rates
shapes=(${SHAPES:-demo large})
thread_counts=(${THREADS:-1 2})
for shape in "${shapes[@]}"; do
  # The larger shape takes seconds per step: fewer steps per run.
  if [[ $shape == demo ]]; then args=("${demo[@]}"); warmup=2; steps=5; else args=("${large[@]}"); warmup=1; steps=3; fi
  for threads in "${thread_counts[@]}"; do
    for ((r = 1; r <= rounds; ++r)); do
      for who in "${contenders[@]}"; do
        case $who in
          before) cmd=("$before" "${args[@]}" --threads "$threads" --warmup "$warmup" --steps "$steps" --runs 1) ;;
          after) cmd=("$after" "${args[@]}" --threads "$threads" --warmup "$warmup" --steps "$steps" --runs 1) ;;
          cocolm) cmd=("$cocolm" "${args[@]}" --threads "$threads" --warmup "$warmup" --steps "$steps" --runs 1) ;;
          # torch.compile recompiles once the masked-position count changes: one more warm-up step.
          eager) cmd=("$pytorch" bench/pytorch_cpu_step.py --shape "$shape" --threads "$threads" --warmup "$warmup"
                      --steps "$steps") ;;
          compile) cmd=("$pytorch" bench/pytorch_cpu_step.py --shape "$shape" --threads "$threads" --compile
                        --warmup $((warmup + 1)) --steps "$steps") ;;
        esac
        line="$("${cmd[@]}" 2>/dev/null | grep '^median')"
        rate="$(awk '{print $2}' <<<"$line")"
        rates[$shape,$threads,$who]+="$rate "
        echo "$shape threads=$threads $who round $r: $line"
      done
    done
  done
done
echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2)}'; }
header="| shape | threads |"; rule="|---|---|"
for who in "${contenders[@]}"; do header+=" $who tokens/s (median) |"; rule+="---|"; done
header+=" runs |"; rule+="---|"
echo "$header"; echo "$rule"
for shape in "${shapes[@]}"; do
  for threads in "${thread_counts[@]}"; do
    row="| $shape | $threads |"; runs=""
    for who in "${contenders[@]}"; do
      row+=" $(median <<<"${rates[$shape,$threads,$who]}") |"
      runs+="$who: ${rates[$shape,$threads,$who]}"
    done
    echo "$row $runs|"
  done
done
