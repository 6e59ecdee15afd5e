package model_test

import (
	"errors"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/braidml/braid/model"
	"github.com/braidml/braid/model/hftok"
)

// DecodeConfigFiles chooses the tokenizer ReadConfig chooses for a
// directory holding the same files, and says the same where it cannot.
func TestDecodeConfigFilesAsReadConfig(t *testing.T) {
	tj, err := os.ReadFile(filepath.Join("hftok", "testdata", "gpt2", hftok.TokenizerFile))
	if err != nil {
		t.Fatal(err)
	}
	cj, err := os.ReadFile(filepath.Join("hftok", "testdata", "gpt2", hftok.ConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	hf, err := hftok.Parse(tj, cj)
	if err != nil {
		t.Fatal(err)
	}
	const gpt2 = `"model_type": "gpt2", "n_positions": 8, "n_embd": 8, "n_layer": 1, "n_head": 2`
	for _, c := range []struct {
		name, config string
		files        map[string][]byte
		want         string // the tokenizer's name, or a part of the error
	}{
		// As Hugging Face publishes a model: config.json names no tokenizer.
		{"tokenizer.json", `{` + gpt2 + `, "vocab_size": 512}`, map[string][]byte{hftok.TokenizerFile: tj, hftok.ConfigFile: cj}, hf.Name()},
		{"tokenizer.json alone", `{` + gpt2 + `, "vocab_size": 512}`, map[string][]byte{hftok.TokenizerFile: tj}, "hf-"},
		{"no files", `{` + gpt2 + `, "vocab_size": 512}`, nil, "byte"},
		{"tokenizer_config.json alone", `{` + gpt2 + `, "vocab_size": 512}`, map[string][]byte{hftok.ConfigFile: cj}, "byte"},
		// As braid saves one.
		{"named", `{` + gpt2 + `, "vocab_size": 512, "braid_tokenizer": "` + hf.Name() + `"}`, map[string][]byte{hftok.TokenizerFile: tj, hftok.ConfigFile: cj}, hf.Name()},
		{"built-in name wins", `{` + gpt2 + `, "vocab_size": 512, "braid_tokenizer": "byte"}`, map[string][]byte{hftok.TokenizerFile: tj}, "byte"},
		// Refused.
		{"named, absent", `{` + gpt2 + `, "vocab_size": 512, "braid_tokenizer": "` + hf.Name() + `"}`, nil, "has no tokenizer.json"},
		{"named, another", `{` + gpt2 + `, "vocab_size": 512, "braid_tokenizer": "hf-0123456789ab-506"}`, map[string][]byte{hftok.TokenizerFile: tj}, "names tokenizer hf-0123456789ab-506, but"},
		{"too many ids", `{` + gpt2 + `, "vocab_size": 300}`, map[string][]byte{hftok.TokenizerFile: tj}, "vocab_size is 300"},
		{"broken tokenizer.json", `{` + gpt2 + `, "vocab_size": 512}`, map[string][]byte{hftok.TokenizerFile: []byte(`{"model": 1}`)}, "hftok: malformed tokenizer"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, model.ConfigFile), []byte(c.config), 0o644); err != nil {
				t.Fatal(err)
			}
			for name, b := range c.files {
				if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			wc, wtok, werr := model.ReadConfig(dir)
			gc, gtok, gerr := model.DecodeConfigFiles([]byte(c.config), "config.json", c.files)
			switch {
			case (werr == nil) != (gerr == nil):
				t.Fatalf("DecodeConfigFiles: %v; ReadConfig: %v", gerr, werr)
			case gerr != nil:
				if !errors.Is(gerr, model.ErrCheckpoint) && !errors.Is(gerr, hftok.ErrMalformed) || !strings.Contains(gerr.Error(), c.want) || !strings.Contains(werr.Error(), c.want) {
					t.Errorf("DecodeConfigFiles: %v; ReadConfig: %v; want both saying %q", gerr, werr, c.want)
				}
			case gc != wc || gtok.Name() != wtok.Name() || !strings.HasPrefix(gtok.Name(), c.want):
				t.Errorf("DecodeConfigFiles: %+v %s; ReadConfig: %+v %s; want %s", gc, gtok.Name(), wc, wtok.Name(), c.want)
			}
		})
	}
	if _, _, err := model.DecodeConfigFiles([]byte(`{`+gpt2+`, "vocab_size": 512}`), "config.json", map[string][]byte{"vocab.json": tj}); !errors.Is(err, model.ErrCheckpoint) || !strings.Contains(err.Error(), `"vocab.json"`) {
		t.Errorf("a file that is no tokenizer file: %v", err)
	}
}

// A checkpoint saved with a tokenizer.json's tokenizer decodes from its
// files' bytes as LoadCheckpoint reads its directory.
func TestDecodeCheckpointFiles(t *testing.T) {
	tok, err := model.LoadTokenizer(modelDir(t, "", "gpt2"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.New(model.Config{Vocab: 512, Context: 8, Dim: 8, Layers: 1, Heads: 2}, 1, 8)
	if err != nil {
		t.Fatal(err)
	}
	m.Init(1)
	dir := t.TempDir()
	if err := model.SaveCheckpoint(dir, m.Config, tok, m.Params); err != nil {
		t.Fatal(err)
	}
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	files := map[string][]byte{}
	for name := range tok.(model.FileTokenizer).Files() {
		files[name] = read(name)
	}
	if !slices.Equal(slices.Sorted(maps.Keys(files)), []string{hftok.TokenizerFile, hftok.ConfigFile}) {
		t.Fatalf("the tokenizer's files %v", slices.Sorted(maps.Keys(files)))
	}
	want, err := model.LoadCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	got, err := model.DecodeCheckpointFiles(read(model.ConfigFile), "config.json", read(model.WeightsFile), "model.safetensors", files)
	if err != nil {
		t.Fatal(err)
	}
	if got.Config != want.Config || got.Tokenizer.Name() != tok.Name() || got.Tokenizer.Name() != want.Tokenizer.Name() || !slices.Equal(got.Params, want.Params) {
		t.Errorf("DecodeCheckpointFiles: %+v %s; LoadCheckpoint: %+v %s", got.Config, got.Tokenizer.Name(), want.Config, want.Tokenizer.Name())
	}
	if _, err := model.DecodeCheckpointFiles(read(model.ConfigFile), "config.json", read(model.WeightsFile), "model.safetensors", nil); !errors.Is(err, model.ErrCheckpoint) || !strings.Contains(err.Error(), "has no tokenizer.json") {
		t.Errorf("without the tokenizer's files: %v", err)
	}
}
