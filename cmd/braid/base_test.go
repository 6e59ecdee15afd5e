package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/braidml/braid/model"
	"github.com/braidml/braid/model/hftok"
	"github.com/braidml/braid/transport/pki"
)

// hfBaseDir writes a small randomly initialised GPT-2 as Hugging Face
// publishes a model: config.json without braid_tokenizer,
// model.safetensors, and model/hftok's GPT-2 fixture (507 ids) as
// tokenizer.json and tokenizer_config.json.
func hfBaseDir(t *testing.T) string {
	t.Helper()
	c := model.Config{Context: 32, Dim: 16, Layers: 1, Heads: 2, Vocab: 512}
	m, err := model.NewInference(c, 1, 32)
	if err != nil {
		t.Fatal(err)
	}
	m.Init(1)
	dir := filepath.Join(t.TempDir(), "hf-base")
	if err := model.SaveCheckpoint(dir, c, model.ByteTokenizer{}, m.Params); err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	b, err := os.ReadFile(filepath.Join(dir, model.ConfigFile))
	if err != nil || json.Unmarshal(b, &cfg) != nil {
		t.Fatalf("config.json: %v", err)
	}
	delete(cfg, "braid_tokenizer")
	if b, err = json.MarshalIndent(cfg, "", "  "); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, model.ConfigFile), b, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{hftok.TokenizerFile, hftok.ConfigFile} {
		b, err := os.ReadFile(filepath.Join("..", "..", "model", "hftok", "testdata", "gpt2", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// Jobs through the CLI on bases as Hugging Face publishes them. One whose
// tokenizer is a tokenizer.json trains on a dataset prepared with it
// (`data prepare --tokenizer DIR`), and `job export` writes a model that
// loads with that tokenizer, which eval and generate use; a LoRA job's
// --merged export too. One in bf16 shards trains and exports.
func TestJobOnHuggingFaceBases(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node and runs jobs")
	}
	pkiDir := filepath.Join(t.TempDir(), "pki")
	if err := pki.InitCA(pkiDir); err != nil {
		t.Fatal(err)
	}
	if err := pki.Issue(pkiDir, "n1", []string{"127.0.0.1"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	const token = "base-test-token"
	n := startTLSNode(t, pkiDir, token)
	t.Setenv("BRAID_TOKEN", token)
	api := "http://" + n.APIAddr()
	mustRunCLI := func(args ...string) string {
		t.Helper()
		out, err := run(t, args...)
		if err != nil {
			t.Fatalf("%q: %v\n%s", args, err, out)
		}
		return out
	}
	base := hfBaseDir(t)
	tok, err := model.LoadTokenizer(base)
	if err != nil || !strings.HasPrefix(tok.Name(), "hf-") {
		t.Fatalf("the base's tokenizer: %v, %v", tok, err)
	}
	corpus := corpusDir(t)
	ds := filepath.Join(t.TempDir(), "ds")
	mustRunCLI("data", "prepare", "--input", corpus, "--out", ds, "--seq-len", "32", "--name", "docs", "--tokenizer", base)
	mustRunCLI("data", "push", ds, "--api", api, "--replicas", "1")
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

	id := strings.TrimSpace(mustRunCLI("job", "submit", "--api", api, "--model", base, "--dataset", "docs", "--steps", "2",
		"--global-batch", "2", "--micro-batch", "1", "--replicas", "1"))
	waitJob(t, api, id)
	exp := filepath.Join(t.TempDir(), "exp")
	out := mustRunCLI("job", "export", id, "--out", exp, "--api", api)
	if !strings.Contains(out, hftok.TokenizerFile) {
		t.Errorf("export says %q, naming no tokenizer.json", out)
	}
	loads(exp)
	if out := mustRunCLI("eval", "--model", exp, "--input", corpus, "--json"); !strings.Contains(out, "loss") {
		t.Errorf("eval of the export: %s", out)
	}
	mustRunCLI("generate", "--model", exp, "--prompt", "the quick", "--tokens", "4")

	lora := strings.TrimSpace(mustRunCLI("job", "submit", "--api", api, "--model", base, "--dataset", "docs", "--steps", "2",
		"--global-batch", "2", "--micro-batch", "1", "--replicas", "1", "--lora-rank", "2"))
	waitJob(t, api, lora)
	adapter, merged := filepath.Join(t.TempDir(), "adapter"), filepath.Join(t.TempDir(), "merged")
	mustRunCLI("job", "export", lora, "--out", adapter, "--merged", merged, "--api", api)
	loads(merged)
	if _, err := os.Stat(filepath.Join(adapter, hftok.TokenizerFile)); err != nil {
		t.Errorf("the adapter's export lacks the tokenizer: %v", err)
	}

	// bf16 shards: the byte tokenizer its vocab_size (300) implies.
	bytesDS := filepath.Join(t.TempDir(), "bytes")
	mustRunCLI("data", "prepare", "--input", corpus, "--out", bytesDS, "--seq-len", "32", "--name", "bytes")
	mustRunCLI("data", "push", bytesDS, "--api", api, "--replicas", "1")
	sharded := filepath.Join("..", "..", "model", "testdata", "hf_tiny_bf16_sharded")
	id = strings.TrimSpace(mustRunCLI("job", "submit", "--api", api, "--model", sharded, "--dataset", "bytes", "--steps", "2",
		"--global-batch", "2", "--micro-batch", "1", "--replicas", "1"))
	waitJob(t, api, id)
	exp = filepath.Join(t.TempDir(), "exp-sharded")
	mustRunCLI("job", "export", id, "--out", exp, "--api", api)
	want, err := model.LoadCheckpoint(sharded)
	if err != nil {
		t.Fatal(err)
	}
	if ck, err := model.LoadCheckpoint(exp); err != nil || ck.Config != want.Config || ck.Tokenizer.Name() != "byte" {
		t.Errorf("the sharded base's export: %v (want a %+v with the byte tokenizer)", err, want.Config)
	}
}
