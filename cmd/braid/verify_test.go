package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/braidml/braid/model"
	"github.com/braidml/braid/provenance"
	"github.com/braidml/braid/transport/pki"
)

// copyDir copies the regular files of dir into a new directory.
func copyDir(t *testing.T, dir string) string {
	t.Helper()
	out := t.TempDir()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		copyFile(t, filepath.Join(dir, e.Name()), filepath.Join(out, e.Name()))
	}
	return out
}

// verifyFails runs braid verify and fails the test unless it exits 1 with
// each of words on a MISMATCH line.
func verifyFails(t *testing.T, dir string, args []string, words ...string) {
	t.Helper()
	out, err := run(t, append([]string{"verify", dir}, args...)...)
	if err == nil || exitCode(err) != exitFailed {
		t.Fatalf("verify %s %q: %v (exit %d), want exit %d\n%s", dir, args, err, exitCode(err), exitFailed, out)
	}
	for _, w := range words {
		if !strings.Contains(out, "MISMATCH  ") || !strings.Contains(out, w) {
			t.Errorf("verify %s: output does not name %q:\n%s", dir, w, out)
		}
	}
}

// `braid job export` writes a signed record and a model card beside the
// weights; `braid verify` accepts them against the cluster's CA and names
// tampered weights, a tampered record and a foreign CA. A LoRA job's
// --merged export, merged by the node, verifies too.
func TestExportedModelVerifies(t *testing.T) {
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
	n := startTLSNode(t, pkiDir, "verify-test-token")
	t.Setenv("BRAID_TOKEN", "verify-test-token")
	api := "http://" + n.APIAddr()
	pushDocs(t, api)
	base := byteBase(t, 16)
	id := strings.TrimSpace(mustRunOut(t, "job", "submit", "--api", api, "--model", base, "--dataset", "docs", "--steps", "2",
		"--global-batch", "2", "--micro-batch", "1", "--replicas", "1", "--eval-every", "1"))
	waitJob(t, api, id)
	exp := filepath.Join(t.TempDir(), "exp")
	if out := mustRunOut(t, "job", "export", id, "--out", exp, "--api", api); !strings.Contains(out, "signed by node n1") {
		t.Errorf("export says %q, not that n1 signed the record", out)
	}
	card, err := os.ReadFile(filepath.Join(exp, provenance.CardFile))
	if err != nil || !strings.Contains(string(card), "library_name: braid") || !strings.Contains(string(card), "**docs**") {
		t.Errorf("model card: %v\n%s", err, card)
	}
	if out := mustRunOut(t, "verify", exp, "--ca", filepath.Join(pkiDir, pki.CAFile)); !strings.Contains(out, "verifies") ||
		!strings.Contains(out, "signed by node n1") || !strings.Contains(out, "ok        model.safetensors") {
		t.Errorf("verify of the export:\n%s", out)
	}

	// Tampered weights: one byte of the tensor data.
	weights := copyDir(t, exp)
	b, err := os.ReadFile(filepath.Join(weights, "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-1] ^= 1
	if err := os.WriteFile(filepath.Join(weights, "model.safetensors"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	verifyFails(t, weights, []string{"--ca", pkiDir}, "model.safetensors: sha256", "does not match the recorded")

	// A tampered record: the recorded number of steps.
	record := copyDir(t, exp)
	rb, err := os.ReadFile(filepath.Join(record, provenance.RecordFile))
	if err != nil {
		t.Fatal(err)
	}
	forged := strings.Replace(string(rb), `"steps": 2,`, `"steps": 20,`, 1)
	if forged == string(rb) {
		t.Fatalf("the record has no %q to change:\n%s", `"steps": 2,`, rb)
	}
	if err := os.WriteFile(filepath.Join(record, provenance.RecordFile), []byte(forged), 0o644); err != nil {
		t.Fatal(err)
	}
	verifyFails(t, record, []string{"--ca", pkiDir}, "signature invalid")

	// Another cluster's CA.
	other := filepath.Join(t.TempDir(), "other")
	if err := pki.InitCA(other); err != nil {
		t.Fatal(err)
	}
	verifyFails(t, exp, []string{"--ca", other}, "unknown CA")

	// A LoRA job's merged model: merged on the node, the record names it.
	lora := strings.TrimSpace(mustRunOut(t, "job", "submit", "--api", api, "--model", base, "--dataset", "docs", "--steps", "2",
		"--global-batch", "2", "--micro-batch", "1", "--replicas", "1", "--lora-rank", "2"))
	waitJob(t, api, lora)
	adapter, merged := filepath.Join(t.TempDir(), "adapter"), filepath.Join(t.TempDir(), "merged")
	mustRunOut(t, "job", "export", lora, "--out", adapter, "--merged", merged, "--api", api)
	for _, dir := range []string{adapter, merged} {
		mustRunOut(t, "verify", dir, "--ca", pkiDir)
	}
	if _, err := model.LoadCheckpoint(merged); err != nil {
		t.Errorf("the merged export does not load: %v", err)
	}
}

// `braid train` writes the record of its run: unsigned by default (verify
// needs --allow-unsigned), signed with --sign-key and --sign-cert.
func TestTrainWritesProvenance(t *testing.T) {
	corpus := corpusDir(t)
	args := []string{"train", "--input", corpus, "--steps", "2", "--batch", "2", "--seq-len", "32", "--eval-every", "1",
		"--eval-batches", "1", "--holdout-every", "5", "--config", "tiny"}
	out := filepath.Join(t.TempDir(), "ck")
	mustRunOut(t, append(args, "--out", out)...)
	verifyFails(t, out, nil, "unsigned", "--allow-unsigned")
	if log := mustRunOut(t, "verify", out, "--allow-unsigned"); !strings.Contains(log, "warning   unsigned") || !strings.Contains(log, "verifies") {
		t.Errorf("verify --allow-unsigned:\n%s", log)
	}
	rec, err := provenance.Decode(must(os.ReadFile(filepath.Join(out, provenance.RecordFile))))
	if err != nil {
		t.Fatal(err)
	}
	if d := rec.Datasets[0]; d.Documents != 60 || len(d.Files) != 60 || d.Tokens == 0 || rec.Steps != 2 || len(rec.Heldout) != 3 {
		t.Errorf("record: %d documents, %d files, %d tokens, %d steps, held-out %+v; want 60, 60, >0, 2, 3 figures", d.Documents, len(d.Files), d.Tokens,
			rec.Steps, rec.Heldout)
	}

	pkiDir := filepath.Join(t.TempDir(), "pki")
	if err := pki.InitCA(pkiDir); err != nil {
		t.Fatal(err)
	}
	if err := pki.Issue(pkiDir, "trainer", nil, time.Hour); err != nil {
		t.Fatal(err)
	}
	signed := filepath.Join(t.TempDir(), "signed")
	mustRunOut(t, append(args, "--out", signed, "--sign-key", filepath.Join(pkiDir, pki.KeyFile("trainer")),
		"--sign-cert", filepath.Join(pkiDir, pki.CertFile("trainer")))...)
	if log := mustRunOut(t, "verify", signed, "--ca", pkiDir); !strings.Contains(log, "signed by node trainer") {
		t.Errorf("verify of a signed run:\n%s", log)
	}
	if _, err := run(t, append(args, "--out", filepath.Join(t.TempDir(), "x"), "--sign-key", filepath.Join(pkiDir, pki.KeyFile("trainer")))...); err == nil ||
		!strings.Contains(err.Error(), "go together") {
		t.Errorf("--sign-key without --sign-cert: %v", err)
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

// `braid verify` names every entry the record does not cover, an edited
// model card, and accepts a file named with --allow-unrecorded with a
// warning.
func TestVerifyRefusesUnrecordedFiles(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "model.safetensors"), []byte("weights"), 0o644); err != nil {
		t.Fatal(err)
	}
	files, err := provenance.HashFiles(dir, []string{"model.safetensors"})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := (&provenance.Record{Format: provenance.FormatVersion, Kind: provenance.KindTrain, Files: files}).Encode()
	if err != nil {
		t.Fatal(err)
	}
	if err := provenance.WriteDir(dir, rec, nil); err != nil {
		t.Fatal(err)
	}
	mustRunOut(t, "verify", dir, "--allow-unsigned")
	if err := os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), []byte(`{"auto_map": {}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	verifyFails(t, dir, []string{"--allow-unsigned"}, "tokenizer_config.json: a file the record does not name")
	if out := mustRunOut(t, "verify", dir, "--allow-unsigned", "--allow-unrecorded", "tokenizer_config.json"); !strings.Contains(out, "warning   tokenizer_config.json: not covered") {
		t.Errorf("--allow-unrecorded:\n%s", out)
	}
	if err := os.WriteFile(filepath.Join(dir, provenance.CardFile), []byte("# a better story\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	verifyFails(t, dir, []string{"--allow-unsigned", "--allow-unrecorded", "tokenizer_config.json"}, "README.md: not the model card")
}
