package gguf

import (
	"fmt"
	"io"
	"math"
	"strings"

	"github.com/braidml/braid/internal/atomicfile"
	"github.com/braidml/braid/kernels"
	"github.com/braidml/braid/model"
)

// Options say how Build writes a checkpoint.
type Options struct {
	// Type is the type of the matrices: F32 (the zero value), F16, BF16 or
	// Q8_0. Vectors and GPT-2's position table are F32 whatever it is.
	Type Type
	// Name is general.name, the model's name in llama.cpp's and Ollama's
	// listings; "" leaves the key out.
	Name string
}

// archName is general.architecture in llama.cpp for a braid architecture:
// the converter writes Mistral as llama.
func archName(a model.Arch) string {
	switch a {
	case model.ArchGPT2:
		return "gpt2"
	case model.ArchLlama, model.ArchMistral:
		return "llama"
	}
	return string(a)
}

// Build describes checkpoint ck as a GGUF file, as llama.cpp's
// convert_hf_to_gguf.py describes the same Hugging Face model: the
// metadata (general.*, <arch>.*, tokenizer.*) and the tensors with
// llama.cpp's names and shapes. The tensors' Data are ck.Params' views
// where the converter keeps a tensor as it is, and copies where it
// rewrites one (llama's permuted query and key rows); ck is not modified.
//
// It refuses, naming what, a checkpoint llama.cpp would compute
// differently: a Qwen2 with rotary scaling (llama.cpp's qwen2 has no
// rope_freqs), or a tokenizer it cannot describe (tokenizer.go).
func Build(ck *model.Checkpoint, opt Options) ([]KV, []Tensor, error) {
	c := ck.Config
	if err := c.Validate(); err != nil {
		return nil, nil, err
	}
	if len(ck.Params) != c.NumParams() {
		return nil, nil, fmt.Errorf("gguf: checkpoint has %d parameters, its config %d", len(ck.Params), c.NumParams())
	}
	if _, err := opt.Type.rowBytes(Q8Block); err != nil {
		return nil, nil, err
	}
	if c.Arch == model.ArchQwen2 && c.RopeScaling != (model.RopeScaling{}) {
		return nil, nil, fmt.Errorf("gguf: qwen2 with rope_scaling: llama.cpp's qwen2 architecture has no llama3 rotary scaling")
	}
	arch := archName(c.Arch)
	kvs := []KV{
		{"general.architecture", arch},
		{"general.type", "model"},
	}
	if opt.Name != "" {
		kvs = append(kvs, KV{"general.name", opt.Name})
	}
	kvs = append(kvs,
		KV{"general.file_type", opt.Type.FileType()},
		KV{"general.quantization_version", uint32(2)}, // GGML_QNT_VERSION
		KV{"general.alignment", uint32(Alignment)},
	)
	u32 := func(key string, v int) { kvs = append(kvs, KV{arch + "." + key, uint32(v)}) }
	f32 := func(key string, v float64) { kvs = append(kvs, KV{arch + "." + key, float32(v)}) }
	var tensors []Tensor
	var err error
	if c.Arch == model.ArchGPT2 {
		u32("context_length", c.Context)
		u32("embedding_length", c.Dim)
		u32("feed_forward_length", 4*c.Dim)
		u32("block_count", c.Layers)
		u32("attention.head_count", c.Heads)
		f32("attention.layer_norm_epsilon", kernels.LayerNormEps)
		tensors, err = gpt2Tensors(c, ck.Params)
	} else {
		u32("vocab_size", c.Vocab)
		u32("context_length", c.Context)
		u32("embedding_length", c.Dim)
		u32("block_count", c.Layers)
		u32("feed_forward_length", c.Hidden)
		u32("rope.dimension_count", c.HeadDim)
		u32("attention.head_count", c.Heads)
		u32("attention.head_count_kv", c.KVHeads)
		u32("attention.key_length", c.HeadDim)
		u32("attention.value_length", c.HeadDim)
		f32("attention.layer_norm_rms_epsilon", c.NormEps)
		f32("rope.freq_base", c.RopeTheta)
		tensors, err = llamaTensors(c, ck.Params)
	}
	if err != nil {
		return nil, nil, err
	}
	tok, err := tokenizerKVs(ck.Tokenizer, c)
	if err != nil {
		return nil, nil, err
	}
	kvs = append(kvs, tok...)
	for i := range tensors {
		tensors[i].Type = tensorType(tensors[i], opt.Type)
	}
	return kvs, tensors, nil
}

// tensorType is the type the converter gives a tensor when the file's
// matrices are of type t: F32 for vectors and the position table; F16 for
// a Q8_0 matrix whose rows are not whole blocks.
func tensorType(t Tensor, want Type) Type {
	if len(t.Shape) < 2 || strings.HasSuffix(t.Name, "_norm.weight") || t.Name == "position_embd.weight" {
		return F32
	}
	if _, err := want.rowBytes(t.Shape[len(t.Shape)-1]); err != nil {
		return F16
	}
	return want
}

// gpt2Tensors names a GPT-2's parameters as the converter does. braid
// keeps linear weights as (out, in), which is what the converter makes of
// Hugging Face's Conv1D (in, out) by transposing, so nothing is copied;
// the tied output head is written as its own tensor, output.weight, a
// second copy of token_embd.weight in the file, as the converter writes it.
func gpt2Tensors(c model.Config, params []float32) ([]Tensor, error) {
	rename := map[string]string{
		"ln_1.weight": "attn_norm.weight", "ln_1.bias": "attn_norm.bias",
		"attn.c_attn.weight": "attn_qkv.weight", "attn.c_attn.bias": "attn_qkv.bias",
		"attn.c_proj.weight": "attn_output.weight", "attn.c_proj.bias": "attn_output.bias",
		"ln_2.weight": "ffn_norm.weight", "ln_2.bias": "ffn_norm.bias",
		"mlp.c_fc.weight": "ffn_up.weight", "mlp.c_fc.bias": "ffn_up.bias",
		"mlp.c_proj.weight": "ffn_down.weight", "mlp.c_proj.bias": "ffn_down.bias",
	}
	var ts []Tensor
	for _, p := range c.Layout() {
		data := params[p.Offset : p.Offset+p.Size]
		var name string
		switch p.Name {
		case "wte.weight":
			name = "token_embd.weight"
		case "wpe.weight":
			name = "position_embd.weight"
		case "ln_f.weight":
			name = "output_norm.weight"
		case "ln_f.bias":
			name = "output_norm.bias"
		default:
			var ok bool
			if name, ok = blockTensorName(p.Name, "h.", rename); !ok {
				return nil, fmt.Errorf("gguf: no llama.cpp name for GPT-2 parameter %s", p.Name)
			}
		}
		ts = append(ts, Tensor{Name: name, Shape: p.Shape, Data: data})
	}
	wte := ts[0]
	ts = append(ts, Tensor{Name: "output.weight", Shape: wte.Shape, Data: wte.Data})
	return ts, nil
}

// blockTensorName is llama.cpp's name (blk.N.NAME) of a block's tensor
// called PREFIX N.REST in braid's layout, REST renamed by rename; ok is
// false for any other name.
func blockTensorName(name, prefix string, rename map[string]string) (string, bool) {
	var l int
	if _, err := fmt.Sscanf(name, prefix+"%d.", &l); err != nil {
		return "", false
	}
	n, ok := rename[strings.TrimPrefix(name, fmt.Sprintf("%s%d.", prefix, l))]
	if !ok {
		return "", false
	}
	return fmt.Sprintf("blk.%d.%s", l, n), true
}

// llamaTensors names a Llama family model's parameters as the converter
// does, permutes the query and key rows of the llama architecture
// (permuteHeads) and adds Llama 3's rope_freqs.
func llamaTensors(c model.Config, params []float32) ([]Tensor, error) {
	rename := map[string]string{
		"input_layernorm.weight":  "attn_norm.weight",
		"self_attn.q_proj.weight": "attn_q.weight", "self_attn.q_proj.bias": "attn_q.bias",
		"self_attn.k_proj.weight": "attn_k.weight", "self_attn.k_proj.bias": "attn_k.bias",
		"self_attn.v_proj.weight": "attn_v.weight", "self_attn.v_proj.bias": "attn_v.bias",
		"self_attn.o_proj.weight":         "attn_output.weight",
		"post_attention_layernorm.weight": "ffn_norm.weight",
		"mlp.gate_proj.weight":            "ffn_gate.weight",
		"mlp.up_proj.weight":              "ffn_up.weight",
		"mlp.down_proj.weight":            "ffn_down.weight",
	}
	permute := archName(c.Arch) == "llama"
	var ts []Tensor
	for _, p := range c.Layout() {
		data := params[p.Offset : p.Offset+p.Size]
		var name string
		switch p.Name {
		case "model.embed_tokens.weight":
			name = "token_embd.weight"
		case "model.norm.weight":
			name = "output_norm.weight"
		case "lm_head.weight":
			name = "output.weight"
		default:
			var ok bool
			if name, ok = blockTensorName(p.Name, "model.layers.", rename); !ok {
				return nil, fmt.Errorf("gguf: no llama.cpp name for %s parameter %s", c.Arch, p.Name)
			}
			if permute && strings.Contains(p.Name, ".self_attn.q_proj.") {
				data = permuteHeads(data, c.Heads, c.HeadDim)
			}
			if permute && strings.Contains(p.Name, ".self_attn.k_proj.") {
				data = permuteHeads(data, c.KVHeads, c.HeadDim)
			}
		}
		ts = append(ts, Tensor{Name: name, Shape: p.Shape, Data: data})
	}
	if c.RopeScaling != (model.RopeScaling{}) {
		ts = append(ts, Tensor{Name: "rope_freqs.weight", Shape: []int{c.HeadDim / 2}, Data: ropeFactors(c)})
	}
	return ts, nil
}

// permuteHeads returns a copy of w, heads·hd rows of a query or key
// projection (a weight's rows of any length, or a bias), with each head's
// rows reordered from Hugging Face's rotate-half layout (the first hd/2
// rows are the first of each rotated pair, the next hd/2 the second) to the
// interleaved pairs llama.cpp's llama architecture rotates: row
// h·hd + 2i + s of the result is row h·hd + s·hd/2 + i of w. This is
// convert_hf_to_gguf.py's LlamaModel.permute.
func permuteHeads(w []float32, heads, hd int) []float32 {
	cols := len(w) / (heads * hd)
	out := make([]float32, len(w))
	for h := range heads {
		for i := range hd / 2 {
			for s := range 2 {
				dst := (h*hd + 2*i + s) * cols
				src := (h*hd + s*hd/2 + i) * cols
				copy(out[dst:dst+cols], w[src:src+cols])
			}
		}
	}
	return out
}

// ropeFactors is Llama 3's rotary scaling as llama.cpp applies it: each
// frequency θ_j = RopeTheta^(−2j/HeadDim) is divided by factor j. As the
// converter computes them (LlamaModel.generate_extra_tensors), in float32
// from float64 arithmetic.
func ropeFactors(c model.Config) []float32 {
	rs := c.RopeScaling
	hd := c.HeadDim
	old := float64(rs.OriginalContext)
	lowWave, highWave := old/rs.LowFreqFactor, old/rs.HighFreqFactor
	f := make([]float32, hd/2)
	for j := range f {
		theta := 1 / math.Pow(c.RopeTheta, float64(2*j)/float64(hd))
		switch wave := 2 * math.Pi / theta; {
		case wave < highWave:
			f[j] = 1
		case wave > lowWave:
			f[j] = float32(rs.Factor)
		default:
			s := (old/wave - rs.LowFreqFactor) / (rs.HighFreqFactor - rs.LowFreqFactor)
			f[j] = float32(1 / ((1-s)/rs.Factor + s))
		}
	}
	return f
}

// Write writes checkpoint ck to w as a GGUF file (Build, then Encode).
func Write(w io.Writer, ck *model.Checkpoint, opt Options) error {
	kvs, tensors, err := Build(ck, opt)
	if err != nil {
		return err
	}
	return Encode(w, kvs, tensors)
}

// WriteFile writes checkpoint ck to path as a GGUF file, replacing it
// atomically (internal/atomicfile): on error path is left as it was and no
// temporary file remains.
func WriteFile(path string, ck *model.Checkpoint, opt Options) error {
	kvs, tensors, err := Build(ck, opt)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(path, 0o644, func(w io.Writer) error { return Encode(w, kvs, tensors) }); err != nil {
		return fmt.Errorf("gguf: writing %s: %w", path, err)
	}
	return nil
}
