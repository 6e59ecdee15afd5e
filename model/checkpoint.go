package model

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/braidml/braid/model/safetensors"
)

// Checkpoint file names inside a checkpoint directory, as Hugging Face names
// them.
const (
	WeightsFile = "model.safetensors"
	ConfigFile  = "config.json"
)

// ErrCheckpoint is wrapped by every error about a checkpoint's contents.
var ErrCheckpoint = errors.New("model: bad checkpoint")

// hfConfig is config.json: Hugging Face GPT2Config's keys plus braid's own.
type hfConfig struct {
	ModelType          string   `json:"model_type"`
	Architectures      []string `json:"architectures,omitempty"`
	VocabSize          int      `json:"vocab_size"`
	NPositions         int      `json:"n_positions"`
	NCtx               int      `json:"n_ctx,omitempty"`
	NEmbd              int      `json:"n_embd"`
	NLayer             int      `json:"n_layer"`
	NHead              int      `json:"n_head"`
	NInner             *int     `json:"n_inner"`
	LayerNormEpsilon   float64  `json:"layer_norm_epsilon"`
	ActivationFunction string   `json:"activation_function"`
	TieWordEmbeddings  *bool    `json:"tie_word_embeddings,omitempty"`
	Tokenizer          string   `json:"braid_tokenizer,omitempty"`
}

// Checkpoint is a model's config, tokenizer and flat parameters as read from
// (or written to) a directory.
type Checkpoint struct {
	Config    Config
	Tokenizer Tokenizer
	Params    []float32 // flat, in Config.Layout order
}

// SaveCheckpoint writes params of a model with config c into dir (created if
// needed) as model.safetensors and config.json in Hugging Face GPT-2's layout:
// tensor names from Config.Layout and linear weights transposed to Conv1D's
// (in, out). Each file is replaced atomically (temp file, fsync, rename).
func SaveCheckpoint(dir string, c Config, tok Tokenizer, params []float32) error {
	if err := c.Validate(); err != nil {
		return err
	}
	if len(params) != c.NumParams() {
		return fmt.Errorf("model: SaveCheckpoint: %d parameters, config needs %d", len(params), c.NumParams())
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("model: checkpoint directory: %w", err)
	}
	layout := c.Layout()
	tensors := make([]safetensors.Tensor, 0, len(layout))
	for _, p := range layout {
		w := params[p.Offset : p.Offset+p.Size]
		shape := p.Shape
		if p.Linear { // (out, in) → Conv1D (in, out)
			w = transpose(w, p.Shape[0], p.Shape[1])
			shape = []int{p.Shape[1], p.Shape[0]}
		}
		tensors = append(tensors, safetensors.F32Tensor(p.Name, shape, w))
	}
	if err := safetensors.WriteFile(filepath.Join(dir, WeightsFile), tensors, map[string]string{"format": "pt"}); err != nil {
		return err
	}
	tie := true
	cfg := hfConfig{
		ModelType: "gpt2", Architectures: []string{"GPT2LMHeadModel"},
		VocabSize: c.Vocab, NPositions: c.Context, NCtx: c.Context, NEmbd: c.Dim, NLayer: c.Layers, NHead: c.Heads,
		LayerNormEpsilon: 1e-5, ActivationFunction: "gelu_new", TieWordEmbeddings: &tie, Tokenizer: tok.Name(),
	}
	js, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	return WriteFileAtomic(filepath.Join(dir, ConfigFile), append(js, '\n'), 0o644)
}

// ReadConfig reads and validates dir/config.json.
func ReadConfig(dir string) (Config, Tokenizer, error) {
	path := filepath.Join(dir, ConfigFile)
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, nil, fmt.Errorf("model: checkpoint config: %w", err)
	}
	var hc hfConfig
	if err := json.Unmarshal(b, &hc); err != nil {
		return Config{}, nil, fmt.Errorf("%w: %s: not a JSON config: %v", ErrCheckpoint, path, err)
	}
	if hc.ModelType != "" && hc.ModelType != "gpt2" {
		return Config{}, nil, fmt.Errorf("%w: %s: model_type %q, braid reads gpt2", ErrCheckpoint, path, hc.ModelType)
	}
	if hc.NInner != nil && *hc.NInner != 4*hc.NEmbd {
		return Config{}, nil, fmt.Errorf("%w: %s: n_inner = %d, braid supports only 4·n_embd", ErrCheckpoint, path, *hc.NInner)
	}
	if hc.ActivationFunction != "" && hc.ActivationFunction != "gelu_new" && hc.ActivationFunction != "gelu_pytorch_tanh" {
		return Config{}, nil, fmt.Errorf("%w: %s: activation_function %q, braid implements the tanh GELU (gelu_new)", ErrCheckpoint, path, hc.ActivationFunction)
	}
	if hc.TieWordEmbeddings != nil && !*hc.TieWordEmbeddings {
		return Config{}, nil, fmt.Errorf("%w: %s: untied word embeddings are not supported", ErrCheckpoint, path)
	}
	c := Config{Vocab: hc.VocabSize, Context: hc.NPositions, Dim: hc.NEmbd, Layers: hc.NLayer, Heads: hc.NHead}
	if err := c.Validate(); err != nil {
		return Config{}, nil, fmt.Errorf("%s: %w", path, err)
	}
	tok, err := TokenizerByName(hc.Tokenizer)
	if err != nil {
		return Config{}, nil, fmt.Errorf("%s: %w", path, err)
	}
	if tok.Vocab() > c.Vocab {
		return Config{}, nil, fmt.Errorf("%w: %s: tokenizer %s has %d ids but vocab_size is %d", ErrCheckpoint, path, tok.Name(), tok.Vocab(), c.Vocab)
	}
	return c, tok, nil
}

// LoadCheckpoint reads a checkpoint directory written by SaveCheckpoint or
// by Hugging Face (model.safetensors + config.json of a GPT-2). F32, F16 and
// BF16 weights are read; a "transformer." name prefix is accepted; the
// causal-mask buffers some GPT-2 files carry (attn.bias, attn.masked_bias)
// and lm_head.weight (tied) are ignored. Any missing tensor, or one whose
// shape disagrees with config.json, is an error naming the file and tensor.
func LoadCheckpoint(dir string) (*Checkpoint, error) {
	c, tok, err := ReadConfig(dir)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, WeightsFile)
	f, err := safetensors.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("model: checkpoint weights: %w", err)
	}
	byName := make(map[string]*safetensors.Tensor, len(f.Tensors))
	for i := range f.Tensors {
		t := &f.Tensors[i]
		byName[strings.TrimPrefix(t.Name, "transformer.")] = t
	}
	// Check every tensor before allocating: a config can describe a huge
	// model, but only a file that holds all of its tensors gets memory.
	layout := c.Layout()
	found := make([]*safetensors.Tensor, len(layout))
	for i, p := range layout {
		t, ok := byName[p.Name]
		if !ok {
			return nil, fmt.Errorf("%w: %s: tensor %s is missing", ErrCheckpoint, path, p.Name)
		}
		want := p.Shape
		if p.Linear {
			want = []int{p.Shape[1], p.Shape[0]}
		}
		if !equalShape(t.Shape, want) {
			return nil, fmt.Errorf("%w: %s: tensor %s has shape %v, config.json implies %v", ErrCheckpoint, path, p.Name, t.Shape, want)
		}
		found[i] = t
	}
	params := make([]float32, c.NumParams())
	for i, p := range layout {
		w, err := found[i].Float32s()
		if err != nil {
			return nil, fmt.Errorf("%w: %s: tensor %s: %v", ErrCheckpoint, path, p.Name, err)
		}
		if p.Linear {
			w = transpose(w, p.Shape[1], p.Shape[0])
		}
		copy(params[p.Offset:p.Offset+p.Size], w)
	}
	return &Checkpoint{Config: c, Tokenizer: tok, Params: params}, nil
}

// Load reads a checkpoint and returns a model holding its weights, with
// activations for batches of up to maxB × maxT tokens (maxT 0: the full
// context).
func Load(dir string, maxB, maxT int) (*Model, Tokenizer, error) {
	ck, err := LoadCheckpoint(dir)
	if err != nil {
		return nil, nil, err
	}
	if maxT == 0 || maxT > ck.Config.Context {
		maxT = ck.Config.Context
	}
	m, err := New(ck.Config, maxB, maxT)
	if err != nil {
		return nil, nil, err
	}
	copy(m.Params, ck.Params)
	return m, ck.Tokenizer, nil
}

func equalShape(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// transpose returns the (cols, rows) transpose of the (rows, cols) matrix w.
func transpose(w []float32, rows, cols int) []float32 {
	out := make([]float32, len(w))
	for r := 0; r < rows; r++ {
		for c := 0; c < cols; c++ {
			out[c*rows+r] = w[r*cols+c]
		}
	}
	return out
}

// WriteFileAtomic replaces path with data: it writes a temporary file in the
// same directory, fsyncs it, renames it over path and fsyncs the directory.
// On error no partial file is left at path.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("model: write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err = tmp.Write(data); err != nil {
		return fmt.Errorf("model: write %s: %w", path, err)
	}
	if err = tmp.Chmod(perm); err != nil {
		return fmt.Errorf("model: write %s: %w", path, err)
	}
	if err = tmp.Sync(); err != nil {
		return fmt.Errorf("model: write %s: %w", path, err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("model: write %s: %w", path, err)
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("model: write %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
