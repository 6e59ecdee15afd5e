package cudamodel

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/braidml/braid/kernels/cuda"
	"github.com/braidml/braid/model"
)

// These tests run on whichever GPU is present and skip, with the reason,
// where there is none (the static CPU build, or no device). The CPU model
// (package model) is the reference throughout.

var (
	devOnce sync.Once
	testDev *cuda.Device
	devErr  error
)

func device(t testing.TB) *cuda.Device {
	t.Helper()
	devOnce.Do(func() { testDev, devErr = cuda.Open(0) })
	if devErr != nil {
		t.Skipf("no GPU: %v", devErr)
	}
	return testDev
}

// relErr is ‖got − want‖ / ‖want‖ (NaN anywhere makes it NaN).
func relErr(got, want []float32) float64 {
	var num, den float64
	for i := range want {
		d := float64(got[i]) - float64(want[i])
		num += d * d
		den += float64(want[i]) * float64(want[i])
	}
	if den == 0 {
		return math.Sqrt(num)
	}
	return math.Sqrt(num / den)
}

// emulated says whether dev is the CPU stand-in of package cudaemu.
func emulated(dev *cuda.Device) bool { return strings.Contains(dev.Info.Name, "emulated") }

func testConfig() model.Config {
	return model.Config{Vocab: 101, Context: 48, Dim: 64, Layers: 2, Heads: 4}
}

func randomBatch(rng *rand.Rand, V, BT int) (tokens, targets []int32) {
	tokens, targets = make([]int32, BT), make([]int32, BT)
	for i := range tokens {
		tokens[i], targets[i] = int32(rng.IntN(V)), int32(rng.IntN(V))
	}
	targets[3] = -1 // an ignored position
	return tokens, targets
}

// TestForwardBackwardMatchesCPU checks logits, loss and every parameter's
// gradient against the CPU model, per tensor, at each precision's bound.
func TestForwardBackwardMatchesCPU(t *testing.T) {
	dev := device(t)
	for _, tc := range []struct {
		p   cuda.Precision
		tol float64
	}{{cuda.FP32, 1e-4}, {cuda.TF32, 1e-2}, {cuda.BF16, 2e-2}} {
		t.Run(tc.p.String(), func(t *testing.T) {
			c := testConfig()
			B, T := 3, 40
			cpu, err := model.New(c, B, T)
			if err != nil {
				t.Fatal(err)
			}
			cpu.Init(7)
			checkStepMatchesCPU(t, dev, cpu, tc.p, tc.tol, [][2]int{{0, 0}, {1, 17}, {2, T - 1}})
		})
	}
}

// TestAdamWMatchesCPU runs clipping and AdamW on the same gradient on both
// and compares the parameters and moments after three updates.
func TestAdamWMatchesCPU(t *testing.T) {
	dev := device(t)
	c := testConfig()
	cpu, _ := model.New(c, 2, 16)
	cpu.Init(3)
	gpu, err := New(dev, c, 2, 16, cuda.FP32)
	if err != nil {
		t.Fatal(err)
	}
	defer gpu.Close()
	if err := gpu.WriteParams(cpu.Params); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(5, 6))
	cfg := AdamWConfig{Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.1}
	mom, vel := make([]float32, c.NumParams()), make([]float32, c.NumParams())
	for step := 1; step <= 3; step++ {
		g := make([]float32, c.NumParams())
		for i := range g {
			g[i] = float32(rng.NormFloat64())
		}
		if err := gpu.WriteGrads(g); err != nil {
			t.Fatal(err)
		}
		norm, err := gpu.ClipGradNorm(1)
		if err != nil {
			t.Fatal(err)
		}
		wantNorm := cpuClipAdamW(cpu.Params, g, mom, vel, c, cfg, 1e-3, step)
		if d := math.Abs(float64(norm-wantNorm)) / float64(wantNorm); !(d <= 1e-6) {
			t.Errorf("step %d: norm %v, CPU %v", step, norm, wantNorm)
		}
		if err := gpu.AdamW(cfg, 1e-3, step); err != nil {
			t.Fatal(err)
		}
	}
	got := make([]float32, c.NumParams())
	gm, gv := make([]float32, c.NumParams()), make([]float32, c.NumParams())
	if err := gpu.ReadParams(got); err != nil {
		t.Fatal(err)
	}
	if err := gpu.ReadMoments(gm, gv); err != nil {
		t.Fatal(err)
	}
	for name, pair := range map[string][2][]float32{"params": {got, cpu.Params}, "m": {gm, mom}, "v": {gv, vel}} {
		if e := relErr(pair[0], pair[1]); !(e <= 1e-6) {
			t.Errorf("%s after 3 AdamW updates: relative error %.2e", name, e)
		}
	}
}

// cpuClipAdamW is the CPU path's clip and update (kernels via package
// train's formulas), returning the norm before clipping.
func cpuClipAdamW(params, g, mom, vel []float32, c model.Config, cfg AdamWConfig, lr float32, step int) float32 {
	var ss float64
	for _, x := range g {
		ss += float64(x) * float64(x)
	}
	norm := float32(math.Sqrt(ss))
	if coef := 1 / (norm + 1e-6); coef < 1 {
		for i := range g {
			g[i] *= coef
		}
	}
	bc1 := 1 - math.Pow(float64(cfg.Beta1), float64(step))
	bc2 := 1 - math.Pow(float64(cfg.Beta2), float64(step))
	stepSize, bc2s := float32(float64(lr)/bc1), float32(math.Sqrt(bc2))
	for _, p := range c.Layout() {
		decay := float32(1)
		if p.Decay {
			decay = 1 - lr*cfg.WeightDecay
		}
		for i := p.Offset; i < p.Offset+p.Size; i++ {
			mi := cfg.Beta1*mom[i] + (1-cfg.Beta1)*g[i]
			vi := cfg.Beta2*vel[i] + (1-cfg.Beta2)*g[i]*g[i]
			mom[i], vel[i] = mi, vi
			params[i] = params[i]*decay - stepSize*mi/(float32(math.Sqrt(float64(vi)))/bc2s+cfg.Eps)
		}
	}
	return norm
}

// repoText returns this repository's own Go source as training text (the
// corpora are not on every machine; the code domain is).
func repoText(t testing.TB) []int32 {
	var out []int32
	filepath.WalkDir("../..", func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || filepath.Ext(path) != ".go" || len(out) > 400_000 {
			return nil
		}
		b, err := os.ReadFile(path)
		if err == nil {
			for _, c := range b {
				out = append(out, int32(c))
			}
		}
		return nil
	})
	if len(out) < 10_000 {
		t.Fatalf("only %d bytes of Go source found", len(out))
	}
	return out
}

// TestTrainingLossesMatchCPU fine-tunes the bundled base model for 50 steps
// on both paths with the same batches and compares every step's loss.
func TestTrainingLossesMatchCPU(t *testing.T) {
	dev := device(t)
	ck, err := model.LoadCheckpoint("../../models/base-en")
	if err != nil {
		t.Fatal(err)
	}
	c := ck.Config
	text := repoText(t)
	const B, T = 4, 64
	steps := 50
	if emulated(dev) {
		steps = 6 // the CPU stand-in (package cudaemu) is slow
	}
	for _, tc := range []struct {
		p   cuda.Precision
		tol float64
	}{{cuda.FP32, 1e-3}, {cuda.BF16, 1e-2}} {
		t.Run(tc.p.String(), func(t *testing.T) {
			cpu, _ := model.New(c, B, T)
			copy(cpu.Params, ck.Params)
			gpu, err := New(dev, c, B, T, tc.p)
			if err != nil {
				t.Fatal(err)
			}
			defer gpu.Close()
			if err := gpu.WriteParams(ck.Params); err != nil {
				t.Fatal(err)
			}
			cfg := AdamWConfig{Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.1}
			mom, vel := make([]float32, c.NumParams()), make([]float32, c.NumParams())
			rng := rand.New(rand.NewPCG(9, 9))
			tokens, targets := make([]int32, B*T), make([]int32, B*T)
			worst := 0.0
			var first, last [2]float32
			var firstTokens, firstTargets []int32
			for step := 1; step <= steps; step++ {
				for b := 0; b < B; b++ {
					o := rng.IntN(len(text) - T - 1)
					copy(tokens[b*T:], text[o:o+T])
					copy(targets[b*T:], text[o+1:o+T+1])
				}
				cpu.ZeroGrad()
				want, err := cpu.Forward(tokens, targets, B, T)
				if err != nil {
					t.Fatal(err)
				}
				cpu.Backward(1)
				cpuClipAdamW(cpu.Params, cpu.Grads, mom, vel, c, cfg, 3e-4, step)
				gpu.ZeroGrad()
				got, err := gpu.Forward(tokens, targets, B, T)
				if err != nil {
					t.Fatal(err)
				}
				if err := gpu.Backward(1); err != nil {
					t.Fatal(err)
				}
				if _, err := gpu.ClipGradNorm(1); err != nil {
					t.Fatal(err)
				}
				if err := gpu.AdamW(cfg, 3e-4, step); err != nil {
					t.Fatal(err)
				}
				d := math.Abs(float64(got-want)) / float64(want)
				if !(d <= tc.tol) {
					t.Fatalf("step %d: loss %v, CPU %v: relative difference %.2e > %.0e", step, got, want, d, tc.tol)
				}
				worst = max(worst, d)
				if step == 1 {
					first = [2]float32{got, want}
					firstTokens, firstTargets = slices.Clone(tokens), slices.Clone(targets)
				}
				last = [2]float32{got, want}
			}
			t.Logf("%v: %d steps, loss %.4f → %.4f (CPU %.4f → %.4f), worst relative difference %.2e", tc.p, steps, first[0], last[0], first[1], last[1], worst)
			// The comparison means something only if training moved the
			// model: its loss on the first batch went down.
			after, err := cpu.Forward(firstTokens, firstTargets, B, T)
			if err != nil {
				t.Fatal(err)
			}
			if !(after < first[1]) {
				t.Errorf("the CPU run did not learn (first batch's loss %v → %v): the comparison shows nothing", first[1], after)
			}
		})
	}
}

// TestOutOfMemoryNamesTheFix asks for a model far larger than any GPU and
// checks the error says what was asked and which flag lowers it.
func TestOutOfMemoryNamesTheFix(t *testing.T) {
	dev := device(t)
	// GPT-2 124M's shapes with 200 layers: about 200 GiB of activations
	// at batch 16 × 1024, every buffer under 2³¹ elements.
	c := model.Config{Vocab: 50257, Context: 1024, Dim: 768, Layers: 200, Heads: 12}
	_, err := New(dev, c, 16, 1024, cuda.FP32)
	if err == nil {
		t.Fatal("a 200-layer GPT-2 at batch 16×1024 fit")
	}
	if !errors.Is(err, cuda.ErrOutOfMemory) {
		t.Errorf("error %v does not wrap cuda.ErrOutOfMemory", err)
	}
	msg := err.Error()
	for _, want := range []string{"GiB", "--batch", "--seq-len"} {
		if !contains(msg, want) {
			t.Errorf("error %q does not mention %q", msg, want)
		}
	}
	if free, _ := dev.MemInfo(); dev.Allocated() > 64<<20 {
		t.Errorf("a failed New left %d bytes allocated (%d free)", dev.Allocated(), free)
	}
	fmt.Fprintln(os.Stderr, "out-of-memory error:", msg)
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

// TestGradRangesMatchCPU checks that the device model reports the CPU
// model's gradient ranges, in the same order, and that every range has its
// final gradient once the copy ordered after it is done.
func TestGradRangesMatchCPU(t *testing.T) {
	c := testConfig()
	cpu, _ := model.New(c, 1, 8)
	want := cpu.GradRanges()
	got := gradRanges(c.Layout(), c.Layers)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("device ranges %v, CPU %v", got, want)
	}
	dev := device(t)
	B, T := 2, 16
	gpu, err := New(dev, c, B, T, cuda.FP32)
	if err != nil {
		t.Fatal(err)
	}
	defer gpu.Close()
	cpu2, _ := model.New(c, B, T)
	cpu2.Init(11)
	gpu.WriteParams(cpu2.Params)
	tokens, targets := randomBatch(rand.New(rand.NewPCG(3, 3)), c.Vocab, B*T)
	unlock := dev.Lock()
	host, err := dev.AllocHostF32(c.NumParams(), "test")
	unlock()
	if err != nil {
		t.Fatal(err)
	}
	var reported [][2]int
	var events [][2]cuda.Event
	gpu.GradReady = func(lo, hi int) {
		reported = append(reported, [2]int{lo, hi})
		b, _ := dev.NewEvent()
		e, _ := dev.NewEvent()
		events = append(events, [2]cuda.Event{b, e})
		if err := dev.CopyToHostAfter(host.F32[lo:hi], gpu.Grads().Off(4*int64(lo)), hi-lo, b, e); err != nil {
			t.Error(err)
		}
	}
	gpu.ZeroGrad()
	if _, err := gpu.Forward(tokens, targets, B, T); err != nil {
		t.Fatal(err)
	}
	if err := gpu.Backward(1); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(reported) != fmt.Sprint(want) {
		t.Fatalf("GradReady reported %v, want %v", reported, want)
	}
	unlock = dev.Lock()
	for _, e := range events {
		if err := dev.WaitEvent(e[1]); err != nil {
			t.Fatal(err)
		}
	}
	unlock()
	cpu2.ZeroGrad()
	cpu2.Forward(tokens, targets, B, T)
	cpu2.Backward(1)
	if e := relErr(host.F32, cpu2.Grads); !(e <= 1e-4) {
		t.Errorf("gradients copied range by range: relative error %.2e", e)
	}
	unlock = dev.Lock()
	dev.FreeHost(host)
	for _, e := range events {
		dev.DestroyEvent(e[0])
		dev.DestroyEvent(e[1])
	}
	unlock()
}

// TestLoRAMatchesCPU attaches the same adapter (B made non-zero, so that
// every path carries signal) to the CPU and the GPU model and compares the
// loss and every adapter gradient; the base's gradient stays untouched.
func TestLoRAMatchesCPU(t *testing.T) {
	dev := device(t)
	for _, tc := range []struct {
		p   cuda.Precision
		tol float64
	}{{cuda.FP32, 1e-4}, {cuda.BF16, 3e-2}} {
		t.Run(tc.p.String(), func(t *testing.T) {
			c := testConfig()
			B, T := 2, 24
			cpu, _ := model.New(c, B, T)
			cpu.Init(5)
			a, err := model.NewLoRA(c, model.LoRAConfig{Rank: 4, Alpha: 8, Targets: model.DefaultLoRATargets})
			if err != nil {
				t.Fatal(err)
			}
			a.Init(9)
			rng := rand.New(rand.NewPCG(4, 4))
			for i := range a.Params {
				a.Params[i] += float32(rng.NormFloat64() * 0.02)
			}
			checkLoRAMatchesCPU(t, dev, cpu, a, rng, tc.p, tc.tol)
		})
	}
}

// checkLoRAMatchesCPU attaches adapter a to cpu (a model holding the
// base's weights, batch as allocated) and to a GPU copy of it at
// precision prec, runs a step of random tokens on both, and compares the
// loss and every adapter gradient within tol; the GPU base's gradient must
// stay untouched, and GradRanges must be the adapter's, one per block.
func checkLoRAMatchesCPU(t *testing.T, dev *cuda.Device, cpu *model.Model, a *model.LoRA, rng *rand.Rand, prec cuda.Precision, tol float64) {
	t.Helper()
	c := cpu.Config
	B, T := cpu.MaxBatch()
	gpu, err := New(dev, c, B, T, prec)
	if err != nil {
		t.Fatal(err)
	}
	defer gpu.Close()
	if err := gpu.WriteParams(cpu.Params); err != nil {
		t.Fatal(err)
	}
	if err := gpu.AttachLoRA(a); err != nil {
		t.Fatal(err)
	}
	if err := cpu.AttachLoRA(a); err != nil {
		t.Fatal(err)
	}
	tokens, targets := randomBatch(rng, c.Vocab, B*T)
	cpu.ZeroGrad()
	want, _ := cpu.Forward(tokens, targets, B, T)
	cpu.Backward(1)
	gpu.ZeroGrad()
	got, err := gpu.Forward(tokens, targets, B, T)
	if err != nil {
		t.Fatal(err)
	}
	if err := gpu.Backward(1); err != nil {
		t.Fatal(err)
	}
	if d := math.Abs(float64(got-want)) / float64(want); !(d <= tol) {
		t.Errorf("loss %v, CPU %v", got, want)
	}
	grads := make([]float32, a.NumParams())
	if err := gpu.ReadGrads(grads); err != nil {
		t.Fatal(err)
	}
	for _, p := range a.Layout() {
		if e := relErr(grads[p.Offset:p.Offset+p.Size], a.Grads[p.Offset:p.Offset+p.Size]); !(e <= tol) {
			t.Errorf("%s: relative error %.2e > %.0e", p.Name, e, tol)
		}
	}
	// The frozen base's gradient buffer was never written.
	base := make([]float32, c.NumParams())
	gpu.tr = &gpu.base
	err = gpu.ReadGrads(base)
	gpu.tr = &gpu.ad.set
	if err != nil {
		t.Fatal(err)
	}
	for i, g := range base {
		if g != 0 {
			t.Fatalf("base gradient %d is %v with the base frozen", i, g)
		}
	}
	if g := gpu.GradRanges(); len(g) != c.Layers {
		t.Errorf("adapter GradRanges %v, want one per block", g)
	}
}

// checkStepMatchesCPU runs one forward and backward pass of random tokens
// (seeded) on cpu, a model holding the weights (batch as allocated), and
// on a GPU copy of it at precision prec, and compares the loss, the logits
// at the (sequence, position) pairs at, and every parameter's gradient,
// per tensor, within tol.
func checkStepMatchesCPU(t *testing.T, dev *cuda.Device, cpu *model.Model, prec cuda.Precision, tol float64, at [][2]int) {
	t.Helper()
	c := cpu.Config
	B, T := cpu.MaxBatch()
	gpu, err := New(dev, c, B, T, prec)
	if err != nil {
		t.Fatal(err)
	}
	defer gpu.Close()
	if err := gpu.WriteParams(cpu.Params); err != nil {
		t.Fatal(err)
	}
	tokens, targets := randomBatch(rand.New(rand.NewPCG(1, 2)), c.Vocab, B*T)
	cpu.ZeroGrad()
	want, err := cpu.Forward(tokens, targets, B, T)
	if err != nil {
		t.Fatal(err)
	}
	if err := gpu.ZeroGrad(); err != nil {
		t.Fatal(err)
	}
	got, err := gpu.Forward(tokens, targets, B, T)
	if err != nil {
		t.Fatal(err)
	}
	if d := math.Abs(float64(got-want)) / float64(want); !(d <= tol) {
		t.Errorf("loss %v, CPU %v: relative error %.2e > %.0e", got, want, d, tol)
	}
	row := make([]float32, c.Vocab)
	for _, bt := range at {
		if err := gpu.LogitsAt(row, bt[0], bt[1]); err != nil {
			t.Fatal(err)
		}
		i := (bt[0]*T + bt[1]) * c.Vocab
		if e := relErr(row, cpu.Logits()[i:i+c.Vocab]); !(e <= tol) {
			t.Errorf("logits at %v: relative error %.2e > %.0e", bt, e, tol)
		}
	}
	if err := cpu.Backward(1); err != nil {
		t.Fatal(err)
	}
	if err := gpu.Backward(1); err != nil {
		t.Fatal(err)
	}
	grads := make([]float32, c.NumParams())
	if err := gpu.ReadGrads(grads); err != nil {
		t.Fatal(err)
	}
	worst, worstName := 0.0, ""
	for _, p := range c.Layout() {
		e := relErr(grads[p.Offset:p.Offset+p.Size], cpu.Grads[p.Offset:p.Offset+p.Size])
		if !(e <= tol) {
			t.Errorf("gradient of %s: relative error %.2e > %.0e", p.Name, e, tol)
		}
		if e > worst || math.IsNaN(e) {
			worst, worstName = e, p.Name
		}
	}
	t.Logf("%v: loss %.6f (CPU %.6f); worst gradient %s at %.2e", prec, got, want, worstName, worst)
}
