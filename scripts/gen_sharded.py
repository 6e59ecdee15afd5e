#!/usr/bin/env python3
"""Generate the bfloat16 and sharded-checkpoint fixtures of model/safetensors and model.

Usage (from anywhere; paths are resolved from this file's location):

    /usr/bin/python3 scripts/gen_sharded.py

writes
    model/safetensors/testdata/bf16_torch.safetensors
        "f32": float32 values -- zeros, infinities, NaNs, the largest finite
        values, subnormals, rounding ties and their neighbours in every binade,
        random bit patterns and random normals -- and "bf16": torch's rounding
        of each to bfloat16 (round to nearest, ties to even).
    model/testdata/hf_tiny_bf16_sharded/
        hf_tiny's weights (and its float causal-mask buffers) in bfloat16, as
        model.to(torch.bfloat16).save_pretrained(max_shard_size=...) lays them
        out: three shards model-0000i-of-00003.safetensors split as
        huggingface_hub's split_torch_state_dict_into_shards splits them, the
        model.safetensors.index.json transformers writes, config.json with
        torch_dtype bfloat16, and reference.safetensors: hf_tiny's tokens and
        the float64 logits of the bfloat16 weights.

It reuses gen_reference.py's GPT-2 re-implementation and strict reader, and
writes safetensors by hand (struct and json) in the safetensors crate's layout,
bfloat16 included, so that braid's reader is checked against an independent
writer. Rerunning it reproduces the files byte for byte on the same torch build.
"""

import json
import os
import struct
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_reference as ref  # noqa: E402

ROOT = ref.ROOT
MD = {"generator": "scripts/gen_sharded.py", "torch": torch.__version__}


def bf16_bytes(t):
    """Little-endian bytes of a bfloat16 tensor, bit for bit."""
    bits = t.detach().contiguous().view(torch.int16).flatten().tolist()
    return struct.pack("<%dh" % len(bits), *bits)


def tensor_entry(t):
    t = t.detach().contiguous()
    dtype = ref.ST_DTYPES[t.dtype]
    if dtype == "BF16":
        return dtype, list(t.shape), bf16_bytes(t)
    vals = t.flatten().tolist()
    return dtype, list(t.shape), struct.pack("<%d%s" % (len(vals), ref.ST_STRUCT[dtype]), *vals)


def safetensors_bytes(tensors, metadata):
    """{name: tensor} as the safetensors crate's serialize lays it out: data
    sorted by dtype alignment (descending), then name; compact JSON header
    padded with spaces to 8 bytes."""
    entries = [(name,) + tensor_entry(t) for name, t in tensors.items()]
    entries.sort(key=lambda e: (-ref.ST_DTYPE_ORDER.index(e[1]), e[0].encode("utf-8")))
    header, off = {"__metadata__": metadata}, 0
    for name, dtype, shape, data in entries:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(data)]}
        off += len(data)
    h = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(e[3] for e in entries)


def bf16_fixture():
    specials = [0x00000000, 0x80000000, 0x7f800000, 0xff800000,  # zeros, infinities
                0x7fc00000, 0xffc00000, 0x7f800001, 0x7fbfffff, 0x7f80ffff, 0xffffffff,  # NaNs
                0x7f7fffff, 0xff7fffff, 0x7f7f0000, 0x7f7f7fff, 0x7f7f8000, 0x7f7f8001,  # near overflow
                0x00000001, 0x80000001, 0x00008000, 0x00018000, 0x00008001, 0x007fffff,  # subnormals
                0x00010000, 0x007f8000, 0x00800000, 0x3f800000, 0x3f808000, 0x3f818000,
                0x3f807fff, 0x3f808001, 0x3fffffff, 0xbf808000, 0xbf818000]
    g = torch.Generator().manual_seed(ref.SEED + 700)
    ties = []
    for e in range(256):  # a tie, and its neighbours, with an even and an odd kept bit, in every binade
        for sign in (0, 1 << 31):
            for kept in (0x0000, 0x10000):
                base = sign | e << 23 | kept
                ties += [base | 0x8000, base | 0x7fff, base | 0x8001]
    rand_bits = torch.randint(0, 1 << 32, (4096,), generator=g, dtype=torch.int64).tolist()
    bits = specials + ties + rand_bits
    signed = [b - (1 << 32) if b >= 1 << 31 else b for b in bits]
    f32 = torch.tensor(signed, dtype=torch.int32).view(torch.float32)
    normals = torch.randn(4096, generator=g, dtype=torch.float64).to(torch.float32)
    f32 = torch.cat([f32, normals])
    bf16 = f32.to(torch.bfloat16)
    path = os.path.join(ROOT, "model", "safetensors", "testdata", "bf16_torch.safetensors")
    ref.write_bytes(path, safetensors_bytes({"f32": f32, "bf16": bf16}, dict(MD, rounding="torch float32 .to(torch.bfloat16)")))
    print("wrote %s (%d values)" % (os.path.relpath(path, ROOT), f32.numel()))


def split_into_shards(state, max_shard_size):
    """huggingface_hub.split_torch_state_dict_into_shards: fill a shard in
    state-dict order until the next tensor would pass max_shard_size; a tensor
    larger than that gets a shard of its own."""
    shards, current, current_size = [], {}, 0
    for name, t in state.items():
        size = t.numel() * t.element_size()
        if size > max_shard_size:
            shards.append({name: t})
            continue
        if current_size + size > max_shard_size:
            shards.append(current)
            current, current_size = {}, 0
        current[name] = t
        current_size += size
    if current:
        shards.append(current)
    return shards


def sharded_fixture():
    src = os.path.join(ROOT, "model", "testdata", "hf_tiny")
    d = os.path.join(ROOT, "model", "testdata", "hf_tiny_bf16_sharded")
    cfg, model = ref.hf_model_from_config(os.path.join(src, "config.json"))
    tensors, _, _ = ref.read_safetensors(os.path.join(src, "model.safetensors"))
    # State-dict (module) order, as save_pretrained iterates it; the tied
    # lm_head and the masked_bias buffer are not saved, as in hf_tiny.
    order = [k[len("transformer."):] for k in model.state_dict() if k.startswith("transformer.")]
    state = {k: tensors[k].to(torch.float32).to(torch.bfloat16) for k in order if k in tensors}
    assert set(state) == set(tensors), "hf_tiny holds tensors the model does not: %s" % (set(tensors) - set(state))
    total = sum(t.numel() * t.element_size() for t in state.values())
    # The smallest whole kilobyte that splits the set in three.
    max_shard_size = next(m for m in range(1024, total, 1024) if len(split_into_shards(state, m)) <= 3)
    shards = split_into_shards(state, max_shard_size)
    n = len(shards)
    assert n == 3, "expected three shards, got %d" % n
    weight_map = {}
    for i, shard in enumerate(shards):
        name = "model-%05d-of-%05d.safetensors" % (i + 1, n)
        ref.write_bytes(os.path.join(d, name), safetensors_bytes(shard, {"format": "pt"}))
        weight_map.update({k: name for k in shard})
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    ref.write_bytes(os.path.join(d, "model.safetensors.index.json"),
                    (json.dumps(index, indent=2, sort_keys=True) + "\n").encode())
    ref.write_bytes(os.path.join(d, "config.json"), ref.save_pretrained_config(cfg, "bfloat16").encode())

    # Read the set back strictly and compute the logits of its weights.
    loaded = {}
    for name in sorted(set(weight_map.values())):
        ts, dtypes, md = ref.read_safetensors(os.path.join(d, name))
        assert set(dtypes.values()) == {"BF16"} and md == {"format": "pt"}
        assert all(weight_map[k] == name for k in ts), "%s holds a tensor the index puts elsewhere" % name
        loaded.update(ts)
    assert set(loaded) == set(weight_map)
    _, model = ref.hf_model_from_config(os.path.join(d, "config.json"))
    ref.hf_load_strict(model, loaded, d)
    r, _, _ = ref.read_safetensors(os.path.join(src, "reference.safetensors"))
    tokens, logits32 = r["tokens"].to(torch.int64), r["logits"]
    logits = ref.hf_logits(model, tokens)
    print("hf_tiny_bf16_sharded: %d shards of at most %d bytes (%d in all); bfloat16 weights move the logits by %.2e" % (
        n, max_shard_size, total, (logits - logits32).abs().max().item()))
    B, T = tokens.shape
    ref.write_safetensors(os.path.join(d, "reference.safetensors"),
                          {"tokens": tokens.to(torch.int32), "logits": logits},
                          dict(MD, B=str(B), T=str(T), precision="float64 compute on the bfloat16 weights, stored as F32"))


def main():
    torch.manual_seed(ref.SEED)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    bf16_fixture()
    sharded_fixture()
    return 0


if __name__ == "__main__":
    sys.exit(main())
