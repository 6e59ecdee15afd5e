package hftok_test

import (
	"bytes"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/braidml/braid/internal/corpora"
	"github.com/braidml/braid/model/hftok"
	"golang.org/x/text/unicode/norm"
)

// roundTrip is what Decode(Encode(text)) gives in each style: the text
// itself, less what the style's normalizer or decoder loses as Hugging
// Face's does. qwen2 normalizes to NFC; SentencePiece styles turn "▁" in
// text into a space; mistral's Metaspace prepends "▁" only where the text
// does not start with a space, but its decoder strips one all the same.
func roundTrip(style string, text []byte) []byte {
	switch style {
	case "qwen2":
		return norm.NFC.Bytes(text)
	case "llama2":
		return bytes.ReplaceAll(text, []byte("▁"), []byte(" "))
	case "mistral":
		out := bytes.ReplaceAll(text, []byte("▁"), []byte(" "))
		return bytes.TrimPrefix(out, []byte(" "))
	}
	return text
}

// Decode(Encode(x)) gives x back (as roundTrip says) on every file of the
// shared corpora and a sample of Go source, in every style and for GPT-2's
// tokenizer.json, and Encode never gives EOT or a special token. Under the
// race detector only the first 8 KiB of each file.
func TestRoundTripCorpora(t *testing.T) {
	files := append(corpora.Files(t), corpora.GoSource(t)...)
	limit := math.MaxInt
	if raceEnabled {
		limit = 8 << 10
	}
	for _, style := range append(slices.Clone(styles), "gpt2-json") {
		t.Run(style, func(t *testing.T) {
			t.Parallel()
			var tok *hftok.Tokenizer
			if style == "gpt2-json" {
				tok = gpt2FromJSON(t)
			} else {
				tok, _ = loadStyle(t, style)
			}
			special := map[int32]bool{tok.EOT(): true}
			for _, id := range []int32{tok.Specials().BOS, tok.Specials().EOS} {
				special[id] = id >= 0
			}
			var ids []int32
			var back []byte
			n, tokens := 0, 0
			for _, f := range files {
				text := f.Text[:min(len(f.Text), limit)]
				ids = tok.Encode(ids[:0], text)
				back = tok.Decode(back[:0], ids)
				if want := roundTrip(strings.TrimSuffix(style, "-json"), text); !bytes.Equal(back, want) {
					i := 0
					for i < min(len(back), len(want)) && back[i] == want[i] {
						i++
					}
					t.Errorf("%s does not round-trip: first difference at byte %d: %.40q, want %.40q", f.Name, i, back[i:], want[i:])
				}
				for _, id := range ids {
					if special[id] {
						t.Fatalf("%s encodes to special id %d", f.Name, id)
					}
				}
				n, tokens = n+len(text), tokens+len(ids)
			}
			t.Logf("%d files, %d bytes, %d tokens (%.2f bytes/token)", len(files), n, tokens, float64(n)/float64(tokens))
		})
	}
}
