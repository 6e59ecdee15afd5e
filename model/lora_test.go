package model_test

// LoRA adapters, checked against the PEFT-style LoRA layers of
// scripts/gen_reference.py both ways:
//
//   - testdata/lora_tiny and testdata/lora_tiny_subset are adapters for
//     testdata/hf_tiny in PEFT's layout, written by the script with the
//     float64 logits, loss and adapter gradients of base + adapter (and the
//     logits of the merged model); braid must load them as they are and
//     reproduce all of it.
//   - testdata/braid_lora_tiny is an adapter written by SaveAdapter
//     (`go test ./model -run LoRA -update`); the script's --check-adapter
//     loads it the way PEFT would and compares the logits braid stored.

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/braidml/braid/kernels"
	"github.com/braidml/braid/model"
	"github.com/braidml/braid/model/safetensors"
)

// loraFixtures are the PEFT adapters gen_reference.py writes for hf_tiny.
var loraFixtures = []struct {
	dir     string
	targets []string // canonical target_modules
	r       int
	alpha   float64
}{
	{"testdata/lora_tiny", []string{"c_attn", "c_proj", "c_fc"}, 4, 12},
	{"testdata/lora_tiny_subset", []string{"c_attn", "mlp.c_proj"}, 3, 4.5},
}

// loraTol bounds |braid − PyTorch float64| for logits and merged logits on
// the tiny model (as hfTol), and, relative to 1 + max |value|, for the
// adapter gradients.
const loraTol = 1e-5

// hfTinyTraining returns the hf_tiny base as a training model with
// activations for its reference batch.
func hfTinyTraining(t *testing.T, B, T int) (*model.Model, *model.Checkpoint) {
	t.Helper()
	return loadForTraining(t, "testdata/hf_tiny", B, T)
}

// TestLoRAMatchesPyTorch: a PEFT adapter for a GPT-2 loads as it is; the
// base with it attached gives PyTorch's logits, loss and adapter gradients,
// under every matmul implementation; Backward leaves the frozen base's
// weights and gradients alone; and the merged model gives the same logits
// as the base with the adapter.
func TestLoRAMatchesPyTorch(t *testing.T) {
	for _, fx := range loraFixtures {
		for _, impl := range kernels.Implementations() {
			t.Run(filepath.Base(fx.dir)+"/"+impl.String(), func(t *testing.T) {
				defer kernels.SetImpl(kernels.SetImpl(impl))
				ref := refFixture{t, mustRead(t, filepath.Join(fx.dir, "reference.safetensors"))}
				tt, _ := ref.f.Tensor("tokens")
				B, T := tt.Shape[0], tt.Shape[1]
				m, ck := hfTinyTraining(t, B, T)
				a, err := model.LoadAdapter(fx.dir, ck.Config)
				if err != nil {
					t.Fatal(err)
				}
				if a.Config.Rank != fx.r || a.Config.Alpha != fx.alpha || !slices.Equal(a.Config.Targets, fx.targets) {
					t.Fatalf("config %+v, want r=%d alpha=%g targets %v", a.Config, fx.r, fx.alpha, fx.targets)
				}
				if err := m.AttachLoRA(a); err != nil {
					t.Fatal(err)
				}
				loss, err := m.Forward(ref.i32("tokens"), ref.i32("targets"), B, T)
				if err != nil {
					t.Fatal(err)
				}
				withAdapter := slices.Clone(m.Logits())
				d, maxl := maxAbsDiff(withAdapter, ref.f32("logits"))
				t.Logf("base + adapter logits: max abs diff %.2e (max |logit| %.2f)", d, maxl)
				if d > loraTol {
					t.Errorf("logits differ from PyTorch by %.3g > %g", d, loraTol)
				}
				if want := ref.f32("loss")[0]; math.Abs(float64(loss-want)) > loraTol {
					t.Errorf("loss %v, PyTorch %v", loss, want)
				}

				m.ZeroGrad()
				if err := m.Backward(1); err != nil {
					t.Fatal(err)
				}
				var worst float64
				for _, p := range a.Layout() {
					d, maxg := maxAbsDiff(a.Grads[p.Offset:p.Offset+p.Size], ref.f32("grad."+p.Name))
					worst = max(worst, d/(1+maxg))
					if d > loraTol*(1+maxg) {
						t.Errorf("gradient of %s differs from PyTorch by %.3g (max |g| %.3g)", p.Name, d, maxg)
					}
				}
				t.Logf("%d adapter gradients: max relative diff %.2e", len(a.Layout()), worst)
				if i := slices.IndexFunc(m.Grads, func(g float32) bool { return g != 0 }); i >= 0 {
					t.Errorf("Backward with an adapter wrote base gradient %d", i)
				}
				if j, ok := sameBitsF32(m.Params, ck.Params); !ok {
					t.Errorf("base parameter %d changed", j)
				}

				// The merged model: a plain model that computes the same.
				merged, err := model.MergeLoRA(ck.Config, ck.Params, a)
				if err != nil {
					t.Fatal(err)
				}
				if j, ok := sameBitsF32(m.Params, ck.Params); !ok {
					t.Errorf("MergeLoRA changed its input at %d", j)
				}
				plain, err := model.NewInference(ck.Config, B, T)
				if err != nil {
					t.Fatal(err)
				}
				copy(plain.Params, merged)
				if _, err := plain.Forward(ref.i32("tokens"), nil, B, T); err != nil {
					t.Fatal(err)
				}
				d, _ = maxAbsDiff(plain.Logits(), withAdapter)
				d2, _ := maxAbsDiff(plain.Logits(), ref.f32("merged_logits"))
				t.Logf("merged model vs base + adapter: %.2e; vs PyTorch's merged model: %.2e", d, d2)
				if d > loraTol || d2 > loraTol {
					t.Errorf("merged logits differ: %.3g from base + adapter, %.3g from PyTorch (> %g)", d, d2, loraTol)
				}
			})
		}
	}
}

func sameBitsF32(a, b []float32) (int, bool) {
	if len(a) != len(b) {
		return -1, false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return i, false
		}
	}
	return 0, true
}

// newTinyLoRA returns a seeded tinyRef training model (batch 2×12) with a
// seeded adapter of config c attached, whose B is random (a fresh adapter's
// B is zero, which would hide bugs in everything but dB).
func newTinyLoRA(t testing.TB, c model.LoRAConfig) (*model.Model, *model.LoRA, []int32, []int32) {
	t.Helper()
	m, err := model.New(tinyRef, 2, 12)
	if err != nil {
		t.Fatal(err)
	}
	m.Init(7)
	a, err := model.NewLoRA(tinyRef, c)
	if err != nil {
		t.Fatal(err)
	}
	a.Init(3)
	rng := rand.New(rand.NewPCG(5, 5))
	for _, p := range a.Layout() {
		if strings.HasSuffix(p.Name, "lora_B.weight") {
			for i := range p.Size {
				a.Params[p.Offset+i] = float32(rng.NormFloat64() * 0.05)
			}
		}
	}
	if err := m.AttachLoRA(a); err != nil {
		t.Fatal(err)
	}
	x, y := make([]int32, 24), make([]int32, 24)
	for i := range x {
		x[i], y[i] = int32(rng.IntN(tinyRef.Vocab)), int32(rng.IntN(tinyRef.Vocab))
	}
	return m, a, x, y
}

// TestLoRAFreshAdapterIsIdentity: B starts at zero, so a fresh adapter
// leaves the logits exactly as the base's; A is Kaiming-uniform
// (|A| < 1/sqrt(in)), deterministic in the seed.
func TestLoRAFreshAdapterIsIdentity(t *testing.T) {
	m, err := model.New(tinyRef, 2, 12)
	if err != nil {
		t.Fatal(err)
	}
	m.Init(1)
	ref := loadRef(t)
	x := ref.i32("tokens")
	if _, err := m.Forward(x, nil, 2, 12); err != nil {
		t.Fatal(err)
	}
	base := slices.Clone(m.Logits())
	a, err := model.NewLoRA(tinyRef, model.DefaultLoRAConfig())
	if err != nil {
		t.Fatal(err)
	}
	a.Init(9)
	b, _ := model.NewLoRA(tinyRef, model.DefaultLoRAConfig())
	b.Init(9)
	if i, ok := sameBitsF32(a.Params, b.Params); !ok {
		t.Fatalf("two Inits with seed 9 differ at %d", i)
	}
	for _, p := range a.Layout() {
		w := a.Params[p.Offset : p.Offset+p.Size]
		if strings.HasSuffix(p.Name, "lora_B.weight") {
			if slices.ContainsFunc(w, func(v float32) bool { return v != 0 }) {
				t.Errorf("%s is not zero", p.Name)
			}
			continue
		}
		bound := 1 / math.Sqrt(float64(p.Shape[1]))
		lo, hi := slices.Min(w), slices.Max(w)
		if float64(-lo) > bound || float64(hi) > bound || float64(hi-lo) < bound {
			t.Errorf("%s in [%v, %v], want spread over (−%.3f, %.3f)", p.Name, lo, hi, bound, bound)
		}
	}
	if err := m.AttachLoRA(a); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Forward(x, nil, 2, 12); err != nil {
		t.Fatal(err)
	}
	if i, ok := sameBitsF32(m.Logits(), base); !ok {
		t.Errorf("a fresh adapter changed logit %d", i)
	}
	// 2 layers × (c_attn 4·32+96·4 ... ): r·(in+out) per projection.
	C, r := tinyRef.Dim, 8
	want := tinyRef.Layers * r * ((C + 3*C) + (C + C) + (C + 4*C) + (4*C + C))
	if a.NumParams() != want {
		t.Errorf("%d adapter parameters, want %d", a.NumParams(), want)
	}
}

// TestLoRAGradReady: with an adapter attached, the ranges Backward reports
// are the adapter's blocks, last layer first, covering the adapter's
// gradient buffer; each is final when reported; the hook changes nothing.
func TestLoRAGradReady(t *testing.T) {
	m, a, x, y := newTinyLoRA(t, model.DefaultLoRAConfig())
	half := len(a.Grads) / 2 // two blocks of the same size
	want := [][2]int{{half, len(a.Grads)}, {0, half}}
	if got := m.GradRanges(); !slices.Equal(got, want) {
		t.Fatalf("GradRanges %v, want %v", got, want)
	}
	backward := func(hook func(lo, hi int)) []float32 {
		t.Helper()
		m.ZeroGrad()
		for mb := range 2 {
			if _, err := m.Forward(x[mb*12:mb*12+12], y[mb*12:mb*12+12], 1, 12); err != nil {
				t.Fatal(err)
			}
			if mb == 1 {
				m.GradReady = hook
			}
			if err := m.Backward(0.5); err != nil {
				t.Fatal(err)
			}
			m.GradReady = nil
		}
		return slices.Clone(a.Grads)
	}
	ref := backward(nil)
	var got [][2]int
	var early [][]float32
	final := backward(func(lo, hi int) {
		got = append(got, [2]int{lo, hi})
		early = append(early, slices.Clone(a.Grads[lo:hi]))
	})
	if !slices.Equal(got, want) {
		t.Fatalf("reported %v, want %v", got, want)
	}
	for i, r := range got {
		if j, ok := sameBitsF32(early[i], final[r[0]:r[1]]); !ok {
			t.Fatalf("range %v: element %d changed after it was reported", r, r[0]+j)
		}
	}
	if j, ok := sameBitsF32(ref, final); !ok {
		t.Fatalf("gradient %d differs with the hook", j)
	}
	if slices.ContainsFunc(m.Grads, func(g float32) bool { return g != 0 }) {
		t.Error("the base gradient buffer was written")
	}
	// Detaching restores the base's ranges.
	if m.DetachLoRA() != a || m.LoRA() != nil {
		t.Fatal("DetachLoRA did not return the adapter")
	}
	plain, _ := model.New(tinyRef, 2, 12)
	if !slices.Equal(m.GradRanges(), plain.GradRanges()) {
		t.Error("after DetachLoRA, GradRanges are not the base's")
	}
}

// TestLoRAAllocateNothing: a training step with an adapter (and dropout)
// allocates nothing once the model exists.
func TestLoRAAllocateNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop items; allocation counts are checked without -race")
	}
	c := model.DefaultLoRAConfig()
	c.Dropout = 0.1
	m, _, x, y := newTinyLoRA(t, c)
	streams := []uint64{1, 2}
	step := func() {
		m.ZeroGrad()
		if err := m.SetDropoutStreams(streams); err != nil {
			t.Fatal(err)
		}
		if _, err := m.Forward(x, y, 2, 12); err != nil {
			t.Fatal(err)
		}
		if err := m.Backward(1); err != nil {
			t.Fatal(err)
		}
	}
	step()
	if n := allocsPerRun(10, step); n != 0 {
		t.Errorf("a training step with an adapter allocates %v times, want 0", n)
	}
}

// TestLoRADropout: the masks are a function of the streams only (the same
// streams give bitwise the same loss and gradient, on a model of another
// batch size too; other streams another loss), about p of the inputs are
// dropped, with dropout off (no streams) the adapter computes without it,
// and the gradient with dropout is the derivative of the loss with the same
// masks (finite differences).
func TestLoRADropout(t *testing.T) {
	c := model.DefaultLoRAConfig()
	c.Dropout = 0.3
	m, a, x, y := newTinyLoRA(t, c)
	run := func(m *model.Model, streams []uint64) (float32, []float32) {
		t.Helper()
		if err := m.SetDropoutStreams(streams); err != nil {
			t.Fatal(err)
		}
		m.ZeroGrad()
		loss, err := m.Forward(x, y, 2, 12)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Backward(1); err != nil {
			t.Fatal(err)
		}
		return loss, slices.Clone(m.LoRA().Grads)
	}
	s1 := []uint64{model.DropoutStream(1, 0, 0), model.DropoutStream(1, 0, 1)}
	s2 := []uint64{model.DropoutStream(1, 1, 0), model.DropoutStream(1, 1, 1)}
	l1, g1 := run(m, s1)
	l1b, g1b := run(m, s1)
	l2, _ := run(m, s2)
	l0, _ := run(m, nil)
	t.Logf("loss: streams s1 %.6f, again %.6f, s2 %.6f, no dropout %.6f", l1, l1b, l2, l0)
	if math.Float32bits(l1) != math.Float32bits(l1b) {
		t.Error("the same streams gave different losses")
	}
	if i, ok := sameBitsF32(g1, g1b); !ok {
		t.Errorf("the same streams gave different gradients at %d", i)
	}
	if l1 == l2 || l1 == l0 {
		t.Error("other streams, or no dropout, gave the same loss")
	}
	// A model allocated for more sequences, with the same streams for its
	// first two, computes bitwise the same (masks do not depend on the
	// allocation or on what else is in the batch's buffers).
	big, err := model.New(tinyRef, 4, 12)
	if err != nil {
		t.Fatal(err)
	}
	copy(big.Params, m.Params)
	a2, _ := model.NewLoRA(tinyRef, c)
	copy(a2.Params, a.Params)
	if err := big.AttachLoRA(a2); err != nil {
		t.Fatal(err)
	}
	if lb, gb := run(big, s1); math.Float32bits(lb) != math.Float32bits(l1) {
		t.Errorf("another model: loss %v, want %v", lb, l1)
	} else if i, ok := sameBitsF32(gb, g1); !ok {
		t.Errorf("another model: gradient %d differs", i)
	}
	if err := m.SetDropoutStreams([]uint64{1}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Forward(x, y, 2, 12); err == nil {
		t.Error("one stream for a batch of 2: no error")
	}
	if err := m.SetDropoutStreams(make([]uint64, 3)); err == nil {
		t.Error("3 streams for a model of 2 sequences: no error")
	}

	// Finite differences on a few adapter parameters, in float32 with a
	// step large enough to rise above rounding: central differences agree
	// with the analytic gradient to about 1%.
	rng := rand.New(rand.NewPCG(11, 0))
	checked := 0
	for range 12 {
		i := rng.IntN(len(a.Params))
		if math.Abs(float64(g1[i])) < 1e-3 {
			continue
		}
		checked++
		const h = 1e-2
		old := a.Params[i]
		a.Params[i] = old + h
		lp, _ := run(m, s1)
		a.Params[i] = old - h
		lm, _ := run(m, s1)
		a.Params[i] = old
		fd := (float64(lp) - float64(lm)) / (2 * h)
		if math.Abs(fd-float64(g1[i])) > 0.02*math.Abs(float64(g1[i]))+2e-4 {
			t.Errorf("parameter %d: gradient %.5g, finite difference %.5g", i, g1[i], fd)
		}
	}
	if checked < 4 {
		t.Errorf("only %d parameters with a gradient large enough to check", checked)
	}
}

// TestLoRADropoutRate: a stream drops about p of the elements, and scales
// the others by 1/(1−p) (seen through the adapter's output: the expected
// adapter update is the same with and without dropout).
func TestLoRADropoutRate(t *testing.T) {
	c := model.LoRAConfig{Rank: 1, Alpha: 1, Dropout: 0.25, Targets: []string{"c_attn"}}
	m, err := model.New(tinyRef, 8, 16)
	if err != nil {
		t.Fatal(err)
	}
	// Dropout scales what it keeps by 1/(1−p), so over many streams the
	// logits move around their value without dropout, not away from it.
	m.Init(1)
	a, _ := model.NewLoRA(tinyRef, c)
	a.Init(1)
	for i := range a.Params {
		a.Params[i] = 0.01
	}
	if err := m.AttachLoRA(a); err != nil {
		t.Fatal(err)
	}
	x := make([]int32, 8*16)
	for i := range x {
		x[i] = int32(i % tinyRef.Vocab)
	}
	if _, err := m.Forward(x, nil, 8, 16); err != nil {
		t.Fatal(err)
	}
	clean := slices.Clone(m.Logits())
	var sumDiff, sumAbs float64
	for k := range 20 {
		streams := make([]uint64, 8)
		for b := range streams {
			streams[b] = model.DropoutStream(3, uint64(k), uint64(b))
		}
		m.SetDropoutStreams(streams)
		if _, err := m.Forward(x, nil, 8, 16); err != nil {
			t.Fatal(err)
		}
		for i, v := range m.Logits() {
			sumDiff += float64(v - clean[i])
			sumAbs += math.Abs(float64(v - clean[i]))
		}
	}
	m.SetDropoutStreams(nil)
	t.Logf("mean logit change under dropout %.2e, mean |change| %.2e", sumDiff/float64(20*len(clean)), sumAbs/float64(20*len(clean)))
	if sumAbs == 0 {
		t.Fatal("dropout changed nothing")
	}
	if math.Abs(sumDiff) > 0.1*sumAbs {
		t.Errorf("dropout biases the output: mean change %.3g against mean |change| %.3g", sumDiff, sumAbs)
	}
}

// BenchmarkLoRAStep times a training step (forward and backward) of the
// tiny preset with and without a rank-8 adapter on every projection: with
// one it should be faster, the frozen weights' gradients being skipped.
// That they are not computed is checked exactly, not by timing, by
// TestLoRAMatchesPyTorch (Grads untouched) and TestDropBaseGrads (Backward
// runs with no buffer for them).
//
//	go test -run '^$' -bench LoRAStep ./model
func BenchmarkLoRAStep(b *testing.B) {
	c, _ := model.Preset("tiny", 257)
	c.Context = 64
	for _, withLoRA := range []bool{false, true} {
		name := "full"
		if withLoRA {
			name = "lora-r8"
		}
		b.Run(name, func(b *testing.B) {
			m, err := model.New(c, 8, 64)
			if err != nil {
				b.Fatal(err)
			}
			m.Init(1)
			if withLoRA {
				a, _ := model.NewLoRA(c, model.DefaultLoRAConfig())
				a.Init(1)
				if err := m.AttachLoRA(a); err != nil {
					b.Fatal(err)
				}
			}
			x := make([]int32, 8*64)
			for i := range x {
				x[i] = int32(i * 7 % 257)
			}
			for b.Loop() {
				m.ZeroGrad()
				m.Forward(x, x, 8, 64)
				m.Backward(1)
			}
		})
	}
}

// ---- Files ----

// TestAdapterRoundTrip: SaveAdapter writes PEFT's two files; LoadAdapter
// reads back bitwise the same adapter; adapter_config.json has the keys
// PEFT's LoraConfig needs.
func TestAdapterRoundTrip(t *testing.T) {
	c := model.LoRAConfig{Rank: 4, Alpha: 6, Dropout: 0.05, Targets: []string{"c_attn", "mlp.c_proj", "attn.c_proj"}, BaseModel: "models/base-en"}
	_, a, _, _ := newTinyLoRA(t, c)
	dir := t.TempDir()
	if err := model.SaveAdapter(dir, a); err != nil {
		t.Fatal(err)
	}
	b, err := model.LoadAdapter(dir, tinyRef)
	if err != nil {
		t.Fatal(err)
	}
	if i, ok := sameBitsF32(a.Params, b.Params); !ok {
		t.Fatalf("parameter %d differs after a round trip", i)
	}
	// c_proj of both kinds is written as "c_proj".
	want := model.LoRAConfig{Rank: 4, Alpha: 6, Dropout: 0.05, Targets: []string{"c_attn", "c_proj"}, BaseModel: "models/base-en"}
	if b.Config.Rank != want.Rank || b.Config.Alpha != want.Alpha || b.Config.Dropout != want.Dropout ||
		!slices.Equal(b.Config.Targets, want.Targets) || b.Config.BaseModel != want.BaseModel {
		t.Errorf("config %+v, want %+v", b.Config, want)
	}
	raw, err := os.ReadFile(filepath.Join(dir, model.AdapterConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	var js map[string]any
	if err := json.Unmarshal(raw, &js); err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]any{"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 4.0, "lora_alpha": 6.0,
		"lora_dropout": 0.05, "fan_in_fan_out": true, "bias": "none", "base_model_name_or_path": "models/base-en",
		"use_dora": false, "use_rslora": false, "modules_to_save": nil, "layers_to_transform": nil, "init_lora_weights": true} {
		if got, ok := js[k]; !ok || !jsonEqual(got, v) {
			t.Errorf("adapter_config.json: %s = %v, want %v", k, got, v)
		}
	}
	f := mustRead(t, filepath.Join(dir, model.AdapterWeightsFile))
	if f.Metadata["format"] != "pt" || len(f.Tensors) != len(a.Layout()) {
		t.Errorf("adapter_model.safetensors: metadata %v, %d tensors, want format pt and %d", f.Metadata, len(f.Tensors), len(a.Layout()))
	}
	for _, p := range a.Layout() {
		tt, ok := f.Tensor(p.Name)
		if !ok || tt.Dtype != safetensors.F32 || !slices.Equal(tt.Shape, p.Shape) {
			t.Errorf("tensor %s: %v", p.Name, tt)
		}
	}
	if got := a.Layout()[0].Name; got != "base_model.model.transformer.h.0.attn.c_attn.lora_A.weight" {
		t.Errorf("first tensor %s", got)
	}
	if b, err := model.ReadAdapterConfig(dir); err != nil || b.Rank != 4 {
		t.Errorf("ReadAdapterConfig: %+v, %v", b, err)
	}
	// An adapter does not fit another base.
	other := tinyRef
	other.Dim = 64
	if _, err := model.LoadAdapter(dir, other); !errors.Is(err, model.ErrAdapter) {
		t.Errorf("another base: %v, want ErrAdapter", err)
	}
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

// braidLoRADir is the adapter SaveAdapter writes for the reverse check.
const braidLoRADir = "testdata/braid_lora_tiny"

// TestLoRABraidAdapterFixture: testdata/braid_lora_tiny is what SaveAdapter
// writes for a seeded adapter of hf_tiny, with the logits braid computes
// (reference.safetensors); -update rewrites it. Either way the files must
// equal a fresh SaveAdapter's and the logits a fresh forward pass, so the
// reverse check (gen_reference.py --check-adapter) tests the current writer.
func TestLoRABraidAdapterFixture(t *testing.T) {
	const B, T = 2, 16
	m, ck := hfTinyTraining(t, B, T)
	a, err := model.NewLoRA(ck.Config, model.LoRAConfig{Rank: 5, Alpha: 7, Dropout: 0.1,
		Targets: []string{"c_attn", "attn.c_proj", "c_fc"}, BaseModel: "model/testdata/hf_tiny"})
	if err != nil {
		t.Fatal(err)
	}
	a.Init(4)
	rng := rand.New(rand.NewPCG(4, 4))
	for _, p := range a.Layout() {
		if strings.HasSuffix(p.Name, "lora_B.weight") {
			for i := range p.Size {
				a.Params[p.Offset+i] = float32(rng.NormFloat64() * 0.1)
			}
		}
	}
	tokens := make([]int32, B*T)
	for i := range tokens {
		tokens[i] = int32(rng.IntN(ck.Config.Vocab))
	}
	if err := m.AttachLoRA(a); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Forward(tokens, nil, B, T); err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := model.SaveAdapter(braidLoRADir, a); err != nil {
			t.Fatal(err)
		}
		ref := []safetensors.Tensor{
			safetensors.I32Tensor("tokens", []int{B, T}, tokens),
			safetensors.F32Tensor("logits", []int{B, T, ck.Config.Vocab}, m.Logits()),
		}
		md := map[string]string{"generator": "go test ./model -run LoRA -update", "precision": "braid float32 forward pass, base + adapter"}
		if err := safetensors.WriteFile(filepath.Join(braidLoRADir, "reference.safetensors"), ref, md); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s; now run /usr/bin/python3 scripts/gen_reference.py --check-adapter model/%s", braidLoRADir, braidLoRADir)
	}
	fresh := t.TempDir()
	if err := model.SaveAdapter(fresh, a); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{model.AdapterWeightsFile, model.AdapterConfigFile} {
		x, errX := os.ReadFile(filepath.Join(braidLoRADir, name))
		y, errY := os.ReadFile(filepath.Join(fresh, name))
		if errX != nil || errY != nil || !bytes.Equal(x, y) {
			t.Errorf("%s/%s differs from what SaveAdapter writes now (%v, %v): run go test ./model -run LoRA -update, then gen_reference.py --check-adapter", braidLoRADir, name, errX, errY)
		}
	}
	ref := refFixture{t, mustRead(t, filepath.Join(braidLoRADir, "reference.safetensors"))}
	if !slices.Equal(ref.i32("tokens"), tokens) {
		t.Fatal("stored tokens differ from the test's")
	}
	d, _ := maxAbsDiff(m.Logits(), ref.f32("logits"))
	t.Logf("stored logits vs this forward pass: max abs diff %.2e", d)
	if d > hfTol {
		t.Errorf("stored logits differ by %.3g > %g", d, hfTol)
	}
}

// TestLoRAConfigValidate: bad settings are refused, naming the field.
func TestLoRAConfigValidate(t *testing.T) {
	if err := model.DefaultLoRAConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		mutate func(*model.LoRAConfig)
		wants  string
	}{
		"rank 0":          {func(c *model.LoRAConfig) { c.Rank = 0 }, "r = 0"},
		"rank too large":  {func(c *model.LoRAConfig) { c.Rank = model.MaxLoRARank + 1 }, "r ="},
		"alpha NaN":       {func(c *model.LoRAConfig) { c.Alpha = math.NaN() }, "lora_alpha"},
		"alpha 0":         {func(c *model.LoRAConfig) { c.Alpha = 0 }, "lora_alpha"},
		"dropout 1":       {func(c *model.LoRAConfig) { c.Dropout = 1 }, "lora_dropout"},
		"dropout < 0":     {func(c *model.LoRAConfig) { c.Dropout = -0.1 }, "lora_dropout"},
		"no targets":      {func(c *model.LoRAConfig) { c.Targets = nil }, "target_modules is empty"},
		"unknown target":  {func(c *model.LoRAConfig) { c.Targets = []string{"c_attn", "query_key_value"} }, `"query_key_value"`},
		"mixed targets":   {func(c *model.LoRAConfig) { c.Targets = []string{"c_attn", "q_proj"} }, "mixes GPT-2 and Llama"},
		"embedding":       {func(c *model.LoRAConfig) { c.Targets = []string{"wte"} }, `"wte"`},
		"partial name":    {func(c *model.LoRAConfig) { c.Targets = []string{"attn"} }, `"attn"`},
		"one layer only":  {func(c *model.LoRAConfig) { c.Targets = []string{"h.0.attn.c_attn"} }, `"h.0.attn.c_attn"`},
		"lm head":         {func(c *model.LoRAConfig) { c.Targets = []string{"lm_head"} }, `"lm_head"`},
		"projection typo": {func(c *model.LoRAConfig) { c.Targets = []string{"c_proj "} }, `"c_proj "`},
	} {
		c := model.DefaultLoRAConfig()
		tc.mutate(&c)
		if err := c.Validate(); !errors.Is(err, model.ErrLoRAConfig) || !strings.Contains(err.Error(), tc.wants) {
			t.Errorf("%s: %v, want ErrLoRAConfig saying %q", name, err, tc.wants)
		}
	}
	for in, want := range map[string][]string{
		"c_attn,c_proj,c_fc":       {"c_attn", "c_proj", "c_fc"},
		" c_attn , mlp.c_proj ":    {"c_attn", "mlp.c_proj"},
		"attn.c_attn,mlp.c_fc,,":   {"attn.c_attn", "mlp.c_fc"},
		"attn.c_proj,mlp.c_proj":   {"attn.c_proj", "mlp.c_proj"},
		"c_attn,c_attn,c_attn":     {"c_attn", "c_attn", "c_attn"},
		"attn.c_proj, attn.c_attn": {"attn.c_proj", "attn.c_attn"},
	} {
		got, err := model.ParseLoRATargets(in)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("ParseLoRATargets(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := model.ParseLoRATargets("c_attn,nope"); err == nil {
		t.Error("ParseLoRATargets accepted an unknown module")
	}
	if _, err := model.ParseLoRATargets(""); err == nil {
		t.Error("ParseLoRATargets accepted nothing")
	}
	// Canonical targets: what NewLoRA keeps and SaveAdapter writes.
	for _, c := range []struct{ in, want []string }{
		{[]string{"attn.c_proj", "mlp.c_proj"}, []string{"c_proj"}},
		{[]string{"c_fc", "attn.c_attn"}, []string{"c_attn", "c_fc"}},
		{[]string{"mlp.c_proj"}, []string{"mlp.c_proj"}},
	} {
		a, err := model.NewLoRA(tinyRef, model.LoRAConfig{Rank: 2, Alpha: 2, Targets: c.in})
		if err != nil || !slices.Equal(a.Config.Targets, c.want) {
			t.Errorf("NewLoRA targets %v: %v, %v; want %v", c.in, a.Config.Targets, err, c.want)
		}
	}
}

// peftConfig returns a PEFT adapter_config.json (as the fixture's) with
// key k set to v (deleted when v is nil and del is true).
func peftConfig(t testing.TB, edits map[string]any) []byte {
	t.Helper()
	raw, err := os.ReadFile("testdata/lora_tiny/adapter_config.json")
	if err != nil {
		t.Fatal(err)
	}
	var js map[string]any
	if err := json.Unmarshal(raw, &js); err != nil {
		t.Fatal(err)
	}
	for k, v := range edits {
		if v == deleteKey {
			delete(js, k)
		} else {
			js[k] = v
		}
	}
	b, _ := json.Marshal(js)
	return b
}

// deleteKey marks a key peftConfig deletes.
var deleteKey = &struct{}{}

// TestDecodeAdapterRejects: every adapter that is not exactly a LoRA
// adapter braid computes as PEFT does, for this base, is refused with an
// error wrapping ErrAdapter that says why.
func TestDecodeAdapterRejects(t *testing.T) {
	ck, err := model.LoadCheckpoint("testdata/hf_tiny")
	if err != nil {
		t.Fatal(err)
	}
	base := ck.Config
	weights, err := os.ReadFile("testdata/lora_tiny/adapter_model.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	good := peftConfig(t, nil)
	if _, err := model.DecodeAdapter(good, weights, base); err != nil {
		t.Fatalf("the fixture itself: %v", err)
	}
	f, err := safetensors.Decode(slices.Clone(weights))
	if err != nil {
		t.Fatal(err)
	}
	reencode := func(edit func(f *safetensors.File)) []byte {
		g, _ := safetensors.Decode(slices.Clone(weights))
		edit(g)
		var buf bytes.Buffer
		if err := safetensors.Encode(&buf, g.Tensors, g.Metadata); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	first := f.Tensors[0].Name
	other := base
	other.Layers = 3
	for _, c := range []struct {
		name   string
		cfg, w []byte
		base   *model.Config
		wants  string
	}{
		// The config.
		{name: "not JSON", cfg: []byte("{"), wants: "not a JSON config"},
		{name: "prefix tuning", cfg: peftConfig(t, map[string]any{"peft_type": "PREFIX_TUNING"}), wants: "peft_type"},
		{name: "no peft_type", cfg: peftConfig(t, map[string]any{"peft_type": deleteKey}), wants: "peft_type"},
		{name: "classifier", cfg: peftConfig(t, map[string]any{"task_type": "SEQ_CLS"}), wants: "task_type"},
		{name: "rank 0", cfg: peftConfig(t, map[string]any{"r": 0}), wants: "r = 0"},
		{name: "rank not a number", cfg: peftConfig(t, map[string]any{"r": "8"}), wants: "not a JSON config"},
		{name: "huge rank", cfg: peftConfig(t, map[string]any{"r": 1 << 40}), wants: "r ="},
		{name: "no alpha", cfg: peftConfig(t, map[string]any{"lora_alpha": deleteKey}), wants: "lora_alpha is missing"},
		{name: "alpha 0", cfg: peftConfig(t, map[string]any{"lora_alpha": 0}), wants: "lora_alpha"},
		{name: "dropout 1", cfg: peftConfig(t, map[string]any{"lora_dropout": 1}), wants: "lora_dropout"},
		{name: "bias all", cfg: peftConfig(t, map[string]any{"bias": "all"}), wants: "bias"},
		{name: "DoRA", cfg: peftConfig(t, map[string]any{"use_dora": true}), wants: "use_dora"},
		{name: "rsLoRA", cfg: peftConfig(t, map[string]any{"use_rslora": true}), wants: "use_rslora"},
		{name: "lora bias", cfg: peftConfig(t, map[string]any{"lora_bias": true}), wants: "lora_bias"},
		{name: "modules to save", cfg: peftConfig(t, map[string]any{"modules_to_save": []string{"lm_head"}}), wants: "modules_to_save"},
		{name: "some layers", cfg: peftConfig(t, map[string]any{"layers_to_transform": []int{0}}), wants: "layers_to_transform"},
		{name: "rank pattern", cfg: peftConfig(t, map[string]any{"rank_pattern": map[string]int{"c_fc": 2}}), wants: "rank_pattern"},
		{name: "alpha pattern", cfg: peftConfig(t, map[string]any{"alpha_pattern": map[string]int{"c_fc": 2}}), wants: "alpha_pattern"},
		{name: "PiSSA", cfg: peftConfig(t, map[string]any{"init_lora_weights": "pissa"}), wants: "init_lora_weights"},
		{name: "unknown target", cfg: peftConfig(t, map[string]any{"target_modules": []string{"query_key_value"}}), wants: "query_key_value"},
		{name: "Llama target on a GPT-2", cfg: peftConfig(t, map[string]any{"target_modules": []string{"q_proj"}}), wants: "another architecture"},
		{name: "targets not a list", cfg: peftConfig(t, map[string]any{"target_modules": 3}), wants: "target_modules"},
		{name: "regexp for one layer", cfg: peftConfig(t, map[string]any{"target_modules": `transformer\.h\.0\.attn\.c_attn`}), wants: "some blocks only"},
		{name: "regexp matching nothing", cfg: peftConfig(t, map[string]any{"target_modules": `.*query_key_value`}), wants: "matches no projection"},
		{name: "regexp matching both architectures", cfg: peftConfig(t, map[string]any{"target_modules": `.*(c_attn|q_proj)`}), wants: "both GPT-2 and the Llama family"},
		{name: "bad regexp", cfg: peftConfig(t, map[string]any{"target_modules": `(`}), wants: "target_modules"},
		// The config and the tensors disagree.
		{name: "fewer targets than tensors", cfg: peftConfig(t, map[string]any{"target_modules": []string{"c_attn"}}), wants: "unexpected tensor"},
		{name: "more targets than tensors", cfg: peftConfig(t, map[string]any{"target_modules": []string{"c_attn", "c_proj", "c_fc", "mlp.c_fc"}, "r": 2}), wants: "shape"},
		{name: "other rank", cfg: peftConfig(t, map[string]any{"r": 2}), wants: "has shape"},
		{name: "other base", base: &other, wants: "h.2.attn.c_attn.lora_A.weight is missing"},
		// The tensors.
		{name: "not safetensors", w: []byte("hello world, this is not a file"), wants: "safetensors"},
		{name: "truncated", w: weights[:len(weights)-3], wants: "safetensors"},
		{name: "missing tensor", w: reencode(func(f *safetensors.File) { f.Tensors = f.Tensors[1:] }), wants: first + " is missing"},
		{name: "renamed tensor", w: reencode(func(f *safetensors.File) {
			f.Tensors[0].Name = strings.Replace(f.Tensors[0].Name, "base_model.model.", "", 1)
		}), wants: "unexpected tensor"},
		{name: "adapter-named tensor", w: reencode(func(f *safetensors.File) {
			f.Tensors[0].Name = strings.Replace(f.Tensors[0].Name, "lora_A.weight", "lora_A.default.weight", 1)
		}), wants: "unexpected tensor"},
		{name: "transposed A", w: reencode(func(f *safetensors.File) {
			tt, _ := f.Tensor("base_model.model.transformer.h.0.attn.c_attn.lora_A.weight")
			tt.Shape = []int{tt.Shape[1], tt.Shape[0]}
		}), wants: "has shape"},
		{name: "integer tensor", w: reencode(func(f *safetensors.File) {
			tt, _ := f.Tensor("base_model.model.transformer.h.1.mlp.c_fc.lora_B.weight")
			tt.Dtype = safetensors.I32
		}), wants: "dtype I32"},
		{name: "NaN", w: reencode(func(f *safetensors.File) {
			tt, _ := f.Tensor("base_model.model.transformer.h.1.mlp.c_fc.lora_B.weight")
			tt.Data = slices.Clone(tt.Data)
			copy(tt.Data[8:], []byte{0, 0, 0xc0, 0x7f})
		}), wants: "element 2 is NaN"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg, w, b := good, weights, base
			if c.cfg != nil {
				cfg = c.cfg
			}
			if c.w != nil {
				w = c.w
			}
			if c.base != nil {
				b = *c.base
			}
			_, err := model.DecodeAdapter(cfg, w, b)
			if !errors.Is(err, model.ErrAdapter) || !strings.Contains(err.Error(), c.wants) {
				t.Fatalf("error %v, want ErrAdapter saying %q", err, c.wants)
			}
			t.Log(err)
		})
	}
	// Accepted variations: what other PEFT versions and users write.
	for name, cfg := range map[string][]byte{
		"unknown keys":               peftConfig(t, map[string]any{"some_future_key": 3, "eva_config": nil}),
		"fan_in_fan_out false":       peftConfig(t, map[string]any{"fan_in_fan_out": false}),
		"no task_type":               peftConfig(t, map[string]any{"task_type": nil}),
		"regexp of every block":      peftConfig(t, map[string]any{"target_modules": `.*\.(c_attn|c_proj|c_fc)`}),
		"qualified names":            peftConfig(t, map[string]any{"target_modules": []string{"attn.c_attn", "attn.c_proj", "mlp.c_proj", "mlp.c_fc"}}),
		"gaussian init":              peftConfig(t, map[string]any{"init_lora_weights": "gaussian"}),
		"float alpha":                peftConfig(t, map[string]any{"lora_alpha": 12.0}),
		"modules_to_save empty list": peftConfig(t, map[string]any{"modules_to_save": []string{}}),
		"no base_model_name_or_path": peftConfig(t, map[string]any{"base_model_name_or_path": deleteKey}),
	} {
		if _, err := model.DecodeAdapter(cfg, weights, base); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// FuzzDecodeAdapter: DecodeAdapter never panics; what it refuses wraps
// ErrAdapter; what it accepts fits the base, is finite, and encodes and
// decodes back bitwise.
func FuzzDecodeAdapter(f *testing.F) {
	base := model.Config{Vocab: 16, Context: 8, Dim: 4, Layers: 2, Heads: 2}
	a, err := model.NewLoRA(base, model.LoRAConfig{Rank: 2, Alpha: 4, Targets: []string{"c_attn", "mlp.c_proj"}})
	if err != nil {
		f.Fatal(err)
	}
	a.Init(1)
	dir := f.TempDir()
	if err := model.SaveAdapter(dir, a); err != nil {
		f.Fatal(err)
	}
	cfg, _ := os.ReadFile(filepath.Join(dir, model.AdapterConfigFile))
	w, _ := os.ReadFile(filepath.Join(dir, model.AdapterWeightsFile))
	f.Add(cfg, w)
	f.Add(cfg, w[:len(w)/2])
	f.Add([]byte(`{"peft_type":"LORA","r":2,"lora_alpha":4,"target_modules":".*c_attn"}`), w)
	f.Add([]byte(`{"peft_type":"LORA","r":1000000,"lora_alpha":4,"target_modules":["c_fc"]}`), w)
	f.Add([]byte(`{}`), []byte{})
	f.Fuzz(func(t *testing.T, cfg, w []byte) {
		got, err := model.DecodeAdapter(cfg, w, base)
		if err != nil {
			if !errors.Is(err, model.ErrAdapter) {
				t.Fatalf("error %v does not wrap ErrAdapter", err)
			}
			return
		}
		if got.Base != base || len(got.Params) != len(got.Grads) {
			t.Fatalf("accepted an adapter of %+v with %d params, %d grads", got.Base, len(got.Params), len(got.Grads))
		}
		for _, v := range got.Params {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				t.Fatal("accepted a non-finite value")
			}
		}
		c2, w2, err := model.EncodeAdapter(got)
		if err != nil {
			t.Fatal(err)
		}
		again, err := model.DecodeAdapter(c2, w2, base)
		if err != nil {
			t.Fatalf("reloading an accepted adapter: %v", err)
		}
		if i, ok := sameBitsF32(again.Params, got.Params); !ok {
			t.Fatalf("parameter %d changed in a save and load", i)
		}
	})
}

// BenchmarkLoRATrainStep times forward + backward of the small preset at
// batch 8 with full training and with a rank-8 adapter on every projection
// (compare with BenchmarkTrainStep/small).
func BenchmarkLoRATrainStep(b *testing.B) {
	for _, mode := range []string{"full", "lora-r8", "lora-r8-dropout"} {
		b.Run(mode, func(b *testing.B) {
			c, _ := model.Preset("small", 257)
			B, T := 8, 128
			m, err := model.New(c, B, T)
			if err != nil {
				b.Fatal(err)
			}
			m.Init(1)
			if mode != "full" {
				lc := model.DefaultLoRAConfig()
				if mode == "lora-r8-dropout" {
					lc.Dropout = 0.05
				}
				a, _ := model.NewLoRA(c, lc)
				a.Init(1)
				if err := m.AttachLoRA(a); err != nil {
					b.Fatal(err)
				}
				m.SetDropoutStreams(make([]uint64, B))
			}
			rng := rand.New(rand.NewPCG(1, 2))
			x, y := make([]int32, B*T), make([]int32, B*T)
			for i := range x {
				x[i], y[i] = int32(rng.IntN(256)), int32(rng.IntN(256))
			}
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
		})
	}
}

// DropBaseGrads frees the frozen base's gradient buffer: Backward still
// computes the adapter's gradients, bit for bit as before, and refuses to
// run once the adapter is detached.
func TestDropBaseGrads(t *testing.T) {
	ref := loadRef(t)
	x, y := ref.i32("tokens"), ref.i32("targets")
	grads := func(drop bool) []float32 {
		m, err := model.New(tinyRef, 2, 12)
		if err != nil {
			t.Fatal(err)
		}
		m.Init(1)
		if err := m.DropBaseGrads(); err == nil {
			t.Fatal("DropBaseGrads without an adapter succeeded")
		}
		a, _ := model.NewLoRA(tinyRef, model.DefaultLoRAConfig())
		a.Init(9)
		for i := range a.Params {
			a.Params[i] += 0.01 * float32(i%7) // B non-zero, so every gradient flows
		}
		if err := m.AttachLoRA(a); err != nil {
			t.Fatal(err)
		}
		if drop {
			if err := m.DropBaseGrads(); err != nil || m.Grads != nil {
				t.Fatalf("DropBaseGrads: %v, %d gradients left", err, len(m.Grads))
			}
		}
		m.ZeroGrad()
		if _, err := m.Forward(x, y, 2, 12); err != nil {
			t.Fatal(err)
		}
		if err := m.Backward(1); err != nil {
			t.Fatal(err)
		}
		g := slices.Clone(a.Grads)
		if drop {
			m.DetachLoRA()
			m.Forward(x, y, 2, 12)
			if err := m.Backward(1); err == nil {
				t.Error("Backward without the base's gradients and without an adapter succeeded")
			}
		}
		return g
	}
	if i, ok := sameBitsF32(grads(false), grads(true)); !ok {
		t.Fatalf("adapter gradient %d differs once the base's gradients are dropped", i)
	}
}
