package blobstore_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/braidml/braid/node/blobstore"
)

func openStore(t *testing.T) (*blobstore.Store, string) {
	t.Helper()
	dir := t.TempDir()
	s, err := blobstore.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	return s, dir
}

// Put, Open, Stat, Path and List agree on objects of 0, 1 and 1 MiB+1
// bytes; an object's hash is the SHA-256 of its bytes.
func TestStorePutAndRead(t *testing.T) {
	s, _ := openStore(t)
	var want []string
	for i, size := range []int{0, 1, 1<<20 + 1} {
		obj := randomBytes(uint64(i), size)
		h, n, err := s.Put(bytes.NewReader(obj))
		if err != nil {
			t.Fatal(err)
		}
		if h != blobstore.Sum(obj) || n != int64(size) || !blobstore.ValidHash(h) {
			t.Fatalf("Put(%d bytes) = %s, %d", size, h, n)
		}
		want = append(want, h)
		f, n, err := s.Open(h)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(f)
		f.Close()
		if err != nil || n != int64(size) || !bytes.Equal(got, obj) {
			t.Fatalf("Open(%.12s): %d bytes, size %d, %v; want %d bytes back", h, len(got), n, err, size)
		}
		info, err := s.Stat(h)
		if err != nil || info.Size != int64(size) || info.Hash != h || info.Private {
			t.Fatalf("Stat(%.12s) = %+v, %v", h, info, err)
		}
		p, err := s.Path(h)
		if err != nil || filepath.Base(p) != h {
			t.Fatalf("Path(%.12s) = %s, %v", h, p, err)
		}
		if st, _ := os.Stat(p); st.Mode().Perm()&0o222 != 0 {
			t.Errorf("object file mode %v, want read-only", st.Mode())
		}
		// Storing the same bytes again is harmless.
		if h2, _, err := s.Put(bytes.NewReader(obj)); err != nil || h2 != h {
			t.Fatalf("second Put: %s, %v", h2, err)
		}
	}
	list, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, info := range list {
		got = append(got, info.Hash)
	}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("List = %v, want %v", got, want)
	}
}

// Receive installs bytes only when they hash to the name given and fit
// the limit; a mismatch, an oversized body or a read that fails midway
// leaves nothing behind, in objects/ or tmp/. PutFile names a file by its
// hash.
func TestStoreReceive(t *testing.T) {
	s, dir := openStore(t)
	obj := randomBytes(1, 5000)
	h := blobstore.Sum(obj)
	wrong := blobstore.Sum([]byte("something else"))
	for _, tc := range []struct {
		name string
		r    io.Reader
		hash string
		max  int64
		want error
	}{
		{"bytes that do not match the name", bytes.NewReader(obj), wrong, 1 << 20, blobstore.ErrHashMismatch},
		{"one byte over the limit", bytes.NewReader(obj), h, int64(len(obj)) - 1, blobstore.ErrTooLarge},
		{"a body that fails midway", io.MultiReader(bytes.NewReader(obj[:100]), iotest.ErrReader(io.ErrUnexpectedEOF)), h, 1 << 20, io.ErrUnexpectedEOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Receive(tc.r, tc.hash, tc.max)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.hash[:12]) {
				t.Fatalf("Receive: %v, want %v naming %.12s", err, tc.want, tc.hash)
			}
			if s.Has(tc.hash) {
				t.Fatal("a refused object became visible")
			}
			requireEmpty(t, filepath.Join(dir, "tmp"))
			requireEmpty(t, filepath.Join(dir, "objects"))
		})
	}
	n, err := s.Receive(bytes.NewReader(obj), h, int64(len(obj)))
	if err != nil || n != int64(len(obj)) || !s.Has(h) {
		t.Fatalf("Receive at exactly the limit = %d, %v", n, err)
	}
	requireEmpty(t, filepath.Join(dir, "tmp"))
	src := filepath.Join(t.TempDir(), "shard.bin")
	if err := os.WriteFile(src, obj, 0o644); err != nil {
		t.Fatal(err)
	}
	ph, n, err := s.PutFile(src)
	if err != nil || ph != h || n != int64(len(obj)) {
		t.Fatalf("PutFile = %s, %d, %v", ph, n, err)
	}
	if _, _, err := s.PutFile(filepath.Join(dir, "no such file")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("PutFile of a missing file: %v", err)
	}
}

// Whatever the bytes, name and limit, Receive stores an object exactly
// when the bytes hash to the name and fit, and leaves tmp/ empty.
func FuzzReceive(f *testing.F) {
	f.Add([]byte("hello"), true, uint16(5))
	f.Add([]byte("hello"), true, uint16(4))
	f.Add([]byte("hello"), false, uint16(100))
	f.Add([]byte{}, true, uint16(0))
	f.Fuzz(func(t *testing.T, body []byte, named bool, limit uint16) {
		s, dir := openStore(t)
		h := blobstore.Sum(body)
		if !named {
			h = blobstore.Sum(append(body, 'x'))
		}
		_, err := s.Receive(bytes.NewReader(body), h, int64(limit))
		ok := named && len(body) <= int(limit)
		if (err == nil) != ok || s.Has(h) != ok {
			t.Fatalf("%d bytes, named %v, limit %d: err %v, stored %v", len(body), named, limit, err, s.Has(h))
		}
		requireEmpty(t, filepath.Join(dir, "tmp"))
	})
}

func requireEmpty(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Errorf("%s holds %d leftover files (%s...)", dir, len(entries), entries[0].Name())
	}
}

// errAfter yields n bytes and then fails.
type errAfter struct{ n int }

var errDisk = errors.New("read error")

func (r *errAfter) Read(b []byte) (int, error) {
	if r.n == 0 {
		return 0, errDisk
	}
	k := min(r.n, len(b))
	clear(b[:k])
	r.n -= k
	return k, nil
}

// A Put whose reader fails leaves nothing visible and nothing in tmp/; a
// temporary file a crash left behind is removed by the next Open.
func TestStoreNoHalfObjects(t *testing.T) {
	s, dir := openStore(t)
	if _, _, err := s.Put(&errAfter{n: 100 << 10}); !errors.Is(err, errDisk) {
		t.Fatalf("Put from a failing reader: %v", err)
	}
	if list, _ := s.List(); len(list) != 0 {
		t.Fatalf("List after a failed Put: %v", list)
	}
	requireEmpty(t, filepath.Join(dir, "tmp"))

	crashed := filepath.Join(dir, "tmp", "put-123")
	if err := os.WriteFile(crashed, []byte("half"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := blobstore.Open(dir); err != nil {
		t.Fatal(err)
	}
	requireEmpty(t, filepath.Join(dir, "tmp"))
}

// Delete removes an object (and its partial download) but not its private
// mark.
func TestStoreDelete(t *testing.T) {
	s, _ := openStore(t)
	obj := []byte("weights")
	h, _, err := s.Put(bytes.NewReader(obj))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.MarkPrivate(h); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(h); err != nil {
		t.Fatal(err)
	}
	if s.Has(h) {
		t.Fatal("Has after Delete")
	}
	if err := s.Delete(h); !errors.Is(err, blobstore.ErrNotFound) {
		t.Errorf("second Delete: %v, want ErrNotFound", err)
	}
	for name, err := range map[string]error{
		"Stat": func() error { _, err := s.Stat(h); return err }(),
		"Open": func() error { _, _, err := s.Open(h); return err }(),
		"Path": func() error { _, err := s.Path(h); return err }(),
	} {
		if !errors.Is(err, blobstore.ErrNotFound) || !strings.Contains(err.Error(), h[:12]) {
			t.Errorf("%s of a deleted object: %v, want ErrNotFound naming it", name, err)
		}
	}
	if !s.Private(h) {
		t.Error("the private mark went with the object")
	}
}

// Private marks persist across Open.
func TestStorePrivatePersists(t *testing.T) {
	s, dir := openStore(t)
	pub := blobstore.Sum([]byte("public"))
	priv := blobstore.Sum([]byte("private"))
	if err := s.MarkPrivate(priv); err != nil {
		t.Fatal(err)
	}
	if !s.Private(priv) || s.Private(pub) {
		t.Fatal("Private before reopening")
	}
	s2, err := blobstore.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !s2.Private(priv) || s2.Private(pub) {
		t.Fatalf("after reopening: Private(priv) = %v, Private(pub) = %v", s2.Private(priv), s2.Private(pub))
	}
}

// Every method that takes a hash refuses a malformed one before touching a
// path: wrong length, upper case, non-hex, path tricks.
func TestStoreRejectsBadHashes(t *testing.T) {
	s, dir := openStore(t)
	good := blobstore.Sum([]byte("x"))
	for _, bad := range []string{
		"",
		good[:63],
		good + "0",
		strings.ToUpper(good),
		"../../../../etc/passwd",
		"../objects/" + good[11:],
		good[:62] + "/x",
		good[:63] + "g",
		good[:63] + "\x00",
	} {
		if blobstore.ValidHash(bad) {
			t.Errorf("ValidHash(%q) = true", bad)
		}
		if s.Has(bad) || s.Private(bad) {
			t.Errorf("Has/Private(%q) = true", bad)
		}
		if _, ok := s.Partial(bad); ok {
			t.Errorf("Partial(%q) = true", bad)
		}
		for name, err := range map[string]error{
			"Open":        func() error { _, _, err := s.Open(bad); return err }(),
			"Path":        func() error { _, err := s.Path(bad); return err }(),
			"Stat":        func() error { _, err := s.Stat(bad); return err }(),
			"Delete":      s.Delete(bad),
			"MarkPrivate": s.MarkPrivate(bad),
			"Receive":     func() error { _, err := s.Receive(strings.NewReader("x"), bad, 10); return err }(),
			"Fetch":       s.Fetch(t.Context(), nil, "shard", []blobstore.Source{{Peer: "a", Addr: "mem:a"}}, bad, 1, blobstore.FetchOptions{}),
		} {
			if !errors.Is(err, blobstore.ErrBadHash) {
				t.Errorf("%s(%q): %v, want ErrBadHash", name, bad, err)
			}
		}
	}
	if !blobstore.ValidHash(good) {
		t.Errorf("ValidHash(%q) = false", good)
	}
	// Nothing was created anywhere.
	for _, sub := range []string{"objects", "private", "partial", "tmp"} {
		requireEmpty(t, filepath.Join(dir, sub))
	}
}

// Files in objects/ that are not objects (a stray editor backup) do not
// show in List.
func TestStoreListIgnoresStrays(t *testing.T) {
	s, dir := openStore(t)
	os.WriteFile(filepath.Join(dir, "objects", "README~"), []byte("x"), 0o644)
	h, _, _ := s.Put(strings.NewReader("y"))
	list, err := s.List()
	if err != nil || len(list) != 1 || list[0].Hash != h {
		t.Fatalf("List = %v, %v; want just %.12s", list, err, h)
	}
}

// A store opened on directories other software created wide (a data dir
// made 0755 by systemd or a Docker volume) narrows them, and writes nothing
// another local user could read.
func TestStorePrivateOnDisk(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	for _, sub := range []string{"", "objects", "private"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(filepath.Join(dir, sub), 0o755); err != nil { // whatever the umask
			t.Fatal(err)
		}
	}
	s, err := blobstore.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	h, _, err := s.Put(strings.NewReader("federated shard"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.MarkPrivate(h); err != nil {
		t.Fatal(err)
	}
	seen := 0
	err = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		st, err := d.Info()
		if err != nil {
			return err
		}
		seen++
		if st.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s: mode %v, want no group or other permission", path, st.Mode())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The store's directory, its four subdirectories, the object, the marker.
	if seen != 7 {
		t.Errorf("walked %d entries, want 7", seen)
	}
	p, _ := s.Path(h)
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o400 {
		t.Errorf("object mode %v, want 0400", st.Mode())
	}
}
