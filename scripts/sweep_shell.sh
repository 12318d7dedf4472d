#!/bin/sh
# A batch sweep in plain shell: one `nnrun train` per learning rate and seed, no `nnrun sweep`.
#
#   scripts/sweep_shell.sh [CONFIG] [--set KEY=VALUE ...]
#   LRS="1e-3 3e-3 1e-2" SEEDS="0 1 2" scripts/sweep_shell.sh configs/quickstart.yaml --set train.epochs=4
#
# Every run lands in $ROOT (default runs/shell-sweep); the script prints "ok"/"FAILED" per run,
# then the runs sorted by val_accuracy, and exits 1 if any run failed. It relies only on what
# every nnrun command guarantees: non-interactive, non-zero exit on failure, run directory on
# the last stdout line. NNRUN picks the executable (default: nnrun on PATH).
set -u

CONFIG=${1:-configs/quickstart.yaml}
[ $# -gt 0 ] && shift
NNRUN=${NNRUN:-nnrun}
ROOT=${ROOT:-runs/shell-sweep}
LRS=${LRS:-"1e-3 3e-3"}
SEEDS=${SEEDS:-"0 1"}

failed=0
for lr in $LRS; do
  for seed in $SEEDS; do
    if out=$("$NNRUN" train "$CONFIG" --set "optimizer.learning_rate=$lr" --set "seed=$seed" \
               --set "runtime.runs_root=$ROOT" "$@"); then
      echo "ok      lr=$lr seed=$seed  $(printf '%s\n' "$out" | tail -n 1)"
    else
      echo "FAILED  lr=$lr seed=$seed" >&2
      failed=1
    fi
  done
done

"$NNRUN" runs "$ROOT" --sort val_accuracy
exit $failed
