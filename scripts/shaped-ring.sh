#!/usr/bin/env bash
# shaped-ring.sh: the all-reduce where the link, not the CPU, is the
# bottleneck, as between servers or business units.
#
# It makes N network namespaces (braid-n0 .. braid-nN-1), each joined by a veth
# pair to a bridge in a switch namespace (braid-sw), with every link limited
# to RATE in each direction by tc's token bucket filter (tbf, on both ends of
# each veth pair), then runs, in those namespaces:
#   - braid: `braid bench allreduce --rank R --ring ...` in each namespace
#     (QUIC, TLS 1.3 with mutual authentication), once per wire type;
#   - Gloo: ../shared/bench/gloo_allreduce.py (torch.distributed, plain TCP).
# and reports each against the bandwidth bound of a ring all-reduce,
#   bound = 2(N-1)/N * S / B    (S bytes, B the link rate).
# The namespaces are removed on exit, whatever happens.
#
# Usage: sudo scripts/shaped-ring.sh [--json] [--nodes 4] [--size-mib 64]
#          [--rate-mbit 1000] [--iters 5] [--dtypes fp32,bf16] [--no-gloo]
# BRAID_ARGS adds flags to every braid rank (e.g. "--streams 2").
# Needs: root, iproute2 (ip, tc), and for Gloo /usr/bin/python3 with
# python3-torch (apt-get install -y python3-torch).
# Output (--json): one object per implementation and wire type,
#   {"impl":"braid|gloo","dtype":"fp32",...,"time_ms":F,"bound_ms":F,"ratio":F}
set -euo pipefail

JSON=0 N=4 SIZE_MIB=64 RATE=1000 ITERS=5 DTYPES=fp32,bf16 GLOO=1
while [ $# -gt 0 ]; do
	case "$1" in
	--json) JSON=1 ;;
	--nodes) N=$2; shift ;;
	--size-mib) SIZE_MIB=$2; shift ;;
	--rate-mbit) RATE=$2; shift ;;
	--iters) ITERS=$2; shift ;;
	--dtypes) DTYPES=$2; shift ;;
	--no-gloo) GLOO=0 ;;
	*) echo "shaped-ring.sh: unknown argument $1" >&2; exit 2 ;;
	esac
	shift
done
[ "$(id -u)" = 0 ] || { echo "shaped-ring.sh: needs root (network namespaces, tc)" >&2; exit 1; }
for t in ip tc; do command -v $t >/dev/null || { echo "shaped-ring.sh: $t not found (apt-get install -y iproute2)" >&2; exit 1; }; done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
GLOO_PY=$ROOT/../shared/bench/gloo_allreduce.py
WORK=$(mktemp -d /tmp/braid-shaped.XXXXXX)
BRAID=${BRAID_BIN:-$WORK/braid} # BRAID_BIN: use this binary instead of building one
log() { echo "# $*" >&2; }

teardown() { # also clears what a killed earlier run left
	for i in $(seq 0 $((N - 1))); do ip netns pids braid-n$i 2>/dev/null | xargs -r kill -9 2>/dev/null || true; done
	for i in $(seq 0 $((N - 1))); do ip netns del braid-n$i 2>/dev/null || true; done
	ip netns del braid-sw 2>/dev/null || true
}
trap 'teardown; rm -rf "$WORK"' EXIT INT TERM

if [ ! -x "$BRAID" ]; then
	log "building braid"
	(cd "$ROOT" && CGO_ENABLED=0 go build -o "$BRAID" ./cmd/braid)
fi

# tbf: the bucket must hold at least one rate/HZ worth of bytes (and a
# 64 KiB GSO segment); the queue holds 20 ms at the rate.
BURST=$((RATE * 1000 * 1000 / 8 / 250)); [ $BURST -lt 131072 ] && BURST=131072
shape() { # namespace device
	ip netns exec "$1" tc qdisc replace dev "$2" root tbf rate ${RATE}mbit burst $BURST latency 20ms
}

log "making $N namespaces, ${RATE} Mbit/s links through a bridge"
teardown
ip netns add braid-sw
ip netns exec braid-sw ip link add br0 type bridge
ip netns exec braid-sw ip link set br0 up
ip netns exec braid-sw ip link set lo up
for i in $(seq 0 $((N - 1))); do
	ip netns add braid-n$i
	ip link add bv$i type veth peer name bs$i
	ip link set bv$i netns braid-n$i
	ip link set bs$i netns braid-sw
	ip netns exec braid-n$i ip link set bv$i name eth0
	ip netns exec braid-n$i ip addr add 10.77.0.$((i + 1))/24 dev eth0
	ip netns exec braid-n$i ip link set eth0 up
	ip netns exec braid-n$i ip link set lo up
	ip netns exec braid-sw ip link set bs$i master br0
	ip netns exec braid-sw ip link set bs$i up
	shape braid-n$i eth0 # node → switch
	shape braid-sw bs$i  # switch → node
done

BYTES=$((SIZE_MIB * 1024 * 1024))
BOUND_MS=$(awk -v n=$N -v s=$BYTES -v r=$RATE 'BEGIN { printf "%.1f", 2 * (n - 1) / n * s / (r * 1e6 / 8) * 1e3 }')
log "bound for $SIZE_MIB MiB on $N ranks at $RATE Mbit/s: $BOUND_MS ms"

# drops: packets the tbf queues dropped so far, all links, both directions.
drops() {
	local d=0 x
	for i in $(seq 0 $((N - 1))); do
		for x in $(ip netns exec braid-n$i tc -s qdisc show dev eth0 | sed -n 's/.*dropped \([0-9]*\).*/\1/p') \
			$(ip netns exec braid-sw tc -s qdisc show dev bs$i | sed -n 's/.*dropped \([0-9]*\).*/\1/p'); do
			d=$((d + x))
		done
	done
	echo $d
}

report() { # impl dtype time_ms extra-json
	local ratio
	ratio=$(awk -v t="$3" -v b="$BOUND_MS" 'BEGIN { printf "%.3f", t / b }')
	if [ $JSON = 1 ]; then
		echo "{\"impl\":\"$1\",\"dtype\":\"$2\",\"nodes\":$N,\"bytes\":$BYTES,\"rate_mbit\":$RATE,\"time_ms\":$3,\"bound_ms\":$BOUND_MS,\"ratio\":$ratio$4}"
	else
		printf "%-6s %-5s %10.1f ms   bound %8.1f ms   %.3f× bound\n" "$1" "$2" "$3" "$BOUND_MS" "$ratio"
	fi
}

# braid: one rank per namespace; certificates from a CA made here.
"$BRAID" ca init --dir "$WORK/pki" >/dev/null
RING=""
for i in $(seq 0 $((N - 1))); do
	"$BRAID" ca issue --dir "$WORK/pki" --name r$i --host 10.77.0.$((i + 1)) >/dev/null
	RING="$RING${RING:+,}r$i@10.77.0.$((i + 1)):7400"
done
for dt in ${DTYPES//,/ }; do
	log "braid $dt"
	d0=$(drops)
	pids=()
	for i in $(seq 1 $((N - 1))); do
		ip netns exec braid-n$i "$BRAID" bench allreduce --rank $i --ring "$RING" --tls-dir "$WORK/pki" \
			--sizes ${SIZE_MIB}MiB --dtype $dt --iters $ITERS --json ${BRAID_ARGS:-} >/dev/null &
		pids+=($!)
	done
	out=$(ip netns exec braid-n0 "$BRAID" bench allreduce --rank 0 --ring "$RING" --tls-dir "$WORK/pki" \
		--sizes ${SIZE_MIB}MiB --dtype $dt --iters $ITERS --json ${BRAID_ARGS:-})
	for p in "${pids[@]}"; do wait "$p"; done
	t=$(echo "$out" | sed -n 's/.*"time_ms":\([0-9.]*\).*/\1/p')
	w=$(echo "$out" | sed -n 's/.*"wrong":\([0-9]*\).*/\1/p')
	report braid "$dt" "$t" ",\"wrong\":$w,\"tbf_drops\":$(($(drops) - d0))"
done

# Gloo: torch.distributed over plain TCP, one rank per namespace.
if [ $GLOO = 1 ]; then
	if ! /usr/bin/python3 -c 'import torch' 2>/dev/null; then
		log "Gloo skipped: /usr/bin/python3 has no torch (apt-get install -y python3-torch)"
	else
		log "gloo fp32"
		d0=$(drops)
		pids=()
		for i in $(seq 1 $((N - 1))); do
			ip netns exec braid-n$i env GLOO_SOCKET_IFNAME=eth0 /usr/bin/python3 "$GLOO_PY" --world $N --rank $i \
				--master 10.77.0.1:29500 --size-mib $SIZE_MIB --iters $ITERS --json >/dev/null &
			pids+=($!)
		done
		out=$(ip netns exec braid-n0 env GLOO_SOCKET_IFNAME=eth0 /usr/bin/python3 "$GLOO_PY" --world $N --rank 0 \
			--master 10.77.0.1:29500 --size-mib $SIZE_MIB --iters $ITERS --json)
		for p in "${pids[@]}"; do wait "$p"; done
		t=$(echo "$out" | sed -n 's/.*"time_ms": *\([0-9.]*\).*/\1/p')
		w=$(echo "$out" | sed -n 's/.*"wrong": *\([0-9]*\).*/\1/p')
		report gloo fp32 "$t" ",\"wrong\":$w,\"tbf_drops\":$(($(drops) - d0))"
	fi
fi
