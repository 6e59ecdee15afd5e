package hftok_test

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/braidml/braid/model/hftok"
)

// tinyJSON is a small valid tokenizer.json: bytes a, b, c, merged to ab and
// abc, and <|endoftext|>; edit replaces a top-level key.
func tinyJSON(t testing.TB, edit map[string]any) []byte {
	t.Helper()
	f := map[string]any{
		"version": "1.0",
		"added_tokens": []any{map[string]any{"id": 5, "content": "<|endoftext|>", "single_word": false, "lstrip": false,
			"rstrip": false, "normalized": false, "special": true}},
		"normalizer":     nil,
		"pre_tokenizer":  map[string]any{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
		"post_processor": nil,
		"decoder":        map[string]any{"type": "ByteLevel"},
		"model": map[string]any{"type": "BPE", "vocab": map[string]int{"a": 0, "b": 1, "c": 2, "ab": 3, "abc": 4},
			"merges": []string{"a b", "ab c"}},
	}
	for k, v := range edit {
		f[k] = v
	}
	b, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// model returns tinyJSON's model with edits.
func tinyModel(edit map[string]any) map[string]any {
	m := map[string]any{"type": "BPE", "vocab": map[string]int{"a": 0, "b": 1, "c": 2, "ab": 3, "abc": 4},
		"merges": []string{"a b", "ab c"}}
	for k, v := range edit {
		m[k] = v
	}
	return m
}

func TestTiny(t *testing.T) {
	tok, err := hftok.Parse(tinyJSON(t, nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := tok.Encode(nil, []byte("abcab<|endoftext|>")); !slices.Equal(got, []int32{4, 3}) {
		// "abcab" is one pre-token; "<|endoftext|>" is special text whose
		// bytes are not in the vocabulary, so it encodes to nothing.
		t.Errorf("Encode = %v, want [4 3]", got)
	}
	if got := tok.EncodeSpecial(nil, []byte("abcab<|endoftext|>")); !slices.Equal(got, []int32{4, 3, 5}) {
		t.Errorf("EncodeSpecial = %v, want [4 3 5]", got)
	}
	if tok.Vocab() != 6 || tok.EOT() != 5 || !strings.HasPrefix(tok.Name(), "hf-") || strings.ContainsAny(tok.Name(), " /") {
		t.Errorf("vocab %d EOT %d name %q", tok.Vocab(), tok.EOT(), tok.Name())
	}
}

// Every error names the file, the component and what is wrong, and wraps
// ErrUnsupported for what this package lacks and ErrMalformed for what
// Hugging Face would not write.
func TestParseErrors(t *testing.T) {
	byteLevel := map[string]any{"type": "ByteLevel"}
	split := map[string]any{"type": "Split", "pattern": map[string]any{"Regex": `\s+`}, "behavior": "Isolated", "invert": false}
	for _, c := range []struct {
		name   string
		tj     []byte
		config string
		want   error
		msg    string
	}{
		// Components this package does not implement.
		{"unigram", tinyJSON(t, map[string]any{"model": map[string]any{"type": "Unigram", "vocab": []any{}}}), "",
			hftok.ErrUnsupported, `tokenizer.json: model type "Unigram" is not supported (supported: BPE)`},
		{"wordpiece", tinyJSON(t, map[string]any{"model": map[string]any{"type": "WordPiece", "vocab": map[string]int{}}}), "",
			hftok.ErrUnsupported, `model type "WordPiece" is not supported`},
		{"normalizer", tinyJSON(t, map[string]any{"normalizer": map[string]any{"type": "Sequence", "normalizers": []any{
			map[string]any{"type": "NFC"}, map[string]any{"type": "Lowercase"}}}}), "",
			hftok.ErrUnsupported, `normalizer.normalizers[1]: normalizer type "Lowercase" is not supported (supported: NFC, NFD`},
		{"pre_tokenizer", tinyJSON(t, map[string]any{"pre_tokenizer": map[string]any{"type": "Whitespace"}}), "",
			hftok.ErrUnsupported, `pre_tokenizer: pre_tokenizer type "Whitespace" is not supported (supported: ByteLevel, Digits, Metaspace, Sequence, Split)`},
		{"decoder", tinyJSON(t, map[string]any{"decoder": map[string]any{"type": "WordPiece"}}), "",
			hftok.ErrUnsupported, `decoder: decoder type "WordPiece" is not supported`},
		{"post_processor", tinyJSON(t, map[string]any{"post_processor": map[string]any{"type": "Fancy"}}), "",
			hftok.ErrUnsupported, `post_processor type "Fancy" is not supported`},
		{"byte-level first", tinyJSON(t, map[string]any{"pre_tokenizer": map[string]any{"type": "Sequence", "pretokenizers": []any{byteLevel, split}}}), "",
			hftok.ErrUnsupported, `ByteLevel before another pre-tokenizer`},
		{"dropout", tinyJSON(t, map[string]any{"model": tinyModel(map[string]any{"dropout": 0.1})}), "",
			hftok.ErrUnsupported, `model.dropout 0.1`},
		{"prefix", tinyJSON(t, map[string]any{"model": tinyModel(map[string]any{"continuing_subword_prefix": "##"})}), "",
			hftok.ErrUnsupported, `continuing_subword_prefix`},
		{"version", tinyJSON(t, map[string]any{"version": "2.0"}), "", hftok.ErrUnsupported, `version "2.0"`},
		{"regex", tinyJSON(t, map[string]any{"pre_tokenizer": map[string]any{"type": "Split", "pattern": map[string]any{"Regex": `(`},
			"behavior": "Isolated", "invert": false}}), "", hftok.ErrUnsupported, `pre_tokenizer.pattern: the regular expression does not compile`},

		// Files Hugging Face would not write.
		{"syntax", []byte(`{"model": {`), "", hftok.ErrMalformed, `tokenizer.json: a JSON syntax error at byte 11`},
		{"garbage", []byte(`{"model": x}`), "", hftok.ErrMalformed, `tokenizer.json: a JSON syntax error at byte`},
		{"no model", tinyJSON(t, map[string]any{"model": nil}), "", hftok.ErrMalformed, `tokenizer.json has no model`},
		{"no type", tinyJSON(t, map[string]any{"decoder": map[string]any{"kind": "ByteLevel"}}), "", hftok.ErrMalformed, `decoder has no "type"`},
		{"merge out of vocab", tinyJSON(t, map[string]any{"model": tinyModel(map[string]any{"merges": []string{"a b", "b c"}})}), "",
			hftok.ErrMalformed, `model.merges[1] joins tokens that are not in the vocabulary`},
		{"merge of three", tinyJSON(t, map[string]any{"model": tinyModel(map[string]any{"merges": []string{"a b c"}})}), "",
			hftok.ErrMalformed, `model.merges[0] is not two tokens`},
		{"merges type", tinyJSON(t, map[string]any{"model": tinyModel(map[string]any{"merges": 7})}), "",
			hftok.ErrMalformed, `model.merges: want a list`},
		{"id range", tinyJSON(t, map[string]any{"model": tinyModel(map[string]any{"vocab": map[string]int{"a": -1}})}), "",
			hftok.ErrMalformed, `model.vocab: id -1 is outside`},
		{"id twice", tinyJSON(t, map[string]any{"model": tinyModel(map[string]any{"vocab": map[string]int{"a": 0, "b": 0}, "merges": []string{}})}), "",
			hftok.ErrMalformed, `gives id 0 to two tokens`},
		{"unk", tinyJSON(t, map[string]any{"model": tinyModel(map[string]any{"unk_token": "<unk>"})}), "",
			hftok.ErrMalformed, `model.unk_token "<unk>" is not in the vocabulary`},
		{"added id clash", tinyJSON(t, map[string]any{"added_tokens": []any{map[string]any{"id": 2, "content": "<x>", "special": true}}}), "",
			hftok.ErrMalformed, `added token "<x>" has id 2, which is another token's`},
		{"behavior", tinyJSON(t, map[string]any{"pre_tokenizer": map[string]any{"type": "Split", "pattern": map[string]any{"Regex": "a"},
			"behavior": "Sideways", "invert": false}}), "", hftok.ErrMalformed, `Split behavior "Sideways"`},
		{"pattern", tinyJSON(t, map[string]any{"pre_tokenizer": map[string]any{"type": "Split", "pattern": map[string]any{},
			"behavior": "Isolated", "invert": false}}), "", hftok.ErrMalformed, `want one of "String" and "Regex"`},
		{"metaspace", tinyJSON(t, map[string]any{"pre_tokenizer": map[string]any{"type": "Metaspace", "replacement": "ab"}}), "",
			hftok.ErrMalformed, `Metaspace's replacement must be one character`},
		{"template", tinyJSON(t, map[string]any{"post_processor": map[string]any{"type": "TemplateProcessing",
			"single": []any{map[string]any{"SpecialToken": map[string]any{"id": "<s>"}}}, "special_tokens": map[string]any{}}}), "",
			hftok.ErrMalformed, `post_processor.single[0] names a special token that special_tokens lacks`},
		{"no eot", tinyJSON(t, map[string]any{"added_tokens": []any{}}), "",
			hftok.ErrMalformed, `tokenizer_config.json names no eos_token`},
		{"eos unknown", tinyJSON(t, nil), `{"eos_token": "</s>"}`, hftok.ErrMalformed, `tokenizer_config.json: eos_token "</s>" is not a token`},
		{"eos type", tinyJSON(t, nil), `{"eos_token": 7}`, hftok.ErrMalformed, `tokenizer_config.json: a special token that is neither`},
		{"config syntax", tinyJSON(t, nil), `{"eos_token": `, hftok.ErrMalformed, `tokenizer_config.json: a JSON syntax error at byte 14`},
		{"add_bos without bos", tinyJSON(t, nil), `{"add_bos_token": true}`, hftok.ErrMalformed, `add_bos_token is true but there is no bos_token`},
		{"chat template", tinyJSON(t, nil), `{"chat_template": 3}`, hftok.ErrMalformed, `chat_template: want a string or a list`},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := hftok.Parse(c.tj, []byte(c.config))
			if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.msg) {
				t.Errorf("err = %v\nwant %v containing %q", err, c.want, c.msg)
			}
		})
	}
}

// The fixtures' tokenizer_config.json: special tokens as strings or
// objects, add_bos_token, the post-processor's template, chat templates as
// a string or a named list.
func TestSpecialsAndChatTemplates(t *testing.T) {
	id := func(tok *hftok.Tokenizer, s string) int32 {
		v, ok := tok.TokenID(s)
		if !ok {
			t.Fatalf("no token %q", s)
		}
		return v
	}
	llama3, _ := loadStyle(t, "llama3")
	sp := llama3.Specials()
	if sp.BOS != id(llama3, "<|begin_of_text|>") || sp.EOS != id(llama3, "<|eot_id|>") || llama3.EOT() != sp.EOS ||
		!slices.Equal(sp.Prefix, []int32{sp.BOS}) || len(sp.Suffix) != 0 || sp.PAD != -1 || sp.UNK != -1 {
		t.Errorf("llama3: %+v, EOT %d", sp, llama3.EOT())
	}
	if !strings.Contains(llama3.ChatTemplate(), "messages") {
		t.Errorf("llama3 chat template %q", llama3.ChatTemplate())
	}
	if s, ok := llama3.Token(sp.BOS); !ok || s != "<|begin_of_text|>" {
		t.Errorf("Token(BOS) = %q, %v", s, ok)
	}
	if s, ok := llama3.Token(id(llama3, "Ġt")); !ok || s != "Ġt" {
		t.Errorf("Token(Ġt) = %q, %v", s, ok)
	}

	llama2, _ := loadStyle(t, "llama2")
	sp = llama2.Specials()
	if sp.BOS != 1 || sp.EOS != 2 || sp.UNK != 0 || !slices.Equal(sp.Prefix, []int32{1}) || len(sp.Suffix) != 0 {
		t.Errorf("llama2: %+v", sp)
	}
	sp.Prefix[0] = 99 // the caller's copy
	if llama2.Specials().Prefix[0] != 1 {
		t.Error("Specials returned the tokenizer's own slice")
	}

	qwen2, _ := loadStyle(t, "qwen2")
	sp = qwen2.Specials()
	if sp.BOS != -1 || sp.EOS != id(qwen2, "<|im_end|>") || sp.PAD != id(qwen2, "<|endoftext|>") || len(sp.Prefix)+len(sp.Suffix) != 0 {
		t.Errorf("qwen2: %+v", sp)
	}
	if m := qwen2.ChatTemplates(); len(m) != 2 || m["default"] != qwen2.ChatTemplate() || !strings.HasPrefix(m["tool_use"], "tools: ") {
		t.Errorf("qwen2 chat templates %q", m)
	}

	gpt2, _ := loadStyle(t, "gpt2") // tokenizer_config.json names no eos_token
	if gpt2.EOT() != id(gpt2, "<|endoftext|>") || gpt2.ChatTemplate() != "" || gpt2.Specials().EOS != -1 {
		t.Errorf("gpt2: EOT %d, %+v", gpt2.EOT(), gpt2.Specials())
	}
	// EOT and special tokens decode to nothing.
	if got := gpt2.Decode([]byte("a"), []int32{gpt2.EOT()}); string(got) != "a" {
		t.Errorf("Decode(EOT) appended %q", got[1:])
	}
}

// Load reads chat_template.jinja where tokenizer_config.json has no
// template, works without tokenizer_config.json, and names a missing
// tokenizer.json.
func TestLoadFiles(t *testing.T) {
	dir := t.TempDir()
	tj, _ := styleFiles(t, "gpt2")
	if err := os.WriteFile(filepath.Join(dir, hftok.TokenizerFile), tj, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, hftok.ChatTemplateFile), []byte("{{ messages }}"), 0o644); err != nil {
		t.Fatal(err)
	}
	tok, err := hftok.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if tok.ChatTemplate() != "{{ messages }}" || tok.ChatTemplates()["default"] != "{{ messages }}" {
		t.Errorf("chat template %q", tok.ChatTemplate())
	}
	if _, err := hftok.Load(t.TempDir()); !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "tokenizer.json") {
		t.Errorf("Load of an empty directory: %v", err)
	}
	if err := os.Mkdir(filepath.Join(dir, hftok.ConfigFile), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := hftok.Load(dir); err == nil || !strings.Contains(err.Error(), "directory") {
		t.Errorf("Load with a directory for tokenizer_config.json: %v", err)
	}
}

// Other components the package supports, on the tiny vocabulary: Digits,
// Split behaviours and inversion, a String pattern, NFD and NFKC, a Regex
// Replace, a decoder without joins, no decoder at all, RobertaProcessing.
func TestComponents(t *testing.T) {
	vocab := map[string]int{}
	for i, s := range []string{"a", "b", "1", "2", " ", "-", "ab", "é", "e", "\u0301", "<s>", "</s>", "x", "▁", "b▁"} {
		vocab[s] = i
	}
	base := map[string]any{"type": "BPE", "vocab": vocab, "merges": [][2]string{{"b", "▁"}, {"a", "b"}}}
	added := []any{map[string]any{"id": 10, "content": "<s>", "special": true}, map[string]any{"id": 11, "content": "</s>", "special": true}}
	enc := func(pre, normalizer, decoder, post any, text string) ([]int32, string, hftok.Specials) {
		t.Helper()
		tok, err := hftok.Parse(tinyJSON(t, map[string]any{"model": base, "added_tokens": added, "pre_tokenizer": pre,
			"normalizer": normalizer, "decoder": decoder, "post_processor": post}), nil)
		if err != nil {
			t.Fatal(err)
		}
		ids := tok.Encode(nil, []byte(text))
		return ids, string(tok.Decode(nil, ids)), tok.Specials()
	}
	regex := func(r string) map[string]any { return map[string]any{"Regex": r} }
	splitBy := func(p map[string]any, behavior string, invert bool) map[string]any {
		return map[string]any{"type": "Split", "pattern": p, "behavior": behavior, "invert": invert}
	}
	for _, c := range []struct {
		name           string
		pre, norm, dec any
		text           string
		ids            []int32
		decoded        string
	}{
		{"no pre-tokenizer", nil, nil, nil, "abab", []int32{6, 6}, "ab ab"},
		{"digits", map[string]any{"type": "Digits", "individual_digits": true}, nil, nil, "a12b", []int32{0, 2, 3, 1}, "a 1 2 b"},
		{"digits contiguous", map[string]any{"type": "Digits", "individual_digits": false}, nil, nil, "ab12ab", []int32{6, 2, 3, 6}, "ab 1 2 ab"},
		{"removed", splitBy(regex("-"), "Removed", false), nil, nil, "ab-ab", []int32{6, 6}, "ab ab"},
		{"inverted", splitBy(regex("a"), "Removed", true), nil, nil, "ab", []int32{0}, "a"},
		{"merged with previous", splitBy(map[string]any{"String": "-"}, "MergedWithPrevious", false), nil, nil, "a-b", []int32{0, 5, 1}, "a - b"},
		{"merged with next", splitBy(map[string]any{"String": "-"}, "MergedWithNext", false), nil, nil, "a-b-", []int32{0, 5, 1, 5}, "a - b -"},
		{"contiguous", splitBy(regex("[ab]"), "Contiguous", false), nil, nil, "ab-ab", []int32{6, 5, 6}, "ab - ab"},
		{"regex other than the three", splitBy(regex(`\d+|\D+`), "Isolated", false), nil, nil, "ab12", []int32{6, 2, 3}, "ab 1 2"},
		{"nfd", nil, map[string]any{"type": "NFD"}, map[string]any{"type": "Fuse"}, "é", []int32{8, 9}, "e\u0301"},
		{"nfkc", nil, map[string]any{"type": "NFKC"}, map[string]any{"type": "Fuse"}, "e\u0301", []int32{7}, "é"},
		{"regex replace", nil, map[string]any{"type": "Replace", "pattern": regex("[0-9]"), "content": "x"}, map[string]any{"type": "Fuse"}, "a1b2", []int32{0, 12, 1, 12}, "axbx"},
		{"metaspace, split", map[string]any{"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true}, nil,
			map[string]any{"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always"}, "ab ab", []int32{13, 6, 13, 6}, "ab ab"},
		{"metaspace, whole", map[string]any{"type": "Metaspace", "replacement": "▁", "prepend_scheme": "never", "split": false}, nil,
			map[string]any{"type": "Metaspace", "replacement": "▁", "prepend_scheme": "never"}, "ab ab", []int32{0, 14, 6}, "ab ab"},
		{"strip each token", nil, nil, map[string]any{"type": "Sequence", "decoders": []any{
			map[string]any{"type": "Strip", "content": "a", "start": 1, "stop": 0}, map[string]any{"type": "Fuse"}}}, "abab", []int32{6, 6}, "bb"},
		{"strip the end", nil, nil, map[string]any{"type": "Sequence", "decoders": []any{
			map[string]any{"type": "Fuse"}, map[string]any{"type": "Strip", "content": "b", "start": 0, "stop": 2}}}, "abab", []int32{6, 6}, "aba"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ids, decoded, _ := enc(c.pre, c.norm, c.dec, nil, c.text)
			if !slices.Equal(ids, c.ids) || decoded != c.decoded {
				t.Errorf("%q: ids %v decoded %q, want %v %q", c.text, ids, decoded, c.ids, c.decoded)
			}
		})
	}
	_, _, sp := enc(nil, nil, nil, map[string]any{"type": "RobertaProcessing", "sep": []any{"</s>", 11}, "cls": []any{"<s>", 10}}, "")
	if !slices.Equal(sp.Prefix, []int32{10}) || !slices.Equal(sp.Suffix, []int32{11}) {
		t.Errorf("RobertaProcessing: %+v", sp)
	}
}
