#!/usr/bin/env bash
# The cluster demo (`make demo`): three braid nodes on this machine, as
# separate processes talking QUIC with mutual TLS (a CA made on the fly),
# fine-tune the bundled base model (models/base-en, a small byte-level GPT
# pretrained on English only) on Go's standard library source, which every
# machine that builds braid has. It shows the job's progress, held-out
# perplexity before and after, and a sample from each model, then tears
# everything down. About 1.5 minutes on 2 cores (1 min 22 s measured, build cached).
#
# On a GPU machine: BRAID=bin/braid-cuda DEVICE=cuda NODES=2 scripts/demo.sh
# runs the nodes with --device cuda (they may share one GPU) and the job on
# them. NODES sets the number of nodes; INPUTS (space-separated paths) the
# text to fine-tune on where Go's source is not installed.
set -euo pipefail
cd "$(dirname "$0")/.."
BRAID=${BRAID:-bin/braid}
BASE=${BASE:-models/base-en}
OUT=${OUT:-out/demo-go}
SRC=$( (go env GOROOT 2>/dev/null) || true)/src
STEPS=${STEPS:-150}
NODES=${NODES:-3}
DEVICE=${DEVICE:-cpu}
WORK=$(mktemp -d /tmp/braid-demo.XXXXXX)
PIDS=()

cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	if [ "${KEEP:-0}" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT INT TERM

# Three free port triples (gossip, QUIC, HTTP) on loopback.
ports=$(python3 - "$NODES" <<'EOF'
import socket, sys
out = []
while len(out) < 3 * int(sys.argv[1]):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close()
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", p)); out.append(p)
    except OSError:
        pass
    u.close()
print(" ".join(map(str, out)))
EOF
)
read -r -a P <<<"$ports"

echo "== 1. a cluster of $NODES nodes on this machine (QUIC + mutual TLS, CA made now), computing on: $DEVICE"
"$BRAID" ca init --dir "$WORK/tls" >/dev/null
for i in $(seq 1 "$NODES"); do "$BRAID" ca issue --dir "$WORK/tls" --name "n$i" --host 127.0.0.1 >/dev/null; done
for i in $(seq 0 $((NODES - 1))); do
	n=$((i + 1))
	"$BRAID" node --name "n$n" --data-dir "$WORK/n$n" --tls-dir "$WORK/tls" --profile local \
		--gossip-addr "127.0.0.1:${P[3*i]}" --quic-addr "127.0.0.1:${P[3*i+1]}" --http "127.0.0.1:${P[3*i+2]}" \
		--join "127.0.0.1:${P[0]}" --bootstrap-expect "$NODES" --device "$DEVICE" --log-level warn >"$WORK/n$n.log" 2>&1 &
	PIDS+=($!)
done
export BRAID_API="http://127.0.0.1:${P[2]}"
# n1 writes its API token there at its first start (braid would also find it
# by itself: this shell runs as the nodes' user).
export BRAID_TOKEN_FILE="$WORK/n1/api-token"
for _ in $(seq 1 150); do
	if "$BRAID" status --json 2>/dev/null | python3 -c 'import json,sys; s=json.load(sys.stdin); sys.exit(0 if s["leader"] and len(s["epoch"]["members"])==int(sys.argv[1]) else 1)' "$NODES" 2>/dev/null; then break; fi
	sleep 0.2
done
"$BRAID" status

echo
echo "== 2. the domain data: Go source (net/http, strings, bytes, bufio, sort, strconv, io, os), tokenised into shards"
inputs=()
if [ -n "${INPUTS:-}" ]; then
	for p in $INPUTS; do inputs+=(--input "$p"); done
else
	for p in net/http strings bytes bufio sort strconv io os; do inputs+=(--input "$SRC/$p"); done
fi
"$BRAID" data prepare "${inputs[@]}" --out "$WORK/go-src" --name go-src --seq-len 128 --shard-mib 1 --holdout 0.05 --skip-bad 2>&1 | tail -1
"$BRAID" data push --replicas 2 --wait --timeout 1m "$WORK/go-src"  # returns once both replicas of every shard exist
"$BRAID" data ls

echo
echo "== 3. fine-tuning $BASE on it across the three nodes ($STEPS steps, 24 sequences of 128 bytes per step)"
ID=$("$BRAID" job submit --device "$DEVICE" --model "$BASE" --dataset go-src --steps "$STEPS" --global-batch 24 --micro-batch 8 \
	--lr 1e-3 --warmup 10 --eval-every 50 --checkpoint-every 50 --seed 1)
echo "job $ID"
"$BRAID" job watch "$ID"
"$BRAID" job status "$ID"
"$BRAID" job export --overwrite --out "$OUT" "$ID"  # the demo's own output: replaced on every run

echo
echo "== 4. held-out Go source (documents the fine-tune never saw), before and after"
"$BRAID" job status --json "$ID" | python3 -c '
import json, math, sys
s = json.load(sys.stdin)
b, a = s["base_heldout_loss"], s["heldout_loss"]
print(f"base model:       loss {b:.3f} nats/byte, perplexity {math.exp(b):7.2f}, {b/math.log(2):.3f} bits/byte")
print(f"after fine-tune:  loss {a:.3f} nats/byte, perplexity {math.exp(a):7.2f}, {a/math.log(2):.3f} bits/byte")'

PROMPT=$'func (s *Server) '
echo
echo "== 5. samples for the prompt '$PROMPT'"
echo "-- base:"
"$BRAID" generate --model "$BASE" --prompt "$PROMPT" --tokens 200 --temperature 0.6 --top-k 20 --seed 7
echo "-- fine-tuned across the cluster ($OUT):"
"$BRAID" generate --model "$OUT" --prompt "$PROMPT" --tokens 200 --temperature 0.6 --top-k 20 --seed 7
echo
echo "== 6. tearing the cluster down"
