package model_test

// Hugging Face GPT-2 interoperability, checked both ways against the
// PyTorch re-implementation of GPT2LMHeadModel in scripts/gen_reference.py
// (transformers itself is not installable here):
//
//   - testdata/hf_tiny and testdata/hf_tiny_prefixed are Hugging Face files
//     written by the script; braid must load them as they are and reproduce
//     the script's float64 logits.
//   - testdata/braid_tiny is a braid checkpoint written by
//     `go test ./model -run HF -update`; the script's --check-braid loads it
//     strictly into the HF-named model and compares the logits braid stored.

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/braidml/braid/kernels"
	"github.com/braidml/braid/model"
	"github.com/braidml/braid/model/safetensors"
)

var update = flag.Bool("update", false, "rewrite testdata/braid_tiny and testdata/braid_lora_tiny (then run scripts/gen_reference.py --check-braid model/testdata/braid_tiny and --check-adapter model/testdata/braid_lora_tiny)")

// hfTol bounds |braid logits − PyTorch float64 logits| on the tiny models
// (logits up to about 4 in magnitude, 48 or 40 channels): braid computes in
// float32, whose rounding error here is of order 1e-6. The float16 file is
// held to the same bound because its reference logits are computed from the
// float16-rounded weights, which braid widens to float32 exactly; the float16
// rounding itself moves the logits by about 2e-3, so a bound loose enough to
// ignore it would hide real bugs.
const hfTol = 2e-5

// hfFixtures are the Hugging Face checkpoints gen_reference.py writes.
var hfFixtures = []struct{ dir, what string }{
	{"testdata/hf_tiny", "GPT2Model names as in the gpt2 hub file, F32, float attn.bias buffers"},
	{"testdata/hf_tiny_prefixed", "transformer. prefix, tied lm_head.weight, bool attn.bias and attn.masked_bias, F16"},
}

// isMaskBuffer: the causal-mask buffers GPT-2 files may carry.
func isMaskBuffer(name string) bool {
	return strings.HasSuffix(name, ".attn.bias") || strings.HasSuffix(name, ".attn.masked_bias")
}

// readHFRef reads dir/reference.safetensors: tokens (B, T) and logits (B, T, V).
func readHFRef(t *testing.T, dir string) (tokens []int32, B, T int, logits []float32) {
	t.Helper()
	ref := refFixture{t, mustRead(t, filepath.Join(dir, "reference.safetensors"))}
	tt, _ := ref.f.Tensor("tokens")
	if tt == nil || len(tt.Shape) != 2 {
		t.Fatalf("%s: reference has no (B, T) tokens", dir)
	}
	return ref.i32("tokens"), tt.Shape[0], tt.Shape[1], ref.f32("logits")
}

func mustRead(t *testing.T, path string) *safetensors.File {
	t.Helper()
	f, err := safetensors.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestHFLoadsHuggingFaceGPT2: a Hugging Face GPT-2 model.safetensors +
// config.json loads as it is and gives PyTorch's logits, under every matmul
// implementation.
func TestHFLoadsHuggingFaceGPT2(t *testing.T) {
	for _, fx := range hfFixtures {
		t.Run(filepath.Base(fx.dir), func(t *testing.T) {
			t.Log(fx.what)
			tokens, B, T, want := readHFRef(t, fx.dir)
			m, tok, err := model.Load(fx.dir, B, T)
			if err != nil {
				t.Fatal(err)
			}
			// config.json has no braid_tokenizer key: vocab_size 300 means bytes.
			if tok.Name() != "byte" {
				t.Errorf("tokenizer %s, want byte", tok.Name())
			}
			for _, impl := range kernels.Implementations() {
				t.Run(impl.String(), func(t *testing.T) {
					defer kernels.SetImpl(kernels.SetImpl(impl))
					if _, err := m.Forward(tokens, nil, B, T); err != nil {
						t.Fatal(err)
					}
					d, maxw := maxAbsDiff(m.Logits(), want)
					t.Logf("logits (%d, %d, %d) max abs diff %.2e (max |logit| %.2f)", B, T, m.Config.Vocab, d, maxw)
					if d > hfTol {
						t.Errorf("logits differ from PyTorch by %.3g > %g", d, hfTol)
					}
				})
			}
		})
	}
}

// TestHFCheckpointHasHuggingFaceLayout: a braid checkpoint of hf_tiny's
// weights holds exactly hf_tiny's tensors (minus the mask buffers) with the
// same names, shapes, dtype and bytes, its config.json agrees with
// Hugging Face's on every key braid writes, and it reloads bitwise.
func TestHFCheckpointHasHuggingFaceLayout(t *testing.T) {
	const src = "testdata/hf_tiny"
	ck, err := model.LoadCheckpoint(src)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := model.SaveCheckpoint(dir, ck.Config, ck.Tokenizer, ck.Params); err != nil {
		t.Fatal(err)
	}

	braid := mustRead(t, filepath.Join(dir, model.WeightsFile))
	sameTensors(t, mustRead(t, filepath.Join(src, model.WeightsFile)), braid, isMaskBuffer)
	if braid.Metadata["format"] != "pt" {
		t.Errorf("metadata %v, want format pt (transformers refuses other formats)", braid.Metadata)
	}

	// config.json: every key braid writes that GPT2Config also has carries
	// Hugging Face's value.
	hfCfg, braidCfg := readJSON(t, filepath.Join(src, model.ConfigFile)), readJSON(t, filepath.Join(dir, model.ConfigFile))
	for _, k := range []string{"model_type", "architectures", "vocab_size", "n_positions", "n_embd", "n_layer", "n_head",
		"n_inner", "activation_function", "layer_norm_epsilon", "torch_dtype"} {
		hv, ok1 := hfCfg[k]
		bv, ok2 := braidCfg[k]
		if !ok1 || !ok2 || !reflect.DeepEqual(hv, bv) {
			t.Errorf("config.json %s: braid %v (present %v), Hugging Face %v (present %v)", k, bv, ok2, hv, ok1)
		}
	}

	again, err := model.LoadCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	if again.Config != ck.Config || again.Tokenizer.Name() != ck.Tokenizer.Name() {
		t.Errorf("reloaded config %+v %s, want %+v %s", again.Config, again.Tokenizer.Name(), ck.Config, ck.Tokenizer.Name())
	}
	for i := range ck.Params {
		if again.Params[i] != ck.Params[i] {
			t.Fatalf("param %d: %v after save and reload, want %v", i, again.Params[i], ck.Params[i])
		}
	}

	// The float16 variant holds the same weights, rounded to float16.
	ck16, err := model.LoadCheckpoint("testdata/hf_tiny_prefixed")
	if err != nil {
		t.Fatal(err)
	}
	if ck16.Config != ck.Config {
		t.Fatalf("hf_tiny_prefixed config %+v, hf_tiny %+v", ck16.Config, ck.Config)
	}
	for i, v := range ck.Params {
		if want := safetensors.F16ToFloat32(safetensors.F16FromFloat32(v)); ck16.Params[i] != want {
			t.Fatalf("param %d: hf_tiny_prefixed %v, hf_tiny %v rounded to float16 %v", i, ck16.Params[i], v, want)
		}
	}
}

func readJSON(t *testing.T, path string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return m
}

// braidTiny is the model of testdata/braid_tiny: a shape unlike hf_tiny's
// (3 layers, 5 heads of 8 channels, full 24-token context) so that the
// reverse check cannot pass on a hard-coded shape.
var braidTiny = model.Config{Vocab: 320, Context: 24, Dim: 40, Layers: 3, Heads: 5}

const (
	braidTinyDir           = "testdata/braid_tiny"
	braidTinyB, braidTinyT = 3, 24
)

// randomTiny returns braidTiny with every parameter random, as the script's
// fixtures are drawn: weights N(0, 0.1²), biases N(0, 0.05²), LayerNorm
// weights 1 + N(0, 0.1²), so that every tensor changes the logits. The same
// seed gives the same bytes on every machine.
func randomTiny(t *testing.T, seed uint64) *model.Model {
	t.Helper()
	m, err := model.New(braidTiny, braidTinyB, braidTinyT)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed, 0x68665f74696e79)) // "hf_tiny"
	for _, p := range braidTiny.Layout() {
		w := m.Params[p.Offset : p.Offset+p.Size]
		mean, std := 0.0, 0.1
		switch {
		case strings.Contains(p.Name, "ln_") && strings.HasSuffix(p.Name, ".weight"):
			mean = 1
		case strings.HasSuffix(p.Name, ".bias"):
			std = 0.05
		}
		for i := range w {
			w[i] = float32(mean + std*rng.NormFloat64())
		}
	}
	return m
}

// TestHFBraidTinyFixture: testdata/braid_tiny is what this braid writes and
// computes. With -update it is rewritten; either way the checkpoint bytes
// must equal a fresh SaveCheckpoint of the same model and the stored logits
// must match a fresh forward pass, so the reverse check
// (gen_reference.py --check-braid) always tests the current writer.
func TestHFBraidTinyFixture(t *testing.T) {
	m := randomTiny(t, 1)
	rng := rand.New(rand.NewPCG(2, 0))
	tokens := make([]int32, braidTinyB*braidTinyT) // (B, T)
	for i := range tokens {
		tokens[i] = int32(rng.IntN(braidTiny.Vocab))
	}
	if *update {
		if err := model.SaveCheckpoint(braidTinyDir, braidTiny, model.ByteTokenizer{}, m.Params); err != nil {
			t.Fatal(err)
		}
		if _, err := m.Forward(tokens, nil, braidTinyB, braidTinyT); err != nil {
			t.Fatal(err)
		}
		ref := []safetensors.Tensor{
			safetensors.I32Tensor("tokens", []int{braidTinyB, braidTinyT}, tokens),
			safetensors.F32Tensor("logits", []int{braidTinyB, braidTinyT, braidTiny.Vocab}, m.Logits()),
		}
		md := map[string]string{"generator": "go test ./model -run HF -update", "precision": "braid float32 forward pass"}
		if err := safetensors.WriteFile(filepath.Join(braidTinyDir, "reference.safetensors"), ref, md); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s; now run /usr/bin/python3 scripts/gen_reference.py --check-braid model/%s", braidTinyDir, braidTinyDir)
	}

	fresh := t.TempDir()
	if err := model.SaveCheckpoint(fresh, braidTiny, model.ByteTokenizer{}, m.Params); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{model.WeightsFile, model.ConfigFile} {
		a, errA := os.ReadFile(filepath.Join(braidTinyDir, name))
		b, errB := os.ReadFile(filepath.Join(fresh, name))
		if errA != nil || errB != nil || !bytes.Equal(a, b) {
			t.Errorf("%s/%s differs from what SaveCheckpoint writes now (%v, %v): run go test ./model -run HF -update, then gen_reference.py --check-braid", braidTinyDir, name, errA, errB)
		}
	}
	got, _, err := model.Load(braidTinyDir, braidTinyB, braidTinyT)
	if err != nil {
		t.Fatal(err)
	}
	ref := refFixture{t, mustRead(t, filepath.Join(braidTinyDir, "reference.safetensors"))}
	if !slices.Equal(ref.i32("tokens"), tokens) {
		t.Fatal("stored tokens differ from the test's")
	}
	if _, err := got.Forward(tokens, nil, braidTinyB, braidTinyT); err != nil {
		t.Fatal(err)
	}
	// The stored logits came from one matmul implementation on one machine;
	// another may round differently, hence a tolerance, not equality.
	d, _ := maxAbsDiff(got.Logits(), ref.f32("logits"))
	t.Logf("stored logits vs this forward pass: max abs diff %.2e", d)
	if d > hfTol {
		t.Errorf("stored logits differ by %.3g > %g", d, hfTol)
	}
}

// TestHFConfigDefaultTokenizer: without a braid_tokenizer key, vocab_size
// 50257 means GPT-2's BPE and any other size the byte tokenizer (which must
// fit).
func TestHFConfigDefaultTokenizer(t *testing.T) {
	for _, c := range []struct {
		config string
		want   string // tokenizer name, or "error: ..." substring
	}{
		{`{"model_type":"gpt2","vocab_size":300,"n_positions":16,"n_embd":32,"n_layer":2,"n_head":4}`, "byte"},
		{`{"model_type":"gpt2","vocab_size":257,"n_positions":16,"n_embd":32,"n_layer":2,"n_head":4}`, "byte"},
		{`{"model_type":"gpt2","vocab_size":50257,"n_positions":16,"n_embd":32,"n_layer":2,"n_head":4}`, "gpt2"},
		{`{"model_type":"gpt2","vocab_size":50304,"n_positions":16,"n_embd":32,"n_layer":2,"n_head":4}`, "gpt2"}, // GPT-2 padded to a multiple of 64
		{`{"model_type":"gpt2","vocab_size":50257,"n_positions":16,"n_embd":32,"n_layer":2,"n_head":4,"braid_tokenizer":"byte"}`, "byte"},
		{`{"model_type":"gpt2","vocab_size":64,"n_positions":16,"n_embd":32,"n_layer":2,"n_head":4}`, "error: 257 ids"},
	} {
		dir := t.TempDir()
		write(t, filepath.Join(dir, model.ConfigFile), c.config)
		_, tok, err := model.ReadConfig(dir)
		switch {
		case strings.HasPrefix(c.want, "error: "):
			if err == nil || !strings.Contains(err.Error(), strings.TrimPrefix(c.want, "error: ")) {
				t.Errorf("%s: err %v, want one mentioning %q", c.config, err, strings.TrimPrefix(c.want, "error: "))
			}
		case c.want == "gpt2" && err != nil && strings.Contains(err.Error(), `unknown tokenizer "gpt2"`):
			t.Logf("%s: this build has no gpt2 tokenizer yet: %v", c.config, err)
		case err != nil:
			t.Errorf("%s: %v", c.config, err)
		case tok.Name() != c.want:
			t.Errorf("%s: tokenizer %s, want %s", c.config, tok.Name(), c.want)
		}
	}
}

// TestHFBadCheckpoint: each kind of bad input the issue lists — a
// safetensors file whose header length exceeds the file, overlapping or
// out-of-range offsets, an unknown dtype, a tensor missing or extra, a
// config that contradicts the tensors — is an ErrCheckpoint naming the file
// and the tensor (or, where no tensor is involved, the problem), starting
// from a valid Hugging Face file.
func TestHFBadCheckpoint(t *testing.T) {
	W, C := model.WeightsFile, model.ConfigFile
	cases := []struct {
		name    string
		src     string // fixture to start from
		corrupt func(t *testing.T, dir string)
		want    []string // substrings of the error
	}{
		// The safetensors container.
		{"header length exceeds the file", "hf_tiny", func(t *testing.T, dir string) {
			path := filepath.Join(dir, W)
			st, _ := os.Stat(path)
			overwrite(t, path, 0, binary.LittleEndian.AppendUint64(nil, uint64(st.Size())))
		}, []string{W, "header length"}},
		{"header length absurd", "hf_tiny", func(t *testing.T, dir string) {
			overwrite(t, filepath.Join(dir, W), 0, binary.LittleEndian.AppendUint64(nil, 1<<62))
		}, []string{W, "header length"}},
		{"overlapping offsets", "hf_tiny", func(t *testing.T, dir string) {
			rawHeader(t, dir, func(name string, e *rawEntry) {
				if name == "h.0.ln_1.bias" {
					e.Offsets[0] -= 4
					e.Offsets[1] -= 4
				}
			})
		}, []string{W, `"h.0.ln_1.bias"`, "overlaps"}},
		{"offsets beyond the data", "hf_tiny", func(t *testing.T, dir string) {
			rawHeader(t, dir, func(name string, e *rawEntry) {
				if name == "wte.weight" {
					e.Offsets[0] += 8
					e.Offsets[1] += 8
				}
			})
		}, []string{W, `"wte.weight"`, "beyond"}},
		{"offsets disagree with the shape", "hf_tiny", func(t *testing.T, dir string) {
			rawHeader(t, dir, func(name string, e *rawEntry) {
				if name == "wpe.weight" {
					e.Offsets[1] -= 4
				}
			})
		}, []string{W, `"wpe.weight"`, "shape"}},
		{"unknown dtype", "hf_tiny", func(t *testing.T, dir string) {
			rawHeader(t, dir, func(name string, e *rawEntry) {
				if name == "h.1.mlp.c_fc.weight" {
					e.Dtype = "Q4_K"
				}
			})
		}, []string{W, `"h.1.mlp.c_fc.weight"`, "dtype", "Q4_K"}},
		{"integer dtype for a parameter", "hf_tiny", func(t *testing.T, dir string) {
			rawHeader(t, dir, func(name string, e *rawEntry) {
				if name == "h.0.ln_2.weight" {
					e.Dtype = "I32"
				}
			})
		}, []string{W, "h.0.ln_2.weight", "dtype I32"}},

		// The tensor set.
		{"tensor missing", "hf_tiny", func(t *testing.T, dir string) {
			editTensors(t, dir, func(ts []safetensors.Tensor) []safetensors.Tensor {
				return slices.DeleteFunc(ts, func(x safetensors.Tensor) bool { return x.Name == "h.1.attn.c_proj.bias" })
			})
		}, []string{W, "h.1.attn.c_proj.bias", "missing"}},
		{"prefixed tensor missing", "hf_tiny_prefixed", func(t *testing.T, dir string) {
			editTensors(t, dir, func(ts []safetensors.Tensor) []safetensors.Tensor {
				return slices.DeleteFunc(ts, func(x safetensors.Tensor) bool { return x.Name == "transformer.ln_f.bias" })
			})
		}, []string{W, "ln_f.bias", "missing"}},
		{"tensor extra", "hf_tiny", func(t *testing.T, dir string) {
			editTensors(t, dir, func(ts []safetensors.Tensor) []safetensors.Tensor {
				return append(ts, safetensors.F32Tensor("h.0.attn.rotary_emb.inv_freq", []int{6}, make([]float32, 6)))
			})
		}, []string{W, "h.0.attn.rotary_emb.inv_freq", "unexpected"}},
		{"mask buffer of a layer the config lacks", "hf_tiny", func(t *testing.T, dir string) {
			editTensors(t, dir, func(ts []safetensors.Tensor) []safetensors.Tensor {
				return append(ts, safetensors.F32Tensor("h.2.attn.bias", []int{1}, []float32{1}))
			})
		}, []string{W, "h.2.attn.bias", "unexpected"}},
		{"tensor with and without the prefix", "hf_tiny", func(t *testing.T, dir string) {
			editTensors(t, dir, func(ts []safetensors.Tensor) []safetensors.Tensor {
				i := slices.IndexFunc(ts, func(x safetensors.Tensor) bool { return x.Name == "wpe.weight" })
				dup := ts[i]
				dup.Name = "transformer.wpe.weight"
				return append(ts, dup)
			})
		}, []string{W, "wpe.weight", "twice"}},
		{"untied lm_head", "hf_tiny_prefixed", func(t *testing.T, dir string) {
			editTensors(t, dir, func(ts []safetensors.Tensor) []safetensors.Tensor {
				i := slices.IndexFunc(ts, func(x safetensors.Tensor) bool { return x.Name == "lm_head.weight" })
				ts[i].Data = slices.Clone(ts[i].Data)
				ts[i].Data[2*100] ^= 0x01 // element 100's lowest mantissa bit
				return ts
			})
		}, []string{W, "lm_head.weight", "element 100", "untied"}},
		{"lm_head of another shape", "hf_tiny_prefixed", func(t *testing.T, dir string) {
			editTensors(t, dir, func(ts []safetensors.Tensor) []safetensors.Tensor {
				i := slices.IndexFunc(ts, func(x safetensors.Tensor) bool { return x.Name == "lm_head.weight" })
				ts[i].Shape = []int{299, 48}
				ts[i].Data = ts[i].Data[:2*299*48]
				return ts
			})
		}, []string{W, "lm_head.weight", "[299 48]", "untied"}},

		// config.json against the tensors, and against what braid computes.
		{"config has fewer layers", "hf_tiny", func(t *testing.T, dir string) { editConfig(t, dir, "n_layer", 1) },
			[]string{W, "unexpected tensor h.1.", "n_layer = 1"}},
		{"config has more layers", "hf_tiny_prefixed", func(t *testing.T, dir string) { editConfig(t, dir, "n_layer", 3) },
			[]string{W, "h.2.", "missing"}},
		{"config vocab_size disagrees", "hf_tiny", func(t *testing.T, dir string) { editConfig(t, dir, "vocab_size", 301) },
			[]string{W, "wte.weight", "[300 48]", "[301 48]"}},
		{"config n_positions disagrees", "hf_tiny", func(t *testing.T, dir string) { editConfig(t, dir, "n_positions", 64) },
			[]string{W, "wpe.weight", "[32 48]", "[64 48]"}},
		{"config n_embd disagrees", "hf_tiny_prefixed", func(t *testing.T, dir string) { editConfig(t, dir, "n_embd", 64) },
			[]string{W, "wte.weight", "shape"}},
		{"config n_inner", "hf_tiny", func(t *testing.T, dir string) { editConfig(t, dir, "n_inner", 100) },
			[]string{C, "n_inner"}},
		{"config layer_norm_epsilon", "hf_tiny", func(t *testing.T, dir string) { editConfig(t, dir, "layer_norm_epsilon", 1e-6) },
			[]string{C, "layer_norm_epsilon"}},
		{"config activation", "hf_tiny", func(t *testing.T, dir string) { editConfig(t, dir, "activation_function", "relu") },
			[]string{C, "activation_function", "relu"}},
		{"config scale_attn_by_inverse_layer_idx", "hf_tiny", func(t *testing.T, dir string) {
			editConfig(t, dir, "scale_attn_by_inverse_layer_idx", true)
		}, []string{C, "scale_attn_by_inverse_layer_idx"}},
		{"config scale_attn_weights", "hf_tiny", func(t *testing.T, dir string) { editConfig(t, dir, "scale_attn_weights", false) },
			[]string{C, "scale_attn_weights"}},
		{"config untied embeddings", "hf_tiny_prefixed", func(t *testing.T, dir string) {
			editConfig(t, dir, "tie_word_embeddings", false)
		}, []string{C, "untied"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := copyFixture(t, "testdata/"+c.src)
			c.corrupt(t, dir)
			_, err := model.LoadCheckpoint(dir)
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, model.ErrCheckpoint) {
				t.Errorf("error %q does not wrap ErrCheckpoint", err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			t.Log(err)
		})
	}
}

// copyFixture copies config.json and model.safetensors of a fixture
// directory into a temporary one.
func copyFixture(t *testing.T, src string) string {
	t.Helper()
	dir := t.TempDir()
	for _, name := range []string{model.ConfigFile, model.WeightsFile} {
		b, err := os.ReadFile(filepath.Join(src, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// editTensors rewrites dir's model.safetensors (a valid file) with the
// tensors edit returns.
func editTensors(t *testing.T, dir string, edit func([]safetensors.Tensor) []safetensors.Tensor) {
	t.Helper()
	path := filepath.Join(dir, model.WeightsFile)
	f := mustRead(t, path)
	if err := safetensors.WriteFile(path, edit(f.Tensors), f.Metadata); err != nil {
		t.Fatal(err)
	}
}

// rawEntry is one tensor's header entry, written as is by rawHeader.
type rawEntry struct {
	Dtype   string `json:"dtype"`
	Shape   []int  `json:"shape"`
	Offsets [2]int `json:"data_offsets"`
}

// rawHeader rewrites dir's model.safetensors with the same data section and
// a header whose entries edit may change without any validation, to make
// files the encoder refuses to write.
func rawHeader(t *testing.T, dir string, edit func(name string, e *rawEntry)) {
	t.Helper()
	path := filepath.Join(dir, model.WeightsFile)
	f := mustRead(t, path)
	header := map[string]any{"__metadata__": f.Metadata}
	var data []byte
	for _, x := range f.Tensors { // file order: by offset
		e := &rawEntry{Dtype: string(x.Dtype), Shape: x.Shape, Offsets: [2]int{len(data), len(data) + len(x.Data)}}
		data = append(data, x.Data...)
		edit(x.Name, e)
		header[x.Name] = e
	}
	h, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(h)))
	if err := os.WriteFile(path, append(append(out, h...), data...), 0o644); err != nil {
		t.Fatal(err)
	}
}

// editConfig sets one key of dir's config.json.
func editConfig(t *testing.T, dir, key string, value any) {
	t.Helper()
	path := filepath.Join(dir, model.ConfigFile)
	cfg := readJSON(t, path)
	cfg[key] = value
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	write(t, path, string(b))
}
