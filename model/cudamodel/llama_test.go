package cudamodel

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/braidml/braid/kernels/cuda"
	"github.com/braidml/braid/model"
)

// The Llama family on the GPU against package model's CPU computation, on
// the three fixtures PyTorch checked (model/testdata): Llama 3 (untied
// head, grouped-query attention, head_dim × heads ≠ dim, llama3 RoPE
// scaling), Qwen2 (q/k/v biases, tied embedding) and Mistral (a sliding
// window, which the GPU runs only where it covers the whole sequence).

// llamaFixture loads a fixture's config and weights; "wide" is a random
// Llama 64 channels wide, where bf16's rounding averages out as it does in
// real models (the fixtures are 8 wide, and their bf16 gradients carry a
// few percent of rounding noise: no sum is long enough to smooth it).
func llamaFixture(t *testing.T, name string) (model.Config, []float32) {
	t.Helper()
	if name == "wide" {
		c := model.Config{Arch: model.ArchLlama, Vocab: 101, Context: 64, Dim: 64, Layers: 2, Heads: 4, KVHeads: 2,
			Hidden: 128, HeadDim: 16, NormEps: 1e-5, RopeTheta: 10000}
		m, err := model.New(c, 1, 1)
		if err != nil {
			t.Fatal(err)
		}
		m.Init(13)
		return c, m.Params
	}
	ck, err := model.LoadCheckpoint(filepath.Join("..", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return ck.Config, ck.Params
}

var llamaFixtures = []string{"llama_tiny", "qwen2_tiny", "mistral_tiny", "wide"}

// bf16Tol is the bound of bf16 against the CPU's float32: GPT-2's 2e-2
// (TestForwardBackwardMatchesCPU) on the wide model, 6e-2 on the 8-wide
// fixtures (see llamaFixture).
func bf16Tol(name string) float64 {
	if name == "wide" {
		return 2e-2
	}
	return 6e-2
}

// llamaBatch is the batch the fixtures are compared at: T within Mistral's
// window of 5.
const llamaB, llamaT = 3, 5

// eachLlamaCase runs check, as a subtest, for every fixture at fp32 and
// at bf16 with the fixture's bound, on a CPU model of batch llamaB×llamaT
// holding the fixture's weights.
func eachLlamaCase(t *testing.T, check func(t *testing.T, cpu *model.Model, p cuda.Precision, tol float64)) {
	for _, name := range llamaFixtures {
		for _, tc := range []struct {
			p   cuda.Precision
			tol float64
		}{{cuda.FP32, 1e-4}, {cuda.BF16, bf16Tol(name)}} {
			t.Run(fmt.Sprintf("%s/%v", name, tc.p), func(t *testing.T) {
				c, params := llamaFixture(t, name)
				cpu, err := model.New(c, llamaB, llamaT)
				if err != nil {
					t.Fatal(err)
				}
				copy(cpu.Params, params)
				check(t, cpu, tc.p, tc.tol)
			})
		}
	}
}

// TestLlamaForwardBackwardMatchesCPU: logits, loss and every parameter's
// gradient, per tensor, at each precision's bound.
func TestLlamaForwardBackwardMatchesCPU(t *testing.T) {
	dev := device(t)
	eachLlamaCase(t, func(t *testing.T, cpu *model.Model, p cuda.Precision, tol float64) {
		checkStepMatchesCPU(t, dev, cpu, p, tol, [][2]int{{0, 0}, {1, 2}, {2, llamaT - 1}})
	})
}

// TestLlamaGradRangesMatchCPU: GradReady reports the CPU model's ranges,
// in its order.
func TestLlamaGradRangesMatchCPU(t *testing.T) {
	dev := device(t)
	for _, name := range llamaFixtures {
		c, params := llamaFixture(t, name)
		cpu, _ := model.New(c, 1, llamaT)
		gpu, err := New(dev, c, 1, llamaT, cuda.FP32)
		if err != nil {
			t.Fatal(err)
		}
		gpu.WriteParams(params)
		var reported [][2]int
		gpu.GradReady = func(lo, hi int) { reported = append(reported, [2]int{lo, hi}) }
		tokens, targets := randomBatch(rand.New(rand.NewPCG(3, 3)), c.Vocab, llamaT)
		gpu.ZeroGrad()
		if _, err := gpu.Forward(tokens, targets, 1, llamaT); err != nil {
			t.Fatal(err)
		}
		if err := gpu.Backward(1); err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(reported) != fmt.Sprint(cpu.GradRanges()) {
			t.Errorf("%s: GradReady reported %v, the CPU's ranges are %v", name, reported, cpu.GradRanges())
		}
		gpu.Close()
	}
}

// TestLlamaLoRAMatchesCPU: an adapter on all seven projections (B made
// non-zero) gives the CPU's loss and adapter gradients; the base's
// gradient stays untouched.
func TestLlamaLoRAMatchesCPU(t *testing.T) {
	dev := device(t)
	eachLlamaCase(t, func(t *testing.T, cpu *model.Model, p cuda.Precision, tol float64) {
		a, err := model.NewLoRA(cpu.Config, model.LoRAConfig{Rank: 3, Alpha: 6, Targets: model.DefaultLlamaLoRATargets})
		if err != nil {
			t.Fatal(err)
		}
		a.Init(9)
		rng := rand.New(rand.NewPCG(4, 4))
		for i := range a.Params {
			a.Params[i] += float32(rng.NormFloat64() * 0.05)
		}
		checkLoRAMatchesCPU(t, dev, cpu, a, rng, p, tol)
	})
}

// TestRefusesAShortSlidingWindow: Mistral's window shorter than the
// sequence is refused, naming the window and the fix, before any device
// memory is touched.
func TestRefusesAShortSlidingWindow(t *testing.T) {
	c, _ := llamaFixture(t, "mistral_tiny")
	_, err := New(nil, c, 1, c.SlidingWindow+1, cuda.FP32)
	if !errors.Is(err, model.ErrConfig) || !strings.Contains(err.Error(), "sliding window") || !strings.Contains(err.Error(), fmt.Sprint(c.SlidingWindow)) {
		t.Errorf("error %v, want ErrConfig naming the sliding window of %d", err, c.SlidingWindow)
	}
}
