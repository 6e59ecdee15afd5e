package model_test

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/braidml/braid/model"
	"github.com/braidml/braid/model/safetensors"
)

// bf16Configs are small Llama-family shapes for the bf16-held base: tied
// and untied heads, grouped queries, Qwen2's biases. The vocabulary is
// larger than the scratch's rows (2·Hidden), so the head is widened in
// several chunks, the last one partial.
var bf16Configs = map[string]model.Config{
	"llama tied GQA": {Arch: model.ArchLlama, Vocab: 300, Context: 16, Dim: 16, Layers: 2, Heads: 4, KVHeads: 2,
		Hidden: 40, HeadDim: 4, NormEps: 1e-6, RopeTheta: 10000},
	"llama untied": {Arch: model.ArchLlama, Vocab: 300, Context: 16, Dim: 16, Layers: 2, Heads: 4, KVHeads: 4,
		Hidden: 40, HeadDim: 4, NormEps: 1e-6, RopeTheta: 10000, Untied: true},
	"qwen2 biases": {Arch: model.ArchQwen2, Vocab: 300, Context: 16, Dim: 16, Layers: 2, Heads: 4, KVHeads: 2,
		Hidden: 40, HeadDim: 4, NormEps: 1e-6, RopeTheta: 10000},
}

// TestFrozenBF16MatchesRounded: a model holding its base in bf16 computes
// what a float32 model computes whose matrices were rounded to bf16 — the
// logits, the loss and every gradient of the adapter, within 1e-5 — by
// both routes to it (HoldBaseBF16 on a loaded model, NewFrozenBF16 with
// SetBaseWeights), and BaseWeights gives the rounded weights back exactly.
func TestFrozenBF16MatchesRounded(t *testing.T) {
	for name, c := range bf16Configs {
		t.Run(name, func(t *testing.T) {
			const B, T = 2, 7
			rng := rand.New(rand.NewPCG(1, 2))
			params := make([]float32, c.NumParams())
			for i := range params {
				params[i] = float32(rng.NormFloat64() * 0.3) // large enough that rounding shows
			}
			rounded := make([]float32, len(params))
			copy(rounded, params)
			for _, p := range c.Layout() {
				if len(p.Shape) == 2 {
					for i := p.Offset; i < p.Offset+p.Size; i++ {
						rounded[i] = safetensors.BF16ToFloat32(safetensors.BF16FromFloat32(params[i]))
					}
				}
			}
			tokens, targets := make([]int32, B*T), make([]int32, B*T)
			for i := range tokens {
				tokens[i], targets[i] = int32(rng.IntN(c.Vocab)), int32(rng.IntN(c.Vocab))
			}
			targets[3] = -1
			adapter := func() *model.LoRA {
				a, err := model.NewLoRA(c, model.LoRAConfig{Rank: 3, Alpha: 6, Targets: model.DefaultLlamaLoRATargets})
				if err != nil {
					t.Fatal(err)
				}
				a.Init(4)
				for i := range a.Params { // B non-zero, so that every gradient is
					a.Params[i] += 0.05
				}
				return a
			}
			run := func(m *model.Model) (loss float32, logits, grads []float32) {
				t.Helper()
				a := adapter()
				if err := m.AttachLoRA(a); err != nil {
					t.Fatal(err)
				}
				if !m.BaseHeldBF16() {
					if err := m.DropBaseGrads(); err != nil {
						t.Fatal(err)
					}
				}
				return forwardBackward(t, m, a, tokens, targets, B, T)
			}

			ref, err := model.New(c, B, T)
			if err != nil {
				t.Fatal(err)
			}
			copy(ref.Params, rounded)
			wantLoss, wantLogits, wantGrads := run(ref)

			// Route 1: a float32 model, frozen, then held in bf16.
			held, err := model.New(c, B, T)
			if err != nil {
				t.Fatal(err)
			}
			copy(held.Params, params)
			if held.BaseIsBF16() {
				t.Fatal("BaseIsBF16 of random float32 weights")
			}
			a := adapter()
			if err := held.AttachLoRA(a); err != nil {
				t.Fatal(err)
			}
			if err := held.HoldBaseBF16(); !errors.Is(err, model.ErrBF16Base) {
				t.Fatalf("HoldBaseBF16 with the base's gradients still there: %v, want ErrBF16Base", err)
			}
			if err := held.DropBaseGrads(); err != nil {
				t.Fatal(err)
			}
			if err := held.HoldBaseBF16(); err != nil {
				t.Fatal(err)
			}
			if held.Params != nil || !held.BaseHeldBF16() || !held.BaseIsBF16() {
				t.Fatalf("after HoldBaseBF16: Params %d long, held %v", len(held.Params), held.BaseHeldBF16())
			}
			loss, logits, grads := forwardBackward(t, held, a, tokens, targets, B, T)
			compare(t, "HoldBaseBF16", loss, logits, grads, wantLoss, wantLogits, wantGrads)

			// Route 2: never a float32 base.
			fresh, err := model.NewFrozenBF16(c, B, T)
			if err != nil {
				t.Fatal(err)
			}
			fresh.SetBaseWeights(params)
			if got := fresh.BaseWeights(); !equalBits(got, rounded) {
				t.Fatal("BaseWeights is not the base rounded to bf16 (vectors kept)")
			}
			loss, logits, grads = run(fresh)
			compare(t, "NewFrozenBF16", loss, logits, grads, wantLoss, wantLogits, wantGrads)
			step := func() {
				fresh.ZeroGrad()
				if _, err := fresh.Forward(tokens, targets, B, T); err != nil {
					t.Fatal(err)
				}
				if err := fresh.Backward(1); err != nil {
					t.Fatal(err)
				}
			}
			if n := allocsPerRun(10, step); n != 0 && !raceEnabled {
				t.Errorf("a step on the bf16-held base allocates %v times", n)
			}

			// Inference without an adapter: the logits alone.
			fresh.DetachLoRA()
			if _, err := fresh.Forward(tokens, nil, B, T); err != nil {
				t.Fatal(err)
			}
			ref.DetachLoRA()
			if _, err := ref.Forward(tokens, nil, B, T); err != nil {
				t.Fatal(err)
			}
			if d, _ := maxAbsDiff(fresh.Logits(), ref.Logits()); d > 1e-5 {
				t.Errorf("logits without an adapter differ by %g", d)
			}
			if err := fresh.Backward(1); err == nil {
				t.Error("Backward on a bf16-held base without an adapter succeeded")
			}
		})
	}
}

// TestFrozenBF16Init: Init on a bf16-held base draws what Init draws for a
// float32 one, rounded.
func TestFrozenBF16Init(t *testing.T) {
	c := bf16Configs["qwen2 biases"]
	f32, err := model.New(c, 1, 4)
	if err != nil {
		t.Fatal(err)
	}
	f32.Init(9)
	b16, err := model.NewFrozenBF16(c, 1, 4)
	if err != nil {
		t.Fatal(err)
	}
	b16.Init(9)
	for i, p := range c.Layout() {
		want := f32.Params[p.Offset : p.Offset+p.Size]
		got := b16.BaseWeights()[p.Offset : p.Offset+p.Size]
		for j := range want {
			w := want[j]
			if len(p.Shape) == 2 {
				w = safetensors.BF16ToFloat32(safetensors.BF16FromFloat32(w))
			}
			if got[j] != w {
				t.Fatalf("tensor %d %s[%d] = %g, want %g", i, p.Name, j, got[j], w)
			}
		}
	}
	if _, err := model.NewFrozenBF16(model.Config{Arch: model.ArchGPT2, Vocab: 10, Context: 4, Dim: 4, Layers: 1, Heads: 1}, 1, 4); !errors.Is(err, model.ErrBF16Base) {
		t.Errorf("NewFrozenBF16 of a GPT-2: %v, want ErrBF16Base", err)
	}
}

// forwardBackward runs one step of the adapter a attached to m and returns
// the loss, the logits and the adapter's gradients (copies).
func forwardBackward(t *testing.T, m *model.Model, a *model.LoRA, tokens, targets []int32, B, T int) (float32, []float32, []float32) {
	t.Helper()
	m.ZeroGrad()
	loss, err := m.Forward(tokens, targets, B, T)
	if err != nil {
		t.Fatal(err)
	}
	logits := append([]float32(nil), m.Logits()...)
	if err := m.Backward(1); err != nil {
		t.Fatal(err)
	}
	return loss, logits, append([]float32(nil), a.Grads...)
}

func compare(t *testing.T, what string, loss float32, logits, grads []float32, wantLoss float32, wantLogits, wantGrads []float32) {
	t.Helper()
	if d := math.Abs(float64(loss - wantLoss)); d > 1e-5 {
		t.Errorf("%s: loss %g, want %g", what, loss, wantLoss)
	}
	if d, _ := maxAbsDiff(logits, wantLogits); d > 1e-5 {
		t.Errorf("%s: logits differ by up to %g", what, d)
	}
	if d, _ := maxAbsDiff(grads, wantGrads); d > 1e-5 {
		t.Errorf("%s: adapter gradients differ by up to %g", what, d)
	}
	nonzero := 0
	for _, g := range grads {
		if g != 0 {
			nonzero++
		}
	}
	if nonzero < len(grads)/2 {
		t.Errorf("%s: only %d of %d adapter gradients are non-zero", what, nonzero, len(grads))
	}
}

func equalBits(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}

// TestMergeAdapterFilesKeepsDtype: merging an adapter into a base stored
// in bf16 writes the merged model in bf16 (torch_dtype bfloat16), its
// weights the float32 merge rounded once; a float32 base stays float32.
func TestMergeAdapterFilesKeepsDtype(t *testing.T) {
	c := bf16Configs["llama tied GQA"]
	for _, dtype := range []safetensors.Dtype{safetensors.BF16, safetensors.F32} {
		t.Run(string(dtype), func(t *testing.T) {
			tmp := t.TempDir()
			base, ad, out := tmp+"/base", tmp+"/adapter", tmp+"/merged"
			m, err := model.New(c, 1, 4)
			if err != nil {
				t.Fatal(err)
			}
			m.Init(5)
			if err := model.SaveCheckpointAs(base, c, model.ByteTokenizer{}, m.Params, model.WeightsFormat{Dtype: dtype}); err != nil {
				t.Fatal(err)
			}
			a, err := model.NewLoRA(c, model.LoRAConfig{Rank: 2, Alpha: 4, Targets: []string{"q_proj", "down_proj"}})
			if err != nil {
				t.Fatal(err)
			}
			a.Init(6)
			for i := range a.Params {
				a.Params[i] += 0.1
			}
			if err := model.SaveAdapter(ad, a); err != nil {
				t.Fatal(err)
			}
			if err := model.MergeAdapterFiles(base, ad, out); err != nil {
				t.Fatal(err)
			}
			ck, err := model.LoadCheckpoint(out)
			if err != nil {
				t.Fatal(err)
			}
			if ck.Format.Dtype != dtype {
				t.Errorf("merged model stored in %s, the base in %s", ck.Format.Dtype, dtype)
			}
			cfg, err := os.ReadFile(out + "/config.json")
			if err != nil {
				t.Fatal(err)
			}
			wantTorch := map[safetensors.Dtype]string{safetensors.BF16: `"torch_dtype": "bfloat16"`, safetensors.F32: `"torch_dtype": "float32"`}[dtype]
			if !strings.Contains(string(cfg), wantTorch) {
				t.Errorf("config.json lacks %s:\n%s", wantTorch, cfg)
			}
			baseCk, err := model.LoadCheckpoint(base)
			if err != nil {
				t.Fatal(err)
			}
			want, err := model.MergeLoRA(c, baseCk.Params, a)
			if err != nil {
				t.Fatal(err)
			}
			if dtype == safetensors.BF16 {
				for i, w := range want {
					want[i] = safetensors.BF16ToFloat32(safetensors.BF16FromFloat32(w))
				}
			}
			if !equalBits(ck.Params, want) {
				t.Error("the merged weights are not the merge of the base and the adapter in the base's dtype")
			}
		})
	}
}

// TestLlamaBF16Reference: llama_bf16_tiny, stored in BF16 as transformers
// saves a bfloat16 model, loads as BF16 and computes PyTorch's float64
// logits and loss of its bf16 weights (within llamaTol), as a float32
// model and held in bf16 alike. cmd/braid's TestEvalBF16Checkpoint checks
// `braid eval`'s loss on its eval.txt.
func TestLlamaBF16Reference(t *testing.T) {
	const dir = "testdata/llama_bf16_tiny"
	ref, tokens, targets, B, T := llamaRef(t, dir)
	ck, err := model.LoadCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	if ck.Format.Dtype != safetensors.BF16 {
		t.Fatalf("%s loads as %s, want BF16", dir, ck.Format.Dtype)
	}
	f32, err := model.NewInference(ck.Config, B, T)
	if err != nil {
		t.Fatal(err)
	}
	f32.SetBaseWeights(ck.Params)
	held, err := model.NewFrozenBF16(ck.Config, B, T)
	if err != nil {
		t.Fatal(err)
	}
	held.SetBaseWeights(ck.Params)
	if !equalBits(held.BaseWeights(), ck.Params) {
		t.Fatal("holding a bf16-stored checkpoint in bf16 changed its weights")
	}
	want := ref.f32("loss")[0]
	for name, m := range map[string]*model.Model{"float32": f32, "bf16-held": held} {
		loss, err := m.Forward(tokens, targets, B, T)
		if err != nil {
			t.Fatal(err)
		}
		within(t, name+" logits", m.Logits(), ref.f32("logits"))
		if d := math.Abs(float64(loss-want)) / float64(want); d > 5e-4 || math.Abs(float64(loss-want)) > llamaTol {
			t.Errorf("%s: loss %.7f, PyTorch %.7f", name, loss, want)
		}
	}
}

// TestLoadCheckpointHeld: a bf16-stored checkpoint loads straight into a
// HeldBase (no float32 Params) that computes as the float32 load does; an
// F32 one loads as LoadCheckpoint does unless asked to round, and then
// holds what SetBaseWeights rounds; a GPT-2 is never held.
func TestLoadCheckpointHeld(t *testing.T) {
	logits := func(m *model.Model, tokens []int32, B, T int) []float32 {
		t.Helper()
		if _, err := m.Forward(tokens, nil, B, T); err != nil {
			t.Fatal(err)
		}
		return append([]float32(nil), m.Logits()...)
	}
	for _, tc := range []struct {
		dir         string
		round, bf16 bool
	}{
		{"testdata/llama_bf16_tiny", false, true},
		{"testdata/llama_tiny", false, false},
		{"testdata/llama_tiny", true, true},
		{"testdata/qwen2_tiny", true, true},
		{"testdata/hf_tiny_bf16_sharded", true, false}, // GPT-2
	} {
		t.Run(fmt.Sprintf("%s round=%v", filepath.Base(tc.dir), tc.round), func(t *testing.T) {
			ck, held, err := model.LoadCheckpointHeld(tc.dir, tc.round)
			if err != nil {
				t.Fatal(err)
			}
			if (held != nil) != tc.bf16 || (ck.Params == nil) != tc.bf16 {
				t.Fatalf("held %v, Params %d long; want held %v", held != nil, len(ck.Params), tc.bf16)
			}
			ref, err := model.LoadCheckpoint(tc.dir)
			if err != nil {
				t.Fatal(err)
			}
			if ck.Config != ref.Config || ck.Format != ref.Format {
				t.Errorf("config or format differ from LoadCheckpoint's: %+v %+v", ck.Format, ref.Format)
			}
			if !tc.bf16 {
				if !equalBits(ck.Params, ref.Params) {
					t.Error("not held, yet other weights than LoadCheckpoint's")
				}
				return
			}
			const B, T = 1, 9
			m, err := model.NewFrozenBF16From(held, B, T)
			if err != nil {
				t.Fatal(err)
			}
			want, err := model.NewFrozenBF16(ref.Config, B, T)
			if err != nil {
				t.Fatal(err)
			}
			want.SetBaseWeights(ref.Params)
			if !equalBits(m.BaseWeights(), want.BaseWeights()) {
				t.Fatal("the held base differs from the float32 load rounded to bf16")
			}
			tokens := []int32{1, 5, 9, 200, 17, 3, 3, 250, 0}
			if d, _ := maxAbsDiff(logits(m, tokens, B, T), logits(want, tokens, B, T)); d != 0 {
				t.Errorf("logits differ by %g", d)
			}
			if _, err := model.NewFrozenBF16From(held, B, T); err == nil {
				t.Error("a HeldBase went into two models")
			}
		})
	}
}

// TestMergedWeights: merging an adapter into a bf16-held base gives
// MergeLoRA of the base's (rounded) weights, bit for bit.
func TestMergedWeights(t *testing.T) {
	c := bf16Configs["qwen2 biases"]
	m, err := model.NewFrozenBF16(c, 1, 4)
	if err != nil {
		t.Fatal(err)
	}
	m.Init(3)
	a, err := model.NewLoRA(c, model.LoRAConfig{Rank: 2, Alpha: 4, Targets: []string{"k_proj", "up_proj"}})
	if err != nil {
		t.Fatal(err)
	}
	a.Init(4)
	for i := range a.Params {
		a.Params[i] += 0.1
	}
	want, err := model.MergeLoRA(c, m.BaseWeights(), a)
	if err != nil {
		t.Fatal(err)
	}
	got, err := m.MergedWeights(a)
	if err != nil || !equalBits(got, want) {
		t.Fatalf("MergedWeights: %v, or other weights than MergeLoRA's", err)
	}
	if equalBits(got, m.BaseWeights()) {
		t.Fatal("the merge changed nothing")
	}
}

// FuzzLoadCheckpointHeld: arbitrary weights and config bytes read into a
// bf16-held base give a base, a float32 checkpoint or an error, never a
// panic; a base read agrees with LoadCheckpoint's weights rounded.
func FuzzLoadCheckpointHeld(f *testing.F) {
	for _, dir := range []string{"testdata/llama_bf16_tiny", "testdata/qwen2_tiny", "testdata/llama_tiny"} {
		weights, _ := os.ReadFile(filepath.Join(dir, model.WeightsFile))
		config, _ := os.ReadFile(filepath.Join(dir, model.ConfigFile))
		f.Add(weights, config, false)
		f.Add(weights, config, true)
		f.Add(weights[:len(weights)/2], config, true)
	}
	f.Fuzz(func(t *testing.T, weights, config []byte, round bool) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, model.WeightsFile), weights, 0o644)
		os.WriteFile(filepath.Join(dir, model.ConfigFile), config, 0o644)
		ck, held, err := model.LoadCheckpointHeld(dir, round)
		if err != nil {
			return
		}
		if held == nil {
			if len(ck.Params) != ck.Config.NumParams() {
				t.Fatalf("loaded %d params for a config of %d", len(ck.Params), ck.Config.NumParams())
			}
			return
		}
		ref, err := model.LoadCheckpoint(dir)
		if err != nil {
			t.Fatalf("held, yet LoadCheckpoint fails: %v", err)
		}
		m, err := model.NewFrozenBF16From(held, 1, 1)
		if err != nil {
			return // a config too large for MemoryLimit
		}
		want, err := model.NewFrozenBF16(ref.Config, 1, 1)
		if err != nil {
			t.Fatal(err)
		}
		want.SetBaseWeights(ref.Params)
		got, wantW := m.BaseWeights(), want.BaseWeights()
		for i := range got {
			// A NaN's payload may differ: rounding quiets a signalling one.
			if math.Float32bits(got[i]) != math.Float32bits(wantW[i]) && !(math.IsNaN(float64(got[i])) && math.IsNaN(float64(wantW[i]))) {
				t.Fatalf("weight %d: held %g, LoadCheckpoint's rounded %g", i, got[i], wantW[i])
			}
		}
	})
}
