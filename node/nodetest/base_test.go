package nodetest

import (
	"context"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/braidml/braid/coordinator"
	"github.com/braidml/braid/model"
	"github.com/braidml/braid/model/hftok"
	"github.com/braidml/braid/model/modeltest"
	"github.com/braidml/braid/node"
)

// Jobs on bases as Hugging Face publishes them: a tokenizer.json beside
// config.json, and bf16 weights in shards.

// checkpointDir writes the files of job checkpoint cp, read from its first
// holder's store, into a directory named as an export names them.
func checkpointDir(t *testing.T, c *Cluster, cp coordinator.Checkpoint) string {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{model.ConfigFile: cp.Config, model.WeightsFile: cp.Weights}
	maps.Copy(files, cp.Tokenizer)
	for name, h := range files {
		p, err := c.Node(cp.Holders[0]).Store().Path(h)
		if err != nil {
			t.Fatalf("%s of the checkpoint: %v", name, err)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// A base whose tokenizer is a tokenizer.json: its files travel with it,
// every member fetches them and trains on a dataset prepared with that
// tokenizer, and the checkpoints name the same files, so that the
// exported model loads with the tokenizer it was trained with.
func TestJobOnABaseWithATokenizerJSON(t *testing.T) {
	c := NewCluster(t, 2)
	c.WaitEpoch(func(e coordinator.Epoch) bool { return len(e.Members) == 2 })
	base := modeltest.HFGPT2(t, model.Config{Context: 64, Dim: 32, Layers: 2, Heads: 2, Vocab: 512}, 7)
	tok, err := model.LoadTokenizer(base)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok.Name(), "hf-") {
		t.Fatalf("the base's tokenizer is %s, want its tokenizer.json's", tok.Name())
	}
	ds, m := prepareDatasetWith(t, "legal", 40, tok, 32)
	if m.Tokenizer != tok.Name() {
		t.Fatalf("dataset tokenizer %s", m.Tokenizer)
	}
	if _, err := c.PushDataset("n1", ds, node.DatasetOptions{}); err != nil {
		t.Fatal(err)
	}
	ref, err := c.PushModel("n1", base)
	if err != nil {
		t.Fatal(err)
	}
	if names := slices.Sorted(maps.Keys(ref.Tokenizer)); !slices.Equal(names, []string{hftok.TokenizerFile, hftok.ConfigFile}) {
		t.Fatalf("the pushed base names tokenizer files %v", names)
	}
	j, err := c.Node("n1").SubmitJob(context.Background(), node.JobRequest{Base: ref, Dataset: "legal", Steps: 8, GlobalBatch: 8, MicroBatch: 2,
		LR: 3e-3, CheckpointEvery: 4, EvalEvery: 8, HashEvery: 4})
	if err != nil {
		t.Fatal(err)
	}
	js := waitJob(c, "n1", j.ID, final)
	requireLearnedInStep(t, js, 2, "weights differ")
	if !maps.Equal(js.Spec.Base.Tokenizer, ref.Tokenizer) {
		t.Errorf("spec tokenizer %v, pushed %v", js.Spec.Base.Tokenizer, ref.Tokenizer)
	}
	// n2 was sent nothing by the client: it fetched the files by hash.
	for name, h := range ref.Tokenizer {
		if _, err := c.Node("n2").Store().Path(h); err != nil {
			t.Errorf("n2 lacks the base's %s: %v", name, err)
		}
	}
	for _, cp := range js.Checkpoints {
		if !maps.Equal(cp.Tokenizer, ref.Tokenizer) {
			t.Errorf("checkpoint at step %d names tokenizer files %v, the base %v", cp.Step, cp.Tokenizer, ref.Tokenizer)
		}
	}
	last := js.Checkpoints[len(js.Checkpoints)-1]
	ck, err := model.LoadCheckpoint(checkpointDir(t, c, last))
	if err != nil {
		t.Fatalf("the last checkpoint does not load: %v", err)
	}
	text := []byte("legal document 3 says something about the matter at hand.")
	if ck.Tokenizer.Name() != tok.Name() || !slices.Equal(ck.Tokenizer.Encode(nil, text), tok.Encode(nil, text)) {
		t.Errorf("the checkpoint loads with tokenizer %s, the base's is %s", ck.Tokenizer.Name(), tok.Name())
	}
}

// A base in bf16 shards (model.safetensors.index.json), as Hugging Face
// publishes larger models, trains like any other: the client sends the
// shards as one bf16 object, and every member reads it.
func TestJobOnAShardedBF16Base(t *testing.T) {
	c := NewCluster(t, 2)
	c.WaitEpoch(func(e coordinator.Epoch) bool { return len(e.Members) == 2 })
	base := modeltest.ShardedBF16(t) // n_positions 32, vocab_size 300
	ds, _ := prepareDatasetWith(t, "legal", 40, model.ByteTokenizer{}, 32)
	if _, err := c.PushDataset("n2", ds, node.DatasetOptions{}); err != nil {
		t.Fatal(err)
	}
	ref, err := c.PushModel("n2", base)
	if err != nil {
		t.Fatal(err)
	}
	j, err := c.Node("n2").SubmitJob(context.Background(), node.JobRequest{Base: ref, Dataset: "legal", Steps: 6, GlobalBatch: 8, MicroBatch: 2,
		LR: 3e-3, EvalEvery: 6, HashEvery: 3})
	if err != nil {
		t.Fatal(err)
	}
	js := waitJob(c, "n2", j.ID, final)
	requireLearnedInStep(t, js, 2, "weights differ")
	want, err := model.LoadCheckpoint(base)
	if err != nil {
		t.Fatal(err)
	}
	ck, err := model.LoadCheckpoint(checkpointDir(t, c, js.Checkpoints[len(js.Checkpoints)-1]))
	if err != nil {
		t.Fatalf("the last checkpoint does not load: %v", err)
	}
	if ck.Config != want.Config || ck.Tokenizer.Name() != want.Tokenizer.Name() {
		t.Errorf("the checkpoint is a %+v with tokenizer %s, the base a %+v with %s", ck.Config, ck.Tokenizer.Name(), want.Config, want.Tokenizer.Name())
	}
}
