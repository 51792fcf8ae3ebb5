# The preamble that the `coco train` data-parallel scripts (tests/dist/train_*.sh) share; sourced, not run.
#   dist_train_setup COCO MPIRUN...  sets `coco` (the binary) and `mpirun` (an array: the mpirun command line up
#                                    to the -np flag), makes the scratch directory `work` (removed on exit unless
#                                    KEEP is set) and changes into it
#   make_prepared_data SEED DOCS     writes corpus.txt (DOCS documents of 1-4 random sentences over a small
#                                    vocabulary, random.seed(SEED)) and prepares it into data/ (64 tokens, 10%
#                                    validation)

dist_train_setup() {
  coco=$1
  shift
  mpirun=("$@")
  work=$(mktemp -d)
  [[ -n "${KEEP:-}" ]] || trap 'rm -rf "$work"' EXIT
  echo "work: $work"
  cd "$work"
}

make_prepared_data() {
  python3 - "$1" "$2" <<'PY'
import random, sys
random.seed(int(sys.argv[1]))
words = ("the cat dog sat on mat ran fast slow big small red blue house tree river stone light dark sings "
         "reads writes happy old young").split()
with open("corpus.txt", "w") as f:
    for _ in range(int(sys.argv[2])):
        for _ in range(1 + random.randrange(4)):
            f.write(" ".join(random.choice(words) for _ in range(4 + random.randrange(9))) + " .\n")
        f.write("\n")
PY
  "$coco" prepare --out data --vocab-size 64 --valid-fraction 0.1 --threads 1 corpus.txt >/dev/null
}
