package model

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/braidml/braid/internal/jsonerr"
)

// This file reads and writes the Llama family's config.json as Hugging
// Face's LlamaConfig, MistralConfig and Qwen2Config do (transformers 4.4x;
// the rope_parameters key of later versions is read too), and names its
// tensors as their save_pretrained does.

// llamaArchitectures are the model_type values of the family and the
// architectures entry of a causal language model of each.
var llamaArchitectures = map[Arch]string{
	ArchLlama:   "LlamaForCausalLM",
	ArchMistral: "MistralForCausalLM",
	ArchQwen2:   "Qwen2ForCausalLM",
}

// llamaDefaults are the config classes' defaults, which Hugging Face uses
// for a key config.json leaves out.
type llamaDefaults struct {
	vocab, hidden, intermediate, layers, heads, maxPositions int
	kvHeads                                                  int // 0: num_attention_heads
	slidingWindow                                            int // mistral
}

var llamaDefaultsOf = map[Arch]llamaDefaults{
	ArchLlama:   {vocab: 32000, hidden: 4096, intermediate: 11008, layers: 32, heads: 32, maxPositions: 2048},
	ArchMistral: {vocab: 32000, hidden: 4096, intermediate: 14336, layers: 32, heads: 32, maxPositions: 4096 * 32, kvHeads: 8, slidingWindow: 4096},
	ArchQwen2:   {vocab: 151936, hidden: 4096, intermediate: 22016, layers: 32, heads: 32, maxPositions: 32768, kvHeads: 32},
}

// llamaDefaultEps and llamaDefaultTheta are every family member's
// rms_norm_eps and rope_theta defaults.
const (
	llamaDefaultEps   = 1e-6
	llamaDefaultTheta = 10000.0
)

// llamaModelType returns the architecture of config.json's bytes b if its
// model_type is one of the Llama family.
func llamaModelType(b []byte) (Arch, bool) {
	var peek struct {
		ModelType string `json:"model_type"`
	}
	if json.Unmarshal(b, &peek) != nil {
		return "", false
	}
	a := Arch(peek.ModelType)
	_, ok := llamaArchitectures[a]
	return a, ok
}

// llamaHFIn is what decodeLlamaConfig reads from config.json. Keys absent
// take the config class's default, as in Hugging Face; keys braid does not
// model and that do not change what the model computes (torch_dtype,
// bos_token_id, eos_token_id, use_cache, initializer_range, dropout rates,
// transformers_version, ...) are ignored.
type llamaHFIn struct {
	Architectures         []string        `json:"architectures"`
	VocabSize             *int            `json:"vocab_size"`
	HiddenSize            *int            `json:"hidden_size"`
	IntermediateSize      *int            `json:"intermediate_size"`
	NumHiddenLayers       *int            `json:"num_hidden_layers"`
	NumAttentionHeads     *int            `json:"num_attention_heads"`
	NumKeyValueHeads      json.RawMessage `json:"num_key_value_heads"` // absent, null or a number
	HeadDim               json.RawMessage `json:"head_dim"`            // absent, null or a number
	MaxPositionEmbeddings *int            `json:"max_position_embeddings"`
	HiddenAct             *string         `json:"hidden_act"`
	RMSNormEps            *float64        `json:"rms_norm_eps"`
	RopeTheta             *float64        `json:"rope_theta"`
	RopeScaling           json.RawMessage `json:"rope_scaling"`
	RopeParameters        json.RawMessage `json:"rope_parameters"`
	TieWordEmbeddings     *bool           `json:"tie_word_embeddings"`
	SlidingWindow         json.RawMessage `json:"sliding_window"` // absent, null or a number
	UseSlidingWindow      *bool           `json:"use_sliding_window"`
	Tokenizer             string          `json:"braid_tokenizer"`
	// Must be absent or their default, else refused by name:
	AttentionBias       *bool           `json:"attention_bias"`
	MLPBias             *bool           `json:"mlp_bias"`
	PretrainingTP       *int            `json:"pretraining_tp"`
	PartialRotaryFactor *float64        `json:"partial_rotary_factor"`
	LayerTypes          []string        `json:"layer_types"`
	QuantizationConfig  json.RawMessage `json:"quantization_config"`
}

// ropeHF is rope_scaling (or rope_parameters) as Hugging Face writes it.
type ropeHF struct {
	RopeType        string   `json:"rope_type"`
	Type            string   `json:"type"` // the key's older name
	RopeTheta       *float64 `json:"rope_theta"`
	Factor          *float64 `json:"factor"`
	LowFreqFactor   *float64 `json:"low_freq_factor"`
	HighFreqFactor  *float64 `json:"high_freq_factor"`
	OriginalContext *int     `json:"original_max_position_embeddings"`
}

// isNull reports whether a raw JSON value is absent or null.
func isNull(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) == 0 || string(t) == "null"
}

// decodeLlamaConfig decodes config.json's bytes b of architecture arch
// (model_type llama, mistral or qwen2), named path in errors, as Hugging
// Face's config class reads it, and validates the result. It refuses,
// naming the key, what would make the model compute something braid does
// not: hidden_act other than silu, attention_bias or mlp_bias (llama),
// pretraining_tp other than 1, rope_scaling (or rope_parameters) of a
// rope_type other than default and llama3, a partial_rotary_factor,
// Qwen2's use_sliding_window, layer_types other than full attention,
// quantization_config, and architectures other than the family member's
// ...ForCausalLM. Mistral's sliding_window is honoured (null: none). It
// returns the config and config.json's braid_tokenizer ("" without one), as
// decodeConfig does.
func decodeLlamaConfig(b []byte, arch Arch, path string) (Config, string, error) {
	bad := func(format string, args ...any) (Config, string, error) {
		return Config{}, "", fmt.Errorf("%w: %s: "+format, append([]any{ErrCheckpoint, path}, args...)...)
	}
	var in llamaHFIn
	if err := json.Unmarshal(b, &in); err != nil {
		return bad("not a JSON config: %s", jsonerr.Problem(err))
	}
	d := llamaDefaultsOf[arch]
	orDefault := func(p *int, def int) int {
		if p != nil {
			return *p
		}
		return def
	}
	// nullable reads a key that may be absent (def), null (ifNull) or an
	// integer.
	nullable := func(key string, raw json.RawMessage, def, ifNull int) (int, error) {
		if len(bytes.TrimSpace(raw)) == 0 {
			return def, nil
		}
		if isNull(raw) {
			return ifNull, nil
		}
		var v int
		if err := json.Unmarshal(raw, &v); err != nil {
			return 0, fmt.Errorf("%w: %s: %s is not an integer", ErrCheckpoint, path, key)
		}
		return v, nil
	}
	c := Config{
		Arch: arch, Vocab: orDefault(in.VocabSize, d.vocab), Dim: orDefault(in.HiddenSize, d.hidden),
		Hidden: orDefault(in.IntermediateSize, d.intermediate), Layers: orDefault(in.NumHiddenLayers, d.layers),
		Heads: orDefault(in.NumAttentionHeads, d.heads), Context: orDefault(in.MaxPositionEmbeddings, d.maxPositions),
		NormEps: llamaDefaultEps, RopeTheta: llamaDefaultTheta,
	}
	var err error
	kvDefault := d.kvHeads
	if kvDefault == 0 {
		kvDefault = c.Heads
	}
	if c.KVHeads, err = nullable("num_key_value_heads", in.NumKeyValueHeads, kvDefault, c.Heads); err != nil {
		return Config{}, "", err
	}
	derived := 0 // hidden_size/num_attention_heads, as Hugging Face derives head_dim
	if c.Heads > 0 {
		derived = c.Dim / c.Heads
	}
	if c.HeadDim, err = nullable("head_dim", in.HeadDim, derived, derived); err != nil {
		return Config{}, "", err
	}
	if in.RMSNormEps != nil {
		c.NormEps = *in.RMSNormEps
	}
	if in.RopeTheta != nil {
		c.RopeTheta = *in.RopeTheta
	}
	c.Untied = in.TieWordEmbeddings == nil || !*in.TieWordEmbeddings
	if arch == ArchMistral {
		if c.SlidingWindow, err = nullable("sliding_window", in.SlidingWindow, d.slidingWindow, 0); err != nil {
			return Config{}, "", err
		}
	}

	if len(in.Architectures) > 0 && (len(in.Architectures) != 1 || in.Architectures[0] != llamaArchitectures[arch]) {
		return bad("architectures %q: braid computes a %s (%s)", in.Architectures, llamaArchitectures[arch], arch)
	}
	if in.HiddenAct != nil && *in.HiddenAct != "silu" && *in.HiddenAct != "swish" {
		return bad("hidden_act %q: braid's MLP is SwiGLU (silu)", *in.HiddenAct)
	}
	if arch == ArchLlama && in.AttentionBias != nil && *in.AttentionBias {
		return bad("attention_bias = true (biases on q_proj, k_proj, v_proj and o_proj) is not supported")
	}
	if arch == ArchLlama && in.MLPBias != nil && *in.MLPBias {
		return bad("mlp_bias = true is not supported")
	}
	if in.PretrainingTP != nil && *in.PretrainingTP != 1 {
		return bad("pretraining_tp = %d: braid supports 1 only", *in.PretrainingTP)
	}
	if in.PartialRotaryFactor != nil && *in.PartialRotaryFactor != 1 {
		return bad("partial_rotary_factor = %g: braid rotates every channel of a head (1)", *in.PartialRotaryFactor)
	}
	if arch == ArchQwen2 && in.UseSlidingWindow != nil && *in.UseSlidingWindow {
		return bad("use_sliding_window = true: Qwen2's sliding-window layers are not supported")
	}
	for _, lt := range in.LayerTypes {
		if lt != "full_attention" && !(arch == ArchMistral && lt == "sliding_attention" && c.SlidingWindow > 0) {
			return bad("layer_types has %q: braid computes full attention in every layer", lt)
		}
	}
	if !isNull(in.QuantizationConfig) {
		return bad("quantization_config is set: quantized checkpoints are not supported")
	}
	// rope_parameters (later transformers) holds rope_theta and the
	// scaling together; rope_scaling holds the scaling alone.
	ropeKey, ropeRaw := "rope_scaling", in.RopeScaling
	if !isNull(in.RopeParameters) {
		ropeKey, ropeRaw = "rope_parameters", in.RopeParameters
	}
	if !isNull(ropeRaw) {
		var r ropeHF
		if err := json.Unmarshal(ropeRaw, &r); err != nil {
			return bad("%s: %s", ropeKey, jsonerr.Problem(err))
		}
		if r.RopeTheta != nil {
			c.RopeTheta = *r.RopeTheta
		}
		typ := r.RopeType
		if typ == "" {
			typ = r.Type
		}
		switch typ {
		case "", "default":
		case "llama3":
			if r.Factor == nil || r.LowFreqFactor == nil || r.HighFreqFactor == nil || r.OriginalContext == nil {
				return bad("%s of rope_type llama3 needs factor, low_freq_factor, high_freq_factor and original_max_position_embeddings", ropeKey)
			}
			c.RopeScaling = RopeScaling{Factor: *r.Factor, LowFreqFactor: *r.LowFreqFactor, HighFreqFactor: *r.HighFreqFactor, OriginalContext: *r.OriginalContext}
		default:
			return bad("%s rope_type %q: braid computes rotary embeddings without scaling or with llama3's", ropeKey, typ)
		}
	}
	if err := c.Validate(); err != nil {
		return Config{}, "", fmt.Errorf("%s: %w", path, err)
	}
	return c, in.Tokenizer, nil
}

// pyFloat is a float64 that encodes as Python's json module writes a float
// (always with a point or an exponent: 10000.0, 1e-06), so that Hugging
// Face's checks that want a float (rope_scaling's factor) see one.
type pyFloat float64

func (f pyFloat) MarshalJSON() ([]byte, error) {
	v := float64(f)
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil, fmt.Errorf("model: %v is not a JSON number", v)
	}
	if a := math.Abs(v); a != 0 && (a < 1e-4 || a >= 1e16) {
		return []byte(strconv.FormatFloat(v, 'e', -1, 64)), nil
	}
	s := strconv.FormatFloat(v, 'f', -1, 64)
	if !strings.Contains(s, ".") {
		s += ".0"
	}
	return []byte(s), nil
}

// encodeLlamaConfig returns config.json for a Llama family config c whose
// weights are stored as torchDtype, as the architecture's save_pretrained
// writes it (every key of the config class, sorted), with braid's
// tokenizer name and, as for GPT-2, its end-of-text id as bos_token_id and
// eos_token_id. Hugging Face reads it back into the same model.
func encodeLlamaConfig(c Config, tok Tokenizer, torchDtype string) ([]byte, error) {
	var rope any // null
	if c.RopeScaling != (RopeScaling{}) {
		rs := c.RopeScaling
		rope = map[string]any{
			"rope_type": "llama3", "factor": pyFloat(rs.Factor), "low_freq_factor": pyFloat(rs.LowFreqFactor),
			"high_freq_factor": pyFloat(rs.HighFreqFactor), "original_max_position_embeddings": rs.OriginalContext,
		}
	}
	eot := int(tok.EOT())
	m := map[string]any{
		"architectures": []string{llamaArchitectures[c.Arch]}, "model_type": string(c.Arch),
		"vocab_size": c.Vocab, "hidden_size": c.Dim, "intermediate_size": c.Hidden, "num_hidden_layers": c.Layers,
		"num_attention_heads": c.Heads, "num_key_value_heads": c.KVHeads, "head_dim": c.HeadDim,
		"max_position_embeddings": c.Context, "hidden_act": "silu", "rms_norm_eps": pyFloat(c.NormEps),
		"rope_theta": pyFloat(c.RopeTheta), "tie_word_embeddings": !c.Untied, "attention_dropout": pyFloat(0),
		"initializer_range": pyFloat(0.02), "use_cache": true, "torch_dtype": torchDtype,
		"bos_token_id": eot, "eos_token_id": eot, "braid_tokenizer": tok.Name(),
	}
	switch c.Arch {
	case ArchLlama:
		m["rope_scaling"], m["attention_bias"], m["mlp_bias"], m["pretraining_tp"] = rope, false, false, 1
	case ArchMistral:
		m["sliding_window"] = nil
		if c.SlidingWindow > 0 {
			m["sliding_window"] = c.SlidingWindow
		}
	case ArchQwen2:
		m["rope_scaling"], m["use_sliding_window"], m["sliding_window"], m["max_window_layers"] = rope, false, nil, c.Layers
	}
	js, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(js, '\n'), nil
}

// llamaTensorName returns the Layout name of a tensor of a Llama family
// file: names are those of ...ForCausalLM's state_dict
// ("model.layers.0.self_attn.q_proj.weight", "lm_head.weight"), and those
// of the bare model (LlamaModel: "layers.0.self_attn.q_proj.weight") are
// accepted.
func llamaTensorName(name string) string {
	if strings.HasPrefix(name, "model.") || name == "lm_head.weight" {
		return name
	}
	return "model." + name
}
