#!/usr/bin/env python3
"""Writes model/hftok/testdata/<style>/: a small tokenizer.json and
tokenizer_config.json in the style of a real model's, and expect.json, the
ids and decoded text of test strings computed here, independently of the Go
package: Python's `regex` module for the splits (it agrees with Oniguruma,
which Hugging Face's tokenizers use, on these patterns, case folding
included) and the naive BPE of the tokenizers library's definition
(repeatedly merge the pair of lowest rank, the leftmost of equals).

Run from the repository root:

    python3 scripts/gen_hftok_fixtures.py

It needs Python 3.9+ and the `regex` module (Debian: python3-regex). The
vocabularies are trained here, by BPE on the fixed TRAIN text below, so the
output is deterministic: a rerun rewrites the files byte for byte.

Styles:
  gpt2     ByteLevel pre-tokenizer (use_regex), merges as "a b" strings.
  llama3   Split(Llama 3 pattern) + ByteLevel, merges as [a, b] pairs,
           ignore_merges, TemplateProcessing with <|begin_of_text|>.
  qwen2    NFC + Split(Qwen2 pattern) + ByteLevel, a non-special added token.
  llama2   SentencePiece BPE: Prepend("▁") + Replace(" ", "▁"), byte_fallback,
           decoder Replace/ByteFallback/Fuse/Strip, add_bos_token.
  mistral  SentencePiece BPE with the Metaspace pre-tokenizer (prepend_scheme
           "first"), and a merge across "▁" (so no word cut applies).
"""

import collections
import json
import os
import unicodedata

import regex

OUT = os.path.join(os.path.dirname(__file__), "..", "model", "hftok", "testdata")

GPT2_PAT = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
LLAMA3_PAT = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
QWEN2_PAT = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""

TRAIN = """The quick brown fox jumps over the lazy dog. The dog didn't care; it's
been there before, and they'll say it again: we've seen the fox, you're sure.
In 1851 the novel sold 3,215 copies at $1.50 each; by 2024 it had sold 12345678.
def main():
    print("hello, world")  # the simplest program
    for i in range(10):
        total += i * 2
func main() {
\tfmt.Println("hi")
}
Naïve café owners in Zürich serve crème brûlée — “really” good.
東京は日本の首都です。 Ελληνικά κείμενα. Русский текст здесь.
The the the THE There Their They're theory theorem thesis.
Hello world! Hello, World? hello... HELLO!!! hello-world hello_world
   indented    spaces\t\ttabs\r\nwindows line
"""

TESTS = [
    "", " ", "  ", "\n", "\n\n", "\t", "a", "Hello world", " Hello world", "hello  world",
    "Hello world!\n\nThe end.", "a\n\nb", "x \n y", "line\r\nnext", "\t\tindented", "   leading", "trailing   ",
    "I'm don't we'll they've you're he'd I'M DON'T", "'s 'S 'ſ 'x", "it's 'tis",
    "12345 1234567 3.14159 1,000,000", "٣ ²³ Ⅻ 10²",
    "naïve café — “quotes” 😀", "東京は日本の首都です。", "Ελληνικά", "e\u0301 vs \u00e9",
    "func main() {\n\tfmt.Println(\"hi\")\n}\n", "def f(x):\n    return x ** 2\n",
    "\u00a0nbsp\u3000ideographic\u2028sep", "\x0b\x0c\x1c\x1d", "a▁b ▁", "☃ snowman ☃☃",
    "<|endoftext|>", "hello <|endoftext|> world", "<|begin_of_text|>Hi<|eot_id|>",
    "<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>", "<s>[INST] hi [/INST]</s>",
    "<|im_start|>user\nhi<|im_end|>\n", "<tool_call>{}</tool_call>", "a <extra>b", "<|im_start",
    "zzzz zzzz", "a" * 80, "the quick brown fox " * 20, "x" * 300,
]

# --- GPT-2's byte-level alphabet (bytes_to_unicode) ---


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


BYTE_CHAR = bytes_to_unicode()
CHAR_BYTE = {c: b for b, c in BYTE_CHAR.items()}


def to_bl(s):
    return "".join(BYTE_CHAR[b] for b in s.encode("utf-8"))


# --- training ---


def train(words, n_merges, base):
    """BPE on a Counter of words (tuples of symbols): the most frequent pair
    first, ties by the pair itself. Returns the merges."""
    words = collections.Counter({tuple(w): c for w, c in words.items()})
    merges = []
    for _ in range(n_merges):
        pairs = collections.Counter()
        for w, c in words.items():
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] += c
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        new = collections.Counter()
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(w[i] + w[i + 1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new[tuple(out)] += c
        words = new
    return merges


def bytelevel_vocab(pattern, n_merges, extra=()):
    words = collections.Counter(to_bl(p) for p in regex.findall(pattern, TRAIN))
    words = collections.Counter({tuple(w): c for w, c in words.items()})
    merges = train(words, n_merges, None)
    vocab = {}
    for b in sorted(BYTE_CHAR):
        vocab[BYTE_CHAR[b]] = len(vocab)
    for a, b in merges:
        if a + b not in vocab:
            vocab[a + b] = len(vocab)
    for t in extra:
        vocab.setdefault(t, len(vocab))
    return vocab, merges


def sp_vocab(n_merges, extra_merges=()):
    text = "▁" + TRAIN.replace(" ", "▁")
    words = collections.Counter(regex.findall(r"▁*[^▁]*", text))
    words.pop("", None)
    chars = collections.Counter(c for w, n in words.items() for c in w for _ in range(n))
    # Characters seen once or twice are left to byte_fallback.
    kept = sorted((c for c in chars if chars[c] >= 3 or c == "▁"), key=lambda c: (-chars[c], c))
    words = collections.Counter({tuple(c if c in kept else "?" for c in w): n for w, n in words.items()})
    merges = [m for m in train(words, n_merges, None) if "?" not in m[0] + m[1]]
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab["<0x%02X>" % b] = len(vocab)
    for c in kept:
        vocab[c] = len(vocab)
    merges = merges + list(extra_merges)
    for a, b in merges:
        if a + b not in vocab:
            vocab[a + b] = len(vocab)
    return vocab, merges


# --- tokenizer.json ---


def added(content, id, special=True, normalized=False):
    return {"id": id, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
            "normalized": normalized, "special": special}


def bpe_model(vocab, merges, pairs, **kw):
    m = {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
         "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False}
    m.update(kw)
    m["vocab"] = vocab
    m["merges"] = [[a, b] for a, b in merges] if pairs else ["%s %s" % (a, b) for a, b in merges]
    return m


def template(tokens, single):
    return {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": t, "type_id": 0}} if t != "$A" else {"Sequence": {"id": "A", "type_id": 0}}
                       for t in single],
            "pair": [], "special_tokens": {t: {"id": t, "ids": [tokens[t]], "tokens": [t]} for t in single if t != "$A"}}


BL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
BL_NOREGEX = dict(BL, use_regex=False)


def split(pat):
    return {"type": "Split", "pattern": {"Regex": pat}, "behavior": "Isolated", "invert": False}


SP_DECODER = {"type": "Sequence", "decoders": [
    {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
    {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}

CHAT = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"


def styles():
    out = {}

    v, m = bytelevel_vocab(GPT2_PAT, 250)
    v["<|endoftext|>"] = len(v)
    out["gpt2"] = ({
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [added("<|endoftext|>", v["<|endoftext|>"])],
        "normalizer": None, "pre_tokenizer": BL, "post_processor": dict(BL, use_regex=True),
        "decoder": BL, "model": bpe_model(v, m, pairs=False)},
        {"model_max_length": 1024})

    v, m = bytelevel_vocab(LLAMA3_PAT, 250, extra=[to_bl(" zzzz")])
    n = len(v)
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    ids = {s: n + i for i, s in enumerate(specials)}
    out["llama3"] = ({
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [added(s, ids[s]) for s in specials],
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [split(LLAMA3_PAT), BL_NOREGEX]},
        "post_processor": {"type": "Sequence", "processors": [
            dict(BL, use_regex=True, trim_offsets=False), template(ids, ["<|begin_of_text|>", "$A"])]},
        "decoder": BL, "model": bpe_model(v, m, pairs=True, ignore_merges=True)},
        {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "chat_template": CHAT,
         "clean_up_tokenization_spaces": True, "model_max_length": 131072, "tokenizer_class": "PreTrainedTokenizerFast"})

    v, m = bytelevel_vocab(QWEN2_PAT, 250)
    n = len(v)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    ids = {s: n + i for i, s in enumerate(specials)}
    ids["<tool_call>"] = n + 3
    ids["</tool_call>"] = n + 4
    out["qwen2"] = ({
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [added(s, ids[s]) for s in specials] + [added("<tool_call>", ids["<tool_call>"], special=False),
                                                                added("</tool_call>", ids["</tool_call>"], special=False)],
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [split(QWEN2_PAT), BL_NOREGEX]},
        "post_processor": dict(BL, use_regex=False, trim_offsets=False),
        "decoder": dict(BL, use_regex=False, trim_offsets=False), "model": bpe_model(v, m, pairs=False)},
        {"bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "add_prefix_space": False,
         "chat_template": [{"name": "default", "template": CHAT}, {"name": "tool_use", "template": "tools: " + CHAT}],
         "errors": "replace", "split_special_tokens": False})

    v, m = sp_vocab(250)
    v["<extra>"] = len(v)
    out["llama2"] = ({
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [added("<unk>", 0), added("<s>", 1), added("</s>", 2),
                         added("<extra>", v["<extra>"], special=False, normalized=True)],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
        "pre_tokenizer": None,
        "post_processor": template(v, ["<s>", "$A"]),
        "decoder": SP_DECODER,
        "model": bpe_model(v, m, pairs=False, unk_token="<unk>", fuse_unk=True, byte_fallback=True)},
        {"add_bos_token": True, "add_eos_token": False, "legacy": True,
         "bos_token": {"__type": "AddedToken", "content": "<s>", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False},
         "eos_token": {"__type": "AddedToken", "content": "</s>", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False},
         "unk_token": "<unk>", "pad_token": None, "chat_template": CHAT})

    v, m = sp_vocab(250, extra_merges=[("s", "▁")])
    n = len(v)
    v["[INST]"], v["[/INST]"] = n, n + 1
    out["mistral"] = ({
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [added("<unk>", 0), added("<s>", 1), added("</s>", 2), added("[INST]", n), added("[/INST]", n + 1)],
        "normalizer": None,
        "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": False},
        "post_processor": template(v, ["<s>", "$A"]),
        "decoder": SP_DECODER,
        "model": bpe_model(v, m, pairs=True, unk_token="<unk>", fuse_unk=True, byte_fallback=True)},
        {"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"})
    return out


# --- the reference tokenizer: Hugging Face's semantics, naively ---


class Ref:
    def __init__(self, tj, cfg):
        self.tj, self.cfg = tj, cfg
        m = tj["model"]
        self.vocab = m["vocab"]
        self.inv = {i: t for t, i in self.vocab.items()}
        for a in tj["added_tokens"]:
            self.inv[a["id"]] = a["content"]
        merges = [tuple(x.split(" ")) if isinstance(x, str) else tuple(x) for x in m["merges"]]
        self.rank = {}
        for r, p in enumerate(merges):
            self.rank[p] = r
        self.added = tj["added_tokens"]
        self.special_ids = {a["id"] for a in self.added if a["special"]}

    def normalize(self, s, n=None):
        n = self.tj["normalizer"] if n is None else n
        if n is None:
            return s
        t = n["type"]
        if t == "Sequence":
            for x in n["normalizers"]:
                s = self.normalize(s, x)
            return s
        if t == "Prepend":
            return n["prepend"] + s if s else s
        if t == "Replace":
            return s.replace(n["pattern"]["String"], n["content"])
        if t == "NFC":
            return unicodedata.normalize("NFC", s)
        raise ValueError(t)

    def split_added(self, s, tokens, special):
        """Leftmost-longest matches of the added tokens; a skipped special
        match stays text and the search goes on after it."""
        out, prev, i = [], 0, 0
        while i < len(s):
            best = None
            for a in tokens:
                c = a["match"]
                if s.startswith(c, i) and (best is None or len(c) > len(best["match"])):
                    best = a
            if best is None:
                i += 1
                continue
            end = i + len(best["match"])
            if best["special"] and not special:
                i = end
                continue
            out.append(s[prev:i])
            out.append(best["id"])
            prev = i = end
        out.append(s[prev:])
        return out

    def pre_tokenize(self, s, at_start, p=None):
        p = self.tj["pre_tokenizer"] if p is None else p
        if p is None:
            return [s]
        t = p["type"]
        if t == "Sequence":
            pieces = [(s, at_start)]
            for x in p["pretokenizers"]:
                pieces = [(q, a and k == 0) for piece, a in pieces for k, q in enumerate(self.pre_tokenize(piece, a, x))]
            return [q for q, _ in pieces]
        if t == "Split":
            return [m.group() for m in regex.finditer(p["pattern"]["Regex"], s)]  # the patterns cover all text
        if t == "ByteLevel":
            assert not p["add_prefix_space"]
            return [m.group() for m in regex.finditer(GPT2_PAT, s)] if p["use_regex"] else [s]
        if t == "Metaspace":
            r = p["replacement"]
            s = s.replace(" ", r)
            if not s.startswith(r) and (p["prepend_scheme"] == "always" or p["prepend_scheme"] == "first" and at_start):
                s = r + s
            assert not p["split"]
            return [s]
        raise ValueError(t)

    def bpe(self, piece):
        m = self.tj["model"]
        bytelevel = "ByteLevel" in json.dumps(self.tj["pre_tokenizer"])
        if bytelevel:
            piece = to_bl(piece)
        if m["ignore_merges"] and piece in self.vocab:
            return [self.vocab[piece]]
        syms = []
        for ch in piece:
            if ch in self.vocab:
                syms.append(ch)
            elif m["byte_fallback"]:
                syms.extend("<0x%02X>" % b for b in ch.encode("utf-8"))
            else:
                raise ValueError("unknown character %r" % ch)
        while True:
            best = None
            for i in range(len(syms) - 1):
                r = self.rank.get((syms[i], syms[i + 1]))
                if r is not None and (best is None or r < best[0]):
                    best = (r, i)
            if best is None:
                break
            i = best[1]
            syms[i:i + 2] = [syms[i] + syms[i + 1]]
        return [self.vocab[x] for x in syms]

    def encode(self, text, special):
        ids = []
        raw = [dict(a, match=a["content"]) for a in self.added if not a["normalized"]]
        normed = [dict(a, match=self.normalize(a["content"])) for a in self.added if a["normalized"]]
        offset = 0
        for seg in self.split_added(text, raw, special):
            if isinstance(seg, int):
                ids.append(seg)
                continue
            at_start = offset == 0
            offset += 1
            if not seg:
                continue
            for k, seg2 in enumerate(self.split_added(self.normalize(seg), normed, special)):
                if isinstance(seg2, int):
                    ids.append(seg2)
                    continue
                if seg2:
                    for piece in self.pre_tokenize(seg2, at_start and k == 0):
                        ids.extend(self.bpe(piece))
        return ids

    def decode(self, ids):
        """Decode with skip_special_tokens, as bytes (ByteFallback and
        ByteLevel give raw bytes rather than U+FFFD)."""
        eot = self.eot()
        normed = {a["id"]: self.normalize(a["content"]) for a in self.added if a["normalized"]}
        toks = [normed.get(i, self.inv[i]) for i in ids if i not in self.special_ids and i != eot]
        return self.run_decoder(toks, self.tj["decoder"])

    def run_decoder(self, toks, d):
        # Tokens are bytes from here on.
        toks = [t.encode("utf-8") for t in toks]
        steps = d["decoders"] if d["type"] == "Sequence" else [d]
        for st in steps:
            t = st["type"]
            if t == "ByteLevel":
                out = b""
                for tok in toks:
                    s = tok.decode("utf-8")
                    out += bytes(CHAR_BYTE[c] for c in s) if all(c in CHAR_BYTE for c in s) else tok
                toks = [out]
            elif t == "Replace":
                toks = [tok.replace(st["pattern"]["String"].encode(), st["content"].encode()) for tok in toks]
            elif t == "ByteFallback":
                toks = [bytes([int(tok[3:5], 16)]) if len(tok) == 6 and tok.startswith(b"<0x") and tok.endswith(b">") else tok
                        for tok in toks]
            elif t == "Fuse":
                toks = [b"".join(toks)]
            elif t == "Strip":
                c = st["content"].encode()
                new = []
                for tok in toks:
                    for _ in range(st["start"]):
                        if tok.startswith(c):
                            tok = tok[len(c):]
                    for _ in range(st["stop"]):
                        if tok.endswith(c):
                            tok = tok[:-len(c)]
                    new.append(tok)
                toks = new
            else:
                raise ValueError(t)
        return b"".join(toks)

    def eot(self):
        e = self.cfg.get("eos_token")
        if isinstance(e, dict):
            e = e["content"]
        if e is None:
            e = "<|endoftext|>"
        return self.vocab.get(e, next((a["id"] for a in self.added if a["content"] == e), None))


def main():
    for name, (tj, cfg) in styles().items():
        d = os.path.join(OUT, name)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
            json.dump(tj, f, ensure_ascii=False, indent=1)
            f.write("\n")
        with open(os.path.join(d, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            json.dump(cfg, f, ensure_ascii=False, indent=2)
            f.write("\n")
        ref = Ref(tj, cfg)
        cases = []
        for text in TESTS:
            ids = ref.encode(text, False)
            sids = ref.encode(text, True)
            dec = ref.decode(ids)
            cases.append({"text": text, "ids": ids, "special_ids": sids, "decoded": dec.decode("utf-8")})
        with open(os.path.join(d, "expect.json"), "w", encoding="utf-8") as f:
            f.write('{"eot": %d, "cases": [\n' % ref.eot())
            f.write(",\n".join(json.dumps(c, ensure_ascii=False, separators=(",", ":")) for c in cases))
            f.write("\n]}\n")
        print(name, len(tj["model"]["vocab"]), "tokens,", len(tj["model"]["merges"]), "merges")


if __name__ == "__main__":
    main()
