package nodetest

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/braidml/braid/coordinator"
	"github.com/braidml/braid/node"
)

// collect runs the collector of name's node and checks how many objects
// and bytes it deleted.
func collect(t *testing.T, c *Cluster, name string, objects int, bytes int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	got, err := c.Node(name).CollectGarbage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got.Objects != objects || got.Bytes != bytes {
		t.Fatalf("collected %d objects, %d bytes (%+v), want %d, %d", got.Objects, got.Bytes, got, objects, bytes)
	}
}

// The collector deletes an upload that nothing names once it is older than
// the grace period, and nothing else: not a registered dataset's objects,
// not a young upload, not an old one uploaded again (about to be named);
// once the dataset is deleted its objects go too. Metrics count it all.
func TestCollectorDeletesWhatNothingNames(t *testing.T) {
	clock := NewManualClock(time.Now())
	c := NewCluster(t, 1, WithAPI(), WithClock(clock))
	c.WaitLeader()
	n := c.Node("n1")
	api := newAPIClient(t, n)
	dir, _ := prepareDataset(t, "legal", 30)
	d, err := c.PushDataset("n1", dir, node.DatasetOptions{Replicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	named := []string{d.Manifest}
	var namedBytes int64
	for _, s := range d.Shards {
		named = append(named, s.Hash)
		namedBytes += s.Bytes
	}
	info, err := n.Store().Stat(d.Manifest)
	if err != nil {
		t.Fatal(err)
	}
	namedBytes += info.Size
	stray, again, young := []byte("uploaded and never registered"), []byte("uploaded, and again two hours later"), []byte("uploaded a moment ago")
	for _, b := range [][]byte{stray, again} {
		if code, msg := api.put(hashOf(b), b); code != http.StatusOK {
			t.Fatalf("upload: %d %s", code, msg)
		}
	}

	clock.Advance(node.DefaultGCGrace + time.Minute)
	for _, b := range [][]byte{young, again} {
		if code, msg := api.put(hashOf(b), b); code != http.StatusOK {
			t.Fatalf("upload: %d %s", code, msg)
		}
	}
	collect(t, c, "n1", 1, int64(len(stray)))
	for h, held := range map[string]bool{hashOf(stray): false, hashOf(again): true, hashOf(young): true} {
		if n.HasObject(h) != held {
			t.Errorf("object %.12s held %v after collection, want %v", h, n.HasObject(h), held)
		}
	}
	for _, h := range named {
		if !n.HasObject(h) {
			t.Errorf("object %.12s of the registered dataset was collected", h)
		}
	}

	// A deleted dataset's objects are collected once old, with the rest.
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	if err := n.Coordinator().Apply(ctx, coordinator.DeleteDataset{ID: d.ID}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(node.DefaultGCGrace + time.Minute)
	collect(t, c, "n1", len(named)+2, namedBytes+int64(len(again)+len(young)))
	if left := storeLeftovers(t, c, "n1"); len(left) != 0 {
		t.Errorf("left in the store: %v", left)
	}
	_, metrics := api.do(http.MethodGet, "/metrics", "", nil, 0)
	for _, want := range []string{
		fmt.Sprintf("braid_gc_deleted_objects_total %d\n", len(named)+3),
		fmt.Sprintf("braid_gc_deleted_bytes_total %d\n", namedBytes+int64(len(stray)+len(again)+len(young))),
		"braid_store_unreferenced_bytes 0\n",
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// Uploads that nothing names yet are capped together: the one that would
// pass the cap is refused before its body is read, with a message naming
// the cap and the flag that raises it; once the backlog is collected,
// uploads are accepted again.
func TestUploadBacklogIsCapped(t *testing.T) {
	clock := NewManualClock(time.Now())
	c := NewCluster(t, 1, WithAPI(), WithClock(clock), WithMaxUploadBytes(1000), WithMaxPendingUploadBytes(2500))
	c.WaitLeader()
	n := c.Node("n1")
	api := newAPIClient(t, n)
	obj := func(b byte) []byte { return bytes.Repeat([]byte{b}, 1000) }
	for _, b := range []byte{'a', 'b'} {
		if code, msg := api.put(hashOf(obj(b)), obj(b)); code != http.StatusOK {
			t.Fatalf("upload %c: %d %s", b, code, msg)
		}
	}
	code, msg := api.do(http.MethodPut, "/v1/blobs/"+hashOf(obj('c')), "application/octet-stream", noBody{t}, 1000)
	if code != http.StatusInsufficientStorage || !strings.Contains(msg, "cap of 2500") || !strings.Contains(msg, "--max-pending-upload") || !strings.Contains(msg, "2000 bytes of objects that no dataset or job names") {
		t.Fatalf("an upload past the cap: %d %q, want 507 naming the cap and the flag", code, msg)
	}
	if n.HasObject(hashOf(obj('c'))) {
		t.Fatal("a refused upload was stored")
	}
	// An object already held is not a new byte: answered, not refused.
	if code, msg := api.put(hashOf(obj('a')), obj('a')); code != http.StatusOK {
		t.Fatalf("uploading a held object at the cap: %d %s", code, msg)
	}
	clock.Advance(node.DefaultGCGrace + time.Minute)
	collect(t, c, "n1", 2, 2000)
	if code, msg := api.put(hashOf(obj('c')), obj('c')); code != http.StatusOK {
		t.Fatalf("an upload after the backlog was collected: %d %s", code, msg)
	}
}
