package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/braidml/braid/shard"
)

// Commands that write a directory refuse one that is not empty unless
// given --overwrite, naming the directory and the flag; train may write
// into the directory it resumes.
func TestOutputDirectories(t *testing.T) {
	corpus, dir := corpusDir(t), t.TempDir()
	ck := filepath.Join(dir, "ck")
	tr := []string{"train", "--input", corpus, "--batch", "1", "--seq-len", "16", "--eval-every", "0", "--steps", "1"}
	if log, err := run(t, append(tr, "--out", ck)...); err != nil {
		t.Fatalf("train: %v\n%s", err, log)
	}
	_, err := run(t, append(tr, "--out", ck)...)
	if err == nil || !strings.Contains(err.Error(), "--out "+ck+" is not empty") || !strings.Contains(err.Error(), "--overwrite") {
		t.Errorf("train into a trained checkpoint: %v", err)
	}
	if log, err := run(t, append(tr, "--out", ck, "--overwrite")...); err != nil {
		t.Errorf("train --overwrite: %v\n%s", err, log)
	}
	if log, err := run(t, "train", "--input", corpus, "--batch", "1", "--seq-len", "16", "--eval-every", "0", "--steps", "2",
		"--resume", ck, "--out", ck); err != nil || !strings.Contains(log, "resuming") {
		t.Errorf("train --resume DIR --out DIR: %v\n%s", err, log)
	}
	if _, err := run(t, append(tr, "--out", filepath.Join(corpus, "doca0.txt"))...); err == nil || !strings.Contains(err.Error(), "is a file") {
		t.Errorf("train --out FILE: %v", err)
	}

	// data prepare replaces a dataset whole, and nothing else.
	ds := filepath.Join(dir, "ds")
	prep := []string{"data", "prepare", "--input", corpus, "--seq-len", "32", "--out", ds}
	if log, err := run(t, append(prep, "--name", "first")...); err != nil {
		t.Fatalf("prepare: %v\n%s", err, log)
	}
	if _, err := run(t, prep...); err == nil || !strings.Contains(err.Error(), "--out "+ds+" is not empty") || !strings.Contains(err.Error(), "--overwrite") {
		t.Errorf("prepare into a dataset: %v", err)
	}
	log, err := run(t, append(prep, "--name", "second", "--overwrite")...)
	if m, merr := shard.ReadManifest(ds); err != nil || merr != nil || m.Name != "second" || !strings.Contains(log, "wrote "+ds+":") {
		t.Errorf("prepare --overwrite: %v, %v, %+v\n%s", err, merr, m, log)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 2 {
		t.Errorf("%s holds %d entries after the swap, want ck and ds", dir, len(entries))
	}
	if _, err := run(t, "data", "prepare", "--input", corpus, "--out", corpus, "--overwrite"); err == nil || !strings.Contains(err.Error(), "holds no manifest.json") {
		t.Errorf("prepare --overwrite over a directory that is not a dataset: %v", err)
	}
}
