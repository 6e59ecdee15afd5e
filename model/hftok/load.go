package hftok

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"io/fs"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/braidml/braid/internal/jsonerr"
	"github.com/braidml/braid/internal/safefile"
	"github.com/braidml/braid/model/internal/pretok"
	"golang.org/x/text/unicode/norm"
)

// Files of a model directory that Load reads.
const (
	TokenizerFile       = "tokenizer.json"
	ConfigFile          = "tokenizer_config.json"
	ChatTemplateFile    = "chat_template.jinja"
	MaxTokenizerBytes   = 64 << 20 // Gemma 3's tokenizer.json, among the largest, has 33 MB
	MaxConfigBytes      = 16 << 20 // tokenizer_config.json, chat_template.jinja
	MaxVocab            = 1 << 20  // ids run from 0 to MaxVocab-1 (the largest vocabularies have 262,144)
	maxTemplateNameSize = 256
)

// Errors of Parse and Load, wrapped with the file and the key at fault.
var (
	// ErrUnsupported: tokenizer.json asks for a component (a model,
	// normalizer, pre-tokenizer, decoder or post-processor type, or one
	// of their options) that this package does not implement.
	ErrUnsupported = errors.New("hftok: unsupported tokenizer")
	// ErrMalformed: a file is not what Hugging Face writes (bad JSON, a
	// missing key, a merge of tokens not in the vocabulary, an id out of
	// range, an eos_token that is no token, ...).
	ErrMalformed = errors.New("hftok: malformed tokenizer")
)

// Load reads dir/tokenizer.json and, where present, dir/tokenizer_config.json
// and dir/chat_template.jinja (the chat template newer transformers write
// apart), and returns the tokenizer they describe (see Parse). Each file is
// opened once and must be a regular file within MaxTokenizerBytes or
// MaxConfigBytes.
func Load(dir string) (*Tokenizer, error) {
	tj, err := safefile.ReadFile(filepath.Join(dir, TokenizerFile), MaxTokenizerBytes)
	if err != nil {
		return nil, fmt.Errorf("hftok: %w", err)
	}
	cj, err := readOptional(filepath.Join(dir, ConfigFile))
	if err != nil {
		return nil, err
	}
	t, err := Parse(tj, cj)
	if err != nil {
		return nil, fmt.Errorf("%w (in %s)", err, dir)
	}
	if t.defaultChatTemplate == "" {
		tmpl, err := readOptional(filepath.Join(dir, ChatTemplateFile))
		if err != nil {
			return nil, err
		}
		t.useChatTemplateFile(tmpl)
	}
	return t, nil
}

// readOptional reads a file that may be absent (nil, nil).
func readOptional(path string) ([]byte, error) {
	b, err := safefile.ReadFile(path, MaxConfigBytes)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("hftok: %w", err)
	}
	return b, nil
}

// Parse builds a tokenizer from the bytes of tokenizer.json and of
// tokenizer_config.json (nil or empty: none). It never panics.
//
// The model must be BPE; normalizers, pre-tokenizers, decoders and
// post-processors must be of the types the package doc lists, and
// ByteLevel, where present, the last pre-tokenizer. Anything else is an
// error wrapping ErrUnsupported that names it; a file that is not what
// Hugging Face writes is one wrapping ErrMalformed.
//
// An added token's id is the model vocabulary's where the vocabulary has
// its content (Hugging Face's rule), else its "id". EOT is eos_token's id;
// without an eos_token in tokenizer_config.json it is the first special
// added token of <|endoftext|>, </s>, <|end_of_text|>, <|im_end|> and
// <eos> (GPT-2's tokenizer_config.json names none), and without that an
// error.
//
// The tokenizer keeps both slices (Files returns them): the caller must not
// modify them afterwards.
func Parse(tokenizerJSON, configJSON []byte) (*Tokenizer, error) {
	var f fileJSON
	if err := unmarshal(tokenizerJSON, &f, TokenizerFile); err != nil {
		return nil, err
	}
	if f.Version != "" && f.Version != "1.0" {
		return nil, fmt.Errorf("%w: %s: version %q is not supported (supported: 1.0)", ErrUnsupported, TokenizerFile, f.Version)
	}
	var cfg tokenizerConfig
	if len(bytes.TrimSpace(configJSON)) > 0 {
		if err := unmarshal(configJSON, &cfg, ConfigFile); err != nil {
			return nil, err
		}
	}
	t := &Tokenizer{}
	var err error
	if t.norm, err = parseNormalizer(f.Normalizer, "normalizer"); err != nil {
		return nil, err
	}
	var stages []preTokenizer
	if stages, err = parsePreTokenizer(f.PreTokenizer, "pre_tokenizer", stages); err != nil {
		return nil, err
	}
	byteLevel := false
	for i, s := range stages {
		if _, ok := s.(byteLevelPre); ok {
			if i != len(stages)-1 {
				return nil, fmt.Errorf("%w: %s: pre_tokenizer: ByteLevel before another pre-tokenizer is not supported (it must be the last)", ErrUnsupported, TokenizerFile)
			}
			byteLevel = true
		}
	}
	t.pre, t.fast = compilePre(stages)
	var ids map[string]int32
	if t.model, ids, err = parseModel(f.Model, byteLevel); err != nil {
		return nil, err
	}
	dec, err := parseDecoder(f.Decoder)
	if err != nil {
		return nil, err
	}
	t.dec = *dec
	if err := t.addTokens(f.AddedTokens, ids); err != nil {
		return nil, err
	}
	if err := t.buildDecoding(); err != nil {
		return nil, err
	}
	prefix, suffix, err := parsePostProcessor(f.PostProcessor, "post_processor", t)
	if err != nil {
		return nil, err
	}
	if err := t.configure(&cfg, prefix, suffix); err != nil {
		return nil, err
	}
	sum := sha256.Sum256(tokenizerJSON)
	t.name = "hf-" + hex.EncodeToString(sum[:6]) + "-" + strconv.Itoa(int(t.eot))
	t.files = map[string][]byte{TokenizerFile: tokenizerJSON}
	if len(configJSON) > 0 {
		t.files[ConfigFile] = configJSON
	}
	return t, nil
}

// unmarshal decodes one JSON object, with errors that name the file and the
// key but quote nothing of the input.
func unmarshal(b []byte, v any, file string) error {
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%w: %s: %s", ErrMalformed, file, jsonProblem(err))
	}
	return nil
}

// jsonProblem says what is wrong with JSON that did not decode.
func jsonProblem(err error) string {
	if me, ok := errors.AsType[*malformedJSON](err); ok {
		return me.msg
	}
	return jsonerr.Problem(err)
}

// malformedJSON is an error of a custom UnmarshalJSON.
type malformedJSON struct{ msg string }

func (e *malformedJSON) Error() string { return e.msg }

// fileJSON is tokenizer.json. truncation and padding are ignored: braid
// cuts and pads sequences itself.
type fileJSON struct {
	Version       string           `json:"version"`
	AddedTokens   []addedTokenJSON `json:"added_tokens"`
	Normalizer    json.RawMessage  `json:"normalizer"`
	PreTokenizer  json.RawMessage  `json:"pre_tokenizer"`
	Model         json.RawMessage  `json:"model"`
	PostProcessor json.RawMessage  `json:"post_processor"`
	Decoder       json.RawMessage  `json:"decoder"`
}

type addedTokenJSON struct {
	ID         int64  `json:"id"`
	Content    string `json:"content"`
	SingleWord bool   `json:"single_word"`
	LStrip     bool   `json:"lstrip"`
	RStrip     bool   `json:"rstrip"`
	Normalized *bool  `json:"normalized"`
	Special    bool   `json:"special"`
}

// tokenizerConfig is what braid reads of tokenizer_config.json.
type tokenizerConfig struct {
	AddBOS       *bool           `json:"add_bos_token"`
	AddEOS       *bool           `json:"add_eos_token"`
	BOS          tokenRef        `json:"bos_token"`
	EOS          tokenRef        `json:"eos_token"`
	UNK          tokenRef        `json:"unk_token"`
	PAD          tokenRef        `json:"pad_token"`
	ChatTemplate json.RawMessage `json:"chat_template"`
}

// tokenRef is a special token in tokenizer_config.json: null, a string, or
// an object with its "content".
type tokenRef struct {
	set     bool
	content string
}

func (r *tokenRef) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case bytes.Equal(b, []byte("null")):
		return nil
	case len(b) > 0 && b[0] == '"':
		r.set = true
		return json.Unmarshal(b, &r.content)
	case len(b) > 0 && b[0] == '{':
		var obj struct {
			Content *string `json:"content"`
		}
		if err := json.Unmarshal(b, &obj); err != nil {
			return err
		}
		if obj.Content == nil {
			return &malformedJSON{"a special token object without \"content\""}
		}
		r.set, r.content = true, *obj.Content
		return nil
	}
	return &malformedJSON{"a special token that is neither a string nor an object"}
}

// isNull reports whether a component is absent or null.
func isNull(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) == 0 || bytes.Equal(raw, []byte("null"))
}

// componentType returns the "type" of a component object.
func componentType(raw json.RawMessage, where string) (string, error) {
	var c struct {
		Type *string `json:"type"`
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		return "", fmt.Errorf("%w: %s: %s: %s", ErrMalformed, TokenizerFile, where, jsonProblem(err))
	}
	if c.Type == nil {
		return "", fmt.Errorf("%w: %s: %s has no \"type\"", ErrMalformed, TokenizerFile, where)
	}
	return *c.Type, nil
}

// decodeComponent decodes a component's options into v.
func decodeComponent(raw json.RawMessage, v any, where string) error {
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("%w: %s: %s: %s", ErrMalformed, TokenizerFile, where, jsonProblem(err))
	}
	return nil
}

// members returns the components of a Sequence, listed under key.
func members(raw json.RawMessage, where, key string) ([]json.RawMessage, error) {
	var s map[string]json.RawMessage
	if err := decodeComponent(raw, &s, where); err != nil {
		return nil, err
	}
	var list []json.RawMessage
	if err := json.Unmarshal(s[key], &list); err != nil && s[key] != nil {
		return nil, fmt.Errorf("%w: %s: %s.%s: want a list", ErrMalformed, TokenizerFile, where, key)
	}
	return list, nil
}

// unsupported is the error of a component type this package lacks.
func unsupported(where, kind, typ, supported string) error {
	return fmt.Errorf("%w: %s: %s: %s type %q is not supported (supported: %s)", ErrUnsupported, TokenizerFile, where, kind, typ, supported)
}

// patternJSON is a Split or Replace pattern: {"String": s} or {"Regex": r}.
type patternJSON struct {
	String *string `json:"String"`
	Regex  *string `json:"Regex"`
}

func (pj patternJSON) compile(where string) (*pattern, error) {
	switch {
	case pj.String != nil && pj.Regex == nil:
		return &pattern{literal: []byte(*pj.String)}, nil
	case pj.Regex != nil && pj.String == nil:
		p, err := newRegex(*pj.Regex)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %s.pattern: the regular expression does not compile here: %v", ErrUnsupported, TokenizerFile, where, err)
		}
		return p, nil
	}
	return nil, fmt.Errorf("%w: %s: %s.pattern: want one of \"String\" and \"Regex\"", ErrMalformed, TokenizerFile, where)
}

const normalizerTypes = "NFC, NFD, NFKC, NFKD, Prepend, Replace, Sequence"

func parseNormalizer(raw json.RawMessage, where string) (normalizer, error) {
	if isNull(raw) {
		return nil, nil
	}
	typ, err := componentType(raw, where)
	if err != nil {
		return nil, err
	}
	switch typ {
	case "Sequence":
		list, err := members(raw, where, "normalizers")
		if err != nil {
			return nil, err
		}
		var seq sequenceNorm
		for i, r := range list {
			n, err := parseNormalizer(r, fmt.Sprintf("%s.normalizers[%d]", where, i))
			if err != nil {
				return nil, err
			}
			if n != nil {
				seq = append(seq, n)
			}
		}
		return seq, nil
	case "Prepend":
		var p struct {
			Prepend *string `json:"prepend"`
		}
		if err := decodeComponent(raw, &p, where); err != nil {
			return nil, err
		}
		if p.Prepend == nil {
			return nil, fmt.Errorf("%w: %s: %s: Prepend has no \"prepend\"", ErrMalformed, TokenizerFile, where)
		}
		return prependNorm{[]byte(*p.Prepend)}, nil
	case "Replace":
		var r struct {
			Pattern patternJSON `json:"pattern"`
			Content *string     `json:"content"`
		}
		if err := decodeComponent(raw, &r, where); err != nil {
			return nil, err
		}
		if r.Content == nil {
			return nil, fmt.Errorf("%w: %s: %s: Replace has no \"content\"", ErrMalformed, TokenizerFile, where)
		}
		p, err := r.Pattern.compile(where)
		if err != nil {
			return nil, err
		}
		return replaceNorm{p, []byte(*r.Content)}, nil
	case "NFC":
		return unicodeNorm{norm.NFC}, nil
	case "NFD":
		return unicodeNorm{norm.NFD}, nil
	case "NFKC":
		return unicodeNorm{norm.NFKC}, nil
	case "NFKD":
		return unicodeNorm{norm.NFKD}, nil
	}
	return nil, unsupported(where, "normalizer", typ, normalizerTypes)
}

const preTokenizerTypes = "ByteLevel, Digits, Metaspace, Sequence, Split"

// parsePreTokenizer appends the pre-tokenizers of raw, a Sequence's
// flattened, to stages.
func parsePreTokenizer(raw json.RawMessage, where string, stages []preTokenizer) ([]preTokenizer, error) {
	if isNull(raw) {
		return stages, nil
	}
	typ, err := componentType(raw, where)
	if err != nil {
		return nil, err
	}
	switch typ {
	case "Sequence":
		list, err := members(raw, where, "pretokenizers")
		if err != nil {
			return nil, err
		}
		for i, r := range list {
			if stages, err = parsePreTokenizer(r, fmt.Sprintf("%s.pretokenizers[%d]", where, i), stages); err != nil {
				return nil, err
			}
		}
		return stages, nil
	case "Split":
		var s struct {
			Pattern  patternJSON `json:"pattern"`
			Behavior string      `json:"behavior"`
			Invert   bool        `json:"invert"`
		}
		if err := decodeComponent(raw, &s, where); err != nil {
			return nil, err
		}
		b, ok := behaviors[s.Behavior]
		if !ok {
			return nil, fmt.Errorf("%w: %s: %s: Split behavior %q is not one of Isolated, Removed, MergedWithPrevious, MergedWithNext, Contiguous", ErrMalformed, TokenizerFile, where, s.Behavior)
		}
		p, err := s.Pattern.compile(where)
		if err != nil {
			return nil, err
		}
		return append(stages, &splitPre{pattern: p, behavior: b, invert: s.Invert}), nil
	case "ByteLevel":
		bl := struct {
			AddPrefixSpace bool `json:"add_prefix_space"`
			UseRegex       bool `json:"use_regex"`
		}{UseRegex: true}
		if err := decodeComponent(raw, &bl, where); err != nil {
			return nil, err
		}
		return append(stages, byteLevelPre{addPrefixSpace: bl.AddPrefixSpace, useRegex: bl.UseRegex}), nil
	case "Metaspace":
		ms, err := parseMetaspace(raw, where)
		if err != nil {
			return nil, err
		}
		return append(stages, ms), nil
	case "Digits":
		var d struct {
			IndividualDigits bool `json:"individual_digits"`
		}
		if err := decodeComponent(raw, &d, where); err != nil {
			return nil, err
		}
		return append(stages, digitsPre{d.IndividualDigits}), nil
	}
	return nil, unsupported(where, "pre_tokenizer", typ, preTokenizerTypes)
}

// parseMetaspace reads a Metaspace pre-tokenizer or decoder. A file older
// than prepend_scheme has add_prefix_space instead.
func parseMetaspace(raw json.RawMessage, where string) (*metaspacePre, error) {
	var m struct {
		Replacement    *string `json:"replacement"`
		PrependScheme  *string `json:"prepend_scheme"`
		AddPrefixSpace *bool   `json:"add_prefix_space"`
		Split          *bool   `json:"split"`
	}
	if err := decodeComponent(raw, &m, where); err != nil {
		return nil, err
	}
	if m.Replacement == nil || utf8.RuneCountInString(*m.Replacement) != 1 {
		return nil, fmt.Errorf("%w: %s: %s: Metaspace's replacement must be one character", ErrMalformed, TokenizerFile, where)
	}
	ms := &metaspacePre{repl: []byte(*m.Replacement), prepend: prependAlways, splitAt: true}
	if m.Split != nil {
		ms.splitAt = *m.Split
	}
	switch {
	case m.PrependScheme != nil:
		scheme, ok := map[string]int{"always": prependAlways, "first": prependFirst, "never": prependNever}[*m.PrependScheme]
		if !ok {
			return nil, fmt.Errorf("%w: %s: %s: Metaspace prepend_scheme %q is not one of always, first, never", ErrMalformed, TokenizerFile, where, *m.PrependScheme)
		}
		if m.AddPrefixSpace != nil && !*m.AddPrefixSpace && scheme != prependNever {
			return nil, fmt.Errorf("%w: %s: %s: Metaspace's add_prefix_space false contradicts prepend_scheme %q", ErrMalformed, TokenizerFile, where, *m.PrependScheme)
		}
		ms.prepend = scheme
	case m.AddPrefixSpace != nil && !*m.AddPrefixSpace:
		ms.prepend = prependNever
	}
	return ms, nil
}

// compilePre returns the pre-tokenizer of stages (nil for none) and, where
// it is one that Tokenizer.preTokenize inlines, its split function.
func compilePre(stages []preTokenizer) (preTokenizer, pretok.Func) {
	switch len(stages) {
	case 0:
		return nil, nil
	case 1:
		if bl, ok := stages[0].(byteLevelPre); ok && bl.useRegex && !bl.addPrefixSpace {
			return stages[0], pretok.GPT2
		}
		return stages[0], nil
	case 2:
		sp, ok1 := stages[0].(*splitPre)
		bl, ok2 := stages[1].(byteLevelPre)
		if ok1 && ok2 && sp.pattern.tile != nil && sp.behavior == isolated && !sp.invert && !bl.useRegex && !bl.addPrefixSpace {
			return sequencePre(stages), sp.pattern.tile
		}
	}
	return sequencePre(stages), nil
}

const decoderTypes = "ByteFallback, ByteLevel, Fuse, Metaspace, Replace, Sequence, Strip"

// parseDecoder compiles the decoder chain.
func parseDecoder(raw json.RawMessage) (*decoder, error) {
	if isNull(raw) {
		return &decoder{sep: []byte(" ")}, nil
	}
	var steps []decodeStep
	var joins []bool // whether each step joins the tokens
	var walk func(raw json.RawMessage, where string) error
	walk = func(raw json.RawMessage, where string) error {
		typ, err := componentType(raw, where)
		if err != nil {
			return err
		}
		switch typ {
		case "Sequence":
			list, err := members(raw, where, "decoders")
			if err != nil {
				return err
			}
			for i, r := range list {
				if err := walk(r, fmt.Sprintf("%s.decoders[%d]", where, i)); err != nil {
					return err
				}
			}
			return nil
		case "ByteLevel":
			steps, joins = append(steps, byteLevelDec{}), append(joins, true)
		case "Fuse":
			steps, joins = append(steps, fuseDec{}), append(joins, true)
		case "ByteFallback":
			steps, joins = append(steps, byteFallbackDec{}), append(joins, false)
		case "Replace":
			var r struct {
				Pattern patternJSON `json:"pattern"`
				Content *string     `json:"content"`
			}
			if err := decodeComponent(raw, &r, where); err != nil {
				return err
			}
			if r.Content == nil {
				return fmt.Errorf("%w: %s: %s: Replace has no \"content\"", ErrMalformed, TokenizerFile, where)
			}
			p, err := r.Pattern.compile(where)
			if err != nil {
				return err
			}
			steps, joins = append(steps, replaceDec{p, []byte(*r.Content)}), append(joins, false)
		case "Strip":
			var s struct {
				Content *string `json:"content"`
				Start   int     `json:"start"`
				Stop    int     `json:"stop"`
			}
			if err := decodeComponent(raw, &s, where); err != nil {
				return err
			}
			if s.Content == nil || utf8.RuneCountInString(*s.Content) != 1 || s.Start < 0 || s.Stop < 0 {
				return fmt.Errorf("%w: %s: %s: Strip needs one character of content and start, stop ≥ 0", ErrMalformed, TokenizerFile, where)
			}
			r, _ := utf8.DecodeRuneInString(*s.Content)
			steps, joins = append(steps, stripDec{r, min(s.Start, 1<<20), min(s.Stop, 1<<20)}), append(joins, false)
		case "Metaspace":
			ms, err := parseMetaspace(raw, where)
			if err != nil {
				return err
			}
			steps, joins = append(steps, metaspaceDec{ms.repl, ms.prepend}), append(joins, false)
		default:
			return unsupported(where, "decoder", typ, decoderTypes)
		}
		return nil
	}
	if err := walk(raw, "decoder"); err != nil {
		return nil, err
	}
	d := &decoder{}
	k := slices.Index(joins, true)
	if k < 0 {
		d.perToken = steps // Hugging Face joins the tokens at the end
	} else {
		d.perToken, d.whole = steps[:k+1], steps[k+1:]
	}
	for _, s := range d.perToken {
		if md, ok := s.(metaspaceDec); ok && md.prepend != prependNever {
			d.positional = true
		}
	}
	return d, nil
}

// bpeJSON is the model of tokenizer.json.
type bpeJSON struct {
	Type                    *string          `json:"type"`
	Dropout                 *float64         `json:"dropout"`
	UnkToken                *string          `json:"unk_token"`
	ContinuingSubwordPrefix *string          `json:"continuing_subword_prefix"`
	EndOfWordSuffix         *string          `json:"end_of_word_suffix"`
	FuseUnk                 bool             `json:"fuse_unk"`
	ByteFallback            bool             `json:"byte_fallback"`
	IgnoreMerges            bool             `json:"ignore_merges"`
	Vocab                   map[string]int64 `json:"vocab"`
	Merges                  json.RawMessage  `json:"merges"`
}

// parseModel reads the BPE model; byteLevel says that pre-tokens will be
// raw bytes. It also returns the vocabulary as tokenizer.json spells it.
func parseModel(raw json.RawMessage, byteLevel bool) (*bpe, map[string]int32, error) {
	if isNull(raw) {
		return nil, nil, fmt.Errorf("%w: %s has no model", ErrMalformed, TokenizerFile)
	}
	var head struct {
		Type *string `json:"type"`
	}
	if err := decodeComponent(raw, &head, "model"); err != nil {
		return nil, nil, err
	}
	if head.Type != nil && *head.Type != "BPE" {
		return nil, nil, fmt.Errorf("%w: %s: model type %q is not supported (supported: BPE)", ErrUnsupported, TokenizerFile, *head.Type)
	}
	var mj bpeJSON
	if err := decodeComponent(raw, &mj, "model"); err != nil {
		return nil, nil, err
	}
	if mj.Type == nil && mj.Merges == nil {
		return nil, nil, fmt.Errorf("%w: %s: model has no \"type\"", ErrMalformed, TokenizerFile)
	}
	switch {
	case mj.Dropout != nil && *mj.Dropout != 0:
		return nil, nil, fmt.Errorf("%w: %s: model.dropout %g is not supported (braid tokenizes deterministically)", ErrUnsupported, TokenizerFile, *mj.Dropout)
	case mj.ContinuingSubwordPrefix != nil && *mj.ContinuingSubwordPrefix != "":
		return nil, nil, fmt.Errorf("%w: %s: model.continuing_subword_prefix is not supported", ErrUnsupported, TokenizerFile)
	case mj.EndOfWordSuffix != nil && *mj.EndOfWordSuffix != "":
		return nil, nil, fmt.Errorf("%w: %s: model.end_of_word_suffix is not supported", ErrUnsupported, TokenizerFile)
	case mj.Vocab == nil:
		return nil, nil, fmt.Errorf("%w: %s: model has no vocab", ErrMalformed, TokenizerFile)
	}
	m := &bpe{
		byteLevel: byteLevel, pieces: make(map[string]int32, len(mj.Vocab)), unk: -1,
		byteFallback: mj.ByteFallback, fuseUnk: mj.FuseUnk, ignoreMerges: mj.IgnoreMerges, seed: maphash.MakeSeed(),
	}
	ids := make(map[string]int32, len(mj.Vocab)) // tokenizer.json's spelling to id
	for tok, id := range mj.Vocab {
		if id < 0 || id >= MaxVocab {
			return nil, nil, fmt.Errorf("%w: %s: model.vocab: id %d is outside 0..%d", ErrMalformed, TokenizerFile, id, MaxVocab-1)
		}
		ids[tok] = int32(id)
		if !byteLevel {
			m.pieces[tok] = int32(id)
		} else if b, ok := fromByteLevel(tok); ok {
			m.pieces[string(b)] = int32(id) // a token of other characters cannot be made from bytes
		}
	}
	for b := range 256 {
		m.byteSym[b], m.fallback[b] = -1, -1
		if id, ok := ids[string(byteChar[b])]; ok && byteLevel {
			m.byteSym[b] = id
		}
		if id, ok := ids[fmt.Sprintf("<0x%02X>", b)]; ok {
			m.fallback[b] = id
		}
	}
	if mj.UnkToken != nil {
		id, ok := ids[*mj.UnkToken]
		if !ok {
			return nil, nil, fmt.Errorf("%w: %s: model.unk_token %q is not in the vocabulary", ErrMalformed, TokenizerFile, *mj.UnkToken)
		}
		m.unk = id
	}
	merges, err := parseMerges(mj.Merges)
	if err != nil {
		return nil, nil, err
	}
	m.merges = make(map[uint64]uint64, len(merges))
	for rank, mg := range merges {
		a, okA := ids[mg[0]]
		b, okB := ids[mg[1]]
		ab, okAB := ids[mg[0]+mg[1]]
		if !okA || !okB || !okAB {
			return nil, nil, fmt.Errorf("%w: %s: model.merges[%d] joins tokens that are not in the vocabulary, or makes one", ErrMalformed, TokenizerFile, rank)
		}
		// A pair merged twice keeps its last rank, as Hugging Face's map does.
		m.merges[uint64(uint32(a))<<32|uint64(uint32(b))] = uint64(rank)<<32 | uint64(uint32(ab))
	}
	m.cut = cutRune(ids, byteLevel)
	m.keepWhole()
	return m, ids, nil
}

// parseMerges reads merges as "a b" strings or [a, b] pairs.
func parseMerges(raw json.RawMessage) ([][2]string, error) {
	if isNull(raw) {
		return nil, nil
	}
	var pairs [][2]string
	if err := json.Unmarshal(raw, &pairs); err == nil {
		return pairs, nil
	}
	var lines []string
	if err := json.Unmarshal(raw, &lines); err != nil {
		return nil, fmt.Errorf("%w: %s: model.merges: want a list of \"a b\" strings or of [a, b] pairs", ErrMalformed, TokenizerFile)
	}
	pairs = make([][2]string, len(lines))
	for i, l := range lines {
		a, b, ok := strings.Cut(l, " ")
		if !ok || strings.Contains(b, " ") {
			return nil, fmt.Errorf("%w: %s: model.merges[%d] is not two tokens separated by one space", ErrMalformed, TokenizerFile, i)
		}
		pairs[i] = [2]string{a, b}
	}
	return pairs, nil
}

// cutRune returns "▁" when a SentencePiece-style vocabulary has it as a
// token and no token with another character before it (see bpe.cut), else
// 0.
func cutRune(ids map[string]int32, byteLevel bool) rune {
	const meta = '▁'
	if _, ok := ids[string(meta)]; !ok || byteLevel {
		return 0
	}
	for tok := range ids {
		prev := rune(-1)
		for _, r := range tok {
			if r == meta && prev != meta && prev != -1 {
				return 0
			}
			prev = r
		}
	}
	return meta
}

// addTokens reads added_tokens and builds the id tables from them and the
// model's vocabulary ids.
func (t *Tokenizer) addTokens(list []addedTokenJSON, ids map[string]int32) error {
	maxID := int32(-1)
	t.tokens = make(map[string]int32, len(ids)+len(list))
	for tok, id := range ids {
		t.tokens[tok] = id
		maxID = max(maxID, id)
	}
	type entry struct {
		tok     addedTokenJSON
		id      int32
		matchOn string // the content, normalized for a normalized token
	}
	var entries []entry
	for i, a := range list {
		if a.Content == "" {
			continue // Hugging Face ignores it
		}
		id, inVocab := t.tokens[a.Content]
		if !inVocab {
			if a.ID < 0 || a.ID >= MaxVocab {
				return fmt.Errorf("%w: %s: added_tokens[%d]: id %d is outside 0..%d", ErrMalformed, TokenizerFile, i, a.ID, MaxVocab-1)
			}
			id = int32(a.ID)
		}
		normalized := !a.Special
		if a.Normalized != nil {
			normalized = *a.Normalized
		}
		e := entry{tok: a, id: id, matchOn: a.Content}
		e.tok.Normalized = &normalized
		if normalized && t.norm != nil {
			e.matchOn = string(t.norm.normalize([]byte(a.Content)))
		}
		entries = append(entries, e)
		maxID = max(maxID, id)
	}
	if maxID < 0 {
		return fmt.Errorf("%w: %s: the vocabulary is empty", ErrMalformed, TokenizerFile)
	}
	t.vocab = int(maxID) + 1
	t.strs = make([]string, t.vocab)
	for tok, id := range t.tokens {
		if t.strs[id] != "" {
			return fmt.Errorf("%w: %s: model.vocab gives id %d to two tokens", ErrMalformed, TokenizerFile, id)
		}
		t.strs[id] = tok
	}
	t.skip = make([]bool, t.vocab)
	var raw, normed []addedToken
	for _, e := range entries {
		if s := t.strs[e.id]; s != "" && s != e.tok.Content {
			return fmt.Errorf("%w: %s: added token %q has id %d, which is another token's", ErrMalformed, TokenizerFile, e.tok.Content, e.id)
		}
		t.strs[e.id] = e.tok.Content
		t.tokens[e.tok.Content] = e.id
		t.skip[e.id] = e.tok.Special
		at := addedToken{id: e.id, content: e.matchOn, special: e.tok.Special, singleWord: e.tok.SingleWord, lstrip: e.tok.LStrip, rstrip: e.tok.RStrip}
		if at.content == "" {
			continue // normalized to nothing: it can never match
		}
		if *e.tok.Normalized {
			normed = append(normed, at)
		} else {
			raw = append(raw, at)
		}
	}
	t.added, t.addedNorm = newAddedSet(raw), newAddedSet(normed)
	return nil
}

// buildDecoding computes each id's text after the per-token decode steps.
func (t *Tokenizer) buildDecoding() error {
	normalizedOf := map[int32]string{}
	for _, set := range []*addedSet{t.addedNorm} {
		if set == nil {
			continue
		}
		for _, a := range set.tokens {
			normalizedOf[a.id] = a.content // Hugging Face decodes a normalized added token as normalized
		}
	}
	build := func(first bool) ([]byte, []uint32) {
		var text []byte
		off := make([]uint32, t.vocab+1)
		for id, s := range t.strs {
			off[id] = uint32(len(text))
			if n, ok := normalizedOf[int32(id)]; ok {
				s = n
			}
			if s != "" {
				text = append(text, t.dec.token([]byte(s), first)...)
			}
		}
		off[t.vocab] = uint32(len(text))
		return text, off
	}
	t.text, t.off = build(false)
	if t.dec.positional {
		t.firstText, t.firstOff = build(true)
	}
	if len(t.text) > 1<<31 {
		return fmt.Errorf("%w: %s: the tokens' text is too large", ErrMalformed, TokenizerFile)
	}
	return nil
}

// postProcessorTypes are those parsePostProcessor reads.
const postProcessorTypes = "BertProcessing, ByteLevel, RobertaProcessing, Sequence, TemplateProcessing"

// parsePostProcessor returns the ids a post-processor puts before and after
// one sequence.
func parsePostProcessor(raw json.RawMessage, where string, t *Tokenizer) (prefix, suffix []int32, err error) {
	if isNull(raw) {
		return nil, nil, nil
	}
	typ, err := componentType(raw, where)
	if err != nil {
		return nil, nil, err
	}
	switch typ {
	case "ByteLevel":
		return nil, nil, nil
	case "Sequence":
		list, err := members(raw, where, "processors")
		if err != nil {
			return nil, nil, err
		}
		for i, r := range list {
			p, q, err := parsePostProcessor(r, fmt.Sprintf("%s.processors[%d]", where, i), t)
			if err != nil {
				return nil, nil, err
			}
			prefix, suffix = append(prefix, p...), append(suffix, q...)
		}
		return prefix, suffix, nil
	case "RobertaProcessing", "BertProcessing":
		var s struct {
			Sep [2]json.RawMessage `json:"sep"`
			Cls [2]json.RawMessage `json:"cls"`
		}
		if err := decodeComponent(raw, &s, where); err != nil {
			return nil, nil, err
		}
		var sep, cls int32
		if err := json.Unmarshal(s.Sep[1], &sep); err != nil || sep < 0 || int(sep) >= t.vocab {
			return nil, nil, fmt.Errorf("%w: %s: %s.sep: want [token, id] with an id of the vocabulary", ErrMalformed, TokenizerFile, where)
		}
		if err := json.Unmarshal(s.Cls[1], &cls); err != nil || cls < 0 || int(cls) >= t.vocab {
			return nil, nil, fmt.Errorf("%w: %s: %s.cls: want [token, id] with an id of the vocabulary", ErrMalformed, TokenizerFile, where)
		}
		return []int32{cls}, []int32{sep}, nil
	case "TemplateProcessing":
		var s struct {
			Single []struct {
				SpecialToken *struct {
					ID string `json:"id"`
				} `json:"SpecialToken"`
				Sequence *struct {
					ID string `json:"id"`
				} `json:"Sequence"`
			} `json:"single"`
			SpecialTokens map[string]struct {
				IDs []int64 `json:"ids"`
			} `json:"special_tokens"`
		}
		if err := decodeComponent(raw, &s, where); err != nil {
			return nil, nil, err
		}
		seen := false
		for i, piece := range s.Single {
			switch {
			case piece.Sequence != nil && piece.SpecialToken == nil && piece.Sequence.ID == "A" && !seen:
				seen = true
			case piece.SpecialToken != nil && piece.Sequence == nil:
				st, ok := s.SpecialTokens[piece.SpecialToken.ID]
				if !ok {
					return nil, nil, fmt.Errorf("%w: %s: %s.single[%d] names a special token that special_tokens lacks", ErrMalformed, TokenizerFile, where, i)
				}
				for _, id := range st.IDs {
					if id < 0 || id >= int64(t.vocab) {
						return nil, nil, fmt.Errorf("%w: %s: %s.special_tokens: id %d is outside the vocabulary", ErrMalformed, TokenizerFile, where, id)
					}
					if seen {
						suffix = append(suffix, int32(id))
					} else {
						prefix = append(prefix, int32(id))
					}
				}
			default:
				return nil, nil, fmt.Errorf("%w: %s: %s.single[%d]: want one SpecialToken or the one Sequence A", ErrMalformed, TokenizerFile, where, i)
			}
		}
		if !seen {
			return nil, nil, fmt.Errorf("%w: %s: %s.single has no Sequence A", ErrMalformed, TokenizerFile, where)
		}
		return prefix, suffix, nil
	}
	return nil, nil, unsupported(where, "post_processor", typ, postProcessorTypes)
}

// eotNames are the end-of-text tokens EOT falls back on, in order.
var eotNames = []string{"<|endoftext|>", "</s>", "<|end_of_text|>", "<|im_end|>", "<eos>"}

// configure applies tokenizer_config.json.
func (t *Tokenizer) configure(cfg *tokenizerConfig, prefix, suffix []int32) error {
	lookup := func(r tokenRef, key string, required bool) (int32, error) {
		if !r.set {
			return -1, nil
		}
		if id, ok := t.tokens[r.content]; ok {
			return id, nil
		}
		if !required {
			return -1, nil // transformers would add it to the vocabulary; braid does not
		}
		return -1, fmt.Errorf("%w: %s: %s %q is not a token of %s", ErrMalformed, ConfigFile, key, r.content, TokenizerFile)
	}
	sp := Specials{BOS: -1, EOS: -1, UNK: -1, PAD: -1, Prefix: prefix, Suffix: suffix}
	var err error
	if sp.BOS, err = lookup(cfg.BOS, "bos_token", true); err != nil {
		return err
	}
	if sp.EOS, err = lookup(cfg.EOS, "eos_token", true); err != nil {
		return err
	}
	sp.UNK, _ = lookup(cfg.UNK, "unk_token", false)
	sp.PAD, _ = lookup(cfg.PAD, "pad_token", false)
	if sp.UNK < 0 {
		sp.UNK = t.model.unk
	}
	if cfg.AddBOS != nil {
		if sp.Prefix = nil; *cfg.AddBOS {
			if sp.BOS < 0 {
				return fmt.Errorf("%w: %s: add_bos_token is true but there is no bos_token", ErrMalformed, ConfigFile)
			}
			sp.Prefix = []int32{sp.BOS}
		}
	}
	if cfg.AddEOS != nil {
		if sp.Suffix = nil; *cfg.AddEOS {
			if sp.EOS < 0 {
				return fmt.Errorf("%w: %s: add_eos_token is true but there is no eos_token", ErrMalformed, ConfigFile)
			}
			sp.Suffix = []int32{sp.EOS}
		}
	}
	t.eot = sp.EOS
	if t.eot < 0 {
		for _, name := range eotNames {
			if id, ok := t.tokens[name]; ok && t.skip[id] {
				t.eot = id
				break
			}
		}
	}
	if t.eot < 0 {
		return fmt.Errorf("%w: %s names no eos_token, and %s has none of the special tokens %s", ErrMalformed, ConfigFile, TokenizerFile, strings.Join(eotNames, " "))
	}
	t.skip[t.eot] = true
	t.specials = sp
	return t.readChatTemplates(cfg.ChatTemplate)
}

// readChatTemplates reads chat_template: a string, or a list of {"name",
// "template"} objects.
func (t *Tokenizer) readChatTemplates(raw json.RawMessage) error {
	if isNull(raw) {
		return nil
	}
	var one string
	if err := json.Unmarshal(raw, &one); err == nil {
		t.defaultChatTemplate, t.chatTemplates = one, map[string]string{"default": one}
		return nil
	}
	var list []struct {
		Name     *string `json:"name"`
		Template *string `json:"template"`
	}
	if err := json.Unmarshal(raw, &list); err != nil {
		return fmt.Errorf("%w: %s: chat_template: want a string or a list of {\"name\", \"template\"}", ErrMalformed, ConfigFile)
	}
	t.chatTemplates = make(map[string]string, len(list))
	for i, e := range list {
		if e.Name == nil || e.Template == nil || len(*e.Name) > maxTemplateNameSize {
			return fmt.Errorf("%w: %s: chat_template[%d]: want a \"name\" and a \"template\"", ErrMalformed, ConfigFile, i)
		}
		t.chatTemplates[*e.Name] = *e.Template
	}
	t.defaultChatTemplate = t.chatTemplates["default"]
	return nil
}
