package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/braidml/braid/node"
)

// TestHeldoutNotEvaluated: a held-out loss that was not evaluated is
// "not evaluated" in text and absent from JSON, never 0.
func TestHeldoutNotEvaluated(t *testing.T) {
	for _, tc := range []struct {
		js   node.JobStatus
		want string
	}{
		{node.JobStatus{}, "held-out loss not evaluated"},
		{node.JobStatus{HeldoutLoss: 2.5, HeldoutStep: 10}, "held-out loss 2.5000 (step 10; base not evaluated)"},
		{node.JobStatus{HeldoutLoss: 2.5, HeldoutStep: 10, BaseHeldoutLoss: 3}, "held-out loss 2.5000 (step 10; base 3.0000)"},
	} {
		if got := heldoutText(&tc.js); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.js, got, tc.want)
		}
	}
	b, err := json.Marshal(node.JobStatus{ID: "j", Step: 3})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "heldout") {
		t.Errorf("a job without evaluation serves %s", b)
	}

	// braid eval of an empty held-out split: no loss.
	in, dir := corpusDir(t), t.TempDir()
	big := filepath.Join(dir, "one.txt")
	if err := os.WriteFile(big, []byte(strings.Repeat("all in one document. ", 100)), 0o644); err != nil {
		t.Fatal(err)
	}
	ck := filepath.Join(dir, "ck")
	if log, err := run(t, "train", "--input", in, "--out", ck, "--steps", "1", "--batch", "1", "--seq-len", "16", "--threads", "1"); err != nil {
		t.Fatalf("train: %v\n%s", err, log)
	}
	// The one document of one.txt is in the train split at 1 in 1000.
	out, err := run(t, "eval", "--model", ck, "--input", big, "--split", "heldout", "--holdout-every", "1000", "--json", "--threads", "1")
	if err != nil {
		t.Fatal(err)
	}
	var r map[string]any
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("%q: %v", out, err)
	}
	if _, ok := r["loss"]; ok || r["not_evaluated"] == nil {
		t.Errorf("eval of an empty split: %s, want no loss and a reason", out)
	}
	out, err = run(t, "eval", "--model", ck, "--input", big, "--split", "heldout", "--holdout-every", "1000", "--threads", "1")
	if err != nil || !strings.Contains(out, "not evaluated: the heldout split of 1 document is empty") {
		t.Errorf("eval of an empty split: %v\n%s", err, out)
	}
}
