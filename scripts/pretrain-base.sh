#!/usr/bin/env bash
# Pretrains braid's bundled base model: the byte-level "small" preset
# (6 layers, 192 channels, 6 heads, context 256; 2.75 M parameters) from a
# fixed seed on an English corpus, and writes it to models/base-en (or $OUT).
#
#   scripts/pretrain-base.sh ../shared/corpora/english
#
# The recipe is fixed so that the same corpus gives the same model: seed 1,
# 5000 AdamW steps of 16 × 256 tokens (20.5 M tokens), peak learning rate
# 2e-3 after 200 warmup steps, cosine decay to 2e-4, weight decay 0.1,
# gradient clip 1.0, about one document in 20 held out by content hash.
# About 45 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
CORPUS=${1:?usage: scripts/pretrain-base.sh CORPUS_DIR}
OUT=${OUT:-models/base-en}
BRAID=${BRAID:-bin/braid}
STEPS=${STEPS:-5000}
make -s build
"$BRAID" train --input "$CORPUS" --out "$OUT" --overwrite --config small --seed 1 \
  --steps "$STEPS" --batch 16 --seq-len 256 --lr 2e-3 --warmup 200 --weight-decay 0.1 --clip 1.0 \
  --holdout-every 20 --eval-every 500 --eval-batches 16 --log-every 100
