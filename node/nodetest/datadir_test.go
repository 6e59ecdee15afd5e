package nodetest

import (
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/braidml/braid/coordinator"
	"github.com/braidml/braid/node"
)

// A node started on a data directory that other software created wide
// (systemd's StateDirectory, a Docker volume: 0755, files 0644) makes it
// private: after it stored a dataset and ran a job with checkpoints, nothing
// it wrote has a group or other permission bit. A link it finds there is not
// followed (issue 12: "a data dir created 0755").
func TestDataDirPrivate(t *testing.T) {
	c := NewCluster(t, 1)
	c.WaitLeader()
	dir := c.DataDir("n1")
	c.Kill("n1")

	// Widen everything the first start wrote, and add what an older build
	// or an operator might have left.
	outside := filepath.Join(t.TempDir(), "not-the-node's")
	if err := os.WriteFile(outside, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "jobs", "old"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "jobs", "old", "model.safetensors"), []byte("w"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(dir, "jobs", "link")); err != nil {
		t.Fatal(err)
	}
	widened := 0
	walk(t, dir, func(path string, d fs.DirEntry, mode fs.FileMode) {
		wide := fs.FileMode(0o644)
		if d.IsDir() {
			wide = 0o755
		}
		if err := os.Chmod(path, mode|wide); err != nil {
			t.Fatal(err)
		}
		widened++
	})
	if widened < 6 {
		t.Fatalf("widened %d entries: the first start wrote less than expected", widened)
	}
	if err := os.Chmod(outside, 0o644); err != nil { // whatever the umask
		t.Fatal(err)
	}

	c.Start("n1")
	c.WaitEpoch(func(e coordinator.Epoch) bool { return len(e.Members) == 1 })
	// Something that writes: a dataset (objects), a job (its working
	// directory, links or copies of objects, checkpoints).
	id := submit(t, c, "n1", node.JobRequest{Steps: 4, GlobalBatch: 4, MicroBatch: 4, LR: 1e-3, CheckpointEvery: 2})
	if js := waitJob(c, "n1", id, final); js.State != coordinator.JobCompleted || len(js.Checkpoints) == 0 {
		t.Fatalf("job %s (%s), %d checkpoints", js.State, js.Error, len(js.Checkpoints))
	}

	seen := 0
	walk(t, dir, func(path string, d fs.DirEntry, mode fs.FileMode) {
		seen++
		if mode&0o077 != 0 {
			t.Errorf("%s: mode %v, want no group or other permission", path, mode)
		}
	})
	if seen < widened+10 {
		t.Errorf("walked %d entries after the job, %d before it: the job wrote less than expected", seen, widened)
	}
	if st, err := os.Stat(outside); err != nil || st.Mode().Perm() != 0o644 {
		t.Errorf("the file a link in the data directory points to: %v, %v; want it untouched (0644)", st.Mode(), err)
	}
}

// walk calls fn for every entry below root (root included) but links, with
// its permission bits.
func walk(t *testing.T, root string, fn func(path string, d fs.DirEntry, mode fs.FileMode)) {
	t.Helper()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type()&fs.ModeSymlink != 0 {
			return nil
		}
		st, err := d.Info()
		if err != nil {
			return err
		}
		fn(path, d, st.Mode().Perm())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
