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
		tr, err := train.New(cfg, m, model.ByteTokenizer{}, corpus)
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
	// A state is refused with other settings, other weights, other data, or
	// when the run is already done.
	refuse := func(name string, tr *train.Trainer) {
		t.Helper()
		copy(tr.Model.Params, ck.Params)
		if err := tr.Resume(dir); err == nil {
			t.Errorf("%s: no error", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
	cfg.LR *= 2
	refuse("other learning rate", newTrainer())
	cfg.LR /= 2
	cfg.Steps = 3
	refuse("already done", newTrainer())
	cfg.Steps = 6
	cfg.Seed = 99
	refuse("other seed", newTrainer())
	cfg.Seed = train.DefaultConfig().Seed
	tr := newTrainer()
	tr.Corpus = &train.Corpus{Train: append([]uint16{1}, corpus.Train...)}
	refuse("other data", tr)
	tr = newTrainer()
	copy(tr.Model.Params, ck.Params)
	tr.Model.Params[0]++
	if err := tr.Resume(dir); err == nil {
		t.Error("other weights: no error")
	}
}
