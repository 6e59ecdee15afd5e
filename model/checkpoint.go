package model

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/braidml/braid/internal/atomicfile"
	"github.com/braidml/braid/internal/jsonerr"
	"github.com/braidml/braid/internal/safefile"
	"github.com/braidml/braid/kernels"
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
// Keys braid does not model (dropout rates, summary_*, use_cache, ...) are
// ignored when read and not written.
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
	LayerNormEpsilon   *float64 `json:"layer_norm_epsilon,omitempty"`
	ActivationFunction string   `json:"activation_function"`
	TieWordEmbeddings  *bool    `json:"tie_word_embeddings,omitempty"`
	BOSTokenID         *int     `json:"bos_token_id,omitempty"`
	EOSTokenID         *int     `json:"eos_token_id,omitempty"`
	TorchDtype         string   `json:"torch_dtype,omitempty"`
	// Attention variants GPT2Config offers; braid computes only the default
	// (scaled by 1/sqrt(head size), not by layer index).
	ScaleAttnWeights           *bool  `json:"scale_attn_weights,omitempty"`
	ScaleAttnByInverseLayerIdx bool   `json:"scale_attn_by_inverse_layer_idx,omitempty"`
	AddCrossAttention          bool   `json:"add_cross_attention,omitempty"`
	Tokenizer                  string `json:"braid_tokenizer,omitempty"`
}

// defaultTokenizer names the tokenizer of a config.json without a
// braid_tokenizer key: GPT-2's BPE for GPT-2's vocabulary size (50,000
// merges, 256 bytes and <|endoftext|>: 50257 ids) or one padded from it
// (nanoGPT's 50304), else bytes.
func defaultTokenizer(vocab int) string {
	if vocab >= GPT2Vocab { // GPT-2's 50257, or a vocabulary padded from it (50304)
		return "gpt2"
	}
	return "byte"
}

// MaxConfigBytes bounds config.json; real ones are under 2 kB.
const MaxConfigBytes = 1 << 20

// MaxWeightsBytes bounds model.safetensors (GPT-2 XL in float32 is 6 GB).
const MaxWeightsBytes = 64 << 30

// Checkpoint is a model's config, tokenizer and flat parameters as read from
// (or written to) a directory.
type Checkpoint struct {
	Config    Config
	Tokenizer Tokenizer
	Params    []float32 // flat, in Config.Layout order
	// Format is how the weights were stored where they were read from:
	// SaveCheckpointAs with it writes them back in the same dtype and
	// sharding.
	Format WeightsFormat
}

// WeightsFormat is how a checkpoint's weights are stored. The zero value is
// braid's own: one F32 model.safetensors.
type WeightsFormat struct {
	// Dtype is F32 (or empty), F16 or BF16. Read from a checkpoint, it is
	// the dtype all its parameters share, or F32 if they are F64 or of
	// mixed dtypes (F32 holds every F16 and BF16 value exactly).
	Dtype safetensors.Dtype
	// MaxShardBytes > 0 splits the weights into Hugging Face shards of at
	// most this many bytes of tensor data each, listed by
	// model.safetensors.index.json (safetensors.WriteDir); 0 writes one
	// model.safetensors. Read from a sharded checkpoint, it is its largest
	// shard's (safetensors.Set.MaxShardBytes).
	MaxShardBytes int64
}

// SaveCheckpoint writes params of a model with config c into dir (created if
// needed) as model.safetensors and config.json in Hugging Face GPT-2's layout:
// tensor names from Config.Layout and linear weights transposed to Conv1D's
// (in, out); for the Llama family in Hugging Face's layout of its
// architecture (llama_hf.go), nothing transposed; and the files of a
// FileTokenizer (tokenizer.json, ...) beside them. Each file is replaced
// atomically (temp file, fsync, rename).
func SaveCheckpoint(dir string, c Config, tok Tokenizer, params []float32) error {
	return SaveCheckpointAs(dir, c, tok, params, WeightsFormat{})
}

// SaveCheckpointAs is SaveCheckpoint writing the weights in format f: F16
// or BF16 rounds every parameter to nearest, ties to even, and config.json's
// torch_dtype says which; MaxShardBytes > 0 shards them as
// safetensors.WriteDir does, which replaces a checkpoint of either layout in
// dir only once every new file is written.
func SaveCheckpointAs(dir string, c Config, tok Tokenizer, params []float32, f WeightsFormat) error {
	if err := c.Validate(); err != nil {
		return err
	}
	torchDtype, ok := torchDtypes[f.Dtype]
	if !ok {
		return fmt.Errorf("model: SaveCheckpointAs: WeightsFormat.Dtype %q, want F32, F16 or BF16", f.Dtype)
	}
	if f.Dtype == "" {
		f.Dtype = safetensors.F32
	}
	if len(params) != c.NumParams() {
		return fmt.Errorf("model: SaveCheckpoint: %d parameters, config needs %d", len(params), c.NumParams())
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("model: checkpoint directory: %w", err)
	}
	layout := c.Layout()
	tensors := make([]safetensors.Tensor, 0, len(layout))
	var scratch []float32 // FloatTensor copies out of it
	for _, p := range layout {
		w := params[p.Offset : p.Offset+p.Size]
		shape := p.Shape
		if p.Linear { // (out, in) → Conv1D (in, out)
			scratch = slices.Grow(scratch[:0], p.Size)[:p.Size]
			transposeInto(scratch, w, p.Shape[0], p.Shape[1])
			w, shape = scratch, []int{p.Shape[1], p.Shape[0]}
		}
		tensors = append(tensors, safetensors.FloatTensor(p.Name, f.Dtype, shape, w))
	}
	if err := safetensors.WriteDir(dir, tensors, map[string]string{"format": "pt"}, f.MaxShardBytes); err != nil {
		return err
	}
	if ft, ok := tok.(FileTokenizer); ok {
		for name, b := range ft.Files() {
			if name != filepath.Base(name) || name == WeightsFile || name == ConfigFile {
				return fmt.Errorf("model: SaveCheckpoint: tokenizer %s has a file named %q", tok.Name(), name)
			}
			if err := WriteFileAtomic(filepath.Join(dir, name), b, 0o644); err != nil {
				return err
			}
		}
	}
	if c.llamaFamily() {
		js, err := encodeLlamaConfig(c, tok, torchDtype)
		if err != nil {
			return err
		}
		return WriteFileAtomic(filepath.Join(dir, ConfigFile), js, 0o644)
	}
	tie, eps, eot := true, float64(kernels.LayerNormEps), int(tok.EOT())
	cfg := hfConfig{
		ModelType: "gpt2", Architectures: []string{"GPT2LMHeadModel"},
		VocabSize: c.Vocab, NPositions: c.Context, NCtx: c.Context, NEmbd: c.Dim, NLayer: c.Layers, NHead: c.Heads,
		LayerNormEpsilon: &eps, ActivationFunction: "gelu_new", TieWordEmbeddings: &tie,
		BOSTokenID: &eot, EOSTokenID: &eot, TorchDtype: torchDtype, Tokenizer: tok.Name(),
	}
	js, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	return WriteFileAtomic(filepath.Join(dir, ConfigFile), append(js, '\n'), 0o644)
}

// torchDtypes maps the dtypes SaveCheckpointAs writes to config.json's
// torch_dtype.
var torchDtypes = map[safetensors.Dtype]string{
	"": "float32", safetensors.F32: "float32", safetensors.F16: "float16", safetensors.BF16: "bfloat16",
}

// NarrowDtype returns the 16-bit dtype a model's config.json (its bytes)
// says the weights are stored in, by torch_dtype ("bfloat16" or
// "float16"), for writing a model derived from it in the same dtype; ok is
// false for float32, no torch_dtype, or a config that is not JSON.
func NarrowDtype(configJSON []byte) (d safetensors.Dtype, ok bool) {
	var cfg struct {
		TorchDtype string `json:"torch_dtype"`
	}
	if json.Unmarshal(configJSON, &cfg) != nil {
		return "", false
	}
	for d, name := range torchDtypes {
		if name == cfg.TorchDtype && (d == safetensors.F16 || d == safetensors.BF16) {
			return d, true
		}
	}
	return "", false
}

// ReadConfig reads and validates dir/config.json. Keys that would make a
// GPT-2 compute something braid does not (another activation, n_inner other
// than 4·n_embd, layer_norm_epsilon other than kernels.LayerNormEps, untied
// embeddings, unscaled or layer-scaled attention, cross-attention) are errors
// naming the key. A model_type of the Llama family (llama, mistral, qwen2)
// is read as decodeLlamaConfig says. The tokenizer is LoadTokenizer's: the one tokenizer.json
// describes where dir has one and braid_tokenizer names no built-in one,
// else "gpt2" for vocab_size 50257 and "byte" otherwise.
//
// The file is opened once and must be a regular file of at most
// MaxConfigBytes (internal/safefile): a device, FIFO or directory is
// refused before it is read.
func ReadConfig(dir string) (Config, Tokenizer, error) {
	path := filepath.Join(dir, ConfigFile)
	b, err := safefile.ReadFile(path, MaxConfigBytes)
	if err != nil {
		return Config{}, nil, fmt.Errorf("model: checkpoint config: %w", err)
	}
	c, name, err := decodeConfig(b, path)
	if err != nil {
		return Config{}, nil, err
	}
	tok, err := dirTokenizer(dir, name, c.Vocab)
	if err != nil {
		return Config{}, nil, err
	}
	if err := checkTokenizer(c, tok, path); err != nil {
		return Config{}, nil, err
	}
	return c, tok, nil
}

// DecodeConfig decodes and validates config.json's bytes as ReadConfig
// does; name labels the errors (a path, or an object's hash). Errors name
// the key at fault but quote none of the bytes that are not JSON, so that
// decoding a file someone else chose tells them nothing of its content. It
// never panics.
//
// DecodeConfig has only config.json: a braid_tokenizer that names a
// tokenizer.json's tokenizer (see LoadTokenizer) is an error.
func DecodeConfig(b []byte, path string) (Config, Tokenizer, error) {
	c, name, err := decodeConfig(b, path)
	if err != nil {
		return Config{}, nil, err
	}
	if name == "" {
		name = defaultTokenizer(c.Vocab)
	}
	tok, err := TokenizerByName(name)
	if err != nil {
		return Config{}, nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := checkTokenizer(c, tok, path); err != nil {
		return Config{}, nil, err
	}
	return c, tok, nil
}

// decodeConfig decodes and validates config.json's bytes and returns its
// braid_tokenizer ("" without one).
func decodeConfig(b []byte, path string) (Config, string, error) {
	if len(b) > MaxConfigBytes {
		return Config{}, "", fmt.Errorf("%w: %s: %d bytes, more than the %d a config may have", ErrCheckpoint, path, len(b), MaxConfigBytes)
	}
	if arch, ok := llamaModelType(b); ok {
		return decodeLlamaConfig(b, arch, path)
	}
	var hc hfConfig
	if err := json.Unmarshal(b, &hc); err != nil {
		return Config{}, "", fmt.Errorf("%w: %s: not a JSON config: %s", ErrCheckpoint, path, jsonerr.Problem(err))
	}
	if hc.ModelType != "" && hc.ModelType != "gpt2" {
		return Config{}, "", fmt.Errorf("%w: %s: model_type %q, braid reads gpt2, llama, mistral and qwen2", ErrCheckpoint, path, hc.ModelType)
	}
	if hc.NInner != nil && *hc.NInner != 4*hc.NEmbd {
		return Config{}, "", fmt.Errorf("%w: %s: n_inner = %d, braid supports only 4·n_embd", ErrCheckpoint, path, *hc.NInner)
	}
	if hc.ActivationFunction != "" && hc.ActivationFunction != "gelu_new" && hc.ActivationFunction != "gelu_pytorch_tanh" {
		return Config{}, "", fmt.Errorf("%w: %s: activation_function %q, braid implements the tanh GELU (gelu_new)", ErrCheckpoint, path, hc.ActivationFunction)
	}
	if hc.TieWordEmbeddings != nil && !*hc.TieWordEmbeddings {
		return Config{}, "", fmt.Errorf("%w: %s: untied word embeddings are not supported", ErrCheckpoint, path)
	}
	if hc.LayerNormEpsilon != nil && *hc.LayerNormEpsilon != kernels.LayerNormEps {
		return Config{}, "", fmt.Errorf("%w: %s: layer_norm_epsilon = %g, braid's LayerNorm uses %g", ErrCheckpoint, path, *hc.LayerNormEpsilon, kernels.LayerNormEps)
	}
	if hc.ScaleAttnWeights != nil && !*hc.ScaleAttnWeights {
		return Config{}, "", fmt.Errorf("%w: %s: scale_attn_weights = false, braid always scales attention by 1/sqrt(head size)", ErrCheckpoint, path)
	}
	if hc.ScaleAttnByInverseLayerIdx {
		return Config{}, "", fmt.Errorf("%w: %s: scale_attn_by_inverse_layer_idx = true is not supported", ErrCheckpoint, path)
	}
	if hc.AddCrossAttention {
		return Config{}, "", fmt.Errorf("%w: %s: add_cross_attention = true is not supported", ErrCheckpoint, path)
	}
	c := Config{Vocab: hc.VocabSize, Context: hc.NPositions, Dim: hc.NEmbd, Layers: hc.NLayer, Heads: hc.NHead}
	if err := c.Validate(); err != nil {
		return Config{}, "", fmt.Errorf("%s: %w", path, err)
	}
	return c, hc.Tokenizer, nil
}

// checkTokenizer checks that tok's ids fit the model's vocabulary.
func checkTokenizer(c Config, tok Tokenizer, path string) error {
	if tok.Vocab() > c.Vocab {
		return fmt.Errorf("%w: %s: tokenizer %s has %d ids but vocab_size is %d", ErrCheckpoint, path, tok.Name(), tok.Vocab(), c.Vocab)
	}
	return nil
}

// LoadCheckpoint reads a checkpoint directory written by SaveCheckpoint or
// by Hugging Face (config.json of a GPT-2 or of the Llama family, and
// model.safetensors, or shards listed by model.safetensors.index.json, read
// with safetensors.OpenDir and checked as it checks them). F32, F16, BF16
// and F64 weights are read (and rounded to float32), and Checkpoint.Format
// records their dtype and sharding; a "transformer." name prefix is
// accepted (the Llama family: names with or without "model."). Besides the
// parameters, a file may hold only the buffers GPT-2 files carry: the
// causal masks h.{i}.attn.bias and h.{i}.attn.masked_bias of existing
// layers (ignored; braid's attention is always causal; for the Llama family
// the rotary inverse frequencies model.layers.{i}.self_attn.rotary_emb.inv_freq
// of older files, which braid computes from config.json) and, for a tied
// head, lm_head.weight, which must equal the token embedding. Every other
// problem is an error wrapping ErrCheckpoint that names the file and the
// tensor: a malformed safetensors file (header length, offsets, dtype), a
// parameter missing, present twice, of a non-float dtype or of a shape
// config.json does not imply, an unexpected tensor, or an lm_head.weight
// that differs from a tied embedding.
//
// Each file is opened once and must be a regular file within
// MaxConfigBytes and safetensors.MaxFileBytes (internal/safefile); a shard
// may not be a symbolic link.
//
// Memory: the weights are read one tensor at a time (safetensors.Set.Each)
// and converted straight into the flat float32 parameters, so the peak is
// those parameters (4 bytes each) plus the largest tensor's bytes as
// stored, one float32 copy of the largest linear weight (to transpose it),
// a 1 MiB read buffer and, if the files hold one, a tied lm_head.weight as
// float32; never the files' bytes. A BF16 checkpoint of 1.1B parameters
// (2.2 GB in five shards) loads at 4.6 GB peak RSS, its parameters 4.45 GB.
func LoadCheckpoint(dir string) (*Checkpoint, error) {
	ck, _, err := loadCheckpoint(dir, holdNever)
	return ck, err
}

// LoadCheckpointHeld is LoadCheckpoint for the frozen base of a LoRA run:
// a Llama-family checkpoint stored in BF16 (or, with round, in any dtype)
// is read straight into a HeldBase for NewFrozenBF16From — its matrices'
// bf16 bits as they are (or rounded to bf16), its vectors in float32 —
// and the Checkpoint has no Params; any other comes back as LoadCheckpoint
// returns it, and a nil HeldBase. The checks are LoadCheckpoint's. The
// peak memory is then the base in bf16 (2 bytes a weight) plus the largest
// tensor's bytes as stored: a Llama-3.2-1B never exists in float32.
func LoadCheckpointHeld(dir string, round bool) (*Checkpoint, *HeldBase, error) {
	mode := holdIfBF16
	if round {
		mode = holdAlways
	}
	return loadCheckpoint(dir, mode)
}

// A holdMode says where loadWeights puts the weights: float32 Params, or
// a HeldBase.
type holdMode int

const (
	holdNever  holdMode = iota // Params
	holdIfBF16                 // a HeldBase if the family is Llama's and the weights are all BF16
	holdAlways                 // a HeldBase for the Llama family, rounding other dtypes
)

func loadCheckpoint(dir string, hold holdMode) (*Checkpoint, *HeldBase, error) {
	c, tok, err := ReadConfig(dir)
	if err != nil {
		return nil, nil, err
	}
	set, err := safetensors.OpenDir(dir)
	if err != nil {
		return nil, nil, weightsError(err)
	}
	src := weightSource{name: filepath.Join(dir, WeightsFile), each: set.Each, shards: set.MaxShardBytes()}
	if set.Index != nil {
		src.name = filepath.Join(dir, safetensors.IndexFile)
	}
	for _, t := range set.Tensors {
		src.tensors = append(src.tensors, weightInfo{safetensors.Tensor{Name: t.Name, Dtype: t.Dtype, Shape: t.Shape}, filepath.Join(dir, t.File)})
	}
	return loadWeights(c, tok, src, hold)
}

// tensorName returns the Layout name of a tensor named name in a
// checkpoint file: GPT-2's without a "transformer." prefix, the Llama
// family's as llamaTensorName says.
func (c Config) tensorName(name string) string {
	if c.llamaFamily() {
		return llamaTensorName(name)
	}
	return strings.TrimPrefix(name, "transformer.")
}

// weightsError wraps an error reading the weights' files: an I/O error as
// is, anything about their content in ErrCheckpoint.
func weightsError(err error) error {
	if errors.Is(err, ErrCheckpoint) {
		return err
	}
	if _, ok := errors.AsType[*fs.PathError](err); ok {
		return fmt.Errorf("model: checkpoint weights: %w", err)
	}
	return fmt.Errorf("%w: %w", ErrCheckpoint, err)
}

// DecodeCheckpoint decodes a checkpoint from the bytes of its two files,
// checked as LoadCheckpoint checks them; configName and weightsName label
// the errors (paths, or objects' hashes). It never panics.
func DecodeCheckpoint(configJSON []byte, configName string, weights []byte, weightsName string) (*Checkpoint, error) {
	c, tok, err := DecodeConfig(configJSON, configName)
	if err != nil {
		return nil, err
	}
	return decodeWeights(c, tok, weights, weightsName)
}

// decodeWeights decodes model.safetensors' bytes b (named path in errors)
// for config c.
func decodeWeights(c Config, tok Tokenizer, b []byte, path string) (*Checkpoint, error) {
	f, err := safetensors.Decode(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrCheckpoint, path, err) // names the tensor
	}
	src := weightSource{name: path, each: func(fn func(*safetensors.Tensor) error) error {
		for i := range f.Tensors {
			if err := fn(&f.Tensors[i]); err != nil {
				return err
			}
		}
		return nil
	}}
	for _, t := range f.Tensors {
		src.tensors = append(src.tensors, weightInfo{t, path})
	}
	ck, _, err := loadWeights(c, tok, src, holdNever)
	return ck, err
}

// weightSource is a checkpoint's tensors, one file's or a sharded set's:
// each one's description, checked before anything is allocated, and a way
// to read them one at a time.
type weightSource struct {
	name    string // the file, or the index of the files, for errors about the set
	tensors []weightInfo
	each    func(fn func(t *safetensors.Tensor) error) error // in the order of tensors; t.Data valid during fn
	shards  int64                                            // WeightsFormat.MaxShardBytes
}

// weightInfo is one tensor's name, dtype and shape (its Data is not used)
// and the file holding it, for errors.
type weightInfo struct {
	safetensors.Tensor
	file string
}

// loadWeights reads the parameters of a model of config c from src: into
// the Checkpoint's Params, or, as hold says, into a HeldBase.
func loadWeights(c Config, tok Tokenizer, src weightSource, hold holdMode) (*Checkpoint, *HeldBase, error) {
	bad := func(file, format string, args ...any) error {
		return fmt.Errorf("%w: %s: "+format, append([]any{ErrCheckpoint, file}, args...)...)
	}
	layout := c.Layout()
	index := make(map[string]int, len(layout)) // parameter name → layout position
	for i, p := range layout {
		index[p.Name] = i
	}
	buffer := make(map[string]bool, 2*c.Layers)
	for l := 0; l < c.Layers; l++ {
		if c.llamaFamily() {
			buffer[fmt.Sprintf("model.layers.%d.self_attn.rotary_emb.inv_freq", l)] = true
			continue
		}
		buffer[fmt.Sprintf("h.%d.attn.bias", l)] = true
		buffer[fmt.Sprintf("h.%d.attn.masked_bias", l)] = true
	}
	// Check every tensor before allocating: a config can describe a huge
	// model, but only files that hold all of its tensors get memory.
	found := make([]*weightInfo, len(layout))
	var lmHead *weightInfo
	var unexpected []string
	unexpectedFile := ""
	for i := range src.tensors {
		t := &src.tensors[i]
		name := c.tensorName(t.Name)
		k, isParam := index[name]
		switch {
		case isParam:
			if found[k] != nil {
				return nil, nil, bad(t.file, "tensor %s appears twice (as %s and %s)", name, found[k].Name, t.Name)
			}
			found[k] = t
		case name == "lm_head.weight":
			if lmHead != nil {
				return nil, nil, bad(t.file, "tensor lm_head.weight appears twice (as %s and %s)", lmHead.Name, t.Name)
			}
			lmHead = t
		case buffer[name]:
		default:
			if unexpected == nil {
				unexpectedFile = t.file
			}
			unexpected = append(unexpected, t.Name)
		}
	}
	if len(unexpected) > 0 {
		more := ""
		switch n := len(unexpected) - 1; {
		case n > 3:
			more = fmt.Sprintf(" (and %d more: %s, ...)", n, strings.Join(unexpected[1:4], ", "))
		case n > 0:
			more = fmt.Sprintf(" (and %d more: %s)", n, strings.Join(unexpected[1:], ", "))
		}
		if c.llamaFamily() {
			return nil, nil, bad(unexpectedFile, "unexpected tensor %s%s: not a parameter of the %s config.json describes (num_hidden_layers = %d, tie_word_embeddings = %v)",
				unexpected[0], more, c.Arch, c.Layers, !c.Untied)
		}
		return nil, nil, bad(unexpectedFile, "unexpected tensor %s%s: neither a parameter of the GPT-2 config.json describes (n_layer = %d) nor a known GPT-2 buffer",
			unexpected[0], more, c.Layers)
	}
	for i, p := range layout {
		t := found[i]
		if t == nil {
			return nil, nil, bad(src.name, "tensor %s is missing", p.Name)
		}
		if !isFloat(t.Dtype) {
			return nil, nil, bad(t.file, "tensor %s has dtype %s, want F32, F16, BF16 or F64", p.Name, t.Dtype)
		}
		want := p.Shape
		if p.Linear {
			want = []int{p.Shape[1], p.Shape[0]}
		}
		if !equalShape(t.Shape, want) {
			return nil, nil, bad(t.file, "tensor %s has shape %v, config.json implies %v", p.Name, t.Shape, want)
		}
	}
	untied := "untied output heads are not supported"
	if c.llamaFamily() {
		untied = "config.json ties it to the embedding (tie_word_embeddings)"
	}
	if lmHead != nil {
		if !isFloat(lmHead.Dtype) {
			return nil, nil, bad(lmHead.file, "tensor lm_head.weight has dtype %s, want F32, F16, BF16 or F64", lmHead.Dtype)
		}
		if !equalShape(lmHead.Shape, layout[0].Shape) {
			return nil, nil, bad(lmHead.file, "tensor lm_head.weight has shape %v, %s %v: %s", lmHead.Shape, layout[0].Name, layout[0].Shape, untied)
		}
	}
	format := WeightsFormat{Dtype: found[0].Dtype, MaxShardBytes: src.shards}
	for _, t := range found {
		if t.Dtype != format.Dtype || t.Dtype == safetensors.F64 {
			format.Dtype = safetensors.F32 // holds every F16 and BF16 value
		}
	}
	var held *HeldBase
	if c.llamaFamily() && (hold == holdAlways || hold == holdIfBF16 && format.Dtype == safetensors.BF16) {
		held = newHeldBase(c)
	}
	// Convert each tensor as it is read, straight into the parameters (a
	// linear weight through one scratch buffer, to transpose it), or into
	// the held base.
	var params, scratch, head []float32
	if held == nil {
		params = make([]float32, c.NumParams())
	}
	for _, p := range layout {
		if p.Linear && p.Size > len(scratch) {
			scratch = make([]float32, p.Size)
		}
	}
	err := src.each(func(t *safetensors.Tensor) error {
		name := c.tensorName(t.Name)
		k, isParam := index[name]
		var err error
		switch {
		case name == "lm_head.weight" && !isParam: // tied
			head = make([]float32, layout[0].Size)
			if err = t.CopyFloat32s(head); err != nil {
				return bad(lmHead.file, "tensor lm_head.weight: %v", err)
			}
		case isParam && held != nil:
			err = held.setTensor(k, layout[k], t, &scratch)
		case isParam && layout[k].Linear:
			p := layout[k]
			if err = t.CopyFloat32s(scratch[:p.Size]); err == nil {
				transposeInto(params[p.Offset:p.Offset+p.Size], scratch[:p.Size], p.Shape[1], p.Shape[0])
			}
		case isParam:
			p := layout[k]
			err = t.CopyFloat32s(params[p.Offset : p.Offset+p.Size])
		}
		if err != nil {
			return bad(found[k].file, "tensor %s: %v", name, err)
		}
		return nil
	})
	if err != nil {
		return nil, nil, weightsError(err)
	}
	if head != nil {
		wte := func(i int) float32 { return params[layout[0].Offset+i] }
		if held != nil {
			wte = held.embedding // the same rounding as the embedding's
			for i, v := range head {
				head[i] = safetensors.BF16ToFloat32(safetensors.BF16FromFloat32(v))
			}
		}
		for i := range head {
			if math.Float32bits(head[i]) != math.Float32bits(wte(i)) { // a tied head is a bitwise copy
				return nil, nil, bad(lmHead.file, "tensor lm_head.weight differs from %s at element %d (%g, %g): %s", layout[0].Name, i, head[i], wte(i), untied)
			}
		}
	}
	return &Checkpoint{Config: c, Tokenizer: tok, Params: params, Format: format}, held, nil
}

// isFloat reports whether Tensor.Float32s converts dtype d.
func isFloat(d safetensors.Dtype) bool {
	switch d {
	case safetensors.F32, safetensors.F16, safetensors.BF16, safetensors.F64:
		return true
	}
	return false
}

// Load reads a checkpoint and returns a model for inference (NewInference)
// holding its weights, with activations for batches of up to maxB × maxT
// tokens (maxT 0: the full context).
func Load(dir string, maxB, maxT int) (*Model, Tokenizer, error) {
	ck, err := LoadCheckpoint(dir)
	if err != nil {
		return nil, nil, err
	}
	if maxT == 0 || maxT > ck.Config.Context {
		maxT = ck.Config.Context
	}
	m, err := NewInference(ck.Config, maxB, maxT)
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

// transposeInto writes the (cols, rows) transpose of the (rows, cols)
// matrix w into out, in 16×16 tiles, each output row's run written
// contiguously: 3 to 8 times faster than a row-by-row loop on GPT-2's
// matrices, whose strides otherwise thrash the TLB and cache sets.
func transposeInto(out, w []float32, rows, cols int) {
	const tile = 16
	for c0 := 0; c0 < cols; c0 += tile {
		c1 := min(c0+tile, cols)
		for r0 := 0; r0 < rows; r0 += tile {
			r1 := min(r0+tile, rows)
			for c := c0; c < c1; c++ {
				o := out[c*rows+r0 : c*rows+r1]
				for i := range o {
					o[i] = w[(r0+i)*cols+c]
				}
			}
		}
	}
}

// WriteFileAtomic replaces path with data: it writes a temporary file in the
// same directory, fsyncs it, renames it over path and fsyncs the directory
// (best effort). On error no partial file is left at path.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	if err := atomicfile.WriteBytes(path, data, perm); err != nil && !errors.Is(err, atomicfile.ErrSyncDir) {
		return fmt.Errorf("model: write %s: %w", path, err)
	}
	return nil
}
