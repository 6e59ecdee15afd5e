package main

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/braidml/braid/model"
)

// TestTrainLoRA: braid train --lora-rank trains an adapter on a frozen base
// and writes it in PEFT's layout with its training state (and, with
// --merged, the merged model); --resume of the adapter directory continues
// it on the base its adapter_config.json names; eval and generate take
// --adapter, and the merged model scores as the base with the adapter.
func TestTrainLoRA(t *testing.T) {
	corpus, tmp := corpusDir(t), t.TempDir()
	base, ad, merged := filepath.Join(tmp, "base"), filepath.Join(tmp, "adapter"), filepath.Join(tmp, "merged")
	common := []string{"--input", corpus, "--batch", "2", "--seq-len", "32", "--holdout-every", "5", "--eval-batches", "1"}
	if log, err := run(t, append([]string{"train", "--out", base, "--steps", "3", "--eval-every", "0"}, common...)...); err != nil {
		t.Fatalf("train the base: %v\n%s", err, log)
	}
	baseBytes, err := os.ReadFile(filepath.Join(base, model.WeightsFile))
	if err != nil {
		t.Fatal(err)
	}
	lora := append([]string{"train", "--init", base, "--out", ad, "--steps", "6", "--eval-every", "3", "--log-every", "2",
		"--lora-rank", "4", "--lora-dropout", "0.1", "--lora-targets", "c_attn,mlp.c_proj", "--merged", merged, "--warmup", "0"}, common...)
	log, err := run(t, lora...)
	if err != nil {
		t.Fatalf("train --lora-rank: %v\n%s", err, log)
	}
	t.Log(log)
	for _, want := range []string{"LoRA: rank 4, alpha 8 (scale 2), dropout 0.1, on c_attn,mlp.c_proj", "trainable parameters",
		"lr 5.00e-03", "step     6/6", "held-out loss", "saved " + ad, "saved the merged model"} {
		if !strings.Contains(log, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	for _, f := range []string{model.AdapterWeightsFile, model.AdapterConfigFile, "training_state.safetensors"} {
		if _, err := os.Stat(filepath.Join(ad, f)); err != nil {
			t.Errorf("adapter directory: %v", err)
		}
	}
	if _, err := os.Stat(filepath.Join(ad, model.WeightsFile)); err == nil {
		t.Errorf("the adapter directory holds a %s", model.WeightsFile)
	}
	var cfg map[string]any
	if b, err := os.ReadFile(filepath.Join(ad, model.AdapterConfigFile)); err != nil || json.Unmarshal(b, &cfg) != nil {
		t.Fatalf("adapter_config.json: %v", err)
	}
	if cfg["base_model_name_or_path"] != base || cfg["r"] != 4.0 || cfg["peft_type"] != "LORA" {
		t.Errorf("adapter_config.json: %v", cfg)
	}
	if b, _ := os.ReadFile(filepath.Join(base, model.WeightsFile)); !bytes.Equal(b, baseBytes) {
		t.Error("training an adapter changed the base checkpoint")
	}

	// Resume on the base that adapter_config.json names: continuing a
	// finished run is refused, extending it works.
	resume := append([]string{"train", "--resume", ad, "--out", ad + "2", "--eval-every", "3", "--warmup", "0"}, common...)
	if log, err := run(t, append(resume, "--steps", "6")...); err == nil || !strings.Contains(err.Error(), "already at step 6") {
		t.Errorf("resume of a finished run: %v\n%s", err, log)
	}
	if log, err := run(t, append(resume, "--steps", "8")...); err != nil || !strings.Contains(log, "resuming") || !strings.Contains(log, "step     8/8") {
		t.Errorf("resume to 8 steps: %v\n%s", err, log)
	}

	// eval: the base with --adapter and the merged model agree.
	score := func(args ...string) float64 {
		t.Helper()
		js, err := run(t, append([]string{"eval", "--input", corpus, "--split", "heldout", "--holdout-every", "5", "--seq-len", "32", "--json"}, args...)...)
		if err != nil {
			t.Fatalf("eval %v: %v", args, err)
		}
		var r struct{ Loss float64 }
		if err := json.Unmarshal([]byte(js), &r); err != nil {
			t.Fatalf("eval output %q: %v", js, err)
		}
		return r.Loss
	}
	withAdapter, mergedLoss, baseLoss := score("--model", base, "--adapter", ad), score("--model", merged), score("--model", base)
	t.Logf("held-out loss: base %.5f, base + adapter %.5f, merged %.5f", baseLoss, withAdapter, mergedLoss)
	if math.Abs(withAdapter-mergedLoss) > 1e-4 {
		t.Errorf("base + adapter %.6f, merged %.6f", withAdapter, mergedLoss)
	}
	if withAdapter == baseLoss {
		t.Error("the adapter changed nothing")
	}
	gen := func() string {
		s, err := run(t, "generate", "--model", base, "--adapter", ad, "--prompt", "the ", "--tokens", "20", "--seed", "3")
		if err != nil {
			t.Fatalf("generate --adapter: %v", err)
		}
		return s
	}
	if a, b := gen(), gen(); a != b || !strings.HasPrefix(a, "the ") {
		t.Errorf("generate --adapter: %q then %q", a, b)
	}
}

// TestTrainLoRABadFlags: LoRA flags that do not fit together are refused
// before anything is trained, naming the flag.
func TestTrainLoRABadFlags(t *testing.T) {
	corpus, tmp := corpusDir(t), t.TempDir()
	base, ad, out := filepath.Join(tmp, "base"), filepath.Join(tmp, "adapter"), filepath.Join(tmp, "out")
	common := []string{"--input", corpus, "--batch", "2", "--seq-len", "32", "--holdout-every", "5", "--eval-every", "0", "--steps", "1"}
	if log, err := run(t, append([]string{"train", "--out", base}, common...)...); err != nil {
		t.Fatalf("train the base: %v\n%s", err, log)
	}
	if log, err := run(t, append([]string{"train", "--init", base, "--out", ad, "--lora-rank", "2"}, common...)...); err != nil {
		t.Fatalf("train an adapter: %v\n%s", err, log)
	}
	other := filepath.Join(tmp, "other")
	if log, err := run(t, append([]string{"train", "--out", other, "--config", "small"}, common...)...); err != nil {
		t.Fatalf("train another base: %v\n%s", err, log)
	}
	for name, c := range map[string]struct {
		args []string
		want string
	}{
		"rank without a base":       {[]string{"train", "--out", out, "--lora-rank", "4"}, "--model"},
		"alpha without a rank":      {[]string{"train", "--init", base, "--out", out, "--lora-alpha", "4"}, "need --lora-rank"},
		"merged without a rank":     {[]string{"train", "--init", base, "--out", out, "--merged", out + "m"}, "--merged"},
		"negative rank":             {[]string{"train", "--init", base, "--out", out, "--lora-rank", "-1"}, "--lora-rank -1"},
		"unknown target":            {[]string{"train", "--init", base, "--out", out, "--lora-rank", "4", "--lora-targets", "q_proj"}, "q_proj"},
		"dropout 1":                 {[]string{"train", "--init", base, "--out", out, "--lora-rank", "4", "--lora-dropout", "1"}, "lora_dropout"},
		"resume an adapter, rank":   {[]string{"train", "--resume", ad, "--out", out, "--lora-rank", "4"}, "drop the --lora-* flags"},
		"rank to resume a full run": {[]string{"train", "--resume", base, "--out", out, "--lora-rank", "4"}, "not a LoRA run"},
		"adapter of another base":   {[]string{"eval", "--model", other, "--adapter", ad, "--input", corpus}, "has shape"},
		"not an adapter":            {[]string{"generate", "--model", base, "--adapter", base}, "adapter_config.json"},
	} {
		t.Run(name, func(t *testing.T) {
			args := c.args
			if args[0] == "train" {
				args = append(args, common...)
			}
			log, err := run(t, args...)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one saying %q\n%s", err, c.want, log)
			}
			t.Log(err)
		})
	}
}
