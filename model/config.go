package model

import (
	"errors"
	"fmt"
)

// Config is the shape of a GPT-2-style model.
type Config struct {
	Vocab   int `json:"vocab_size"`  // tokens in the vocabulary (V)
	Context int `json:"n_positions"` // longest sequence, rows of the position table (maxT)
	Dim     int `json:"n_embd"`      // channels of the residual stream (C)
	Layers  int `json:"n_layer"`     // transformer blocks (L)
	Heads   int `json:"n_head"`      // attention heads (NH); Dim must be a multiple
}

// ErrConfig is wrapped by every Config validation error.
var ErrConfig = errors.New("model: invalid config")

// Bounds on Config fields, generous enough for GPT-2 XL. They keep sizes
// from overflowing; what a model may allocate is bounded by MemoryLimit.
const (
	MaxVocab   = 1 << 20
	MaxContext = 1 << 16
	MaxDim     = 1 << 14
	MaxLayers  = 256
)

// Validate checks every field against its bounds and Dim against Heads, and
// names the field at fault.
func (c Config) Validate() error {
	check := func(name string, v, lo, hi int) error {
		if v < lo || v > hi {
			return fmt.Errorf("%w: %s = %d, want %d..%d", ErrConfig, name, v, lo, hi)
		}
		return nil
	}
	for _, e := range []error{
		check("vocab_size", c.Vocab, 1, MaxVocab),
		check("n_positions", c.Context, 1, MaxContext),
		check("n_embd", c.Dim, 1, MaxDim),
		check("n_layer", c.Layers, 1, MaxLayers),
		check("n_head", c.Heads, 1, c.Dim),
	} {
		if e != nil {
			return e
		}
	}
	if c.Dim%c.Heads != 0 {
		return fmt.Errorf("%w: n_embd = %d is not a multiple of n_head = %d", ErrConfig, c.Dim, c.Heads)
	}
	return nil
}

// HeadSize is the channels per attention head, Dim/Heads.
func (c Config) HeadSize() int { return c.Dim / c.Heads }

// Presets are named model shapes for `braid train --config`. Their Vocab is
// zero: it comes from the tokenizer.
var Presets = map[string]Config{
	// tiny is the benchmark shape of `braid bench kernels` (about 0.8 M
	// parameters plus embeddings).
	"tiny": {Context: 256, Dim: 128, Layers: 4, Heads: 4},
	// small is about 2.7 M parameters plus embeddings.
	"small": {Context: 256, Dim: 192, Layers: 6, Heads: 6},
}

// Preset returns the named preset with the given vocabulary size.
func Preset(name string, vocab int) (Config, error) {
	c, ok := Presets[name]
	if !ok {
		return Config{}, fmt.Errorf("%w: unknown preset %q (want tiny or small)", ErrConfig, name)
	}
	c.Vocab = vocab
	return c, c.Validate()
}
