package main

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestTrainMetrics: --metrics writes one JSON line per step, with the
// held-out loss on the lines of the steps that evaluated it and absent on
// the others; a new run refuses to replace the file without --overwrite;
// --metrics - puts the lines on stdout alone.
func TestTrainMetrics(t *testing.T) {
	in, dir := corpusDir(t), t.TempDir()
	path := filepath.Join(dir, "m.jsonl")
	args := []string{"train", "--input", in, "--out", filepath.Join(dir, "ck"), "--steps", "4", "--batch", "2", "--seq-len", "16",
		"--eval-every", "2", "--eval-batches", "1", "--holdout-every", "4", "--threads", "1", "--metrics", path}
	if log, err := run(t, args...); err != nil {
		t.Fatalf("train: %v\n%s", err, log)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var steps []int
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var l map[string]any
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		step := int(l["step"].(float64))
		steps = append(steps, step)
		_, held := l["heldout_loss"]
		if wantHeld := step%2 == 0; held != wantHeld {
			t.Errorf("step %d: heldout_loss present %v, want %v: %s", step, held, wantHeld, sc.Text())
		}
		_, loss := l["loss"]
		_, lr := l["lr"]
		_, tps := l["tokens_per_sec"]
		_, el := l["elapsed_s"]
		if (step > 0) != (loss && lr && tps) || !el {
			t.Errorf("step %d: loss %v lr %v tokens_per_sec %v elapsed_s %v: %s", step, loss, lr, tps, el, sc.Text())
		}
	}
	if want := []int{0, 1, 2, 3, 4}; !slices.Equal(steps, want) {
		t.Errorf("lines for steps %v, want %v", steps, want)
	}

	args[4] = filepath.Join(dir, "ck2")
	if _, err := run(t, args...); err == nil || !strings.Contains(err.Error(), "--overwrite") {
		t.Errorf("a second run into the same --metrics: %v, want a refusal naming --overwrite", err)
	}

	args[4], args[len(args)-1] = filepath.Join(dir, "ck3"), "-"
	app := newApp()
	var stdout, stderr strings.Builder
	app.Writer, app.ErrWriter = &stdout, &stderr
	if err := runApp(t.Context(), app, append([]string{"braid"}, args...)); err != nil {
		t.Fatalf("--metrics -: %v\n%s", err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	for _, l := range lines {
		if !json.Valid([]byte(l)) {
			t.Errorf("--metrics -: stdout has a line that is not JSON: %q", l)
		}
	}
	if len(lines) != 5 || !strings.Contains(stderr.String(), "saved ") {
		t.Errorf("--metrics -: %d lines on stdout, want 5; stderr:\n%s", len(lines), stderr.String())
	}
}
