package hftok_test

import (
	"bytes"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/braidml/braid/internal/corpora"
	"github.com/braidml/braid/model/hftok"
)

// styleFiles returns a fixture's tokenizer.json and tokenizer_config.json.
func styleFiles(t testing.TB, style string) (tj, cj []byte) {
	t.Helper()
	tj, err := os.ReadFile(filepath.Join("testdata", style, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	cj, err = os.ReadFile(filepath.Join("testdata", style, "tokenizer_config.json"))
	if err != nil {
		t.Fatal(err)
	}
	return tj, cj
}

// plainStyle returns a fixture's tokenizer and the same by the plain route
// (ParsePlain).
func plainStyle(t testing.TB, style string) (fast, plain *hftok.Tokenizer) {
	t.Helper()
	tj, cj := styleFiles(t, style)
	fast, err := hftok.Parse(tj, cj)
	if err != nil {
		t.Fatal(err)
	}
	plain, err = hftok.ParsePlain(tj, cj)
	if err != nil {
		t.Fatal(err)
	}
	return fast, plain
}

// mixedTexts are real text, deterministic random strings at the classes'
// edges, the fixtures' cases, and bytes that are not UTF-8.
func mixedTexts(t testing.TB) [][]byte {
	var texts [][]byte
	for _, f := range corpora.Sample(t) {
		texts = append(texts, f.Text[:min(len(f.Text), 16<<10)])
	}
	for _, s := range edgeStrings(1000) {
		texts = append(texts, []byte(s))
	}
	_, e := loadStyle(t, "gpt2")
	for _, c := range e.Cases {
		texts = append(texts, []byte(c.Text))
	}
	rng := rand.New(rand.NewSource(7))
	for range 200 {
		b := make([]byte, rng.Intn(40))
		rng.Read(b)
		texts = append(texts, b, append([]byte("x "), append(b, " the end"...)...))
	}
	return texts
}

// The fast route (the inlined pre-tokenizer, word cuts, the whole-token
// lookup, the cache) gives the ids of the plain one, in every style, with
// and without special tokens, and the cached second pass those of the
// first.
func TestFastMatchesPlain(t *testing.T) {
	texts := mixedTexts(t)
	for _, style := range styles {
		fast, plain := plainStyle(t, style)
		for pass := range 2 {
			for _, text := range texts {
				if got, want := fast.Encode(nil, text), plain.Encode(nil, text); !slices.Equal(got, want) {
					t.Fatalf("%s pass %d: Encode(%.60q) = %.20v, plain %.20v", style, pass, text, got, want)
				}
				if got, want := fast.EncodeSpecial(nil, text), plain.EncodeSpecial(nil, text); !slices.Equal(got, want) {
					t.Fatalf("%s pass %d: EncodeSpecial(%.60q) = %.20v, plain %.20v", style, pass, text, got, want)
				}
			}
		}
	}
}

// mergeLinear and mergeHeap merge as the naive loop does, on words long and
// short made of the fixtures' own tokens' bytes (so that merges apply).
func TestMergeStrategiesAgree(t *testing.T) {
	rng := rand.New(rand.NewSource(11))
	for _, style := range styles {
		tok, _ := loadStyle(t, style)
		var parts [][]byte
		for id := range int32(tok.Vocab()) {
			if s, ok := tok.Token(id); ok && len(s) < 8 {
				parts = append(parts, tok.Decode(nil, []int32{id}))
			}
		}
		for range 300 {
			var w []byte
			for k := rng.Intn(rng.Intn(200) + 1); k > 0; k-- {
				w = append(w, parts[rng.Intn(len(parts))]...)
			}
			if style == "llama2" || style == "mistral" {
				w = bytes.ReplaceAll(w, []byte(" "), []byte("▁"))
			}
			want := tok.MergeNaive(w)
			if lin, heap := tok.MergeStrategies(w); !slices.Equal(lin, want) || !slices.Equal(heap, want) {
				t.Fatalf("%s: %q: linear %v, heap %v, naive %v", style, w, lin, heap, want)
			}
		}
	}
}

// Encode is safe for concurrent use (the cache is shared) and gives what it
// gives alone.
func TestConcurrentEncode(t *testing.T) {
	tok, _ := loadStyle(t, "llama3")
	texts := mixedTexts(t)[:40]
	want := make([][]int32, len(texts))
	for i, s := range texts {
		want[i] = tok.Encode(nil, s)
	}
	fresh, _ := loadStyle(t, "llama3") // an empty cache, filled concurrently
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for k := range texts {
				i := (k + g) % len(texts)
				if got := fresh.Encode(nil, texts[i]); !slices.Equal(got, want[i]) {
					t.Errorf("goroutine %d: text %d encodes differently", g, i)
				}
				_ = fresh.Decode(nil, want[i])
			}
		})
	}
	wg.Wait()
}
