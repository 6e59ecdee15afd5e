#!/usr/bin/env bash
# Failover figures for docs/BENCHMARKS.md: starts 3 `braid node` processes on
# loopback (real QUIC, mutual TLS, encrypted gossip) ROUNDS times and
# measures (1) cold start of the 3 processes to an elected leader and (2)
# `kill -9` of a non-leader to the committed epoch without it, as seen
# through node n1's HTTP API. Prints one JSON line per round.
set -euo pipefail
cd "$(dirname "$0")/.."
BRAID=${BRAID:-bin/braid}
ROUNDS=${ROUNDS:-5}
PROFILE=${PROFILE:-lan}
WORK=$(mktemp -d)
trap 'pkill -f "braid node --name bf-" 2>/dev/null || true; rm -rf "$WORK"' EXIT
"$BRAID" ca init --dir "$WORK/tls" > /dev/null
for i in 1 2 3; do "$BRAID" ca issue --dir "$WORK/tls" --name bf-$i --host 127.0.0.1 > /dev/null; done
now() { date +%s.%N; }
status() { "$BRAID" status --api http://127.0.0.1:27961 --token-file "$WORK/d1/api-token" --json 2>/dev/null || true; }
for r in $(seq "$ROUNDS"); do
  rm -rf "$WORK"/d*
  t0=$(now)
  for i in 1 2 3; do
    "$BRAID" node --name bf-$i --data-dir "$WORK/d$i" --gossip-addr 127.0.0.1:$((27940+i)) \
      --quic-addr 127.0.0.1:$((27950+i)) --http 127.0.0.1:$((27960+i)) --join 127.0.0.1:27941,127.0.0.1:27942 \
      --bootstrap-expect 3 --tls-dir "$WORK/tls" --profile "$PROFILE" > "$WORK/n$i.log" 2>&1 &
  done
  until status | grep -q '"leader": "bf-'; do sleep 0.02; done
  t1=$(now)
  until status | python3 -c 'import json,sys; s=json.load(sys.stdin); sys.exit(0 if len(s["epoch"]["members"])==3 else 1)'; do sleep 0.02; done
  leader=$(status | python3 -c 'import json,sys; print(json.load(sys.stdin)["leader"])')
  victim=bf-2; [ "$leader" = bf-2 ] && victim=bf-3
  t2=$(now)
  pkill -9 -f "braid node --name $victim "
  until status | python3 -c "import json,sys; s=json.load(sys.stdin); sys.exit(0 if '$victim' not in s['epoch']['members'] else 1)"; do sleep 0.02; done
  t3=$(now)
  printf '{"round":%d,"profile":"%s","cold_start_to_leader_s":%.3f,"kill_to_epoch_s":%.3f}\n' "$r" "$PROFILE" \
    "$(echo "$t1 - $t0" | bc)" "$(echo "$t3 - $t2" | bc)"
  pkill -f "braid node --name bf-" || true
  while pgrep -f "braid node --name bf-" > /dev/null; do sleep 0.05; done
done
