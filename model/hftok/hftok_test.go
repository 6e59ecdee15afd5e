package hftok_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/braidml/braid/model/hftok"
)

// styles are the fixtures scripts/gen_hftok_fixtures.py writes, one
// directory each under testdata.
var styles = []string{"gpt2", "llama3", "qwen2", "llama2", "mistral"}

// expectation is a fixture's expect.json.
type expectation struct {
	EOT   int32 `json:"eot"`
	Cases []struct {
		Text       string  `json:"text"`
		IDs        []int32 `json:"ids"`
		SpecialIDs []int32 `json:"special_ids"`
		Decoded    string  `json:"decoded"`
	} `json:"cases"`
}

func loadStyle(t testing.TB, style string) (*hftok.Tokenizer, expectation) {
	t.Helper()
	dir := filepath.Join("testdata", style)
	tok, err := hftok.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "expect.json"))
	if err != nil {
		t.Fatal(err)
	}
	var e expectation
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatal(err)
	}
	if len(e.Cases) == 0 {
		t.Fatalf("%s: no cases", style)
	}
	return tok, e
}

// Each style gives the ids and the text that the Python reference
// (scripts/gen_hftok_fixtures.py: Hugging Face's semantics, naively) gives.
func TestFixturesMatchReference(t *testing.T) {
	for _, style := range styles {
		t.Run(style, func(t *testing.T) {
			tok, e := loadStyle(t, style)
			if tok.EOT() != e.EOT {
				t.Errorf("EOT %d, want %d", tok.EOT(), e.EOT)
			}
			for _, c := range e.Cases {
				if got := tok.Encode(nil, []byte(c.Text)); !slices.Equal(got, c.IDs) {
					t.Errorf("Encode(%.60q) = %v\nwant %v", c.Text, got, c.IDs)
				}
				if got := tok.EncodeSpecial(nil, []byte(c.Text)); !slices.Equal(got, c.SpecialIDs) {
					t.Errorf("EncodeSpecial(%.60q) = %v\nwant %v", c.Text, got, c.SpecialIDs)
				}
				if got := tok.Decode(nil, c.IDs); string(got) != c.Decoded {
					t.Errorf("Decode(Encode(%.60q)) = %q, want %q", c.Text, got, c.Decoded)
				}
			}
		})
	}
}

// Encode appends to dst and Decode appends to dst, leaving what was there.
func TestAppends(t *testing.T) {
	tok, _ := loadStyle(t, "llama2")
	ids := tok.Encode([]int32{-7}, []byte("hello world"))
	if ids[0] != -7 || !slices.Equal(ids[1:], tok.Encode(nil, []byte("hello world"))) {
		t.Errorf("Encode with a prefix: %v", ids)
	}
	if got := tok.Decode([]byte(">>"), ids[1:]); string(got) != ">>hello world" {
		t.Errorf("Decode with a prefix: %q", got)
	}
	_ = bytes.MinRead
}
