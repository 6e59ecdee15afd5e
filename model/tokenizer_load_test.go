package model_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/braidml/braid/model"
	"github.com/braidml/braid/model/hftok"
)

// modelDir writes a model directory: config.json (if not "") and, if
// style is not "", the hftok fixture's tokenizer.json and
// tokenizer_config.json.
func modelDir(t *testing.T, config, style string) string {
	t.Helper()
	dir := t.TempDir()
	if config != "" {
		if err := os.WriteFile(filepath.Join(dir, model.ConfigFile), []byte(config), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if style != "" {
		for _, f := range []string{hftok.TokenizerFile, hftok.ConfigFile} {
			b, err := os.ReadFile(filepath.Join("hftok", "testdata", style, f))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	return dir
}

// LoadTokenizer: GPT-2 checkpoints without tokenizer.json get the built-in
// tokenizers as before; a directory with tokenizer.json gets it, whatever
// its architecture; braid's own checkpoints name theirs.
func TestLoadTokenizer(t *testing.T) {
	for _, c := range []struct {
		name, config, style string
		want                string // Name, or "hf" for a tokenizer.json's
	}{
		{"gpt2 by vocab size", `{"vocab_size": 50257}`, "", "gpt2"},
		{"padded gpt2", `{"vocab_size": 50304}`, "", "gpt2"},
		{"byte by vocab size", `{"vocab_size": 257}`, "", "byte"},
		{"named", `{"vocab_size": 50257, "braid_tokenizer": "byte"}`, "", "byte"},
		{"tokenizer.json", `{"vocab_size": 50257}`, "gpt2", "hf"},
		{"llama's config.json", `{"model_type": "llama", "vocab_size": 128256, "rope_theta": 500000.0}`, "llama3", "hf"},
		{"no config.json", "", "llama2", "hf"},
		{"a built-in name wins", `{"vocab_size": 50257, "braid_tokenizer": "gpt2"}`, "llama3", "gpt2"},
	} {
		t.Run(c.name, func(t *testing.T) {
			tok, err := model.LoadTokenizer(modelDir(t, c.config, c.style))
			if err != nil {
				t.Fatal(err)
			}
			_, isHF := tok.(*hftok.Tokenizer)
			if c.want == "hf" && !isHF || c.want != "hf" && tok.Name() != c.want {
				t.Errorf("got %T %s, want %s", tok, tok.Name(), c.want)
			}
		})
	}
	for _, c := range []struct{ name, config, style, msg string }{
		{"nothing", "", "", "has neither tokenizer.json nor a config.json"},
		{"named, absent", `{"vocab_size": 600, "braid_tokenizer": "hf-0123456789ab-507"}`, "", "has no tokenizer.json"},
		{"named, another", `{"vocab_size": 600, "braid_tokenizer": "hf-0123456789ab-507"}`, "gpt2", "names tokenizer hf-0123456789ab-507, but"},
		{"broken tokenizer.json", `{"vocab_size": 600}`, "broken", "hftok: malformed tokenizer"},
		{"unknown name", `{"vocab_size": 600, "braid_tokenizer": "cl100k"}`, "", `unknown tokenizer "cl100k"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := modelDir(t, c.config, "")
			if c.style == "gpt2" {
				dir = modelDir(t, c.config, "gpt2")
			}
			if c.style == "broken" {
				if err := os.WriteFile(filepath.Join(dir, hftok.TokenizerFile), []byte(`{"model": 1}`), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := model.LoadTokenizer(dir); err == nil || !strings.Contains(err.Error(), c.msg) {
				t.Errorf("err = %v, want one containing %q", err, c.msg)
			}
		})
	}
}

// A checkpoint saved with a tokenizer.json's tokenizer carries its files,
// names it in config.json, and loads with the same tokenizer; DecodeConfig,
// which has config.json alone, says where the tokenizer is.
func TestCheckpointCarriesTokenizerFiles(t *testing.T) {
	tok, err := model.LoadTokenizer(modelDir(t, "", "llama3"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.New(model.Config{Vocab: 512, Context: 8, Dim: 8, Layers: 1, Heads: 2}, 1, 8)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := model.SaveCheckpoint(dir, m.Config, tok, m.Params); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{hftok.TokenizerFile, hftok.ConfigFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("checkpoint lacks %s: %v", f, err)
		}
	}
	ck, err := model.LoadCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	text := []byte("Hello world, it's 2024!")
	if ck.Tokenizer.Name() != tok.Name() || !slices.Equal(ck.Tokenizer.Encode(nil, text), tok.Encode(nil, text)) {
		t.Errorf("reloaded tokenizer %s, saved %s", ck.Tokenizer.Name(), tok.Name())
	}
	js, err := os.ReadFile(filepath.Join(dir, model.ConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := model.DecodeConfig(js, "config.json"); err == nil || !strings.Contains(err.Error(), "tokenizer.json (LoadTokenizer)") {
		t.Errorf("DecodeConfig: %v", err)
	}
	// A tokenizer with more ids than the model is refused, as before.
	small, err := model.New(model.Config{Vocab: 300, Context: 8, Dim: 8, Layers: 1, Heads: 2}, 1, 8)
	if err != nil {
		t.Fatal(err)
	}
	dir = t.TempDir()
	if err := model.SaveCheckpoint(dir, small.Config, tok, small.Params); err != nil {
		t.Fatal(err)
	}
	if _, err := model.LoadCheckpoint(dir); !errors.Is(err, model.ErrCheckpoint) || !strings.Contains(err.Error(), "vocab_size is 300") {
		t.Errorf("LoadCheckpoint with a small vocabulary: %v", err)
	}
}

// TokenizerFor takes a built-in name or a model directory.
func TestTokenizerFor(t *testing.T) {
	if tok, err := model.TokenizerFor("gpt2"); err != nil || tok != (model.GPT2Tokenizer{}) {
		t.Errorf("TokenizerFor(gpt2) = %v, %v", tok, err)
	}
	if tok, err := model.TokenizerFor(modelDir(t, "", "qwen2")); err != nil || !strings.HasPrefix(tok.Name(), "hf-") {
		t.Errorf("TokenizerFor(dir) = %v, %v", tok, err)
	}
	if _, err := model.TokenizerFor("no-such-tokenizer"); err == nil || !strings.Contains(err.Error(), "unknown tokenizer") {
		t.Errorf("TokenizerFor(no-such-tokenizer): %v", err)
	}
}
