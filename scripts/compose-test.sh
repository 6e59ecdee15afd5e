#!/usr/bin/env bash
# End-to-end test of braid in containers (`make compose-test`): 4 nodes from
# docker-compose.yml on a private bridge network, each with its own certificate.
#
#   1. builds bin/braid and the scratch image (make image);
#   2. makes a CA and one certificate per node in a temporary directory, and
#      prepares a dataset on the host from Go's own net/http source (always
#      present where braid builds, no download);
#   3. starts the compose project (a unique name, so runs never collide) and
#      waits until every node sees a leader and an epoch with all 4 members;
#   4. pushes the dataset through n1 and waits until no shard is under-replicated;
#   5. the job part:
#      submits a fine-tuning job through n1, waits for step >= 10, kills one
#      node and cuts another off the network (never n1, the API node), waits
#      for the job to complete on the survivors and checks that its held-out
#      loss beat the base model's.
#   Whatever happens, the project is taken down with its volumes and network
#   (`down -v`) and the temporary directory removed; on failure the last 50
#   log lines of every container are printed first.
#
# Every wait has a deadline. Knobs (environment): BRAID_IMAGE (braid:dev),
# SKIP_BUILD=1 (use the existing image and bin/braid), KEEP=1 (leave the
# cluster up for inspection; prints how to take it down), BRAID_SUBNET_PREFIX
# (the /24 to use, default: the first free one of 172.28.77..172.28.126),
# CLUSTER_TIMEOUT (120 s), DATA_TIMEOUT (180 s), JOB_STEPS (60),
# JOB_START_TIMEOUT (300 s: submit to step 10), JOB_TIMEOUT (600 s: faults to
# completed), FAULT_TIMEOUT (90 s: each fault to its new epoch).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

BRAID_IMAGE=${BRAID_IMAGE:-braid:dev}
CLUSTER_TIMEOUT=${CLUSTER_TIMEOUT:-120}
DATA_TIMEOUT=${DATA_TIMEOUT:-180}
JOB_STEPS=${JOB_STEPS:-60}
JOB_START_TIMEOUT=${JOB_START_TIMEOUT:-300}
JOB_TIMEOUT=${JOB_TIMEOUT:-600}
FAULT_TIMEOUT=${FAULT_TIMEOUT:-90}
NODES=(n1 n2 n3 n4)
API_NODE=n1
DATASET=nethttp
T0=$SECONDS

log() { printf '[compose-test %4ds] %s\n' "$((SECONDS - T0))" "$*"; }
die() {
  log "FAIL: $*"
  exit 1
}

command -v docker >/dev/null || die "docker is not installed"
command -v python3 >/dev/null || die "python3 is needed to read the JSON the nodes print"
docker info >/dev/null 2>&1 || die "no Docker engine answers (docker info failed)"
if docker compose version >/dev/null 2>&1; then
  DC_BIN=(docker compose)
elif command -v docker-compose >/dev/null; then
  DC_BIN=(docker-compose)
else
  die "neither 'docker compose' nor 'docker-compose' is installed"
fi

PROJECT="braidtest$$x$RANDOM"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/braid-compose.XXXXXX")
STARTED=0
dc() { "${DC_BIN[@]}" -p "$PROJECT" -f "$ROOT/docker-compose.yml" "$@"; }

dump_logs() {
  for n in "${NODES[@]}"; do
    echo "----- last 50 log lines of $n ($(docker inspect -f '{{.State.Status}}' "$(dc ps -q "$n" 2>/dev/null)" 2>/dev/null || echo gone)) -----"
    dc logs --no-color --tail 50 "$n" 2>&1 || true
  done
  echo "-----"
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ "$STARTED" = 1 ]; then
    if [ "$rc" != 0 ]; then
      dc ps 2>&1 || true
      dump_logs
    fi
    if [ "${KEEP:-0}" = 1 ]; then
      log "KEEP=1: leaving project $PROJECT up; take it down with:"
      echo "  BRAID_CERTS=$BRAID_CERTS BRAID_DATASETS=$BRAID_DATASETS BRAID_TOKEN=$BRAID_TOKEN BRAID_SUBNET_PREFIX=$BRAID_SUBNET_PREFIX ${DC_BIN[*]} -p $PROJECT down -v && rm -rf $WORK"
      exit "$rc"
    fi
    log "taking down project $PROJECT (containers, network, volumes)"
    timeout 120 "${DC_BIN[@]}" -p "$PROJECT" -f "$ROOT/docker-compose.yml" down -v --remove-orphans --timeout 10 >/dev/null 2>&1 ||
      log "warning: 'down -v' failed; check docker ps -a --filter label=com.docker.compose.project=$PROJECT"
  fi
  rm -rf "$WORK"
  if [ "$rc" = 0 ]; then log "PASS"; else log "FAILED (exit $rc)"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# bctl NODE ARGS...: run `braid ARGS` inside NODE (the image has no shell), bounded.
bctl() {
  local n=$1
  shift
  timeout 60 "${DC_BIN[@]}" -p "$PROJECT" -f "$ROOT/docker-compose.yml" exec -T "$n" /braid "$@" </dev/null
}
cid() { dc ps -q "$1"; }

# jget EXPR: evaluate a Python expression on the JSON document on stdin (as j).
jget() { python3 -c 'import json,sys; j=json.load(sys.stdin); v=eval(sys.argv[1]); print(v if not isinstance(v,(dict,list)) else json.dumps(v))' "$1"; }

# wait_until DESC TIMEOUT INTERVAL CMD...: run CMD until it succeeds, at most TIMEOUT s.
wait_until() {
  local desc=$1 limit=$2 every=$3
  shift 3
  local start=$SECONDS
  log "waiting (at most ${limit}s) for $desc"
  until "$@"; do
    if ((SECONDS - start >= limit)); then
      die "timed out after ${limit}s waiting for $desc"
    fi
    sleep "$every"
  done
  log "ok after $((SECONDS - start))s: $desc"
}

# ---------------------------------------------------------------- 1. image
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  log "building bin/braid and the image $BRAID_IMAGE (make image)"
  make --no-print-directory image IMAGE="$BRAID_IMAGE" >"$WORK/build.log" 2>&1 || {
    tail -40 "$WORK/build.log"
    die "make image failed"
  }
fi
[ -x bin/braid ] || die "bin/braid is missing (run make build)"
docker image inspect "$BRAID_IMAGE" >/dev/null 2>&1 || die "image $BRAID_IMAGE is missing (run make image)"
docker run --rm "$BRAID_IMAGE" --version >/dev/null || die "the image $BRAID_IMAGE does not run"
log "image $BRAID_IMAGE: $(docker run --rm "$BRAID_IMAGE" --version)"

# ----------------------------------------------------- 2. subnet, PKI, dataset
if [ -z "${BRAID_SUBNET_PREFIX:-}" ]; then
  # The first 172.28.X.0/24 that overlaps no Docker network and no host route.
  taken=$( (docker network inspect -f '{{range .IPAM.Config}}{{.Subnet}} {{end}}' $(docker network ls -q) 2>/dev/null || true; ip -4 route 2>/dev/null | awk '{print $1}' || true) | tr ' ' '\n')
  BRAID_SUBNET_PREFIX=$(printf '%s\n' "$taken" | python3 -c '
import ipaddress, sys
taken = []
for w in sys.stdin.read().split():
    try:
        taken.append(ipaddress.ip_network(w, strict=False))
    except ValueError:
        pass
for x in range(77, 127):
    net = ipaddress.ip_network("172.28.%d.0/24" % x)
    if not any(net.version == t.version and net.overlaps(t) for t in taken):
        print("172.28.%d" % x)
        break
')
  [ -n "$BRAID_SUBNET_PREFIX" ] || die "no free /24 in 172.28.77-126.0; set BRAID_SUBNET_PREFIX"
fi
export BRAID_SUBNET_PREFIX BRAID_IMAGE
export BRAID_CERTS=$WORK/certs BRAID_DATASETS=$WORK/datasets
BRAID_TOKEN=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
export BRAID_TOKEN

log "making a CA and 4 node certificates in $WORK (subnet $BRAID_SUBNET_PREFIX.0/24)"
bin/braid ca init --dir "$WORK/ca" >/dev/null
i=1
for n in "${NODES[@]}"; do
  ip="$BRAID_SUBNET_PREFIX.1$i"
  bin/braid ca issue --dir "$WORK/ca" --name "$n" --host "$ip" --host "$n" >/dev/null
  mkdir -p "$BRAID_CERTS/$n"
  cp "$WORK/ca/ca.pem" "$WORK/ca/gossip.key" "$WORK/ca/$n.pem" "$WORK/ca/$n-key.pem" "$BRAID_CERTS/$n/"
  i=$((i + 1))
done

CORPUS=$(go env GOROOT)/src/net/http
[ -d "$CORPUS" ] || die "no corpus at $CORPUS"
log "preparing dataset $DATASET from $CORPUS"
mkdir -p "$BRAID_DATASETS"
bin/braid data prepare --input "$CORPUS" --out "$BRAID_DATASETS/$DATASET" --name "$DATASET" \
  --seq-len 128 --shard-mib 1 2>/dev/null | sed 's/^/    /'
NSHARDS=$(jget 'len(j["shards"])' <"$BRAID_DATASETS/$DATASET/manifest.json")

# ---------------------------------------------------------------- 3. cluster
log "starting project $PROJECT: ${NODES[*]} (${DC_BIN[*]})"
STARTED=1
dc up -d >"$WORK/up.log" 2>&1 || {
  cat "$WORK/up.log"
  die "compose up failed"
}

# formed NODE WANT: NODE sees a leader, an epoch of WANT members and WANT alive members.
formed() {
  local n=$1 want=$2 st
  st=$(bctl "$n" status --json 2>/dev/null) || return 1
  STATUS_LINE=$(printf '%s' "$st" | jget '"leader=%s term=%s epoch=%s %s" % (j["leader"] or "-", j["term"], j["epoch"]["id"], ",".join(j["epoch"]["members"] or []))') || return 1
  printf '%s' "$st" | python3 -c '
import json, sys
j = json.load(sys.stdin); want = int(sys.argv[1])
alive = [m["name"] for m in j["members"] if m["state"] == "alive"]
sys.exit(0 if j["leader"] and len(j["epoch"]["members"] or []) == want and len(alive) == want else 1)' "$want"
}
all_formed() {
  local n
  for n in "${NODES[@]}"; do
    formed "$n" 4 || return 1
  done
}
t=$SECONDS
wait_until "a leader and an epoch with all 4 members, as seen by every node" "$CLUSTER_TIMEOUT" 2 all_formed
log "cluster formed in $((SECONDS - t))s: $STATUS_LINE"
bctl "$API_NODE" status | sed 's/^/    /'

# ---------------------------------------------------------------- 4. dataset
t=$SECONDS
log "pushing dataset $DATASET ($NSHARDS shards) through $API_NODE"
bctl "$API_NODE" data push /data/"$DATASET" | sed 's/^/    /' || die "braid data push failed"
replicated() {
  local st
  st=$(bctl "$API_NODE" data status --json "$DATASET" 2>/dev/null) || return 1
  DATA_LINE=$(printf '%s' "$st" | jget '"%d shards, %d healthy, %d under-replicated" % (len(j["shards"]), j["healthy"], j["under_replicated"])') || return 1
  printf '%s' "$st" | python3 -c '
import json, sys
j = json.load(sys.stdin)
sys.exit(0 if j["under_replicated"] == 0 and j["healthy"] == len(j["shards"]) == int(sys.argv[1]) else 1)' "$NSHARDS"
}
wait_until "dataset $DATASET with no under-replicated shard" "$DATA_TIMEOUT" 2 replicated
log "dataset replicated in $((SECONDS - t))s: $DATA_LINE"
bctl "$API_NODE" data status "$DATASET" | sed 's/^/    /'

# ---------------------------------------------------------------- 5. a job
# The job part always runs: a `braid job` that cannot even print its help is
# a failure of this test, not a reason to pass without the part that matters.
bctl "$API_NODE" job --help >/dev/null 2>&1 || die "braid job --help failed in the container: the job part cannot run"

t=$SECONDS
log "submitting a job through $API_NODE: $JOB_STEPS steps, global batch 8 on $DATASET from /models/base-en"
JOB=$(bctl "$API_NODE" job submit --api http://127.0.0.1:7950 --model /models/base-en --dataset "$DATASET" \
  --steps "$JOB_STEPS" --global-batch 8 --lr 1e-3 --checkpoint-every 20 --eval-every 20 --seed 1) ||
  die "braid job submit failed"
JOB=$(printf '%s' "$JOB" | tail -n 1 | tr -d '[:space:]')
[ -n "$JOB" ] || die "braid job submit printed no job id"
log "job $JOB submitted"

# job_poll: fetch the job's status into JOB_JSON and a summary into JOB_LINE.
JOB_JSON='{}'
job_poll() {
  local st
  st=$(bctl "$API_NODE" job status --api http://127.0.0.1:7950 --json "$JOB" 2>/dev/null) || return 1
  JOB_JSON=$st
  JOB_STATE=$(printf '%s' "$st" | jget 'j["state"]') || return 1
  JOB_STEP=$(printf '%s' "$st" | jget 'int(j.get("step") or 0)') || return 1
  JOB_LINE=$(printf '%s' "$st" | jget '"state=%s step=%s/%s loss=%s heldout=%s base_heldout=%s members=%s" % (j.get("state"), j.get("step"), j.get("steps"), j.get("loss"), j.get("heldout_loss"), j.get("base_heldout_loss"), ",".join(j.get("members") or []))')
}
job_failed() {
  log "job $JOB ended $JOB_STATE: $(printf '%s' "$JOB_JSON" | jget 'j.get("error") or "(no error given)"')"
  printf '%s\n' "$JOB_JSON"
  die "job $JOB $JOB_STATE"
}
LAST_REPORT=0
report() {
  if ((SECONDS - LAST_REPORT >= 10)); then
    log "  job: $JOB_LINE"
    LAST_REPORT=$SECONDS
  fi
}
# job_at STEP: true once the job is at STEP or later, or has ended.
job_at() {
  job_poll || return 1
  report
  case $JOB_STATE in failed | cancelled) job_failed ;; completed) return 0 ;; esac
  [ "$JOB_STEP" -ge "$1" ]
}
wait_until "job $JOB at step 10" "$JOB_START_TIMEOUT" 1 job_at 10
log "job at step $JOB_STEP after $((SECONDS - t))s: $JOB_LINE"

# The faults, one after the other (never the API node): first a crash, then,
# once the survivors committed an epoch without it, a partition. Taking both
# at once could take two of the three Raft voters at once; in sequence the
# leader promotes the non-voter in between, so a majority always remains.
KILLED=n4
CUT=n3
# epoch_without NODE WANT: the API node's epoch has WANT members, NODE not among them.
epoch_without() {
  local st
  st=$(bctl "$API_NODE" status --json 2>/dev/null) || return 1
  STATUS_LINE=$(printf '%s' "$st" | jget '"leader=%s epoch=%s %s" % (j["leader"] or "-", j["epoch"]["id"], ",".join(j["epoch"]["members"] or []))')
  printf '%s' "$st" | python3 -c '
import json, sys
j = json.load(sys.stdin); gone, want = sys.argv[1], int(sys.argv[2])
m = j["epoch"]["members"] or []
voters = [x["name"] for x in j["members"] if x["state"] == "alive" and x.get("voter")]
sys.exit(0 if j["leader"] and gone not in m and len(m) == want and len(voters) == min(3, want) else 1)' "$1" "$2"
}
FAULT_STEP=$JOB_STEP
log "FAULT 1: docker kill $KILLED (job at step $JOB_STEP)"
docker kill "$(cid "$KILLED")" >/dev/null
wait_until "an epoch without $KILLED (and 3 alive voters)" "$FAULT_TIMEOUT" 1 epoch_without "$KILLED" 3
log "  $STATUS_LINE"
NET=$(docker inspect -f '{{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{end}}' "$(cid "$CUT")")
job_poll || true
log "FAULT 2: docker network disconnect $NET $CUT (job at step $JOB_STEP, $JOB_STATE)"
[ "$JOB_STATE" = completed ] && log "WARNING: the job completed before the second fault; raise JOB_STEPS to exercise it"
docker network disconnect "$NET" "$(cid "$CUT")"
wait_until "an epoch without $CUT" "$FAULT_TIMEOUT" 1 epoch_without "$CUT" 2
log "  $STATUS_LINE"

t2=$SECONDS
job_done() { job_at 1000000000; }
wait_until "job $JOB to complete on the survivors" "$JOB_TIMEOUT" 2 job_done
LAST_REPORT=0
report
[ "$JOB_STATE" = completed ] || job_failed
log "job $JOB completed: $((SECONDS - t))s from submission, $((SECONDS - t2))s after the faults (injected at step $FAULT_STEP)"
printf '%s' "$JOB_JSON" | python3 -c '
import json, sys
j = json.load(sys.stdin)
print(json.dumps({k: j.get(k) for k in ("id", "state", "step", "steps", "loss", "heldout_loss", "base_heldout_loss", "members", "weights_hash", "error")}))' | sed 's/^/    /'
printf '%s' "$JOB_JSON" | python3 -c '
import json, sys
j = json.load(sys.stdin)
gone = sys.argv[1:]
h, b = j.get("heldout_loss"), j.get("base_heldout_loss")
if j.get("state") != "completed":
    sys.exit("job state %r, want completed" % j.get("state"))
if not isinstance(h, (int, float)) or not isinstance(b, (int, float)) or not (h > 0 and b > 0):
    sys.exit("held-out losses missing or not positive: heldout_loss=%r base_heldout_loss=%r" % (h, b))
if not h < b:
    sys.exit("heldout_loss %.4f is not below base_heldout_loss %.4f" % (h, b))
if j.get("step") != j.get("steps"):
    sys.exit("job completed at step %r of %r" % (j.get("step"), j.get("steps")))
# Beyond the contract, where the status has them: every worker that finished
# holds the same weights as the job (replicas stay bitwise identical).
workers = [w for w in (j.get("workers") or []) if w.get("weights_hash") and w.get("node") not in gone]
if any(w["weights_hash"] != j.get("weights_hash") for w in workers):
    sys.exit("workers disagree on the weights: job %s, %s" % (j.get("weights_hash"), {w["node"]: w["weights_hash"] for w in workers}))
if workers:
    print("%d surviving workers hold the same weights %s" % (len(workers), j.get("weights_hash")))
if set(gone) & set(j.get("members") or []):
    print("WARNING: the job still lists %s among its members" % sorted(set(gone) & set(j.get("members") or [])))
print("held-out loss %.4f < base %.4f: the fine-tune learned" % (h, b))
' "$KILLED" "$CUT" || die "job result check failed"
log "job part passed: $KILLED killed and $CUT cut off at step $FAULT_STEP, job completed on $(printf '%s' "$JOB_JSON" | jget '",".join(j.get("members") or [])')"
