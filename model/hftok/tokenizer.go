package hftok

import (
	"github.com/braidml/braid/model/internal/pretok"
)

// Tokenizer is a BPE tokenizer read from tokenizer.json: it implements
// model.Tokenizer. It is read-only once Parse or Load returns it (but for
// a cache of merged words that never changes a result), and all its
// methods are safe for concurrent use.
type Tokenizer struct {
	name  string
	vocab int // the highest id + 1

	// Encoding: added tokens in the raw text (normalized: false) and in
	// normalized text (normalized: true), the normalizer, the
	// pre-tokenizer and the model.
	added, addedNorm *addedSet
	norm             normalizer   // nil: none
	pre              preTokenizer // nil: the text is one pre-token
	// fast, when set, is pre inlined: a Split by a pattern of package
	// pretok followed by ByteLevel, or ByteLevel with use_regex alone.
	fast  pretok.Func
	model *bpe

	// Decoding: each id's text after the decoder's per-token steps is
	// text[off[id]:off[id+1]] (and firstText[firstOff[id]:...] when it
	// comes first, if the decoder treats the first token apart); skip
	// marks the ids Decode leaves out.
	dec                 decoder
	text, firstText     []byte
	off, firstOff       []uint32
	skip                []bool
	tokens              map[string]int32 // every token's string (tokenizer.json's spelling) to its id
	strs                []string         // id to that string; "" for an id no token has
	specials            Specials
	eot                 int32
	chatTemplates       map[string]string
	defaultChatTemplate string
	files               map[string][]byte // the files it was read from, by name
}

// Specials are a tokenizer's special tokens, each -1 where it has none,
// and the ids that Hugging Face's encode with add_special_tokens=True puts
// around one sequence.
type Specials struct {
	// BOS, EOS, UNK and PAD are the ids of tokenizer_config.json's
	// bos_token, eos_token, unk_token and pad_token. EOS is also the
	// tokenizer's EOT unless tokenizer_config.json has no eos_token (see
	// Parse).
	BOS, EOS, UNK, PAD int32
	// Prefix and Suffix frame one sequence: [BOS] and nothing where
	// add_bos_token is true and add_eos_token false. Where
	// tokenizer_config.json sets neither, they come from tokenizer.json's
	// post_processor (Llama 3's TemplateProcessing gives Prefix
	// [<|begin_of_text|>]).
	Prefix, Suffix []int32
}

// Name identifies the tokenizer in checkpoints and shards: "hf-", the first
// 12 hex digits of tokenizer.json's SHA-256, "-" and the EOT id.
func (t *Tokenizer) Name() string { return t.name }

// Vocab returns the number of ids: the highest id of tokenizer.json (of its
// model's vocabulary and its added tokens) plus one.
func (t *Tokenizer) Vocab() int { return t.vocab }

// EOT returns the end-of-text id that separates documents: eos_token's.
func (t *Tokenizer) EOT() int32 { return t.eot }

// Specials returns the special token ids and the sequence framing. The
// slices are the caller's.
func (t *Tokenizer) Specials() Specials {
	s := t.specials
	s.Prefix = append([]int32(nil), s.Prefix...)
	s.Suffix = append([]int32(nil), s.Suffix...)
	return s
}

// ChatTemplate returns tokenizer_config.json's chat_template (or, without
// one, chat_template.jinja's that Load read), "" if there is none. Where
// chat_template is a list of named templates, it returns the one named
// "default".
func (t *Tokenizer) ChatTemplate() string { return t.defaultChatTemplate }

// ChatTemplates returns every named chat template: the list
// tokenizer_config.json may give, or the single template named "default".
// The map is the caller's.
func (t *Tokenizer) ChatTemplates() map[string]string {
	m := make(map[string]string, len(t.chatTemplates))
	for k, v := range t.chatTemplates {
		m[k] = v
	}
	return m
}

// Files returns the files the tokenizer was read from, by name
// (TokenizerFile, and ConfigFile and ChatTemplateFile where they were
// read), for saving beside a checkpoint so that it loads with the same
// tokenizer. The slices must not be modified.
func (t *Tokenizer) Files() map[string][]byte {
	m := make(map[string][]byte, len(t.files))
	for k, v := range t.files {
		m[k] = v
	}
	return m
}

// TokenID returns the id of a token spelled as tokenizer.json spells it
// (an added token's content such as "<|eot_id|>", or a vocabulary entry
// such as "Ġthe" or "▁the").
func (t *Tokenizer) TokenID(tok string) (int32, bool) {
	id, ok := t.tokens[tok]
	return id, ok
}

// SpecialID returns the id of the special added token s (a control token
// such as "<|eot_id|>" or "<|im_start|>"), and false when s is no special
// token: what chat templates need (model/chat.SpecialTokenizer). Encode
// never returns these ids for text.
func (t *Tokenizer) SpecialID(s string) (int32, bool) {
	for _, set := range []*addedSet{t.added, t.addedNorm} {
		if set == nil {
			continue
		}
		for _, a := range set.tokens {
			if a.special && a.content == s {
				return a.id, true
			}
		}
	}
	return 0, false
}

// Token returns the token of an id as tokenizer.json spells it.
func (t *Tokenizer) Token(id int32) (string, bool) {
	if id < 0 || int(id) >= len(t.strs) || t.strs[id] == "" {
		return "", false
	}
	return t.strs[id], true
}

// Encode appends the ids of text to dst and returns it. It is
// deterministic and safe for concurrent use.
//
// Special added tokens are not recognised: "<|eot_id|>" in text is
// ordinary text and encodes to several ids, so that a corpus or a user's
// message cannot forge a control token (Hugging Face's encode with
// split_special_tokens=True). Added tokens that are not special are
// matched, as there. Encode adds no BOS or EOS (see Specials).
//
// Valid UTF-8 encodes to the ids Hugging Face's tokenizers give. Bytes that
// are not UTF-8 are pre-tokens of their own, encoded through the
// vocabulary's bytes (byte-level) or its <0xNN> tokens (byte_fallback),
// and so decode back; without either they become unk_token or nothing.
func (t *Tokenizer) Encode(dst []int32, text []byte) []int32 { return t.encode(dst, text, false) }

// EncodeSpecial is Encode that also turns special added tokens in text into
// their ids, as Hugging Face's encode does by default: for text the caller
// wrote, such as a chat template's frame, never for data or a user's
// message.
func (t *Tokenizer) EncodeSpecial(dst []int32, text []byte) []int32 {
	return t.encode(dst, text, true)
}

func (t *Tokenizer) encode(dst []int32, text []byte, special bool) []int32 {
	var buf [8]segment
	for _, sg := range t.added.split(buf[:0], text, special) {
		if sg.id >= 0 {
			dst = append(dst, sg.id)
			continue
		}
		dst = t.encodeText(dst, text[sg.start:sg.end], sg.start == 0, special)
	}
	return dst
}

// encodeText encodes text without the added tokens of the raw text:
// normalizes it, splits it on the normalized added tokens and encodes the
// rest. atStart reports whether s starts the text.
func (t *Tokenizer) encodeText(dst []int32, s []byte, atStart, special bool) []int32 {
	if len(s) == 0 {
		return dst
	}
	if t.norm != nil {
		s = t.norm.normalize(s)
	}
	if t.addedNorm == nil {
		return t.preTokenize(dst, s, atStart)
	}
	var buf [8]segment
	for _, sg := range t.addedNorm.split(buf[:0], s, special) {
		if sg.id >= 0 {
			dst = append(dst, sg.id)
			continue
		}
		dst = t.preTokenize(dst, s[sg.start:sg.end], atStart && sg.start == 0)
	}
	return dst
}

// preTokenize splits normalized text into pre-tokens and encodes each.
func (t *Tokenizer) preTokenize(dst []int32, s []byte, atStart bool) []int32 {
	if len(s) == 0 {
		return dst
	}
	if t.fast != nil {
		for len(s) > 0 {
			n := pretok.ValidPrefix(s)
			for v := s[:n]; len(v) > 0; {
				p := t.fast(v)
				dst = t.model.encode(dst, v[:p])
				v = v[p:]
			}
			if n == len(s) {
				break
			}
			dst = t.model.encode(dst, s[n:n+1]) // a byte that is not UTF-8
			s = s[n+1:]
		}
		return dst
	}
	if t.pre == nil {
		return t.model.encode(dst, s)
	}
	t.pre.split(s, atStart, func(p []byte, _ bool) { dst = t.model.encode(dst, p) })
	return dst
}

// Decode appends the text of ids to dst and returns it, as Hugging Face's
// decode with skip_special_tokens=True does: special added tokens and EOT
// decode to nothing, and so do ids outside 0..Vocab()-1. It works on
// bytes: tokens that hold part of a character give those bytes (Hugging
// Face gives U+FFFD), so Decode(nil, Encode(nil, x)) == x wherever the
// tokenizer loses nothing (see Encode, and the package doc for the
// normalizers and decoders that do). It is safe for concurrent use.
//
// Decoders that strip (Strip, and Metaspace's first token) act on the
// start of ids: SentencePiece-style tokenizers drop the space they
// prepended, as for a whole text. Decoding a continuation by itself loses
// that space; decode it with what comes before and cut.
func (t *Tokenizer) Decode(dst []byte, ids []int32) []byte {
	start, first := len(dst), true
	for _, id := range ids {
		if id < 0 || int(id) >= t.vocab || t.skip[id] {
			continue
		}
		if !first {
			dst = append(dst, t.dec.sep...)
		}
		if first && t.dec.positional {
			dst = append(dst, t.firstText[t.firstOff[id]:t.firstOff[id+1]]...)
		} else {
			dst = append(dst, t.text[t.off[id]:t.off[id+1]]...)
		}
		first = false
	}
	if len(t.dec.whole) > 0 && len(dst) > start {
		dst = append(dst[:start], t.dec.finish(dst[start:])...)
	}
	return dst
}
