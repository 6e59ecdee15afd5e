package blobstore_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/braidml/braid/node/blobstore"
)

// Collect removes what the caller does not keep once it is older than the
// cutoff, and nothing else: not a kept object, not a young one, not one
// touched since, and a partial download only when it is old and not kept.
func TestStoreCollect(t *testing.T) {
	s, dir := openStore(t)
	put := func(b string) string {
		t.Helper()
		h, _, err := s.Put(bytes.NewReader([]byte(b)))
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	now := time.Now()
	old := now.Add(-2 * time.Hour)
	kept, gone, young, touched := put("kept, named by someone"), put("named by nobody"), put("uploaded a moment ago"), put("named again")
	for _, h := range []string{kept, gone, touched} {
		if err := os.Chtimes(filepath.Join(dir, "objects", h), old, old); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Touch(touched, now); err != nil {
		t.Fatal(err)
	}
	// Abandoned downloads: one of a kept hash, one of an unkept, one fresh.
	partial := func(h string, mtime time.Time) string {
		p := filepath.Join(dir, "partial", h+".partial")
		if err := os.WriteFile(p, []byte("some"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
		return p
	}
	keptPartial := partial(blobstore.Sum([]byte("placed here")), old)
	gonePartial := partial(blobstore.Sum([]byte("placed nowhere")), old)
	freshPartial := partial(blobstore.Sum([]byte("being fetched")), now)

	keep := func(h string) bool { return h == kept || h == blobstore.Sum([]byte("placed here")) }
	c, err := s.Collect(keep, now.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	want := blobstore.Collected{Objects: 1, Bytes: int64(len("named by nobody")), Partials: 1, PartialBytes: 4,
		Kept: int64(len("uploaded a moment ago") + len("named again"))}
	if c != want {
		t.Errorf("Collect: %+v, want %+v", c, want)
	}
	for h, held := range map[string]bool{kept: true, gone: false, young: true, touched: true} {
		if s.Has(h) != held {
			t.Errorf("object %.12s held %v after Collect, want %v", h, s.Has(h), held)
		}
	}
	for p, held := range map[string]bool{keptPartial: true, gonePartial: false, freshPartial: true} {
		if _, err := os.Stat(p); (err == nil) != held {
			t.Errorf("%s held %v after Collect, want %v", filepath.Base(p), err == nil, held)
		}
	}
	if err := s.Touch(gone, now); err == nil {
		t.Error("Touch of a collected object succeeded")
	}
}
