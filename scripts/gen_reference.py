#!/usr/bin/env python3
"""Generate PyTorch reference fixtures for braid's kernel and model tests.

Usage (from anywhere; paths are resolved from this file's location):

    /usr/bin/python3 scripts/gen_reference.py
    /usr/bin/python3 scripts/gen_reference.py --check-braid model/testdata/braid_tiny

The first form writes
    kernels/testdata/reference.safetensors  one case per kernel, forward and backward
    model/testdata/gpt2_tiny.safetensors    a tiny GPT-2: logits, loss, gradients and
                                            10 AdamW steps with gradient clipping
    model/testdata/hf_tiny/                 a tiny random GPT-2 saved in Hugging Face's
                                            layout (model.safetensors, config.json) and
                                            its logits (reference.safetensors)
    model/testdata/hf_tiny_prefixed/        the same weights in float16 with
                                            "transformer." names, lm_head.weight and both
                                            mask buffers, and the logits of those weights
    model/testdata/lora_tiny{,_subset}/     LoRA adapters for hf_tiny in PEFT's layout
                                            (adapter_model.safetensors, adapter_config.json)
                                            and the logits, loss and adapter gradients of
                                            base + adapter, and the merged model's logits
The tensors and hyper-parameters are listed in the README.md next to each file.

    /usr/bin/python3 scripts/gen_reference.py --check-adapter model/testdata/braid_lora_tiny

is the reverse check for adapters: it loads an adapter directory written by braid's
SaveAdapter (`go test ./model -run LoRA -update`) the way PEFT would, onto the base its
adapter_config.json names, and compares the logits braid stored next to it.

The second form is the reverse check: it loads a braid checkpoint directory
(written by `go test ./model -run HF -update`) into a PyTorch GPT-2 that uses
Hugging Face's module names and layouts (transformers itself is not needed),
strictly -- every tensor consumed, nothing missing but the mask buffers and the
tied lm_head -- and compares its logits with the ones braid stored next to the
checkpoint. It prints the max abs difference and exits 1 above HF_TOL.

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

import argparse
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


# ----------------------------------------------------------------------------
# Hugging Face GPT-2: model/testdata/hf_tiny{,_prefixed}/ and --check-braid
#
# transformers is not installable here, so HFGPT2LMHeadModel below re-creates
# transformers' GPT2LMHeadModel (models/gpt2/modeling_gpt2.py, eager attention,
# no dropout) with the same module tree, hence the same state_dict names,
# shapes, dtypes and buffers:
#
#   transformer.wte, transformer.wpe         Embedding (V, C), (n_positions, C)
#   transformer.h.{i}.ln_1, .ln_2            LayerNorm(C, eps=layer_norm_epsilon)
#   transformer.h.{i}.attn.c_attn, .c_proj   Conv1D: weight (in, out), y = x·W + b
#   transformer.h.{i}.attn.bias              buffer (1, 1, n_positions, n_positions), lower-triangular
#   transformer.h.{i}.attn.masked_bias       buffer, scalar -1e4 (transformers < 4.31 saved both)
#   transformer.h.{i}.mlp.c_fc, .c_proj      Conv1D C→4C and 4C→C, gelu_new between
#   transformer.ln_f                         LayerNorm
#   lm_head                                  Linear(C, V, bias=False), weight tied to wte
#
# Files are written as transformers' save_pretrained lays them out: config.json
# is GPT2Config's to_json_string (the keys that differ from PretrainedConfig's
# defaults, indent 2, sorted keys) and model.safetensors is what the
# safetensors crate's serialize writes (metadata {"format": "pt"} first,
# tensors sorted by descending dtype then by name, compact JSON, header padded
# with spaces to a multiple of 8).

HF = dict(V=300, maxT=32, C=48, L=2, NH=4, B=2, T=20)
HF_TOL = 2e-5  # --check-braid: max |braid logits − float64 logits|, braid computing in float32
TRANSFORMERS_VERSION = "4.44.0"  # the save_pretrained whose config.json layout is emulated

# GPT2Config.__init__'s arguments and defaults (transformers 4.44). None of
# them is a PretrainedConfig default, so save_pretrained writes every one.
GPT2_CONFIG_DEFAULTS = dict(
    vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12, n_inner=None,
    activation_function="gelu_new", resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1,
    layer_norm_epsilon=1e-5, initializer_range=0.02, summary_type="cls_index",
    summary_use_proj=True, summary_activation=None, summary_proj_to_labels=True,
    summary_first_dropout=0.1, scale_attn_weights=True, use_cache=True,
    bos_token_id=50256, eos_token_id=50256, scale_attn_by_inverse_layer_idx=False,
    reorder_and_upcast_attn=False,
)


def gpt2_config(**kw):
    """A GPT2Config as a dict: the defaults overridden by kw (unknown keys rejected)."""
    for k in kw:
        assert k in GPT2_CONFIG_DEFAULTS, "not a GPT2Config argument: %s" % k
    cfg = dict(GPT2_CONFIG_DEFAULTS)
    cfg.update(kw)
    return cfg


def save_pretrained_config(cfg, torch_dtype, extra=None):
    """config.json text as GPT2LMHeadModel.save_pretrained writes it: to_diff_dict
    keeps every GPT2Config key plus architectures, model_type, torch_dtype and
    transformers_version; tie_word_embeddings (a PretrainedConfig default, true)
    is left out. extra adds keys other exporters write."""
    d = dict(cfg)
    d.update(architectures=["GPT2LMHeadModel"], model_type="gpt2", torch_dtype=torch_dtype,
             transformers_version=TRANSFORMERS_VERSION)
    d.update(extra or {})
    return json.dumps(d, indent=2, sort_keys=True) + "\n"


def gelu_new(x):
    """transformers' NewGELUActivation: the tanh approximation, as in GPT-2."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


class HFConv1D(torch.nn.Module):
    """transformers.pytorch_utils.Conv1D(nf, nx): weight (nx, nf) = (in, out)."""

    def __init__(self, nf, nx):
        super().__init__()
        self.nf = nf
        self.weight = torch.nn.Parameter(torch.zeros(nx, nf))
        self.bias = torch.nn.Parameter(torch.zeros(nf))

    def forward(self, x):
        size_out = x.size()[:-1] + (self.nf,)
        return torch.addmm(self.bias, x.reshape(-1, x.size(-1)), self.weight).view(size_out)  # x·W + b


class HFAttention(torch.nn.Module):
    """GPT2Attention (eager path, scale_attn_weights, no cross-attention)."""

    def __init__(self, cfg):
        super().__init__()
        n, C = cfg["n_positions"], cfg["n_embd"]
        self.register_buffer("bias", torch.tril(torch.ones((n, n), dtype=torch.bool)).view(1, 1, n, n))
        self.register_buffer("masked_bias", torch.tensor(-1e4))
        self.num_heads, self.head_dim = cfg["n_head"], C // cfg["n_head"]
        self.c_attn = HFConv1D(3 * C, C)
        self.c_proj = HFConv1D(C, C)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)  # [q | k | v]
        q, k, v = (t.view(B, T, self.num_heads, self.head_dim).permute(0, 2, 1, 3) for t in (q, k, v))
        w = torch.matmul(q, k.transpose(-1, -2)) / (v.size(-1) ** 0.5)  # (B, NH, T, T)
        causal = self.bias[:, :, :T, :T].bool()
        w = torch.where(causal, w, torch.tensor(torch.finfo(w.dtype).min, dtype=w.dtype))
        w = F.softmax(w, dim=-1)
        y = torch.matmul(w, v).permute(0, 2, 1, 3).contiguous().view(B, T, C)  # heads merged in order
        return self.c_proj(y)


class HFMLP(torch.nn.Module):
    def __init__(self, cfg):
        super().__init__()
        C = cfg["n_embd"]
        inner = cfg["n_inner"] if cfg["n_inner"] is not None else 4 * C
        self.c_fc = HFConv1D(inner, C)
        self.c_proj = HFConv1D(C, inner)

    def forward(self, x):
        return self.c_proj(gelu_new(self.c_fc(x)))


class HFBlock(torch.nn.Module):
    def __init__(self, cfg):
        super().__init__()
        C, eps = cfg["n_embd"], cfg["layer_norm_epsilon"]
        self.ln_1 = torch.nn.LayerNorm(C, eps=eps)
        self.attn = HFAttention(cfg)
        self.ln_2 = torch.nn.LayerNorm(C, eps=eps)
        self.mlp = HFMLP(cfg)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class HFGPT2Model(torch.nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.wte = torch.nn.Embedding(cfg["vocab_size"], cfg["n_embd"])
        self.wpe = torch.nn.Embedding(cfg["n_positions"], cfg["n_embd"])
        self.h = torch.nn.ModuleList([HFBlock(cfg) for _ in range(cfg["n_layer"])])
        self.ln_f = torch.nn.LayerNorm(cfg["n_embd"], eps=cfg["layer_norm_epsilon"])

    def forward(self, tokens):
        T = tokens.shape[1]
        x = self.wte(tokens) + self.wpe(torch.arange(T)).unsqueeze(0)  # (B, T, C)
        for block in self.h:
            x = block(x)
        return self.ln_f(x)


class HFGPT2LMHeadModel(torch.nn.Module):
    """GPT2LMHeadModel in float64; forward returns the (B, T, V) logits."""

    def __init__(self, cfg):
        super().__init__()
        self.transformer = HFGPT2Model(cfg)
        self.lm_head = torch.nn.Linear(cfg["n_embd"], cfg["vocab_size"], bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tie_word_embeddings
        self.double()

    def forward(self, tokens):
        return self.lm_head(self.transformer(tokens))


# Buffers a GPT-2 file may carry besides the parameters, by name suffix.
HF_BUFFERS = (".attn.bias", ".attn.masked_bias")


def hf_model_from_config(path):
    """Read a config.json and return (cfg, model); refuse what the re-implementation
    (or GPT2LMHeadModel itself, for tie_word_embeddings) does not compute."""
    with open(path) as f:
        d = json.load(f)
    if d.get("model_type", "gpt2") != "gpt2":
        raise ValueError("%s: model_type %r" % (path, d.get("model_type")))
    cfg = gpt2_config(**{k: v for k, v in d.items() if k in GPT2_CONFIG_DEFAULTS})
    for key, ok in (("activation_function", cfg["activation_function"] in ("gelu_new", "gelu_pytorch_tanh")),
                    ("scale_attn_weights", cfg["scale_attn_weights"] is True),
                    ("scale_attn_by_inverse_layer_idx", cfg["scale_attn_by_inverse_layer_idx"] is False),
                    ("tie_word_embeddings", d.get("tie_word_embeddings", True) is True),
                    ("add_cross_attention", d.get("add_cross_attention", False) is False)):
        if not ok:
            raise ValueError("%s: unsupported %s" % (path, key))
    return cfg, HFGPT2LMHeadModel(cfg)


def hf_load_strict(model, tensors, where):
    """Load {name: tensor} from a GPT-2 file into model as from_pretrained would,
    but strictly: names with or without the "transformer." prefix, every tensor
    consumed, none missing except the mask buffers and the tied lm_head.weight
    (which, if present, must equal wte). A mask buffer that is present must be
    the lower-triangular causal mask. Returns the sorted names of the buffers read."""
    sd = {}
    for name, t in tensors.items():
        full = name if name.startswith("transformer.") or name.startswith("lm_head.") else "transformer." + name
        if full in sd:
            raise ValueError("%s: tensor %s appears twice (with and without the transformer. prefix)" % (where, name))
        sd[full] = t
    if "lm_head.weight" in sd:
        lm, wte = sd.pop("lm_head.weight"), sd.get("transformer.wte.weight")
        if wte is None or lm.shape != wte.shape or not torch.equal(lm, wte):
            raise ValueError("%s: lm_head.weight is not tied to wte.weight" % where)
    n = model.transformer.wpe.weight.shape[0]
    tril = torch.tril(torch.ones((n, n), dtype=torch.bool)).view(1, 1, n, n)
    buffers = sorted(k for k in sd if k.endswith(HF_BUFFERS))
    for k in buffers:
        if k.endswith(".attn.bias") and not torch.equal(sd[k].bool(), tril):
            raise ValueError("%s: %s is not the causal mask" % (where, k))
    try:
        missing, unexpected = model.load_state_dict(sd, strict=False)  # still raises on a shape mismatch
    except RuntimeError as e:
        raise ValueError("%s: %s" % (where, e))
    missing = [k for k in missing if k != "lm_head.weight" and not k.endswith(HF_BUFFERS)]
    if missing or unexpected:
        raise ValueError("%s: missing tensors %s, unexpected tensors %s" % (where, missing, unexpected))
    return buffers


# safetensors dtypes in the safetensors crate's order (increasing alignment):
# serialize sorts tensors by this order descending, then by name.
ST_DTYPE_ORDER = ["BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "I16", "U16", "F16", "BF16",
                  "I32", "U32", "F32", "F64", "I64", "U64"]
ST_DTYPES = {torch.bool: "BOOL", torch.uint8: "U8", torch.float16: "F16", torch.bfloat16: "BF16",
             torch.int32: "I32", torch.float32: "F32", torch.float64: "F64", torch.int64: "I64"}
ST_STRUCT = {"BOOL": "?", "U8": "B", "I8": "b", "I16": "h", "U16": "H", "F16": "e", "BF16": "H",
             "I32": "i", "U32": "I", "F32": "f", "F64": "d", "I64": "q", "U64": "Q"}


def write_safetensors_hf(path, tensors, metadata):
    """Write {name: tensor}, each in its own dtype, as safetensors' serialize_file does."""
    entries = []
    for name, t in tensors.items():
        t = t.detach().contiguous()
        dtype = ST_DTYPES[t.dtype]
        assert dtype != "BF16", "BF16 packing not implemented"
        vals = t.flatten().tolist()
        entries.append((name, dtype, list(t.shape), struct.pack("<%d%s" % (len(vals), ST_STRUCT[dtype]), *vals)))
    entries.sort(key=lambda e: (-ST_DTYPE_ORDER.index(e[1]), e[0].encode("utf-8")))
    header, off = {"__metadata__": metadata}, 0
    for name, dtype, shape, data in entries:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(data)]}
        off += len(data)
    h = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    h += b" " * ((8 - len(h) % 8) % 8)
    write_bytes(path, struct.pack("<Q", len(h)) + h + b"".join(e[3] for e in entries))
    print("wrote %s (%d tensors, %d bytes)" % (os.path.relpath(path, ROOT), len(tensors), 8 + len(h) + off))


def write_bytes(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_safetensors(path):
    """Read a safetensors file strictly (the data section tiled exactly, no
    duplicate names). Returns ({name: tensor}, {name: dtype}, metadata); float
    tensors come back as float64 (exact), BOOL as bool, integers as int64."""
    with open(path, "rb") as f:
        b = f.read()
    if len(b) < 8:
        raise ValueError("%s: shorter than 8 bytes" % path)
    n = struct.unpack_from("<Q", b)[0]
    if n > len(b) - 8:
        raise ValueError("%s: header length %d exceeds the file" % (path, n))

    def no_duplicates(pairs):
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys):
            raise ValueError("%s: duplicate key in header" % path)
        return dict(pairs)

    header = json.loads(b[8:8 + n].decode("utf-8"), object_pairs_hook=no_duplicates)
    metadata = header.pop("__metadata__", None)
    data = b[8 + n:]
    tensors, dtypes, spans = {}, {}, []
    for name, e in header.items():
        dtype, shape, (begin, end) = e["dtype"], e["shape"], e["data_offsets"]
        if dtype not in ST_STRUCT:
            raise ValueError("%s: tensor %s: unsupported dtype %s" % (path, name, dtype))
        nel = math.prod(shape)
        size = struct.calcsize("<" + ST_STRUCT[dtype])
        if not 0 <= begin <= end <= len(data) or end - begin != nel * size:
            raise ValueError("%s: tensor %s: bad data_offsets %s" % (path, name, [begin, end]))
        vals = struct.unpack_from("<%d%s" % (nel, ST_STRUCT[dtype]), data, begin)
        if dtype == "BF16":
            vals = [struct.unpack("<f", struct.pack("<I", v << 16))[0] for v in vals]
        if dtype in ("F16", "BF16", "F32", "F64"):
            t = torch.tensor(vals, dtype=torch.float64)
        elif dtype == "BOOL":
            t = torch.tensor(vals, dtype=torch.bool)
        else:
            t = torch.tensor(vals, dtype=torch.int64)
        tensors[name], dtypes[name] = t.reshape(shape), dtype
        spans.append((begin, end, name))
    pos = 0
    for begin, end, name in sorted(spans):
        if begin != pos:
            raise ValueError("%s: tensor %s at %d: data section not tiled (expected %d)" % (path, name, begin, pos))
        pos = end
    if pos != len(data):
        raise ValueError("%s: %d bytes of data section unused" % (path, len(data) - pos))
    return tensors, dtypes, metadata


def hf_logits(model, tokens):
    with torch.no_grad():
        return model(tokens)


def hf_fixtures():
    """Write model/testdata/hf_tiny{,_prefixed}/: model.safetensors, config.json
    and reference.safetensors (tokens, float64 logits) of one random GPT-2."""
    V, maxT, C, L, NH, B, T = (HF[k] for k in ("V", "maxT", "C", "L", "NH", "B", "T"))
    cfg = gpt2_config(vocab_size=V, n_positions=maxT, n_embd=C, n_layer=L, n_head=NH)
    model = HFGPT2LMHeadModel(cfg)
    g = torch.Generator().manual_seed(SEED + 200)
    with torch.no_grad():
        for name, p in model.named_parameters():  # the tied lm_head.weight is listed once, as wte
            if ".ln_" in name or name.startswith("transformer.ln_f"):
                t = 1.0 + 0.1 * torch.randn(p.shape, generator=g, dtype=torch.float64) if name.endswith(".weight") \
                    else 0.05 * torch.randn(p.shape, generator=g, dtype=torch.float64)
            elif name.endswith(".bias"):
                t = 0.05 * torch.randn(p.shape, generator=g, dtype=torch.float64)
            else:
                t = 0.1 * torch.randn(p.shape, generator=g, dtype=torch.float64)
            p.copy_(r32(t))
    tokens = torch.randint(0, V, (B, T), generator=g, dtype=torch.int64)
    logits = hf_logits(model, tokens)  # (B, T, V)
    state = model.state_dict()
    md = {"generator": "scripts/gen_reference.py", "precision": "float64 compute, stored as F32",
          "torch": torch.__version__}

    # hf_tiny: the openai-community/gpt2 hub file's layout: GPT2Model names
    # (no prefix), F32, float causal-mask buffers, no masked_bias, no lm_head.
    d = os.path.join(ROOT, "model", "testdata", "hf_tiny")
    sd = {k[len("transformer."):]: v for k, v in state.items() if k.startswith("transformer.")}
    sd = {k: v.to(torch.float32) for k, v in sd.items() if not k.endswith(".attn.masked_bias")}
    write_safetensors_hf(os.path.join(d, "model.safetensors"), sd, {"format": "pt"})
    write_bytes(os.path.join(d, "config.json"), save_pretrained_config(cfg, "float32").encode())
    check_hf_dir(d, tokens, logits, exact=True)
    write_safetensors(os.path.join(d, "reference.safetensors"), {"tokens": tokens.to(torch.int32), "logits": logits},
                      dict(md, B=str(B), T=str(T)))

    # hf_tiny_prefixed: a GPT2LMHeadModel state_dict as older transformers
    # saved it: "transformer." prefixes, lm_head.weight (tied, so equal to
    # wte), bool attn.bias and scalar attn.masked_bias buffers, in float16.
    # The reference logits are those of the float16-rounded weights.
    d = os.path.join(ROOT, "model", "testdata", "hf_tiny_prefixed")
    sd = {k: (v.half() if v.is_floating_point() else v) for k, v in state.items()}
    write_safetensors_hf(os.path.join(d, "model.safetensors"), sd, {"format": "pt"})
    write_bytes(os.path.join(d, "config.json"), save_pretrained_config(
        cfg, "float16", {"n_ctx": maxT, "tie_word_embeddings": True}).encode())
    logits16 = check_hf_dir(d, tokens, None)
    print("hf_tiny_prefixed: float16 weights move the logits by %.2e" % (logits16 - logits).abs().max().item())
    write_safetensors(os.path.join(d, "reference.safetensors"), {"tokens": tokens.to(torch.int32), "logits": logits16},
                      dict(md, B=str(B), T=str(T), precision="float64 compute on the float16 weights, stored as F32"))


def check_hf_dir(d, tokens, want, exact=False):
    """Load directory d (config.json + model.safetensors) into a fresh model
    strictly and return its float64 logits on tokens; if want is given, they
    must equal it exactly (exact) or within HF_TOL."""
    cfg, model = hf_model_from_config(os.path.join(d, "config.json"))
    path = os.path.join(d, "model.safetensors")
    tensors, dtypes, _ = read_safetensors(path)
    buffers = hf_load_strict(model, tensors, path)
    got = hf_logits(model, tokens)
    rel = os.path.relpath(d, ROOT)
    print("%s: %d tensors (%s), buffers %d, loaded strictly" % (
        rel, len(tensors), ",".join(sorted(set(dtypes.values()))), len(buffers)))
    if want is not None:
        diff = (got - want).abs().max().item()
        if diff > (0 if exact else HF_TOL):
            raise SystemExit("%s: logits differ by %.3g" % (rel, diff))
    return got


def check_braid(d):
    """--check-braid DIR: load a braid checkpoint into the HF-named GPT-2,
    strictly, and compare its logits with the ones braid stored in
    DIR/reference.safetensors. Returns the exit status."""
    try:
        ref, _, _ = read_safetensors(os.path.join(d, "reference.safetensors"))
        tokens, want = ref["tokens"], ref["logits"]
        cfg, model = hf_model_from_config(os.path.join(d, "config.json"))
        path = os.path.join(d, "model.safetensors")
        tensors, dtypes, metadata = read_safetensors(path)
        hf_load_strict(model, tensors, path)
    except (OSError, KeyError, ValueError) as e:
        print("FAIL: %s" % e)
        return 1
    got = hf_logits(model, tokens)
    diff = (got - want).abs().max().item()
    print("%s: config n_layer=%d n_head=%d n_embd=%d vocab_size=%d n_positions=%d; %d tensors (%s), metadata %s" % (
        d, cfg["n_layer"], cfg["n_head"], cfg["n_embd"], cfg["vocab_size"], cfg["n_positions"], len(tensors),
        ",".join(sorted(set(dtypes.values()))), metadata))
    print("braid logits %s vs PyTorch (float64, HF module names): max abs diff %.3g (max |logit| %.3g, tolerance %g)" % (
        tuple(want.shape), diff, want.abs().max().item(), HF_TOL))
    if not diff <= HF_TOL:
        print("FAIL: above tolerance")
        return 1
    return 0


# ----------------------------------------------------------------------------
# LoRA adapters in PEFT's layout: model/testdata/lora_tiny*/ and --check-adapter
#
# peft is not installable here either, so PeftLoraConv1D below re-creates what
# peft.tuners.lora.layer.Linear does around a transformers Conv1D
# (fan_in_fan_out=True): it keeps the Conv1D as base_layer and adds
#
#   lora_A = nn.Linear(in_features, r, bias=False)    weight (r, in)
#   lora_B = nn.Linear(r, out_features, bias=False)   weight (out, r)
#   forward(x) = base_layer(x) + lora_B(lora_A(dropout(x))) * (lora_alpha / r)
#
# The shapes of lora_A and lora_B do not depend on fan_in_fan_out; only the
# merged delta does: get_delta_weight is transpose(B @ A, fan_in_fan_out) *
# scaling, so merging into a Conv1D weight (in, out) is
#
#   W_conv1d += (B @ A).T * (lora_alpha / r)
#
# A module is targeted as PEFT's check_target_module_exists decides for a
# list of names: its full name (e.g. "transformer.h.0.mlp.c_proj") equals a
# target or ends with "." + target. PeftModel.save_pretrained names the
# adapter's tensors "base_model.model." + module name + ".lora_A.weight"
# (the adapter name "default" removed), and writes adapter_config.json as
# json.dumps(LoraConfig.to_dict(), indent=2, sort_keys=True).

# (directory, target_modules, r, lora_alpha, lora_dropout) of the fixtures;
# the base is model/testdata/hf_tiny.
LORA_FIXTURES = [
    ("lora_tiny", ["c_attn", "c_proj", "c_fc"], 4, 12, 0.05),
    ("lora_tiny_subset", ["c_attn", "mlp.c_proj"], 3, 4.5, 0.0),
]
PEFT_VERSION = "0.14.0"  # the LoraConfig whose adapter_config.json keys are emulated


class PeftLoraConv1D(torch.nn.Module):
    """peft.tuners.lora.Linear wrapping a transformers Conv1D (fan_in_fan_out)."""

    def __init__(self, base_layer, r, alpha):
        super().__init__()
        in_features, out_features = base_layer.weight.shape  # Conv1D: (in, out)
        self.base_layer = base_layer
        self.lora_A = torch.nn.Linear(in_features, r, bias=False).double()
        self.lora_B = torch.nn.Linear(r, out_features, bias=False).double()
        self.scaling = alpha / r

    def forward(self, x):
        return self.base_layer(x) + self.lora_B(self.lora_A(x)) * self.scaling  # eval: dropout is identity

    def merge(self):
        """PEFT's merge: base_layer.weight += transpose(B @ A, fan_in_fan_out=True) * scaling."""
        with torch.no_grad():
            self.base_layer.weight += (self.lora_B.weight @ self.lora_A.weight).T * self.scaling


def peft_targeted(name, targets):
    """check_target_module_exists for a list of target names."""
    return any(name == t or name.endswith("." + t) for t in targets)


def inject_lora(model, targets, r, alpha, layer=None, wrapper=None):
    """Replace every targeted Conv1D of model by a PeftLoraConv1D (or every
    targeted module of type layer by a wrapper); return {adapter tensor name:
    parameter} in the names save_pretrained writes."""
    layer, wrapper = layer or HFConv1D, wrapper or PeftLoraConv1D
    names = [n for n, mod in model.named_modules() if isinstance(mod, layer) and peft_targeted(n, targets)]
    if not names:
        raise ValueError("target_modules %s match no %s" % (targets, layer.__name__))
    params = {}
    for n in names:
        parent_name, child = n.rsplit(".", 1)
        parent = model.get_submodule(parent_name)
        wrapped = wrapper(getattr(parent, child), r, alpha)
        setattr(parent, child, wrapped)
        params["base_model.model.%s.lora_A.weight" % n] = wrapped.lora_A.weight
        params["base_model.model.%s.lora_B.weight" % n] = wrapped.lora_B.weight
    return params


def peft_adapter_config(targets, r, alpha, dropout, base):
    """adapter_config.json text as PeftModel.save_pretrained writes it for a
    LoraConfig(task_type="CAUSAL_LM", r, lora_alpha, lora_dropout,
    target_modules) on a GPT-2 (fan_in_fan_out set to True for Conv1D)."""
    d = {
        "alpha_pattern": {}, "auto_mapping": None, "base_model_name_or_path": base, "bias": "none",
        "eva_config": None, "exclude_modules": None, "fan_in_fan_out": True, "inference_mode": True,
        "init_lora_weights": True, "layer_replication": None, "layers_pattern": None,
        "layers_to_transform": None, "loftq_config": {}, "lora_alpha": alpha, "lora_bias": False,
        "lora_dropout": dropout, "megatron_config": None, "megatron_core": "megatron.core",
        "modules_to_save": None, "peft_type": "LORA", "r": r, "rank_pattern": {}, "revision": None,
        "target_modules": sorted(targets), "task_type": "CAUSAL_LM", "use_dora": False, "use_rslora": False,
    }
    return json.dumps(d, indent=2, sort_keys=True)


def hf_tiny_base():
    """The GPT-2 of model/testdata/hf_tiny, loaded from its files."""
    d = os.path.join(ROOT, "model", "testdata", "hf_tiny")
    cfg, model = hf_model_from_config(os.path.join(d, "config.json"))
    path = os.path.join(d, "model.safetensors")
    tensors, _, _ = read_safetensors(path)
    hf_load_strict(model, tensors, path)
    return cfg, model


def lora_fixtures():
    """Write model/testdata/lora_tiny*/: adapter_model.safetensors and
    adapter_config.json of a random adapter for hf_tiny in PEFT's layout, and
    reference.safetensors: tokens, targets, the logits of base + adapter, the
    mean loss and the gradient of every adapter tensor (float64, eval mode),
    plus the logits of the merged model."""
    V, B, T = HF["V"], HF["B"], HF["T"]
    for k, (name, targets, r, alpha, dropout) in enumerate(LORA_FIXTURES):
        cfg, model = hf_tiny_base()
        params = inject_lora(model, targets, r, alpha)
        g = torch.Generator().manual_seed(SEED + 300 + k)
        with torch.no_grad():
            for pname in sorted(params):
                p = params[pname]
                if ".lora_A." in pname:  # kaiming_uniform_(a=sqrt(5)): U(-1/sqrt(in), 1/sqrt(in))
                    bound = 1.0 / math.sqrt(p.shape[1])
                    p.copy_(uniform(g, -bound, bound, *p.shape))
                else:  # PEFT starts B at zero; a trained one is not
                    p.copy_(randn(g, *p.shape, scale=0.1))
        tokens = torch.randint(0, V, (B, T), generator=g, dtype=torch.int64)
        targets_ = torch.randint(0, V, (B, T), generator=g, dtype=torch.int64)
        model.eval()
        logits = model(tokens)  # (B, T, V)
        loss = F.cross_entropy(logits.reshape(-1, V), targets_.reshape(-1))
        loss.backward()
        out = {"tokens": tokens.to(torch.int32), "targets": targets_.to(torch.int32),
               "logits": logits.detach(), "loss": loss.detach().reshape(1)}
        adapter = {n: p.detach().clone().to(torch.float32) for n, p in params.items()}
        for pname, p in params.items():
            out["grad." + pname] = p.grad.detach().clone()
        # Merging must not change the function: W_conv1d += (B @ A).T * s,
        # then the LoRA branch is switched off (B = 0) and the merged
        # Conv1D weights alone must give the same logits.
        for mod in model.modules():
            if isinstance(mod, PeftLoraConv1D):
                mod.merge()
                with torch.no_grad():
                    mod.lora_B.weight.zero_()
        merged = hf_logits(model, tokens)
        diff = (merged - logits.detach()).abs().max().item()
        if diff > 1e-10:
            raise SystemExit("%s: merged logits differ from base + adapter by %.3g" % (name, diff))
        out["merged_logits"] = merged
        d = os.path.join(ROOT, "model", "testdata", name)
        write_safetensors_hf(os.path.join(d, "adapter_model.safetensors"),
                             adapter, {"format": "pt"})
        write_bytes(os.path.join(d, "adapter_config.json"),
                    peft_adapter_config(targets, r, alpha, dropout, "model/testdata/hf_tiny").encode())
        md = {"generator": "scripts/gen_reference.py", "precision": "float64 compute, stored as F32",
              "torch": torch.__version__, "B": str(B), "T": str(T), "base": "model/testdata/hf_tiny",
              "scaling": repr(alpha / r), "merge_check": "%.3g" % diff}
        write_safetensors(os.path.join(d, "reference.safetensors"), out, md)
        print("%s: %d adapter tensors (targets %s, r=%d, alpha=%s), loss %.6f, merged vs adapter %.2g" % (
            name, len(params), targets, r, alpha, loss.item(), diff))


def check_adapter(d):
    """--check-adapter DIR: load a braid adapter directory (SaveAdapter) the
    way PEFT would -- adapter_config.json read as a LoraConfig, LoRA layers
    injected into the base named by base_model_name_or_path (relative to the
    repository root) by PEFT's target matching, every tensor of
    adapter_model.safetensors consumed and none missing -- and compare the
    logits with the ones braid stored in DIR/reference.safetensors. Returns
    the exit status."""
    try:
        with open(os.path.join(d, "adapter_config.json")) as f:
            c = json.load(f)
        for key, want in (("peft_type", "LORA"), ("task_type", "CAUSAL_LM"), ("bias", "none"),
                          ("fan_in_fan_out", True), ("use_dora", False), ("use_rslora", False),
                          ("modules_to_save", None), ("layers_to_transform", None)):
            if c.get(key) != want:
                raise ValueError("adapter_config.json: %s = %r, want %r" % (key, c.get(key), want))
        base = os.path.join(ROOT, c["base_model_name_or_path"])
        cfg, model = hf_model_from_config(os.path.join(base, "config.json"))
        path = os.path.join(base, "model.safetensors")
        tensors, _, _ = read_safetensors(path)
        hf_load_strict(model, tensors, path)
        params = inject_lora(model, c["target_modules"], c["r"], c["lora_alpha"])
        path = os.path.join(d, "adapter_model.safetensors")
        adapter, dtypes, metadata = read_safetensors(path)
        missing = sorted(set(params) - set(adapter))
        unexpected = sorted(set(adapter) - set(params))
        if missing or unexpected:
            raise ValueError("%s: missing tensors %s, unexpected tensors %s" % (path, missing, unexpected))
        with torch.no_grad():
            for n, p in params.items():
                if tuple(adapter[n].shape) != tuple(p.shape):
                    raise ValueError("%s: %s has shape %s, PEFT's layer %s" % (path, n, tuple(adapter[n].shape), tuple(p.shape)))
                p.copy_(adapter[n])
        ref, _, _ = read_safetensors(os.path.join(d, "reference.safetensors"))
    except (OSError, KeyError, ValueError) as e:
        print("FAIL: %s" % e)
        return 1
    model.eval()
    got = hf_logits(model, ref["tokens"])
    diff = (got - ref["logits"]).abs().max().item()
    print("%s: r=%d lora_alpha=%s target_modules=%s on %s; %d tensors (%s), metadata %s" % (
        d, c["r"], c["lora_alpha"], c["target_modules"], c["base_model_name_or_path"], len(adapter),
        ",".join(sorted(set(dtypes.values()))), metadata))
    print("braid logits %s vs PyTorch with PEFT-style LoRA layers (float64): max abs diff %.3g (tolerance %g)" % (
        tuple(ref["logits"].shape), diff, HF_TOL))
    if not diff <= HF_TOL:
        print("FAIL: above tolerance")
        return 1
    return 0


def gpt2_124m(out):
    """--gpt2-124m DIR: a checkpoint of GPT-2 124M's shapes (50257 tokens, 1024
    positions, 768 wide, 12 layers, 12 heads) with random weights initialised
    as GPT-2 is (normal 0.02, residual projections 0.02/sqrt(2·layers),
    LayerNorms 1 and 0), written in the hub's layout (GPT2Model names, F32,
    config.json as save_pretrained writes it): the stand-in for
    openai-community/gpt2, which a user who can reach the hub downloads and
    braid loads the same way."""
    cfg = gpt2_config()  # the defaults are GPT-2 124M's
    model = HFGPT2LMHeadModel(cfg)
    g = torch.Generator().manual_seed(SEED + 124)
    std, proj = 0.02, 0.02 / math.sqrt(2 * cfg["n_layer"])
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".ln_" in name or name.startswith("transformer.ln_f"):
                p.fill_(1.0 if name.endswith(".weight") else 0.0)
            elif name.endswith(".bias"):
                p.zero_()
            else:
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float32) * (proj if name.endswith("c_proj.weight") else std))
    state = model.state_dict()
    sd = {k[len("transformer."):]: v.to(torch.float32) for k, v in state.items() if k.startswith("transformer.")}
    sd = {k: v for k, v in sd.items() if not k.endswith(".attn.masked_bias")}
    os.makedirs(out, exist_ok=True)
    write_safetensors_hf(os.path.join(out, "model.safetensors"), sd, {"format": "pt"})
    write_bytes(os.path.join(out, "config.json"), save_pretrained_config(cfg, "float32").encode())
    n = sum(v.numel() for k, v in sd.items() if not k.endswith(".attn.bias") or v.dim() == 1)
    print("wrote %s: GPT-2 124M shapes, %d parameters, random weights" % (out, n))
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check-braid", metavar="DIR",
                    help="check a braid checkpoint directory against the HF-named PyTorch GPT-2 instead of writing fixtures")
    ap.add_argument("--check-adapter", metavar="DIR",
                    help="check a braid LoRA adapter directory against PEFT-style LoRA layers instead of writing fixtures")
    ap.add_argument("--gpt2-124m", metavar="DIR",
                    help="write a GPT-2 124M-shaped checkpoint with random weights (Hugging Face layout) instead of fixtures")
    args = ap.parse_args()
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    if args.check_braid:
        return check_braid(args.check_braid)
    if args.check_adapter:
        return check_adapter(args.check_adapter)
    if args.gpt2_124m:
        return gpt2_124m(args.gpt2_124m)
    ts, md = kernel_fixtures()
    write_safetensors(os.path.join(ROOT, "kernels", "testdata", "reference.safetensors"), ts, md)
    ts, md = gpt2_fixtures()
    write_safetensors(os.path.join(ROOT, "model", "testdata", "gpt2_tiny.safetensors"), ts, md)
    hf_fixtures()
    lora_fixtures()
    return 0


if __name__ == "__main__":
    sys.exit(main())
