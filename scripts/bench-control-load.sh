#!/usr/bin/env bash
# Control-plane health under a full training load (docs/BENCHMARKS.md,
# "Control plane under load"): three `braid node` processes on this machine
# with the default lan gossip timing, a fine-tuning job on the Jargon File
# keeping every core busy for DURATION seconds, then each node's health
# monitor as `braid status --json` reports it: gaps between the Raft
# leader's contacts on followers (p50/p99/max), gossip probe round trips,
# leader changes and suspicions since the job started. One JSON line per
# node. Usage: DURATION=120 scripts/bench-control-load.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BRAID=${BRAID:-bin/braid}
BASE=${BASE:-models/base-en}
CORPUS=${CORPUS:-../shared/corpora/jargon}
DURATION=${DURATION:-120}
WORK=$(mktemp -d /tmp/braid-load.XXXXXX)
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$WORK"
}
trap cleanup EXIT INT TERM
ports=$(python3 - <<'PY'
import socket
out = []
while len(out) < 9:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close()
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", p)); out.append(p)
    except OSError:
        pass
    u.close()
print(" ".join(map(str, out)))
PY
)
read -r -a P <<<"$ports"
"$BRAID" ca init --dir "$WORK/tls" >/dev/null
for n in 1 2 3; do "$BRAID" ca issue --dir "$WORK/tls" --name "n$n" --host 127.0.0.1 >/dev/null; done
for i in 0 1 2; do
	n=$((i + 1))
	"$BRAID" node --name "n$n" --data-dir "$WORK/n$n" --tls-dir "$WORK/tls" \
		--gossip-addr "127.0.0.1:${P[3*i]}" --quic-addr "127.0.0.1:${P[3*i+1]}" --http "127.0.0.1:${P[3*i+2]}" \
		--join "127.0.0.1:${P[0]}" --bootstrap-expect 3 --log-level warn >"$WORK/n$n.log" 2>&1 &
	PIDS+=($!)
done
api() { echo "http://127.0.0.1:${P[3*($1-1)+2]}"; }
export BRAID_API=$(api 1) BRAID_TOKEN_FILE="$WORK/n1/api-token"
for _ in $(seq 1 300); do
	if "$BRAID" status --json 2>/dev/null | python3 -c 'import json,sys; s=json.load(sys.stdin); sys.exit(0 if s["leader"] and len(s["epoch"]["members"])==3 else 1)' 2>/dev/null; then break; fi
	sleep 0.2
done
"$BRAID" data prepare --input "$CORPUS" --out "$WORK/data" --name load --seq-len 128 --shard-mib 1 --holdout 0.05 >/dev/null 2>&1
"$BRAID" data push --replicas 2 "$WORK/data" >/dev/null
ID=$("$BRAID" job submit --model "$BASE" --dataset load --steps 100000 --global-batch 24 --micro-batch 8 --lr 1e-4 --seed 1)
# Health counts from here: the numbers before the job are subtracted.
snap() { for n in 1 2 3; do BRAID_TOKEN_FILE="$WORK/n$n/api-token" "$BRAID" status --api "$(api $n)" --json; echo; done; }
snap >"$WORK/before.json"
sleep "$DURATION"
snap >"$WORK/after.json"
step=$("$BRAID" job status --json "$ID" | python3 -c 'import json,sys; print(json.load(sys.stdin)["step"])')
"$BRAID" job cancel "$ID" >/dev/null || true
python3 - "$WORK/before.json" "$WORK/after.json" "$DURATION" "$step" "$(nproc)" <<'PY'
import json, sys
def load(p):
    dec, s, out = json.JSONDecoder(), open(p).read(), []
    i = 0
    while i < len(s):
        if s[i].isspace(): i += 1; continue
        o, i = dec.raw_decode(s, i); out.append(o)
    return out
before, after = load(sys.argv[1]), load(sys.argv[2])
for b, a in zip(before, after):
    hb, ha = b["health"], a["health"]
    print(json.dumps({"bench": "control-load", "node": a["self"], "leader": a["leader"], "seconds": int(sys.argv[3]),
        "job_steps": int(sys.argv[4]), "cores": int(sys.argv[5]),
        "leader_changes": ha["raft_leader_changes"] - hb["raft_leader_changes"],
        "suspicions": ha["gossip_suspicions"] - hb["gossip_suspicions"], "refuted": ha["gossip_refuted"] - hb["gossip_refuted"],
        "contact_gap_ms": ha["raft_contact_gap_ms"], "probe_rtt_ms": ha["gossip_probe_rtt_ms"]}))
PY
