package model_test

import (
	"testing"

	"github.com/braidml/braid/internal/corpora"
	"github.com/braidml/braid/model"
)

// benchText is a fixed 1 MiB of English (Moby-Dick from the shared
// corpora), or of Go source where the corpora are absent.
func benchText(b *testing.B) []byte { return corpora.English(b) }

// BenchmarkTokenizer measures encoding speed (steady state: after the first
// pass GPT-2's BPE cache is warm); -benchmem shows what each allocates per
// MiB. tiktoken-go is the baseline GPT2Tokenizer is built on: its
// EncodeOrdinary of the whole text, ids converted to int32.
func BenchmarkTokenizer(b *testing.B) {
	text := benchText(b)
	for _, tok := range []model.Tokenizer{model.ByteTokenizer{}, model.GPT2Tokenizer{}} {
		b.Run(tok.Name(), func(b *testing.B) {
			ids := tok.Encode(nil, text)
			b.SetBytes(int64(len(text)))
			for b.Loop() {
				ids = tok.Encode(ids[:0], text)
			}
			b.ReportMetric(float64(len(text))/float64(len(ids)), "bytes/token")
		})
	}
	b.Run("tiktoken-go", func(b *testing.B) {
		ref := tiktokenR50k(b)
		s := string(text)
		b.SetBytes(int64(len(text)))
		for b.Loop() {
			ref(s)
		}
	})
}
