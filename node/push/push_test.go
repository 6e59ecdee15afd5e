//go:build unix

package push_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/braidml/braid/internal/safefile"
	"github.com/braidml/braid/model"
	"github.com/braidml/braid/node/push"
	"github.com/braidml/braid/shard"
)

// dataset prepares a small dataset of several shards.
func dataset(t *testing.T) *shard.Result {
	t.Helper()
	in := filepath.Join(t.TempDir(), "in")
	os.MkdirAll(in, 0o755)
	for i := range 30 {
		os.WriteFile(filepath.Join(in, fmt.Sprintf("d%02d.txt", i)), []byte(strings.Repeat(fmt.Sprintf("document %d. ", i), 200)), 0o644)
	}
	cfg := shard.DefaultConfig()
	cfg.Inputs, cfg.Out, cfg.Tokenizer = []string{in}, filepath.Join(t.TempDir(), "ds"), model.ByteTokenizer{}
	cfg.SeqLen, cfg.ShardBytes, cfg.Holdout = 32, 4<<10, 0.2
	res, err := shard.Prepare(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Manifest.Shards) < 3 {
		t.Fatalf("%d shards; the tests want 3", len(res.Manifest.Shards))
	}
	return res
}

// A push sends every shard and the manifest, each once, byte for byte; a
// second push sends nothing (the node has it all), which is how a push
// that failed half-way resumes.
func TestDatasetPushesEveryFileOnce(t *testing.T) {
	res := dataset(t)
	mem := push.NewMemory()
	r, err := push.Dataset(context.Background(), mem, res.Dir, true)
	if err != nil {
		t.Fatal(err)
	}
	if r.Manifest == "" || r.Sent != r.Objects || r.Objects != len(res.Manifest.ShardRefs())+1 || mem.Len() != r.Objects {
		t.Fatalf("result %+v, target holds %d", r, mem.Len())
	}
	mb, _ := os.ReadFile(filepath.Join(res.Dir, shard.ManifestName))
	if b, private, ok := mem.Object(r.Manifest); !ok || !bytes.Equal(b, mb) || !private {
		t.Fatalf("the manifest object: %d bytes, private %v, held %v", len(b), private, ok)
	}
	for _, e := range res.Manifest.Shards {
		want, _ := os.ReadFile(shard.ShardPath(res.Dir, e.Hash))
		if b, _, ok := mem.Object(e.Hash); !ok || !bytes.Equal(b, want) {
			t.Fatalf("shard %.12s not sent intact", e.Hash)
		}
	}
	again, err := push.Dataset(context.Background(), mem, res.Dir, false)
	if err != nil || again.Sent != 0 || again.Manifest != r.Manifest {
		t.Fatalf("second push: %+v, %v; want nothing sent", again, err)
	}
}

// hookTarget runs before on the first Put, then passes everything on.
type hookTarget struct {
	push.Target
	before func()
	done   bool
}

func (h *hookTarget) Put(ctx context.Context, hash string, size int64, r io.Reader, private bool) error {
	if !h.done {
		h.done = true
		h.before()
	}
	return h.Target.Put(ctx, hash, size, r, private)
}

// Every way of making a dataset directory hand the client something other
// than the dataset is refused, naming the file: a shard swapped for a link
// to a secret after the push began (not followed), a link to /dev/zero, a
// FIFO (refused without blocking), another file's bytes under a shard's
// name. No byte of the secret reaches the node.
func TestDatasetRefusesSwappedFiles(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(secret, bytes.Repeat([]byte("SECRET"), 1000), 0o600)
	for _, tc := range []struct {
		name string
		swap func(path, other string) // path: a shard; other: another shard of the dataset
		want error
	}{
		{"a link to a secret, swapped in mid-push", func(p, _ string) { os.Remove(p); os.Symlink(secret, p) }, safefile.ErrSymlink},
		{"a link to /dev/zero", func(p, _ string) { os.Remove(p); os.Symlink("/dev/zero", p) }, safefile.ErrSymlink},
		{"a FIFO", func(p, _ string) { os.Remove(p); syscall.Mkfifo(p, 0o600) }, safefile.ErrNotRegular},
		{"a directory", func(p, _ string) { os.Remove(p); os.Mkdir(p, 0o700) }, safefile.ErrNotRegular},
		{"another shard's bytes", func(p, other string) { b, _ := os.ReadFile(other); os.Remove(p); os.WriteFile(p, b, 0o600) }, push.ErrChanged},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := dataset(t)
			refs := res.Manifest.ShardRefs()
			last := shard.ShardPath(res.Dir, refs[len(refs)-1].Hash)
			mem := push.NewMemory()
			// The swap happens while the push runs, after it read the
			// manifest and sent the first shard.
			target := &hookTarget{Target: mem, before: func() { tc.swap(last, shard.ShardPath(res.Dir, refs[0].Hash)) }}
			_, err := push.Dataset(context.Background(), target, res.Dir, false)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), last) {
				t.Fatalf("push: %v, want %v naming %s", err, tc.want, last)
			}
			if strings.Contains(err.Error(), "SECRET") {
				t.Fatalf("the error shows the secret: %v", err)
			}
			for _, e := range refs[:len(refs)-1] {
				if b, _, ok := mem.Object(e.Hash); ok && bytes.Contains(b, []byte("SECRET")) {
					t.Fatal("the secret reached the node")
				}
			}
			if _, _, ok := mem.Object(refs[len(refs)-1].Hash); ok {
				t.Fatal("the swapped shard was sent")
			}
		})
	}
}

// A model directory may hold links (a download cache's), but what they
// reach must be a regular file: /dev/zero as the weights and a FIFO as the
// config are refused before a byte is read or sent.
func TestModelRefusesSpecialFiles(t *testing.T) {
	c := model.Config{Context: 16, Dim: 8, Layers: 1, Heads: 2, Vocab: model.ByteTokenizer{}.Vocab()}
	m, _ := model.NewInference(c, 1, 16)
	good := t.TempDir()
	if err := model.SaveCheckpoint(good, c, model.ByteTokenizer{}, m.Params); err != nil {
		t.Fatal(err)
	}
	mem := push.NewMemory()
	ref, _, err := push.Model(context.Background(), mem, good)
	if err != nil || ref.Config == "" || ref.Weights == "" || mem.Len() != 2 {
		t.Fatalf("a good model: %+v, %v", ref, err)
	}
	zero := t.TempDir()
	os.Symlink(filepath.Join(good, model.ConfigFile), filepath.Join(zero, model.ConfigFile))
	os.Symlink("/dev/zero", filepath.Join(zero, model.WeightsFile))
	fifo := t.TempDir()
	syscall.Mkfifo(filepath.Join(fifo, model.ConfigFile), 0o600)
	for dir, want := range map[string]string{zero: model.WeightsFile, fifo: model.ConfigFile} {
		mem := push.NewMemory()
		if _, _, err := push.Model(context.Background(), mem, dir); !errors.Is(err, safefile.ErrNotRegular) || !strings.Contains(err.Error(), want) {
			t.Errorf("push.Model(%s): %v, want ErrNotRegular naming %s", dir, err, want)
		}
		if mem.Len() != 0 {
			t.Errorf("push.Model(%s) sent %d objects", dir, mem.Len())
		}
	}
}
