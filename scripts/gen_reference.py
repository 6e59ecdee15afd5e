#!/usr/bin/env python3
"""Generate PyTorch reference fixtures for braid's kernel and model tests.

Usage (from anywhere; paths are resolved from this file's location):

    /usr/bin/python3 scripts/gen_reference.py

Writes
    kernels/testdata/reference.safetensors  one case per kernel, forward and backward
    model/testdata/gpt2_tiny.safetensors    a tiny GPT-2: logits, loss, gradients and
                                            10 AdamW steps with gradient clipping
The tensors and hyper-parameters are listed in the README.md next to each file.

Precision: every random input is drawn in float64 and rounded to float32 (the
precision it is stored in), then all computation -- forward, autograd backward,
clip_grad_norm_ and AdamW -- runs in float64 on those rounded values, and the
results are rounded once to float32 when stored. The references are therefore
as accurate as F32 storage allows; a float32 implementation should differ only
by its own rounding error.

Determinism: torch.manual_seed(0), one seeded torch.Generator per fixture,
single-threaded deterministic CPU kernels and a canonical file layout, so
running the script twice produces byte-identical files (on the same torch
build).

File format: safetensors, written by hand with struct and json (no safetensors
package needed) in the same canonical form as braid's Go encoder
(model/safetensors.Encode): "__metadata__" first with sorted keys, tensors
sorted by name in both header and data, compact JSON, header padded with
spaces so the data section starts 8-byte aligned. Floats are F32, integer
tensors (tokens, targets) are I32.
"""

import json
import math
import os
import struct
import sys

import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED = 0


# ----------------------------------------------------------------------------
# safetensors writer


def _tensor_bytes(t):
    """Return (dtype, shape, little-endian bytes) for a float or int tensor."""
    t = t.detach().contiguous()
    shape = list(t.shape)
    if t.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        vals = t.to(torch.float32).flatten().tolist()  # exact float32 values
        return "F32", shape, struct.pack("<%df" % len(vals), *vals)
    if t.dtype in (torch.int32, torch.int64):
        vals = t.flatten().tolist()
        for v in vals:
            assert -(2**31) <= v < 2**31, "integer fixture out of int32 range"
        return "I32", shape, struct.pack("<%di" % len(vals), *vals)
    raise TypeError("unsupported dtype %s" % t.dtype)


def write_safetensors(path, tensors, metadata):
    """Write {name: tensor} and {str: str} metadata atomically to path."""
    header = {}
    if metadata:
        for k, v in metadata.items():
            assert isinstance(k, str) and isinstance(v, str), (k, v)
        header["__metadata__"] = {k: metadata[k] for k in sorted(metadata)}
    chunks, off = [], 0
    for name in sorted(tensors):
        dtype, shape, data = _tensor_bytes(tensors[name])
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(data)]}
        chunks.append(data)
        off += len(data)
    h = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    h += b" " * ((8 - (8 + len(h)) % 8) % 8)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for c in chunks:
            f.write(c)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    print("wrote %s (%d tensors, %d bytes)" % (os.path.relpath(path, ROOT), len(tensors), 8 + len(h) + off))


# ----------------------------------------------------------------------------
# helpers


def r32(t):
    """Round to float32 and back: the value the fixture file will hold."""
    return t.to(torch.float32).to(torch.float64)


def randn(g, *shape, scale=1.0):
    return r32(torch.randn(*shape, generator=g, dtype=torch.float64) * scale)


def uniform(g, lo, hi, *shape):
    return r32(lo + (hi - lo) * torch.rand(*shape, generator=g, dtype=torch.float64))


def leaf(t):
    return t.clone().requires_grad_(True)


def causal_attention(qkv, nh):
    """qkv (B,T,3C) as [q|k|v] -> out (B,T,C), att (B,NH,T,T)."""
    B, T, C3 = qkv.shape
    C = C3 // 3
    hs = C // nh
    q, k, v = qkv.split(C, dim=2)
    q = q.view(B, T, nh, hs).transpose(1, 2)  # (B, NH, T, hs)
    k = k.view(B, T, nh, hs).transpose(1, 2)
    v = v.view(B, T, nh, hs).transpose(1, 2)
    scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))  # (B, NH, T, T)
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
    scores = scores.masked_fill(~mask, float("-inf"))
    att = F.softmax(scores, dim=-1)  # subtracts the row max; exact 0 above the diagonal
    out = (att @ v).transpose(1, 2).contiguous().view(B, T, C)  # heads concatenated in order
    return out, att


# ----------------------------------------------------------------------------
# kernels/testdata/reference.safetensors


def kernel_fixtures():
    out, md = {}, {}

    def put(prefix, **ts):
        for k, v in ts.items():
            out[prefix + "." + k] = v

    def meta(prefix, **kv):
        for k, v in kv.items():
            md[prefix + "." + k] = str(v)

    # linear: out = inp @ weight.T + bias
    g = torch.Generator().manual_seed(SEED + 1)
    B, T, C, OC = 2, 5, 12, 20
    inp, w, b = leaf(randn(g, B, T, C)), leaf(randn(g, OC, C, scale=0.3)), leaf(randn(g, OC, scale=0.1))
    y = F.linear(inp, w, b)
    dout = randn(g, B, T, OC)
    y.backward(dout)
    put("linear", inp=inp, weight=w, bias=b, out=y, dout=dout, dinp=inp.grad, dweight=w.grad, dbias=b.grad)
    meta("linear", B=B, T=T, C=C, OC=OC)

    # layernorm: biased variance, eps inside the sqrt
    g = torch.Generator().manual_seed(SEED + 2)
    B, T, C, eps = 2, 5, 12, 1e-5
    inp = leaf(randn(g, B, T, C) * 2.0 + 0.5)
    w = leaf(r32(1.0 + 0.1 * torch.randn(C, generator=g, dtype=torch.float64)))
    b = leaf(randn(g, C, scale=0.1))
    y = F.layer_norm(inp, (C,), w, b, eps)
    x = inp.detach()
    mean = x.mean(dim=-1)
    var = ((x - mean.unsqueeze(-1)) ** 2).mean(dim=-1)
    rstd = 1.0 / torch.sqrt(var + eps)
    dout = randn(g, B, T, C)
    y.backward(dout)
    put("layernorm", inp=inp, weight=w, bias=b, out=y, mean=mean, rstd=rstd, dout=dout,
        dinp=inp.grad, dweight=w.grad, dbias=b.grad)
    meta("layernorm", B=B, T=T, C=C, eps=eps)

    # gelu, tanh approximation
    g = torch.Generator().manual_seed(SEED + 3)
    inp = leaf(uniform(g, -6.0, 6.0, 2, 5, 12))
    y = F.gelu(inp, approximate="tanh")
    dout = randn(g, 2, 5, 12)
    y.backward(dout)
    put("gelu", inp=inp, out=y, dout=dout, dinp=inp.grad)
    meta("gelu", shape="2,5,12", approximate="tanh")

    # causal multi-head self-attention
    g = torch.Generator().manual_seed(SEED + 4)
    B, T, C, NH = 2, 6, 16, 4
    qkv = leaf(randn(g, B, T, 3 * C))
    y, att = causal_attention(qkv, NH)
    dout = randn(g, B, T, C)
    y.backward(dout)
    put("attention", qkv=qkv, att=att, out=y, dout=dout, dqkv=qkv.grad)
    meta("attention", B=B, T=T, C=C, NH=NH, scale="1/sqrt(C/NH)")

    # softmax cross-entropy, mean over B*T
    g = torch.Generator().manual_seed(SEED + 5)
    B, T, V = 2, 5, 40
    logits = leaf(randn(g, B, T, V, scale=2.0))
    targets = torch.randint(0, V, (B, T), generator=g, dtype=torch.int64)
    probs = F.softmax(logits.detach(), dim=-1)
    losses = F.cross_entropy(logits.detach().view(-1, V), targets.view(-1), reduction="none").view(B, T)
    loss = F.cross_entropy(logits.view(-1, V), targets.view(-1))
    loss.backward()
    put("crossentropy", logits=logits, targets=targets.to(torch.int32), probs=probs, losses=losses,
        loss=loss.detach().reshape(1), dlogits=logits.grad)
    meta("crossentropy", B=B, T=T, V=V, reduction="mean")

    # encoder: token + position embedding
    g = torch.Generator().manual_seed(SEED + 6)
    B, T, C, V, maxT = 2, 5, 12, 40, 8
    tokens = torch.randint(0, V, (B, T), generator=g, dtype=torch.int64)
    tokens[0, 3] = tokens[0, 1]  # repeats within and across rows: the
    tokens[1, 0] = tokens[0, 1]  # backward must accumulate, not overwrite
    tokens[1, 4] = tokens[1, 2]
    wte, wpe = leaf(randn(g, V, C)), leaf(randn(g, maxT, C))
    y = wte[tokens] + wpe[:T].unsqueeze(0)
    dout = randn(g, B, T, C)
    y.backward(dout)
    put("encoder", tokens=tokens.to(torch.int32), wte=wte, wpe=wpe, out=y, dout=dout, dwte=wte.grad, dwpe=wpe.grad)
    meta("encoder", B=B, T=T, C=C, V=V, maxT=maxT)

    # AdamW, three steps
    g = torch.Generator().manual_seed(SEED + 7)
    lr, betas, eps, wd = 1e-2, (0.9, 0.95), 1e-8, 0.1
    p = torch.nn.Parameter(randn(g, 50))
    param0 = p.detach().clone()
    opt = torch.optim.AdamW([p], lr=lr, betas=betas, eps=eps, weight_decay=wd, foreach=False)
    grads, params = randn(g, 3, 50), []
    for s in range(3):
        p.grad = grads[s].clone()
        opt.step()
        params.append(p.detach().clone())
    st = opt.state[p]
    put("adamw", param0=param0, grads=grads, params=torch.stack(params), m=st["exp_avg"], v=st["exp_avg_sq"])
    meta("adamw", lr=lr, beta1=betas[0], beta2=betas[1], eps=eps, weight_decay=wd, steps=3)

    # global-norm gradient clipping over two tensors (30 and 20 elements)
    g = torch.Generator().manual_seed(SEED + 8)
    for name, target in (("", 3.0), ("small_", 0.5)):
        flat = torch.randn(50, generator=g, dtype=torch.float64)
        flat = r32(flat / flat.norm() * target * (1.0 + 0.05 * torch.rand(1, generator=g, dtype=torch.float64)))
        a, b = torch.nn.Parameter(torch.zeros(30, dtype=torch.float64)), torch.nn.Parameter(torch.zeros(20, dtype=torch.float64))
        a.grad, b.grad = flat[:30].clone(), flat[30:].clone()
        norm = torch.nn.utils.clip_grad_norm_([a, b], max_norm=1.0)
        after = torch.cat([a.grad, b.grad])
        out["clip.%sgrad" % name] = flat
        out["clip.%sgrad_after" % name] = after
        if name == "":
            out["clip.norm"] = norm.reshape(1)
        else:
            assert torch.equal(after, flat), "small gradient was changed"
    meta("clip", max_norm=1.0, sizes="30,20", coef="min(1, max_norm/(norm+1e-6))")

    md["generator"] = "scripts/gen_reference.py"
    md["precision"] = "float64 compute, stored as F32"
    md["torch"] = torch.__version__
    return out, md


# ----------------------------------------------------------------------------
# model/testdata/gpt2_tiny.safetensors

GPT = dict(V=64, maxT=16, C=32, L=2, NH=4, B=2, T=12)
LN_EPS = 1e-5
TRAIN = dict(steps=10, lr=1e-2, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1, max_norm=1.0)


def gpt2_param_shapes(V, maxT, C, L):
    """Parameter names and shapes in canonical order."""
    shapes = [("wte", (V, C)), ("wpe", (maxT, C))]
    for i in range(L):
        h = "h.%d." % i
        shapes += [
            (h + "ln_1.weight", (C,)), (h + "ln_1.bias", (C,)),
            (h + "attn.c_attn.weight", (3 * C, C)), (h + "attn.c_attn.bias", (3 * C,)),
            (h + "attn.c_proj.weight", (C, C)), (h + "attn.c_proj.bias", (C,)),
            (h + "ln_2.weight", (C,)), (h + "ln_2.bias", (C,)),
            (h + "mlp.c_fc.weight", (4 * C, C)), (h + "mlp.c_fc.bias", (4 * C,)),
            (h + "mlp.c_proj.weight", (C, 4 * C)), (h + "mlp.c_proj.bias", (C,)),
        ]
    shapes += [("ln_f.weight", (C,)), ("ln_f.bias", (C,))]
    return shapes


def gpt2_forward(p, tokens, targets, L, NH):
    """Pre-LN GPT-2 with tied embeddings. Returns logits (B,T,V) and mean loss."""
    B, T = tokens.shape
    V, C = p["wte"].shape
    x = p["wte"][tokens] + p["wpe"][:T].unsqueeze(0)  # (B, T, C)
    for i in range(L):
        h = "h.%d." % i
        a = F.layer_norm(x, (C,), p[h + "ln_1.weight"], p[h + "ln_1.bias"], LN_EPS)
        qkv = F.linear(a, p[h + "attn.c_attn.weight"], p[h + "attn.c_attn.bias"])  # (B, T, 3C)
        y, _ = causal_attention(qkv, NH)
        x = x + F.linear(y, p[h + "attn.c_proj.weight"], p[h + "attn.c_proj.bias"])
        m = F.layer_norm(x, (C,), p[h + "ln_2.weight"], p[h + "ln_2.bias"], LN_EPS)
        m = F.gelu(F.linear(m, p[h + "mlp.c_fc.weight"], p[h + "mlp.c_fc.bias"]), approximate="tanh")  # (B, T, 4C)
        x = x + F.linear(m, p[h + "mlp.c_proj.weight"], p[h + "mlp.c_proj.bias"])
    x = F.layer_norm(x, (C,), p["ln_f.weight"], p["ln_f.bias"], LN_EPS)
    logits = x @ p["wte"].t()  # (B, T, V)
    loss = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1))
    return logits, loss


def gpt2_fixtures():
    V, maxT, C, L, NH, B, T = (GPT[k] for k in ("V", "maxT", "C", "L", "NH", "B", "T"))
    g = torch.Generator().manual_seed(SEED + 100)
    shapes = gpt2_param_shapes(V, maxT, C, L)
    params = {}
    for name, shape in shapes:
        if name.startswith("ln") or ".ln_" in name:
            if name.endswith(".weight"):
                t = r32(1.0 + 0.1 * torch.randn(*shape, generator=g, dtype=torch.float64))
            else:
                t = randn(g, *shape, scale=0.05)
        elif name.endswith(".bias"):
            t = randn(g, *shape, scale=0.05)
        else:
            t = randn(g, *shape, scale=0.1)
        params[name] = torch.nn.Parameter(t)
    tokens = torch.randint(0, V, (B, T), generator=g, dtype=torch.int64)
    targets = torch.randint(0, V, (B, T), generator=g, dtype=torch.int64)

    out = {"tokens": tokens.to(torch.int32), "targets": targets.to(torch.int32)}
    for name, _ in shapes:
        out["param." + name] = params[name].detach().clone()

    decay = [params[n] for n, s in shapes if len(s) == 2]
    no_decay = [params[n] for n, s in shapes if len(s) != 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": TRAIN["weight_decay"]},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=TRAIN["lr"], betas=(TRAIN["beta1"], TRAIN["beta2"]), eps=TRAIN["eps"], foreach=False)
    plist = [params[n] for n, _ in shapes]
    losses, norms = [], []
    for step in range(TRAIN["steps"]):
        opt.zero_grad(set_to_none=True)
        logits, loss = gpt2_forward(params, tokens, targets, L, NH)
        loss.backward()
        if step == 0:
            out["logits"] = logits.detach()
            out["loss"] = loss.detach().reshape(1)
            for name, _ in shapes:
                out["grad." + name] = params[name].grad.detach().clone()
        norm = torch.nn.utils.clip_grad_norm_(plist, TRAIN["max_norm"])
        opt.step()
        losses.append(loss.detach())
        norms.append(norm.detach())
    out["adamw_losses"] = torch.stack(losses)
    out["adamw_norms"] = torch.stack(norms)
    for name, _ in shapes:
        out["final." + name] = params[name].detach().clone()

    md = {k: str(v) for k, v in GPT.items()}
    md.update({k: str(v) for k, v in TRAIN.items()})
    md.update({
        "ln_eps": str(LN_EPS),
        "decay": "2-D tensors (wte, wpe, linear weights); none for biases and LayerNorm",
        "clip": "torch.nn.utils.clip_grad_norm_: coef = min(1, max_norm/(norm+1e-6))",
        "params": ",".join(n for n, _ in shapes),
        "generator": "scripts/gen_reference.py",
        "precision": "float64 compute, stored as F32",
        "torch": torch.__version__,
    })
    print("gpt2_tiny: loss %.6f, losses %s, norms %s" % (
        out["loss"].item(), ["%.4f" % x for x in out["adamw_losses"].tolist()],
        ["%.3f" % x for x in out["adamw_norms"].tolist()]))
    return out, md


def main():
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    ts, md = kernel_fixtures()
    write_safetensors(os.path.join(ROOT, "kernels", "testdata", "reference.safetensors"), ts, md)
    ts, md = gpt2_fixtures()
    write_safetensors(os.path.join(ROOT, "model", "testdata", "gpt2_tiny.safetensors"), ts, md)


if __name__ == "__main__":
    sys.exit(main())
