package gguf

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/braidml/braid/internal/jsonerr"
	"github.com/braidml/braid/model"
	"github.com/braidml/braid/model/hftok"
	"github.com/braidml/braid/model/internal/pretok"
	tiktoken_loader "github.com/pkoukk/tiktoken-go-loader"
)

// Token types of tokenizer.ggml.token_type (llama.cpp's
// llama_token_type).
const (
	tokenNormal      int32 = 1
	tokenUnknown     int32 = 2
	tokenControl     int32 = 3
	tokenUserDefined int32 = 4
	tokenUnused      int32 = 5
	tokenByte        int32 = 6
)

// vocabulary is what the tokenizer.ggml.* keys say about a tokenizer.
type vocabulary struct {
	model, pre string   // tokenizer.ggml.model and .pre ("" leaves pre out)
	tokens     []string // by id, padded to the model's vocabulary
	types      []int32
	scores     []float32 // the llama (SentencePiece) model's merge priorities; nil for gpt2
	merges     []string  // gpt2: "left right", highest priority first
	bos, eos   int32     // -1: none
	unk, pad   int32
	addBOS     bool
	addEOS     bool
	spacePre   *bool  // llama: tokenizer.ggml.add_space_prefix
	template   string // tokenizer.chat_template; "" leaves it out
}

// tokenizerKVs returns the tokenizer.* keys of tokenizer tok for a model
// of config c, as llama.cpp reads them:
//
//   - braid's byte tokenizer is a byte-level BPE ("gpt2") without merges:
//     ids 0..255 are the bytes, spelled as GPT-2's byte-to-character map
//     spells them, and <|endoftext|> a control token, which llama.cpp
//     tokenizes byte by byte exactly as braid does;
//   - GPT-2's tokenizer is GPT-2's vocabulary and its 50,000 merges, with
//     the pre-tokenizer "gpt-2";
//   - a tokenizer.json of a byte-level BPE ("gpt2") with its merges and
//     the pre-tokenizer llama.cpp knows by name for its splitting pattern
//     (gpt-2, llama-bpe for Llama 3's, qwen2 for Qwen2's); one of a
//     SentencePiece-style BPE (byte_fallback, ▁ for spaces) is the "llama"
//     model, with each token made by a merge scored −(the merge's rank), as
//     SentencePiece scores its BPE pieces, so that llama.cpp merges in the
//     same order.
//
// Ids past the tokenizer's up to the model's vocabulary are "[PAD<id>]",
// unused, as the converter pads them.
func tokenizerKVs(tok model.Tokenizer, c model.Config) ([]KV, error) {
	var v *vocabulary
	var err error
	switch t := tok.(type) {
	case model.ByteTokenizer:
		v = byteVocabulary()
	case model.GPT2Tokenizer:
		v, err = gpt2Vocabulary()
	case *hftok.Tokenizer:
		v, err = hfVocabulary(t)
	default:
		return nil, fmt.Errorf("gguf: tokenizer %s: no GGUF description for it", tok.Name())
	}
	if err != nil {
		return nil, err
	}
	if len(v.tokens) > c.Vocab {
		return nil, fmt.Errorf("gguf: tokenizer %s has %d tokens, the model's vocabulary %d", tok.Name(), len(v.tokens), c.Vocab)
	}
	for id := len(v.tokens); id < c.Vocab; id++ {
		v.tokens = append(v.tokens, fmt.Sprintf("[PAD%d]", id))
		v.types = append(v.types, tokenUnused)
		if v.scores != nil {
			v.scores = append(v.scores, 0)
		}
	}
	kvs := []KV{{"tokenizer.ggml.model", v.model}}
	if v.pre != "" {
		kvs = append(kvs, KV{"tokenizer.ggml.pre", v.pre})
	}
	kvs = append(kvs, KV{"tokenizer.ggml.tokens", v.tokens})
	if v.scores != nil {
		kvs = append(kvs, KV{"tokenizer.ggml.scores", v.scores})
	}
	kvs = append(kvs, KV{"tokenizer.ggml.token_type", v.types})
	if v.model == "gpt2" {
		kvs = append(kvs, KV{"tokenizer.ggml.merges", v.merges})
	}
	for _, id := range []struct {
		key string
		id  int32
	}{{"bos_token_id", v.bos}, {"eos_token_id", v.eos}, {"unknown_token_id", v.unk}, {"padding_token_id", v.pad}} {
		if id.id >= 0 {
			kvs = append(kvs, KV{"tokenizer.ggml." + id.key, uint32(id.id)})
		}
	}
	kvs = append(kvs, KV{"tokenizer.ggml.add_bos_token", v.addBOS}, KV{"tokenizer.ggml.add_eos_token", v.addEOS})
	if v.spacePre != nil {
		kvs = append(kvs, KV{"tokenizer.ggml.add_space_prefix", *v.spacePre})
	}
	if v.template != "" {
		kvs = append(kvs, KV{"tokenizer.chat_template", v.template})
	}
	return kvs, nil
}

// byteToRune is GPT-2's map from bytes to printable characters
// (bytes_to_unicode in its encoder.py): printable Latin-1 bytes stand for
// themselves, the others for 256, 257, ... in byte order. Byte-level BPE
// vocabularies spell their tokens with it.
var byteToRune = func() (m [256]rune) {
	n := 0
	for b := range 256 {
		if b >= '!' && b <= '~' || b >= 0xA1 && b <= 0xAC || b >= 0xAE {
			m[b] = rune(b)
		} else {
			m[b] = rune(256 + n)
			n++
		}
	}
	return m
}()

// byteLevel spells bytes b as a byte-level BPE token.
func byteLevel(b []byte) string {
	var s strings.Builder
	for _, c := range b {
		s.WriteRune(byteToRune[c])
	}
	return s.String()
}

// byteVocabulary describes model.ByteTokenizer.
func byteVocabulary() *vocabulary {
	v := &vocabulary{model: "gpt2", pre: "gpt-2", merges: []string{}, bos: model.ByteEOT, eos: model.ByteEOT, unk: -1, pad: -1}
	for b := range 256 {
		v.tokens = append(v.tokens, byteLevel([]byte{byte(b)}))
		v.types = append(v.types, tokenNormal)
	}
	v.tokens = append(v.tokens, "<|endoftext|>")
	v.types = append(v.types, tokenControl)
	return v
}

// gpt2Vocabulary describes model.GPT2Tokenizer from the same embedded
// ranks it reads (tiktoken's r50k_base). tiktoken keeps no merge list: the
// merge that makes token t is found by running BPE on t's bytes with the
// tokens ranked below t (as tiktoken's and the converter's bpe with
// max_rank do), which ends in exactly two parts.
func gpt2Vocabulary() (*vocabulary, error) {
	ranks, err := tiktoken_loader.NewOfflineLoader().LoadTiktokenBpe("r50k_base.tiktoken")
	if err != nil {
		return nil, fmt.Errorf("gguf: gpt2 vocabulary: %w", err)
	}
	if len(ranks) != model.GPT2EOT {
		return nil, fmt.Errorf("gguf: gpt2 vocabulary has %d tokens, want %d", len(ranks), model.GPT2EOT)
	}
	byRank := make([]string, model.GPT2EOT)
	for tok, r := range ranks {
		if r < 0 || r >= len(byRank) || byRank[r] != "" {
			return nil, fmt.Errorf("gguf: gpt2 vocabulary: bad or repeated rank %d", r)
		}
		byRank[r] = tok
	}
	v := &vocabulary{model: "gpt2", pre: "gpt-2", bos: model.GPT2EOT, eos: model.GPT2EOT, unk: -1, pad: -1}
	for r, tok := range byRank {
		v.tokens = append(v.tokens, byteLevel([]byte(tok)))
		v.types = append(v.types, tokenNormal)
		if len(tok) < 2 {
			continue
		}
		a, b, ok := lastMerge(tok, r, ranks)
		if !ok {
			return nil, fmt.Errorf("gguf: gpt2 vocabulary: token %d (%q) is not a merge of two lower-ranked tokens", r, tok)
		}
		v.merges = append(v.merges, byteLevel([]byte(a))+" "+byteLevel([]byte(b)))
	}
	v.tokens = append(v.tokens, "<|endoftext|>")
	v.types = append(v.types, tokenControl)
	return v, nil
}

// lastMerge runs BPE on tok's bytes, merging the adjacent pair of lowest
// rank below maxRank until none is left, and returns the two parts if it
// ends with two.
func lastMerge(tok string, maxRank int, ranks map[string]int) (string, string, bool) {
	parts := make([]string, len(tok))
	for i := range len(tok) { // bytes, not runes: tok is any byte string
		parts[i] = tok[i : i+1]
	}
	for len(parts) > 2 {
		best, at := maxRank, -1
		for i := 0; i+1 < len(parts); i++ {
			if r, ok := ranks[parts[i]+parts[i+1]]; ok && r < best {
				best, at = r, i
			}
		}
		if at < 0 {
			break
		}
		parts = slices.Replace(parts, at, at+2, parts[at]+parts[at+1])
	}
	if len(parts) != 2 {
		return "", "", false
	}
	return parts[0], parts[1], true
}

// tokenizerJSON is what hfVocabulary reads of tokenizer.json.
type tokenizerJSON struct {
	AddedTokens []struct {
		ID      int32  `json:"id"`
		Content string `json:"content"`
		Special bool   `json:"special"`
	} `json:"added_tokens"`
	Normalizer    json.RawMessage `json:"normalizer"`
	PreTokenizer  json.RawMessage `json:"pre_tokenizer"`
	PostProcessor json.RawMessage `json:"post_processor"`
	Model         struct {
		Type         string            `json:"type"`
		Vocab        map[string]int32  `json:"vocab"`
		Merges       []json.RawMessage `json:"merges"` // "a b" or ["a", "b"]
		ByteFallback bool              `json:"byte_fallback"`
	} `json:"model"`
}

// bytePiece matches a SentencePiece byte token, <0x00> to <0xFF>.
var bytePiece = regexp.MustCompile(`^<0x[0-9A-F]{2}>$`)

// hfVocabulary describes a tokenizer read from tokenizer.json.
func hfVocabulary(t *hftok.Tokenizer) (*vocabulary, error) {
	raw, ok := t.Files()[hftok.TokenizerFile]
	if !ok {
		return nil, fmt.Errorf("gguf: tokenizer %s has no %s", t.Name(), hftok.TokenizerFile)
	}
	var tj tokenizerJSON
	if err := json.Unmarshal(raw, &tj); err != nil {
		return nil, fmt.Errorf("gguf: %s: %s", hftok.TokenizerFile, jsonerr.Problem(err))
	}
	if tj.Model.Type != "BPE" {
		return nil, fmt.Errorf("gguf: %s: model type %q: only BPE has a GGUF description here", hftok.TokenizerFile, tj.Model.Type)
	}
	sp := t.Specials()
	v := &vocabulary{bos: sp.BOS, eos: sp.EOS, unk: sp.UNK, pad: sp.PAD, template: t.ChatTemplate()}
	v.addBOS = slices.Equal(sp.Prefix, []int32{sp.BOS}) && sp.BOS >= 0
	v.addEOS = slices.Equal(sp.Suffix, []int32{sp.EOS}) && sp.EOS >= 0
	v.tokens = make([]string, t.Vocab())
	v.types = make([]int32, t.Vocab())
	set := func(id int32, s string, typ int32) error {
		if id < 0 || int(id) >= len(v.tokens) {
			return fmt.Errorf("gguf: %s: token %q has id %d, outside 0..%d", hftok.TokenizerFile, s, id, len(v.tokens)-1)
		}
		v.tokens[id], v.types[id] = s, typ
		return nil
	}
	for s, id := range tj.Model.Vocab {
		typ := tokenNormal
		switch {
		case id == sp.UNK:
			typ = tokenUnknown
		case tj.Model.ByteFallback && bytePiece.MatchString(s):
			typ = tokenByte
		}
		if err := set(id, s, typ); err != nil {
			return nil, err
		}
	}
	for _, a := range tj.AddedTokens {
		typ := tokenUserDefined
		switch {
		case a.ID == sp.UNK:
			typ = tokenUnknown
		case a.Special:
			typ = tokenControl
		}
		if err := set(a.ID, a.Content, typ); err != nil {
			return nil, err
		}
	}
	for id, typ := range v.types {
		if typ == 0 { // an id no token has
			v.tokens[id], v.types[id] = fmt.Sprintf("[PAD%d]", id), tokenUnused
		}
	}
	merges := make([][2]string, len(tj.Model.Merges))
	for i, m := range tj.Model.Merges {
		var s string
		var pair []string
		switch {
		case json.Unmarshal(m, &s) == nil:
			a, b, ok := strings.Cut(s, " ")
			if !ok {
				return nil, fmt.Errorf("gguf: %s: merge %d %q is not two tokens", hftok.TokenizerFile, i, s)
			}
			merges[i] = [2]string{a, b}
		case json.Unmarshal(m, &pair) == nil && len(pair) == 2:
			merges[i] = [2]string{pair[0], pair[1]}
		default:
			return nil, fmt.Errorf("gguf: %s: merge %d is neither \"a b\" nor [\"a\", \"b\"]", hftok.TokenizerFile, i)
		}
	}

	pre := string(tj.PreTokenizer)
	spm := tj.Model.ByteFallback || strings.Contains(pre, `"Metaspace"`) || strings.Contains(string(tj.Normalizer), "▁")
	if spm {
		// SentencePiece-style: llama.cpp's "llama" model merges the pair
		// whose merged token scores highest.
		v.model = "llama"
		v.scores = make([]float32, len(v.tokens))
		for rank, m := range merges {
			if id, ok := tj.Model.Vocab[m[0]+m[1]]; ok && v.scores[id] == 0 {
				v.scores[id] = -float32(rank + 1)
			}
		}
		space := spacePrefix(tj)
		v.spacePre = &space
		return v, nil
	}
	if !strings.Contains(pre, `"ByteLevel"`) {
		return nil, fmt.Errorf("gguf: %s: neither a byte-level BPE nor a SentencePiece-style one: llama.cpp has no model for it", hftok.TokenizerFile)
	}
	v.model = "gpt2"
	name, err := preName(tj.PreTokenizer)
	if err != nil {
		return nil, err
	}
	v.pre = name
	for _, m := range merges {
		v.merges = append(v.merges, m[0]+" "+m[1])
	}
	return v, nil
}

// spacePrefix reports whether a SentencePiece-style tokenizer puts ▁ before
// the text (a Prepend normalizer, or Metaspace prepending), as
// tokenizer.ggml.add_space_prefix says it.
func spacePrefix(tj tokenizerJSON) bool {
	if bytes.Contains(tj.Normalizer, []byte(`"Prepend"`)) {
		return true
	}
	var m struct {
		Type           string `json:"type"`
		PrependScheme  string `json:"prepend_scheme"`
		AddPrefixSpace *bool  `json:"add_prefix_space"`
	}
	if json.Unmarshal(tj.PreTokenizer, &m) != nil || m.Type != "Metaspace" {
		return false
	}
	if m.AddPrefixSpace != nil {
		return *m.AddPrefixSpace
	}
	return m.PrependScheme != "never"
}

// preName is tokenizer.ggml.pre for a byte-level pre-tokenizer: the name
// llama.cpp gives the pre-tokenizer of its splitting pattern.
func preName(raw json.RawMessage) (string, error) {
	var p struct {
		Type          string `json:"type"`
		UseRegex      bool   `json:"use_regex"`
		Pretokenizers []struct {
			Type    string `json:"type"`
			Pattern struct {
				Regex string `json:"Regex"`
			} `json:"pattern"`
			UseRegex bool `json:"use_regex"`
		} `json:"pretokenizers"`
	}
	if err := json.Unmarshal(raw, &p); err != nil {
		return "", fmt.Errorf("gguf: %s: pre_tokenizer: %s", hftok.TokenizerFile, jsonerr.Problem(err))
	}
	if p.Type == "ByteLevel" && p.UseRegex {
		return "gpt-2", nil
	}
	if p.Type == "Sequence" && len(p.Pretokenizers) == 2 && p.Pretokenizers[0].Type == "Split" &&
		p.Pretokenizers[1].Type == "ByteLevel" && !p.Pretokenizers[1].UseRegex {
		switch re := p.Pretokenizers[0].Pattern.Regex; re {
		case pretok.GPT2Pattern:
			return "gpt-2", nil
		case pretok.Llama3Pattern:
			return "llama-bpe", nil
		case pretok.Qwen2Pattern:
			return "qwen2", nil
		default:
			return "", fmt.Errorf("gguf: %s: splitting pattern %q is not one braid can name for llama.cpp (GPT-2's, Llama 3's or Qwen2's)", hftok.TokenizerFile, re)
		}
	}
	return "", fmt.Errorf("gguf: %s: pre_tokenizer is not GPT-2's ByteLevel or a Split then ByteLevel: llama.cpp would split the text differently", hftok.TokenizerFile)
}
