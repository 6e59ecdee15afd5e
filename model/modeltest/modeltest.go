// Package modeltest writes model directories for the tests of packages
// that carry models around (node/push, node, cmd/braid): small randomly
// initialised checkpoints laid out as Hugging Face publishes them. It reads
// model/hftok's fixtures from the source tree, so it works where the
// module's sources are (go test), and nothing but tests imports it.
package modeltest

import (
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/braidml/braid/model"
	"github.com/braidml/braid/model/hftok"
)

// GPT2TokenizerIDs is the number of ids of the tokenizer HFGPT2 writes:
// model/hftok's GPT-2 fixture, a byte-level BPE.
const GPT2TokenizerIDs = 507

// HFGPT2 writes, in a new directory under t.TempDir(), a GPT-2 of config c
// initialised with seed, as Hugging Face publishes a model with a
// tokenizer.json: config.json without braid_tokenizer, model.safetensors
// (F32), and model/hftok's GPT-2 fixture as tokenizer.json and
// tokenizer_config.json. c.Vocab must be at least GPT2TokenizerIDs. It
// returns the directory; model.LoadCheckpoint reads it with that
// tokenizer.
func HFGPT2(t testing.TB, c model.Config, seed uint64) string {
	t.Helper()
	m, err := model.NewInference(c, 1, c.Context)
	if err != nil {
		t.Fatal(err)
	}
	m.Init(seed)
	dir := filepath.Join(t.TempDir(), "hf-gpt2")
	if err := model.SaveCheckpoint(dir, c, model.ByteTokenizer{}, m.Params); err != nil {
		t.Fatal(err)
	}
	dropTokenizerName(t, dir)
	fixture := filepath.Join(modelDir(t), "hftok", "testdata", "gpt2")
	for _, f := range []string{hftok.TokenizerFile, hftok.ConfigFile} {
		b, err := os.ReadFile(filepath.Join(fixture, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// Llama3ChatTemplate is Llama 3's chat_template as
// Meta-Llama-3-8B-Instruct's tokenizer_config.json has it.
const Llama3ChatTemplate = "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"

// Llama3TokenizerIDs is the number of ids of the tokenizer HFLlama writes:
// model/hftok's Llama 3 fixture, a byte-level BPE with Llama 3's control
// tokens (<|begin_of_text|>, <|start_header_id|>, <|end_header_id|>,
// <|eot_id|>).
const Llama3TokenizerIDs = 512

// HFLlama writes, in a new directory under t.TempDir(), a Llama family
// model of config c (c.Arch one of the family's) initialised with seed,
// as Hugging Face publishes an instruction-tuned Llama 3: config.json,
// model.safetensors (F32), model/hftok's Llama 3 fixture as
// tokenizer.json, and a tokenizer_config.json whose chat_template is
// Llama 3's. c.Vocab must be at least Llama3TokenizerIDs.
func HFLlama(t testing.TB, c model.Config, seed uint64) string {
	t.Helper()
	m, err := model.NewInference(c, 1, c.Context)
	if err != nil {
		t.Fatal(err)
	}
	m.Init(seed)
	dir := filepath.Join(t.TempDir(), "hf-llama")
	if err := model.SaveCheckpoint(dir, c, model.ByteTokenizer{}, m.Params); err != nil {
		t.Fatal(err)
	}
	dropTokenizerName(t, dir)
	fixture := filepath.Join(modelDir(t), "hftok", "testdata", "llama3")
	b, err := os.ReadFile(filepath.Join(fixture, hftok.TokenizerFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, hftok.TokenizerFile), b, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, _ := json.MarshalIndent(map[string]any{"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
		"chat_template": Llama3ChatTemplate, "tokenizer_class": "PreTrainedTokenizerFast"}, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, hftok.ConfigFile), cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// dropTokenizerName removes braid_tokenizer from dir's config.json, as a
// Hugging Face model's has none: its tokenizer is its tokenizer.json.
func dropTokenizerName(t testing.TB, dir string) {
	t.Helper()
	var cfg map[string]any
	b, err := os.ReadFile(filepath.Join(dir, model.ConfigFile))
	if err != nil || json.Unmarshal(b, &cfg) != nil {
		t.Fatalf("modeltest: config.json: %v", err)
	}
	delete(cfg, "braid_tokenizer")
	if b, err = json.MarshalIndent(cfg, "", "  "); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, model.ConfigFile), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// ShardedBF16 is the directory of model/testdata/hf_tiny_bf16_sharded: a
// GPT-2 (n_positions 32, vocab_size 300, byte tokenizer by vocab size) in
// three BF16 shards listed by model.safetensors.index.json, as
// transformers' save_pretrained writes them.
func ShardedBF16(t testing.TB) string {
	t.Helper()
	return filepath.Join(modelDir(t), "testdata", "hf_tiny_bf16_sharded")
}

// modelDir is package model's source directory.
func modelDir(t testing.TB) string {
	t.Helper()
	_, self, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("modeltest: cannot locate the source tree")
	}
	return filepath.Join(filepath.Dir(self), "..")
}
