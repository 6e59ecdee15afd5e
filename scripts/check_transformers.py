#!/usr/bin/env python3
"""Checks what braid writes for the Llama family with Hugging Face's own classes.

    python3 scripts/check_transformers.py DIR [DIR ...]

Each DIR is a braid checkpoint (config.json, model.safetensors) or a LoRA adapter
(adapter_config.json, adapter_model.safetensors) with a reference.safetensors holding
tokens and the logits braid computed for them, as

    go test ./model -run '^TestLlamaWritesForPyTorch$' -args -pytorch-out OUT

writes them (OUT/llama_tiny, OUT/qwen2_tiny, OUT/mistral_tiny, OUT/llama_lora_tiny).
A checkpoint is loaded with transformers' AutoModelForCausalLM.from_pretrained (its
LlamaForCausalLM, MistralForCausalLM or Qwen2ForCausalLM, eager attention, float32,
on the CPU so that no TF32 matrix product blurs the comparison); an adapter with
peft's PeftModel.from_pretrained onto the base its adapter_config.json names. The
logits are compared with braid's; one JSON line per directory, exit status 1 if any
is above the tolerance or fails to load.

transformers and peft are not Debian packages, so `make test-pytorch` checks against
re-created modules (gen_llama_reference.py); this script runs where the real ones are
installed, such as the lent GPU machine (scripts/gpu-check.sh).
"""
import json
import os
import sys

import torch

TOL = 1e-5


def check(d):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    ref = load_file(os.path.join(d, "reference.safetensors"))
    tokens = ref["tokens"].to(torch.long)
    adapter = os.path.exists(os.path.join(d, "adapter_config.json"))
    if adapter:
        from peft import PeftModel
        with open(os.path.join(d, "adapter_config.json")) as f:
            base_dir = json.load(f)["base_model_name_or_path"]
        base = AutoModelForCausalLM.from_pretrained(base_dir, torch_dtype=torch.float32, attn_implementation="eager")
        model = PeftModel.from_pretrained(base, d)
        what = "peft.PeftModel on %s" % type(base).__name__
    else:
        model = AutoModelForCausalLM.from_pretrained(d, torch_dtype=torch.float32, attn_implementation="eager")
        what = "transformers." + type(model).__name__
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=tokens).logits
    diff = (logits.double() - ref["logits"].double()).abs().max().item()
    return {"check": "hf " + os.path.basename(d.rstrip("/")), "class": what, "max_abs_diff": diff, "tolerance": TOL, "ok": diff <= TOL}


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    fails = 0
    for d in sys.argv[1:]:
        try:
            row = check(d)
        except Exception as e:  # a load failure is a finding: report it and go on
            row = {"check": "hf " + os.path.basename(d.rstrip("/")), "ok": False, "error": "%s: %s" % (type(e).__name__, e)}
        print(json.dumps(row), flush=True)
        fails += not row["ok"]
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
