package train_test

import (
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/braidml/braid/model"
	"github.com/braidml/braid/train"
)

// loraTrainerFixture is a small corpus and base for the Trainer's LoRA
// tests.
type loraTrainerFixture struct {
	corpus *train.Corpus
	mc     model.Config
	base   []float32
	lc     model.LoRAConfig
	cfg    train.Config
}

func newLoRATrainerFixture(t *testing.T) *loraTrainerFixture {
	corpus := &train.Corpus{}
	for i := 0; i < 5000; i++ {
		corpus.Train = append(corpus.Train, uint16((i*31+i/7)%257))
	}
	mc := model.Config{Vocab: 257, Context: 16, Dim: 16, Layers: 2, Heads: 2}
	m, err := model.New(mc, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	m.Init(5)
	cfg := train.DefaultLoRAConfig()
	cfg.Steps, cfg.Batch, cfg.EvalEvery, cfg.Warmup = 6, 2, 0, 2
	return &loraTrainerFixture{corpus: corpus, mc: mc, base: m.Params, cfg: cfg,
		lc: model.LoRAConfig{Rank: 2, Alpha: 4, Dropout: 0.1, Targets: []string{"c_attn", "c_proj", "c_fc"}, BaseModel: "base"}}
}

// trainer returns a trainer of the fixture's base with adapter a attached
// (a fresh one from seed 1 when a is nil).
func (f *loraTrainerFixture) trainer(t *testing.T, a *model.LoRA) *train.Trainer {
	t.Helper()
	m, err := model.New(f.mc, f.cfg.Batch, 16)
	if err != nil {
		t.Fatal(err)
	}
	copy(m.Params, f.base)
	if a == nil {
		if a, err = model.NewLoRA(f.mc, f.lc); err != nil {
			t.Fatal(err)
		}
		a.Init(f.cfg.Seed)
	}
	if err := m.AttachLoRA(a); err != nil {
		t.Fatal(err)
	}
	tr, err := train.New(f.cfg, m, model.ByteTokenizer{}, f.corpus)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// TestLoRATrainer: with an adapter attached, the Trainer optimises only the
// adapter (the base weights stay bitwise as they were), its loss falls, and
// a checkpoint holds the adapter in PEFT's layout plus the training state,
// not the model.
func TestLoRATrainer(t *testing.T) {
	f := newLoRATrainerFixture(t)
	f.cfg.Steps = 30
	tr := f.trainer(t, nil)
	if tr.LoRA == nil || tr.NumTrainable() != tr.LoRA.NumParams() || len(tr.Opt.M) != tr.LoRA.NumParams() {
		t.Fatalf("trainer LoRA %v, %d trainable, %d moments", tr.LoRA != nil, tr.NumTrainable(), len(tr.Opt.M))
	}
	var first, last float32
	for i := range f.cfg.Steps {
		st, err := tr.Step()
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = st.Loss
		}
		last = st.Loss
	}
	t.Logf("%d steps of a rank-2 adapter (%d parameters, base %d): loss %.4f → %.4f", f.cfg.Steps, tr.NumTrainable(), f.mc.NumParams(), first, last)
	if !(last < first) {
		t.Errorf("loss %v → %v: did not fall", first, last)
	}
	if i, ok := sameBits(tr.Model.Params, f.base); !ok {
		t.Errorf("base weight %d changed", i)
	}
	dir := t.TempDir()
	if err := tr.SaveCheckpoint(dir, model.ByteTokenizer{}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{model.AdapterWeightsFile, model.AdapterConfigFile, train.StateFile} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Errorf("checkpoint lacks %s: %v", name, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, model.WeightsFile)); err == nil {
		t.Errorf("a LoRA checkpoint holds %s", model.WeightsFile)
	}
	a, err := model.LoadAdapter(dir, f.mc)
	if err != nil {
		t.Fatal(err)
	}
	if i, ok := sameBits(a.Params, tr.LoRA.Params); !ok {
		t.Errorf("saved adapter differs at %d", i)
	}
	if a.Config.BaseModel != "base" {
		t.Errorf("base_model_name_or_path %q", a.Config.BaseModel)
	}
	// Eval runs without dropout: twice the same.
	r1, err1 := tr.Eval()
	r2, err2 := tr.Eval()
	if err1 == nil && err2 == nil && r1.Loss != r2.Loss {
		t.Errorf("two evaluations differ: %v, %v", r1.Loss, r2.Loss)
	}
}

// TestLoRAResumeIsBitwise: 3 steps, a checkpoint, and 3 more steps from it
// (base loaded again, adapter from the checkpoint) give bitwise the same
// adapter as 6 uninterrupted steps, dropout included; a state is refused on
// another base, for another adapter shape, for a full run's trainer, and a
// full run's state for a LoRA trainer.
func TestLoRAResumeIsBitwise(t *testing.T) {
	f := newLoRATrainerFixture(t)
	straight := f.trainer(t, nil)
	for range 6 {
		if _, err := straight.Step(); err != nil {
			t.Fatal(err)
		}
	}
	first := f.trainer(t, nil)
	for range 3 {
		if _, err := first.Step(); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	if err := first.SaveCheckpoint(dir, model.ByteTokenizer{}); err != nil {
		t.Fatal(err)
	}
	load := func() *model.LoRA {
		a, err := model.LoadAdapter(dir, f.mc)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	second := f.trainer(t, load())
	if err := second.Resume(dir); err != nil {
		t.Fatal(err)
	}
	for second.Opt.Step < 6 {
		if _, err := second.Step(); err != nil {
			t.Fatal(err)
		}
	}
	if i, ok := sameBits(straight.LoRA.Params, second.LoRA.Params); !ok {
		t.Fatalf("adapter %d: %v after 6 steps, %v after 3 + resume + 3", i, straight.LoRA.Params[i], second.LoRA.Params[i])
	}
	if i, ok := sameBits(straight.Opt.V, second.Opt.V); !ok {
		t.Fatalf("second moment %d differs", i)
	}

	refuse := func(name string, tr *train.Trainer, wants string) {
		t.Helper()
		err := tr.Resume(dir)
		if err == nil || !strings.Contains(err.Error(), wants) {
			t.Errorf("%s: %v, want an error saying %q", name, err, wants)
			return
		}
		t.Logf("%s: %v", name, err)
	}
	other := f.trainer(t, load())
	other.Model.Params[0]++
	refuse("other base", f.trainerOn(t, other.Model.Params, load()), "other base weights")
	edited := load()
	edited.Params[3]++
	refuse("other adapter weights", f.trainer(t, edited), "does not belong with the weights")
	lc := f.lc
	lc.Dropout = 0.2
	a, _ := model.NewLoRA(f.mc, lc)
	refuse("other dropout", f.trainer(t, a), "another adapter")
	lc.Dropout, lc.Rank = f.lc.Dropout, 3
	a, _ = model.NewLoRA(f.mc, lc)
	refuse("other rank", f.trainer(t, a), "another adapter")
	m, _ := model.New(f.mc, f.cfg.Batch, 16)
	copy(m.Params, f.base)
	full, err := train.New(f.cfg, m, model.ByteTokenizer{}, f.corpus)
	if err != nil {
		t.Fatal(err)
	}
	refuse("full trainer", full, "LoRA adapter run")
	fullDir := t.TempDir()
	if err := full.SaveCheckpoint(fullDir, model.ByteTokenizer{}); err != nil {
		t.Fatal(err)
	}
	if err := f.trainer(t, load()).Resume(fullDir); err == nil || !strings.Contains(err.Error(), "full fine-tuning run") {
		t.Errorf("a full run's state for a LoRA trainer: %v", err)
	}
	if math.IsNaN(float64(straight.LoRA.Params[0])) || slices.Equal(straight.LoRA.Params, load().Params) {
		t.Error("the adapter did not train")
	}
}

// trainerOn is trainer with another base.
func (f *loraTrainerFixture) trainerOn(t *testing.T, base []float32, a *model.LoRA) *train.Trainer {
	g := *f
	g.base = base
	return g.trainer(t, a)
}
