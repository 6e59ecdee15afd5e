package push_test

import (
	"context"
	"errors"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/braidml/braid/model"
	"github.com/braidml/braid/model/hftok"
	"github.com/braidml/braid/model/modeltest"
	"github.com/braidml/braid/model/safetensors"
	"github.com/braidml/braid/node/push"
)

// hfModel writes a small GPT-2 as Hugging Face publishes one, with a
// tokenizer.json (modeltest.HFGPT2).
func hfModel(t *testing.T) string {
	return modeltest.HFGPT2(t, model.Config{Context: 16, Dim: 8, Layers: 1, Heads: 2, Vocab: 512}, 1)
}

// A base whose tokenizer is a tokenizer.json travels with its files: the
// ModelRef names them, the node gets them byte for byte, and they decode
// with config.json and the weights to the checkpoint LoadCheckpoint reads
// from the directory. A built-in tokenizer that config.json names sends no
// tokenizer file, whatever lies beside it.
func TestModelSendsTokenizerFiles(t *testing.T) {
	dir := hfModel(t)
	mem := push.NewMemory()
	ref, r, err := push.Model(context.Background(), mem, dir)
	if err != nil {
		t.Fatal(err)
	}
	if names := slices.Sorted(maps.Keys(ref.Tokenizer)); !slices.Equal(names, []string{hftok.TokenizerFile, hftok.ConfigFile}) || mem.Len() != 4 || r.Sent != 4 {
		t.Fatalf("tokenizer files %v; %d objects held, result %+v", names, mem.Len(), r)
	}
	object := func(h string) []byte {
		b, _, ok := mem.Object(h)
		if !ok {
			t.Fatalf("object %.12s not sent", h)
		}
		return b
	}
	files := map[string][]byte{}
	for name, h := range ref.Tokenizer {
		if want, _ := os.ReadFile(filepath.Join(dir, name)); string(object(h)) != string(want) {
			t.Errorf("%s: the object differs from the file", name)
		}
		files[name] = object(h)
	}
	ck, err := model.DecodeCheckpointFiles(object(ref.Config), "config.json", object(ref.Weights), "model.safetensors", files)
	if err != nil {
		t.Fatal(err)
	}
	want, err := model.LoadCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(ck.Tokenizer.Name(), "hf-") || ck.Tokenizer.Name() != want.Tokenizer.Name() || !slices.Equal(ck.Params, want.Params) {
		t.Errorf("the objects decode with tokenizer %s, the directory with %s", ck.Tokenizer.Name(), want.Tokenizer.Name())
	}

	// config.json naming a built-in tokenizer wins over tokenizer.json.
	b, _ := os.ReadFile(filepath.Join(dir, model.ConfigFile))
	named := strings.Replace(string(b), "{", `{"braid_tokenizer":"byte",`, 1)
	if err := os.WriteFile(filepath.Join(dir, model.ConfigFile), []byte(named), 0o644); err != nil {
		t.Fatal(err)
	}
	mem = push.NewMemory()
	if ref, _, err := push.Model(context.Background(), mem, dir); err != nil || ref.Tokenizer != nil || mem.Len() != 2 {
		t.Errorf("a built-in tokenizer: %+v, %v, %d objects", ref, err, mem.Len())
	}
}

// A base that its tokenizer does not fit (more ids than vocab_size) is
// refused before anything is sent.
func TestModelRefusesABadTokenizerFirst(t *testing.T) {
	dir := hfModel(t)
	b, _ := os.ReadFile(filepath.Join(dir, model.ConfigFile))
	if err := os.WriteFile(filepath.Join(dir, model.ConfigFile), []byte(strings.Replace(string(b), `"vocab_size": 512`, `"vocab_size": 300`, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	mem := push.NewMemory()
	if _, _, err := push.Model(context.Background(), mem, dir); !errors.Is(err, model.ErrCheckpoint) || !strings.Contains(err.Error(), "vocab_size is 300") {
		t.Errorf("push.Model: %v", err)
	}
	if mem.Len() != 0 {
		t.Errorf("%d objects sent", mem.Len())
	}
}

// A sharded bf16 base goes as one weights object holding the shards'
// tensors as stored (bf16), which decodes to the checkpoint LoadCheckpoint
// reads from the shards; pushed again, nothing is sent.
func TestModelSendsShardsAsOneObject(t *testing.T) {
	dir := modeltest.ShardedBF16(t)
	mem := push.NewMemory()
	ref, _, err := push.Model(context.Background(), mem, dir)
	if err != nil {
		t.Fatal(err)
	}
	if mem.Len() != 2 || ref.Tokenizer != nil {
		t.Fatalf("%d objects, tokenizer %v", mem.Len(), ref.Tokenizer)
	}
	w, _, _ := mem.Object(ref.Weights)
	f, err := safetensors.Decode(w)
	if err != nil {
		t.Fatal(err)
	}
	set, err := safetensors.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Tensors) != len(set.Tensors) {
		t.Fatalf("%d tensors, the shards hold %d", len(f.Tensors), len(set.Tensors))
	}
	for _, tensor := range f.Tensors {
		if tensor.Dtype != safetensors.BF16 {
			t.Errorf("tensor %s is %s, stored BF16", tensor.Name, tensor.Dtype)
		}
	}
	cfg, _, _ := mem.Object(ref.Config)
	ck, err := model.DecodeCheckpointFiles(cfg, "config.json", w, "model.safetensors", nil)
	if err != nil {
		t.Fatal(err)
	}
	want, err := model.LoadCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ck.Params, want.Params) || ck.Format.Dtype != safetensors.BF16 {
		t.Errorf("the object decodes to other weights (dtype %s) than the shards", ck.Format.Dtype)
	}
	again, r, err := push.Model(context.Background(), mem, dir)
	if err != nil || again.Weights != ref.Weights || r.Sent != 0 {
		t.Errorf("a second push: %+v, sent %d, %v", again, r.Sent, err)
	}
}

// failingTarget reads part of an object and fails.
type failingTarget struct{ *push.Memory }

var errTarget = errors.New("the target failed")

func (failingTarget) Put(_ context.Context, _ string, _ int64, r io.Reader, _ bool) error {
	io.CopyN(io.Discard, r, 100)
	return errTarget
}

// A target that fails while a sharded set streams to it gets its error
// back, and the push does not hang on the rest of the set.
func TestModelShardsToAFailingTarget(t *testing.T) {
	dir := modeltest.ShardedBF16(t)
	if _, _, err := push.Model(context.Background(), failingTarget{push.NewMemory()}, dir); !errors.Is(err, errTarget) {
		t.Errorf("push.Model: %v, want the target's error", err)
	}
}
