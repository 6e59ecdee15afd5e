#!/usr/bin/env bash
# Point-to-point throughput on loopback: braid's QUIC transport (mutual TLS)
# with 1 and 4 connections, next to plain TCP from iperf3 (no encryption),
# in one run. Needs Debian's iperf3. One JSON line per figure.
set -euo pipefail
cd "$(dirname "$0")/.."
BRAID=${BRAID:-bin/braid}
BYTES=${BYTES:-536870912}
"$BRAID" bench transport --lanes 1,4 --bytes "$BYTES" --repeat 3 --json
for p in 1 4; do
  iperf3 -s -1 -p 25201 > /dev/null 2>&1 & sleep 0.3
  iperf3 -c 127.0.0.1 -p 25201 -P "$p" -n "$BYTES" -J 2>/dev/null |
    python3 -c "import json,sys; r=json.load(sys.stdin); print(json.dumps({'kind':'transport','proto':'tcp-iperf3','streams':$p,'gbit_per_s':round(r['end']['sum_received']['bits_per_second']/1e9,3)}))"
done
wait 2>/dev/null || true
