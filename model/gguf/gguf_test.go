package gguf_test

// Every file here is written by package gguf and read back by an
// independent reader, github.com/gpustack/gguf-parser-go (which refuses
// what llama.cpp refuses to load), against what llama.cpp's
// convert_hf_to_gguf.py writes for the same Hugging Face model: tensor
// names from gguf-py's tensor map, shapes innermost first, the types it
// chooses, the general.*, <arch>.* and tokenizer.* keys. The tensors'
// bytes are read from the offsets the reader reports and decoded here.

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	parser "github.com/gpustack/gguf-parser-go"

	"github.com/braidml/braid/model"
	"github.com/braidml/braid/model/gguf"
	"github.com/braidml/braid/model/hftok"
	"github.com/braidml/braid/model/safetensors"
)

// gguFile is a written file as the independent reader sees it, with its
// bytes for the tensor data.
type ggufFile struct {
	*parser.GGUFFile
	b []byte
}

// writeAndParse writes ck as type typ to a temporary file and parses it.
func writeAndParse(t *testing.T, ck *model.Checkpoint, typ gguf.Type) ggufFile {
	t.Helper()
	path := filepath.Join(t.TempDir(), "model.gguf")
	if err := gguf.WriteFile(path, ck, gguf.Options{Type: typ, Name: "tiny"}); err != nil {
		t.Fatal(err)
	}
	f, err := parser.ParseGGUFFile(path)
	if err != nil {
		t.Fatalf("gguf-parser-go refuses the file: %v", err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return ggufFile{f, b}
}

func (f ggufFile) kv(t *testing.T, key string) parser.GGUFMetadataKV {
	t.Helper()
	v, ok := f.Header.MetadataKV.Get(key)
	if !ok {
		t.Fatalf("no metadata key %s", key)
	}
	return v
}

func (f ggufFile) u32(t *testing.T, key string) uint32 {
	t.Helper()
	v := f.kv(t, key)
	if v.ValueType != parser.GGUFMetadataValueTypeUint32 {
		t.Fatalf("%s is a %v, llama.cpp reads a uint32", key, v.ValueType)
	}
	return v.ValueUint32()
}

func (f ggufFile) f32(t *testing.T, key string) float32 {
	t.Helper()
	v := f.kv(t, key)
	if v.ValueType != parser.GGUFMetadataValueTypeFloat32 {
		t.Fatalf("%s is a %v, llama.cpp reads a float32", key, v.ValueType)
	}
	return v.ValueFloat32()
}

func (f ggufFile) str(t *testing.T, key string) string {
	t.Helper()
	v := f.kv(t, key)
	if v.ValueType != parser.GGUFMetadataValueTypeString {
		t.Fatalf("%s is a %v, want a string", key, v.ValueType)
	}
	return v.ValueString()
}

// tensor returns a tensor's description and its values decoded to
// float32, and for Q8_0 each value's block scale.
func (f ggufFile) tensor(t *testing.T, name string) (parser.GGUFTensorInfo, []float32, []float32) {
	t.Helper()
	info, ok := f.TensorInfos.Get(name)
	if !ok {
		t.Fatalf("no tensor %s", name)
	}
	if (f.TensorDataStartOffset+int64(info.Offset))%gguf.Alignment != 0 {
		t.Errorf("%s starts at %d, not a multiple of %d", name, f.TensorDataStartOffset+int64(info.Offset), gguf.Alignment)
	}
	n := 1
	for _, d := range info.Dimensions {
		n *= int(d)
	}
	b := f.b[f.TensorDataStartOffset+int64(info.Offset):]
	vals := make([]float32, n)
	var scales []float32
	switch info.Type {
	case parser.GGMLTypeF32:
		for i := range vals {
			vals[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		}
	case parser.GGMLTypeF16:
		for i := range vals {
			vals[i] = safetensors.F16ToFloat32(binary.LittleEndian.Uint16(b[2*i:]))
		}
	case parser.GGMLTypeBF16:
		for i := range vals {
			vals[i] = safetensors.BF16ToFloat32(binary.LittleEndian.Uint16(b[2*i:]))
		}
	case parser.GGMLTypeQ8_0:
		scales = make([]float32, n)
		for blk := 0; blk < n/32; blk++ {
			d := safetensors.F16ToFloat32(binary.LittleEndian.Uint16(b[34*blk:]))
			for j := range 32 {
				vals[32*blk+j] = float32(int8(b[34*blk+2+j])) * d
				scales[32*blk+j] = d
			}
		}
	default:
		t.Fatalf("%s has type %v", name, info.Type)
	}
	return info, vals, scales
}

// wantTensor is a tensor as the converter writes it.
type wantTensor struct {
	name  string
	dims  []uint64 // innermost first
	typ   parser.GGMLType
	value func(i int) float32 // the original value at flat index i, in the file's order
}

// checkTensors checks that f holds exactly the tensors want, and each
// value: F32 exactly, F16 and BF16 as the original rounded to nearest even,
// Q8_0 within half its block's scale.
func checkTensors(t *testing.T, f ggufFile, want []wantTensor) {
	t.Helper()
	var names []string
	for _, ti := range f.TensorInfos {
		names = append(names, ti.Name)
	}
	var wantNames []string
	for _, w := range want {
		wantNames = append(wantNames, w.name)
	}
	if !slices.Equal(names, wantNames) {
		t.Fatalf("tensors\n%v\nwant\n%v", names, wantNames)
	}
	for _, w := range want {
		info, vals, scales := f.tensor(t, w.name)
		if !slices.Equal(info.Dimensions, w.dims) || info.Type != w.typ {
			t.Errorf("%s: dims %v type %v, want %v %v", w.name, info.Dimensions, info.Type, w.dims, w.typ)
			continue
		}
		worst := 0.0
		for i, got := range vals {
			x := w.value(i)
			var ok bool
			switch info.Type {
			case parser.GGMLTypeF32:
				ok = got == x
			case parser.GGMLTypeF16:
				ok = got == safetensors.F16ToFloat32(safetensors.F16FromFloat32(x))
			case parser.GGMLTypeBF16:
				ok = got == safetensors.BF16ToFloat32(safetensors.BF16FromFloat32(x))
			case parser.GGMLTypeQ8_0:
				err := math.Abs(float64(got) - float64(x))
				worst = max(worst, err/float64(scales[i]))
				ok = err <= float64(scales[i])/2
			}
			if !ok {
				t.Fatalf("%s[%d] = %v in the file, original %v (type %v)", w.name, i, got, x, info.Type)
			}
		}
		if info.Type == parser.GGMLTypeQ8_0 {
			t.Logf("%s: q8_0 worst |error|/scale %.4f (bound 0.5)", w.name, worst)
		}
	}
}

// param returns a checkpoint parameter's values by Hugging Face name.
func param(ck *model.Checkpoint, name string) []float32 {
	for _, p := range ck.Config.Layout() {
		if p.Name == name {
			return ck.Params[p.Offset : p.Offset+p.Size]
		}
	}
	panic("no parameter " + name)
}

// matType is the type a matrix of rows of n values gets in a file of
// type typ: Q8_0 falls back to F16 where n is not whole blocks.
func matType(typ gguf.Type, n int) parser.GGMLType {
	if typ == gguf.Q8_0 && n%32 != 0 {
		return parser.GGMLTypeF16
	}
	return parser.GGMLType(typ)
}

var allTypes = []gguf.Type{gguf.F32, gguf.F16, gguf.BF16, gguf.Q8_0}

// gpt2Want lists a GPT-2's tensors as GPT2Model in convert_hf_to_gguf.py
// writes them: gguf-py's names, Conv1D weights transposed to (out, in),
// which ggml records as (in, out), the tied head also as output.weight,
// vectors and the position table F32.
func gpt2Want(ck *model.Checkpoint, typ gguf.Type) []wantTensor {
	c := ck.Config
	C, V, T := uint64(c.Dim), uint64(c.Vocab), uint64(c.Context)
	at := func(name string) func(int) float32 {
		p := param(ck, name)
		return func(i int) float32 { return p[i] }
	}
	vec := func(name, hf string, n uint64) wantTensor {
		return wantTensor{name, []uint64{n}, parser.GGMLTypeF32, at(hf)}
	}
	mat := func(name, hf string, in, out uint64) wantTensor {
		return wantTensor{name, []uint64{in, out}, matType(typ, int(in)), at(hf)}
	}
	w := []wantTensor{
		mat("token_embd.weight", "wte.weight", C, V),
		{"position_embd.weight", []uint64{C, T}, parser.GGMLTypeF32, at("wpe.weight")},
	}
	for l := range c.Layers {
		b, h := fmt.Sprintf("blk.%d.", l), fmt.Sprintf("h.%d.", l)
		w = append(w,
			vec(b+"attn_norm.weight", h+"ln_1.weight", C), vec(b+"attn_norm.bias", h+"ln_1.bias", C),
			mat(b+"attn_qkv.weight", h+"attn.c_attn.weight", C, 3*C), vec(b+"attn_qkv.bias", h+"attn.c_attn.bias", 3*C),
			mat(b+"attn_output.weight", h+"attn.c_proj.weight", C, C), vec(b+"attn_output.bias", h+"attn.c_proj.bias", C),
			vec(b+"ffn_norm.weight", h+"ln_2.weight", C), vec(b+"ffn_norm.bias", h+"ln_2.bias", C),
			mat(b+"ffn_up.weight", h+"mlp.c_fc.weight", C, 4*C), vec(b+"ffn_up.bias", h+"mlp.c_fc.bias", 4*C),
			mat(b+"ffn_down.weight", h+"mlp.c_proj.weight", 4*C, C), vec(b+"ffn_down.bias", h+"mlp.c_proj.bias", C),
		)
	}
	return append(w,
		vec("output_norm.weight", "ln_f.weight", C), vec("output_norm.bias", "ln_f.bias", C),
		mat("output.weight", "wte.weight", C, V))
}

// TestGPT2 exports the Hugging Face GPT-2 fixture (n_embd 48: most rows
// are not whole Q8_0 blocks, the MLP's down projection's are) and the
// bundled base model in every type.
func TestGPT2(t *testing.T) {
	for _, dir := range []string{"../testdata/hf_tiny", "../../models/base-en"} {
		ck, err := model.LoadCheckpoint(dir)
		if err != nil {
			t.Fatal(err)
		}
		c := ck.Config
		for _, typ := range allTypes {
			t.Run(filepath.Base(dir)+"/"+typ.String(), func(t *testing.T) {
				f := writeAndParse(t, ck, typ)
				if f.Header.Version != parser.GGUFVersionV3 || f.Header.Magic != parser.GGUFMagicGGUFLe {
					t.Errorf("header %v version %v", f.Header.Magic, f.Header.Version)
				}
				checkTensors(t, f, gpt2Want(ck, typ))
				if got := f.str(t, "general.architecture"); got != "gpt2" {
					t.Errorf("general.architecture %q", got)
				}
				if got := f.u32(t, "general.alignment"); got != 32 {
					t.Errorf("general.alignment %d", got)
				}
				if got, want := f.u32(t, "general.file_type"), map[gguf.Type]uint32{gguf.F32: 0, gguf.F16: 1, gguf.Q8_0: 7, gguf.BF16: 32}[typ]; got != want {
					t.Errorf("general.file_type %d, want %d", got, want)
				}
				a := f.Architecture()
				if a.Architecture != "gpt2" || a.MaximumContextLength != uint64(c.Context) || a.EmbeddingLength != uint64(c.Dim) ||
					a.BlockCount != uint64(c.Layers) || a.AttentionHeadCount != uint64(c.Heads) ||
					!allEqual(a.FeedForwardLength, uint64(4*c.Dim)) || a.AttentionLayerNormEpsilon != 1e-5 {
					t.Errorf("architecture as the reader sees it: %s", archSummary(a))
				}
				checkByteTokenizer(t, f, c.Vocab)
			})
		}
	}
}

// checkByteTokenizer: braid's byte tokenizer is a byte-level BPE without
// merges, each byte spelled as GPT-2's bytes_to_unicode spells it,
// <|endoftext|> at 256 a control token, padding ids unused.
func checkByteTokenizer(t *testing.T, f ggufFile, vocab int) {
	t.Helper()
	if got := f.str(t, "tokenizer.ggml.model"); got != "gpt2" {
		t.Errorf("tokenizer.ggml.model %q", got)
	}
	tokens := f.kv(t, "tokenizer.ggml.tokens").ValueArray().ValuesString()
	types := f.kv(t, "tokenizer.ggml.token_type").ValueArray().ValuesInt32()
	if len(tokens) != vocab || len(types) != vocab {
		t.Fatalf("%d tokens, %d types, want %d", len(tokens), len(types), vocab)
	}
	// Spot checks of bytes_to_unicode: printable ASCII stands for itself,
	// space is Ġ (U+0120), newline Ċ (U+010A), 0x00 Ā (U+0100), 0xAD
	// (soft hyphen) Ń (U+0143), 0xFF ÿ.
	for b, want := range map[int]string{'A': "A", ' ': "Ġ", '\n': "Ċ", 0: "Ā", 0xAD: "Ń", 0xFF: "ÿ"} {
		if tokens[b] != want || types[b] != 1 {
			t.Errorf("byte %#x: token %q type %d, want %q normal", b, tokens[b], types[b], want)
		}
	}
	if tokens[256] != "<|endoftext|>" || types[256] != 3 {
		t.Errorf("id 256: %q type %d, want <|endoftext|> control", tokens[256], types[256])
	}
	for id := 257; id < vocab; id++ {
		if tokens[id] != fmt.Sprintf("[PAD%d]", id) || types[id] != 5 {
			t.Errorf("id %d: %q type %d, want [PAD%d] unused", id, tokens[id], types[id], id)
		}
	}
	if n := f.kv(t, "tokenizer.ggml.merges").ValueArray().Len; n != 0 {
		t.Errorf("%d merges, want none", n)
	}
	tk := f.Tokenizer()
	if tk.BOSTokenID != 256 || tk.EOSTokenID != 256 || tk.Model != "gpt2" {
		t.Errorf("tokenizer as the reader sees it: %+v", tk)
	}
	if got := f.str(t, "tokenizer.ggml.pre"); got != "gpt-2" {
		t.Errorf("tokenizer.ggml.pre %q", got)
	}
	if f.kv(t, "tokenizer.ggml.add_bos_token").ValueBool() {
		t.Error("add_bos_token true: GPT-2 does not frame a sequence")
	}
}

// TestGPT2Tokenizer exports a model with GPT-2's own tokenizer, padded to
// nanoGPT's 50304 ids: 50,000 merges recovered from tiktoken's ranks.
func TestGPT2Tokenizer(t *testing.T) {
	c := model.Config{Vocab: 50304, Context: 8, Dim: 32, Layers: 1, Heads: 2}
	ck := &model.Checkpoint{Config: c, Tokenizer: model.GPT2Tokenizer{}, Params: make([]float32, c.NumParams())}
	f := writeAndParse(t, ck, gguf.F16)
	tokens := f.kv(t, "tokenizer.ggml.tokens").ValueArray().ValuesString()
	types := f.kv(t, "tokenizer.ggml.token_type").ValueArray().ValuesInt32()
	merges := f.kv(t, "tokenizer.ggml.merges").ValueArray().ValuesString()
	if len(tokens) != 50304 || len(types) != 50304 || len(merges) != 50000 {
		t.Fatalf("%d tokens, %d types, %d merges; want 50304, 50304, 50000", len(tokens), len(types), len(merges))
	}
	// GPT-2's vocab.json and merges.txt, as Hugging Face ships them.
	for id, want := range map[int]string{0: "!", 198: "Ċ", 220: "Ġ", 256: "Ġt", 262: "Ġthe", 50255: "Ġgazed", 50256: "<|endoftext|>", 50257: "[PAD50257]"} {
		if tokens[id] != want {
			t.Errorf("token %d = %q, want %q", id, tokens[id], want)
		}
	}
	for i, want := range map[int]string{0: "Ġ t", 1: "Ġ a", 2: "h e", 6: "Ġt he", 49999: "Ġg azed"} {
		if merges[i] != want {
			t.Errorf("merge %d = %q, want %q", i, merges[i], want)
		}
	}
	if types[50255] != 1 || types[50256] != 3 || types[50303] != 5 {
		t.Errorf("types of 50255, 50256, 50303: %d %d %d, want normal, control, unused", types[50255], types[50256], types[50303])
	}
	if tk := f.Tokenizer(); tk.BOSTokenID != 50256 || tk.EOSTokenID != 50256 {
		t.Errorf("bos %d eos %d, want 50256", tk.BOSTokenID, tk.EOSTokenID)
	}
}

// llamaWant lists a Llama family model's tensors as LlamaModel (llama,
// mistral) and Qwen2Model in convert_hf_to_gguf.py write them: the llama
// architecture's attn_q and attn_k rows permuted (LlamaModel.permute:
// reshape(n_head, 2, hd/2, ...).swapaxes(1, 2)), qwen2's not.
func llamaWant(ck *model.Checkpoint, typ gguf.Type, permute bool) []wantTensor {
	c := ck.Config
	C, V, H := uint64(c.Dim), uint64(c.Vocab), uint64(c.Hidden)
	Q, K := uint64(c.Heads*c.HeadDim), uint64(c.KVHeads*c.HeadDim)
	at := func(name string) func(int) float32 {
		p := param(ck, name)
		return func(i int) float32 { return p[i] }
	}
	// permuted: the file's row r = h·hd + 2i + s is Hugging Face's row
	// h·hd + s·hd/2 + i.
	permuted := func(name string, cols int) func(int) float32 {
		p := param(ck, name)
		if !permute {
			return func(i int) float32 { return p[i] }
		}
		hd := c.HeadDim
		return func(i int) float32 {
			r, col := i/cols, i%cols
			h, within := r/hd, r%hd
			src := h*hd + (within%2)*hd/2 + within/2
			return p[src*cols+col]
		}
	}
	vec := func(name, hf string, n uint64) wantTensor {
		return wantTensor{name, []uint64{n}, parser.GGMLTypeF32, at(hf)}
	}
	mat := func(name, hf string, in, out uint64) wantTensor {
		return wantTensor{name, []uint64{in, out}, matType(typ, int(in)), at(hf)}
	}
	w := []wantTensor{mat("token_embd.weight", "model.embed_tokens.weight", C, V)}
	for l := range c.Layers {
		b, h := fmt.Sprintf("blk.%d.", l), fmt.Sprintf("model.layers.%d.", l)
		w = append(w,
			vec(b+"attn_norm.weight", h+"input_layernorm.weight", C),
			wantTensor{b + "attn_q.weight", []uint64{C, Q}, matType(typ, int(C)), permuted(h+"self_attn.q_proj.weight", int(C))},
			wantTensor{b + "attn_k.weight", []uint64{C, K}, matType(typ, int(C)), permuted(h+"self_attn.k_proj.weight", int(C))},
			mat(b+"attn_v.weight", h+"self_attn.v_proj.weight", C, K))
		if c.QKVBias() {
			w = append(w, vec(b+"attn_q.bias", h+"self_attn.q_proj.bias", Q), vec(b+"attn_k.bias", h+"self_attn.k_proj.bias", K),
				vec(b+"attn_v.bias", h+"self_attn.v_proj.bias", K))
		}
		w = append(w,
			mat(b+"attn_output.weight", h+"self_attn.o_proj.weight", Q, C),
			vec(b+"ffn_norm.weight", h+"post_attention_layernorm.weight", C),
			mat(b+"ffn_gate.weight", h+"mlp.gate_proj.weight", C, H),
			mat(b+"ffn_up.weight", h+"mlp.up_proj.weight", C, H),
			mat(b+"ffn_down.weight", h+"mlp.down_proj.weight", H, C))
	}
	w = append(w, vec("output_norm.weight", "model.norm.weight", C))
	if c.Untied {
		w = append(w, mat("output.weight", "lm_head.weight", C, V))
	}
	return w
}

// TestLlamaFamily exports the Llama, Mistral and Qwen2 fixtures in every
// type; all three also as 64-channel random models whose rows are whole
// Q8_0 blocks.
func TestLlamaFamily(t *testing.T) {
	type fixture struct {
		name string
		ck   *model.Checkpoint
	}
	var fixtures []fixture
	for _, dir := range []string{"llama_tiny", "mistral_tiny", "qwen2_tiny"} {
		ck, err := model.LoadCheckpoint(filepath.Join("..", "testdata", dir))
		if err != nil {
			t.Fatal(err)
		}
		fixtures = append(fixtures, fixture{dir, ck})
		wide := ck.Config
		wide.Dim, wide.Hidden = 64, 96
		if wide.Arch == model.ArchQwen2 {
			wide.HeadDim = 64 / wide.Heads
		}
		fixtures = append(fixtures, fixture{dir + "_wide", randomCheckpoint(t, wide, ck.Tokenizer, 1)})
	}
	for _, fx := range fixtures {
		c := fx.ck.Config
		arch := map[model.Arch]string{model.ArchLlama: "llama", model.ArchMistral: "llama", model.ArchQwen2: "qwen2"}[c.Arch]
		for _, typ := range allTypes {
			t.Run(fx.name+"/"+typ.String(), func(t *testing.T) {
				f := writeAndParse(t, fx.ck, typ)
				want := llamaWant(fx.ck, typ, arch == "llama")
				if c.RopeScaling != (model.RopeScaling{}) {
					want = append(want, wantTensor{"rope_freqs.weight", []uint64{uint64(c.HeadDim / 2)}, parser.GGMLTypeF32,
						func(i int) float32 { return ropeFactor(c, i) }})
				}
				checkTensors(t, f, want)
				a := f.Architecture()
				if a.Architecture != arch || a.EmbeddingLength != uint64(c.Dim) || a.BlockCount != uint64(c.Layers) ||
					a.AttentionHeadCount != uint64(c.Heads) || a.AttentionHeadCountKV != uint64(c.KVHeads) ||
					a.AttentionKeyLength != uint32(c.HeadDim) || a.AttentionValueLength != uint32(c.HeadDim) ||
					a.RoPEDimensionCount != uint64(c.HeadDim) || a.RoPEFrequencyBase != float32(c.RopeTheta) ||
					a.AttentionLayerNormRMSEpsilon != float32(c.NormEps) || a.MaximumContextLength != uint64(c.Context) ||
					!allEqual(a.FeedForwardLength, uint64(c.Hidden)) || a.VocabularyLength != uint64(c.Vocab) {
					t.Errorf("architecture as the reader sees it: %s", archSummary(a))
				}
				checkByteTokenizer(t, f, c.Vocab)
			})
		}
	}
}

// allEqual: llama.cpp reads a scalar feed_forward_length for every layer;
// the reader reports one per layer.
func allEqual(got []uint64, want uint64) bool {
	for _, g := range got {
		if g != want {
			return false
		}
	}
	return len(got) > 0
}

// archSummary is the part of the reader's architecture the tests check.
func archSummary(a parser.GGUFArchitecture) string {
	return fmt.Sprintf("arch %s context %d embedding %d blocks %d ffn %v heads %d kv %d key %d value %d rope dim %d base %g rms eps %g ln eps %g vocab %d",
		a.Architecture, a.MaximumContextLength, a.EmbeddingLength, a.BlockCount, a.FeedForwardLength, a.AttentionHeadCount,
		a.AttentionHeadCountKV, a.AttentionKeyLength, a.AttentionValueLength, a.RoPEDimensionCount, a.RoPEFrequencyBase,
		a.AttentionLayerNormRMSEpsilon, a.AttentionLayerNormEpsilon, a.VocabularyLength)
}

// ropeFactor is factor j of Llama 3's rotary scaling as llama.cpp applies
// it (it divides θ_j by it): the ratio of the unscaled frequency to Hugging
// Face's _compute_llama3_parameters'.
func ropeFactor(c model.Config, j int) float32 {
	rs := c.RopeScaling
	theta := math.Pow(c.RopeTheta, -float64(2*j)/float64(c.HeadDim))
	wave := 2 * math.Pi / theta
	old := float64(rs.OriginalContext)
	scaled := theta
	switch {
	case wave > old/rs.LowFreqFactor:
		scaled = theta / rs.Factor
	case wave >= old/rs.HighFreqFactor:
		s := (old/wave - rs.LowFreqFactor) / (rs.HighFreqFactor - rs.LowFreqFactor)
		scaled = (1-s)*theta/rs.Factor + s*theta
	}
	return float32(theta / scaled)
}

// TestRopeFactorsCoverEveryBand: llama_tiny's rope_scaling puts its four
// frequencies in all three bands, so each branch of the factor is checked.
func TestRopeFactorsCoverEveryBand(t *testing.T) {
	ck, err := model.LoadCheckpoint("../testdata/llama_tiny")
	if err != nil {
		t.Fatal(err)
	}
	f := writeAndParse(t, ck, gguf.F32)
	_, got, _ := f.tensor(t, "rope_freqs.weight")
	var one, full, between bool
	for _, x := range got {
		one = one || x == 1
		full = full || x == float32(ck.Config.RopeScaling.Factor)
		between = between || x > 1 && x < float32(ck.Config.RopeScaling.Factor)
	}
	if !one || !full || !between {
		t.Errorf("rope_freqs %v: want factors of 1, %g and between", got, ck.Config.RopeScaling.Factor)
	}
}

// randomCheckpoint is a model of config c with parameters drawn from a
// seeded N(0, 0.1²).
func randomCheckpoint(t *testing.T, c model.Config, tok model.Tokenizer, seed uint64) *model.Checkpoint {
	t.Helper()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(seed, 0))
	p := make([]float32, c.NumParams())
	for i := range p {
		p[i] = float32(0.1 * r.NormFloat64())
	}
	return &model.Checkpoint{Config: c, Tokenizer: tok, Params: p}
}

// TestHFTokenizers exports models with each tokenizer.json fixture and
// checks the tokenizer.ggml.* keys llama.cpp reads.
func TestHFTokenizers(t *testing.T) {
	for _, tc := range []struct {
		dir, model, pre string
		spacePrefix     bool
	}{
		{"gpt2", "gpt2", "gpt-2", false},
		{"llama3", "gpt2", "llama-bpe", false},
		{"qwen2", "gpt2", "qwen2", false},
		{"llama2", "llama", "", true},
		{"mistral", "llama", "", true},
	} {
		t.Run(tc.dir, func(t *testing.T) {
			dir := filepath.Join("..", "hftok", "testdata", tc.dir)
			tok, err := hftok.Load(dir)
			if err != nil {
				t.Fatal(err)
			}
			tj := readTokenizerJSON(t, dir)
			c := model.Config{Arch: model.ArchLlama, Vocab: tok.Vocab() + 3, Context: 16, Dim: 8, Layers: 1, Heads: 2, KVHeads: 1, HeadDim: 4,
				Hidden: 16, NormEps: 1e-5, RopeTheta: 1e4}
			f := writeAndParse(t, randomCheckpoint(t, c, tok, 2), gguf.F16)
			if got := f.str(t, "tokenizer.ggml.model"); got != tc.model {
				t.Errorf("tokenizer.ggml.model %q, want %q", got, tc.model)
			}
			if v, ok := f.Header.MetadataKV.Get("tokenizer.ggml.pre"); tc.pre != "" && (!ok || v.ValueString() != tc.pre) || tc.pre == "" && ok {
				t.Errorf("tokenizer.ggml.pre %v (present %v), want %q", v.Value, ok, tc.pre)
			}
			tokens := f.kv(t, "tokenizer.ggml.tokens").ValueArray().ValuesString()
			types := f.kv(t, "tokenizer.ggml.token_type").ValueArray().ValuesInt32()
			if len(tokens) != c.Vocab || len(types) != c.Vocab {
				t.Fatalf("%d tokens, %d types, want %d", len(tokens), len(types), c.Vocab)
			}
			// Every token of tokenizer.json at its id, with the type the
			// converter gives it: an added token's (control if special,
			// else user-defined) over the vocabulary's (normal, or
			// SentencePiece's byte pieces), unknown for unk_token.
			wantTok := map[int32]string{}
			wantType := map[int32]int32{}
			for s, id := range tj.vocab {
				wantTok[id], wantType[id] = s, 1
				if tc.model == "llama" && len(s) == 6 && strings.HasPrefix(s, "<0x") {
					wantType[id] = 6
				}
			}
			for _, a := range tj.added {
				wantTok[a.id], wantType[a.id] = a.content, 4
				if a.special {
					wantType[a.id] = 3
				}
			}
			sp := tok.Specials()
			if sp.UNK >= 0 {
				wantType[sp.UNK] = 2
			}
			size := int64(0) // the tokens array's bytes: a uint64 length and the bytes of each
			for id := range c.Vocab {
				s, ok := wantTok[int32(id)]
				if !ok {
					s = fmt.Sprintf("[PAD%d]", id)
				}
				size += 8 + int64(len(s))
			}
			// gguf-parser-go trims white space off every string it reads
			// (as of v0.28.2), so tokens are compared trimmed and their
			// exact bytes through the array's size.
			if arr := f.kv(t, "tokenizer.ggml.tokens").ValueArray(); arr.Size != size {
				t.Errorf("tokens take %d bytes in the file, want %d", arr.Size, size)
			}
			for id, s := range wantTok {
				if tokens[id] != strings.TrimSpace(s) || types[id] != wantType[id] {
					t.Errorf("id %d: %q type %d, want %q type %d", id, tokens[id], types[id], s, wantType[id])
				}
			}
			for id := tok.Vocab(); id < c.Vocab; id++ {
				if types[id] != 5 {
					t.Errorf("padding id %d has type %d", id, types[id])
				}
			}
			tk := f.Tokenizer()
			if tk.BOSTokenID != int64(sp.BOS) && !(sp.BOS < 0 && tk.BOSTokenID == -1) || tk.EOSTokenID != int64(sp.EOS) {
				t.Errorf("bos %d eos %d, want %d %d", tk.BOSTokenID, tk.EOSTokenID, sp.BOS, sp.EOS)
			}
			if got, want := f.kv(t, "tokenizer.ggml.add_bos_token").ValueBool(), slices.Equal(sp.Prefix, []int32{sp.BOS}); got != want {
				t.Errorf("add_bos_token %v, want %v (prefix %v)", got, want, sp.Prefix)
			}
			if tmpl := tok.ChatTemplate(); tmpl != "" {
				if got := f.str(t, "tokenizer.chat_template"); got != tmpl {
					t.Errorf("chat template %q, want %q", got, tmpl)
				}
			}
			switch tc.model {
			case "gpt2":
				merges := f.kv(t, "tokenizer.ggml.merges").ValueArray().ValuesString()
				if !slices.Equal(merges, tj.merges) {
					t.Errorf("merges differ from tokenizer.json's: %d vs %d, first %q vs %q", len(merges), len(tj.merges), merges[:1], tj.merges[:1])
				}
			case "llama":
				// SentencePiece's BPE: the pair whose merged token scores
				// highest merges first, so the scores must order merged
				// tokens as tokenizer.json orders the merges.
				scores := f.kv(t, "tokenizer.ggml.scores").ValueArray().ValuesFloat32()
				first := map[int32]int{} // id → the rank of the first merge that makes it
				for rank, m := range tj.merges {
					a, b, _ := strings.Cut(m, " ")
					if id, ok := tj.vocab[a+b]; ok {
						if _, seen := first[id]; !seen {
							first[id] = rank
						}
					}
				}
				for id, score := range scores {
					want := float32(0)
					if r, ok := first[int32(id)]; ok {
						want = -float32(r + 1)
					}
					if score != want {
						t.Fatalf("token %d %q scores %v, want %v", id, tokens[id], score, want)
					}
				}
				if got := f.kv(t, "tokenizer.ggml.add_space_prefix").ValueBool(); got != tc.spacePrefix {
					t.Errorf("add_space_prefix %v, want %v", got, tc.spacePrefix)
				}
			}
		})
	}
}

// tokenizerFixture is what the tests read of a tokenizer.json.
type tokenizerFixture struct {
	vocab  map[string]int32
	merges []string // "a b"
	added  []addedToken
}

type addedToken struct {
	id      int32
	content string
	special bool
}

func readTokenizerJSON(t *testing.T, dir string) tokenizerFixture {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, hftok.TokenizerFile))
	if err != nil {
		t.Fatal(err)
	}
	var tj struct {
		AddedTokens []struct {
			ID      int32
			Content string
			Special bool
		} `json:"added_tokens"`
		Model struct {
			Vocab  map[string]int32
			Merges []any
		}
	}
	if err := json.Unmarshal(b, &tj); err != nil {
		t.Fatal(err)
	}
	fx := tokenizerFixture{vocab: tj.Model.Vocab}
	for _, m := range tj.Model.Merges {
		switch m := m.(type) {
		case string:
			fx.merges = append(fx.merges, m)
		case []any:
			fx.merges = append(fx.merges, m[0].(string)+" "+m[1].(string))
		}
	}
	for _, a := range tj.AddedTokens {
		fx.added = append(fx.added, addedToken{a.ID, a.Content, a.Special})
	}
	return fx
}
