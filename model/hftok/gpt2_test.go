package hftok_test

import (
	"cmp"
	"encoding/json"
	"slices"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/braidml/braid/internal/corpora"
	"github.com/braidml/braid/model"
	"github.com/braidml/braid/model/hftok"
)

// gpt2JSON is tokenizer.json for GPT-2 as Hugging Face's gpt2 repository
// has it, built from braid's embedded GPT-2 vocabulary (OpenAI's
// r50k_base): the vocabulary spelled in the byte-level alphabet, and the
// merges that transformers' TikTokenConverter derives from ranks (every
// split of a token into two tokens, ordered by the token's rank and then
// the halves' ranks), which is how the tokenizer.json of tiktoken-based
// models such as Llama 3 were made.
var gpt2JSON = sync.OnceValue(func() []byte {
	tok := model.GPT2Tokenizer{}
	rank := make(map[string]int, model.GPT2EOT)
	tokens := make([]string, model.GPT2EOT)
	for id := range int32(model.GPT2EOT) {
		b := string(tok.Decode(nil, []int32{id}))
		tokens[id], rank[b] = b, int(id)
	}
	type merge struct {
		a, b string
		r    int
	}
	var merges []merge
	for r, t := range tokens {
		var local []merge
		for i := 1; i < len(t); i++ {
			_, okA := rank[t[:i]]
			_, okB := rank[t[i:]]
			if okA && okB {
				local = append(local, merge{t[:i], t[i:], r})
			}
		}
		slices.SortFunc(local, func(x, y merge) int {
			return cmp.Or(cmp.Compare(rank[x.a], rank[y.a]), cmp.Compare(rank[x.b], rank[y.b]))
		})
		merges = append(merges, local...)
	}
	vocab := make(map[string]int, model.GPT2Vocab)
	for r, t := range tokens {
		vocab[byteLevel(t)] = r
	}
	vocab["<|endoftext|>"] = model.GPT2EOT
	pairs := make([][2]string, len(merges))
	for i, m := range merges {
		pairs[i] = [2]string{byteLevel(m.a), byteLevel(m.b)}
	}
	byteLevelPre := map[string]any{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}
	js, err := json.Marshal(map[string]any{
		"version": "1.0",
		"added_tokens": []any{map[string]any{
			"id": model.GPT2EOT, "content": "<|endoftext|>", "single_word": false, "lstrip": false, "rstrip": false,
			"normalized": true, "special": true}},
		"normalizer": nil, "pre_tokenizer": byteLevelPre, "post_processor": byteLevelPre, "decoder": byteLevelPre,
		"model": map[string]any{"type": "BPE", "dropout": nil, "unk_token": nil, "fuse_unk": false, "byte_fallback": false,
			"vocab": vocab, "merges": pairs},
	})
	if err != nil {
		panic(err)
	}
	return js
})

// byteLevel spells bytes in GPT-2's byte-level alphabet (bytes_to_unicode):
// printable ASCII and Latin-1 bytes are themselves, the others U+0100
// onwards in order.
func byteLevel(s string) string {
	out := make([]rune, 0, len(s))
	for _, c := range []byte(s) {
		out = append(out, byteChars[c])
	}
	return string(out)
}

var byteChars = func() (t [256]rune) {
	n := rune(256)
	for b := range 256 {
		if '!' <= b && b <= '~' || 0xA1 <= b && b <= 0xAC || 0xAE <= b {
			t[b] = rune(b)
		} else {
			t[b], n = n, n+1
		}
	}
	return t
}()

func gpt2FromJSON(t testing.TB) *hftok.Tokenizer {
	t.Helper()
	tok, err := hftok.Parse(gpt2JSON(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// GPT-2's tokenizer.json, read by this package, gives the ids of braid's
// GPT-2 tokenizer (tiktoken's r50k_base, checked against tiktoken-go in
// package model) on strings at the classes' edges, a sample of real text
// and Go source, and (where present, and not under the race detector) the
// whole of the shared corpora: two independent routes, a merge list and a
// rank table, to the same ids.
func TestGPT2JSONMatchesGPT2Tokenizer(t *testing.T) {
	tok := gpt2FromJSON(t)
	if tok.Vocab() != model.GPT2Vocab || tok.EOT() != model.GPT2EOT {
		t.Fatalf("vocab %d EOT %d, want %d %d", tok.Vocab(), tok.EOT(), model.GPT2Vocab, model.GPT2EOT)
	}
	texts := [][]byte{[]byte("Hello world"), []byte("<|endoftext|> I'm 00000000000 naïve 😀 \xff\xfe bad")}
	for _, s := range edgeStrings(2000) {
		texts = append(texts, []byte(s))
	}
	for _, f := range corpora.Sample(t) {
		texts = append(texts, f.Text)
	}
	sameAsGPT2(t, tok, texts)
	t.Run("corpora", func(t *testing.T) {
		if raceEnabled {
			t.Skip("slow under the race detector")
		}
		var texts [][]byte
		for _, f := range corpora.Files(t) {
			texts = append(texts, f.Text)
		}
		sameAsGPT2(t, tok, texts)
	})
}

// sameAsGPT2 checks that tok encodes and decodes texts as GPT2Tokenizer.
func sameAsGPT2(t *testing.T, tok *hftok.Tokenizer, texts [][]byte) {
	ref := model.GPT2Tokenizer{}
	n, ids := 0, 0
	for _, text := range texts {
		want := ref.Encode(nil, text)
		got := tok.Encode(nil, text)
		if !slices.Equal(got, want) {
			i := 0
			for i < min(len(got), len(want)) && got[i] == want[i] {
				i++
			}
			t.Errorf("Encode(%.60q) differs from GPT2Tokenizer at id %d: %v, want %v", text, i, got[i:min(i+8, len(got))], want[i:min(i+8, len(want))])
			continue
		}
		if back := tok.Decode(nil, got); string(back) != string(ref.Decode(nil, want)) {
			t.Errorf("Decode(%.60q) differs from GPT2Tokenizer's", text)
		}
		n, ids = n+len(text), ids+len(got)
	}
	t.Logf("%d texts, %d bytes, %d ids alike", len(texts), n, ids)
}

// edgeStrings are deterministic random strings of characters at the edges
// of the pre-tokenizers' classes.
func edgeStrings(n int) []string {
	alphabet := []rune("  \t\n\r\v\f\u0085\u00a0\u2028\u3000\ufeff'sSrtvemldaZé世0९²Ⅻ.,!-_\"(😀\u0301\u200d\x00\x1c▁<|>")
	state := uint64(5)
	next := func(k int) int { // a small LCG: deterministic, no global source
		state = state*6364136223846793005 + 1442695040888963407
		return int(state>>33) % k
	}
	out := make([]string, n)
	for i := range out {
		r := make([]rune, next(24))
		for j := range r {
			r[j] = alphabet[next(len(alphabet))]
		}
		out[i] = string(r)
		if !utf8.ValidString(out[i]) {
			panic("invalid")
		}
	}
	return out
}
