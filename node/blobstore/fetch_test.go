package blobstore_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/braidml/braid/node/blobstore"
	"github.com/braidml/braid/transport"
)

// Objects of 0 bytes, 1 byte and just over 1 MiB (more than one chunk, and
// more than memnet's 1 MiB flow-control window) arrive intact, and the
// server counts exactly their bytes.
func TestFetchRoundTrip(t *testing.T) {
	n := newTestNet(t, 1)
	a, b := n.addServer("a"), n.addClient("b")
	var served int64
	for i, size := range []int{0, 1, 1<<20 + 1} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			obj := randomBytes(uint64(i), size)
			h := a.put(t, obj)
			var last blobstore.Progress
			err := b.fetch(n.ctx, h, int64(size), blobstore.FetchOptions{Progress: func(p blobstore.Progress) { last = p }}, a)
			if err != nil {
				t.Fatal(err)
			}
			b.requireObject(t, obj)
			if got := a.srv.BytesServed(h); got != int64(size) {
				t.Errorf("server counted %d bytes of %.12s, want %d", got, h, size)
			}
			served += int64(size)
			if size > 0 && (last.Done != int64(size) || last.Total != int64(size) || last.Received != int64(size) || last.Source.Peer != "a") {
				t.Errorf("last progress %+v, want done = total = received = %d from a", last, size)
			}
			// Fetching what is stored is a no-op.
			if err := b.fetch(n.ctx, h, int64(size), blobstore.FetchOptions{}, a); err != nil {
				t.Fatal(err)
			}
			if got := a.srv.BytesServed(h); got != int64(size) {
				t.Errorf("after a second fetch the server counted %d bytes, want %d still", got, size)
			}
		})
	}
	st := a.srv.Stats()
	if st.OK != 3 || st.Requests != 3 || st.BytesServed != served || st.Aborted != 0 {
		t.Errorf("server stats %+v, want 3 requests, 3 ok, %d bytes", st, served)
	}
}

// Kill the source mid-transfer: the fetch fails naming it and keeps what
// arrived; after the source restarts, a second fetch asks only for the
// rest, so less than twice the object crosses the network.
func TestFetchResumesAfterSourceKilled(t *testing.T) {
	n := newTestNet(t, 2)
	a, b := n.addServer("a"), n.addClient("b")
	const size = 4<<20 + 3
	obj := randomBytes(2, size)
	h := a.put(t, obj)

	killed := false
	cut := func(p blobstore.Progress) {
		if !killed && p.Done >= size/3 {
			killed = true
			n.mem.Kill("a")
		}
	}
	err := b.fetch(n.ctx, h, size, blobstore.FetchOptions{Progress: cut}, a)
	if err == nil || !killed {
		t.Fatalf("fetch with the source killed at a third: %v (killed %v)", err, killed)
	}
	if !strings.Contains(err.Error(), "a at mem:a") || !strings.Contains(err.Error(), h[:12]) {
		t.Errorf("error %q does not name the source and the hash", err)
	}
	if b.store.Has(h) {
		t.Fatal("a cut download is visible")
	}
	kept, ok := b.store.Partial(h)
	if !ok || kept < size/3 || kept >= size {
		t.Fatalf("partial download %d bytes (%v), want [%d, %d)", kept, ok, size/3, size)
	}
	if st, err := os.Stat(filepath.Join(b.dir, "partial", h+".partial")); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("partial download: %v, %v; want mode 0600", st.Mode(), err)
	}
	killedSrv := a.srv
	n.restart(a) // waits for the killed server's streams to end
	firstServed := killedSrv.BytesServed(h)
	var resumedAt int64 = -1
	first := func(p blobstore.Progress) {
		if resumedAt < 0 {
			resumedAt = p.Done - p.Received
		}
	}
	if err := b.fetch(n.ctx, h, size, blobstore.FetchOptions{Progress: first}, a); err != nil {
		t.Fatal(err)
	}
	b.requireObject(t, obj)
	if resumedAt != kept {
		t.Errorf("second fetch started at byte %d, want %d (the partial)", resumedAt, kept)
	}
	if got := a.srv.BytesServed(h); got != size-kept {
		t.Errorf("restarted source served %d bytes, want %d (the rest)", got, size-kept)
	}
	if total := firstServed + a.srv.BytesServed(h); total >= 2*size {
		t.Errorf("%d bytes served for an object of %d: not resumed", total, size)
	}
	t.Logf("cut after %d bytes served (%d on disk); resumed for %d more", firstServed, kept, size-kept)
}

// Partition the source mid-transfer: its stream stalls, the read deadline
// fires, and the next source resumes from the bytes already on disk.
func TestFetchStalledSourceMidTransferFailsOver(t *testing.T) {
	n := newTestNet(t, 3)
	a, c, b := n.addServer("a"), n.addServer("c"), n.addClient("b")
	const size = 3 << 20
	obj := randomBytes(3, size)
	h := a.put(t, obj)
	c.put(t, obj)

	var fromA int64
	opts := blobstore.FetchOptions{
		Timeout: time.Second, // long enough for a healthy source under -race on a busy machine
		Progress: func(p blobstore.Progress) {
			if p.Source.Peer == "a" {
				fromA = p.Done
				if p.Done >= size/4 {
					n.mem.Partition([]transport.PeerID{"a"}) // a alone
				}
			}
		},
	}
	if err := b.fetch(n.ctx, h, size, opts, a, c); err != nil {
		t.Fatal(err)
	}
	b.requireObject(t, obj)
	b.log.requireLogged(t, "source failed", "peer=a", "peer stalled")
	if fromA < size/4 || fromA >= size {
		t.Fatalf("%d bytes from a before the partition", fromA)
	}
	if got := c.srv.BytesServed(h); got != size-fromA {
		t.Errorf("c served %d bytes, want %d (the rest after a's %d)", got, size-fromA, fromA)
	}
	n.mem.Heal()
}

// A source that accepts the stream and never answers is given up after the
// timeout, and the next source delivers.
func TestFetchStalledSourceNeverAnswers(t *testing.T) {
	n := newTestNet(t, 4)
	stall, good, b := n.addClient("stall"), n.addServer("good"), n.addClient("b")
	obj := randomBytes(4, 1000)
	h := good.put(t, obj)
	accepted := holdStreams(t, n, stall)

	start := time.Now()
	err := b.fetch(n.ctx, h, int64(len(obj)), blobstore.FetchOptions{Timeout: 500 * time.Millisecond}, stall, good)
	if err != nil {
		t.Fatal(err)
	}
	b.requireObject(t, obj)
	if len(accepted) != 1 {
		t.Errorf("the stalling source accepted %d streams, want 1", len(accepted))
	}
	if _, ok := b.log.find("source failed", "peer=stall", "peer stalled"); !ok {
		t.Error("no log line says stall stalled")
	}
	t.Logf("fetched in %v with a 500ms timeout on the stalled source", time.Since(start))

	// With only the stalling source, the error says so.
	h2 := blobstore.Sum([]byte("nobody serves this"))
	err = b.fetch(n.ctx, h2, 18, blobstore.FetchOptions{Timeout: 50 * time.Millisecond}, stall)
	if !errors.Is(err, blobstore.ErrStalled) || !strings.Contains(err.Error(), "stall at mem:stall") {
		t.Errorf("fetch from a stalling source: %v, want ErrStalled naming it", err)
	}
}

// holdStreams makes nd accept ProtoShard streams and never answer; it
// returns a channel that receives each accepted stream (buffered).
func holdStreams(t *testing.T, n *testNet, nd *testNode) chan transport.Stream {
	l, err := nd.tr.Listen(transport.ProtoShard)
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan transport.Stream, 16)
	ctx, cancel := context.WithCancel(n.ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			s, err := l.Accept(ctx)
			if err != nil {
				return
			}
			accepted <- s
		}
	})
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		close(accepted)
		for s := range accepted {
			s.Close()
		}
	})
	return accepted
}

// A source whose copy is corrupt (a flipped byte on its disk) is skipped in
// favour of a good one; the log and, when it is the only source, the error
// name the corrupt peer and the hash mismatch. Nothing of the bad copy
// stays behind.
func TestFetchCorruptSourceSkipped(t *testing.T) {
	n := newTestNet(t, 5)
	bad, good, b := n.addServer("bad"), n.addServer("good"), n.addClient("b")
	const size = 600<<10 + 7
	obj := randomBytes(5, size)
	h := bad.put(t, obj)
	good.put(t, obj)
	corrupt(t, bad, h, size/2)

	err := b.fetch(n.ctx, h, size, blobstore.FetchOptions{}, bad)
	if !errors.Is(err, blobstore.ErrHashMismatch) || !strings.Contains(err.Error(), "bad at mem:bad") || !strings.Contains(err.Error(), h[:12]) {
		t.Fatalf("fetch from the corrupt source only: %v, want a hash mismatch naming bad and %.12s", err, h)
	}
	if b.store.Has(h) {
		t.Fatal("corrupt bytes became visible")
	}
	if _, ok := b.store.Partial(h); ok {
		t.Error("the corrupt download was kept as a partial")
	}

	if err := b.fetch(n.ctx, h, size, blobstore.FetchOptions{}, bad, good); err != nil {
		t.Fatal(err)
	}
	b.requireObject(t, obj)
	b.log.requireLogged(t, "source failed", "peer=bad", "does not match its hash")
	if got := good.srv.BytesServed(h); got != size {
		t.Errorf("good served %d bytes, want %d", got, size)
	}
}

// corrupt flips one byte of nd's copy of h on disk, as a bad disk would.
func corrupt(t *testing.T, nd *testNode, h string, at int64) {
	t.Helper()
	p, err := nd.store.Path(h)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var c [1]byte
	if _, err := f.ReadAt(c[:], at); err != nil {
		t.Fatal(err)
	}
	c[0] ^= 0x5a
	if _, err := f.WriteAt(c[:], at); err != nil {
		t.Fatal(err)
	}
}

// A partial download whose bytes are wrong (left by a corrupt source, or a
// bad disk) fails the hash once resumed; Fetch discards it and asks the
// same source again from byte 0.
func TestFetchBadPartialStartsOver(t *testing.T) {
	n := newTestNet(t, 6)
	a, b := n.addServer("a"), n.addClient("b")
	const size = 1<<20 + 1
	obj := randomBytes(6, size)
	h := a.put(t, obj)
	garbage := randomBytes(66, size/2)
	if err := os.WriteFile(filepath.Join(b.dir, "partial", h+".partial"), garbage, 0o644); err != nil {
		t.Fatal(err)
	}
	if kept, ok := b.store.Partial(h); !ok || kept != size/2 {
		t.Fatalf("Partial = %d, %v; want %d", kept, ok, size/2)
	}
	if err := b.fetch(n.ctx, h, size, blobstore.FetchOptions{}, a); err != nil {
		t.Fatal(err)
	}
	b.requireObject(t, obj)
	if got, want := a.srv.BytesServed(h), int64(size-size/2+size); got != want {
		t.Errorf("a served %d bytes, want %d (the rest, then all of it)", got, want)
	}
	if _, ok := b.log.find("starting over", "peer=a"); !ok {
		t.Error("no log line says the download started over")
	}

	// A partial longer than the object: with the size known it is emptied
	// before asking; with SizeUnknown the source answers bad range, and
	// Fetch starts over.
	for _, size := range []int64{int64(len(obj)), blobstore.SizeUnknown} {
		if err := b.store.Delete(h); err != nil {
			t.Fatal(err)
		}
		before := a.srv.Stats()
		long := randomBytes(67, len(obj)+10)
		if err := os.WriteFile(filepath.Join(b.dir, "partial", h+".partial"), long, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := b.fetch(n.ctx, h, size, blobstore.FetchOptions{}, a); err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		b.requireObject(t, obj)
		after := a.srv.Stats()
		if got := after.BytesServed - before.BytesServed; got != int64(len(obj)) {
			t.Errorf("size %d: %d bytes served, want %d", size, got, len(obj))
		}
		if got := after.BadRange - before.BadRange; size == blobstore.SizeUnknown && got != 1 {
			t.Errorf("size unknown: %d bad ranges answered, want 1", got)
		}
	}
}

// A private object is refused by the serving side: status refused, not one
// byte of it sent (the counters say so), and the client's error says
// refused and names the peer. The mark survives a restart.
func TestFetchPrivateRefused(t *testing.T) {
	n := newTestNet(t, 7)
	fed, pub, b := n.addServer("fed"), n.addServer("pub"), n.addClient("b")
	secret := randomBytes(7, 300<<10)
	h := blobstore.Sum(secret)
	if err := fed.store.MarkPrivate(h); err != nil { // before Put: no window
		t.Fatal(err)
	}
	fed.put(t, secret)

	err := b.fetch(n.ctx, h, int64(len(secret)), blobstore.FetchOptions{}, fed)
	if !errors.Is(err, blobstore.ErrRefused) || !strings.Contains(err.Error(), "refused") || !strings.Contains(err.Error(), "fed at mem:fed") {
		t.Fatalf("fetch of a private object: %v, want refused naming fed", err)
	}
	if b.store.Has(h) {
		t.Fatal("the private object arrived")
	}
	if got := fed.srv.BytesServed(h); got != 0 {
		t.Fatalf("fed served %d bytes of a private object", got)
	}
	if st := fed.srv.Stats(); st.BytesServed != 0 || st.Refused != 1 || st.OK != 0 {
		t.Fatalf("fed stats %+v, want 1 refused and 0 bytes", st)
	}

	// The mark is on disk: after a crash and restart, still refused.
	n.restart(fed)
	if !fed.store.Private(h) {
		t.Fatal("the private mark did not survive the restart")
	}
	if info, err := fed.store.Stat(h); err != nil || !info.Private {
		t.Fatalf("Stat after restart: %+v, %v; want private", info, err)
	}
	err = b.fetch(n.ctx, h, int64(len(secret)), blobstore.FetchOptions{}, fed)
	if !errors.Is(err, blobstore.ErrRefused) {
		t.Fatalf("after the restart: %v, want refused", err)
	}
	if got := fed.srv.BytesServed(h); got != 0 {
		t.Fatalf("fed served %d bytes of a private object after the restart", got)
	}

	// The same bytes, public elsewhere, come from there.
	pub.put(t, secret)
	if err := b.fetch(n.ctx, h, int64(len(secret)), blobstore.FetchOptions{}, fed, pub); err != nil {
		t.Fatal(err)
	}
	b.requireObject(t, secret)
	if got := fed.srv.BytesServed(h); got != 0 {
		t.Fatalf("fed served %d bytes", got)
	}
}

// MarkPrivate during a transfer stops it at the next chunk.
func TestMarkPrivateStopsTransfer(t *testing.T) {
	n := newTestNet(t, 8)
	a, b := n.addServer("a"), n.addClient("b")
	const size = 8 << 20
	obj := randomBytes(8, size)
	h := a.put(t, obj)
	marked := false
	mark := func(p blobstore.Progress) {
		if !marked {
			marked = true
			if err := a.store.MarkPrivate(h); err != nil {
				t.Error(err)
			}
		}
	}
	err := b.fetch(n.ctx, h, size, blobstore.FetchOptions{Progress: mark}, a)
	if err == nil || b.store.Has(h) {
		t.Fatalf("fetch went on after MarkPrivate: %v", err)
	}
	// What was sent before the mark stays bounded by the window the
	// transport buffers plus a chunk.
	if got := a.srv.BytesServed(h); got >= size/2 {
		t.Errorf("%d of %d bytes served although marked private after the first chunk arrived", got, size)
	}
	if st := a.srv.Stats(); st.Aborted != 1 {
		t.Errorf("stats %+v, want 1 aborted transfer", st)
	}
	t.Logf("client error: %v", err)
}

// Every source lacks the object: the error names each and says not found.
func TestFetchMissingObject(t *testing.T) {
	n := newTestNet(t, 9)
	a, c, b := n.addServer("a"), n.addServer("c"), n.addClient("b")
	h := blobstore.Sum([]byte("nobody has this"))
	err := b.fetch(n.ctx, h, 15, blobstore.FetchOptions{}, a, c)
	var fe *blobstore.FetchError
	if !errors.As(err, &fe) || len(fe.Failures) != 2 {
		t.Fatalf("%v, want a FetchError with 2 failures", err)
	}
	for i, want := range []transport.PeerID{"a", "c"} {
		f := fe.Failures[i]
		if f.Source.Peer != want || !errors.Is(f.Err, blobstore.ErrNotFound) {
			t.Errorf("failure %d: %v, want %s: not found", i, f, want)
		}
	}
	msg := err.Error()
	for _, want := range []string{h[:12], "a at mem:a", "c at mem:c", "not found"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not say %q", msg, want)
		}
	}
	if _, ok := b.store.Partial(h); ok {
		t.Error("failed fetches left an empty partial download")
	}

	// Unreachable sources and none at all.
	n.mem.Isolate("a")
	if err := b.fetch(n.ctx, h, 15, blobstore.FetchOptions{}, a); !errors.Is(err, transport.ErrUnreachable) {
		t.Errorf("fetch from an isolated source: %v, want ErrUnreachable", err)
	}
	n.mem.Heal()
	if err := b.fetch(n.ctx, h, 15, blobstore.FetchOptions{}); !errors.Is(err, blobstore.ErrNoSources) {
		t.Errorf("fetch from no sources: %v, want ErrNoSources", err)
	}
}

// A source whose object has another size than the caller expects is
// skipped; SizeUnknown takes the source's size.
func TestFetchSizeMismatch(t *testing.T) {
	n := newTestNet(t, 10)
	a, b := n.addServer("a"), n.addClient("b")
	obj := randomBytes(10, 5000)
	h := a.put(t, obj)
	if err := b.fetch(n.ctx, h, 4999, blobstore.FetchOptions{}, a); !errors.Is(err, blobstore.ErrSizeMismatch) {
		t.Fatalf("fetch with the wrong size: %v, want ErrSizeMismatch", err)
	}
	if err := b.fetch(n.ctx, h, blobstore.SizeUnknown, blobstore.FetchOptions{}, a); err != nil {
		t.Fatal(err)
	}
	b.requireObject(t, obj)
	if err := b.fetch(n.ctx, h, 1, blobstore.FetchOptions{}, a); !errors.Is(err, blobstore.ErrSizeMismatch) {
		t.Errorf("fetch of a stored object with the wrong size: %v, want ErrSizeMismatch", err)
	}
}

// Cancelling the context ends a fetch at once, mid-transfer or while a
// source stalls, keeping what arrived.
func TestFetchContextCancel(t *testing.T) {
	n := newTestNet(t, 11)
	a, stall, b := n.addServer("a"), n.addClient("stall"), n.addClient("b")
	const size = 4 << 20
	obj := randomBytes(11, size)
	h := a.put(t, obj)

	t.Run("mid-transfer", func(t *testing.T) {
		ctx, cancel := context.WithCancel(n.ctx)
		defer cancel()
		cancelAt := func(p blobstore.Progress) {
			if p.Done >= size/2 {
				cancel()
			}
		}
		err := b.fetch(ctx, h, size, blobstore.FetchOptions{Progress: cancelAt}, a, a)
		var fe *blobstore.FetchError
		if !errors.Is(err, context.Canceled) || !errors.As(err, &fe) || len(fe.Failures) != 1 {
			t.Fatalf("%v, want context.Canceled after the first source only", err)
		}
		if kept, ok := b.store.Partial(h); !ok || kept < size/2 {
			t.Errorf("partial %d bytes (%v), want at least %d kept", kept, ok, size/2)
		}
	})

	t.Run("stalled", func(t *testing.T) {
		accepted := holdStreams(t, n, stall)
		ctx, cancel := context.WithCancel(n.ctx)
		defer cancel()
		go func() {
			s := <-accepted // the request is out; Fetch waits for the answer
			cancel()
			s.Close()
		}()
		start := time.Now()
		err := b.fetch(ctx, h, size, blobstore.FetchOptions{Timeout: time.Minute}, stall, a)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("%v, want context.Canceled", err)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("fetch took %v to notice the cancel", d)
		}
	})

	// The partial is resumed by the next fetch.
	if err := b.fetch(n.ctx, h, size, blobstore.FetchOptions{}, a); err != nil {
		t.Fatal(err)
	}
	b.requireObject(t, obj)
}

// Many clients fetch at once from a server limited to a few streams at a
// time; two fetches of the same hash into one store download it once.
func TestFetchConcurrent(t *testing.T) {
	n := newTestNet(t, 12)
	a := n.addServer("a", func(c *blobstore.ServerConfig) { c.MaxStreams = 3 })
	var objs [][]byte
	var hashes []string
	for i := range 4 {
		obj := randomBytes(uint64(100+i), 200<<10+i)
		objs = append(objs, obj)
		hashes = append(hashes, a.put(t, obj))
	}
	var clients []*testNode
	for i := range 6 {
		clients = append(clients, n.addClient(transport.PeerID(fmt.Sprintf("c%d", i))))
	}
	var wg sync.WaitGroup
	for _, c := range clients {
		for i, h := range hashes {
			for range 2 { // the same hash twice into one store
				wg.Go(func() {
					if err := c.fetch(n.ctx, h, int64(len(objs[i])), blobstore.FetchOptions{}, a); err != nil {
						t.Errorf("%s: %v", c.id, err)
					}
				})
			}
		}
	}
	wg.Wait()
	for _, c := range clients {
		for _, obj := range objs {
			c.requireObject(t, obj)
		}
	}
	for i, h := range hashes {
		if got, want := a.srv.BytesServed(h), int64(len(clients)*len(objs[i])); got != want {
			t.Errorf("object %d: %d bytes served, want %d (once per client)", i, got, want)
		}
	}
	if st := a.srv.Stats(); st.OK != int64(len(clients)*len(hashes)) || st.Active != 0 {
		t.Errorf("stats %+v, want %d ok and none active", st, len(clients)*len(hashes))
	}
}

// A source that lacks the object (a replica not made yet) is routine: the
// fetch goes on to the next, and says so at debug level, not as a warning;
// other failures stay warnings.
func TestFetchNotFoundIsNoWarning(t *testing.T) {
	n := newTestNet(t, 11)
	a, c, b := n.addServer("a"), n.addServer("c"), n.addClient("b")
	obj := randomBytes(11, 1000)
	h := c.put(t, obj)
	log, logger := newTestLog(t)
	if err := b.fetch(n.ctx, h, int64(len(obj)), blobstore.FetchOptions{Logger: logger}, a, c); err != nil {
		t.Fatal(err)
	}
	b.requireObject(t, obj)
	if line, ok := log.find("source failed", "peer=a"); !ok || !strings.Contains(line, "level=DEBUG") {
		t.Errorf("the source without the object logged %q, want one line at debug level", line)
	}
	if line, ok := log.find("level=WARN"); ok {
		t.Errorf("a fetch that found its object at the second source warned: %s", line)
	}

	n.mem.Isolate("a")
	defer n.mem.Heal()
	obj2 := randomBytes(12, 1000)
	h2 := c.put(t, obj2)
	if err := b.fetch(n.ctx, h2, int64(len(obj2)), blobstore.FetchOptions{Logger: logger}, a, c); err != nil {
		t.Fatal(err)
	}
	if _, ok := log.find("level=WARN", "source failed", "peer=a"); !ok {
		t.Errorf("an unreachable source logged no warning")
	}
}
