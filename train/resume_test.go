package train_test

import (
	"math"
	"testing"

	"github.com/braidml/braid/model"
	"github.com/braidml/braid/train"
)

// TestResumeIsBitwise: 3 steps, a checkpoint, and 3 more steps from it give
// bitwise the same weights as 6 uninterrupted steps.
func TestResumeIsBitwise(t *testing.T) {
	corpus := &train.Corpus{}
	for i := 0; i < 5000; i++ {
		corpus.Train = append(corpus.Train, uint16((i*31+i/7)%257))
	}
	mc := model.Config{Vocab: 257, Context: 16, Dim: 16, Layers: 1, Heads: 2}
	cfg := train.DefaultConfig()
	cfg.Steps, cfg.Batch, cfg.EvalEvery, cfg.Warmup = 6, 2, 0, 2
	newTrainer := func() *train.Trainer {
		m, err := model.New(mc, cfg.Batch, 16)
		if err != nil {
			t.Fatal(err)
		}
		m.Init(cfg.Seed)
		tr, err := train.New(cfg, m, corpus)
		if err != nil {
			t.Fatal(err)
		}
		return tr
	}
	straight := newTrainer()
	for i := 0; i < 6; i++ {
		if _, err := straight.Step(); err != nil {
			t.Fatal(err)
		}
	}
	first := newTrainer()
	for i := 0; i < 3; i++ {
		first.Step()
	}
	dir := t.TempDir()
	if err := first.SaveCheckpoint(dir, model.ByteTokenizer{}); err != nil {
		t.Fatal(err)
	}
	second := newTrainer()
	ck, err := model.LoadCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	copy(second.Model.Params, ck.Params)
	if err := second.Resume(dir); err != nil {
		t.Fatal(err)
	}
	if second.Opt.Step != 3 {
		t.Fatalf("resumed at step %d, want 3", second.Opt.Step)
	}
	for second.Opt.Step < 6 {
		if _, err := second.Step(); err != nil {
			t.Fatal(err)
		}
	}
	for i, p := range straight.Model.Params {
		if math.Float32bits(p) != math.Float32bits(second.Model.Params[i]) {
			t.Fatalf("param %d: %v after 6 steps, %v after 3 + resume + 3", i, p, second.Model.Params[i])
		}
	}
	// A state saved with another batch shape is refused.
	cfg.Batch = 1
	other := newTrainer()
	if err := other.Resume(dir); err == nil {
		t.Error("resuming a batch-2 state with batch 1: no error")
	}
}
