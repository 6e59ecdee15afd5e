package main

import (
	"encoding/json"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/braidml/braid/kernels/cuda"
	"github.com/braidml/braid/kernels/cuda/cudaemu"
)

// The CLI on a GPU (a real one, or the CPU stand-in with make
// test-cuda-emu): train, eval and generate with --device cuda; the
// fine-tuned model scores the same on the GPU as on the CPU; a setting the
// GPU cannot run is refused with its reason. Skips without a GPU.
func TestGPUTrainEvalGenerate(t *testing.T) {
	if devs, err := cuda.Devices(); err != nil || len(devs) == 0 {
		t.Skipf("no GPU: %v", err)
	}
	corpus, out := corpusDir(t), filepath.Join(t.TempDir(), "ck")
	got, err := run(t, "train", "--device", "cuda", "--precision", "fp32", "--input", corpus, "--out", out, "--steps", "4",
		"--batch", "2", "--seq-len", "32", "--eval-every", "2", "--eval-batches", "1", "--holdout-every", "5", "--log-every", "2")
	if err != nil {
		t.Fatalf("train --device cuda: %v\n%s", err, got)
	}
	if !strings.Contains(got, "device: cuda:0") || !strings.Contains(got, "held-out loss") {
		t.Errorf("train output does not say it ran on the GPU and evaluated:\n%s", got)
	}
	if g, c := evalLoss(t, "cuda", out, corpus), evalLoss(t, "cpu", out, corpus); !(math.Abs(g-c) <= 1e-4*c) {
		t.Errorf("held-out loss %v on the GPU, %v on the CPU", g, c)
	}
	if got, err := run(t, "generate", "--device", "cuda", "--model", out, "--prompt", "the quick", "--tokens", "8", "--temperature", "0"); err != nil || len(got) < len("the quick") {
		t.Errorf("generate --device cuda: %v\n%s", err, got)
	}
	// LoRA dropout is not on the GPU: refused with the reason (it crashed once).
	got, err = run(t, "train", "--device", "cuda", "--init", out, "--lora-rank", "2", "--lora-dropout", "0.1", "--input", corpus,
		"--out", filepath.Join(t.TempDir(), "lora"), "--steps", "1", "--batch", "2", "--seq-len", "32", "--eval-every", "0")
	if err == nil || !strings.Contains(err.Error(), "dropout") {
		t.Errorf("LoRA dropout on the GPU: %v\n%s", err, got)
	}
}

// TestGPULlama: a Llama family model (the fixture PyTorch checked, an
// untied head and grouped-query attention) fine-tunes on the GPU, fully
// and with LoRA on every projection, and the result scores the same on the
// GPU as on the CPU. Skips without a GPU.
func TestGPULlama(t *testing.T) {
	if devs, err := cuda.Devices(); err != nil || len(devs) == 0 {
		t.Skipf("no GPU: %v", err)
	}
	corpus, base := corpusDir(t), filepath.Join("..", "..", "model", "testdata", "llama_tiny")
	for _, lora := range []bool{false, true} {
		out := filepath.Join(t.TempDir(), "ck")
		args := []string{"train", "--device", "cuda", "--precision", "fp32", "--model", base, "--input", corpus, "--out", out, "--steps", "4",
			"--batch", "2", "--seq-len", "32", "--eval-every", "0", "--log-every", "2"}
		if lora {
			args = append(args, "--lora-rank", "2", "--merged", filepath.Join(t.TempDir(), "merged"))
		}
		got, err := run(t, args...)
		if err != nil {
			t.Fatalf("train --device cuda (LoRA %v): %v\n%s", lora, err, got)
		}
		if !strings.Contains(got, "device: cuda:0") {
			t.Errorf("train output does not say it ran on the GPU:\n%s", got)
		}
		if lora {
			continue
		}
		if g, c := evalLoss(t, "cuda", out, corpus), evalLoss(t, "cpu", out, corpus); !(math.Abs(g-c) <= 1e-4*c) {
			t.Errorf("loss %v on the GPU, %v on the CPU", g, c)
		}
	}
}

// evalLoss is `braid eval --device device --json`'s loss of the model in
// dir on corpus (fp32, 32-token sequences, 2000 tokens).
func evalLoss(t *testing.T, device, dir, corpus string) float64 {
	t.Helper()
	got, err := run(t, "eval", "--device", device, "--precision", "fp32", "--model", dir, "--input", corpus, "--seq-len", "32", "--max-tokens", "2000", "--json")
	if err != nil {
		t.Fatalf("eval --device %s: %v\n%s", device, err, got)
	}
	var r struct{ Loss float64 }
	lines := strings.Split(strings.TrimSpace(got), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &r); err != nil || r.Loss <= 0 {
		t.Fatalf("eval --device %s: %q: %v", device, got, err)
	}
	return r.Loss
}

// TestMain points the GPU tests at the CPU stand-in for the CUDA libraries
// when BRAID_CUDA_EMULATE=1 (package cudaemu).
func TestMain(m *testing.M) { cudaemu.Main(m) }

// The GPU commands refuse stray arguments instead of dropping what follows
// them (a flag typed after an argument).
func TestGPUCommandsRefuseStrayArguments(t *testing.T) {
	for _, args := range [][]string{{"bench", "train", "--model", "small", "stray", "--steps", "1"}, {"doctor", "extra"}} {
		if _, err := run(t, args...); err == nil || !strings.Contains(err.Error(), "takes no arguments") {
			t.Errorf("%v: %v, want a refusal", args, err)
		}
	}
}
