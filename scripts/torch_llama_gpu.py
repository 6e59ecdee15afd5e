#!/usr/bin/env python3
"""Peer baseline on a GPU for the Llama family: training tokens/s of PyTorch + Hugging Face transformers'
LlamaForCausalLM at SmolLM2-135M's shape (random init, nothing downloaded), forward + backward + clip + fused
AdamW, timed after warm-up with the GPU synchronised; the peer of `braid bench train --model smollm2-135m`.

Runs where PyTorch with CUDA and transformers are installed (the lent GPU machine has both; peft for lora8).
  python3 scripts/torch_llama_gpu.py                             # every row, one JSON object per line
  python3 scripts/torch_llama_gpu.py --rows smollm2-135m:bf16    # only the named rows (model:mode[@batch])
Modes: fp32 (TF32 matmuls allowed), bf16 (autocast, eager: no torch.compile), bf16+lora8 (PEFT LoRA r=8 on the
seven projections), bf16+compile. Attention: --attn eager (materialised scores, as braid computes them) or sdpa
(transformers' default, fused kernels).
Each row: {"impl","model","mode","batch","seq","tokens_per_s","step_ms","warmup_s","peak_gib","loss","attn"}."""
import argparse, json, time
import torch
from transformers import LlamaConfig, LlamaForCausalLM

ap = argparse.ArgumentParser()
ap.add_argument("--rows", default="smollm2-135m:fp32,smollm2-135m:bf16,smollm2-135m:bf16+lora8,smollm2-135m:bf16+compile")
ap.add_argument("--steps", type=int, default=10)
ap.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
a = ap.parse_args()
torch.backends.cuda.matmul.allow_tf32 = True
torch.backends.cudnn.allow_tf32 = True
CFG = {"smollm2-135m": (dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                             num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
                             rms_norm_eps=1e-5, rope_theta=100000.0, tie_word_embeddings=True), 16, 1024)}


def run(model, mode, B):
    kw, B0, T = CFG[model]
    B = B or B0
    cfg = LlamaConfig(**kw)
    cfg._attn_implementation = a.attn
    torch.manual_seed(0)
    m = LlamaForCausalLM(cfg).cuda()
    if "lora8" in mode:
        from peft import LoraConfig, get_peft_model
        m = get_peft_model(m, LoraConfig(r=8, lora_alpha=16, target_modules=[
            "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
    params = [p for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, fused=True)
    fwd = torch.compile(m) if "compile" in mode else m
    x = torch.randint(0, cfg.vocab_size, (B, T + 1), device="cuda")
    torch.cuda.reset_peak_memory_stats()

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=mode != "fp32"):
            lg = fwd(input_ids=x[:, :-1]).logits
            loss = torch.nn.functional.cross_entropy(lg.float().reshape(-1, lg.size(-1)), x[:, 1:].reshape(-1))
        loss.backward(); torch.nn.utils.clip_grad_norm_(params, 1.0); opt.step(); opt.zero_grad(set_to_none=True)
        return loss
    t0 = time.time()
    for _ in range(3):
        step()
    torch.cuda.synchronize(); warm = time.time() - t0
    t0 = time.time()
    for _ in range(a.steps):
        loss = step()
    torch.cuda.synchronize(); el = time.time() - t0
    print(json.dumps({"impl": "pytorch-" + torch.__version__, "model": model, "mode": mode, "batch": B, "seq": T,
                      "tokens_per_s": round(B * T * a.steps / el), "step_ms": round(1000 * el / a.steps, 2), "warmup_s": round(warm, 1),
                      "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2), "loss": round(float(loss.detach()), 3),
                      "attn": a.attn}), flush=True)


for row in a.rows.split(","):
    model, rest = row.split(":")
    mode, _, b = rest.partition("@")
    try:
        run(model, mode, int(b) if b else 0)
    except Exception as e:
        print(json.dumps({"model": model, "mode": mode, "error": repr(e)[:300]}), flush=True)
    torch.cuda.empty_cache()
