package train_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/braidml/braid/allreduce"
	"github.com/braidml/braid/model"
	"github.com/braidml/braid/model/safetensors"
	"github.com/braidml/braid/shard"
	"github.com/braidml/braid/train"
	"github.com/braidml/braid/train/traintest"
	"github.com/braidml/braid/transport"
	"github.com/braidml/braid/transport/memnet"
)

// ---- Fixtures: a dataset, a small model, workers ----

// workerModel is the model of most worker tests: small enough that 20
// steps of 4 workers run in well under a second.
var workerModel = model.Config{Vocab: 257, Context: 64, Dim: 32, Layers: 2, Heads: 4}

// prepareDataset writes docs documents of seeded pseudo-English (100..600
// bytes each) and prepares them as a dataset of 64-token sequences with the
// byte tokenizer, holdout of the documents held out, in 4 KiB shards.
func prepareDataset(t testing.TB, docs int, seed uint64, holdout float64) *shard.Dataset {
	t.Helper()
	in := t.TempDir()
	words := strings.Fields("the of and to in a is that for it as was with be by on not he this are or his from at which but have an they you were her she there one all we their")
	rng := rand.New(rand.NewPCG(seed, 2))
	for i := range docs {
		var b strings.Builder
		for n := 100 + rng.IntN(500); b.Len() < n; {
			b.WriteString(words[rng.IntN(len(words))])
			b.WriteByte(" \n"[rng.IntN(2)])
		}
		if err := os.WriteFile(filepath.Join(in, fmt.Sprintf("doc%03d.txt", i)), []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	c := shard.DefaultConfig()
	c.Inputs, c.Out = []string{in}, filepath.Join(t.TempDir(), "ds")
	c.SeqLen, c.Holdout, c.ShardBytes = 64, holdout, 4<<10
	res, err := shard.Prepare(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	d, err := shard.Open(res.Dir)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// testJob is a job for workerModel: every gradient range is its own bucket
// (BucketBytes 4), so that the overlap is exercised at its finest.
func testJob(steps, globalBatch, microBatch int) train.JobConfig {
	c := train.DefaultJobConfig()
	c.Steps, c.GlobalBatch, c.MicroBatch = steps, globalBatch, microBatch
	c.Warmup, c.LR, c.BucketBytes = 3, 3e-3, 4
	return c
}

// newWorker returns a worker for mc with weights from model seed 1.
func newWorker(t testing.TB, cfg train.JobConfig, mc model.Config, data *shard.Dataset) *train.Worker {
	t.Helper()
	m, err := model.New(mc, cfg.MicroBatch, data.Manifest.SeqLen)
	if err != nil {
		t.Fatal(err)
	}
	m.Init(1)
	w, err := train.NewWorker(cfg, m, data)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func newWorkers(t testing.TB, n int, cfg train.JobConfig, mc model.Config, data *shard.Dataset) []*train.Worker {
	var ws []*train.Worker
	for range n {
		ws = append(ws, newWorker(t, cfg, mc, data))
	}
	return ws
}

// partsFor splits global batch step of w's job among members workers, as
// the node does: shard.EpochStep, then shard.Assign (no placement).
func partsFor(t testing.TB, w *train.Worker, step, members int) [][]int64 {
	t.Helper()
	G := w.Config.GlobalBatch
	epoch, k := shard.EpochStep(int64(step), w.Data.NumSequences(shard.Train), G)
	var ids []string
	for i := range members {
		ids = append(ids, fmt.Sprintf("w%d", i))
	}
	parts, err := shard.Assign(shard.AssignParams{Seed: w.Config.Seed, DataEpoch: epoch, Step: k,
		GlobalBatch: G, Members: ids, Shards: w.Data.Manifest.SplitShards(shard.Train)})
	if err != nil {
		t.Fatal(err)
	}
	return parts
}

// stepAll runs Step on every worker at once, each with its part and
// reducer, as the nodes of a job do.
func stepAll(ws []*train.Worker, parts [][]int64, reds []train.Reducer) ([]train.StepResult, []error) {
	res, errs := make([]train.StepResult, len(ws)), make([]error, len(ws))
	var wg sync.WaitGroup
	for i := range ws {
		wg.Go(func() { res[i], errs[i] = ws[i].Step(context.Background(), parts[i], reds[i]) })
	}
	wg.Wait()
	return res, errs
}

func sameBits(a, b []float32) (int, bool) {
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

// requireSameState fails unless b's weights, moments and step are bitwise a's.
func requireSameState(t *testing.T, what string, a, b *train.Worker) {
	t.Helper()
	if a.Done != b.Done || a.Opt.Step != b.Opt.Step {
		t.Fatalf("%s: at step %d/%d and %d/%d", what, a.Done, a.Opt.Step, b.Done, b.Opt.Step)
	}
	for name, pair := range map[string][2][]float32{"weight": {a.Model.Params, b.Model.Params}, "m": {a.Opt.M, b.Opt.M}, "v": {a.Opt.V, b.Opt.V}} {
		if i, ok := sameBits(pair[0], pair[1]); !ok {
			t.Fatalf("%s: %s %d differs", what, name, i)
		}
	}
}

// ringReducer adapts an allreduce.Ring, whose Start returns its own *Op, to
// train.Reducer, as the node does.
type ringReducer struct{ *allreduce.Ring }

func (r ringReducer) Start(ctx context.Context, step uint64) train.ReduceOp {
	return r.Ring.Start(ctx, step)
}

// ringOf returns n ring all-reduce members on an in-memory network.
func ringOf(t *testing.T, n int) []train.Reducer {
	nw := memnet.New(1)
	var members []allreduce.Member
	for i := range n {
		id := transport.PeerID(fmt.Sprintf("w%d", i))
		members = append(members, allreduce.Member{ID: id, Addr: memnet.Address(id)})
	}
	var out []train.Reducer
	var rings []*allreduce.Ring
	for _, m := range members {
		tr, err := nw.Node(m.ID)
		if err != nil {
			t.Fatal(err)
		}
		r, err := allreduce.NewRing(allreduce.DefaultConfig(), tr, members)
		if err != nil {
			t.Fatal(err)
		}
		rings = append(rings, r)
		out = append(out, ringReducer{r})
	}
	t.Cleanup(func() {
		for _, r := range rings {
			r.Close()
		}
		nw.Close()
	})
	return out
}

// nanReducer is world size 1 with a reduction that puts a NaN into each
// bucket.
type nanReducer struct{ soloReducer }
type nanOp struct{ soloOp }

func (nanReducer) Start(context.Context, uint64) train.ReduceOp { return &nanOp{} }
func (*nanOp) Add(b []float32)                                  { b[0] = float32(math.NaN()) }

// soloReducer is world size 1 without a goroutine or an allocation: the
// sum over one member is its own buffer.
type soloReducer struct{ op soloOp }
type soloOp struct{}

func (r *soloReducer) Start(context.Context, uint64) train.ReduceOp     { return &r.op }
func (*soloReducer) AllReduce(context.Context, uint64, []float32) error { return nil }
func (*soloOp) Add([]float32)                                           {}
func (*soloOp) Wait() error                                             { return nil }

// ---- Scenarios ----

// TestWorkersMatchOneWorker: N workers that step with the parts of each
// global batch (shard.Assign) compute the same losses as one worker that
// takes each whole global batch, to float32 rounding (the sum runs in
// another order), and the N hold bitwise the same weights after every
// step. The cases cover micro-batches that do not divide a part, parts
// whose sizes differ by one, empty parts, a data-epoch's short last batch,
// and the default bucketing.
func TestWorkersMatchOneWorker(t *testing.T) {
	data := prepareDataset(t, 40, 1, 0.1)
	n := data.NumSequences(shard.Train)
	t.Logf("dataset: %d train, %d held-out sequences of 64 tokens", n, data.NumSequences(shard.Heldout))
	for _, c := range []struct {
		name                 string
		workers, steps, G, B int
		buckets              int // BucketBytes; 0: the default
	}{
		// 16 sequences, parts 6/5/5 in micro-batches of 3; 20 steps run
		// past the end of the first data-epoch, whose last batch is short.
		{name: "3 workers, 20 steps", workers: 3, steps: 20, G: 16, B: 3, buckets: 4},
		{name: "4 workers, micro batch larger than a part", workers: 4, steps: 4, G: 10, B: 8, buckets: 4},
		{name: "empty part", workers: 3, steps: 4, G: 2, B: 2, buckets: 4},
		{name: "default buckets", workers: 2, steps: 4, G: 8, B: 4},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.steps == 20 && (n%int64(c.G) == 0 || shard.BatchesPerEpoch(n, c.G) >= 20) {
				t.Fatalf("the dataset (%d sequences) no longer has a short batch within 20 steps of %d", n, c.G)
			}
			cfg := testJob(c.steps, c.G, c.B)
			cfg.BucketBytes = c.buckets
			one := newWorker(t, cfg, workerModel, data)
			many := newWorkers(t, c.workers, cfg, workerModel, data)
			oneRed, manyRed := traintest.Reducers(traintest.NewGroup(1)), traintest.Reducers(traintest.NewGroup(c.workers))
			var worst, last float64
			for step := range c.steps {
				want, err := one.Step(context.Background(), partsFor(t, one, step, 1)[0], oneRed[0])
				if err != nil {
					t.Fatal(err)
				}
				parts := partsFor(t, many[0], step, c.workers)
				res, errs := stepAll(many, parts, manyRed)
				for i, err := range errs {
					if err != nil {
						t.Fatalf("worker %d: %v", i, err)
					}
				}
				for i, r := range res {
					if r.Step != step+1 || r.Tokens != len(parts[i])*64 {
						t.Errorf("worker %d: result for step %d with %d tokens, want step %d, %d tokens", i, r.Step, r.Tokens, step+1, len(parts[i])*64)
					}
					if r.Loss != res[0].Loss || r.GradNorm != res[0].GradNorm || r.LR != want.LR {
						t.Errorf("step %d: worker %d loss %v norm %v lr %v, worker 0 %v %v %v", step, i, r.Loss, r.GradNorm, r.LR, res[0].Loss, res[0].GradNorm, want.LR)
					}
					if j, ok := sameBits(many[i].Model.Params, many[0].Model.Params); !ok {
						t.Fatalf("step %d: worker %d's weight %d differs from worker 0's", step, i, j)
					}
				}
				last = want.Loss
				rel := math.Abs(res[0].Loss-want.Loss) / math.Abs(want.Loss)
				worst = max(worst, rel)
				if !(rel <= 1e-4) {
					t.Errorf("step %d: loss %.7f with %d workers, %.7f with one", step, res[0].Loss, c.workers, want.Loss)
				}
				if far(float64(res[0].GradNorm), float64(want.GradNorm), 1e-3*float64(want.GradNorm)) {
					t.Errorf("step %d: gradient norm %v with %d workers, %v with one", step, res[0].GradNorm, c.workers, want.GradNorm)
				}
			}
			t.Logf("%d steps, loss %.4f at the end, largest relative loss difference to one worker %.1e", c.steps, last, worst)
		})
	}
}

// TestWorkerGradientIsBatchMean: the reduced gradient of a step is the
// gradient of the mean loss over the global batch, computed in one pass
// over the whole batch, also for a data-epoch's short last batch (whose
// sequences are not divided by GlobalBatch but by their own count).
func TestWorkerGradientIsBatchMean(t *testing.T) {
	data := prepareDataset(t, 40, 1, 0.1)
	n := data.NumSequences(shard.Train)
	const G = 50
	if n%G == 0 {
		t.Fatalf("%d sequences: no short batch with %d", n, G)
	}
	cfg := testJob(int(shard.BatchesPerEpoch(n, G)), G, 4)
	ws := newWorkers(t, 2, cfg, workerModel, data)
	red := traintest.Reducers(traintest.NewGroup(2))
	ref, err := model.New(workerModel, G, 64)
	if err != nil {
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
		loss := onePass(t, ref, ws[0].Model.Params, x, y, len(batch))
		res, errs := stepAll(ws, parts, red)
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
		_, got, _ := ws[0].LastReduced()
		rel := relDiff(got, ref.Grads)
		t.Logf("step %d: %d sequences, loss %.5f (one pass %.5f), gradient relative difference %.1e", step, len(batch), res[0].Loss, loss, rel)
		if !(rel <= 1e-5) || far(res[0].Loss, float64(loss), 1e-5*float64(loss)) {
			t.Errorf("step %d: loss %v and gradient %.1e off the one-pass mean over the batch (loss %v)", step, res[0].Loss, rel, loss)
		}
	}
}

// TestWorkerBuckets: the gradient reaches the reducer in buckets, last
// layer first, during the last backward (when the first bucket is added,
// the position embeddings' gradient has not been computed yet), each
// bucket a slice of Grads, together all of it.
func TestWorkerBuckets(t *testing.T) {
	data := prepareDataset(t, 40, 1, 0.1)
	cfg := testJob(4, 4, 4) // one micro-batch per step
	for _, c := range []struct {
		bucketBytes int
		mc          model.Config
		want        int // buckets
	}{
		{4, workerModel, workerModel.Layers + 2}, // each range alone
		{0, workerModel, 1},                      // 36 k parameters: one bucket of 1 MiB
		{0, model.Config{Vocab: 257, Context: 64, Dim: 128, Layers: 4, Heads: 4}, 3}, // tiny: ln_f+h.3+h.2, h.1+h.0, wte+wpe
	} {
		t.Run(fmt.Sprintf("%d layers, %d bytes", c.mc.Layers, c.bucketBytes), func(t *testing.T) {
			cfg.BucketBytes = c.bucketBytes
			w := newWorker(t, cfg, c.mc, data)
			lens := w.Buckets()
			t.Logf("bucket lengths %v", lens)
			if len(lens) != c.want {
				t.Errorf("%d buckets, want %d", len(lens), c.want)
			}
			red := traintest.NewGroup(1)[0]
			var got [][]float32
			var wpeZero bool
			ps := c.mc.Layout()
			wpe := w.Model.Grads[ps[1].Offset : ps[1].Offset+ps[1].Size]
			red.OnAdd = func(b []float32) {
				if len(got) == 0 {
					wpeZero = !slices.ContainsFunc(wpe, func(x float32) bool { return x != 0 })
				}
				got = append(got, b)
			}
			if _, err := w.Step(context.Background(), partsFor(t, w, 0, 1)[0], red); err != nil {
				t.Fatal(err)
			}
			end := len(w.Model.Grads)
			for i, b := range got {
				if len(b) != lens[i] || &b[0] != &w.Model.Grads[end-len(b)] {
					t.Fatalf("bucket %d (%d elements) is not Grads[%d:%d]", i, len(b), end-lens[i], end)
				}
				end -= len(b)
			}
			if end != 0 || len(got) != len(lens) {
				t.Errorf("%d buckets leave Grads[:%d] out", len(got), end)
			}
			if len(got) > 1 && !wpeZero {
				t.Error("the first bucket was added after the backward pass had reached the embeddings")
			}
		})
	}
}

// copyWorker returns a new worker holding w's weights, moments and step.
func copyWorker(t *testing.T, w *train.Worker) *train.Worker {
	t.Helper()
	c := newWorker(t, w.Config, w.Model.Config, w.Data)
	copy(c.Model.Params, w.Model.Params)
	copy(c.Opt.M, w.Opt.M)
	copy(c.Opt.V, w.Opt.V)
	c.Done, c.Opt.Step = w.Done, w.Opt.Step
	return c
}

// TestWorkerPeerCatchesUp: when the reducer fails for one worker at step k
// after its peers' reduction went through (the last hops of a ring to it
// broke), that worker's weights, optimizer and Done are untouched and the
// error names the step; the reduced gradient a peer kept (LastReduced)
// brings it to bitwise the peer's state, and all go on in lockstep.
func TestWorkerPeerCatchesUp(t *testing.T) {
	data := prepareDataset(t, 40, 1, 0.1)
	const k = 2
	cfg := testJob(6, 9, 2)
	ws := newWorkers(t, 3, cfg, workerModel, data)
	rs := traintest.NewGroup(3)
	broken := errors.New("peer w2: connection reset")
	rs[2].FailAfter = func(what string, step uint64) error {
		if what == "loss" && step == k {
			return broken
		}
		return nil
	}
	for step := range k {
		if _, errs := stepAll(ws, partsFor(t, ws[0], step, 3), traintest.Reducers(rs)); errors.Join(errs...) != nil {
			t.Fatal(errs)
		}
	}
	before := copyWorker(t, ws[2])
	_, errs := stepAll(ws, partsFor(t, ws[0], k, 3), traintest.Reducers(rs))
	if errs[0] != nil || errs[1] != nil {
		t.Fatalf("the healthy workers failed: %v", errs)
	}
	if !errors.Is(errs[2], broken) || !strings.Contains(errs[2].Error(), "step 2") {
		t.Fatalf("error %v, want one wrapping the reducer's, naming step 2", errs[2])
	}
	t.Logf("worker 2: %v", errs[2])
	requireSameState(t, "after the failed step", before, ws[2])
	if s, _, ok := ws[2].LastReduced(); !ok || s != k-1 {
		t.Errorf("LastReduced after the failure: step %d (ok %v), want %d", s, ok, k-1)
	}

	step, grads, ok := ws[0].LastReduced()
	if !ok || step != k {
		t.Fatalf("peer's LastReduced: step %d (ok %v), want %d", step, ok, k)
	}
	if err := ws[2].ApplyReduced(step+1, grads); !errors.Is(err, train.ErrWrongStep) {
		t.Errorf("ApplyReduced of another step: %v, want ErrWrongStep", err)
	}
	if err := ws[2].ApplyReduced(step, grads[1:]); err == nil {
		t.Error("ApplyReduced of a short gradient: no error")
	}
	if err := ws[2].ApplyReduced(step, grads); err != nil {
		t.Fatal(err)
	}
	requireSameState(t, "after ApplyReduced", ws[0], ws[2])
	if s, g, ok := ws[2].LastReduced(); !ok || s != k || !slices.Equal(g, grads) {
		t.Error("after ApplyReduced, LastReduced is not the gradient applied")
	}

	rs[2].FailAfter = nil
	for step := k + 1; step < cfg.Steps; step++ {
		if _, errs := stepAll(ws, partsFor(t, ws[0], step, 3), traintest.Reducers(rs)); errors.Join(errs...) != nil {
			t.Fatal(errs)
		}
		requireSameState(t, fmt.Sprintf("step %d", step), ws[0], ws[2])
	}
}

// TestWorkerRedoesStep: when the ring breaks during the gradient all-reduce
// of step k, every worker's step fails with the reducer's error and leaves
// it untouched; redoing step k then gives bitwise what a run without the
// failure gives.
func TestWorkerRedoesStep(t *testing.T) {
	data := prepareDataset(t, 40, 1, 0.1)
	const k = 2
	cfg := testJob(4, 9, 2)
	ws, ref := newWorkers(t, 3, cfg, workerModel, data), newWorkers(t, 3, cfg, workerModel, data)
	rs, refRed := traintest.NewGroup(3), traintest.Reducers(traintest.NewGroup(3))
	broken := errors.New("peer w1: hop timeout")
	rs[1].Abort = func(what string, step uint64) error {
		if what == "gradient" && step == k {
			return broken
		}
		return nil
	}
	for step := range cfg.Steps {
		parts := partsFor(t, ws[0], step, 3)
		if _, errs := stepAll(ref, parts, refRed); errors.Join(errs...) != nil {
			t.Fatal(errs)
		}
		if step == k {
			var before []*train.Worker
			for _, w := range ws {
				before = append(before, copyWorker(t, w))
			}
			_, errs := stepAll(ws, parts, traintest.Reducers(rs))
			for i, err := range errs {
				if !errors.Is(err, broken) || !strings.Contains(err.Error(), "step 2: gradient all-reduce") {
					t.Fatalf("worker %d: error %v, want the reducer's, naming the step and the gradient", i, err)
				}
				requireSameState(t, fmt.Sprintf("worker %d after the failed step", i), before[i], ws[i])
			}
			rs[1].Abort = nil
		}
		if _, errs := stepAll(ws, parts, traintest.Reducers(rs)); errors.Join(errs...) != nil {
			t.Fatal(errs)
		}
		for i := range ws {
			requireSameState(t, fmt.Sprintf("step %d, worker %d vs the run without failure", step, i), ref[i], ws[i])
		}
	}
}

// TestWorkerOverRing: the workers over the real ring all-reduce (on an
// in-memory network) agree bitwise with each other and with one worker to
// float32 rounding.
func TestWorkerOverRing(t *testing.T) {
	data := prepareDataset(t, 40, 1, 0.1)
	cfg := testJob(5, 12, 3)
	one := newWorker(t, cfg, workerModel, data)
	ws := newWorkers(t, 3, cfg, workerModel, data)
	reds := ringOf(t, 3)
	for step := range cfg.Steps {
		want, err := one.Step(context.Background(), partsFor(t, one, step, 1)[0], &soloReducer{})
		if err != nil {
			t.Fatal(err)
		}
		res, errs := stepAll(ws, partsFor(t, ws[0], step, 3), reds)
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
		for i := range ws {
			requireSameState(t, fmt.Sprintf("step %d, worker %d vs worker 0", step, i), ws[0], ws[i])
		}
		if far(res[0].Loss, want.Loss, 1e-4*want.Loss) {
			t.Errorf("step %d: loss %v over the ring, %v with one worker", step, res[0].Loss, want.Loss)
		}
		t.Logf("step %d: loss %.5f, compute %v, wait %v", step, res[0].Loss, res[0].Compute, res[0].Wait)
	}
}

// TestWorkerRefusesBadParts: parts that do not add up to the global batch
// (a node bug) are caught by the reduced sequence count, before anything is
// applied; so are a part larger than the batch, a reduced gradient that is
// not finite, a cancelled context and a step past the end.
func TestWorkerRefusesBadParts(t *testing.T) {
	data := prepareDataset(t, 40, 1, 0.1)
	cfg := testJob(2, 6, 3)
	ws := newWorkers(t, 2, cfg, workerModel, data)
	parts := partsFor(t, ws[0], 0, 2)
	hash := ws[0].WeightsHash()
	_, errs := stepAll(ws, [][]int64{parts[0], parts[1][1:]}, traintest.Reducers(traintest.NewGroup(2)))
	for i, err := range errs {
		if !errors.Is(err, train.ErrPartition) || ws[i].Done != 0 || ws[i].WeightsHash() != hash {
			t.Errorf("worker %d, a sequence of the batch in no part: %v at step %d, want ErrPartition and nothing applied", i, err, ws[i].Done)
		}
	}
	t.Log(errs[0])
	one := traintest.Reducers(traintest.NewGroup(1))[0]
	if _, err := ws[0].Step(context.Background(), make([]int64, 7), one); !errors.Is(err, train.ErrPartition) {
		t.Errorf("a part of 7 in a batch of 6: %v, want ErrPartition", err)
	}
	// A reduced gradient that is not finite is refused before it is applied.
	w := newWorker(t, cfg, workerModel, data)
	hash = w.WeightsHash()
	if _, err := w.Step(context.Background(), partsFor(t, w, 0, 1)[0], &nanReducer{}); !errors.Is(err, train.ErrDiverged) || w.Done != 0 || w.WeightsHash() != hash {
		t.Errorf("a NaN in the reduced gradient: %v at step %d, want ErrDiverged and nothing applied", err, w.Done)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := w.Step(ctx, partsFor(t, w, 0, 1)[0], one); !errors.Is(err, context.Canceled) {
		t.Errorf("a cancelled context: %v, want context.Canceled", err)
	}
	for step := range 2 {
		if _, err := w.Step(context.Background(), partsFor(t, w, step, 1)[0], one); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.Step(context.Background(), partsFor(t, w, 2, 1)[0], one); !errors.Is(err, train.ErrJobDone) {
		t.Errorf("step 3 of a 2-step job: %v, want ErrJobDone", err)
	}
}

// TestWorkerStepAllocs: in steady state a step allocates nothing (with a
// reducer that does not).
func TestWorkerStepAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop items on purpose: allocation counts mean nothing")
	}
	data := prepareDataset(t, 40, 1, 0.1)
	cfg := testJob(100, 8, 3)
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
	step() // the first reads the shards
	if n := allocsPerRun(20, step); n != 0 {
		t.Errorf("a step allocates %v times, want 0", n)
	}
}

// TestSnapshotRestore: a worker restored from a snapshot continues bitwise
// as the one that made it.
func TestSnapshotRestore(t *testing.T) {
	data := prepareDataset(t, 40, 1, 0.1)
	cfg := testJob(8, 6, 4)
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
	run(a, 8)

	b := newWorker(t, cfg, workerModel, data)
	b.Model.Init(99) // other weights, to be overwritten
	if err := b.Restore(snap); err != nil {
		t.Fatal(err)
	}
	if b.Done != 4 || b.Opt.Step != 4 {
		t.Fatalf("restored at step %d (optimizer %d), want 4", b.Done, b.Opt.Step)
	}
	if _, _, ok := b.LastReduced(); ok {
		t.Error("LastReduced right after Restore: ok, want nothing")
	}
	run(b, 8)
	requireSameState(t, "4 steps, snapshot, restore, 4 steps vs 8 steps", a, b)
	if a.WeightsHash() != b.WeightsHash() {
		t.Error("same weights, different WeightsHash")
	}
}

// restamp re-encodes a snapshot after edit changed its tensors or metadata,
// recomputing its checksums as Snapshot does (state_sha256 always,
// weights_sha256 when fixWeights), so that only the edit is wrong with it.
func restamp(t *testing.T, snap []byte, fixWeights bool, edit func(f *safetensors.File)) []byte {
	t.Helper()
	f, err := safetensors.Decode(slices.Clone(snap))
	if err != nil {
		t.Fatal(err)
	}
	edit(f)
	h := sha256.New()
	for _, name := range []string{"params", "adamw.m", "adamw.v"} {
		if tt, ok := f.Tensor(name); ok {
			h.Write(tt.Data)
			if w, err := tt.Float32s(); name == "params" && fixWeights && err == nil {
				f.Metadata["weights_sha256"] = train.WeightsHash(w)
			}
		}
	}
	f.Metadata["state_sha256"] = hex.EncodeToString(h.Sum(nil))
	var buf bytes.Buffer
	if err := safetensors.Encode(&buf, f.Tensors, f.Metadata); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// setF32 sets element i of a tensor's little-endian float32 data.
func setF32(tt *safetensors.Tensor, i int, v float32) {
	d := slices.Clone(tt.Data)
	bits := math.Float32bits(v)
	d[4*i], d[4*i+1], d[4*i+2], d[4*i+3] = byte(bits), byte(bits>>8), byte(bits>>16), byte(bits>>24)
	tt.Data = d
}

// TestRestoreRejects: Restore refuses every snapshot that is not exactly one
// of this worker's model, job and dataset, with an error saying why, and
// leaves the worker as it was.
func TestRestoreRejects(t *testing.T) {
	data := prepareDataset(t, 40, 1, 0.1)
	other := prepareDataset(t, 40, 2, 0.1)
	cfg := testJob(8, 6, 4)
	src := newWorker(t, cfg, workerModel, data)
	if _, err := src.Step(context.Background(), partsFor(t, src, 0, 1)[0], traintest.Reducers(traintest.NewGroup(1))[0]); err != nil {
		t.Fatal(err)
	}
	snap, err := src.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	meta := func(key, value string) func(*safetensors.File) {
		return func(f *safetensors.File) { f.Metadata[key] = value }
	}
	flip := func(off int) []byte {
		b := slices.Clone(snap)
		b[off] ^= 0x40
		return b
	}
	otherLR := cfg
	otherLR.LR *= 2
	otherModel := workerModel
	otherModel.Dim = 64
	for _, c := range []struct {
		name  string
		snap  []byte
		cfg   train.JobConfig
		mc    model.Config
		data  *shard.Dataset
		wants string // in the error
	}{
		// Damaged in storage or transit.
		{name: "empty", snap: nil, wants: "safetensors"},
		{name: "truncated", snap: snap[:len(snap)/2], wants: "safetensors"},
		{name: "one byte short", snap: snap[:len(snap)-1], wants: "safetensors"},
		// The data section holds adamw.m, adamw.v, params (sorted by name).
		{name: "flipped bit in the moments", snap: flip(len(snap) - 4*3*workerModel.NumParams() + 100), wants: "checksum"},
		{name: "flipped bit in the weights", snap: flip(len(snap) - 5), wants: "checksum"},
		{name: "flipped bit in the header", snap: flip(9), wants: "safetensors"},
		{name: "not a snapshot", snap: restamp(t, snap, true, meta("format", "hf")), wants: "format"},
		{name: "future version", snap: restamp(t, snap, true, meta("version", "2")), wants: "version"},
		// Someone else's.
		{name: "other model", snap: snap, mc: otherModel, wants: "another model"},
		{name: "other job settings", snap: snap, cfg: otherLR, wants: "job settings"},
		{name: "other dataset", snap: snap, data: other, wants: "dataset"},
		// Well formed, with checksums that match, but impossible.
		{name: "negative step", snap: restamp(t, snap, true, meta("step", "-1")), wants: "step"},
		{name: "step past the end", snap: restamp(t, snap, true, meta("step", "9")), wants: "step"},
		{name: "step not a number", snap: restamp(t, snap, true, meta("step", "1e3")), wants: "step"},
		{name: "bad model config", snap: restamp(t, snap, true, meta("model_config", "{")), wants: "model_config"},
		{name: "weights hash", snap: restamp(t, snap, false, func(f *safetensors.File) { w, _ := f.Tensor("params"); setF32(w, 3, 0.5) }), wants: "weights_sha256"},
		{name: "missing moments", snap: restamp(t, snap, true, func(f *safetensors.File) {
			f.Tensors = slices.DeleteFunc(f.Tensors, func(tt safetensors.Tensor) bool { return tt.Name == "adamw.v" })
		}), wants: "tensors"},
		{name: "renamed tensor", snap: restamp(t, snap, true, func(f *safetensors.File) {
			w, _ := f.Tensor("adamw.v")
			w.Name = "adamw.u"
		}), wants: "adamw.v is missing"},
		{name: "short tensor", snap: restamp(t, snap, true, func(f *safetensors.File) {
			w, _ := f.Tensor("adamw.m")
			w.Shape, w.Data = []int{w.Shape[0] - 1}, w.Data[4:]
		}), wants: "adamw.m is F32"},
		{name: "F16 tensor", snap: restamp(t, snap, true, func(f *safetensors.File) {
			w, _ := f.Tensor("params")
			w.Dtype, w.Data = safetensors.F16, w.Data[:len(w.Data)/2]
		}), wants: "params is F16"},
		{name: "NaN weight", snap: restamp(t, snap, true, func(f *safetensors.File) { w, _ := f.Tensor("params"); setF32(w, 5, float32(math.NaN())) }), wants: "params: element 5"},
		{name: "infinite moment", snap: restamp(t, snap, true, func(f *safetensors.File) { w, _ := f.Tensor("adamw.m"); setF32(w, 6, float32(math.Inf(1))) }), wants: "adamw.m: element 6"},
		{name: "negative second moment", snap: restamp(t, snap, true, func(f *safetensors.File) { w, _ := f.Tensor("adamw.v"); setF32(w, 7, -1) }), wants: "adamw.v: element 7"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg, mc, d := cfg, workerModel, data
			if c.cfg.Steps != 0 {
				cfg = c.cfg
			}
			if c.mc != (model.Config{}) {
				mc = c.mc
			}
			if c.data != nil {
				d = c.data
			}
			w := newWorker(t, cfg, mc, d)
			hash := w.WeightsHash()
			err := w.Restore(c.snap)
			if !errors.Is(err, train.ErrSnapshot) || !strings.Contains(err.Error(), c.wants) {
				t.Fatalf("error %v, want ErrSnapshot saying %q", err, c.wants)
			}
			t.Log(err)
			if w.Done != 0 || w.Opt.Step != 0 || w.WeightsHash() != hash {
				t.Error("a refused snapshot changed the worker")
			}
		})
	}
	// The unedited snapshot, restamped, still restores: the edits above are
	// what each case tests, not restamp.
	w := newWorker(t, cfg, workerModel, data)
	if err := w.Restore(restamp(t, snap, true, func(*safetensors.File) {})); err != nil {
		t.Fatalf("restamped snapshot: %v", err)
	}
}

// FuzzRestore: Restore never panics, and what it refuses leaves the worker
// as it was; what it accepts snapshots again to something it accepts.
func FuzzRestore(f *testing.F) {
	data := prepareDataset(f, 12, 1, 0)
	cfg := testJob(8, 2, 2)
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
	f.Add(snap[:len(snap)/3])
	f.Add([]byte{})
	if i := bytes.Index(snap, []byte(`"step":"1"`)); i >= 0 {
		f.Add(slices.Concat(snap[:i], []byte(`"step":"x"`), snap[i+10:]))
	}
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
			return
		}
		again, err := w.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Restore(again); err != nil {
			t.Fatalf("restoring the snapshot of an accepted snapshot: %v", err)
		}
	})
}

// TestWorkerEval: Eval is the mean loss of the first EvalSequences held-out
// sequences, whatever the micro-batch, and fails on a dataset without a
// held-out split.
func TestWorkerEval(t *testing.T) {
	data := prepareDataset(t, 40, 1, 0.2)
	held := data.NumSequences(shard.Heldout)
	if held < 5 {
		t.Fatalf("only %d held-out sequences", held)
	}
	var want float64
	for id := range int64(5) {
		seq, err := data.Sequence(shard.Heldout, id, nil)
		if err != nil {
			t.Fatal(err)
		}
		m, err := model.New(workerModel, 1, 64)
		if err != nil {
			t.Fatal(err)
		}
		m.Init(1)
		loss, err := m.Forward(seq[:64], seq[1:], 1, 64)
		if err != nil {
			t.Fatal(err)
		}
		want += float64(loss) / 5
	}
	for _, B := range []int{1, 2, 5, 8} {
		cfg := testJob(4, 8, B)
		cfg.EvalSequences = 5
		got, err := newWorker(t, cfg, workerModel, data).Eval()
		if err != nil {
			t.Fatal(err)
		}
		if far(got, want, 1e-5*want) {
			t.Errorf("micro batch %d: eval loss %v, want %v", B, got, want)
		}
	}
	cfg := testJob(4, 8, 4)
	all, err := newWorker(t, cfg, workerModel, data).Eval() // EvalSequences 0: all of them (≤ 256)
	if err != nil || math.IsNaN(all) || all <= 0 {
		t.Errorf("eval of all %d held-out sequences: %v, %v", held, all, err)
	}
	if _, err := newWorker(t, cfg, workerModel, prepareDataset(t, 10, 1, 0)).Eval(); !errors.Is(err, train.ErrNoHeldout) {
		t.Errorf("no held-out split: %v, want ErrNoHeldout", err)
	}
}

func TestJobConfigValidate(t *testing.T) {
	if err := train.DefaultJobConfig().Validate(); err != nil {
		t.Fatalf("default: %v", err)
	}
	for field, mutate := range map[string]func(*train.JobConfig){
		"steps":           func(c *train.JobConfig) { c.Steps = 0 },
		"global batch":    func(c *train.JobConfig) { c.GlobalBatch = train.MaxGlobalBatch + 1 },
		"micro batch":     func(c *train.JobConfig) { c.MicroBatch = 0 },
		"lr":              func(c *train.JobConfig) { c.LR = math.NaN() },
		"min-lr fraction": func(c *train.JobConfig) { c.MinLRFrac = 2 },
		"warmup":          func(c *train.JobConfig) { c.Warmup = -1 },
		"weight decay":    func(c *train.JobConfig) { c.WeightDecay = 1 },
		"clip":            func(c *train.JobConfig) { c.Clip = math.Inf(1) },
		"betas":           func(c *train.JobConfig) { c.Beta2 = 1 },
		"eps":             func(c *train.JobConfig) { c.Eps = 0 },
		"eval sequences":  func(c *train.JobConfig) { c.EvalSequences = -1 },
		"bucket bytes":    func(c *train.JobConfig) { c.BucketBytes = -4 },
	} {
		c := train.DefaultJobConfig()
		mutate(&c)
		if err := c.Validate(); !errors.Is(err, train.ErrConfig) || !strings.Contains(err.Error(), field) {
			t.Errorf("%s: error %v, want ErrConfig naming the field", field, err)
		}
	}
}

// TestNewWorkerRejects: a model that cannot train on the dataset with the
// job's micro-batch is refused up front, with a reason.
func TestNewWorkerRejects(t *testing.T) {
	data := prepareDataset(t, 10, 1, 0)
	cfg := testJob(4, 8, 4)
	mk := func(mc model.Config, B, T int, inference bool) *model.Model {
		newM := model.New
		if inference {
			newM = model.NewInference
		}
		m, err := newM(mc, B, T)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	small := workerModel
	small.Vocab = 100
	short := workerModel
	short.Context = 32
	for _, c := range []struct {
		name  string
		m     *model.Model
		wants string
	}{
		{"micro batch does not fit", mk(workerModel, 2, 64, false), "micro batch 4×64"},
		{"vocabulary too small", mk(small, 4, 64, false), "257 token ids"},
		{"context too short", mk(short, 8, 32, false), "context of 32"},
		{"inference model", mk(workerModel, 4, 64, true), "NewInference"},
	} {
		_, err := train.NewWorker(cfg, c.m, data)
		if err == nil || !strings.Contains(err.Error(), c.wants) {
			t.Errorf("%s: error %v, want one saying %q", c.name, err, c.wants)
		}
	}
	if _, err := train.NewWorker(train.JobConfig{}, mk(workerModel, 4, 64, false), data); !errors.Is(err, train.ErrConfig) {
		t.Errorf("zero config: %v, want ErrConfig", err)
	}
}

// BenchmarkWorkerStep times a step of the tiny preset (64-token sequences,
// global batch 24 in micro-batches of 8) with 1 worker and with 3 workers
// in this process (which share its cores, so compare compute per worker).
func BenchmarkWorkerStep(b *testing.B) {
	data := prepareDataset(b, 80, 1, 0.05)
	mc, err := model.Preset("tiny", 257)
	if err != nil {
		b.Fatal(err)
	}
	mc.Context = 64
	for _, n := range []int{1, 3} {
		b.Run("workers="+strconv.Itoa(n), func(b *testing.B) {
			cfg := train.DefaultJobConfig()
			cfg.Steps, cfg.GlobalBatch, cfg.MicroBatch = 1<<20, 24, 8
			ws := newWorkers(b, n, cfg, mc, data)
			reds := traintest.Reducers(traintest.NewGroup(n))
			var compute, wait float64
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				res, errs := stepAll(ws, partsFor(b, ws[0], i, n), reds)
				if err := errors.Join(errs...); err != nil {
					b.Fatal(err)
				}
				compute += res[0].Compute.Seconds()
				wait += res[0].Wait.Seconds()
			}
			b.ReportMetric(compute/float64(b.N)*1e3, "compute-ms/op")
			b.ReportMetric(wait/float64(b.N)*1e3, "wait-ms/op")
		})
	}
}
