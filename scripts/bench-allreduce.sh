#!/usr/bin/env bash
# bench-allreduce.sh: the all-reduce figures of docs/BENCHMARKS.md, braid next
# to its peers in one run, ROUNDS interleaved rounds (medians are taken by
# scripts/bench-summary.py or by hand):
#   loopback: `braid bench transport --links 4` (the transport's ceiling with
#   four busy links), `braid bench allreduce --nodes 4 --sizes 64MiB` for
#   every wire type, and Gloo (../shared/bench/gloo_allreduce.py --world 4);
#   shaped:   scripts/shaped-ring.sh (needs root), braid fp32/bf16/int8 and Gloo.
# Prints JSON lines, each tagged with "bench" and "round".
# Usage: scripts/bench-allreduce.sh [ROUNDS] > docs/bench/allreduce-DATE.jsonl
set -euo pipefail
ROUNDS=${1:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$(mktemp -d)/braid
trap 'rm -rf "$(dirname "$BIN")"' EXIT
(cd "$ROOT" && CGO_ENABLED=0 go build -o "$BIN" ./cmd/braid)
tag() { sed "s/^{/{\"bench\":\"$1\",\"round\":$2,/"; }
for r in $(seq 1 "$ROUNDS"); do
	"$BIN" bench transport --links 4 --json | tag transport "$r"
	for dt in fp32 bf16 fp16 int8; do
		"$BIN" bench allreduce --nodes 4 --sizes 64MiB --iters 5 --dtype $dt --json | tag allreduce-loopback "$r"
	done
	if /usr/bin/python3 -c 'import torch' 2>/dev/null; then
		OPENBLAS_CORETYPE=SkylakeX /usr/bin/python3 "$ROOT/../shared/bench/gloo_allreduce.py" --world 4 --size-mib 64 --iters 5 --json | tag gloo-loopback "$r"
	fi
	if [ "$(id -u)" = 0 ]; then
		BRAID_BIN=$BIN "$ROOT/scripts/shaped-ring.sh" --iters 5 --dtypes fp32,bf16,int8 --json 2>/dev/null | tag shaped "$r"
	fi
done
