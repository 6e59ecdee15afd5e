#!/usr/bin/env bash
# The GPU checks of issue 13 in one run, for a lent GPU machine (or any machine
# with an NVIDIA GPU). It builds nothing: build here first, then carry the
# outputs (bin/braid-cuda, bin/cudamodel.test, bin/cuda.test from
# `make build-cuda gpu-test-bin`) and, for the peer, a copy of
# ../shared/bench/torch_gpu.py in .gpucarry/ (PEER=path overrides).
#   scripts/gpu-check.sh [quick]      # quick: no peer rows, no GPT-2 fp32 row
# Prints one JSON object per line (doctor, each test, each benchmark row with
# the peer's row for the same shape), then a short table; finishes in well
# under 6 minutes on an H200. Logs go to $OUT (or /tmp/gpu-check) when set.
set -uo pipefail
cd "$(dirname "$0")/.."
OUTDIR=${OUT:-/tmp/gpu-check}
mkdir -p "$OUTDIR"
PEER=${PEER:-.gpucarry/torch_gpu.py}
MODE=${1:-full}
BIN=bin/braid-cuda
export BRAID_CUDA_CACHE=${BRAID_CUDA_CACHE:-/tmp/braid-cuda-cache}
rows=$OUTDIR/rows.jsonl
: >"$rows"
emit() { echo "$1" | tee -a "$rows"; }
t0=$(date +%s)

echo "== machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,temperature.gpu --format=csv,noheader 2>&1 | head -2
nproc

echo "== doctor"
emit "$(timeout 60 $BIN doctor --json 2>&1 | tail -1)"

echo "== correctness (GPU against the CPU reference)"
for t in "kernels/cuda bin/cuda.test" "model/cudamodel bin/cudamodel.test"; do
  set -- $t
  (cd "$1" && timeout 240 "../../$2" -test.v -test.count=1 2>&1) | tee "$OUTDIR/test-$(basename "$2").log" |
    grep -E '^(=== RUN|--- |\s+model_test|\s+cuda_test|PASS|FAIL|ok|panic)|relative|worst|loss' | head -60
  status=$(grep -cE '^--- FAIL|^FAIL|panic' "$OUTDIR/test-$(basename "$2").log")
  emit "{\"check\":\"test $1\",\"failures\":$status}"
done

echo "== training step: braid (bench train) and the peer (torch_gpu.py), same shapes"
bench() { # model precision batch
  timeout 120 $BIN bench train --device cuda --model "$1" --precision "$2" --batch "$3" --steps "${4:-10}" --warmup 3 --json --breakdown 2>"$OUTDIR/bench-$1-$2-$3.err" | tail -1
}
braid_rows=("small bf16 8 20" "small bf16 64 20" "gpt2-124m bf16 16 10")
[ "$MODE" = full ] && braid_rows+=("gpt2-124m tf32 16 10" "gpt2-124m fp32 16 5")
for r in "${braid_rows[@]}"; do
  out=$(bench $r)
  [ -n "$out" ] && emit "$out" || { set -- $r; emit "{\"impl\":\"braid-cuda\",\"model\":\"$1\",\"mode\":\"$2\",\"batch\":$3,\"error\":$(tail -c 400 "$OUTDIR/bench-$1-$2-$3.err" | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read()))')}"; }
done
if [ "$MODE" = full ] && [ -f "$PEER" ]; then
  PYTHONUNBUFFERED=1 timeout 300 python3 "$PEER" --rows small:bf16@8,small:bf16@64,gpt2-124m:fp32,gpt2-124m:bf16,gpt2-124m:bf16+lora8,gpt2-124m:bf16+compile 2>"$OUTDIR/peer.err" |
    while read -r line; do emit "$line"; done
elif [ "$MODE" = full ]; then
  echo "peer script $PEER not found: no peer rows"
fi

echo "== summary ($(( $(date +%s) - t0 )) s)"
python3 - "$rows" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
bench = [r for r in rows if "tokens_per_s" in r or "error" in r and "impl" in r]
for r in bench:
    print(f'{r.get("impl","?"):22} {r.get("model","?"):10} {r.get("mode","?"):14} {r.get("batch","?"):>3}x{r.get("seq","?"):<5} '
          f'{r.get("tokens_per_s","-"):>9} tok/s {r.get("step_ms","-"):>8} ms {r.get("peak_gib","-"):>6} GiB  loss {r.get("loss","-")} {r.get("error","")[:120]}')
peer = {(r["model"], r["mode"], r["batch"]): r for r in bench if str(r.get("impl","")).startswith("pytorch") and "tokens_per_s" in r}
for r in bench:
    if r.get("impl") == "braid-cuda" and "tokens_per_s" in r:
        mode = "fp32" if r["mode"] in ("tf32", "fp32") else r["mode"]
        p = peer.get((r["model"], mode, r["batch"]))
        if p:
            print(f'ratio {r["model"]} {r["mode"]} batch {r["batch"]}: braid/pytorch = {r["tokens_per_s"]/p["tokens_per_s"]:.2f}x tokens/s, memory {r["peak_gib"]}/{p["peak_gib"]} GiB')
for r in rows:
    if "check" in r or "built" in r:
        print(json.dumps(r)[:300])
PY
