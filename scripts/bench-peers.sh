#!/usr/bin/env bash
# Measures braid's kernels and training step side by side with the peers in
# ../shared/bench (OpenBLAS sgemm through numpy, PyTorch GPT training step),
# in one run on this machine, and prints one JSON line per figure.
# Needs Debian's python3-numpy, python3-torch and libopenblas0-pthread.
set -euo pipefail
cd "$(dirname "$0")/.."
BRAID=${BRAID:-bin/braid}
PEERS=${PEERS:-../shared/bench}
PY=/usr/bin/python3
# Always the AVX-512 kernel: machines here preset OPENBLAS_CORETYPE=Haswell, which halves OpenBLAS.
export OPENBLAS_CORETYPE=${PEER_OPENBLAS_CORETYPE:-SkylakeX}
ROUNDS=${ROUNDS:-2}
SIZES=${SIZES:-256,512,1024,2048}

echo "# machine: $(nproc) cores, $(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%F), OPENBLAS_CORETYPE=$OPENBLAS_CORETYPE"
for round in $(seq "$ROUNDS"); do
  for th in 1 2; do
    OPENBLAS_NUM_THREADS=$th $PY "$PEERS/sgemm_ref.py" --sizes "$SIZES" --json | sed "s/^/{\"round\":$round,\"threads\":$th,\"peer\":/; s/\$/}/"
  done
  "$BRAID" bench kernels --sizes "$SIZES" --configs "" --json | sed "s/^/{\"round\":$round,\"braid\":/; s/\$/}/"
  for th in 1 2; do
    $PY "$PEERS/torch_gpt.py" --vocab 256 --ctx 256 --dim 128 --layers 4 --heads 4 --batch 8 --threads $th --json | sed "s/^/{\"round\":$round,\"config\":\"tiny\",\"peer\":/; s/\$/}/"
    $PY "$PEERS/torch_gpt.py" --vocab 256 --ctx 256 --dim 192 --layers 6 --heads 6 --batch 8 --threads $th --json | sed "s/^/{\"round\":$round,\"config\":\"small\",\"peer\":/; s/\$/}/"
  done
  "$BRAID" bench kernels --sizes "" --json | sed "s/^/{\"round\":$round,\"braid\":/; s/\$/}/"
done
