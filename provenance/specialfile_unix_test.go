//go:build unix

package provenance

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/braidml/braid/internal/safefile"
)

// verifySoon runs Verify, failing the test if it does not return within
// a bound far above what a check of a small directory takes (a FIFO or
// /dev/zero read would never return).
func verifySoon(t *testing.T, dir string, opt Options) (*Report, error) {
	t.Helper()
	type result struct {
		rep *Report
		err error
	}
	done := make(chan result, 1)
	go func() {
		rep, err := Verify(dir, opt)
		done <- result{rep, err}
	}()
	select {
	case r := <-done:
		return r.rep, r.err
	case <-time.After(20 * time.Second):
		t.Fatal("Verify did not return: it blocked on a special file or read without end")
		return nil, nil
	}
}

// TestVerifyRefusesSpecialFiles: a FIFO as provenance.json or as a
// recorded file, and a recorded file swapped for a link to /dev/zero, are
// refused at once, naming the file, instead of hanging verify.
func TestVerifyRefusesSpecialFiles(t *testing.T) {
	t.Run("FIFO record", func(t *testing.T) {
		dir, _ := exported(t, "")
		if err := syscall.Mkfifo(filepath.Join(dir, RecordFile), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := verifySoon(t, dir, Options{AllowUnsigned: true}); !errors.Is(err, safefile.ErrNotRegular) {
			t.Fatalf("a FIFO provenance.json: %v, want ErrNotRegular", err)
		}
	})
	t.Run("linked record", func(t *testing.T) {
		dir, rec := exported(t, "")
		other := filepath.Join(t.TempDir(), "record.json")
		os.WriteFile(other, rec, 0o644)
		if err := os.Symlink(other, filepath.Join(dir, RecordFile)); err != nil {
			t.Fatal(err)
		}
		if _, err := verifySoon(t, dir, Options{AllowUnsigned: true}); !errors.Is(err, safefile.ErrSymlink) {
			t.Fatalf("provenance.json a link: %v, want ErrSymlink", err)
		}
	})
	for name, swap := range map[string]func(path string) error{
		"link to /dev/zero": func(path string) error { return os.Symlink("/dev/zero", path) },
		"FIFO":              func(path string) error { return syscall.Mkfifo(path, 0o600) },
	} {
		t.Run(name, func(t *testing.T) {
			dir, ca, _ := signedDir(t)
			path := filepath.Join(dir, "model.safetensors")
			os.Remove(path)
			if err := swap(path); err != nil {
				t.Fatal(err)
			}
			rep, err := verifySoon(t, dir, Options{Roots: roots(t, ca)})
			if err != nil {
				t.Fatal(err)
			}
			wantProblem(t, rep, "model.safetensors")
		})
	}
}

// TestVerifyRefusesALargerFile: a recorded file larger than its recorded
// size is a mismatch found by its size.
func TestVerifyRefusesALargerFile(t *testing.T) {
	dir, ca, _ := signedDir(t)
	if err := os.WriteFile(filepath.Join(dir, "model.safetensors"), []byte(strings.Repeat("w", 1<<20)), 0o644); err != nil {
		t.Fatal(err)
	}
	wantProblem(t, verify(t, dir, Options{Roots: roots(t, ca)}), "model.safetensors", "larger than the 13 bytes recorded")
}
