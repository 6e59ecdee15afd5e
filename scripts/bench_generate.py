#!/usr/bin/python3
"""PyTorch's side of `braid bench generate`: tokens/s of greedy generation
on the CPU with a KV cache, for the same shapes, prompt and token counts.

A plain-PyTorch GPT-2 (pre-LayerNorm blocks, learned positions, tied
embedding, tanh-GELU MLP; transformers is not needed), randomly initialised
N(0, 0.02²), run in float32 under torch.inference_mode: the prompt once,
then one token a step against cached keys and values, as Hugging Face's
generate does with use_cache. Times include the prompt, as braid's do.

    OPENBLAS_NUM_THREADS=1 /usr/bin/python3 scripts/bench_generate.py --threads 1

prints one JSON object per model.
"""

import argparse
import json
import math
import time

import torch
import torch.nn.functional as F

MODELS = {
    "small": dict(V=257, T=256, C=192, L=6, NH=6),  # the bundled base's shape
    "gpt2-124m": dict(V=50257, T=1024, C=768, L=12, NH=12),
}


class GPT2:
    def __init__(self, V, T, C, L, NH, seed=1):
        g = torch.Generator().manual_seed(seed)
        r = lambda *s: torch.randn(*s, generator=g) * 0.02
        self.C, self.NH = C, NH
        self.wte, self.wpe = r(V, C), r(T, C)
        self.blocks = []
        for _ in range(L):
            self.blocks.append(dict(
                ln1w=torch.ones(C), ln1b=torch.zeros(C),
                qkvw=r(3 * C, C), qkvb=torch.zeros(3 * C),
                projw=r(C, C), projb=torch.zeros(C),
                ln2w=torch.ones(C), ln2b=torch.zeros(C),
                fcw=r(4 * C, C), fcb=torch.zeros(4 * C),
                fcprojw=r(C, 4 * C), fcprojb=torch.zeros(C)))
        self.lnfw, self.lnfb = torch.ones(C), torch.zeros(C)

    def step(self, tokens, pos0, cache):
        """Logits of the last of tokens (1, n) at positions pos0.., appending
        each layer's keys and values to cache[l]."""
        C, NH = self.C, self.NH
        hs = C // NH
        n = tokens.shape[1]
        x = self.wte[tokens] + self.wpe[pos0:pos0 + n]
        for l, b in enumerate(self.blocks):
            h = F.layer_norm(x, (C,), b["ln1w"], b["ln1b"], 1e-5)
            q, k, v = F.linear(h, b["qkvw"], b["qkvb"]).split(C, dim=2)
            q = q.view(1, n, NH, hs).transpose(1, 2)
            k = k.view(1, n, NH, hs).transpose(1, 2)
            v = v.view(1, n, NH, hs).transpose(1, 2)
            if cache[l] is not None:
                k = torch.cat([cache[l][0], k], dim=2)
                v = torch.cat([cache[l][1], v], dim=2)
            cache[l] = (k, v)
            att = (q @ k.transpose(-2, -1)) / math.sqrt(hs)
            if n > 1:  # causal within the new tokens
                S = k.shape[2]
                mask = torch.ones(n, S, dtype=torch.bool).tril(S - n)
                att = att.masked_fill(~mask, float("-inf"))
            y = (att.softmax(-1) @ v).transpose(1, 2).reshape(1, n, C)
            x = x + F.linear(y, b["projw"], b["projb"])
            h = F.layer_norm(x, (C,), b["ln2w"], b["ln2b"], 1e-5)
            x = x + F.linear(F.gelu(F.linear(h, b["fcw"], b["fcb"]), approximate="tanh"), b["fcprojw"], b["fcprojb"])
        x = F.layer_norm(x[:, -1:], (C,), self.lnfw, self.lnfb, 1e-5)
        return F.linear(x, self.wte)[0, -1]

    def generate(self, prompt, n):
        cache = [None] * len(self.blocks)
        logits = self.step(prompt, 0, cache)
        out, pos = [], prompt.shape[1]
        for _ in range(n):
            t = int(logits.argmax())
            out.append(t)
            logits = self.step(torch.tensor([[t]]), pos, cache)
            pos += 1
        return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="small,gpt2-124m")
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    for name in a.models.split(","):
        m = GPT2(**MODELS[name])
        prompt = torch.randint(0, MODELS[name]["V"], (1, a.prompt), generator=torch.Generator().manual_seed(2))
        with torch.inference_mode():
            m.generate(prompt[:, :8], 4)  # warm up the allocator and kernels
            t0 = time.perf_counter()
            out = m.generate(prompt, a.tokens)
            dt = time.perf_counter() - t0
        print(json.dumps({"model": name, "prompt": a.prompt, "tokens": len(out), "threads": a.threads,
                          "torch": torch.__version__, "kv_tok_s": len(out) / dt}), flush=True)


if __name__ == "__main__":
    main()
