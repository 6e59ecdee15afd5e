package train_test

import (
	"context"
	"math"
	"strings"
	"testing"

	"github.com/braidml/braid/model"
	"github.com/braidml/braid/model/safetensors"
	"github.com/braidml/braid/train"
)

// TestLoRAWorkerHoldsBF16Base: a LoRA worker on a Llama-family base whose
// matrices are all bf16 values (as a checkpoint stored in bf16 loads)
// holds the base in bf16, keeps the base's hash, and trains as a worker
// on a float32 base of the same values (one of which is nudged off bf16,
// by 1e-7 relative, so that it is not held) to 1e-5.
func TestLoRAWorkerHoldsBF16Base(t *testing.T) {
	mc := model.Config{Arch: model.ArchLlama, Vocab: 257, Context: 64, Dim: 32, Layers: 2, Heads: 4, KVHeads: 2,
		Hidden: 48, HeadDim: 8, NormEps: 1e-5, RopeTheta: 10000}
	data := prepareDataset(t, 40, 1, 0.1)
	cfg := loraJob(3, 6, 3)
	cfg.LoRATargets = model.DefaultLlamaLoRATargets
	worker := func(nudge bool) *train.Worker {
		t.Helper()
		m, err := model.New(mc, cfg.MicroBatch, data.Manifest.SeqLen)
		if err != nil {
			t.Fatal(err)
		}
		m.Init(1)
		for i, v := range m.Params {
			m.Params[i] = safetensors.BF16ToFloat32(safetensors.BF16FromFloat32(v))
		}
		if nudge {
			m.Params[0] *= 1 + 1e-7
		}
		hash := train.WeightsHash(m.Params)
		w, err := train.NewWorker(cfg, m, data)
		if err != nil {
			t.Fatal(err)
		}
		if held := w.Model.BaseHeldBF16(); held == nudge {
			t.Fatalf("nudged %v: base held in bf16 %v", nudge, held)
		}
		if got := train.BaseWeightsHash(w.Model); got != hash {
			t.Errorf("nudged %v: base hash %.12s…, want the float32 base's %.12s…", nudge, got, hash)
		}
		return w
	}
	held, ref := worker(false), worker(true)
	// A model made with its base in bf16 from the start (as a node makes
	// one for a bf16-stored base) trains exactly as the one held by
	// NewWorker.
	fresh, err := model.NewFrozenBF16(mc, cfg.MicroBatch, data.Manifest.SeqLen)
	if err != nil {
		t.Fatal(err)
	}
	fresh.Init(1)
	if got, want := train.BaseWeightsHash(fresh), train.BaseWeightsHash(held.Model); got != want {
		t.Fatalf("NewFrozenBF16 and Init: base hash %.12s…, the held one's %.12s…", got, want)
	}
	early, err := train.NewWorker(cfg, fresh, data)
	if err != nil {
		t.Fatal(err)
	}
	full := testJob(3, 6, 3)
	other, err := model.NewFrozenBF16(mc, cfg.MicroBatch, data.Manifest.SeqLen)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := train.NewWorker(full, other, data); err == nil || !strings.Contains(err.Error(), "bf16") {
		t.Errorf("full fine-tuning of a bf16-held base: %v, want an error naming bf16", err)
	}
	if held.Model.Params != nil {
		t.Error("a worker holding its base in bf16 kept the float32 Params")
	}
	red := &soloReducer{}
	for step := range cfg.Steps {
		a, err := held.Step(context.Background(), partsFor(t, held, step, 1)[0], red)
		if err != nil {
			t.Fatal(err)
		}
		b, err := ref.Step(context.Background(), partsFor(t, ref, step, 1)[0], red)
		if err != nil {
			t.Fatal(err)
		}
		if math.Abs(a.Loss-b.Loss) > 1e-5 || math.IsNaN(a.Loss) {
			t.Errorf("step %d: loss %g on the bf16-held base, %g on the float32 one", step, a.Loss, b.Loss)
		}
		e, err := early.Step(context.Background(), partsFor(t, early, step, 1)[0], red)
		if err != nil {
			t.Fatal(err)
		}
		if e.Loss != a.Loss {
			t.Errorf("step %d: loss %g with NewFrozenBF16's base, %g with NewWorker's holding", step, e.Loss, a.Loss)
		}
	}
	d := 0.0
	for i, v := range held.LoRA().Params {
		d = max(d, math.Abs(float64(v-ref.LoRA().Params[i])))
	}
	if d > 1e-5 {
		t.Errorf("the adapters differ by %g after %d steps", d, cfg.Steps)
	}
}
