package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/braidml/braid/model"
	"github.com/braidml/braid/model/hftok"
	"github.com/braidml/braid/model/modeltest"
	"github.com/braidml/braid/model/safetensors"
)

// Jobs through the CLI on bases as Hugging Face publishes them. One whose
// tokenizer is a tokenizer.json trains on a dataset prepared with it
// (`data prepare --tokenizer DIR`), and `job export` writes a model that
// loads with that tokenizer, which eval and generate use; a LoRA job's
// --merged export too. One in bf16 shards trains and exports in bf16, and
// a LoRA job on a bf16 Llama base exports its merged model in bf16.
func TestJobOnHuggingFaceBases(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node and runs jobs")
	}
	api := startCLINode(t, "base-test-token")
	base := modeltest.HFGPT2(t, model.Config{Context: 32, Dim: 16, Layers: 1, Heads: 2, Vocab: 512}, 1)
	tok, err := model.LoadTokenizer(base)
	if err != nil || !strings.HasPrefix(tok.Name(), "hf-") {
		t.Fatalf("the base's tokenizer: %v, %v", tok, err)
	}
	corpus := corpusDir(t)
	ds := filepath.Join(t.TempDir(), "ds")
	mustRunOut(t, "data", "prepare", "--input", corpus, "--out", ds, "--seq-len", "32", "--name", "docs", "--tokenizer", base)
	mustRunOut(t, "data", "push", ds, "--api", api, "--replicas", "1")
	loads := func(dir string) {
		t.Helper()
		ck, err := model.LoadCheckpoint(dir)
		if err != nil {
			t.Fatalf("%s does not load: %v", dir, err)
		}
		text := []byte("the quick brown fox")
		if ck.Tokenizer.Name() != tok.Name() || string(ck.Tokenizer.Decode(nil, ck.Tokenizer.Encode(nil, text))) != string(text) ||
			len(ck.Tokenizer.Encode(nil, text)) != len(tok.Encode(nil, text)) {
			t.Errorf("%s loads with tokenizer %s, the base's is %s", dir, ck.Tokenizer.Name(), tok.Name())
		}
	}

	id := strings.TrimSpace(mustRunOut(t, "job", "submit", "--api", api, "--model", base, "--dataset", "docs", "--steps", "2",
		"--global-batch", "2", "--micro-batch", "1", "--replicas", "1"))
	waitJob(t, api, id)
	exp := filepath.Join(t.TempDir(), "exp")
	out := mustRunOut(t, "job", "export", id, "--out", exp, "--api", api)
	if !strings.Contains(out, hftok.TokenizerFile) {
		t.Errorf("export says %q, naming no tokenizer.json", out)
	}
	loads(exp)
	if out := mustRunOut(t, "eval", "--model", exp, "--input", corpus, "--json"); !strings.Contains(out, "loss") {
		t.Errorf("eval of the export: %s", out)
	}
	mustRunOut(t, "generate", "--model", exp, "--prompt", "the quick", "--tokens", "4")

	lora := strings.TrimSpace(mustRunOut(t, "job", "submit", "--api", api, "--model", base, "--dataset", "docs", "--steps", "2",
		"--global-batch", "2", "--micro-batch", "1", "--replicas", "1", "--lora-rank", "2"))
	waitJob(t, api, lora)
	adapter, merged := filepath.Join(t.TempDir(), "adapter"), filepath.Join(t.TempDir(), "merged")
	mustRunOut(t, "job", "export", lora, "--out", adapter, "--merged", merged, "--api", api)
	loads(merged)
	if ck, err := model.LoadCheckpoint(merged); err == nil && ck.Format.Dtype != safetensors.F32 {
		t.Errorf("the merged export of an F32 base is stored as %s, want F32", ck.Format.Dtype)
	}
	if _, err := os.Stat(filepath.Join(adapter, hftok.TokenizerFile)); err != nil {
		t.Errorf("the adapter's export lacks the tokenizer: %v", err)
	}

	// bf16 shards: the byte tokenizer its vocab_size (300) implies.
	bytesDS := filepath.Join(t.TempDir(), "bytes")
	mustRunOut(t, "data", "prepare", "--input", corpus, "--out", bytesDS, "--seq-len", "32", "--name", "bytes")
	mustRunOut(t, "data", "push", bytesDS, "--api", api, "--replicas", "1")
	sharded := modeltest.ShardedBF16(t)
	id = strings.TrimSpace(mustRunOut(t, "job", "submit", "--api", api, "--model", sharded, "--dataset", "bytes", "--steps", "2",
		"--global-batch", "2", "--micro-batch", "1", "--replicas", "1"))
	waitJob(t, api, id)
	exp = filepath.Join(t.TempDir(), "exp-sharded")
	mustRunOut(t, "job", "export", id, "--out", exp, "--api", api)
	want, err := model.LoadCheckpoint(sharded)
	if err != nil {
		t.Fatal(err)
	}
	if ck, err := model.LoadCheckpoint(exp); err != nil || ck.Config != want.Config || ck.Tokenizer.Name() != "byte" {
		t.Errorf("the sharded base's export: %v (want a %+v with the byte tokenizer)", err, want.Config)
	} else if ck.Format.Dtype != safetensors.BF16 {
		t.Errorf("the bf16 base's export is %s, want BF16 (the base's dtype)", ck.Format.Dtype)
	}

	// A LoRA job on a bf16-stored Llama base (each worker holds it in
	// bf16): --merged gives the merged model in bf16.
	llamaBF16 := filepath.Join("..", "..", "model", "testdata", "llama_bf16_tiny")
	id = strings.TrimSpace(mustRunOut(t, "job", "submit", "--api", api, "--model", llamaBF16, "--dataset", "bytes", "--steps", "2",
		"--global-batch", "2", "--micro-batch", "1", "--replicas", "1", "--lora-rank", "2"))
	waitJob(t, api, id)
	adapter, merged = filepath.Join(t.TempDir(), "adapter-bf16"), filepath.Join(t.TempDir(), "merged-bf16")
	mustRunOut(t, "job", "export", id, "--out", adapter, "--merged", merged, "--api", api)
	if ck, err := model.LoadCheckpoint(merged); err != nil {
		t.Errorf("the merged export of a bf16 Llama base: %v", err)
	} else if ck.Format.Dtype != safetensors.BF16 {
		t.Errorf("the merged export of a bf16 Llama base is stored as %s, want BF16", ck.Format.Dtype)
	}
}
