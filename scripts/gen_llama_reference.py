#!/usr/bin/env python3
"""Generate PyTorch reference fixtures for braid's Llama family (llama, mistral, qwen2).

Usage (from anywhere; paths are resolved from this file's location):

    /usr/bin/python3 scripts/gen_llama_reference.py

writes
    kernels/testdata/llama_kernels.safetensors  RMSNorm, RoPE (llama3-scaled frequencies),
                                                SwiGLU and grouped-query attention with a
                                                sliding window, forward and backward
    model/testdata/llama_tiny/                  LlamaForCausalLM: grouped-query attention,
                                                untied lm_head, llama3 rope_scaling, a
                                                head_dim other than hidden_size/heads
    model/testdata/qwen2_tiny/                  Qwen2ForCausalLM: q/k/v biases, tied head,
                                                grouped-query attention
    model/testdata/mistral_tiny/                MistralForCausalLM: one key/value head,
                                                sliding window shorter than the sequence
(vocabulary 260, so that braid's default byte tokenizer fits; 8 channels, 2 layers)
    model/testdata/llama_lora_tiny/             a PEFT LoRA adapter on llama_tiny adapting
                                                all seven projections
    model/testdata/llama_bf16_tiny/             llama_tiny's shape stored in BF16 (torch_dtype
                                                bfloat16) and an eval.txt: the loss of `braid eval`
                                                on it (see bf16_fixture)

Each model directory holds config.json and model.safetensors as the architecture's
save_pretrained writes them (F32), and reference.safetensors: tokens, targets (one -1:
ignored), the logits, the mean loss and grad.<tensor name> for every parameter. The
adapter directory holds adapter_config.json, adapter_model.safetensors and
reference.safetensors (logits, loss, the adapter tensors' gradients, merged_logits).

    /usr/bin/python3 scripts/gen_llama_reference.py --bf16

writes only llama_bf16_tiny.

    /usr/bin/python3 scripts/gen_llama_reference.py --check-braid DIR [DIR ...]
    /usr/bin/python3 scripts/gen_llama_reference.py --check-adapter DIR [DIR ...]

are the reverse checks (make test-pytorch): they read a checkpoint (adapter) directory
written by braid, config.json as Hugging Face's config class reads it, load
model.safetensors strictly into the module below (every tensor consumed, none missing
but a tied lm_head), and compare the logits with the ones braid stored in
DIR/reference.safetensors. They print the max abs difference and exit 1 above TOL.

    OPENBLAS_NUM_THREADS=1 /usr/bin/python3 scripts/gen_llama_reference.py --bench THREADS

times PyTorch's training step at SmolLM2-135M's shape, the peer of
go test ./model -run '^$' -bench LlamaTrainStep.

transformers is not installable here, so the modules below re-create LlamaForCausalLM,
MistralForCausalLM and Qwen2ForCausalLM (transformers 4.44 modeling_llama.py and
friends, eager attention, no dropout) with the same module tree, hence the same
state_dict names: LlamaRMSNorm, the rotary embedding with rotate_half and
_compute_llama3_parameters, repeat_kv for grouped-query attention, the causal mask
with Mistral's sliding window (key j is visible to query i iff i - window < j <= i),
and the SwiGLU MLP down_proj(silu(gate_proj(x)) * up_proj(x)).

Precision, determinism and file format are gen_reference.py's: float64 compute on
float32-rounded inputs, seeded generators, canonical safetensors.
"""

import argparse
import json
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_reference as gr  # noqa: E402  (safetensors I/O and the rounding helpers)

ROOT = gr.ROOT
SEED = 1000
TOL = 2e-5  # --check-*: max |braid logits - float64 logits|, braid computing in float32
TRANSFORMERS_VERSION = "4.44.0"

# ----------------------------------------------------------------------------
# config.json as the config classes read it

ARCHITECTURES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}
# The classes' __init__ defaults (transformers 4.44) of the keys that shape the model.
DEFAULTS = {
    "llama": dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                  num_attention_heads=32, num_key_value_heads=None, max_position_embeddings=2048),
    "mistral": dict(vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                    num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=4096 * 32,
                    sliding_window=4096),
    "qwen2": dict(vocab_size=151936, hidden_size=4096, intermediate_size=22016, num_hidden_layers=32,
                  num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=32768),
}


def read_config(d):
    """A config.json dict as the family's config class reads it: defaults for absent
    keys, num_key_value_heads None -> num_attention_heads, head_dim None ->
    hidden_size // num_attention_heads. Refuses what the modules below do not compute."""
    mt = d.get("model_type")
    if mt not in DEFAULTS:
        raise ValueError("model_type %r" % mt)
    cfg = dict(DEFAULTS[mt])
    cfg.update({k: v for k, v in d.items()})
    if cfg.get("num_key_value_heads") is None:
        cfg["num_key_value_heads"] = cfg["num_attention_heads"]
    if cfg.get("head_dim") is None:
        cfg["head_dim"] = cfg["hidden_size"] // cfg["num_attention_heads"]
    cfg.setdefault("rms_norm_eps", 1e-6)
    cfg.setdefault("rope_theta", 10000.0)
    cfg.setdefault("tie_word_embeddings", False)
    cfg.setdefault("rope_scaling", None)
    if mt != "mistral" or cfg.get("sliding_window") is None:
        cfg["sliding_window"] = None  # llama has none; qwen2 only with use_sliding_window
    for key, ok in (("hidden_act", cfg.get("hidden_act", "silu") == "silu"),
                    ("attention_bias", not cfg.get("attention_bias", False) or mt != "llama"),
                    ("mlp_bias", not cfg.get("mlp_bias", False)),
                    ("pretraining_tp", cfg.get("pretraining_tp", 1) == 1),
                    ("use_sliding_window", not cfg.get("use_sliding_window", False)),
                    ("rope_scaling", cfg["rope_scaling"] is None or
                     cfg["rope_scaling"].get("rope_type", cfg["rope_scaling"].get("type")) in ("default", "llama3")),
                    ("architectures", cfg.get("architectures", [ARCHITECTURES[mt]]) == [ARCHITECTURES[mt]])):
        if not ok:
            raise ValueError("unsupported %s" % key)
    return cfg


# ----------------------------------------------------------------------------
# the modules


def inv_freq(cfg):
    """The rotary inverse frequencies (head_dim/2): _compute_default_rope_parameters,
    then _compute_llama3_parameters when rope_scaling's rope_type is llama3."""
    hd, base = cfg["head_dim"], cfg["rope_theta"]
    f = 1.0 / (base ** (torch.arange(0, hd, 2, dtype=torch.int64).to(torch.float64) / hd))
    rs = cfg["rope_scaling"]
    if rs is None or rs.get("rope_type", rs.get("type")) == "default":
        return f
    factor, low, high = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
    old = rs["original_max_position_embeddings"]
    low_freq_wavelen, high_freq_wavelen = old / low, old / high
    wavelen = 2 * math.pi / f
    f_llama = torch.where(wavelen > low_freq_wavelen, f / factor, f)
    smooth = (old / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * f_llama / factor + smooth * f_llama
    is_medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(is_medium, smoothed, f_llama)


def rope_cos_sin(cfg, T):
    """LlamaRotaryEmbedding.forward for positions 0..T-1: cos, sin (T, head_dim)."""
    freqs = torch.outer(torch.arange(T, dtype=torch.float64), inv_freq(cfg))
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_pos_emb(q, k, cos, sin):
    cos, sin = cos[None, None], sin[None, None]  # (1, 1, T, hd)
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


def repeat_kv(x, n_rep):
    """(B, KV, T, hd) -> (B, KV*n_rep, T, hd): key/value head j serves query heads j*n_rep.."""
    B, KV, T, hd = x.shape
    if n_rep == 1:
        return x
    return x[:, :, None, :, :].expand(B, KV, n_rep, T, hd).reshape(B, KV * n_rep, T, hd)


def attention_mask(T, window):
    """True where query i may not see key j: j > i, or (Mistral) j <= i - window."""
    i = torch.arange(T)[:, None]
    j = torch.arange(T)[None, :]
    masked = j > i
    if window:
        masked |= j <= i - window
    return masked


def gqa_attention(q, k, v, window):
    """q (B, NH, T, hd), k, v (B, KV, T, hd) -> y (B, NH, T, hd), att (B, NH, T, T)."""
    NH, KV, T, hd = q.shape[1], k.shape[1], q.shape[2], q.shape[3]
    k, v = repeat_kv(k, NH // KV), repeat_kv(v, NH // KV)
    w = q @ k.transpose(2, 3) / math.sqrt(hd)
    w = w.masked_fill(attention_mask(T, window), float("-inf"))
    att = F.softmax(w, dim=-1)
    return att @ v, att


class RMSNorm(torch.nn.Module):
    """LlamaRMSNorm (and Qwen2's, Mistral's)."""

    def __init__(self, C, eps):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(C))
        self.eps = eps

    def forward(self, x):
        return rms_norm(x, self.weight, self.eps)


def rms_norm(x, weight, eps):
    var = x.pow(2).mean(-1, keepdim=True)
    return weight * (x * torch.rsqrt(var + eps))


class Attention(torch.nn.Module):
    def __init__(self, cfg):
        super().__init__()
        C, hd = cfg["hidden_size"], cfg["head_dim"]
        self.nh, self.kv, self.hd, self.window = cfg["num_attention_heads"], cfg["num_key_value_heads"], hd, cfg["sliding_window"]
        bias = cfg["model_type"] == "qwen2"
        self.q_proj = torch.nn.Linear(C, self.nh * hd, bias=bias)
        self.k_proj = torch.nn.Linear(C, self.kv * hd, bias=bias)
        self.v_proj = torch.nn.Linear(C, self.kv * hd, bias=bias)
        self.o_proj = torch.nn.Linear(self.nh * hd, C, bias=False)

    def forward(self, x, cos, sin):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.nh, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.kv, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.kv, self.hd).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        y, _ = gqa_attention(q, k, v, self.window)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.nh * self.hd))


class MLP(torch.nn.Module):
    def __init__(self, cfg):
        super().__init__()
        C, H = cfg["hidden_size"], cfg["intermediate_size"]
        self.gate_proj = torch.nn.Linear(C, H, bias=False)
        self.up_proj = torch.nn.Linear(C, H, bias=False)
        self.down_proj = torch.nn.Linear(H, C, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(torch.nn.Module):
    def __init__(self, cfg):
        super().__init__()
        C, eps = cfg["hidden_size"], cfg["rms_norm_eps"]
        self.input_layernorm = RMSNorm(C, eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(C, eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


class Model(torch.nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = torch.nn.Embedding(cfg["vocab_size"], cfg["hidden_size"])
        self.layers = torch.nn.ModuleList([DecoderLayer(cfg) for _ in range(cfg["num_hidden_layers"])])
        self.norm = RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])

    def forward(self, tokens):
        x = self.embed_tokens(tokens)
        cos, sin = (t.to(x.dtype) for t in rope_cos_sin(self.cfg, tokens.shape[1]))
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.norm(x)


class ForCausalLM(torch.nn.Module):
    """LlamaForCausalLM / MistralForCausalLM / Qwen2ForCausalLM in float64; forward
    returns the (B, T, V) logits."""

    def __init__(self, cfg):
        super().__init__()
        self.model = Model(cfg)
        self.lm_head = torch.nn.Linear(cfg["hidden_size"], cfg["vocab_size"], bias=False)
        if cfg["tie_word_embeddings"]:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.double()

    def forward(self, tokens):
        return self.lm_head(self.model(tokens))


def params_of(model, cfg):
    """{state_dict name: parameter} as save_pretrained writes them (a tied lm_head left out)."""
    ps = dict(model.named_parameters())  # a tied lm_head.weight is listed once, as embed_tokens
    if cfg["tie_word_embeddings"]:
        ps.pop("lm_head.weight", None)
    return ps


def load_strict(model, cfg, tensors, where):
    """Load {name: tensor} into model as from_pretrained would, strictly: every tensor
    consumed, none missing but a tied lm_head.weight (which, if present, must equal
    the embedding)."""
    sd = dict(tensors)
    if cfg["tie_word_embeddings"] and "lm_head.weight" in sd:
        if not torch.equal(sd.pop("lm_head.weight"), sd.get("model.embed_tokens.weight")):
            raise ValueError("%s: lm_head.weight is not tied to model.embed_tokens.weight" % where)
    try:
        missing, unexpected = model.load_state_dict(sd, strict=False)  # still raises on a shape mismatch
    except RuntimeError as e:
        raise ValueError("%s: %s" % (where, e))
    missing = [k for k in missing if not (k == "lm_head.weight" and cfg["tie_word_embeddings"])]
    if missing or unexpected:
        raise ValueError("%s: missing tensors %s, unexpected tensors %s" % (where, missing, unexpected))


def logits_of(model, tokens):
    with torch.no_grad():
        return model(tokens)


# ----------------------------------------------------------------------------
# fixtures

B, T = 2, 12

# (directory, config.json as save_pretrained writes it for the class)
MODELS = [
    ("llama_tiny", dict(
        architectures=["LlamaForCausalLM"], model_type="llama", vocab_size=260, hidden_size=8,
        intermediate_size=24, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
        max_position_embeddings=256, hidden_act="silu", rms_norm_eps=1e-5, rope_theta=100.0,
        rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                          original_max_position_embeddings=64),
        tie_word_embeddings=False, attention_bias=False, attention_dropout=0.0, mlp_bias=False, pretraining_tp=1,
        initializer_range=0.02, use_cache=True, bos_token_id=1, eos_token_id=[2, 3], torch_dtype="float32",
        transformers_version=TRANSFORMERS_VERSION)),
    ("qwen2_tiny", dict(
        architectures=["Qwen2ForCausalLM"], model_type="qwen2", vocab_size=260, hidden_size=8,
        intermediate_size=24, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
        max_position_embeddings=128, hidden_act="silu", rms_norm_eps=1e-6, rope_theta=1000000.0, rope_scaling=None,
        tie_word_embeddings=True, use_sliding_window=False, sliding_window=4096, max_window_layers=28,
        attention_dropout=0.0, initializer_range=0.02, use_cache=True, bos_token_id=3, eos_token_id=3,
        torch_dtype="float32", transformers_version=TRANSFORMERS_VERSION)),
    ("mistral_tiny", dict(
        architectures=["MistralForCausalLM"], model_type="mistral", vocab_size=260, hidden_size=8,
        intermediate_size=24, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1, head_dim=4,
        max_position_embeddings=512, hidden_act="silu", rms_norm_eps=1e-5, rope_theta=10000.0, sliding_window=5,
        tie_word_embeddings=False, attention_dropout=0.0, initializer_range=0.02, use_cache=True, bos_token_id=1,
        eos_token_id=2, torch_dtype="float32", transformers_version=TRANSFORMERS_VERSION)),
]


def randomize(model, g):
    """Random float32-representable weights: norms 1 + N(0, 0.1^2), matrices
    N(0, 1/in) (the embedding N(0, 0.5^2)), biases N(0, 0.1^2)."""
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if name.endswith("norm.weight"):
                t = 1.0 + 0.1 * torch.randn(p.shape, generator=g, dtype=torch.float64)
            elif name.endswith(".bias"):
                t = 0.1 * torch.randn(p.shape, generator=g, dtype=torch.float64)
            elif "embed_tokens" in name:
                t = 0.5 * torch.randn(p.shape, generator=g, dtype=torch.float64)
            else:
                t = torch.randn(p.shape, generator=g, dtype=torch.float64) / math.sqrt(p.shape[1])
            p.copy_(gr.r32(t))


def batch(g, V):
    tokens = torch.randint(0, V, (B, T), generator=g, dtype=torch.int64)
    targets = torch.randint(0, V, (B, T), generator=g, dtype=torch.int64)
    targets[1, 4] = -1  # ignored
    return tokens, targets


def loss_of(logits, targets):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-1)


def meta(**kw):
    md = {"generator": "scripts/gen_llama_reference.py", "precision": "float64 compute, stored as F32",
          "torch": torch.__version__, "B": str(B), "T": str(T)}
    md.update({k: str(v) for k, v in kw.items()})
    return md


def model_fixtures():
    for k, (name, cfg_json) in enumerate(MODELS):
        cfg = read_config(cfg_json)
        model = ForCausalLM(cfg)
        g = torch.Generator().manual_seed(SEED + k)
        randomize(model, g)
        tokens, targets = batch(g, cfg["vocab_size"])
        logits = model(tokens)
        loss = loss_of(logits, targets)
        loss.backward()
        params = params_of(model, cfg)
        out = {"tokens": tokens.to(torch.int32), "targets": targets.to(torch.int32),
               "logits": logits.detach(), "loss": loss.detach().reshape(1)}
        for pname, p in params.items():
            out["grad." + pname] = p.grad.detach().clone()
        d = os.path.join(ROOT, "model", "testdata", name)
        gr.write_safetensors_hf(os.path.join(d, "model.safetensors"),
                                {n: p.detach().to(torch.float32) for n, p in params.items()}, {"format": "pt"})
        gr.write_bytes(os.path.join(d, "config.json"), (json.dumps(cfg_json, indent=2, sort_keys=True) + "\n").encode())
        gr.write_safetensors(os.path.join(d, "reference.safetensors"), out, meta())
        # The files load back into the same logits.
        again = check_dir(d, tokens)
        if not torch.equal(again, logits.detach()):
            raise SystemExit("%s: logits after a reload differ" % name)
        print("%s: %d tensors, loss %.6f" % (name, len(params), loss.item()))


# LoRA in PEFT's layout on llama_tiny. peft is not installable either, so
# LoraLinear re-creates peft.tuners.lora.layer.Linear around an nn.Linear:
#   forward(x) = base_layer(x) + lora_B(lora_A(dropout(x))) * (lora_alpha / r)
# with lora_A = Linear(in, r), lora_B = Linear(r, out), no biases; merging is
# base_layer.weight += (B @ A) * scaling (fan_in_fan_out false).
LORA = dict(name="llama_lora_tiny", base="llama_tiny", r=2, alpha=6.0, dropout=0.0,
            targets=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])


class LoraLinear(torch.nn.Module):
    def __init__(self, base_layer, r, alpha):
        super().__init__()
        out_features, in_features = base_layer.weight.shape
        self.base_layer = base_layer
        self.lora_A = torch.nn.Linear(in_features, r, bias=False).double()
        self.lora_B = torch.nn.Linear(r, out_features, bias=False).double()
        self.scaling = alpha / r

    def forward(self, x):
        return self.base_layer(x) + self.lora_B(self.lora_A(x)) * self.scaling

    def merge(self):
        with torch.no_grad():
            self.base_layer.weight += (self.lora_B.weight @ self.lora_A.weight) * self.scaling


def inject_lora(model, targets, r, alpha):
    """Wrap every targeted Linear in a LoraLinear (PEFT's check_target_module_exists:
    the module's name equals a target or ends with "." + target); return {adapter
    tensor name: parameter} as save_pretrained names them."""
    return gr.inject_lora(model, targets, r, alpha, layer=torch.nn.Linear, wrapper=LoraLinear)


def peft_adapter_config(targets, r, alpha, dropout, base):
    """adapter_config.json as PeftModel.save_pretrained writes it for a LoraConfig on
    a LlamaForCausalLM (fan_in_fan_out false: nn.Linear)."""
    d = json.loads(gr.peft_adapter_config(targets, r, alpha, dropout, base))
    d["fan_in_fan_out"] = False
    return json.dumps(d, indent=2, sort_keys=True)


def load_base(d):
    with open(os.path.join(d, "config.json")) as f:
        cfg = read_config(json.load(f))
    model = ForCausalLM(cfg)
    path = os.path.join(d, "model.safetensors")
    tensors, _, _ = gr.read_safetensors(path)
    load_strict(model, cfg, tensors, path)
    return cfg, model


def lora_fixture():
    base_dir = os.path.join(ROOT, "model", "testdata", LORA["base"])
    cfg, model = load_base(base_dir)
    params = inject_lora(model, LORA["targets"], LORA["r"], LORA["alpha"])
    g = torch.Generator().manual_seed(SEED + 100)
    with torch.no_grad():
        for pname in sorted(params):
            p = params[pname]
            if ".lora_A." in pname:  # kaiming_uniform_(a=sqrt(5)): U(-1/sqrt(in), 1/sqrt(in))
                bound = 1.0 / math.sqrt(p.shape[1])
                p.copy_(gr.uniform(g, -bound, bound, *p.shape))
            else:  # PEFT starts B at zero; a trained one is not
                p.copy_(gr.randn(g, *p.shape, scale=0.2))
    tokens, targets = batch(g, cfg["vocab_size"])
    logits = model(tokens)
    loss = loss_of(logits, targets)
    loss.backward()
    out = {"tokens": tokens.to(torch.int32), "targets": targets.to(torch.int32),
           "logits": logits.detach(), "loss": loss.detach().reshape(1)}
    for pname, p in params.items():
        out["grad." + pname] = p.grad.detach().clone()
    adapter = {n: p.detach().clone().to(torch.float32) for n, p in params.items()}
    for mod in model.modules():
        if isinstance(mod, LoraLinear):
            mod.merge()
            with torch.no_grad():
                mod.lora_B.weight.zero_()
    merged = logits_of(model, tokens)
    diff = (merged - logits.detach()).abs().max().item()
    if diff > 1e-10:
        raise SystemExit("merged logits differ from base + adapter by %.3g" % diff)
    out["merged_logits"] = merged
    d = os.path.join(ROOT, "model", "testdata", LORA["name"])
    gr.write_safetensors_hf(os.path.join(d, "adapter_model.safetensors"), adapter, {"format": "pt"})
    gr.write_bytes(os.path.join(d, "adapter_config.json"), peft_adapter_config(
        LORA["targets"], LORA["r"], LORA["alpha"], LORA["dropout"], "model/testdata/" + LORA["base"]).encode())
    gr.write_safetensors(os.path.join(d, "reference.safetensors"), out,
                         meta(base="model/testdata/" + LORA["base"], scaling=repr(LORA["alpha"] / LORA["r"])))
    print("%s: %d adapter tensors, loss %.6f" % (LORA["name"], len(params), loss.item()))


def kernel_fixtures():
    """kernels/testdata/llama_kernels.safetensors: one case per kernel."""
    out, md = {}, {}
    g = torch.Generator().manual_seed(SEED + 200)

    # rmsnorm (N, C)
    N, C, eps = 10, 12, 1e-5
    x = gr.leaf(gr.randn(g, N, C, scale=2.0))
    w = gr.leaf(gr.r32(1.0 + 0.1 * torch.randn(C, generator=g, dtype=torch.float64)))
    o = rms_norm(x, w, eps)
    dout = gr.randn(g, N, C)
    o.backward(dout)
    rstd = torch.rsqrt(x.detach().pow(2).mean(-1) + eps)
    out.update({"rmsnorm.inp": x, "rmsnorm.weight": w, "rmsnorm.out": o, "rmsnorm.rstd": rstd,
                "rmsnorm.dout": dout, "rmsnorm.dinp": x.grad, "rmsnorm.dweight": w.grad})
    md.update({"rmsnorm.N": str(N), "rmsnorm.C": str(C), "rmsnorm.eps": str(eps)})

    # rope: x (B, T, nh, hd) with llama3-scaled frequencies; cos and sin (T, hd/2)
    Bk, Tk, nh, hd = 2, 9, 3, 8
    cfg = read_config(MODELS[0][1])
    x = gr.leaf(gr.randn(g, Bk, Tk, nh, hd))
    cos, sin = rope_cos_sin(cfg, Tk)
    q = x.transpose(1, 2)  # (B, nh, T, hd)
    o, _ = apply_rotary_pos_emb(q, q, cos, sin)
    o = o.transpose(1, 2)
    dout = gr.randn(g, Bk, Tk, nh, hd)
    o.backward(dout)
    out.update({"rope.inp": x, "rope.cos": cos[:, : hd // 2], "rope.sin": sin[:, : hd // 2], "rope.out": o,
                "rope.dout": dout, "rope.dinp": x.grad})
    md.update({"rope.B": str(Bk), "rope.T": str(Tk), "rope.nh": str(nh), "rope.hd": str(hd),
               "rope.config": "model/testdata/llama_tiny (rope_theta 100, llama3 scaling)"})

    # swiglu: gu (N, 2H) = [gate | up]
    N, H = 10, 7
    gu = gr.leaf(gr.randn(g, N, 2 * H, scale=3.0))
    o = F.silu(gu[:, :H]) * gu[:, H:]
    dout = gr.randn(g, N, H)
    o.backward(dout)
    out.update({"swiglu.gu": gu, "swiglu.out": o, "swiglu.dout": dout, "swiglu.dgu": gu.grad})

    # grouped-query attention with a window: qkv (B, T, (NH + 2 KV) hd)
    Bk, Tk, NH, KV, hd, window = 2, 11, 4, 2, 4, 4
    qkv = gr.leaf(gr.randn(g, Bk, Tk, (NH + 2 * KV) * hd))
    q, k, v = qkv.split([NH * hd, KV * hd, KV * hd], dim=2)
    q = q.reshape(Bk, Tk, NH, hd).transpose(1, 2)
    k = k.reshape(Bk, Tk, KV, hd).transpose(1, 2)
    v = v.reshape(Bk, Tk, KV, hd).transpose(1, 2)
    y, att = gqa_attention(q, k, v, window)
    y = y.transpose(1, 2).reshape(Bk, Tk, NH * hd)
    dout = gr.randn(g, Bk, Tk, NH * hd)
    y.backward(dout)
    out.update({"gqa.qkv": qkv, "gqa.att": att, "gqa.out": y, "gqa.dout": dout, "gqa.dqkv": qkv.grad})
    md.update({"gqa.B": str(Bk), "gqa.T": str(Tk), "gqa.NH": str(NH), "gqa.KVH": str(KV), "gqa.hd": str(hd),
               "gqa.window": str(window)})
    md.update(meta())
    gr.write_safetensors(os.path.join(ROOT, "kernels", "testdata", "llama_kernels.safetensors"), out, md)


# A checkpoint stored in bfloat16, as model.to(torch.bfloat16).save_pretrained
# writes one, and the loss `braid eval --seq-len EVAL_T` reports on eval.txt:
# the file's bytes then end-of-text (256) as one token stream, cut into
# consecutive windows of up to EVAL_T predicted tokens (train.Evaluate), the
# mean cross-entropy over every predicted token. "eval_loss" computes in
# float64 on the bfloat16 weights (what braid computes, widening them
# exactly); "eval_loss_bf16" is PyTorch's own bfloat16 forward (the model in
# bfloat16, as transformers evaluates a torch_dtype=bfloat16 checkpoint), for
# the record.
BF16 = dict(name="llama_bf16_tiny", like="llama_tiny", seed=SEED + 50)
EVAL_T = 16
EVAL_TEXT = b"The quick brown fox jumps over the lazy dog; then the dog sleeps.\n"


def eval_windows(stream, T):
    n = len(stream) - 1
    for pos in range(0, n, T):
        t = min(T, n - pos)
        yield stream[pos:pos + t], stream[pos + 1:pos + t + 1]


def eval_loss(model, stream, T):
    nats, count = 0.0, 0
    with torch.no_grad():
        for inp, tgt in eval_windows(stream, T):
            logits = model(torch.tensor([inp])).to(torch.float64)
            nats += F.cross_entropy(logits[0], torch.tensor(tgt), reduction="sum").item()
            count += len(tgt)
    return nats / count


def bf16_fixture():
    import gen_sharded as gs
    cfg_json = dict(dict(MODELS)[BF16["like"]], torch_dtype="bfloat16")
    cfg = read_config(cfg_json)
    model = ForCausalLM(cfg)
    g = torch.Generator().manual_seed(BF16["seed"])
    randomize(model, g)
    with torch.no_grad():
        for p in model.parameters():  # every tensor rounded to bfloat16, norms included, as save_pretrained stores them
            p.copy_(p.to(torch.bfloat16).to(torch.float64))
    tokens, targets = batch(g, cfg["vocab_size"])
    logits = logits_of(model, tokens)
    stream = list(EVAL_TEXT) + [256]
    params = params_of(model, cfg)
    d = os.path.join(ROOT, "model", "testdata", BF16["name"])
    gr.write_bytes(os.path.join(d, "model.safetensors"), gs.safetensors_bytes(
        {n: p.detach().to(torch.bfloat16) for n, p in params.items()}, {"format": "pt"}))
    gr.write_bytes(os.path.join(d, "config.json"), (json.dumps(cfg_json, indent=2, sort_keys=True) + "\n").encode())
    gr.write_bytes(os.path.join(d, "eval.txt"), EVAL_TEXT)
    loss64 = eval_loss(model, stream, EVAL_T)
    bf = ForCausalLM(cfg)
    bf.load_state_dict(model.state_dict())
    bf = bf.to(torch.bfloat16)
    loss16 = eval_loss(bf, stream, EVAL_T)
    gr.write_safetensors(os.path.join(d, "reference.safetensors"), {
        "tokens": tokens.to(torch.int32), "targets": targets.to(torch.int32), "logits": logits,
        "loss": loss_of(logits, targets).reshape(1),
        "eval_loss": torch.tensor([loss64], dtype=torch.float64),
        "eval_loss_bf16": torch.tensor([loss16], dtype=torch.float64)},
        meta(eval_seq_len=EVAL_T, eval_tokens=len(stream) - 1))
    again = check_dir(d, tokens)
    if not torch.equal(again, logits):
        raise SystemExit("%s: logits after a reload differ" % BF16["name"])
    print("%s: eval loss %.6f (float64 on the bfloat16 weights), %.6f (PyTorch's bfloat16 forward, %.2e relative)" % (
        BF16["name"], loss64, loss16, abs(loss16 - loss64) / loss64))


# ----------------------------------------------------------------------------
# reverse checks


def check_dir(d, tokens):
    """Load checkpoint directory d strictly and return its float64 logits on tokens."""
    _, model = load_base(d)
    return logits_of(model, tokens)


def compare(d, got, want, what):
    diff = (got - want).abs().max().item()
    print("%s: %s: braid logits %s vs PyTorch (float64): max abs diff %.3g (tolerance %g)" % (
        d, what, tuple(want.shape), diff, TOL))
    if not diff <= TOL:
        print("FAIL: above tolerance")
        return 1
    return 0


def check_braid(d):
    """--check-braid DIR: a braid checkpoint of the Llama family against the modules above."""
    try:
        ref, _, _ = gr.read_safetensors(os.path.join(d, "reference.safetensors"))
        with open(os.path.join(d, "config.json")) as f:
            cfg_json = json.load(f)
        got = check_dir(d, ref["tokens"])
    except (OSError, KeyError, ValueError) as e:
        print("FAIL: %s" % e)
        return 1
    return compare(d, got, ref["logits"], "%s (%s)" % (cfg_json.get("model_type"), ",".join(cfg_json.get("architectures", []))))


def check_adapter(d):
    """--check-adapter DIR: a braid LoRA adapter loaded as PEFT would, onto the base
    its adapter_config.json names (absolute, or relative to the repository root)."""
    try:
        with open(os.path.join(d, "adapter_config.json")) as f:
            c = json.load(f)
        for key, want in (("peft_type", "LORA"), ("task_type", "CAUSAL_LM"), ("bias", "none"),
                          ("fan_in_fan_out", False), ("use_dora", False), ("use_rslora", False)):
            if c.get(key) != want:
                raise ValueError("adapter_config.json: %s = %r, want %r" % (key, c.get(key), want))
        _, model = load_base(os.path.join(ROOT, c["base_model_name_or_path"]))
        params = inject_lora(model, c["target_modules"], c["r"], c["lora_alpha"])
        path = os.path.join(d, "adapter_model.safetensors")
        adapter, _, _ = gr.read_safetensors(path)
        missing, unexpected = sorted(set(params) - set(adapter)), sorted(set(adapter) - set(params))
        if missing or unexpected:
            raise ValueError("%s: missing tensors %s, unexpected tensors %s" % (path, missing, unexpected))
        with torch.no_grad():
            for n, p in params.items():
                if tuple(adapter[n].shape) != tuple(p.shape):
                    raise ValueError("%s: %s has shape %s, PEFT's layer %s" % (path, n, tuple(adapter[n].shape), tuple(p.shape)))
                p.copy_(adapter[n])
        ref, _, _ = gr.read_safetensors(os.path.join(d, "reference.safetensors"))
    except (OSError, KeyError, ValueError) as e:
        print("FAIL: %s" % e)
        return 1
    return compare(d, logits_of(model, ref["tokens"]), ref["logits"], "LoRA r=%d on %s, %d tensors" % (
        c["r"], c["base_model_name_or_path"], len(adapter)))


# SmolLM2-135M's shape, for --bench (model.BenchmarkLlamaTrainStep's).
SMOLLM2 = dict(model_type="llama", vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
               num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192, rms_norm_eps=1e-5,
               rope_theta=100000.0, tie_word_embeddings=True)


def bench(threads, steps=5, B=1, T=256):
    """--bench THREADS: PyTorch's float32 forward + backward of the modules above
    at SmolLM2-135M's shape, batch B x T, the peer of go test ./model -bench
    LlamaTrainStep. Prints the median step's tokens/s. Run with OPENBLAS_CORETYPE
    set for the machine (SkylakeX on AVX-512) and OPENBLAS_NUM_THREADS=1: OpenBLAS's
    own threads fight torch's OpenMP threads for the cores otherwise."""
    import time
    torch.set_num_threads(threads)
    cfg = read_config(SMOLLM2)
    model = ForCausalLM(cfg).float()
    V = cfg["vocab_size"]
    g = torch.Generator().manual_seed(SEED)
    x, y = torch.randint(0, V, (B, T), generator=g), torch.randint(0, V, (B, T), generator=g)
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        model.zero_grad(set_to_none=False)
        F.cross_entropy(model(x).reshape(-1, V), y.reshape(-1)).backward()
        if i > 0:  # the first step warms up
            times.append(time.perf_counter() - t0)
    dt = sorted(times)[len(times) // 2]
    print("torch %s threads=%d OPENBLAS_NUM_THREADS=%s OPENBLAS_CORETYPE=%s: SmolLM2-135M shape, batch %dx%d: %.3f s/step, %.1f tokens/s" % (
        torch.__version__, threads, os.environ.get("OPENBLAS_NUM_THREADS", "-"), os.environ.get("OPENBLAS_CORETYPE", "-"),
        B, T, dt, B * T / dt))
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check-braid", metavar="DIR", nargs="+", help="check braid checkpoint directories")
    ap.add_argument("--check-adapter", metavar="DIR", nargs="+", help="check braid LoRA adapter directories")
    ap.add_argument("--bf16", action="store_true", help="write only the bfloat16 fixture, llama_bf16_tiny")
    ap.add_argument("--bench", metavar="THREADS", type=int, help="time PyTorch's training step at SmolLM2-135M's shape instead")
    args = ap.parse_args()
    if args.bench:
        return bench(args.bench)
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    if args.check_braid or args.check_adapter:
        fails = sum(check_braid(d) for d in args.check_braid or [])
        fails += sum(check_adapter(d) for d in args.check_adapter or [])
        return 1 if fails else 0
    if args.bf16:
        bf16_fixture()
        return 0
    kernel_fixtures()
    model_fixtures()
    lora_fixture()
    bf16_fixture()
    return 0


if __name__ == "__main__":
    sys.exit(main())
