package safefile_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"github.com/braidml/braid/internal/safefile"
)

func TestOpenReadsARegularFileOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	os.WriteFile(path, []byte("hello"), 0o600)
	f, size, err := safefile.Open(path, 5)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// The name now points elsewhere; the descriptor still reads what was
	// checked.
	os.Remove(path)
	os.WriteFile(path, []byte("something else entirely"), 0o600)
	b, err := safefile.ReadAll(f, size, size)
	if err != nil || string(b) != "hello" || size != 5 {
		t.Fatalf("read %q (size %d), %v", b, size, err)
	}
}

// Each thing that is not a small regular file is refused before a byte is
// read, with an error naming the path and why; none of them blocks.
func TestOpenRefuses(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("FIFOs, devices and O_NOFOLLOW are Unix")
	}
	dir := t.TempDir()
	big := filepath.Join(dir, "big")
	os.WriteFile(big, make([]byte, 100), 0o600)
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(dir, "secret")
	os.WriteFile(secret, []byte("s3cret"), 0o600)
	link := filepath.Join(dir, "link")
	if err := os.Symlink(secret, link); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, path string
		noFollow   bool
		want       error
		says       string
	}{
		{"device", "/dev/zero", false, safefile.ErrNotRegular, "character device"},
		{"FIFO without a writer", fifo, false, safefile.ErrNotRegular, "FIFO"},
		{"directory", dir, false, safefile.ErrNotRegular, "directory"},
		{"too large", big, false, safefile.ErrTooLarge, "100 bytes"},
		{"symbolic link", link, true, safefile.ErrSymlink, "link"},
		{"missing", filepath.Join(dir, "nothing"), false, fs.ErrNotExist, "nothing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			open := safefile.Open
			if tc.noFollow {
				open = safefile.OpenNoFollow
			}
			f, _, err := open(tc.path, 10)
			if err == nil {
				f.Close()
				t.Fatalf("%s opened", tc.path)
			}
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.path) || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("error %q, want %v naming %s and %q", err, tc.want, tc.path, tc.says)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Fatalf("error %q shows the file's content", err)
			}
		})
	}
	// Open follows a link (a model directory of links into a download
	// cache is ordinary) but still checks what it reaches.
	if b, err := safefile.ReadFile(link, 10); err != nil || string(b) != "s3cret" {
		t.Fatalf("ReadFile through a link: %q, %v", b, err)
	}
	fifoLink := filepath.Join(dir, "fifolink")
	os.Symlink(fifo, fifoLink)
	if _, err := safefile.ReadFile(fifoLink, 10); !errors.Is(err, safefile.ErrNotRegular) {
		t.Fatalf("a link to a FIFO: %v", err)
	}
}

// A file that grows after it was opened is not read past the limit.
func TestReadAllStopsAtTheLimit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	os.WriteFile(path, []byte("12345"), 0o600)
	f, size, err := safefile.Open(path, 5)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	w.Write([]byte("6789"))
	w.Close()
	if _, err := safefile.ReadAll(f, size, size); !errors.Is(err, safefile.ErrTooLarge) {
		t.Fatalf("a file that grew: %v", err)
	}
}
