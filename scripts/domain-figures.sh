#!/usr/bin/env bash
# The figures of docs/BENCHMARKS.md "bundled base model and domain fine-tuning":
# held-out bits per byte of the bundled base on English, of an untrained model
# of the same shape, and held-out perplexity on two domains before and after
# a short fine-tune from the base (Go source: the demo's split by package;
# legal: SPDX licence texts, 1 document in 10 held out by content hash).
set -euo pipefail
cd "$(dirname "$0")/.."
BRAID=${BRAID:-bin/braid}
BASE=${BASE:-models/base-en}
CORPORA=${CORPORA:-../shared/corpora}
WORK=${WORK:-out/figures}
STEPS=${STEPS:-300}
EVAL_TOKENS=${EVAL_TOKENS:-131072}
SRC=$(go env GOROOT)/src
make -s build
mkdir -p "$WORK"

figure() { # name, then the eval arguments
  local name=$1; shift
  printf '{"figure":"%s","eval":%s}\n' "$name" "$("$BRAID" eval --json "$@")"
}

# English: the base and an untrained model of its shape (one step at lr 1e-9 is the seed-1 init).
figure english-heldout/base --model "$BASE" --input "$CORPORA/english" --split heldout --holdout-every 20
"$BRAID" train --input "$CORPORA/english" --out "$WORK/untrained" --overwrite --config small --seed 1 --steps 1 \
  --lr 1e-9 --warmup 0 --eval-every 0 --batch 1 --seq-len 256 > /dev/null
figure english-heldout/untrained --model "$WORK/untrained" --input "$CORPORA/english" --split heldout --holdout-every 20

# Go source, split by package as in the demo.
TRAIN=(net/http strings bytes bufio sort strconv io os)
HELD=(encoding/json text/template)
ta=(); for p in "${TRAIN[@]}"; do ta+=(--input "$SRC/$p"); done
ha=(); for p in "${HELD[@]}"; do ha+=(--input "$SRC/$p"); done
figure go-heldout/base --model "$BASE" "${ha[@]}" --max-tokens "$EVAL_TOKENS"
"$BRAID" train --model "$BASE" "${ta[@]}" --out "$WORK/go" --overwrite --steps "$STEPS" --batch 16 --seq-len 128 \
  --lr 1e-3 --warmup 20 --eval-every 0 --log-every 1000 --seed 1 > "$WORK/go.log"
figure go-heldout/finetuned --model "$WORK/go" "${ha[@]}" --max-tokens "$EVAL_TOKENS"

# Legal: the same recipe, held out by content hash.
figure legal-heldout/base --model "$BASE" --input "$CORPORA/legal" --split heldout --holdout-every 10 --max-tokens "$EVAL_TOKENS"
"$BRAID" train --model "$BASE" --input "$CORPORA/legal" --holdout-every 10 --out "$WORK/legal" --overwrite --steps "$STEPS" \
  --batch 16 --seq-len 128 --lr 1e-3 --warmup 20 --eval-every 0 --log-every 1000 --seed 1 > "$WORK/legal.log"
figure legal-heldout/finetuned --model "$WORK/legal" --input "$CORPORA/legal" --split heldout --holdout-every 10 --max-tokens "$EVAL_TOKENS"
