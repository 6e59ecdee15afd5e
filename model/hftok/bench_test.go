package hftok_test

import (
	"testing"

	"github.com/braidml/braid/internal/corpora"
	"github.com/braidml/braid/model"
	"github.com/braidml/braid/model/hftok"
)

// BenchmarkEncode measures encoding speed on 1 MiB of English (MB/s), warm:
// after the first pass the BPE caches hold the text's words. gpt2-tiktoken
// is braid's GPT-2 tokenizer (tiktoken-go's BPE behind a cache), gpt2-json
// this package on GPT-2's tokenizer.json: the same ids, so the same work.
// The fixtures' vocabularies are tiny (500 tokens), so their words are
// merged from more, shorter pieces than a real vocabulary's.
func BenchmarkEncode(b *testing.B) {
	text := corpora.English(b)
	toks := []struct {
		name string
		tok  model.Tokenizer
	}{
		{"gpt2-tiktoken", model.GPT2Tokenizer{}},
		{"gpt2-json", gpt2FromJSON(b)},
	}
	for _, style := range styles {
		tok, _ := loadStyle(b, style)
		toks = append(toks, struct {
			name string
			tok  model.Tokenizer
		}{style + "-fixture", tok})
	}
	for _, tc := range toks {
		b.Run(tc.name, func(b *testing.B) {
			ids := tc.tok.Encode(nil, text)
			b.SetBytes(int64(len(text)))
			for b.Loop() {
				ids = tc.tok.Encode(ids[:0], text)
			}
			b.ReportMetric(float64(len(text))/float64(len(ids)), "bytes/token")
		})
	}
	// Cold: a fresh tokenizer (empty cache) for each pass.
	b.Run("gpt2-json-cold", func(b *testing.B) {
		b.SetBytes(int64(len(text)))
		var ids []int32
		for b.Loop() {
			b.StopTimer()
			tok, err := hftok.Parse(gpt2JSON(), nil)
			if err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			ids = tok.Encode(ids[:0], text)
		}
	})
}

// BenchmarkParse measures reading GPT-2's tokenizer.json as gpt2JSON builds
// it (2.4 MB: 50,257 tokens, 108,299 merges).
func BenchmarkParse(b *testing.B) {
	js := gpt2JSON()
	b.SetBytes(int64(len(js)))
	for b.Loop() {
		if _, err := hftok.Parse(js, nil); err != nil {
			b.Fatal(err)
		}
	}
}
