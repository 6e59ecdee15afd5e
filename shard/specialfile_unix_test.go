//go:build unix

package shard_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/braidml/braid/internal/safefile"
	"github.com/braidml/braid/shard"
)

// A dataset directory whose files were swapped for a symbolic link to a
// secret, /dev/zero or a FIFO is refused file by file, naming the file and
// why, without following the link, reading the device or blocking on the
// FIFO; no error shows the secret.
func TestVerifyRefusesSpecialFiles(t *testing.T) {
	res := smallDataset(t)
	shards := res.Manifest.Shards
	path := func(i int) string { return shard.ShardPath(res.Dir, shards[i].Hash) }
	secret := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(secret, []byte("the-secret-bytes"), 0o600)
	os.Remove(path(0))
	os.Symlink(secret, path(0))
	os.Remove(path(1))
	os.Symlink("/dev/zero", path(1))
	os.Remove(path(2))
	if err := syscall.Mkfifo(path(2), 0o600); err != nil {
		t.Fatal(err)
	}
	damage := map[int]error{0: safefile.ErrSymlink, 1: safefile.ErrSymlink, 2: safefile.ErrNotRegular}
	r, err := shard.Verify(res.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Problems) != len(damage) {
		t.Errorf("%d problems, want %d: %v", len(r.Problems), len(damage), r.Problems)
	}
	for _, p := range r.Problems {
		i := indexOf(shards, p.Hash)
		if want := damage[i]; !errors.Is(p.Err, want) || !strings.Contains(p.Err.Error(), path(i)) || strings.Contains(p.Err.Error(), "secret-bytes") {
			t.Errorf("shard %d: %v, want %v naming %s", i, p.Err, want, path(i))
		}
	}
	// The manifest too: a link in its place is not followed.
	m := filepath.Join(res.Dir, shard.ManifestName)
	os.Remove(m)
	os.Symlink(secret, m)
	if _, err := shard.Verify(res.Dir); !errors.Is(err, safefile.ErrSymlink) {
		t.Errorf("manifest swapped for a link: %v", err)
	}
}
