package model_test

// The Llama family (llama, mistral, qwen2) against the plain-PyTorch
// re-implementation of Hugging Face's modelling code in
// scripts/gen_llama_reference.py, which writes testdata/{llama,qwen2,
// mistral}_tiny (config.json and model.safetensors as save_pretrained
// writes them, and reference.safetensors: tokens, targets, float64
// logits, loss and every parameter's gradient) and testdata/llama_lora_tiny
// (a PEFT adapter on llama_tiny and its reference).

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"testing"

	"github.com/braidml/braid/kernels"
	"github.com/braidml/braid/model"
	"github.com/braidml/braid/model/safetensors"
)

var pytorchOut = flag.String("pytorch-out", "", "TestLlamaWritesForPyTorch writes braid checkpoints of the Llama family and an adapter here, for scripts/gen_llama_reference.py --check-braid and --check-adapter (make test-pytorch)")

// llamaTol bounds |braid − PyTorch float64| for logits, loss and every
// gradient of the tiny models: float32 rounding is of order 1e-6 there.
const llamaTol = 1e-5

// llamaFixtures are the checkpoints gen_llama_reference.py writes.
var llamaFixtures = []struct{ dir, what string }{
	{"testdata/llama_tiny", "llama: 4 query heads on 2 key/value heads, head_dim 8 on 8 channels, untied lm_head, llama3 rope_scaling"},
	{"testdata/qwen2_tiny", "qwen2: q/k/v biases, tied head, 2 query heads on 1 key/value head"},
	{"testdata/mistral_tiny", "mistral: 4 query heads on 1 key/value head, sliding_window 5 on 12 tokens, untied"},
}

// llamaRef is a fixture's reference.safetensors.
func llamaRef(t *testing.T, dir string) (ref refFixture, tokens, targets []int32, B, T int) {
	t.Helper()
	ref = refFixture{t, mustRead(t, filepath.Join(dir, "reference.safetensors"))}
	tt, _ := ref.f.Tensor("tokens")
	if tt == nil || len(tt.Shape) != 2 {
		t.Fatalf("%s: reference has no (B, T) tokens", dir)
	}
	return ref, ref.i32("tokens"), ref.i32("targets"), tt.Shape[0], tt.Shape[1]
}

// within fails t unless got and want differ by at most llamaTol anywhere
// (NaN fails), and returns the max difference.
func within(t *testing.T, what string, got, want []float32) float64 {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, PyTorch has %d", what, len(got), len(want))
	}
	d, _ := maxAbsDiff(got, want)
	if !(d <= llamaTol) {
		t.Errorf("%s differs from PyTorch by %.3g > %g", what, d, llamaTol)
	}
	return d
}

// loadLlama returns a training model of a fixture's config holding its
// weights, for batches of B×T.
func loadForTraining(t *testing.T, dir string, B, T int) (*model.Model, *model.Checkpoint) {
	t.Helper()
	ck, err := model.LoadCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.New(ck.Config, B, T)
	if err != nil {
		t.Fatal(err)
	}
	copy(m.Params, ck.Params)
	return m, ck
}

// sameTensors fails t unless braid's file holds exactly hf's tensors but
// those skip names (nil: none), with the same dtype, shape and bytes.
func sameTensors(t *testing.T, hf, braid *safetensors.File, skip func(name string) bool) {
	t.Helper()
	want, got := map[string]*safetensors.Tensor{}, map[string]*safetensors.Tensor{}
	for i := range hf.Tensors {
		if skip == nil || !skip(hf.Tensors[i].Name) {
			want[hf.Tensors[i].Name] = &hf.Tensors[i]
		}
	}
	for i := range braid.Tensors {
		got[braid.Tensors[i].Name] = &braid.Tensors[i]
	}
	if g, w := slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want)); !slices.Equal(g, w) {
		t.Fatalf("braid writes tensors\n%v\nHugging Face has\n%v", g, w)
	}
	for name, w := range want {
		g := got[name]
		if g.Dtype != w.Dtype || !slices.Equal(g.Shape, w.Shape) || !bytes.Equal(g.Data, w.Data) {
			t.Errorf("%s: braid %s %v, Hugging Face %s %v (bytes equal: %v)", name, g.Dtype, g.Shape, w.Dtype, w.Shape, bytes.Equal(g.Data, w.Data))
		}
	}
}

// TestLlamaFamilyMatchesPyTorch: a Hugging Face checkpoint of each family
// member loads as it is, and its logits, loss and every parameter's
// gradient agree with PyTorch's to 1e-5, under every matmul
// implementation.
func TestLlamaFamilyMatchesPyTorch(t *testing.T) {
	for _, fx := range llamaFixtures {
		t.Run(filepath.Base(fx.dir), func(t *testing.T) {
			t.Log(fx.what)
			ref, tokens, targets, B, T := llamaRef(t, fx.dir)
			for _, impl := range kernels.Implementations() {
				t.Run(impl.String(), func(t *testing.T) {
					defer kernels.SetImpl(kernels.SetImpl(impl))
					m, ck := loadForTraining(t, fx.dir, B, T)
					loss, err := m.Forward(tokens, targets, B, T)
					if err != nil {
						t.Fatal(err)
					}
					d := within(t, "logits", m.Logits(), ref.f32("logits"))
					dl := within(t, "loss", []float32{loss}, ref.f32("loss"))
					t.Logf("loss %.7f, PyTorch %.7f", loss, ref.f32("loss")[0])
					m.ZeroGrad()
					if err := m.Backward(1); err != nil {
						t.Fatal(err)
					}
					var worst float64
					for _, p := range ck.Config.Layout() {
						worst = math.Max(worst, within(t, "grad "+p.Name, m.Grads[p.Offset:p.Offset+p.Size], ref.f32("grad."+p.Name)))
					}
					t.Logf("max abs diff: logits %.2e, loss %.2e, every parameter gradient %.2e", d, dl, worst)
				})
			}
		})
	}
}

// TestLlamaLoRAMatchesPyTorch: a PEFT adapter of all seven projections on
// llama_tiny loads, its logits, loss and every adapter gradient agree with
// PyTorch's (the base frozen, its gradient buffer dropped), and the merged
// model computes the same logits.
func TestLlamaLoRAMatchesPyTorch(t *testing.T) {
	const dir = "testdata/llama_lora_tiny"
	ref, tokens, targets, B, T := llamaRef(t, dir)
	for _, impl := range kernels.Implementations() {
		t.Run(impl.String(), func(t *testing.T) {
			defer kernels.SetImpl(kernels.SetImpl(impl))
			m, ck := loadForTraining(t, "testdata/llama_tiny", B, T)
			a, err := model.LoadAdapter(dir, ck.Config)
			if err != nil {
				t.Fatal(err)
			}
			if want := model.DefaultLlamaLoRATargets; !slices.Equal(a.Config.Targets, want) {
				t.Errorf("targets %v, want %v", a.Config.Targets, want)
			}
			if err := m.AttachLoRA(a); err != nil {
				t.Fatal(err)
			}
			if err := m.DropBaseGrads(); err != nil {
				t.Fatal(err)
			}
			loss, err := m.Forward(tokens, targets, B, T)
			if err != nil {
				t.Fatal(err)
			}
			d := within(t, "logits", m.Logits(), ref.f32("logits"))
			within(t, "loss", []float32{loss}, ref.f32("loss"))
			m.ZeroGrad()
			if err := m.Backward(1); err != nil {
				t.Fatal(err)
			}
			var worst float64
			for _, p := range a.Layout() {
				worst = math.Max(worst, within(t, "grad "+p.Name, a.Grads[p.Offset:p.Offset+p.Size], ref.f32("grad."+p.Name)))
			}
			merged, err := model.MergeLoRA(ck.Config, ck.Params, a)
			if err != nil {
				t.Fatal(err)
			}
			mm, err := model.NewInference(ck.Config, B, T)
			if err != nil {
				t.Fatal(err)
			}
			copy(mm.Params, merged)
			if _, err := mm.Forward(tokens, nil, B, T); err != nil {
				t.Fatal(err)
			}
			dm := within(t, "merged logits", mm.Logits(), ref.f32("merged_logits"))
			t.Logf("max abs diff: logits %.2e, adapter gradients %.2e, merged logits %.2e", d, worst, dm)
		})
	}
}

// TestLlamaCheckpointHasHuggingFaceLayout: a braid checkpoint of each
// fixture's weights holds exactly the fixture's tensors (names, shapes,
// dtype, bytes), its config.json carries Hugging Face's value of every key
// that shapes the model, and it reloads into the same config and weights.
func TestLlamaCheckpointHasHuggingFaceLayout(t *testing.T) {
	for _, fx := range llamaFixtures {
		t.Run(filepath.Base(fx.dir), func(t *testing.T) {
			ck, err := model.LoadCheckpoint(fx.dir)
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			if err := model.SaveCheckpoint(dir, ck.Config, ck.Tokenizer, ck.Params); err != nil {
				t.Fatal(err)
			}
			sameTensors(t, mustRead(t, filepath.Join(fx.dir, model.WeightsFile)), mustRead(t, filepath.Join(dir, model.WeightsFile)), nil)
			hfCfg, braidCfg := readJSON(t, filepath.Join(fx.dir, model.ConfigFile)), readJSON(t, filepath.Join(dir, model.ConfigFile))
			keys := []string{"model_type", "architectures", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
				"num_attention_heads", "num_key_value_heads", "max_position_embeddings", "hidden_act", "rms_norm_eps", "rope_theta",
				"rope_scaling", "tie_word_embeddings", "torch_dtype", "attention_bias", "mlp_bias", "pretraining_tp", "head_dim",
				"sliding_window", "use_sliding_window"}
			for _, k := range keys {
				hv, inHF := hfCfg[k]
				bv := braidCfg[k]
				switch {
				case inHF && !reflect.DeepEqual(hv, bv) && !(k == "sliding_window" && hfCfg["model_type"] == "qwen2"):
					t.Errorf("config.json %s: braid %v, Hugging Face %v", k, bv, hv)
				case !inHF && k == "head_dim" && braidCfg[k] != hfCfg["hidden_size"].(float64)/hfCfg["num_attention_heads"].(float64):
					t.Errorf("config.json head_dim: braid %v, Hugging Face derives hidden_size/num_attention_heads", bv)
				}
			}
			again, err := model.LoadCheckpoint(dir)
			if err != nil {
				t.Fatal(err)
			}
			if again.Config != ck.Config || again.Tokenizer.Name() != ck.Tokenizer.Name() {
				t.Errorf("reloaded config %+v %s, want %+v %s", again.Config, again.Tokenizer.Name(), ck.Config, ck.Tokenizer.Name())
			}
			if !slices.Equal(again.Params, ck.Params) {
				t.Error("reloaded weights differ")
			}
		})
	}
}

// llamaConfigJSON is a minimal config.json of model_type mt with extra keys
// set (a nil value is JSON's null).
func llamaConfigJSON(t *testing.T, mt string, extra map[string]any) []byte {
	t.Helper()
	d := map[string]any{"model_type": mt, "vocab_size": 300, "hidden_size": 16, "intermediate_size": 40,
		"num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 64}
	maps.Copy(d, extra)
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestLlamaConfigDecoding: config.json of the family is read as Hugging
// Face's config classes read it, defaults included; what would make the
// model compute something braid does not is refused by name; what does
// not change the maths is accepted.
func TestLlamaConfigDecoding(t *testing.T) {
	base := model.Config{Arch: model.ArchLlama, Vocab: 300, Context: 64, Dim: 16, Layers: 2, Heads: 4, KVHeads: 4,
		Hidden: 40, HeadDim: 4, NormEps: 1e-6, RopeTheta: 10000, Untied: true}
	with := func(f func(c *model.Config)) model.Config {
		c := base
		f(&c)
		return c
	}
	llama3 := map[string]any{"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
	scaled := model.RopeScaling{Factor: 32, LowFreqFactor: 1, HighFreqFactor: 4, OriginalContext: 8192}
	for _, c := range []struct {
		name  string
		mt    string
		extra map[string]any
		want  model.Config
	}{
		// Defaults of the config classes.
		{"llama defaults", "llama", nil, base},
		{"mistral defaults: 8 key/value heads, window 4096", "mistral", map[string]any{"num_attention_heads": 16, "hidden_size": 64},
			with(func(c *model.Config) {
				c.Arch, c.Heads, c.Dim, c.KVHeads, c.SlidingWindow = model.ArchMistral, 16, 64, 8, 4096
			})},
		{"qwen2 defaults: 32 key/value heads", "qwen2", map[string]any{"num_attention_heads": 32, "hidden_size": 64},
			with(func(c *model.Config) { c.Arch, c.Heads, c.Dim, c.KVHeads, c.HeadDim = model.ArchQwen2, 32, 64, 32, 2 })},
		{"null num_key_value_heads and sliding_window", "mistral", map[string]any{"num_key_value_heads": nil, "sliding_window": nil},
			with(func(c *model.Config) { c.Arch = model.ArchMistral })}, // null: num_attention_heads, no window
		// Keys that set the maths.
		{"grouped-query attention, head_dim, eps, theta, tied", "llama", map[string]any{"num_key_value_heads": 2, "head_dim": 8,
			"rms_norm_eps": 1e-5, "rope_theta": 500000.0, "tie_word_embeddings": true},
			with(func(c *model.Config) {
				c.KVHeads, c.HeadDim, c.NormEps, c.RopeTheta, c.Untied = 2, 8, 1e-5, 500000, false
			})},
		{"llama3 rope_scaling", "llama", map[string]any{"rope_scaling": llama3}, with(func(c *model.Config) { c.RopeScaling = scaled })},
		{"llama3 under the old key name", "llama", map[string]any{"rope_scaling": map[string]any{"type": "llama3", "factor": 32.0,
			"low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}, with(func(c *model.Config) { c.RopeScaling = scaled })},
		{"rope_parameters (later transformers)", "llama", map[string]any{"rope_parameters": map[string]any{"rope_type": "llama3",
			"rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}},
			with(func(c *model.Config) { c.RopeScaling, c.RopeTheta = scaled, 500000 })},
		{"default rope_type", "qwen2", map[string]any{"rope_scaling": map[string]any{"rope_type": "default"}, "num_attention_heads": 32, "hidden_size": 64},
			with(func(c *model.Config) { c.Arch = model.ArchQwen2; c.KVHeads = 32; c.Heads, c.Dim, c.HeadDim = 32, 64, 2 })},
		{"mistral sliding window", "mistral", map[string]any{"num_key_value_heads": 2, "sliding_window": 32},
			with(func(c *model.Config) { c.Arch, c.KVHeads, c.SlidingWindow = model.ArchMistral, 2, 32 })},
		{"qwen2's window off", "qwen2", map[string]any{"num_key_value_heads": 4, "use_sliding_window": false, "sliding_window": 4096, "max_window_layers": 28},
			with(func(c *model.Config) { c.Arch = model.ArchQwen2 })},
		// Keys that do not change the maths.
		{"ignored keys", "llama", map[string]any{"torch_dtype": "bfloat16", "bos_token_id": 128000, "eos_token_id": []int{128001, 128009},
			"transformers_version": "4.45.0", "use_cache": false, "initializer_range": 0.02, "attention_dropout": 0.0, "pad_token_id": nil,
			"architectures": []string{"LlamaForCausalLM"}, "attention_bias": false, "mlp_bias": false, "pretraining_tp": 1, "hidden_act": "silu",
			"layer_types": []string{"full_attention", "full_attention"}, "_name_or_path": "x"}, base},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, tok, err := model.DecodeConfig(llamaConfigJSON(t, c.mt, c.extra), "config.json")
			if err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Errorf("config\n%+v, want\n%+v", got, c.want)
			}
			if tok.Name() != "byte" {
				t.Errorf("tokenizer %s, want byte (vocab_size 300)", tok.Name())
			}
		})
	}

	for _, c := range []struct {
		name, mt string
		extra    map[string]any
		wants    string
	}{
		{"attention_bias", "llama", map[string]any{"attention_bias": true}, "attention_bias"},
		{"mlp_bias", "llama", map[string]any{"mlp_bias": true}, "mlp_bias"},
		{"hidden_act", "llama", map[string]any{"hidden_act": "gelu"}, "hidden_act"},
		{"pretraining_tp", "llama", map[string]any{"pretraining_tp": 2}, "pretraining_tp"},
		{"partial rotary", "llama", map[string]any{"partial_rotary_factor": 0.5}, "partial_rotary_factor"},
		{"linear rope", "llama", map[string]any{"rope_scaling": map[string]any{"type": "linear", "factor": 2.0}}, `"linear"`},
		{"dynamic rope", "qwen2", map[string]any{"rope_scaling": map[string]any{"rope_type": "dynamic", "factor": 2.0}}, `"dynamic"`},
		{"yarn rope", "qwen2", map[string]any{"rope_scaling": map[string]any{"rope_type": "yarn", "factor": 4.0}}, `"yarn"`},
		{"longrope parameters", "llama", map[string]any{"rope_parameters": map[string]any{"rope_type": "longrope"}}, "rope_parameters"},
		{"llama3 without its factors", "llama", map[string]any{"rope_scaling": map[string]any{"rope_type": "llama3", "factor": 8.0}}, "low_freq_factor"},
		{"llama3 low ≥ high", "llama", map[string]any{"rope_scaling": map[string]any{"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0, "high_freq_factor": 1.0, "original_max_position_embeddings": 64}}, "high_freq_factor"},
		{"mistral rope_scaling", "mistral", map[string]any{"num_key_value_heads": 4, "rope_scaling": llama3}, "rope_scaling"},
		{"qwen2 sliding window", "qwen2", map[string]any{"use_sliding_window": true}, "use_sliding_window"},
		{"sliding layers", "qwen2", map[string]any{"layer_types": []string{"full_attention", "sliding_attention"}}, "layer_types"},
		{"quantized", "llama", map[string]any{"quantization_config": map[string]any{"quant_method": "gptq"}}, "quantization_config"},
		{"another head", "llama", map[string]any{"architectures": []string{"LlamaForSequenceClassification"}}, "architectures"},
		{"heads not a multiple", "llama", map[string]any{"num_key_value_heads": 3}, "num_key_value_heads"},
		{"more kv heads than heads", "llama", map[string]any{"num_key_value_heads": 8}, "num_key_value_heads"},
		{"odd head_dim", "llama", map[string]any{"head_dim": 5}, "head_dim"},
		{"qwen2 head_dim", "qwen2", map[string]any{"num_attention_heads": 4, "num_key_value_heads": 4, "head_dim": 8}, "head_dim"},
		{"eps", "llama", map[string]any{"rms_norm_eps": 0}, "rms_norm_eps"},
		{"theta", "llama", map[string]any{"rope_theta": -1.0}, "rope_theta"},
		{"no layers", "llama", map[string]any{"num_hidden_layers": 0}, "num_hidden_layers"},
		{"not a number", "llama", map[string]any{"num_key_value_heads": "four"}, "num_key_value_heads"},
		{"wrong type", "llama", map[string]any{"hidden_size": "big"}, "hidden_size"},
		{"small vocabulary", "llama", map[string]any{"vocab_size": 100}, "257 ids"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := model.DecodeConfig(llamaConfigJSON(t, c.mt, c.extra), "config.json")
			if err == nil || !strings.Contains(err.Error(), c.wants) {
				t.Fatalf("error %v, want one naming %s", err, c.wants)
			}
			if !errors.Is(err, model.ErrCheckpoint) && !errors.Is(err, model.ErrConfig) {
				t.Errorf("error %v wraps neither ErrCheckpoint nor ErrConfig", err)
			}
			t.Log(err)
		})
	}
	if _, _, err := model.DecodeConfig([]byte(`{"model_type":"gemma"}`), "config.json"); err == nil || !strings.Contains(err.Error(), `"gemma"`) {
		t.Errorf("model_type gemma: error %v, want one naming it", err)
	}
}

// TestGPT2ConfigUnchanged: a GPT-2 config marshals to the five keys it
// always had (snapshots and job state hash it), and a GPT-2 config that
// sets a Llama family field is invalid.
func TestGPT2ConfigUnchanged(t *testing.T) {
	b, err := json.Marshal(tinyRef)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"vocab_size":64,"n_positions":16,"n_embd":32,"n_layer":2,"n_head":4}`; string(b) != want {
		t.Errorf("GPT-2 config marshals to %s, want %s", b, want)
	}
	for name, f := range map[string]func(c *model.Config){
		"num_key_value_heads": func(c *model.Config) { c.KVHeads = 4 },
		"rope_theta":          func(c *model.Config) { c.RopeTheta = 1e4 },
		"untied":              func(c *model.Config) { c.Untied = true },
		"sliding_window":      func(c *model.Config) { c.SlidingWindow = 4 },
	} {
		c := tinyRef
		f(&c)
		if err := c.Validate(); !errors.Is(err, model.ErrConfig) || !strings.Contains(err.Error(), name) {
			t.Errorf("GPT-2 config with %s: error %v", name, err)
		}
	}
	if err := (model.Config{Arch: "gemma"}).Validate(); !errors.Is(err, model.ErrConfig) {
		t.Errorf("arch gemma: error %v", err)
	}
}

// smolLM2 is SmolLM2-135M's shape (vocabulary 49152, 576 channels, 30
// layers, 9 heads on 3 key/value heads, MLP 1536, tied).
var smolLM2 = model.Config{Arch: model.ArchLlama, Vocab: 49152, Context: 8192, Dim: 576, Layers: 30, Heads: 9, KVHeads: 3,
	Hidden: 1536, HeadDim: 64, NormEps: 1e-5, RopeTheta: 100000}

// TestLlamaMemoryBytes: MemoryBytes counts what New and NewInference
// allocate for the family (within 1%: the views and slice headers are
// not counted).
func TestLlamaMemoryBytes(t *testing.T) {
	if smolLM2.NumParams() != 134515008 {
		t.Errorf("SmolLM2-135M shape: %d parameters, want 134515008", smolLM2.NumParams())
	}
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	for _, c := range []model.Config{smolLM2, func() model.Config { c := smolLM2; c.KVHeads, c.Untied, c.Layers = 9, true, 2; return c }()} {
		for _, inference := range []bool{false, true} {
			est := model.MemoryBytes(c, 2, 64, inference)
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			var m *model.Model
			var err error
			if inference {
				m, err = model.NewInference(c, 2, 64)
			} else {
				m, err = model.New(c, 2, 64)
			}
			runtime.ReadMemStats(&after)
			if err != nil {
				t.Fatal(err)
			}
			got := int64(after.TotalAlloc - before.TotalAlloc)
			t.Logf("kv heads %d, inference %v: MemoryBytes %d, allocated %d", c.KVHeads, inference, est, got)
			if !(est <= got && float64(got) <= 1.01*float64(est)) {
				t.Errorf("kv heads %d, inference %v: MemoryBytes %d, New allocated %d", c.KVHeads, inference, est, got)
			}
			runtime.KeepAlive(m)
		}
	}
	huge := smolLM2
	huge.Context, huge.Heads, huge.HeadDim, huge.KVHeads = model.MaxRoPEContext, 256, 64, 1
	if got := model.MemoryBytes(huge, 1<<20, model.MaxRoPEContext, false); got != math.MaxInt64 {
		t.Errorf("an absurd batch: MemoryBytes %d, want it saturated at MaxInt64", got)
	}
	if _, err := model.New(huge, 1<<20, model.MaxRoPEContext); !errors.Is(err, model.ErrConfig) {
		t.Errorf("an absurd batch: New error %v, want ErrConfig", err)
	}
}

// TestLlamaGradReady: for the family too, Backward reports GradRanges in
// order (model.norm and lm_head, the blocks last layer first, then the
// embedding), each final when reported, together all of Grads; with an
// adapter, the adapter's blocks.
func TestLlamaGradReady(t *testing.T) {
	for _, fx := range llamaFixtures {
		t.Run(filepath.Base(fx.dir), func(t *testing.T) {
			_, tokens, targets, B, T := llamaRef(t, fx.dir)
			m, ck := loadForTraining(t, fx.dir, B, T)
			c := ck.Config
			ps := c.Layout()
			per := (len(ps) - 2) / c.Layers // embed_tokens, norm
			if c.Untied {
				per = (len(ps) - 3) / c.Layers
			}
			want := [][2]int{{ps[1+c.Layers*per].Offset, c.NumParams()}}
			for l := c.Layers - 1; l >= 0; l-- {
				want = append(want, [2]int{ps[1+l*per].Offset, ps[1+(l+1)*per].Offset})
			}
			want = append(want, [2]int{0, ps[1].Offset})
			if got := m.GradRanges(); !slices.Equal(got, want) {
				t.Fatalf("GradRanges %v, want %v", got, want)
			}
			checkGradReady(t, m, tokens, targets, B, T, func() []float32 { return m.Grads })

			a, err := model.NewLoRA(c, model.LoRAConfig{Rank: 2, Alpha: 4, Dropout: 0.1, Targets: []string{"q_proj", "v_proj", "down_proj"}})
			if err != nil {
				t.Fatal(err)
			}
			a.Init(3)
			for i := range a.Params { // B non-zero, so that every gradient is
				a.Params[i] += 0.01
			}
			if err := m.AttachLoRA(a); err != nil {
				t.Fatal(err)
			}
			if err := m.SetDropoutStreams([]uint64{5, 6}); err != nil {
				t.Fatal(err)
			}
			checkGradReady(t, m, tokens, targets, B, T, func() []float32 { return a.Grads })
		})
	}
}

// checkGradReady runs Forward and Backward with a GradReady hook and
// checks the reported ranges: GradRanges in order, each final when
// reported, adjacent, covering grads().
func checkGradReady(t *testing.T, m *model.Model, tokens, targets []int32, B, T int, grads func() []float32) {
	t.Helper()
	var got [][2]int
	var early [][]float32
	m.GradReady = func(lo, hi int) {
		got = append(got, [2]int{lo, hi})
		early = append(early, slices.Clone(grads()[lo:hi]))
	}
	defer func() { m.GradReady = nil }()
	m.ZeroGrad()
	if _, err := m.Forward(tokens, targets, B, T); err != nil {
		t.Fatal(err)
	}
	if err := m.Backward(1); err != nil {
		t.Fatal(err)
	}
	if want := m.GradRanges(); !slices.Equal(got, want) {
		t.Fatalf("reported %v, want %v", got, want)
	}
	final, covered, nonzero := grads(), 0, 0
	for i, r := range got {
		covered += r[1] - r[0]
		if i > 0 && r[1] != got[i-1][0] {
			t.Errorf("range %d %v does not end where range %d %v starts", i, r, i-1, got[i-1])
		}
		for j, v := range early[i] {
			if math.Float32bits(v) != math.Float32bits(final[r[0]+j]) {
				t.Fatalf("range %v: element %d was %v when reported, %v after Backward", r, r[0]+j, v, final[r[0]+j])
			}
			if v != 0 {
				nonzero++
			}
		}
	}
	if covered != len(final) {
		t.Errorf("ranges cover %d of %d gradients", covered, len(final))
	}
	if nonzero < len(final)/2 {
		t.Errorf("only %d of %d gradients are non-zero", nonzero, len(final))
	}
}

// TestLlamaStepAllocatesNothing: a training step of the family, full and
// with an adapter (with dropout), allocates nothing once the model exists.
func TestLlamaStepAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop items; allocation counts are checked without -race (make test-short)")
	}
	for _, fx := range llamaFixtures {
		t.Run(filepath.Base(fx.dir), func(t *testing.T) {
			_, tokens, targets, B, T := llamaRef(t, fx.dir)
			m, ck := loadForTraining(t, fx.dir, B, T)
			step := func() {
				m.ZeroGrad()
				if _, err := m.Forward(tokens, targets, B, T); err != nil {
					t.Fatal(err)
				}
				if err := m.Backward(1); err != nil {
					t.Fatal(err)
				}
			}
			step()
			if n := allocsPerRun(10, step); n != 0 {
				t.Errorf("a training step allocates %v times, want 0", n)
			}
			a, err := model.NewLoRA(ck.Config, model.LoRAConfig{Rank: 2, Alpha: 4, Dropout: 0.1, Targets: model.DefaultLlamaLoRATargets})
			if err != nil {
				t.Fatal(err)
			}
			if err := m.AttachLoRA(a); err != nil {
				t.Fatal(err)
			}
			if err := m.SetDropoutStreams([]uint64{1, 2}); err != nil {
				t.Fatal(err)
			}
			step()
			if n := allocsPerRun(10, step); n != 0 {
				t.Errorf("a LoRA training step allocates %v times, want 0", n)
			}
		})
	}
}

// TestLlamaTrains: AdamW on one batch of llama_tiny drives its loss down,
// from Init and from the fixture's weights.
func TestLlamaTrains(t *testing.T) {
	_, tokens, targets, B, T := llamaRef(t, "testdata/llama_tiny")
	m, _ := loadForTraining(t, "testdata/llama_tiny", B, T)
	for _, init := range []bool{false, true} {
		if init {
			m.Init(11)
		}
		mom, vel := make([]float32, len(m.Params)), make([]float32, len(m.Params))
		var first, last float32
		for step := 1; step <= 30; step++ {
			m.ZeroGrad()
			loss, err := m.Forward(tokens, targets, B, T)
			if err != nil {
				t.Fatal(err)
			}
			if err := m.Backward(1); err != nil {
				t.Fatal(err)
			}
			kernels.AdamW(m.Params, m.Grads, mom, vel, kernels.AdamWParams{LR: 1e-2, Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, Step: step})
			if step == 1 {
				first = loss
			}
			last = loss
		}
		t.Logf("init %v: loss %.4f after 1 step, %.4f after 30", init, first, last)
		if !(last < first/2) {
			t.Errorf("init %v: loss %.4f after 1 step, %.4f after 30: want it halved", init, first, last)
		}
	}
}

// TestLlamaAdapterFiles: an adapter of the family round-trips through
// SaveAdapter and LoadAdapter with PEFT's names and fan_in_fan_out false,
// and refuses a base of the other architecture; GPT-2's targets do not fit
// a Llama, nor the family's a GPT-2.
func TestLlamaAdapterFiles(t *testing.T) {
	ck, err := model.LoadCheckpoint("testdata/llama_tiny")
	if err != nil {
		t.Fatal(err)
	}
	a, err := model.LoadAdapter("testdata/llama_lora_tiny", ck.Config)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := model.SaveAdapter(dir, a); err != nil {
		t.Fatal(err)
	}
	cfg := readJSON(t, filepath.Join(dir, model.AdapterConfigFile))
	if cfg["fan_in_fan_out"] != false {
		t.Errorf("fan_in_fan_out %v, want false for nn.Linear", cfg["fan_in_fan_out"])
	}
	peft := mustRead(t, filepath.Join("testdata/llama_lora_tiny", model.AdapterWeightsFile))
	braid := mustRead(t, filepath.Join(dir, model.AdapterWeightsFile))
	var pn, bn []string
	for _, x := range peft.Tensors {
		pn = append(pn, x.Name)
	}
	for _, x := range braid.Tensors {
		bn = append(bn, x.Name)
	}
	slices.Sort(pn)
	slices.Sort(bn)
	if !slices.Equal(pn, bn) {
		t.Errorf("braid writes adapter tensors\n%v\nPEFT\n%v", bn, pn)
	}
	b, err := model.LoadAdapter(dir, ck.Config)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(b.Params, a.Params) {
		t.Error("adapter weights differ after a round trip")
	}
	if _, err := model.LoadAdapter(dir, tinyRef); !errors.Is(err, model.ErrAdapter) {
		t.Errorf("a Llama adapter on a GPT-2: error %v, want ErrAdapter", err)
	}
	if _, err := model.NewLoRA(ck.Config, model.DefaultLoRAConfig()); !errors.Is(err, model.ErrLoRAConfig) {
		t.Errorf("GPT-2 targets on a Llama: error %v, want ErrLoRAConfig", err)
	}
	if got := model.DefaultLoRATargetsFor(ck.Config); !slices.Equal(got, model.DefaultLlamaLoRATargets) {
		t.Errorf("default targets for a Llama: %v", got)
	}
	if ts, err := model.CanonicalLoRATargets([]string{"mlp.down_proj", "self_attn.q_proj", "q_proj"}); err != nil || !slices.Equal(ts, []string{"q_proj", "down_proj"}) {
		t.Errorf("canonical targets %v, %v; want [q_proj down_proj]", ts, err)
	}
}

// TestLlamaWritesForPyTorch writes, with -pytorch-out DIR, braid checkpoints
// of the three fixtures' models with their weights moved a little (and a
// LoRA adapter on the first), each with reference.safetensors holding
// tokens and braid's logits, for gen_llama_reference.py's --check-braid and
// --check-adapter (make test-pytorch). Without the flag it is skipped.
func TestLlamaWritesForPyTorch(t *testing.T) {
	if *pytorchOut == "" {
		t.Skip("writes only with -pytorch-out DIR")
	}
	out, err := filepath.Abs(*pytorchOut)
	if err != nil {
		t.Fatal(err)
	}
	writeRef := func(dir string, tokens []int32, B, T int, logits []float32, V int) {
		t.Helper()
		err := safetensors.WriteFile(filepath.Join(dir, "reference.safetensors"), []safetensors.Tensor{
			safetensors.I32Tensor("tokens", []int{B, T}, tokens),
			safetensors.F32Tensor("logits", []int{B, T, V}, logits),
		}, map[string]string{"generator": "model.TestLlamaWritesForPyTorch"})
		if err != nil {
			t.Fatal(err)
		}
	}
	rng := rand.New(rand.NewPCG(17, 18))
	for _, fx := range llamaFixtures {
		_, tokens, _, B, T := llamaRef(t, fx.dir)
		m, ck := loadForTraining(t, fx.dir, B, T)
		for i := range m.Params {
			m.Params[i] += float32(rng.NormFloat64() * 0.01)
		}
		dir := filepath.Join(out, filepath.Base(fx.dir))
		if err := model.SaveCheckpoint(dir, ck.Config, ck.Tokenizer, m.Params); err != nil {
			t.Fatal(err)
		}
		if _, err := m.Forward(tokens, nil, B, T); err != nil {
			t.Fatal(err)
		}
		writeRef(dir, tokens, B, T, m.Logits(), ck.Config.Vocab)
		if fx.dir != llamaFixtures[0].dir {
			continue
		}
		a, err := model.NewLoRA(ck.Config, model.LoRAConfig{Rank: 3, Alpha: 5, Targets: []string{"q_proj", "v_proj", "o_proj", "up_proj", "down_proj"}, BaseModel: dir})
		if err != nil {
			t.Fatal(err)
		}
		a.Init(9)
		for i := range a.Params {
			a.Params[i] += float32(rng.NormFloat64() * 0.1)
		}
		if err := m.AttachLoRA(a); err != nil {
			t.Fatal(err)
		}
		if _, err := m.Forward(tokens, nil, B, T); err != nil {
			t.Fatal(err)
		}
		adir := filepath.Join(out, "llama_lora_tiny")
		if err := model.SaveAdapter(adir, a); err != nil {
			t.Fatal(err)
		}
		writeRef(adir, tokens, B, T, m.Logits(), ck.Config.Vocab)
	}
	if err := os.WriteFile(filepath.Join(out, "README"), []byte("written by go test ./model -run TestLlamaWritesForPyTorch -args -pytorch-out DIR\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkLlamaTrainStep times forward + backward of a SmolLM2-135M-shaped
// model at batch 1×256, full and with a rank-8 adapter on every
// projection (skipped with -short).
func BenchmarkLlamaTrainStep(b *testing.B) {
	if testing.Short() {
		b.Skip("a 135M-parameter model: skipped with -short")
	}
	B, T := 1, 256
	m, err := model.New(smolLM2, B, T)
	if err != nil {
		b.Fatal(err)
	}
	m.Init(1)
	rng := rand.New(rand.NewPCG(1, 2))
	x, y := make([]int32, B*T), make([]int32, B*T)
	for i := range x {
		x[i], y[i] = int32(rng.IntN(smolLM2.Vocab)), int32(rng.IntN(smolLM2.Vocab))
	}
	run := func(b *testing.B) {
		for b.Loop() {
			m.ZeroGrad()
			if _, err := m.Forward(x, y, B, T); err != nil {
				b.Fatal(err)
			}
			if err := m.Backward(1); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N*B*T)/b.Elapsed().Seconds(), "tokens/s")
	}
	b.Run("smollm2-135m/full", run)
	a, err := model.NewLoRA(smolLM2, model.LoRAConfig{Rank: 8, Alpha: 16, Targets: model.DefaultLlamaLoRATargets})
	if err != nil {
		b.Fatal(err)
	}
	a.Init(1)
	if err := m.AttachLoRA(a); err != nil {
		b.Fatal(err)
	}
	b.Run("smollm2-135m/lora", run)
	// The same adapter on the base held in bf16 (HoldBaseBF16): what
	// widening each matrix per use costs.
	if err := m.DropBaseGrads(); err != nil {
		b.Fatal(err)
	}
	if err := m.HoldBaseBF16(); err != nil {
		b.Fatal(err)
	}
	b.Run("smollm2-135m/lora-bf16", run)
}

// TestLlamaCheckpointFormats: a Llama family checkpoint saved in BF16 and
// in shards (SaveCheckpointAs) reloads with the BF16-rounded weights, its
// untied lm_head included, and config.json's torch_dtype says bfloat16.
func TestLlamaCheckpointFormats(t *testing.T) {
	for _, fx := range llamaFixtures {
		t.Run(filepath.Base(fx.dir), func(t *testing.T) {
			ck, err := model.LoadCheckpoint(fx.dir)
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			f := model.WeightsFormat{Dtype: safetensors.BF16, MaxShardBytes: 4096}
			if err := model.SaveCheckpointAs(dir, ck.Config, ck.Tokenizer, ck.Params, f); err != nil {
				t.Fatal(err)
			}
			if got := readJSON(t, filepath.Join(dir, model.ConfigFile))["torch_dtype"]; got != "bfloat16" {
				t.Errorf("torch_dtype %v, want bfloat16", got)
			}
			again, err := model.LoadCheckpoint(dir)
			if err != nil {
				t.Fatal(err)
			}
			if again.Config != ck.Config || again.Format.Dtype != safetensors.BF16 || again.Format.MaxShardBytes == 0 {
				t.Errorf("reloaded %+v in %+v", again.Config, again.Format)
			}
			for i, v := range ck.Params {
				if want := safetensors.BF16ToFloat32(safetensors.BF16FromFloat32(v)); again.Params[i] != want {
					t.Fatalf("param %d: %v, want %v rounded to BF16 %v", i, again.Params[i], v, want)
				}
			}
		})
	}
}
