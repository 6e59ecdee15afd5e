package model_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/braidml/braid/internal/corpora"
	"github.com/braidml/braid/model"
	"github.com/pkoukk/tiktoken-go"
	tiktoken_loader "github.com/pkoukk/tiktoken-go-loader"
	"github.com/pkoukk/tiktoken-go-loader/assets"
)

// gpt2Known are ids of GPT-2's tokenizer (r50k_base) for known strings.
// Those marked "published" appear in tiktoken's tests/test_encoding.py
// (test_simple, test_simple_repeated, test_encode_empty) or in Hugging
// Face's GPT2Tokenizer documentation; the rest were computed outside Go by
// an independent reference (Python's regex module for the split and the
// naive lowest-rank-first merge of tiktoken's _educational.py, on the same
// vocabulary file), which also reproduces every published row.
var gpt2Known = []struct {
	text string
	ids  []int32
}{
	// Published.
	{"Hello world", []int32{15496, 995}},
	{" Hello world", []int32{18435, 995}},
	{"hello world", []int32{31373, 995}},
	{"", nil},
	{"0", []int32{15}},
	{"00", []int32{405}},
	{"000", []int32{830}},
	{"0000", []int32{2388}},
	{"00000000", []int32{8269}},
	{"000000000", []int32{10535, 830}},
	{"0000000000000000", []int32{25645}},
	{"00000000000000000", []int32{8269, 10535, 830}},

	// Special tokens are ordinary text for Encode.
	{"<|endoftext|>", []int32{27, 91, 437, 1659, 5239, 91, 29}},
	{"hello <|endoftext|>", []int32{31373, 1279, 91, 437, 1659, 5239, 91, 29}},

	// Each alternative of the pre-tokenizer.
	{" the", []int32{262}},
	{"I'm don't we'll they've you're he'd", []int32{40, 1101, 836, 470, 356, 1183, 484, 1053, 345, 821, 339, 1549}},
	{"  x\n\n\ty", []int32{220, 2124, 628, 197, 88}},
	{"   \n\n  end", []int32{220, 220, 220, 628, 220, 886}},
	{"func main() {\n\tfmt.Println(\"hi\")\n}\n", []int32{20786, 1388, 3419, 1391, 198, 197, 69, 16762, 13, 18557, 18755, 7203, 5303, 4943, 198, 92, 198}},

	// Characters split across ids.
	{"hello world!你好，世界！", []int32{31373, 995, 0, 19526, 254, 25001, 121, 171, 120, 234, 10310, 244, 45911, 234, 171, 120, 223}},
	{"naïve café — “quotes” 😀", []int32{2616, 38776, 40304, 851, 564, 250, 421, 6421, 447, 251, 30325, 222}},
}

func TestGPT2KnownIDs(t *testing.T) {
	tok := model.GPT2Tokenizer{}
	for _, c := range gpt2Known {
		if got := tok.Encode(nil, []byte(c.text)); !slices.Equal(got, c.ids) {
			t.Errorf("Encode(%q) = %v, want %v", c.text, got, c.ids)
		}
		if got := tok.Decode(nil, c.ids); string(got) != c.text {
			t.Errorf("Decode(%v) = %q, want %q", c.ids, got, c.text)
		}
	}
}

func TestGPT2Identity(t *testing.T) {
	for _, name := range []string{"gpt2", "r50k_base"} {
		tok, err := model.TokenizerByName(name)
		if err != nil {
			t.Fatal(err)
		}
		if tok != (model.GPT2Tokenizer{}) || tok.Name() != "gpt2" || tok.Vocab() != 50257 || tok.EOT() != 50256 {
			t.Errorf("TokenizerByName(%q) = %T %s vocab %d EOT %d, want gpt2 50257 50256", name, tok, tok.Name(), tok.Vocab(), tok.EOT())
		}
	}
	if _, err := model.TokenizerByName("cl100k_base"); err == nil {
		t.Error("TokenizerByName(cl100k_base) succeeded, want an error")
	}
	// EOT is "<|endoftext|>" and decodes to nothing.
	tok := model.GPT2Tokenizer{}
	if got := tok.Decode([]byte("a"), []int32{tok.EOT()}); string(got) != "a" {
		t.Errorf("Decode(EOT) appended %q, want nothing", got[1:])
	}
}

// The embedded vocabulary is the file OpenAI publishes: tiktoken checks the
// same SHA-256 (openai_public.py, r50k_base's expected_hash).
func TestGPT2VocabularyIsOpenAIs(t *testing.T) {
	const want = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
	data, err := assets.Assets.ReadFile("r50k_base.tiktoken")
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != want {
		t.Fatalf("r50k_base.tiktoken sha256 %x, want %s", sum, want)
	}
}

// Decode is byte-exact: ids that each hold part of a character decode, one
// by one or together, to exactly the bytes encoded.
func TestGPT2DecodeSplitsCharacters(t *testing.T) {
	tok := model.GPT2Tokenizer{}
	text := []byte("世界😀")
	ids := tok.Encode(nil, text)
	if len(ids) <= utf8.RuneCount(text) {
		t.Fatalf("%q encodes to %v: no character split across ids, test is vacuous", text, ids)
	}
	var pieces []byte
	for _, id := range ids {
		one := tok.Decode(nil, []int32{id})
		if len(one) == 0 {
			t.Fatalf("Decode(%d) is empty", id)
		}
		pieces = append(pieces, one...)
	}
	if !bytes.Equal(pieces, text) || !bytes.Equal(tok.Decode(nil, ids), text) {
		t.Errorf("pieces %q, whole %q, want %q", pieces, tok.Decode(nil, ids), text)
	}
	if utf8.Valid(tok.Decode(nil, ids[:1])) {
		t.Errorf("first id %d decodes to valid UTF-8 %q; want a partial character", ids[0], tok.Decode(nil, ids[:1]))
	}
}

// Ids outside the vocabulary are skipped, never a panic.
func TestDecodeSkipsOutOfRange(t *testing.T) {
	bad := []int32{-1, math.MinInt32, 50257, 1 << 20, math.MaxInt32}
	for _, tok := range []model.Tokenizer{model.ByteTokenizer{}, model.GPT2Tokenizer{}} {
		hi := tok.Encode(nil, []byte("hi"))
		ids := append(append([]int32{}, bad...), hi[0])
		ids = append(append(ids, bad...), hi[1:]...)
		ids = append(ids, tok.EOT())
		if got := tok.Decode(nil, ids); string(got) != "hi" {
			t.Errorf("%s: Decode(%v) = %q, want %q", tok.Name(), ids, got, "hi")
		}
	}
}

// invalidUTF8 are inputs that are not UTF-8, or only partly.
var invalidUTF8 = []string{
	"\xff", "\xfe\xff", "\x80", "abc\xffdef",
	"\xe4\xb8", "你好\xe4\xb8", // a character cut short
	"\xed\xa0\x80",     // a UTF-16 surrogate
	"\xc0\xaf",         // an overlong '/'
	"\xf4\x90\x80\x80", // past U+10FFFF
	" \xff the\xff\n\n\xff  x", "'\xffs", "don\xff't",
}

// Invalid UTF-8 round-trips byte-exactly; for GPT-2 each invalid byte is
// its single-byte id and the valid runs around it encode as on their own.
func TestInvalidUTF8RoundTrips(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	texts := slices.Clone(invalidUTF8)
	var all []byte
	for b := range 256 {
		all = append(all, byte(b))
	}
	texts = append(texts, string(all))
	for range 200 {
		b := make([]byte, rng.Intn(64))
		rng.Read(b)
		texts = append(texts, string(b))
	}
	for _, tok := range []model.Tokenizer{model.ByteTokenizer{}, model.GPT2Tokenizer{}} {
		for _, s := range texts {
			if got := tok.Decode(nil, tok.Encode(nil, []byte(s))); string(got) != s {
				t.Errorf("%s: %q round-trips to %q", tok.Name(), s, got)
			}
		}
	}
	gpt2 := model.GPT2Tokenizer{}
	ff := gpt2.Encode(nil, []byte("\xff"))
	want := slices.Concat(gpt2.Encode(nil, []byte("abc")), ff, gpt2.Encode(nil, []byte("def")))
	if got := gpt2.Encode(nil, []byte("abc\xffdef")); len(ff) != 1 || !slices.Equal(got, want) {
		t.Errorf(`Encode("abc\xffdef") = %v, want %v (with "\xff" = %v, one id)`, got, want, ff)
	}
}

// Encode against tiktoken-go encoding the whole text at once with its own
// r50k_base (its regular expression, its loader): the pre-tokenizer that
// Encode uses instead must split exactly alike.
func TestGPT2MatchesTiktoken(t *testing.T) {
	ref := tiktokenR50k(t)
	var texts []string
	for _, c := range gpt2Known {
		texts = append(texts, c.text)
	}
	// Random strings over characters at the edges of the pattern's classes.
	alphabet := []rune("  \t\n\r\v\f\u0085\u00a0\u2028\u3000\ufeff'srtvemldaZé世0९²Ⅻ.,!-_\"(😀\u0301\u200d\x00\x1c")
	rng := rand.New(rand.NewSource(2))
	for range 3000 {
		r := make([]rune, rng.Intn(24))
		for i := range r {
			r[i] = alphabet[rng.Intn(len(alphabet))]
		}
		texts = append(texts, string(r))
	}
	// Windows of real text, small because tiktoken-go is slow on it.
	window := 16 << 10
	if raceEnabled {
		window = 4 << 10
	}
	for _, f := range sampleFiles(t) {
		texts = append(texts, string(f.Text[:min(len(f.Text), window)]))
	}
	tok := model.GPT2Tokenizer{}
	for _, s := range texts {
		want := ref(s)
		if got := tok.Encode(nil, []byte(s)); !slices.Equal(got, want) {
			i := 0
			for i < min(len(got), len(want)) && got[i] == want[i] {
				i++
			}
			t.Errorf("Encode(%.80q) differs from tiktoken-go at id %d: %v, want %v", s, i, got[i:min(i+8, len(got))], want[i:min(i+8, len(want))])
		}
	}
	t.Logf("%d texts", len(texts))
}

// tiktokenR50k returns tiktoken-go's own r50k_base encode_ordinary.
func tiktokenR50k(t testing.TB) func(string) []int32 {
	tiktoken.SetBpeLoader(tiktoken_loader.NewOfflineLoader())
	enc, err := tiktoken.GetEncoding("r50k_base")
	if err != nil {
		t.Fatal(err)
	}
	return func(s string) []int32 {
		var ids []int32
		for _, id := range enc.EncodeOrdinary(s) {
			ids = append(ids, int32(id))
		}
		return ids
	}
}

// Decode(Encode(x)) == x on every file of the corpora and a sample of Go
// source, for both tokenizers. Under the race detector only the first 8 KiB
// of each file.
func TestTokenizersRoundTripCorpora(t *testing.T) {
	files := corpusFiles(t)
	files = append(files, goSource(t)...)
	limit := math.MaxInt
	if raceEnabled {
		limit = 8 << 10
	}
	var ids []int32
	var back []byte
	for _, tok := range []model.Tokenizer{model.ByteTokenizer{}, model.GPT2Tokenizer{}} {
		n, tokens := 0, 0
		for _, f := range files {
			text := f.Text[:min(len(f.Text), limit)]
			ids = tok.Encode(ids[:0], text)
			back = tok.Decode(back[:0], ids)
			if !bytes.Equal(back, text) {
				i := 0
				for i < len(back) && i < len(text) && back[i] == text[i] {
					i++
				}
				t.Errorf("%s: %s does not round-trip: first difference at byte %d", tok.Name(), f.Name, i)
			}
			if slices.Contains(ids, tok.EOT()) {
				t.Errorf("%s: %s encodes to EOT", tok.Name(), f.Name)
			}
			n += len(text)
			tokens += len(ids)
		}
		t.Logf("%s: %d files, %d bytes, %d tokens (%.2f bytes/token)", tok.Name(), len(files), n, tokens, float64(n)/float64(tokens))
	}
}

// Encode is safe for concurrent use and gives what it gives alone.
func TestGPT2ConcurrentEncode(t *testing.T) {
	tok := model.GPT2Tokenizer{}
	files := sampleFiles(t)
	want := make([][]int32, len(files))
	for i, f := range files {
		want[i] = tok.Encode(nil, f.Text)
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for k := range files {
				i := (k + g) % len(files)
				if got := tok.Encode(nil, files[i].Text); !slices.Equal(got, want[i]) {
					t.Errorf("goroutine %d: %s encodes differently", g, files[i].Name)
				}
			}
		})
	}
	wg.Wait()
}

// The tokenizer is recorded in a checkpoint's config and chosen from it.
func TestCheckpointRecordsGPT2Tokenizer(t *testing.T) {
	m, err := model.New(model.Config{Vocab: model.GPT2Vocab, Context: 8, Dim: 8, Layers: 1, Heads: 2}, 1, 8)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := model.SaveCheckpoint(dir, m.Config, model.GPT2Tokenizer{}, m.Params); err != nil {
		t.Fatal(err)
	}
	js, err := os.ReadFile(filepath.Join(dir, model.ConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(js), `"braid_tokenizer": "gpt2"`) {
		t.Errorf("config.json does not name gpt2:\n%s", js)
	}
	_, tok, err := model.ReadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	if tok != (model.GPT2Tokenizer{}) {
		t.Errorf("ReadConfig chose %s, want gpt2", tok.Name())
	}
}

func TestTokenizerThroughput(t *testing.T) {
	text := []byte(strings.Repeat("The quick brown fox jumps over the lazy dog. ", 100))
	for _, tok := range []model.Tokenizer{model.ByteTokenizer{}, model.GPT2Tokenizer{}} {
		if mb := model.TokenizerThroughput(tok, text, time.Millisecond); !(mb > 0) || math.IsInf(mb, 0) {
			t.Errorf("%s: %v MB/s", tok.Name(), mb)
		}
	}
	if mb := model.TokenizerThroughput(model.ByteTokenizer{}, nil, time.Millisecond); mb != 0 {
		t.Errorf("empty text: %v MB/s, want 0", mb)
	}
}

// FuzzGPT2Tokenizer: any input round-trips, and valid UTF-8 encodes as
// tiktoken-go does.
func FuzzGPT2Tokenizer(f *testing.F) {
	for _, c := range gpt2Known {
		f.Add([]byte(c.text))
	}
	for _, s := range invalidUTF8 {
		f.Add([]byte(s))
	}
	ref := tiktokenR50k(f)
	tok := model.GPT2Tokenizer{}
	f.Fuzz(func(t *testing.T, text []byte) {
		ids := tok.Encode(nil, text)
		if got := tok.Decode(nil, ids); !bytes.Equal(got, text) {
			t.Fatalf("%q round-trips to %q", text, got)
		}
		if utf8.Valid(text) {
			if want := ref(string(text)); !slices.Equal(ids, want) {
				t.Fatalf("Encode(%q) = %v, tiktoken-go %v", text, ids, want)
			}
		}
	})
}

// The shared corpora and Go source, for the tests that tokenise real text.
type corpusFile = corpora.File

var (
	corpusFiles = corpora.Files
	goSource    = corpora.GoSource
	sampleFiles = corpora.Sample
)

// TestGPT2LongPieceIsBounded: a megabyte of one letter (one BPE piece)
// tokenises quickly, in chunks, and still round-trips byte for byte.
func TestGPT2LongPieceIsBounded(t *testing.T) {
	tok := model.GPT2Tokenizer{}
	for _, text := range [][]byte{
		bytes.Repeat([]byte("a"), 1<<20),
		append([]byte(" "), bytes.Repeat([]byte("é"), 5000)...), // chunks must not split a character
	} {
		start := time.Now()
		ids := tok.Encode(nil, text)
		if d := time.Since(start); d > 20*time.Second {
			t.Errorf("%d bytes took %v", len(text), d)
		}
		if got := tok.Decode(nil, ids); !bytes.Equal(got, text) {
			t.Errorf("%d-byte piece does not round-trip", len(text))
		}
	}
}
