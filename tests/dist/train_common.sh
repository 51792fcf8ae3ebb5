# The preamble that the `coco train` data-parallel scripts (tests/dist/train_*.sh) share; sourced, not run.
#   dist_train_setup COCO MPIRUN...  sets `coco` (the binary) and `mpirun` (an array: the mpirun command line up
#                                    to the -np flag), makes the scratch directory `work` (removed on exit unless
#                                    KEEP is set) and changes into it
#   make_corpus SEED DOCS [SENTENCES [WORDS]]
#                                    writes corpus.txt: DOCS documents of 1 to SENTENCES (default 4) random
#                                    sentences of 4-12 words over the first WORDS (default all 25) words of a
#                                    small vocabulary, random.seed(SEED)
#   prepare_data [ARGS...]           prepares corpus.txt into data/ (64 tokens, one thread, plus ARGS)
#   make_prepared_data SEED DOCS     make_corpus SEED DOCS, then prepare_data with 10% validation

# tests/dist/records.py (load and compare metrics.jsonl records) for the scripts' python checks.
export PYTHONPATH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)${PYTHONPATH:+:$PYTHONPATH}"

dist_train_setup() {
  coco=$1
  shift
  mpirun=("$@")
  work=$(mktemp -d)
  [[ -n "${KEEP:-}" ]] || trap 'rm -rf "$work"' EXIT
  echo "work: $work"
  cd "$work"
}

make_corpus() {
  python3 - "$1" "$2" "${3:-4}" "${4:-25}" <<'PY'
import random, sys
seed, docs, sentences, vocabulary = map(int, sys.argv[1:])
random.seed(seed)
words = ("the cat dog sat on mat ran fast slow big small red blue house tree river stone light dark sings "
         "reads writes happy old young").split()[:vocabulary]
with open("corpus.txt", "w") as f:
    for _ in range(docs):
        for _ in range(1 + random.randrange(sentences) if sentences > 1 else 1):
            f.write(" ".join(random.choice(words) for _ in range(4 + random.randrange(9))) + " .\n")
        f.write("\n")
PY
}

prepare_data() {
  "$coco" prepare --out data --vocab-size 64 --threads 1 "$@" corpus.txt >/dev/null
}

make_prepared_data() {
  make_corpus "$1" "$2"
  prepare_data --valid-fraction 0.1
}
