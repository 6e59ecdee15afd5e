package train_test

// The data-parallel Worker in LoRA mode (JobConfig.LoRARank > 0): the
// scenarios of worker_test.go again, on the adapter's buffers.

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/braidml/braid/model"
	"github.com/braidml/braid/model/safetensors"
	"github.com/braidml/braid/shard"
	"github.com/braidml/braid/train"
	"github.com/braidml/braid/train/traintest"
)

// loraJob is testJob in LoRA mode: a rank-4 adapter on every projection,
// with dropout (so that the masks' independence of the partition is
// tested too).
func loraJob(steps, globalBatch, microBatch int) train.JobConfig {
	c := testJob(steps, globalBatch, microBatch)
	c.LoRARank, c.LoRAAlpha, c.LoRADropout, c.LoRATargets = 4, 8, 0.1, []string{"c_attn", "c_proj", "c_fc"}
	c.LR, c.WeightDecay = 1e-2, 0
	return c
}

// requireSameAdapter fails unless b's adapter, moments and step are bitwise
// a's, and both bases are still the one they started from.
func requireSameAdapter(t *testing.T, what string, a, b *train.Worker) {
	t.Helper()
	if a.Done != b.Done || a.Opt.Step != b.Opt.Step {
		t.Fatalf("%s: at step %d/%d and %d/%d", what, a.Done, a.Opt.Step, b.Done, b.Opt.Step)
	}
	for name, pair := range map[string][2][]float32{
		"adapter": {a.LoRA().Params, b.LoRA().Params}, "m": {a.Opt.M, b.Opt.M}, "v": {a.Opt.V, b.Opt.V}, "base": {a.Model.Params, b.Model.Params},
	} {
		if i, ok := sameBits(pair[0], pair[1]); !ok {
			t.Fatalf("%s: %s %d differs", what, name, i)
		}
	}
	if a.WeightsHash() != b.WeightsHash() {
		t.Fatalf("%s: same adapter, different WeightsHash", what)
	}
}

// TestLoRAWorkerMode: a worker in LoRA mode attaches an adapter of the
// job's settings, initialised from the job's seed (the same on every
// worker), trains only it, and hands the reducer the adapter's gradient.
func TestLoRAWorkerMode(t *testing.T) {
	data := prepareDataset(t, 40, 1, 0.1)
	cfg := loraJob(3, 6, 3)
	w := newWorker(t, cfg, workerModel, data)
	a := w.LoRA()
	if a == nil || w.Model.LoRA() != a {
		t.Fatal("no adapter attached")
	}
	if a.Config.Rank != 4 || a.Config.Alpha != 8 || a.Config.Dropout != 0.1 || !slices.Equal(a.Config.Targets, []string{"c_attn", "c_proj", "c_fc"}) {
		t.Errorf("adapter config %+v", a.Config)
	}
	if w.NumTrainable() != a.NumParams() || len(w.Opt.M) != a.NumParams() {
		t.Errorf("NumTrainable %d, moments %d, adapter %d", w.NumTrainable(), len(w.Opt.M), a.NumParams())
	}
	t.Logf("adapter: %d trainable parameters, %.1f%% of the model's %d", a.NumParams(), 100*float64(a.NumParams())/float64(workerModel.NumParams()), workerModel.NumParams())
	sum := 0
	for _, b := range w.Buckets() {
		sum += b
	}
	if sum != a.NumParams() {
		t.Errorf("buckets cover %d of the adapter's %d gradients", sum, a.NumParams())
	}
	other := newWorker(t, cfg, workerModel, data)
	if i, ok := sameBits(a.Params, other.LoRA().Params); !ok {
		t.Errorf("two workers of a job start from different adapters (element %d)", i)
	}
	base := slices.Clone(w.Model.Params)
	hash0 := w.WeightsHash()
	red := &soloReducer{}
	for step := range cfg.Steps {
		if _, err := w.Step(context.Background(), partsFor(t, w, step, 1)[0], red); err != nil {
			t.Fatal(err)
		}
	}
	if i, ok := sameBits(base, w.Model.Params); !ok {
		t.Errorf("the frozen base weight %d changed", i)
	}
	if slices.ContainsFunc(w.Model.Grads, func(g float32) bool { return g != 0 }) {
		t.Error("the base's gradient buffer was written")
	}
	if w.WeightsHash() == hash0 {
		t.Error("WeightsHash did not change with the adapter")
	}
	if _, g, ok := w.LastReduced(); !ok || len(g) != a.NumParams() {
		t.Errorf("LastReduced: %d elements, want the adapter's %d", len(g), a.NumParams())
	}
	// Another base, the same adapter: another hash.
	w2 := newWorker(t, cfg, workerModel, data)
	copy(w2.LoRA().Params, a.Params)
	w3 := newWorker(t, cfg, workerModel, data)
	copy(w3.LoRA().Params, a.Params)
	if w2.WeightsHash() != w3.WeightsHash() {
		t.Error("same base and adapter, different hashes")
	}
	m, _ := model.New(workerModel, cfg.MicroBatch, 64)
	m.Init(2)
	w4, err := train.NewWorker(cfg, m, data)
	if err != nil {
		t.Fatal(err)
	}
	copy(w4.LoRA().Params, a.Params)
	if w4.WeightsHash() == w2.WeightsHash() {
		t.Error("same adapter on another base: same WeightsHash")
	}
	// A model with an adapter attached already is refused.
	if _, err := train.NewWorker(cfg, w.Model, data); err == nil || !strings.Contains(err.Error(), "already has a LoRA adapter") {
		t.Errorf("a model with an adapter: %v", err)
	}
}

// TestLoRAWorkersMatchOneWorker: in LoRA mode too, N workers compute the
// same losses as one worker taking each whole global batch, to float32
// rounding (dropout masks included: they follow the sequence, not the
// worker), and hold bitwise the same adapter after every step.
func TestLoRAWorkersMatchOneWorker(t *testing.T) {
	data := prepareDataset(t, 40, 1, 0.1)
	for _, c := range []struct {
		name                 string
		workers, steps, G, B int
		dropout              float64
		buckets              int
	}{
		{name: "3 workers, dropout, 12 steps", workers: 3, steps: 12, G: 16, B: 3, dropout: 0.1, buckets: 4},
		{name: "3 workers, no dropout, default buckets", workers: 3, steps: 6, G: 12, B: 4},
		{name: "4 workers, empty part", workers: 4, steps: 3, G: 3, B: 2, dropout: 0.2, buckets: 4},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := loraJob(c.steps, c.G, c.B)
			cfg.LoRADropout, cfg.BucketBytes = c.dropout, c.buckets
			one := newWorker(t, cfg, workerModel, data)
			many := newWorkers(t, c.workers, cfg, workerModel, data)
			oneRed, manyRed := traintest.Reducers(traintest.NewGroup(1)), traintest.Reducers(traintest.NewGroup(c.workers))
			var worst, first, last float64
			for step := range c.steps {
				want, err := one.Step(context.Background(), partsFor(t, one, step, 1)[0], oneRed[0])
				if err != nil {
					t.Fatal(err)
				}
				res, errs := stepAll(many, partsFor(t, many[0], step, c.workers), manyRed)
				if err := errors.Join(errs...); err != nil {
					t.Fatal(err)
				}
				for i := range many {
					if res[i].Loss != res[0].Loss || res[i].GradNorm != res[0].GradNorm {
						t.Errorf("step %d: worker %d loss %v norm %v, worker 0 %v %v", step, i, res[i].Loss, res[i].GradNorm, res[0].Loss, res[0].GradNorm)
					}
					requireSameAdapter(t, fmt.Sprintf("step %d, worker %d vs worker 0", step, i), many[0], many[i])
				}
				if step == 0 {
					first = want.Loss
				}
				last = want.Loss
				rel := math.Abs(res[0].Loss-want.Loss) / math.Abs(want.Loss)
				worst = max(worst, rel)
				if rel > 1e-4 {
					t.Errorf("step %d: loss %.7f with %d workers, %.7f with one", step, res[0].Loss, c.workers, want.Loss)
				}
				if math.Abs(float64(res[0].GradNorm-want.GradNorm)) > 1e-3*float64(want.GradNorm) {
					t.Errorf("step %d: gradient norm %v with %d workers, %v with one", step, res[0].GradNorm, c.workers, want.GradNorm)
				}
			}
			var diff, norm float64
			for i, p := range one.LoRA().Params {
				diff += float64(p-many[0].LoRA().Params[i]) * float64(p-many[0].LoRA().Params[i])
				norm += float64(p) * float64(p)
			}
			t.Logf("%d steps, loss %.4f → %.4f; largest relative loss difference to one worker %.1e; adapters differ by %.1e relative", c.steps, first, last, worst, math.Sqrt(diff/norm))
			if math.Sqrt(diff/norm) > 1e-4 {
				t.Errorf("the adapters of %d workers and of one differ by %.2g relative", c.workers, math.Sqrt(diff/norm))
			}
		})
	}
}

// TestLoRAWorkerGradientIsBatchMean: the reduced gradient of a LoRA step
// is the adapter gradient of the mean loss over the global batch, as one
// pass over the whole batch computes it (dropout off: the single pass has
// no sequence ids to key masks by).
func TestLoRAWorkerGradientIsBatchMean(t *testing.T) {
	data := prepareDataset(t, 40, 1, 0.1)
	cfg := loraJob(3, 10, 3)
	cfg.LoRADropout = 0
	ws := newWorkers(t, 2, cfg, workerModel, data)
	red := traintest.Reducers(traintest.NewGroup(2))
	ref, err := model.New(workerModel, cfg.GlobalBatch, 64)
	if err != nil {
		t.Fatal(err)
	}
	copy(ref.Params, ws[0].Model.Params)
	lc, _ := cfg.LoRA()
	a, err := model.NewLoRA(workerModel, lc)
	if err != nil {
		t.Fatal(err)
	}
	if err := ref.AttachLoRA(a); err != nil {
		t.Fatal(err)
	}
	for step := range cfg.Steps {
		parts := partsFor(t, ws[0], step, 2)
		batch := slices.Concat(parts...)
		var x, y []int32
		for _, id := range batch {
			seq, err := data.Sequence(shard.Train, id, nil)
			if err != nil {
				t.Fatal(err)
			}
			x, y = append(x, seq[:64]...), append(y, seq[1:]...)
		}
		copy(a.Params, ws[0].LoRA().Params)
		ref.ZeroGrad()
		if _, err := ref.Forward(x, y, len(batch), 64); err != nil {
			t.Fatal(err)
		}
		if err := ref.Backward(1); err != nil {
			t.Fatal(err)
		}
		if _, errs := stepAll(ws, parts, red); errors.Join(errs...) != nil {
			t.Fatal(errs)
		}
		_, got, _ := ws[0].LastReduced()
		var diff, norm float64
		for i, g := range a.Grads {
			diff += float64(got[i]-g) * float64(got[i]-g)
			norm += float64(g) * float64(g)
		}
		t.Logf("step %d: adapter gradient relative difference %.1e (norm %.3g)", step, math.Sqrt(diff/norm), math.Sqrt(norm))
		if norm == 0 || math.Sqrt(diff/norm) > 1e-5 {
			t.Errorf("step %d: gradient %.2g off the one-pass mean over the batch (norm %.3g)", step, math.Sqrt(diff/norm), math.Sqrt(norm))
		}
	}
}

// TestLoRAWorkerBuckets: the adapter's gradient reaches the reducer in
// buckets, last layer first, each a slice of the adapter's Grads, together
// all of it.
func TestLoRAWorkerBuckets(t *testing.T) {
	data := prepareDataset(t, 40, 1, 0.1)
	for _, c := range []struct {
		bucketBytes, want int
	}{{4, workerModel.Layers}, {0, 1}} {
		cfg := loraJob(2, 4, 4)
		cfg.BucketBytes = c.bucketBytes
		w := newWorker(t, cfg, workerModel, data)
		lens := w.Buckets()
		if len(lens) != c.want {
			t.Errorf("bucket bytes %d: %d buckets %v, want %d", c.bucketBytes, len(lens), lens, c.want)
		}
		red := traintest.NewGroup(1)[0]
		var got [][]float32
		red.OnAdd = func(b []float32) { got = append(got, b) }
		if _, err := w.Step(context.Background(), partsFor(t, w, 0, 1)[0], red); err != nil {
			t.Fatal(err)
		}
		g := w.LoRA().Grads
		end := len(g)
		for i, b := range got {
			if len(b) != lens[i] || &b[0] != &g[end-len(b)] {
				t.Fatalf("bucket %d (%d elements) is not the adapter's Grads[%d:%d]", i, len(b), end-lens[i], end)
			}
			end -= len(b)
		}
		if end != 0 {
			t.Errorf("%d buckets leave the adapter's Grads[:%d] out", len(got), end)
		}
	}
}

// TestLoRAWorkerPeerCatchesUp: a worker whose reduction failed after its
// peers' went through catches up with a peer's LastReduced (the adapter's
// gradient) to bitwise the peer's adapter; a worker that failed during the
// gradient reduction redoes the step bitwise.
func TestLoRAWorkerPeerCatchesUp(t *testing.T) {
	data := prepareDataset(t, 40, 1, 0.1)
	const k = 2
	cfg := loraJob(5, 9, 2)
	ws := newWorkers(t, 3, cfg, workerModel, data)
	rs := traintest.NewGroup(3)
	broken := errors.New("peer w2: connection reset")
	rs[2].FailAfter = func(what string, step uint64) error {
		if what == "loss" && step == k {
			return broken
		}
		return nil
	}
	for step := range cfg.Steps {
		_, errs := stepAll(ws, partsFor(t, ws[0], step, 3), traintest.Reducers(rs))
		if step != k {
			if err := errors.Join(errs...); err != nil {
				t.Fatal(err)
			}
			requireSameAdapter(t, fmt.Sprintf("step %d", step), ws[0], ws[2])
			continue
		}
		if errs[0] != nil || !errors.Is(errs[2], broken) {
			t.Fatalf("errors %v, want only worker 2's", errs)
		}
		s, grads, ok := ws[0].LastReduced()
		if !ok || s != k || len(grads) != ws[2].NumTrainable() {
			t.Fatalf("LastReduced: step %d, %d elements, ok %v", s, len(grads), ok)
		}
		if err := ws[2].ApplyReduced(s, make([]float32, len(ws[2].Model.Params))); err == nil {
			t.Error("ApplyReduced of a full-model-sized gradient: no error")
		}
		if err := ws[2].ApplyReduced(s, grads); err != nil {
			t.Fatal(err)
		}
		requireSameAdapter(t, "after ApplyReduced", ws[0], ws[2])
		rs[2].FailAfter = nil
	}
}

// TestLoRAWorkerStepAllocs: in LoRA mode, with dropout, a step allocates
// nothing either.
func TestLoRAWorkerStepAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop items on purpose: allocation counts mean nothing")
	}
	data := prepareDataset(t, 40, 1, 0.1)
	cfg := loraJob(100, 8, 3)
	w := newWorker(t, cfg, workerModel, data)
	var parts [][]int64
	for step := range cfg.Steps {
		parts = append(parts, partsFor(t, w, step, 1)[0])
	}
	red := &soloReducer{}
	step := func() {
		if _, err := w.Step(context.Background(), parts[w.Done], red); err != nil {
			t.Fatal(err)
		}
	}
	step()
	if n := allocsPerRun(20, step); n != 0 {
		t.Errorf("a LoRA step allocates %v times, want 0", n)
	}
}

// TestLoRASnapshotRestore: a LoRA worker restored from a snapshot (the
// adapter, its moments and the step, not the base) continues bitwise as the
// one that made it; a snapshot of another base, of a full job, or of
// another adapter shape is refused; a full worker refuses a LoRA snapshot.
func TestLoRASnapshotRestore(t *testing.T) {
	data := prepareDataset(t, 40, 1, 0.1)
	cfg := loraJob(8, 6, 4)
	a := newWorker(t, cfg, workerModel, data)
	red := traintest.Reducers(traintest.NewGroup(1))[0]
	run := func(w *train.Worker, until int) {
		t.Helper()
		for w.Done < until {
			if _, err := w.Step(context.Background(), partsFor(t, w, w.Done, 1)[0], red); err != nil {
				t.Fatal(err)
			}
		}
	}
	run(a, 4)
	snap, err := a.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	f, err := safetensors.Decode(slices.Clone(snap))
	if err != nil {
		t.Fatal(err)
	}
	if tt, _ := f.Tensor("params"); tt == nil || tt.Shape[0] != a.NumTrainable() {
		t.Fatalf("snapshot params %v, want the adapter's %d", tt, a.NumTrainable())
	}
	if f.Metadata["base_sha256"] != train.WeightsHash(a.Model.Params) {
		t.Errorf("base_sha256 %q is not the base's hash", f.Metadata["base_sha256"])
	}
	t.Logf("LoRA snapshot: %d bytes (the full model's weights alone are %d)", len(snap), 4*workerModel.NumParams())
	run(a, 8)

	b := newWorker(t, cfg, workerModel, data)
	if err := b.Restore(snap); err != nil {
		t.Fatal(err)
	}
	if b.Done != 4 {
		t.Fatalf("restored at step %d, want 4", b.Done)
	}
	run(b, 8)
	requireSameAdapter(t, "4 steps, snapshot, restore, 4 steps vs 8 steps", a, b)

	refuse := func(name string, w *train.Worker, wants string) {
		t.Helper()
		hash := w.WeightsHash()
		err := w.Restore(snap)
		if !errors.Is(err, train.ErrSnapshot) || !strings.Contains(err.Error(), wants) {
			t.Errorf("%s: %v, want ErrSnapshot saying %q", name, err, wants)
			return
		}
		t.Logf("%s: %v", name, err)
		if w.WeightsHash() != hash || w.Done != 0 {
			t.Errorf("%s: a refused snapshot changed the worker", name)
		}
	}
	m, _ := model.New(workerModel, cfg.MicroBatch, 64)
	m.Init(2)
	otherBase, err := train.NewWorker(cfg, m, data)
	if err != nil {
		t.Fatal(err)
	}
	refuse("other base", otherBase, "other base weights")
	full := cfg
	full.LoRARank, full.LoRAAlpha, full.LoRADropout, full.LoRATargets = 0, 0, 0, nil
	refuse("full worker", newWorker(t, full, workerModel, data), "LoRA job")
	rank8 := cfg
	rank8.LoRARank = 8
	refuse("other rank", newWorker(t, rank8, workerModel, data), "job settings")
	// And a full snapshot into a LoRA worker.
	fw := newWorker(t, full, workerModel, data)
	fsnap, err := fw.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if err := newWorker(t, cfg, workerModel, data).Restore(fsnap); !errors.Is(err, train.ErrSnapshot) || !strings.Contains(err.Error(), "full fine-tuning job") {
		t.Errorf("a full snapshot into a LoRA worker: %v", err)
	}
}

// FuzzRestoreLoRA: Restore in LoRA mode never panics, and what it refuses
// leaves the worker as it was.
func FuzzRestoreLoRA(f *testing.F) {
	data := prepareDataset(f, 12, 1, 0)
	cfg := loraJob(8, 2, 2)
	mc := model.Config{Vocab: 257, Context: 64, Dim: 8, Layers: 1, Heads: 2}
	src := newWorker(f, cfg, mc, data)
	if _, err := src.Step(context.Background(), partsFor(f, src, 0, 1)[0], &soloReducer{}); err != nil {
		f.Fatal(err)
	}
	snap, err := src.Snapshot()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(snap)
	f.Add(snap[:len(snap)/2])
	w := newWorker(f, cfg, mc, data)
	f.Fuzz(func(t *testing.T, b []byte) {
		before, done := w.WeightsHash(), w.Done
		if err := w.Restore(b); err != nil {
			if !errors.Is(err, train.ErrSnapshot) {
				t.Fatalf("error %v does not wrap ErrSnapshot", err)
			}
			if w.WeightsHash() != before || w.Done != done {
				t.Fatal("a refused snapshot changed the worker")
			}
		}
	})
}

// TestJobConfigLoRA: the LoRA fields are validated, default sensibly, and
// count in the job's identity in canonical form only.
func TestJobConfigLoRA(t *testing.T) {
	if err := train.DefaultLoRAJobConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	lc, ok := train.DefaultLoRAJobConfig().LoRA()
	if !ok || lc.Rank != 8 || lc.Alpha != 16 || !slices.Equal(lc.Targets, []string{"c_attn", "c_proj", "c_fc"}) {
		t.Errorf("default LoRA job: %+v, %v", lc, ok)
	}
	if _, ok := train.DefaultJobConfig().LoRA(); ok {
		t.Error("the default job is in LoRA mode")
	}
	for name, mutate := range map[string]func(*train.JobConfig){
		"lora rank":          func(c *train.JobConfig) { c.LoRARank = -1 },
		"lora: model":        func(c *train.JobConfig) { c.LoRATargets = []string{"c_attn", "q_proj"} },
		"lora_dropout":       func(c *train.JobConfig) { c.LoRADropout = 1 },
		"with lora rank = 0": func(c *train.JobConfig) { c.LoRARank, c.LoRAAlpha = 0, 4 },
	} {
		c := train.DefaultLoRAJobConfig()
		mutate(&c)
		if err := c.Validate(); !errors.Is(err, train.ErrConfig) || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: %v, want ErrConfig saying so", name, err)
		}
	}
	// Equivalent settings are the same job: alpha 0 is 2·rank, targets in
	// any spelling of the same projections.
	data := prepareDataset(t, 10, 1, 0)
	x := loraJob(2, 2, 2)
	x.LoRAAlpha, x.LoRATargets = 0, []string{"c_attn", "attn.c_proj", "mlp.c_proj", "c_fc"}
	y := x
	y.LoRAAlpha, y.LoRATargets = 8, []string{"c_fc", "c_proj", "c_attn"}
	snap, err := newWorker(t, x, workerModel, data).Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if err := newWorker(t, y, workerModel, data).Restore(snap); err != nil {
		t.Errorf("equivalent LoRA settings: %v", err)
	}
}
