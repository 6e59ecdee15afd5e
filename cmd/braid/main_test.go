package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

// run runs the CLI in-process, as main does, and returns its output.
func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	return runWith(t, newApp(), args...)
}

// runWith is run of app.
func runWith(t *testing.T, app *cli.App, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	app.Writer, app.ErrWriter = &out, &out
	err := runApp(context.Background(), app, append([]string{"braid"}, args...))
	return out.String(), err
}

// corpusDir writes a small text corpus: enough documents that some are held
// out.
func corpusDir(t *testing.T) string {
	dir := t.TempDir()
	for i := 0; i < 60; i++ {
		text := strings.Repeat("the quick brown fox jumps over the lazy dog. ", 5+i%7) + string(rune('a'+i%26))
		if err := os.WriteFile(filepath.Join(dir, "doc"+string(rune('a'+i%26))+string(rune('0'+i/26))+".txt"), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestTrainThenGenerate: a short run writes a checkpoint that resumes with
// --init and samples deterministically.
func TestTrainThenGenerate(t *testing.T) {
	corpus, out := corpusDir(t), filepath.Join(t.TempDir(), "ck")
	args := []string{"train", "--input", corpus, "--out", out, "--steps", "6", "--batch", "2", "--seq-len", "32",
		"--eval-every", "3", "--eval-batches", "1", "--holdout-every", "5", "--log-every", "2"}
	log, err := run(t, args...)
	if err != nil {
		t.Fatalf("train: %v\n%s", err, log)
	}
	for _, want := range []string{"step     6/6", "held-out loss", "tokens/s", "saved " + out} {
		if !strings.Contains(log, want) {
			t.Errorf("train output lacks %q:\n%s", want, log)
		}
	}
	for _, f := range []string{"model.safetensors", "config.json", "training_state.safetensors"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("checkpoint: %v", err)
		}
	}
	if log, err := run(t, "train", "--input", corpus, "--out", out+"2", "--init", out, "--steps", "2", "--batch", "2",
		"--seq-len", "32", "--eval-every", "0", "--holdout-every", "5"); err != nil {
		t.Fatalf("train --init: %v\n%s", err, log)
	}
	// --resume: continuing a finished run is refused, extending it works.
	resume := append([]string{}, args...)
	resume[0] = "train"
	for i, a := range resume {
		if a == "--out" {
			resume[i+1] = out + "3"
		}
	}
	if log, err := run(t, append(resume, "--resume", out)...); err == nil || !strings.Contains(err.Error(), "already at step 6") {
		t.Errorf("resume of a finished run: %v\n%s", err, log)
	}
	for i, a := range resume {
		if a == "6" {
			resume[i] = "8"
		}
	}
	if log, err := run(t, append(resume, "--resume", out)...); err != nil || !strings.Contains(log, "resuming") || !strings.Contains(log, "step     8/8") {
		t.Errorf("resume to 8 steps: %v\n%s", err, log)
	}
	js, err := run(t, "eval", "--model", out, "--input", corpus, "--split", "heldout", "--holdout-every", "5", "--json")
	if err != nil {
		t.Fatalf("eval: %v", err)
	}
	for _, key := range []string{`"loss":`, `"perplexity":`, `"bits_per_byte":`, `"tokens":`} {
		if !strings.Contains(js, key) {
			t.Errorf("eval --json lacks %s: %s", key, js)
		}
	}
	gen := func() string {
		s, err := run(t, "generate", "--model", out, "--prompt", "the ", "--tokens", "20", "--seed", "3")
		if err != nil {
			t.Fatalf("generate: %v", err)
		}
		return s
	}
	a, b := gen(), gen()
	if a != b || !strings.HasPrefix(a, "the ") {
		t.Errorf("generate: %q then %q; want the same text starting with the prompt", a, b)
	}
}

// TestCLIBadInput: bad corpora and checkpoints are errors naming the file.
func TestCLIBadInput(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.txt")
	os.WriteFile(empty, nil, 0o644)
	bin := filepath.Join(dir, "x.bin")
	os.WriteFile(bin, []byte{0, 1, 2, 3}, 0o644)
	bad := filepath.Join(dir, "badck")
	os.MkdirAll(bad, 0o755)
	os.WriteFile(filepath.Join(bad, "config.json"), []byte(`{"model_type":"gpt2","vocab_size":257,"n_positions":8,"n_embd":8,"n_layer":1,"n_head":2}`), 0o644)
	os.WriteFile(filepath.Join(bad, "model.safetensors"), []byte("\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":"), 0o644)
	out := filepath.Join(dir, "out")
	for name, c := range map[string]struct {
		args []string
		want string
	}{
		"missing corpus": {[]string{"train", "--input", filepath.Join(dir, "nope"), "--out", out}, "nope"},
		"empty corpus":   {[]string{"train", "--input", empty, "--out", out}, "empty.txt"},
		"binary corpus":  {[]string{"train", "--input", bin, "--out", out}, "x.bin"},
		"bad init":       {[]string{"train", "--input", corpusDir(t), "--out", out, "--init", bad}, "model.safetensors"},
		"bad model":      {[]string{"generate", "--model", bad}, "model.safetensors"},
		"missing model":  {[]string{"generate", "--model", filepath.Join(dir, "none")}, "config.json"},
		"bad preset":     {[]string{"train", "--input", empty, "--out", out, "--config", "huge"}, "huge"},
		"bad kernel":     {[]string{"train", "--input", empty, "--out", out, "--kernel", "tpu"}, "tpu"},
	} {
		t.Run(name, func(t *testing.T) {
			log, err := run(t, c.args...)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one naming %q\n%s", err, c.want, log)
			}
			t.Log(err)
		})
	}
	if _, err := os.Stat(out); err == nil {
		t.Error("a failed run left a checkpoint directory behind")
	}
}

func TestBenchKernelsJSON(t *testing.T) {
	out, err := run(t, "bench", "kernels", "--sizes", "64", "--threads", "1", "--configs", "", "--min-time", "1ms", "--json")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, `"kind":"sgemm"`) || !strings.Contains(out, `"n":64`) || !strings.Contains(out, `"gflops"`) {
		t.Errorf("bench output: %s", out)
	}
}

// --model names the starting checkpoint in train, job submit, eval and
// generate; train's --init and job submit's --base still work.
func TestModelFlagEverywhere(t *testing.T) {
	for _, path := range [][]string{{"train"}, {"job", "submit"}, {"eval"}, {"generate"}} {
		cmd := findCommand(newApp().Commands, path)
		if !hasFlag(cmd.Flags, "model") {
			t.Errorf("%v has no --model", path)
		}
	}
	if !hasFlag(findCommand(newApp().Commands, []string{"train"}).Flags, "init") ||
		!hasFlag(findCommand(newApp().Commands, []string{"job", "submit"}).Flags, "base") {
		t.Error("the old names --init (train) and --base (job submit) are gone")
	}
}

// findCommand is the command at path in cmds, or nil.
func findCommand(cmds []*cli.Command, path []string) *cli.Command {
	for _, c := range cmds {
		if c.Name == path[0] {
			if len(path) == 1 {
				return c
			}
			return findCommand(c.Subcommands, path[1:])
		}
	}
	return nil
}
