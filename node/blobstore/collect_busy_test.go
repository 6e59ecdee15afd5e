package blobstore_test

import (
	"io"
	"testing"
	"time"

	"github.com/braidml/braid/node/blobstore"
)

// Collect spares work in progress even when everything is past the
// cutoff and nothing is kept: an upload being written (tmp/, which
// Collect never reads) and a download a Fetch is making (its partial)
// both complete, and what they install is whole.
func TestCollectSparesWorkInProgress(t *testing.T) {
	n := newTestNet(t, 7)
	a, b := n.addServer("a"), n.addClient("b")
	future := time.Now().Add(time.Hour) // every file is older than this
	keepNothing := func(string) bool { return false }

	// An upload half written when the collector runs.
	obj := randomBytes(1, 3<<20)
	pr, pw := io.Pipe()
	type putResult struct {
		h   string
		err error
	}
	done := make(chan putResult, 1)
	go func() {
		h, _, err := b.store.Put(pr)
		done <- putResult{h, err}
	}()
	if _, err := pw.Write(obj[:len(obj)/2]); err != nil {
		t.Fatal(err)
	}
	c, err := b.store.Collect(keepNothing, future)
	if err != nil {
		t.Fatal(err)
	}
	if c.Objects != 0 || c.Partials != 0 {
		t.Fatalf("collected %+v while an upload was being written", c)
	}
	pw.Write(obj[len(obj)/2:])
	pw.Close()
	if r := <-done; r.err != nil || r.h != blobstore.Sum(obj) {
		t.Fatalf("upload after a collection: %s, %v", r.h, r.err)
	}
	b.requireObject(t, obj)

	// A fetch under way: the collector runs from its progress callback,
	// while the partial download is on disk.
	shard := randomBytes(2, 4<<20+5)
	h := a.put(t, shard)
	var during blobstore.Collected
	ran := false
	progress := func(p blobstore.Progress) {
		if ran || p.Done < int64(len(shard))/3 {
			return
		}
		ran = true
		if during, err = b.store.Collect(func(k string) bool { return k == blobstore.Sum(obj) }, future); err != nil {
			t.Error(err)
		}
	}
	if err := b.fetch(n.ctx, h, int64(len(shard)), blobstore.FetchOptions{Progress: progress}, a); err != nil {
		t.Fatalf("fetch with a collection in the middle: %v", err)
	}
	if !ran {
		t.Fatal("the collector never ran during the fetch")
	}
	if during.Partials != 0 || during.Objects != 0 {
		t.Errorf("collected %+v during the fetch of %.12s", during, h)
	}
	b.requireObject(t, shard)
}
