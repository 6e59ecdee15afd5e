//go:build unix

package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/braidml/braid/model"
	"github.com/braidml/braid/shard"
)

// The CLI reads what it pushes, and refuses what is not a regular file
// before it sends anything (the API here is a port nothing listens on:
// an error about reaching it would mean the CLI got that far): a shard
// swapped for a FIFO or a link to /dev/zero, a base model whose weights are
// /dev/zero. Each error names the file and why.
func TestPushRefusesSpecialFiles(t *testing.T) {
	in, base := corpusDir(t), t.TempDir()
	ds := filepath.Join(base, "ds")
	if out, err := run(t, "data", "prepare", "--input", in, "--seq-len", "32", "--shard-mib", "1", "--out", ds); err != nil {
		t.Fatalf("prepare: %v\n%s", err, out)
	}
	m, err := shard.ReadManifest(ds)
	if err != nil {
		t.Fatal(err)
	}
	first := shard.ShardPath(ds, m.Shards[0].Hash)
	os.Remove(first)
	if err := syscall.Mkfifo(first, 0o600); err != nil {
		t.Fatal(err)
	}
	const api = "http://127.0.0.1:1"
	if out, err := run(t, "data", "push", "--api", api, ds); err == nil || !strings.Contains(err.Error(), first+" is a FIFO") {
		t.Errorf("push of a dataset with a FIFO for a shard: %v\n%s", err, out)
	}
	os.Remove(first)
	os.Symlink("/dev/zero", first)
	if out, err := run(t, "data", "register", "--local", "--api", api, ds); err == nil || !strings.Contains(err.Error(), "symbolic link, not followed: "+first) {
		t.Errorf("register of a dataset with a link for a shard: %v\n%s", err, out)
	}

	c := model.Config{Context: 16, Dim: 8, Layers: 1, Heads: 2, Vocab: model.ByteTokenizer{}.Vocab()}
	mm, _ := model.NewInference(c, 1, 16)
	dir := filepath.Join(base, "model")
	if err := model.SaveCheckpoint(dir, c, model.ByteTokenizer{}, mm.Params); err != nil {
		t.Fatal(err)
	}
	w := filepath.Join(dir, model.WeightsFile)
	os.Remove(w)
	os.Symlink("/dev/zero", w)
	out, err := run(t, "job", "submit", "--api", api, "--base", dir, "--dataset", "d", "--steps", "1", "--global-batch", "1")
	if err == nil || !strings.Contains(err.Error(), w+" is a character device") {
		t.Errorf("submit with /dev/zero as the weights: %v\n%s", err, out)
	}
}
