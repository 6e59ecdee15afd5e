//go:build unix

package model_test

import (
	"flag"
	"math/rand/v2"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/braidml/braid/kernels"
	"github.com/braidml/braid/model"
)

var big = flag.Bool("big", false, "run TestLlama1BLoRAMemory: LoRA on a Llama-3.2-1B-shaped model, about 5 GB and minutes")

// llama1B is Llama-3.2-1B's shape (vocabulary 128256, 2048 channels, 16
// layers, 32 heads on 8 key/value heads, MLP 8192, tied, Llama 3's rotary
// scaling).
var llama1B = model.Config{Arch: model.ArchLlama, Vocab: 128256, Context: 131072, Dim: 2048, Layers: 16, Heads: 32, KVHeads: 8,
	Hidden: 8192, HeadDim: 64, NormEps: 1e-5, RopeTheta: 500000,
	RopeScaling: model.RopeScaling{Factor: 32, LowFreqFactor: 1, HighFreqFactor: 4, OriginalContext: 8192}}

// TestLlama1BLoRAMemory is issue 16's memory target: a rank-16 adapter on
// every projection of a Llama-3.2-1B-shaped model with random bf16
// weights trains on batches of 1 × 512 within 6 GB of peak resident
// memory. It needs about 5 GB and minutes, so it runs only with -big:
//
//	go test ./model -run TestLlama1BLoRAMemory -count=1 -v -args -big
//
// and logs the peak RSS (getrusage's ru_maxrss, which counts the whole
// process, test binary included) and the time of each step.
func TestLlama1BLoRAMemory(t *testing.T) {
	if !*big {
		t.Skip("needs -big (about 5 GB and minutes)")
	}
	const B, T, steps = 1, 512, 2
	start := time.Now()
	m, err := model.NewFrozenBF16(llama1B, B, T)
	if err != nil {
		t.Fatal(err)
	}
	m.Init(1)
	a, err := model.NewLoRA(llama1B, model.LoRAConfig{Rank: 16, Alpha: 32, Targets: model.DefaultLlamaLoRATargets})
	if err != nil {
		t.Fatal(err)
	}
	a.Init(2)
	if err := m.AttachLoRA(a); err != nil {
		t.Fatal(err)
	}
	mo, vo := make([]float32, len(a.Params)), make([]float32, len(a.Params))
	t.Logf("%d parameters (%.2f GB in bf16), adapter %d; built in %v", llama1B.NumParams(), float64(2*llama1B.NumParams())/1e9, len(a.Params), time.Since(start).Round(time.Millisecond))
	rng := rand.New(rand.NewPCG(3, 4))
	tokens, targets := make([]int32, B*T), make([]int32, B*T)
	for step := 1; step <= steps; step++ {
		for i := range tokens {
			tokens[i], targets[i] = int32(rng.IntN(llama1B.Vocab)), int32(rng.IntN(llama1B.Vocab))
		}
		t0 := time.Now()
		a.ZeroGrad()
		loss, err := m.Forward(tokens, targets, B, T)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Backward(1); err != nil {
			t.Fatal(err)
		}
		kernels.AdamW(a.Params, a.Grads, mo, vo, kernels.AdamWParams{LR: 1e-4, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, Step: step})
		t.Logf("step %d: loss %.4f, %v (%d threads)", step, loss, time.Since(t0).Round(time.Millisecond), kernels.Threads())
	}
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	peak := int64(ru.Maxrss) * 1024 // kilobytes on Linux
	if runtime.GOOS == "darwin" {
		peak = int64(ru.Maxrss) // bytes
	}
	t.Logf("peak RSS %.2f GB", float64(peak)/1e9)
	if peak > 6e9 {
		t.Errorf("peak RSS %.2f GB, want ≤ 6 GB", float64(peak)/1e9)
	}
	runtime.KeepAlive(m)
}
