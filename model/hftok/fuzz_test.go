package hftok_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"slices"
	"testing"
	"unicode/utf8"

	"github.com/braidml/braid/model/hftok"
)

// FuzzParse: any tokenizer.json and tokenizer_config.json give a tokenizer
// or an error wrapping ErrUnsupported or ErrMalformed, never a panic, and a
// tokenizer that Parse accepts encodes and decodes without one.
func FuzzParse(f *testing.F) {
	for _, style := range styles {
		tj, cj := styleFiles(f, style)
		f.Add(tj, cj)
	}
	f.Add(tinyJSON(f, nil), []byte(`{"eos_token": {"content": "<|endoftext|>"}, "add_eos_token": true, "chat_template": [{"name": "x", "template": "y"}]}`))
	f.Add(tinyJSON(f, map[string]any{"model": tinyModel(map[string]any{"ignore_merges": true, "byte_fallback": true})}), []byte(nil))
	f.Add([]byte(`{"model": {"type": "BPE", "vocab": {"a": 0, "<|endoftext|>": 1048575}, "merges": []}, "added_tokens": [{"id": 1, "content": "<|endoftext|>", "special": true}]}`), []byte(nil))
	f.Add([]byte(`{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [["a", "a"]]}}`), []byte(`{"eos_token": "a"}`))
	f.Add([]byte(`{}`), []byte(`{}`))
	texts := [][]byte{[]byte("Hello world <|endoftext|> <s> ▁x  \n\n12345 naïve 😀 \xff"), nil}
	f.Fuzz(func(t *testing.T, tj, cj []byte) {
		tok, err := hftok.Parse(tj, cj)
		if err != nil {
			if !errors.Is(err, hftok.ErrUnsupported) && !errors.Is(err, hftok.ErrMalformed) {
				t.Fatalf("error wraps neither sentinel: %v", err)
			}
			return
		}
		if tok.EOT() < 0 || int(tok.EOT()) >= tok.Vocab() || tok.Vocab() > hftok.MaxVocab {
			t.Fatalf("EOT %d, vocab %d", tok.EOT(), tok.Vocab())
		}
		for _, text := range texts {
			ids := append(tok.Encode(nil, text), tok.EncodeSpecial(nil, text)...)
			for _, id := range ids {
				if id < 0 || int(id) >= tok.Vocab() {
					t.Fatalf("id %d outside the vocabulary of %d", id, tok.Vocab())
				}
			}
			_ = tok.Decode(nil, append(ids, -1, int32(tok.Vocab()), tok.EOT()))
		}
	})
}

// FuzzEncode: in every style, any text encodes to the ids of the plain
// route, to ids inside the vocabulary and never EOT, and decodes back as
// roundTrip says; valid UTF-8 or not.
func FuzzEncode(f *testing.F) {
	_, e := loadStyle(f, "gpt2")
	for _, c := range e.Cases {
		f.Add([]byte(c.Text))
	}
	for _, s := range []string{"\xff", "abc\xffdef", "你好\xe4\xb8", "\xed\xa0\x80", " \xff the\xff\n\n\xff  x", "'\xffs", "▁\xff▁▁x"} {
		f.Add([]byte(s))
	}
	type pair struct{ fast, plain *hftok.Tokenizer }
	toks := map[string]pair{}
	for _, style := range styles {
		fast, plain := plainStyle(f, style)
		toks[style] = pair{fast, plain}
	}
	f.Fuzz(func(t *testing.T, text []byte) {
		for _, style := range styles {
			p := toks[style]
			ids := p.fast.Encode(nil, text)
			if want := p.plain.Encode(nil, text); !slices.Equal(ids, want) {
				t.Fatalf("%s: Encode(%q) = %v, plain %v", style, text, ids, want)
			}
			for _, id := range ids {
				if id < 0 || int(id) >= p.fast.Vocab() || id == p.fast.EOT() {
					t.Fatalf("%s: Encode(%q) gives id %d", style, text, id)
				}
			}
			want := roundTrip(style, text)
			if style == "qwen2" && !utf8.Valid(text) {
				want = nil // NFC of text that is not UTF-8 is x/text's to define
			}
			if got := p.fast.Decode(nil, ids); want != nil && !bytes.Equal(got, want) {
				t.Fatalf("%s: %q round-trips to %q, want %q", style, text, got, want)
			}
		}
	})
}

// FuzzDecode: any ids decode without a panic, ids outside the vocabulary
// and special ones to nothing; byte-level styles decode each id alone to
// the bytes it gives among others.
func FuzzDecode(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 255, 255, 255, 255, 1, 2, 3, 4})
	f.Add(binary.LittleEndian.AppendUint32(nil, 300))
	var toks []*hftok.Tokenizer
	for _, style := range styles {
		tok, _ := loadStyle(f, style)
		toks = append(toks, tok)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		ids := make([]int32, len(raw)/4)
		for i := range ids {
			ids[i] = int32(binary.LittleEndian.Uint32(raw[4*i:]))
			if raw[4*i]&1 == 0 { // mostly ids of the vocabulary
				ids[i] = int32(uint32(ids[i]) % 520)
			}
		}
		for i, tok := range toks {
			whole := tok.Decode(nil, ids)
			withBad := tok.Decode(nil, append(slices.Clone(ids), -1, 1<<30, tok.EOT()))
			if !bytes.Equal(whole, withBad) {
				t.Fatalf("%s: out-of-range ids and EOT change the text: %q, %q", styles[i], whole, withBad)
			}
			if styles[i] == "llama2" || styles[i] == "mistral" {
				continue // the decoder strips the first token
			}
			var pieces []byte
			for _, id := range ids {
				pieces = tok.Decode(pieces, []int32{id})
			}
			if !bytes.Equal(pieces, whole) {
				t.Fatalf("%s: ids one by one decode to %q, together to %q", styles[i], pieces, whole)
			}
		}
	})
}
