package train_test

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/braidml/braid/model"
	"github.com/braidml/braid/model/chat"
	"github.com/braidml/braid/shard"
	"github.com/braidml/braid/train/traintest"
)

// chatModel is workerModel with the byte-chat tokenizer's vocabulary.
var chatModel = model.Config{Vocab: chat.ByteTokenizer{}.Vocab(), Context: 64, Dim: 32, Layers: 2, Heads: 4}

// prepareChatDataset writes n seeded conversations (a question and an
// answer of a few words each, sometimes two rounds, sometimes a system
// message) as chat records and prepares them with the byte-chat tokenizer
// and the Llama 3 template in 64-token sequences: the loss mask counts a
// varying share of each sequence's targets, from none to most.
func prepareChatDataset(t testing.TB, n int, seed uint64, holdout float64) *shard.Dataset {
	t.Helper()
	words := strings.Fields("the of and to in a is that for it as was with be by on not he this are or his from at which but have an they you were her she there one all we their")
	rng := rand.New(rand.NewPCG(seed, 4))
	say := func(lo, hi int) string {
		var w []string
		for range lo + rng.IntN(hi-lo) {
			w = append(w, words[rng.IntN(len(words))])
		}
		return strings.Join(w, " ")
	}
	var b strings.Builder
	for range n {
		var msgs []chat.Message
		if rng.IntN(4) == 0 {
			msgs = append(msgs, chat.Message{Role: chat.System, Content: say(1, 4)})
		}
		for range 1 + rng.IntN(2) {
			msgs = append(msgs, chat.Message{Role: chat.User, Content: say(1, 6)}, chat.Message{Role: chat.Assistant, Content: say(1, 10)})
		}
		line, _ := json.Marshal(map[string]any{"messages": msgs})
		b.Write(append(line, '\n'))
	}
	in := t.TempDir()
	if err := os.WriteFile(filepath.Join(in, "chat.jsonl"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	c := shard.DefaultConfig()
	c.Inputs, c.Out = []string{in}, filepath.Join(t.TempDir(), "ds")
	c.Format, c.Tokenizer, c.ChatTemplate = shard.FormatChat, chat.ByteTokenizer{}, chat.Template{Name: chat.Llama3Name}
	c.SeqLen, c.Holdout, c.ShardBytes = 64, holdout, 2<<10
	res, err := shard.Prepare(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	d, err := shard.Open(res.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if !d.Manifest.LossMask {
		t.Fatal("a chat dataset without a loss mask")
	}
	return d
}

// maskedBatch returns the inputs and targets of sequences ids, the targets
// that the loss mask leaves out set to −1, and the number counted.
func maskedBatch(t testing.TB, data *shard.Dataset, s shard.Split, ids []int64) (x, y []int32, counted int) {
	t.Helper()
	for _, id := range ids {
		seq, err := data.Sequence(s, id, nil)
		if err != nil {
			t.Fatal(err)
		}
		mask, err := data.SequenceMask(s, id, nil)
		if err != nil {
			t.Fatal(err)
		}
		x = append(x, seq[:len(seq)-1]...)
		for j, tok := range seq[1:] {
			if mask[j+1] {
				y, counted = append(y, tok), counted+1
			} else {
				y = append(y, -1)
			}
		}
	}
	return x, y, counted
}

// onePass computes, on ref with params, the mean loss of the batch (x, y)
// of B sequences and its gradient (into ref.Grads), in one pass.
func onePass(t *testing.T, ref *model.Model, params []float32, x, y []int32, B int) float32 {
	t.Helper()
	copy(ref.Params, params)
	ref.ZeroGrad()
	loss, err := ref.Forward(x, y, B, len(x)/B)
	if err != nil {
		t.Fatal(err)
	}
	if err := ref.Backward(1); err != nil {
		t.Fatal(err)
	}
	return loss
}

// relDiff is ‖a − b‖ / ‖b‖.
func relDiff(a, b []float32) float64 {
	var diff, norm float64
	for i := range b {
		diff += float64(a[i]-b[i]) * float64(a[i]-b[i])
		norm += float64(b[i]) * float64(b[i])
	}
	return math.Sqrt(diff / norm)
}

// TestMaskedGradientIsCountedMean: with a loss mask, the reduced gradient
// and the loss of a step are those of the mean over the global batch's
// counted targets, computed in one pass over the whole batch with the
// others ignored (target −1); not the mean of the workers' or the
// micro-batches' means, whose counts differ.
func TestMaskedGradientIsCountedMean(t *testing.T) {
	data := prepareChatDataset(t, 150, 1, 0.1)
	const G, workers = 12, 3
	cfg := testJob(4, G, 3)
	ws := newWorkers(t, workers, cfg, chatModel, data)
	red := traintest.Reducers(traintest.NewGroup(workers))
	ref, err := model.New(chatModel, G, 64)
	if err != nil {
		t.Fatal(err)
	}
	for step := range cfg.Steps {
		parts := partsFor(t, ws[0], step, workers)
		var shares []float64 // each part's counted share of its targets
		for _, p := range parts {
			_, _, n := maskedBatch(t, data, shard.Train, p)
			shares = append(shares, float64(n)/float64(len(p)*64))
		}
		if slices.Min(shares) == slices.Max(shares) {
			t.Fatalf("step %d: every part counts %.3f of its targets: the test cannot tell the means apart", step, shares[0])
		}
		batch := slices.Concat(parts...)
		x, y, counted := maskedBatch(t, data, shard.Train, batch)
		loss := onePass(t, ref, ws[0].Model.Params, x, y, len(batch))
		res, errs := stepAll(ws, parts, red)
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
		_, got, _ := ws[0].LastReduced()
		rel := relDiff(got, ref.Grads)
		t.Logf("step %d: %d of %d targets counted (parts %.2f), loss %.5f (one pass %.5f), gradient relative difference %.1e",
			step, counted, len(y), shares, res[0].Loss, loss, rel)
		if !(rel <= 1e-5) || far(res[0].Loss, float64(loss), 1e-5*float64(loss)) {
			t.Errorf("step %d: loss %v and gradient %.1e off the one-pass mean over the counted targets (loss %v)", step, res[0].Loss, rel, loss)
		}
	}
}

// TestMaskedWorkersMatchOneWorker: on a dataset with a loss mask, three
// workers that split each global batch compute the loss and the gradient
// of one worker that takes it whole, to float32 rounding, step after step,
// and hold bitwise the same weights.
func TestMaskedWorkersMatchOneWorker(t *testing.T) {
	data := prepareChatDataset(t, 150, 2, 0.1)
	cfg := testJob(6, 10, 2)
	one := newWorker(t, cfg, chatModel, data)
	many := newWorkers(t, 3, cfg, chatModel, data)
	oneRed, manyRed := traintest.Reducers(traintest.NewGroup(1)), traintest.Reducers(traintest.NewGroup(3))
	for step := range cfg.Steps {
		want, err := one.Step(context.Background(), partsFor(t, one, step, 1)[0], oneRed[0])
		if err != nil {
			t.Fatal(err)
		}
		res, errs := stepAll(many, partsFor(t, many[0], step, 3), manyRed)
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
		_, g1, _ := one.LastReduced()
		_, g3, _ := many[0].LastReduced()
		rel := relDiff(g3, g1)
		t.Logf("step %d: loss %.6f with 3 workers, %.6f with one; gradient relative difference %.1e", step, res[0].Loss, want.Loss, rel)
		if far(res[0].Loss, want.Loss, 1e-5*want.Loss) || !(rel <= 1e-5) {
			t.Errorf("step %d: loss %v and gradient %.1e with 3 workers, loss %v with one", step, res[0].Loss, rel, want.Loss)
		}
		for i := range many {
			if j, ok := sameBits(many[i].Model.Params, many[0].Model.Params); !ok || res[i].Loss != res[0].Loss {
				t.Fatalf("step %d: worker %d's weight %d or loss differs from worker 0's", step, i, j)
			}
		}
	}
}

// TestMaskedEval: Eval of a dataset with a loss mask is the mean loss over
// the counted targets of the held-out sequences it scores, whatever the
// micro-batch.
func TestMaskedEval(t *testing.T) {
	data := prepareChatDataset(t, 150, 3, 0.3)
	const k = 6
	if data.NumSequences(shard.Heldout) < k {
		t.Fatalf("%d held-out sequences", data.NumSequences(shard.Heldout))
	}
	x, y, _ := maskedBatch(t, data, shard.Heldout, []int64{0, 1, 2, 3, 4, 5})
	m, err := model.New(chatModel, k, 64)
	if err != nil {
		t.Fatal(err)
	}
	m.Init(1)
	want, err := m.Forward(x, y, k, 64)
	if err != nil {
		t.Fatal(err)
	}
	for _, B := range []int{1, 4, 8} {
		cfg := testJob(4, 8, B)
		cfg.EvalSequences = k
		got, err := newWorker(t, cfg, chatModel, data).Eval()
		if err != nil || far(got, float64(want), 1e-5*float64(want)) {
			t.Errorf("micro batch %d: eval loss %v (%v), want %v", B, got, err, want)
		}
	}
}

// maskedDataset writes a dataset of one train shard by hand: the
// sequences of T tokens that toks spans, with the loss mask trained.
func maskedDataset(t *testing.T, T int, toks []int32, trained []bool) *shard.Dataset {
	t.Helper()
	tok := chat.ByteTokenizer{}
	file, hash, err := shard.EncodeMaskedShard(tok.Name(), tok.Vocab(), T, toks, trained)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(shard.ShardPath(dir, hash), file, 0o644); err != nil {
		t.Fatal(err)
	}
	n := int64((len(toks) - 1) / T)
	e := shard.ShardEntry{Hash: hash, Split: shard.Train, Sequences: n, Tokens: int64(len(toks)), Bytes: int64(len(file))}
	var counted int64
	for _, f := range trained {
		if f {
			counted++
		}
	}
	m := &shard.Manifest{Name: "hand", FormatVersion: shard.FormatVersionMasked, LossMask: true, Tokenizer: tok.Name(), Vocab: tok.Vocab(),
		EOT: tok.EOT(), SeqLen: T, Shards: []shard.ShardEntry{e},
		Totals: shard.Totals{Train: shard.SplitTotals{Shards: 1, Sequences: n, Tokens: e.Tokens, Bytes: e.Bytes}},
		Source: shard.SourceStats{Format: shard.FormatChat, ChatTemplate: chat.Llama3Name, Files: 1, Documents: 1, Tokens: e.Tokens, Trained: counted}}
	m.ID = m.ComputeID()
	if err := shard.WriteManifest(dir, m); err != nil {
		t.Fatal(err)
	}
	d, err := shard.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestWorkerWithoutCountedTargets: a part whose targets the mask all
// leaves out adds nothing, and the step's loss is the other parts' mean;
// a global batch without any counted target has loss 0 and a zero
// gradient, and the step is still taken.
func TestWorkerWithoutCountedTargets(t *testing.T) {
	const T = 64
	rng := rand.New(rand.NewPCG(9, 9))
	toks := make([]int32, 2*T+1)
	trained := make([]bool, len(toks))
	for i := range toks {
		toks[i] = int32(rng.IntN(256))
		trained[i] = i > T && rng.IntN(3) > 0 // sequence 0 has no trained target; sequence 1 about 2/3
	}
	data := maskedDataset(t, T, toks, trained)
	cfg := testJob(2, 2, 1)
	ws := newWorkers(t, 2, cfg, chatModel, data)
	m, err := model.New(chatModel, 1, T)
	if err != nil {
		t.Fatal(err)
	}
	copy(m.Params, ws[0].Model.Params)
	x, y, _ := maskedBatch(t, data, shard.Train, []int64{1})
	want, err := m.Forward(x, y, 1, T)
	if err != nil {
		t.Fatal(err)
	}
	res, errs := stepAll(ws, [][]int64{{0}, {1}}, traintest.Reducers(traintest.NewGroup(2)))
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if far(res[0].Loss, float64(want), 1e-6*float64(want)) {
		t.Errorf("parts of 0 and %d counted targets: loss %v, want the second's, %v", len(y), res[0].Loss, want)
	}

	w := newWorker(t, testJob(2, 1, 1), chatModel, data)
	res1, err := w.Step(context.Background(), []int64{0}, traintest.Reducers(traintest.NewGroup(1))[0])
	if err != nil {
		t.Fatal(err)
	}
	_, g, _ := w.LastReduced()
	if res1.Loss != 0 || res1.Step != 1 || w.Done != 1 || slices.ContainsFunc(g, func(v float32) bool { return v != 0 }) {
		t.Errorf("a batch without a counted target: %+v, done %d, gradient zero %v", res1, w.Done, !slices.ContainsFunc(g, func(v float32) bool { return v != 0 }))
	}
}
