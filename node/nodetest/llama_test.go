package nodetest

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/braidml/braid/coordinator"
	"github.com/braidml/braid/model"
	"github.com/braidml/braid/model/chat"
	"github.com/braidml/braid/model/hftok"
	"github.com/braidml/braid/model/modeltest"
	"github.com/braidml/braid/node"
	"github.com/braidml/braid/shard"
)

// prepareChatDataset writes n chat records (a question about two numbers
// and its answer) and prepares them with tok and the chat template of the
// model in modelDir, loss on the answers only.
func prepareChatDataset(t *testing.T, name string, n int, tok model.Tokenizer, modelDir string, seqLen int) string {
	t.Helper()
	in := filepath.Join(t.TempDir(), name+".jsonl")
	var b strings.Builder
	for i := range n {
		msgs := []chat.Message{
			{Role: chat.User, Content: fmt.Sprintf("What is %d plus %d?", i, i%7)},
			{Role: chat.Assistant, Content: fmt.Sprintf("%d plus %d is %d.", i, i%7, i+i%7)},
		}
		line, _ := json.Marshal(map[string]any{"messages": msgs})
		b.Write(append(line, '\n'))
	}
	if err := os.WriteFile(in, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	tmpl, err := chat.FromTokenizerConfig(filepath.Join(modelDir, hftok.ConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	cfg := shard.DefaultConfig()
	cfg.Inputs, cfg.Out, cfg.Tokenizer = []string{in}, filepath.Join(t.TempDir(), name+"-ds"), tok
	cfg.Format, cfg.ChatTemplate = shard.FormatChat, tmpl
	cfg.SeqLen, cfg.ShardBytes, cfg.Holdout = seqLen, 4<<10, 0.1
	res, err := shard.Prepare(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Manifest.LossMask {
		t.Fatalf("the chat dataset has no loss mask: %+v", res.Manifest.Source)
	}
	return res.Dir
}

// A LoRA job on a Llama-family base (a Hugging Face layout with Llama 3's
// tokenizer.json and chat template) and a chat dataset whose loss counts
// only the answers computes the same per-step losses on 3 nodes as on 1
// (within 1e-4 relative): grouped-query attention, RoPE, SwiGLU, the
// adapter on every projection and the loss mask all reduce across the
// ring as the single-process step computes them.
func TestLlamaLoRAChatJobThreeNodesMatchOne(t *testing.T) {
	const steps = 8
	cfg := model.Config{Arch: model.ArchLlama, Vocab: modeltest.Llama3TokenizerIDs, Context: 64, Dim: 32, Layers: 2, Heads: 4,
		KVHeads: 2, Hidden: 64, HeadDim: 8, NormEps: 1e-5, RopeTheta: 10000}
	base := modeltest.HFLlama(t, cfg, 5)
	tok, err := model.LoadTokenizer(base)
	if err != nil || !strings.HasPrefix(tok.Name(), "hf-") {
		t.Fatalf("the base's tokenizer: %v, %v", tok, err)
	}
	ds := prepareChatDataset(t, "chat", 200, tok, base, 64)
	req := node.JobRequest{Dataset: "chat", Steps: steps, GlobalBatch: 6, MicroBatch: 2, LR: 3e-3, Warmup: 2,
		LoRARank: 4, LoRAAlpha: 8, EvalEvery: steps}
	losses := func(n int) ([]float64, node.JobStatus) {
		c := NewCluster(t, n)
		c.WaitEpoch(func(e coordinator.Epoch) bool { return len(e.Members) == n })
		if _, err := c.PushDataset("n1", ds, node.DatasetOptions{}); err != nil {
			t.Fatal(err)
		}
		ref, err := c.PushModel("n1", base)
		if err != nil {
			t.Fatal(err)
		}
		r := req
		r.Base = ref
		j, err := c.Node("n1").SubmitJob(context.Background(), r)
		if err != nil {
			t.Fatal(err)
		}
		js := waitJob(c, "n1", j.ID, final)
		if js.State != coordinator.JobCompleted {
			t.Fatalf("%d-node job %s: %s", n, js.State, js.Error)
		}
		var l []float64
		c.waitFor(fmt.Sprintf("n1's losses of all %d steps", steps), func() bool {
			l = c.Node("n1").JobLosses(j.ID)
			return len(l) == steps
		})
		return l, js
	}
	one, js1 := losses(1)
	three, js3 := losses(3)
	for i := range one {
		if d := math.Abs(one[i]-three[i]) / math.Abs(one[i]); d > 1e-4 || math.IsNaN(d) {
			t.Errorf("step %d: loss %.7f on 1 node, %.7f on 3 (relative %.2g)", i+1, one[i], three[i], d)
		}
	}
	if !(one[steps-1] < one[0]) {
		t.Errorf("the adapter learnt nothing: loss %.5f at step 1, %.5f at step %d", one[0], one[steps-1], steps)
	}
	if !(js3.HeldoutLoss < js3.BaseHeldoutLoss) || math.Abs(js1.HeldoutLoss-js3.HeldoutLoss) > 1e-4*js1.HeldoutLoss {
		t.Errorf("held-out loss: 1 node %.6f, 3 nodes %.6f (base %.6f)", js1.HeldoutLoss, js3.HeldoutLoss, js3.BaseHeldoutLoss)
	}
	t.Logf("step 1 loss %.6f / %.6f, step %d %.6f / %.6f; held-out %.6f / %.6f (base %.6f)",
		one[0], three[0], steps, one[steps-1], three[steps-1], js1.HeldoutLoss, js3.HeldoutLoss, js3.BaseHeldoutLoss)
}
