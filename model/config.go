package model

import (
	"errors"
	"fmt"
)

// Config is the shape of a model: a GPT-2 when Arch is empty (the zero
// value of every field below Heads), else one of the Llama family
// (llama_config.go).
type Config struct {
	Vocab   int `json:"vocab_size"`  // tokens in the vocabulary (V)
	Context int `json:"n_positions"` // longest sequence, rows of the position table (maxT); Llama: max_position_embeddings
	Dim     int `json:"n_embd"`      // channels of the residual stream (C)
	Layers  int `json:"n_layer"`     // transformer blocks (L)
	Heads   int `json:"n_head"`      // attention heads (NH); GPT-2: Dim must be a multiple

	// Arch is the architecture: ArchGPT2 (empty) or a member of the Llama
	// family (ArchLlama, ArchMistral, ArchQwen2), whose settings follow.
	Arch          Arch        `json:"arch,omitempty"`
	KVHeads       int         `json:"num_key_value_heads,omitempty"` // key/value heads (grouped-query attention); Heads is a multiple
	Hidden        int         `json:"intermediate_size,omitempty"`   // channels of the SwiGLU MLP (H)
	HeadDim       int         `json:"head_dim,omitempty"`            // channels per attention head (hd), even
	NormEps       float64     `json:"rms_norm_eps,omitempty"`        // ε of RMSNorm
	RopeTheta     float64     `json:"rope_theta,omitempty"`          // base of the rotary frequencies
	RopeScaling   RopeScaling `json:"rope_scaling,omitzero"`         // Llama 3's frequency rewrite; zero: none
	Untied        bool        `json:"untied,omitempty"`              // lm_head is its own matrix (tie_word_embeddings false)
	SlidingWindow int         `json:"sliding_window,omitempty"`      // Mistral: keys a query attends to at most; 0: all
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
// names the field at fault (as config.json names it). A GPT-2 config must
// leave the Llama family's fields zero.
func (c Config) Validate() error {
	if c.Arch != ArchGPT2 {
		return c.validateLlama()
	}
	if err := c.checkGPT2(); err != nil {
		return err
	}
	for _, e := range []error{
		checkBound("vocab_size", c.Vocab, 1, MaxVocab),
		checkBound("n_positions", c.Context, 1, MaxContext),
		checkBound("n_embd", c.Dim, 1, MaxDim),
		checkBound("n_layer", c.Layers, 1, MaxLayers),
		checkBound("n_head", c.Heads, 1, c.Dim),
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

// HeadSize is the channels per attention head: Dim/Heads for GPT-2,
// HeadDim for the Llama family.
func (c Config) HeadSize() int {
	if c.HeadDim > 0 {
		return c.HeadDim
	}
	return c.Dim / c.Heads
}

// checkBound returns an error naming field name if v is outside lo..hi.
func checkBound(name string, v, lo, hi int) error {
	if v < lo || v > hi {
		return fmt.Errorf("%w: %s = %d, want %d..%d", ErrConfig, name, v, lo, hi)
	}
	return nil
}

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
