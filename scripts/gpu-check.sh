#!/usr/bin/env bash
# The GPU checks of issue 13 in one run, for a lent GPU machine (or any machine
# with an NVIDIA GPU). It builds nothing: build here first, then carry the
# outputs (`make build-cuda gpu-test-bin`: bin/braid-cuda and the test binaries,
# as they are or packed in .gpucarry/bins.tgz) and, for the peer, a copy of
# ../shared/bench/torch_gpu.py in .gpucarry/ (PEER=path overrides).
#   scripts/gpu-check.sh [full|quick]   # quick: no peer rows
# Prints one JSON object per line (doctor, each test binary, the CLI on the GPU,
# each benchmark row and the peer's rows for the same shapes), then a short
# table with the ratios; about 4 minutes on an H200 (full). Logs and the
# per-kernel profile go to $OUT (or /tmp/gpu-check).
set -uo pipefail
cd "$(dirname "$0")/.."
OUTDIR=${OUT:-/tmp/gpu-check}
mkdir -p "$OUTDIR"
PEER=${PEER:-.gpucarry/torch_gpu.py}
MODE=${1:-full}
# The binaries may come as one archive (smaller to carry): .gpucarry/bins.tgz.
[ -f .gpucarry/bins.tgz ] && tar xzf .gpucarry/bins.tgz
BIN=$PWD/bin/braid-cuda
export BRAID_CUDA_CACHE=${BRAID_CUDA_CACHE:-/tmp/braid-cuda-cache}
rows=$OUTDIR/rows.jsonl
: >"$rows"
emit() { echo "$1" | tee -a "$rows"; }
jstr() { python3 -c 'import json,sys; print(json.dumps(sys.stdin.read()[-600:]))'; }
t0=$(date +%s)

echo "== machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,temperature.gpu --format=csv,noheader 2>&1 | head -2
nproc

echo "== doctor"
emit "$(timeout 60 $BIN doctor --json 2>&1 | tail -1)"

echo "== correctness (GPU against the CPU reference)"
for t in "kernels/cuda cuda.test" "model/cudamodel cudamodel.test" "train train.test GPU" "node/nodetest nodetest.test GPU"; do
  set -- $t
  run=${3:+-test.run $3}
  log="$OUTDIR/test-$2.log"
  (cd "$1" && timeout 240 "$OLDPWD/bin/$2" -test.v -test.count=1 $run 2>&1) >"$log"
  grep -E '^(--- |PASS|FAIL|ok|panic)|relative|worst|loss .* →' "$log" | head -40
  emit "{\"check\":\"test $1\",\"passed\":$(grep -c '^--- PASS' "$log"),\"failed\":$(grep -cE '^--- FAIL|^FAIL|^panic' "$log"),\"skipped\":$(grep -c '^--- SKIP' "$log")}"
done

echo "== the CLI on the GPU: fine-tune the bundled base on Go source, evaluate, sample"
ft=/tmp/braid-ft
rm -rf "$ft"
if timeout 120 $BIN train --device cuda --model models/base-en --input kernels --input model --input train --input shard \
    --out "$ft" --steps 60 --batch 16 --lr 1e-3 --eval-every 30 --log-every 20 >"$OUTDIR/cli-train.log" 2>&1; then
  cat "$OUTDIR/cli-train.log" | grep -E 'device|model:|step +(1|20|40|60)/|held-out' | head -12
  for dev in cuda cpu; do
    r=$(timeout 120 $BIN eval --device $dev --model "$ft" --input node --json --max-tokens 200000 2>/dev/null | tail -1)
    emit "{\"check\":\"eval --device $dev (fine-tuned, node/ source)\",\"result\":${r:-null}}"
  done
  base=$(timeout 60 $BIN eval --device cuda --model models/base-en --input node --json --max-tokens 200000 2>/dev/null | tail -1)
  emit "{\"check\":\"eval --device cuda (base)\",\"result\":${base:-null}}"
  echo "-- sample:"; timeout 60 $BIN generate --device cuda --model "$ft" --prompt "func (s *Server) " --tokens 120 --temperature 0.7 2>&1 | head -12
else
  emit "{\"check\":\"cli train --device cuda\",\"error\":$(jstr <"$OUTDIR/cli-train.log")}"
fi

echo "== training step: braid (bench train) and the peer (torch_gpu.py), same shapes"
bench() { # model precision batch steps [extra flags]
  local m=$1 p=$2 b=$3 n=$4; shift 4
  timeout 150 $BIN bench train --device cuda --model "$m" --precision "$p" --batch "$b" --steps "$n" --warmup 3 --json "$@" 2>>"$OUTDIR/bench.err" | tail -1
}
brow() { out=$(bench "$@"); [ -n "$out" ] && emit "$out" || emit "{\"impl\":\"braid-cuda\",\"model\":\"$1\",\"mode\":\"$2\",\"batch\":$3,\"error\":$(tail -c 600 "$OUTDIR/bench.err" | jstr)}"; }
brow small bf16 8 20
brow small bf16 64 20
brow gpt2-124m bf16 16 10 --profile 3
brow gpt2-124m bf16 16 10 --lora-rank 8
brow gpt2-124m tf32 16 10
brow gpt2-124m fp32 16 5
brow smollm2-135m bf16 16 10
brow smollm2-135m bf16 16 10 --lora-rank 8
brow smollm2-135m tf32 16 5
grep -A40 '^# braid-cuda' "$OUTDIR/bench.err" | head -45
if [ "$MODE" = full ] && [ -f "$PEER" ]; then
  PYTHONUNBUFFERED=1 timeout 300 python3 "$PEER" --rows small:bf16@8,small:bf16@64,gpt2-124m:fp32,gpt2-124m:bf16,gpt2-124m:bf16+lora8,gpt2-124m:bf16+compile 2>"$OUTDIR/peer.err" |
    while read -r line; do emit "$line"; done
elif [ "$MODE" = full ]; then
  echo "peer script $PEER not found: no peer rows"
fi
if [ "$MODE" = full ]; then # the Llama family's peer (issue 16): transformers' LlamaForCausalLM
  PYTHONUNBUFFERED=1 timeout 240 python3 scripts/torch_llama_gpu.py --rows smollm2-135m:fp32,smollm2-135m:bf16,smollm2-135m:bf16+lora8 2>"$OUTDIR/peer-llama.err" |
    while read -r line; do emit "$line"; done
fi

echo "== Hugging Face's classes on what braid writes (issue 16: transformers' Llama/Mistral/Qwen2, peft's LoRA)"
if [ -x bin/model.test ] && python3 -c 'import transformers, peft, safetensors' 2>/dev/null; then
  hf=/tmp/braid-hf; rm -rf "$hf"
  (cd model && timeout 120 "$OLDPWD/bin/model.test" -test.run '^TestLlamaWritesForPyTorch$' -pytorch-out "$hf" >"$OUTDIR/hf-write.log" 2>&1)
  timeout 180 python3 scripts/check_transformers.py "$hf"/llama_tiny "$hf"/qwen2_tiny "$hf"/mistral_tiny "$hf"/llama_lora_tiny 2>"$OUTDIR/hf.err" |
    while read -r line; do emit "$line"; done
else
  emit "{\"check\":\"hf classes\",\"skipped\":\"needs bin/model.test (make gpu-test-bin) and python3 with transformers, peft, safetensors\"}"
fi

echo "== a 2-node cluster on the GPU: two braid-cuda node processes sharing it (scripts/demo.sh)"
if BRAID=$BIN DEVICE=cuda NODES=2 STEPS=${DEMO_STEPS:-80} OUT=/tmp/braid-demo-gpu \
    INPUTS="kernels model train shard node allreduce transport coordinator" timeout 200 scripts/demo.sh >"$OUTDIR/demo-gpu.log" 2>&1; then
  grep -E "DEVICE|cuda|job-|step .*/|held-out|base model|after fine-tune|perplexity" "$OUTDIR/demo-gpu.log" | head -24
  emit "{\"check\":\"2-node GPU job (scripts/demo.sh, 2 processes on one GPU)\",\"ok\":true}"
else
  tail -30 "$OUTDIR/demo-gpu.log"
  emit "{\"check\":\"2-node GPU job (scripts/demo.sh, 2 processes on one GPU)\",\"ok\":false}"
fi

echo "== summary ($(( $(date +%s) - t0 )) s)"
python3 - "$rows" <<'PY'
import json, sys
rows = []
for l in open(sys.argv[1]):
    try: rows.append(json.loads(l))
    except Exception: pass
bench = [r for r in rows if "impl" in r]
for r in bench:
    print(f'{r.get("impl","?"):22} {r.get("model","?"):10} {r.get("mode","?"):14} {r.get("batch","?"):>3}x{r.get("seq","?"):<5} '
          f'{r.get("tokens_per_s","-"):>9} tok/s {r.get("step_ms","-"):>8} ms {r.get("peak_gib","-"):>6} GiB  loss {r.get("loss","-")} {str(r.get("error",""))[:200]}')
peer = {(r["model"], r["mode"], r["batch"]): r for r in bench if str(r.get("impl","")).startswith("pytorch") and "tokens_per_s" in r}
for r in bench:
    if r.get("impl") == "braid-cuda" and "tokens_per_s" in r:
        mode = "fp32" if r["mode"] in ("tf32", "fp32") else r["mode"]
        for m in [mode] + (["bf16+compile"] if mode == "bf16" and r["model"] == "gpt2-124m" else []):
            p = peer.get((r["model"], m, r["batch"]))
            if p:
                print(f'ratio {r["model"]} {r["mode"]} batch {r["batch"]} vs pytorch {m}: {r["tokens_per_s"]/p["tokens_per_s"]:.2f}x tokens/s, memory {r["peak_gib"]}/{p["peak_gib"]} GiB')
for r in rows:
    if "check" in r or "built" in r:
        print(json.dumps(r)[:400])
PY
