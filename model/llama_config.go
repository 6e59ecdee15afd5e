package model

import (
	"fmt"
	"math"
)

// This file is the Llama family's part of Config: which architectures it
// covers, their settings' bounds and the rotary frequencies.
//
// The family shares one computation (llama.go): RMSNorm before attention
// and MLP, rotary positions on queries and keys, grouped-query causal
// attention, a SwiGLU MLP, a final RMSNorm and an output head. Its members
// differ only in settings:
//
//	llama    LlamaForCausalLM: rope_scaling may be Llama 3's
//	mistral  MistralForCausalLM: sliding-window attention (sliding_window)
//	qwen2    Qwen2ForCausalLM: biases on q_proj, k_proj and v_proj (not
//	         o_proj); head_dim is hidden_size/num_attention_heads

// Arch is a model's architecture, named by Hugging Face's model_type.
type Arch string

// The architectures braid computes.
const (
	ArchGPT2    Arch = "" // GPT-2 (model_type gpt2): the zero value
	ArchLlama   Arch = "llama"
	ArchMistral Arch = "mistral"
	ArchQwen2   Arch = "qwen2"
)

// String is the architecture's model_type.
func (a Arch) String() string {
	if a == ArchGPT2 {
		return "gpt2"
	}
	return string(a)
}

// llamaFamily reports whether the config is one of the Llama family (after
// Validate: any architecture but GPT-2).
func (c Config) llamaFamily() bool { return c.Arch != ArchGPT2 }

// QKVBias reports whether q_proj, k_proj and v_proj have biases (Qwen2).
func (c Config) QKVBias() bool { return c.Arch == ArchQwen2 }

// RopeScaling is Llama 3's rewrite of the rotary frequencies (Hugging
// Face's rope_scaling of rope_type "llama3", _compute_llama3_parameters):
// with wavelength λ = 2π/θ of a frequency θ, and
// λ_lo = OriginalContext/LowFreqFactor, λ_hi = OriginalContext/HighFreqFactor,
//
//	λ > λ_lo           θ/Factor
//	λ < λ_hi           θ
//	otherwise          (1−s)·θ/Factor + s·θ,  s = (OriginalContext/λ − LowFreqFactor)/(HighFreqFactor − LowFreqFactor)
//
// The zero value is no rewrite (rope_scaling null, or rope_type default).
type RopeScaling struct {
	Factor          float64 `json:"factor"`
	LowFreqFactor   float64 `json:"low_freq_factor"`
	HighFreqFactor  float64 `json:"high_freq_factor"`
	OriginalContext int     `json:"original_max_position_embeddings"`
}

// Bounds of the Llama family's settings (with MaxVocab, MaxDim and
// MaxLayers). A Llama has no position table, so Context only bounds the
// sequence length a model may be allocated for.
const (
	MaxRoPEContext = 1 << 24
	MaxHidden      = 1 << 18
	MaxHeadDim     = 1024
)

// checkGPT2 refuses a GPT-2 config that sets a Llama family field: GPT-2
// ignores them, and two configs that compute the same must be equal.
func (c Config) checkGPT2() error {
	for _, f := range []struct {
		name string
		set  bool
	}{
		{"num_key_value_heads", c.KVHeads != 0}, {"intermediate_size", c.Hidden != 0}, {"head_dim", c.HeadDim != 0},
		{"rms_norm_eps", c.NormEps != 0}, {"rope_theta", c.RopeTheta != 0}, {"rope_scaling", c.RopeScaling != RopeScaling{}},
		{"untied", c.Untied}, {"sliding_window", c.SlidingWindow != 0},
	} {
		if f.set {
			return fmt.Errorf("%w: %s is a setting of the Llama family; a GPT-2 config leaves it zero", ErrConfig, f.name)
		}
	}
	return nil
}

// validateLlama is Validate for the Llama family: every field within its
// bounds, named as config.json names it.
func (c Config) validateLlama() error {
	switch c.Arch {
	case ArchLlama, ArchMistral, ArchQwen2:
	default:
		return fmt.Errorf("%w: arch %q, want gpt2 (empty), llama, mistral or qwen2", ErrConfig, string(c.Arch))
	}
	for _, e := range []error{
		checkBound("vocab_size", c.Vocab, 1, MaxVocab),
		checkBound("max_position_embeddings", c.Context, 1, MaxRoPEContext),
		checkBound("hidden_size", c.Dim, 1, MaxDim),
		checkBound("num_hidden_layers", c.Layers, 1, MaxLayers),
		checkBound("num_attention_heads", c.Heads, 1, MaxDim),
		checkBound("num_key_value_heads", c.KVHeads, 1, c.Heads),
		checkBound("head_dim", c.HeadDim, 2, MaxHeadDim),
		checkBound("intermediate_size", c.Hidden, 1, MaxHidden),
		checkBound("sliding_window", c.SlidingWindow, 0, MaxRoPEContext),
	} {
		if e != nil {
			return e
		}
	}
	finite := func(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }
	rs := c.RopeScaling
	switch {
	case c.Heads%c.KVHeads != 0:
		return fmt.Errorf("%w: num_attention_heads = %d is not a multiple of num_key_value_heads = %d", ErrConfig, c.Heads, c.KVHeads)
	case c.HeadDim%2 != 0:
		return fmt.Errorf("%w: head_dim = %d is odd: rotary embeddings rotate pairs of channels", ErrConfig, c.HeadDim)
	case c.Heads*c.HeadDim > MaxDim:
		return fmt.Errorf("%w: num_attention_heads·head_dim = %d, want at most %d", ErrConfig, c.Heads*c.HeadDim, MaxDim)
	case !(c.NormEps > 0 && c.NormEps < 1):
		return fmt.Errorf("%w: rms_norm_eps = %g, want 0 < ε < 1", ErrConfig, c.NormEps)
	case !(c.RopeTheta > 0) || !finite(c.RopeTheta):
		return fmt.Errorf("%w: rope_theta = %g, want a finite positive number", ErrConfig, c.RopeTheta)
	case rs != RopeScaling{} && (!(rs.Factor > 0) || !finite(rs.Factor)):
		return fmt.Errorf("%w: rope_scaling factor = %g, want a finite positive number", ErrConfig, rs.Factor)
	case rs != RopeScaling{} && (!(rs.LowFreqFactor > 0) || !finite(rs.HighFreqFactor) || !(rs.HighFreqFactor > rs.LowFreqFactor)):
		return fmt.Errorf("%w: rope_scaling low_freq_factor = %g, high_freq_factor = %g, want 0 < low < high", ErrConfig, rs.LowFreqFactor, rs.HighFreqFactor)
	case rs != RopeScaling{} && (rs.OriginalContext < 1 || rs.OriginalContext > MaxRoPEContext):
		return fmt.Errorf("%w: rope_scaling original_max_position_embeddings = %d, want 1..%d", ErrConfig, rs.OriginalContext, MaxRoPEContext)
	case c.SlidingWindow != 0 && c.Arch != ArchMistral:
		return fmt.Errorf("%w: sliding_window = %d: only mistral's attention has a sliding window here, this is %s", ErrConfig, c.SlidingWindow, c.Arch)
	case rs != RopeScaling{} && c.Arch == ArchMistral:
		return fmt.Errorf("%w: rope_scaling is set: mistral has no rope_scaling", ErrConfig)
	case c.Arch == ArchQwen2 && c.Heads*c.HeadDim != c.Dim:
		return fmt.Errorf("%w: head_dim = %d: qwen2's heads have hidden_size/num_attention_heads = %d/%d channels", ErrConfig, c.HeadDim, c.Dim, c.Heads)
	}
	return nil
}

// ropeFrequencies returns the rotary frequencies θ_j, j < HeadDim/2, of a
// Llama family config: RopeTheta^(−2j/HeadDim), rewritten by RopeScaling
// when it is set. They are computed in float64 (Hugging Face computes them
// in float32).
func (c Config) ropeFrequencies() []float64 {
	hd := c.HeadDim
	f := make([]float64, hd/2)
	for j := range f {
		f[j] = 1 / math.Pow(c.RopeTheta, float64(2*j)/float64(hd))
	}
	rs := c.RopeScaling
	if rs == (RopeScaling{}) {
		return f
	}
	old := float64(rs.OriginalContext)
	lowWave, highWave := old/rs.LowFreqFactor, old/rs.HighFreqFactor
	for j, th := range f {
		switch wave := 2 * math.Pi / th; {
		case wave > lowWave:
			f[j] = th / rs.Factor
		case wave < highWave:
		default:
			s := (old/wave - rs.LowFreqFactor) / (rs.HighFreqFactor - rs.LowFreqFactor)
			f[j] = (1-s)*th/rs.Factor + s*th
		}
	}
	return f
}
