#!/usr/bin/env bash
# The single-machine demo: fine-tunes braid's bundled base model (a small
# byte-level GPT pretrained on English, models/base-en) on Go's standard
# library source, which every machine that builds braid has, and shows what
# that bought: held-out perplexity on Go packages the fine-tune never saw,
# before and after, and a sample from each model. About 2 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
BRAID=${BRAID:-bin/braid}
BASE=${BASE:-models/base-en}
OUT=${OUT:-out/demo-go}
SRC=$(go env GOROOT)/src
STEPS=${STEPS:-300}
EVAL_TOKENS=${EVAL_TOKENS:-65536}

# Training packages, and held-out packages the fine-tune never reads.
TRAIN=(net/http strings bytes bufio sort strconv io os)
HELDOUT=(encoding/json text/template)
train_args=(); for p in "${TRAIN[@]}"; do train_args+=(--input "$SRC/$p"); done
held_args=(); for p in "${HELDOUT[@]}"; do held_args+=(--input "$SRC/$p"); done

PROMPT=$'func (s *Server) '

echo "== 1. the base model: $BASE (English only, never saw code)"
"$BRAID" eval --model "$BASE" "${held_args[@]}" --max-tokens "$EVAL_TOKENS" 
echo
echo "== 2. fine-tuning it on Go source: ${TRAIN[*]} (held out: ${HELDOUT[*]})"
"$BRAID" train --init "$BASE" "${train_args[@]}" --out "$OUT" --steps "$STEPS" --batch 16 --seq-len 128 \
  --lr 1e-3 --warmup 20 --eval-every 100 --eval-batches 4 --log-every 25 --seed 1
echo
echo "== 3. held-out Go packages, before and after"
"$BRAID" eval --model "$OUT" "${held_args[@]}" --max-tokens "$EVAL_TOKENS" 
echo
echo "== 4. samples for the prompt '$PROMPT'"
echo "-- base:"
"$BRAID" generate --model "$BASE" --prompt "$PROMPT" --tokens 200 --temperature 0.6 --top-k 20 --seed 7
echo "-- fine-tuned:"
"$BRAID" generate --model "$OUT" --prompt "$PROMPT" --tokens 200 --temperature 0.6 --top-k 20 --seed 7
