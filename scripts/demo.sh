#!/usr/bin/env bash
# The single-process demo: trains braid's tiny GPT on Go's own standard
# library source (no download needed), shows held-out loss falling, and ends
# with a sample from the trained model. About 80 seconds on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
BRAID=${BRAID:-bin/braid}
OUT=${OUT:-out/demo}
SRC=$(go env GOROOT)/src
STEPS=${STEPS:-600}

echo "== braid demo: training a tiny GPT (byte-level) on Go's standard library source"
echo "   corpus: $SRC/{net,strings,bufio,sort,bytes}  checkpoint: $OUT"
"$BRAID" train \
  --input "$SRC/net" --input "$SRC/strings" --input "$SRC/bufio" --input "$SRC/sort" --input "$SRC/bytes" \
  --out "$OUT" --config tiny --steps "$STEPS" --batch 16 --seq-len 128 --lr 6e-3 --warmup 30 \
  --eval-every 200 --eval-batches 8 --log-every 50 --seed 1

echo
echo "== sample (prompt: 'func (c *Conn) ')"
"$BRAID" generate --model "$OUT" --prompt $'func (c *Conn) ' --tokens 300 --temperature 0.7 --top-k 20 --seed 7
