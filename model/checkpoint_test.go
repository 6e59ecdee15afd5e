package model_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/braidml/braid/model"
	"github.com/braidml/braid/model/safetensors"
)

// ckConfig is a small model whose vocabulary fits the byte tokenizer.
var ckConfig = model.Config{Vocab: 300, Context: 16, Dim: 32, Layers: 2, Heads: 4}

func savedTiny(t *testing.T) (string, *model.Model) {
	t.Helper()
	m, err := model.New(ckConfig, 1, 8)
	if err != nil {
		t.Fatal(err)
	}
	m.Init(3)
	dir := t.TempDir()
	if err := model.SaveCheckpoint(dir, m.Config, model.ByteTokenizer{}, m.Params); err != nil {
		t.Fatal(err)
	}
	return dir, m
}

func TestCheckpointRoundTripIsBitwise(t *testing.T) {
	dir, m := savedTiny(t)
	ck, err := model.LoadCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	if ck.Config != m.Config || ck.Tokenizer.Name() != "byte" {
		t.Fatalf("config %+v tokenizer %s, want %+v byte", ck.Config, ck.Tokenizer.Name(), m.Config)
	}
	for i := range m.Params {
		if ck.Params[i] != m.Params[i] {
			t.Fatalf("param %d: %v after round trip, want %v", i, ck.Params[i], m.Params[i])
		}
	}
}

// TestCheckpointUsesHuggingFaceLayout: tensor names and Conv1D shapes.
func TestCheckpointUsesHuggingFaceLayout(t *testing.T) {
	dir, m := savedTiny(t)
	f, err := safetensors.ReadFile(filepath.Join(dir, model.WeightsFile))
	if err != nil {
		t.Fatal(err)
	}
	C := m.Config.Dim
	for name, shape := range map[string][]int{
		"wte.weight": {300, C}, "wpe.weight": {16, C}, "h.0.attn.c_attn.weight": {C, 3 * C},
		"h.1.mlp.c_fc.weight": {C, 4 * C}, "h.1.mlp.c_proj.weight": {4 * C, C}, "ln_f.bias": {C},
	} {
		tt, ok := f.Tensor(name)
		if !ok {
			t.Errorf("no tensor %s", name)
			continue
		}
		if len(tt.Shape) != len(shape) || tt.Shape[0] != shape[0] || (len(shape) > 1 && tt.Shape[1] != shape[1]) {
			t.Errorf("%s has shape %v, want %v", name, tt.Shape, shape)
		}
	}
	// Conv1D is (in, out): element [i][o] of c_attn equals braid's [o][i].
	tt, _ := f.Tensor("h.0.attn.c_attn.weight")
	w, _ := tt.Float32s()
	p := m.Config.Layout()[4] // h.0.attn.c_attn.weight
	if p.Name != "h.0.attn.c_attn.weight" {
		t.Fatalf("layout[4] is %s", p.Name)
	}
	if got, want := w[2*3*C+5], m.Params[p.Offset+5*C+2]; got != want {
		t.Errorf("Conv1D[2][5] = %v, braid [5][2] = %v", got, want)
	}
	cfg, _ := os.ReadFile(filepath.Join(dir, model.ConfigFile))
	for _, key := range []string{`"n_embd": 32`, `"n_layer": 2`, `"n_head": 4`, `"n_positions": 16`, `"vocab_size": 300`, `"model_type": "gpt2"`} {
		if !strings.Contains(string(cfg), key) {
			t.Errorf("config.json lacks %s:\n%s", key, cfg)
		}
	}
}

// TestCheckpointBadInput: every corruption is an error that names the file
// and the problem, never a panic.
func TestCheckpointBadInput(t *testing.T) {
	cases := []struct {
		name    string
		corrupt func(t *testing.T, dir string)
		want    []string // substrings of the error
	}{
		{"missing weights", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, model.WeightsFile)) }, []string{model.WeightsFile, "no such file"}},
		{"missing config", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, model.ConfigFile)) }, []string{model.ConfigFile, "no such file"}},
		{"truncated weights", func(t *testing.T, dir string) { truncate(t, filepath.Join(dir, model.WeightsFile), 1000) }, []string{model.WeightsFile}},
		{"empty weights", func(t *testing.T, dir string) { truncate(t, filepath.Join(dir, model.WeightsFile), 0) }, []string{model.WeightsFile}},
		{"wrong magic", func(t *testing.T, dir string) {
			overwrite(t, filepath.Join(dir, model.WeightsFile), 0, []byte("PK\x03\x04 zip file"))
		}, []string{model.WeightsFile}},
		{"config not JSON", func(t *testing.T, dir string) { write(t, filepath.Join(dir, model.ConfigFile), "{n_embd: 32") }, []string{model.ConfigFile, "JSON"}},
		{"config shape disagrees", func(t *testing.T, dir string) {
			write(t, filepath.Join(dir, model.ConfigFile), `{"model_type":"gpt2","vocab_size":300,"n_positions":16,"n_embd":48,"n_layer":2,"n_head":4}`)
		}, []string{model.WeightsFile, "wte.weight", "shape"}},
		{"config more layers", func(t *testing.T, dir string) {
			write(t, filepath.Join(dir, model.ConfigFile), `{"model_type":"gpt2","vocab_size":300,"n_positions":16,"n_embd":32,"n_layer":3,"n_head":4}`)
		}, []string{model.WeightsFile, "h.2.", "missing"}},
		{"config heads do not divide", func(t *testing.T, dir string) {
			write(t, filepath.Join(dir, model.ConfigFile), `{"model_type":"gpt2","vocab_size":300,"n_positions":16,"n_embd":32,"n_layer":2,"n_head":5}`)
		}, []string{model.ConfigFile, "n_head"}},
		{"config absurd vocab", func(t *testing.T, dir string) {
			write(t, filepath.Join(dir, model.ConfigFile), `{"model_type":"gpt2","vocab_size":1000000000000,"n_positions":16,"n_embd":32,"n_layer":2,"n_head":4}`)
		}, []string{model.ConfigFile, "vocab_size"}},
		{"unknown tokenizer", func(t *testing.T, dir string) {
			write(t, filepath.Join(dir, model.ConfigFile), `{"model_type":"gpt2","vocab_size":300,"n_positions":16,"n_embd":32,"n_layer":2,"n_head":4,"braid_tokenizer":"klingon"}`)
		}, []string{model.ConfigFile, "klingon"}},
		{"not gpt2", func(t *testing.T, dir string) {
			write(t, filepath.Join(dir, model.ConfigFile), `{"model_type":"llama","vocab_size":300,"n_positions":16,"n_embd":32,"n_layer":2,"n_head":4}`)
		}, []string{model.ConfigFile, "llama"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir, _ := savedTiny(t)
			c.corrupt(t, dir)
			_, err := model.LoadCheckpoint(dir)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			t.Log(err)
		})
	}
	// The tokenizer must fit the vocabulary.
	dir, _ := savedTiny(t)
	write(t, filepath.Join(dir, model.ConfigFile), `{"model_type":"gpt2","vocab_size":64,"n_positions":16,"n_embd":32,"n_layer":2,"n_head":4,"braid_tokenizer":"byte"}`)
	if _, err := model.LoadCheckpoint(dir); err == nil || !errors.Is(err, model.ErrCheckpoint) {
		t.Errorf("byte tokenizer (257 ids) with vocab 64: err %v, want ErrCheckpoint", err)
	}
}

func truncate(t *testing.T, path string, n int64) {
	t.Helper()
	if err := os.Truncate(path, n); err != nil {
		t.Fatal(err)
	}
}

func overwrite(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func write(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// FuzzLoadCheckpoint: arbitrary weights and config bytes give a model or an
// error, never a panic.
func FuzzLoadCheckpoint(f *testing.F) {
	m, _ := model.New(model.Config{Vocab: 300, Context: 4, Dim: 8, Layers: 1, Heads: 2}, 1, 4)
	m.Init(1)
	seed := f.TempDir()
	if err := model.SaveCheckpoint(seed, m.Config, model.ByteTokenizer{}, m.Params); err != nil {
		f.Fatal(err)
	}
	weights, _ := os.ReadFile(filepath.Join(seed, model.WeightsFile))
	config, _ := os.ReadFile(filepath.Join(seed, model.ConfigFile))
	f.Add(weights, config)
	f.Add(weights[:len(weights)/2], config)
	f.Add([]byte{}, []byte("{}"))
	for _, dir := range []string{"testdata/qwen2_tiny", "testdata/mistral_tiny"} { // the Llama family
		weights, _ := os.ReadFile(filepath.Join(dir, model.WeightsFile))
		config, _ := os.ReadFile(filepath.Join(dir, model.ConfigFile))
		f.Add(weights, config)
	}
	f.Fuzz(func(t *testing.T, weights, config []byte) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, model.WeightsFile), weights, 0o644)
		os.WriteFile(filepath.Join(dir, model.ConfigFile), config, 0o644)
		ck, err := model.LoadCheckpoint(dir)
		if err == nil && len(ck.Params) != ck.Config.NumParams() {
			t.Fatalf("loaded %d params for a config of %d", len(ck.Params), ck.Config.NumParams())
		}
	})
}

// TestHugeConfigIsAnErrorNotAnOOM: a tiny checkpoint whose config asks for
// a 65536-token context is refused by the memory bound, not allocated.
func TestHugeConfigIsAnErrorNotAnOOM(t *testing.T) {
	c := model.Config{Vocab: 300, Context: 65536, Dim: 8, Layers: 8, Heads: 1}
	if _, err := model.NewInference(c, 1, c.Context); !errors.Is(err, model.ErrConfig) || !strings.Contains(err.Error(), "GiB") {
		t.Fatalf("err %v, want ErrConfig naming the memory", err)
	}
	if got := model.MemoryBytes(c, 1, 256, true); got > 1<<30 {
		t.Errorf("a 256-token window of it needs %d bytes, want well under 1 GiB", got)
	}
}

// DecodeConfig never panics, and what it accepts is a valid config; its
// errors quote no byte of input that is not JSON.
func FuzzDecodeConfig(f *testing.F) {
	m, _ := model.New(model.Config{Vocab: 300, Context: 4, Dim: 8, Layers: 1, Heads: 2}, 1, 4)
	seed := f.TempDir()
	if err := model.SaveCheckpoint(seed, m.Config, model.ByteTokenizer{}, m.Params); err != nil {
		f.Fatal(err)
	}
	config, _ := os.ReadFile(filepath.Join(seed, model.ConfigFile))
	f.Add(config)
	f.Add([]byte("{}"))
	f.Add([]byte("root:x:0:0:root:/root:/bin/bash\n"))
	for _, dir := range []string{"testdata/llama_tiny", "testdata/qwen2_tiny", "testdata/mistral_tiny"} { // the Llama family
		config, _ := os.ReadFile(filepath.Join(dir, model.ConfigFile))
		f.Add(config)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, tok, err := model.DecodeConfig(b, "config")
		if err != nil {
			if !errors.Is(err, model.ErrCheckpoint) && !errors.Is(err, model.ErrConfig) && !strings.Contains(err.Error(), "tokenizer") {
				t.Fatalf("error %v wraps neither ErrCheckpoint nor ErrConfig", err)
			}
			return
		}
		if c.Validate() != nil || tok == nil {
			t.Fatalf("accepted an invalid config %+v", c)
		}
	})
}
