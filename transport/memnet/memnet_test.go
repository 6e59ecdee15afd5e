package memnet_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/braidml/braid/transport"
	"github.com/braidml/braid/transport/memnet"
	"github.com/braidml/braid/transport/transporttest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// factory makes memnet nodes for the conformance suite; with delay set,
// every link between them delays its frames by it.
func factory(delay time.Duration) func(t *testing.T) transporttest.Factory {
	return func(t *testing.T) transporttest.Factory {
		n := memnet.New(1)
		t.Cleanup(func() { n.Close() })
		var ids []transport.PeerID
		return transporttest.FactoryFunc(func(t *testing.T, id transport.PeerID) transport.Transport {
			tr, err := n.Node(id)
			if err != nil {
				t.Fatal(err)
			}
			if delay > 0 {
				for _, other := range ids {
					n.SetDelay(id, other, delay)
					n.SetDelay(other, id, delay)
				}
			}
			ids = append(ids, id)
			return tr
		})
	}
}

func TestConformance(t *testing.T) { transporttest.Run(t, factory(0)) }

func TestConformanceWithDelay(t *testing.T) { transporttest.Run(t, factory(200*time.Microsecond)) }

// cluster is a test's network and its nodes.
type cluster struct {
	t     *testing.T
	ctx   context.Context
	net   *memnet.Network
	nodes map[transport.PeerID]*memnet.Transport
	lis   map[transport.PeerID]transport.Listener // each node's raft listener
}

func newCluster(t *testing.T, seed uint64, ids ...transport.PeerID) *cluster {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	c := &cluster{t: t, ctx: ctx, net: memnet.New(seed), nodes: map[transport.PeerID]*memnet.Transport{}, lis: map[transport.PeerID]transport.Listener{}}
	t.Cleanup(func() { c.net.Close(); cancel() })
	for _, id := range ids {
		c.start(id)
	}
	return c
}

// start starts (or restarts) node id with a raft listener.
func (c *cluster) start(id transport.PeerID) transport.Listener {
	c.t.Helper()
	tr, err := c.net.Node(id)
	if err != nil {
		c.t.Fatal(err)
	}
	c.nodes[id] = tr
	l, err := tr.Listen(transport.ProtoRaft)
	if err != nil {
		c.t.Fatal(err)
	}
	c.lis[id] = l
	return l
}

func (c *cluster) dial(from, to transport.PeerID) (transport.Stream, error) {
	return c.nodes[from].Dial(c.ctx, to, memnet.Address(to), transport.ProtoRaft, transport.DialOptions{})
}

// open opens a raft stream from one node to another and returns both ends.
func (c *cluster) open(from, to transport.PeerID) (ds, as transport.Stream) {
	c.t.Helper()
	ds, err := c.dial(from, to)
	if err != nil {
		c.t.Fatalf("dial %s→%s: %v", from, to, err)
	}
	as, err = c.lis[to].Accept(c.ctx)
	if err != nil {
		c.t.Fatalf("accept on %s: %v", to, err)
	}
	return ds, as
}

func isTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

// readWithin reads exactly n bytes, failing the test after d.
func readWithin(t *testing.T, s transport.Stream, n int, d time.Duration) string {
	t.Helper()
	s.SetReadDeadline(time.Now().Add(d))
	defer s.SetReadDeadline(time.Time{})
	b := make([]byte, n)
	if _, err := io.ReadFull(s, b); err != nil {
		t.Fatalf("read %d bytes from %s: %v", n, s.Peer(), err)
	}
	return string(b)
}

func TestAddresses(t *testing.T) {
	c := newCluster(t, 1, "a", "b")
	if got := c.nodes["a"].Addr(); got != "mem:a" || got != memnet.Address("a") {
		t.Errorf("Addr() = %q, want mem:a", got)
	}
	if id, ok := memnet.ParseAddress("mem:a"); !ok || id != "a" {
		t.Errorf("ParseAddress(mem:a) = %q, %v", id, ok)
	}
	for _, bad := range []string{"", "mem:", "a", "127.0.0.1:7000"} {
		if id, ok := memnet.ParseAddress(bad); ok {
			t.Errorf("ParseAddress(%q) = %q, true", bad, id)
		}
	}
	ds, as := c.open("a", "b")
	for _, check := range []struct{ name, got, want string }{
		{"dialer's LocalAddr", ds.LocalAddr().String(), "mem:a"},
		{"dialer's RemoteAddr", ds.RemoteAddr().String(), "mem:b"},
		{"acceptor's LocalAddr", as.LocalAddr().String(), "mem:b"},
		{"acceptor's RemoteAddr", as.RemoteAddr().String(), "mem:a"},
	} {
		if check.got != check.want {
			t.Errorf("%s = %s, want %s", check.name, check.got, check.want)
		}
	}

	a := c.nodes["a"]
	for _, addr := range []string{"mem:nobody", "127.0.0.1:7000", ""} {
		if _, err := a.Dial(c.ctx, "nobody", addr, transport.ProtoRaft, transport.DialOptions{}); !errors.Is(err, transport.ErrUnreachable) {
			t.Errorf("dial %q: %v, want ErrUnreachable", addr, err)
		}
	}
	if _, err := a.Dial(c.ctx, "c", memnet.Address("b"), transport.ProtoRaft, transport.DialOptions{}); !errors.Is(err, transport.ErrWrongPeer) {
		t.Errorf("dial c at b's address: %v, want ErrWrongPeer", err)
	}
	if _, err := a.Dial(c.ctx, "b", memnet.Address("b"), transport.ProtoRaft, transport.DialOptions{Lane: -1}); err == nil {
		t.Errorf("dial with lane -1 succeeded")
	}
	if _, err := c.net.Node("a"); !errors.Is(err, memnet.ErrNodeExists) {
		t.Errorf("second Node(a): %v, want ErrNodeExists", err)
	}
	if _, err := c.net.Node(""); err == nil {
		t.Errorf("Node(\"\") succeeded")
	}
	c.net.Close()
	if _, err := c.net.Node("z"); !errors.Is(err, memnet.ErrNetworkClosed) {
		t.Errorf("Node after Network.Close: %v, want ErrNetworkClosed", err)
	}
}

// A partition stalls the streams across it (nothing is lost), fails new dials
// across it at once, and leaves the rest of the network alone; Heal resumes
// the stalled streams.
func TestPartitionHeal(t *testing.T) {
	c := newCluster(t, 1, "a", "b", "c")
	ds, as := c.open("a", "b")
	if _, err := ds.Write([]byte("before")); err != nil {
		t.Fatal(err)
	}

	c.net.Partition([]transport.PeerID{"a"}, []transport.PeerID{"b", "c"})
	if c.net.Reachable("a", "b") || !c.net.Reachable("b", "c") || !c.net.Reachable("a", "a") {
		t.Fatalf("Reachable after Partition([a], [b c]): a→b %v, b→c %v, a→a %v",
			c.net.Reachable("a", "b"), c.net.Reachable("b", "c"), c.net.Reachable("a", "a"))
	}
	for _, l := range [][2]transport.PeerID{{"a", "b"}, {"b", "a"}, {"c", "a"}} {
		if _, err := c.dial(l[0], l[1]); !errors.Is(err, transport.ErrUnreachable) {
			t.Errorf("dial %s→%s across the partition: %v, want ErrUnreachable", l[0], l[1], err)
		}
	}
	bc, cb := c.open("b", "c")
	if _, err := bc.Write([]byte("same side")); err != nil {
		t.Fatal(err)
	}
	if got := readWithin(t, cb, 9, 5*time.Second); got != "same side" {
		t.Errorf("b→c read %q", got)
	}

	// Stalled: "before" is in flight but not delivered; writes block.
	as.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if n, err := as.Read(make([]byte, 6)); !isTimeout(err) {
		t.Fatalf("read across the partition: %d, %v; want a timeout", n, err)
	}
	as.SetReadDeadline(time.Time{})
	ds.SetWriteDeadline(time.Now().Add(20 * time.Millisecond))
	if n, err := ds.Write([]byte("x")); !isTimeout(err) {
		t.Fatalf("write across the partition: %d, %v; want a timeout", n, err)
	}
	ds.SetWriteDeadline(time.Time{})

	// A Read waiting across the Heal gets the data held back.
	got := make(chan string, 1)
	go func() { got <- readWithin(t, as, 6, 10*time.Second) }()
	c.net.Heal()
	if s := <-got; s != "before" {
		t.Errorf("after Heal read %q, want %q", s, "before")
	}
	if _, err := ds.Write([]byte("after")); err != nil {
		t.Fatal(err)
	}
	if s := readWithin(t, as, 5, 5*time.Second); s != "after" {
		t.Errorf("read %q, want after", s)
	}

	// Nodes in no group form a group of their own.
	c.net.Partition([]transport.PeerID{"a"})
	if c.net.Reachable("a", "c") || !c.net.Reachable("b", "c") {
		t.Errorf("Partition([a]): a→c %v, b→c %v; want false, true", c.net.Reachable("a", "c"), c.net.Reachable("b", "c"))
	}
	c.net.Heal()

	c.net.Isolate("c")
	if _, err := c.dial("b", "c"); !errors.Is(err, transport.ErrUnreachable) {
		t.Errorf("dial to an isolated node: %v, want ErrUnreachable", err)
	}
	if _, err := c.dial("c", "a"); !errors.Is(err, transport.ErrUnreachable) {
		t.Errorf("dial from an isolated node: %v, want ErrUnreachable", err)
	}
	ds2, as2 := c.open("a", "b")
	c.net.Heal()
	cb2, bc2 := c.open("c", "b")
	for _, s := range []transport.Stream{ds, as, bc, cb, ds2, as2, cb2, bc2} {
		s.Close()
	}
}

// A dial whose handshake is under way when its link goes down fails with
// ErrUnreachable rather than hanging until its context ends.
func TestPartitionDuringDial(t *testing.T) {
	c := newCluster(t, 1, "a", "b")
	c.net.SetDelay("a", "b", time.Hour) // the header never arrives in time
	errc := make(chan error, 1)
	go func() {
		s, err := c.dial("a", "b")
		if s != nil {
			s.Close()
		}
		errc <- err
	}()
	c.net.Partition([]transport.PeerID{"a"}, []transport.PeerID{"b"})
	if err := <-errc; !errors.Is(err, transport.ErrUnreachable) {
		t.Fatalf("dial cut by a partition: %v, want ErrUnreachable", err)
	}
}

// A dropped frame breaks its stream on both ends; dials whose header or
// status is dropped fail; clearing the drop restores the link.
func TestDrop(t *testing.T) {
	c := newCluster(t, 1, "a", "b")
	ds, as := c.open("a", "b")
	c.net.SetDrop("a", "b", 1)
	_, err := ds.Write([]byte("lost"))
	if !errors.Is(err, memnet.ErrReset) || !errors.Is(err, transport.ErrUnreachable) {
		t.Fatalf("write of a dropped frame: %v, want ErrReset and ErrUnreachable", err)
	}
	if _, err := as.Read(make([]byte, 4)); !errors.Is(err, memnet.ErrReset) {
		t.Errorf("peer's read after the drop: %v, want ErrReset", err)
	}
	if _, err := as.Write([]byte("x")); !errors.Is(err, memnet.ErrReset) {
		t.Errorf("peer's write after the drop: %v, want ErrReset", err)
	}
	if _, err := c.dial("a", "b"); !errors.Is(err, transport.ErrUnreachable) {
		t.Errorf("dial a→b, header dropped: %v, want ErrUnreachable", err)
	}
	if _, err := c.dial("b", "a"); !errors.Is(err, transport.ErrUnreachable) {
		t.Errorf("dial b→a, status dropped: %v, want ErrUnreachable", err)
	}
	c.net.SetDrop("a", "b", 0)
	ds, as = c.open("a", "b")
	if _, err := ds.Write([]byte("kept")); err != nil {
		t.Fatal(err)
	}
	if got := readWithin(t, as, 4, 5*time.Second); got != "kept" {
		t.Errorf("read %q", got)
	}
}

// Which frames are dropped depends only on the seed and on what each stream
// writes, so the same seed gives the same breaks.
func TestDropDeterministic(t *testing.T) {
	breaks := func(seed uint64) []int {
		c := newCluster(t, seed, "a", "b")
		c.net.SetDrop("a", "b", 0.05)
		c.net.SetDrop("b", "a", 0.05)
		var at []int // per stream: the write that broke it; -1: the dial failed
		for range 20 {
			ds, err := c.dial("a", "b")
			if err != nil {
				at = append(at, -1)
				continue
			}
			i := 0
			for ; i < 1000; i++ {
				if _, err := ds.Write([]byte{byte(i)}); err != nil {
					break
				}
			}
			at = append(at, i)
			ds.Close()
		}
		c.net.Close()
		return at
	}
	first, again, other := breaks(7), breaks(7), breaks(8)
	t.Logf("seed 7: %v; seed 8: %v", first, other)
	if !slices.Equal(first, again) {
		t.Errorf("seed 7 broke streams at %v, then at %v", first, again)
	}
	if slices.Equal(first, other) {
		t.Errorf("seeds 7 and 8 broke streams at the same writes %v", first)
	}
}

// Frames arrive no earlier than the link's delay after they were written, in
// order, even when the delay shrinks between them; the other direction is not
// delayed. Runs on synctest's fake clock, so the times are exact.
func TestDelay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const d = 20 * time.Millisecond
		c := newCluster(t, 1, "a", "b")
		c.net.SetDelay("a", "b", d)

		start := time.Now()
		ds, as := c.open("a", "b")
		if took := time.Since(start); took != d {
			t.Errorf("dial took %v, want %v (the header is delayed, the status is not)", took, d)
		}

		start = time.Now()
		for i := range 5 {
			if err := transport.WriteFrame(ds, []byte{byte(i)}); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Millisecond) // fake time: spaces the frames out
		}
		for i := range 5 {
			m, err := transport.ReadFrame(as, nil, 16)
			if err != nil || len(m) != 1 || m[0] != byte(i) {
				t.Fatalf("frame %d: got %v, %v", i, m, err)
			}
			if took, want := time.Since(start), d+time.Duration(i)*time.Millisecond; took != want {
				t.Errorf("frame %d arrived %v after the first was written, want %v", i, took, want)
			}
		}

		// A frame written after the delay drops to zero waits for the one
		// before it.
		start = time.Now()
		transport.WriteFrame(ds, []byte("slow"))
		c.net.SetDelay("a", "b", 0)
		transport.WriteFrame(ds, []byte("fast"))
		for _, want := range []string{"slow", "fast"} {
			m, err := transport.ReadFrame(as, nil, 16)
			if err != nil || string(m) != want {
				t.Fatalf("got %q, %v; want %q", m, err, want)
			}
			if took := time.Since(start); took != d {
				t.Errorf("%q arrived after %v, want %v", want, took, d)
			}
		}

		start = time.Now()
		transport.WriteFrame(as, []byte("back"))
		if m, err := transport.ReadFrame(ds, nil, 16); err != nil || string(m) != "back" || time.Since(start) != 0 {
			t.Errorf("undelayed direction: %q, %v after %v", m, err, time.Since(start))
		}
		ds.Close()
		as.Close()
	})
}

// Kill fails the peers' streams at once and closes the node's own endpoint;
// the id can then start again at the same address.
func TestKillRestart(t *testing.T) {
	c := newCluster(t, 1, "a", "b")
	ds, as := c.open("a", "b")
	old, oldListener := c.nodes["b"], c.lis["b"]
	if !c.net.Kill("b") {
		t.Fatal("Kill(b) found no node")
	}
	if c.net.Kill("b") {
		t.Error("second Kill(b) found a node")
	}
	if _, err := ds.Read(make([]byte, 1)); !errors.Is(err, memnet.ErrReset) || !errors.Is(err, transport.ErrUnreachable) {
		t.Errorf("peer's read from the killed node: %v, want ErrReset and ErrUnreachable", err)
	}
	if _, err := ds.Write([]byte("x")); !errors.Is(err, transport.ErrUnreachable) {
		t.Errorf("peer's write to the killed node: %v, want ErrUnreachable", err)
	}
	if _, err := as.Read(make([]byte, 1)); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("killed node's own read: %v, want ErrClosed", err)
	}
	if _, err := oldListener.Accept(c.ctx); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("killed node's Accept: %v, want ErrClosed", err)
	}
	if _, err := old.Dial(c.ctx, "a", memnet.Address("a"), transport.ProtoRaft, transport.DialOptions{}); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("killed node's Dial: %v, want ErrClosed", err)
	}
	if _, err := c.dial("a", "b"); !errors.Is(err, transport.ErrUnreachable) {
		t.Errorf("dial to the killed node: %v, want ErrUnreachable", err)
	}

	c.start("b") // restart
	if _, err := c.net.Node("b"); !errors.Is(err, memnet.ErrNodeExists) {
		t.Errorf("Node(b) while the restarted b is live: %v, want ErrNodeExists", err)
	}
	ds, as = c.open("a", "b")
	if _, err := ds.Write([]byte("again")); err != nil {
		t.Fatal(err)
	}
	if got := readWithin(t, as, 5, 5*time.Second); got != "again" {
		t.Errorf("read %q from the restarted node", got)
	}
	old.Close() // closing the killed endpoint again is harmless
	if _, err := ds.Write([]byte("!")); err != nil {
		t.Errorf("closing the killed endpoint broke the restarted one's stream: %v", err)
	}
}

// Transport.Close is graceful: peers read what was in flight, then io.EOF,
// and the id can start again.
func TestCloseGraceful(t *testing.T) {
	c := newCluster(t, 1, "a", "b")
	ds, as := c.open("a", "b")
	if _, err := as.Write([]byte("bye")); err != nil {
		t.Fatal(err)
	}
	c.nodes["b"].Close()
	ds.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(ds)
	if err != nil || string(got) != "bye" {
		t.Errorf("peer read %q, %v; want %q then io.EOF", got, err, "bye")
	}
	if _, err := ds.Write([]byte("x")); !errors.Is(err, io.ErrClosedPipe) {
		t.Errorf("write to a closed peer: %v, want io.ErrClosedPipe", err)
	}
	c.start("b")
	c.open("a", "b")
}

// A dial waiting for its handshake ends with its context, and nothing it
// started outlives it (goleak checks at the end).
func TestDialContextWhileHandshaking(t *testing.T) {
	c := newCluster(t, 1, "a", "b")
	c.net.SetDelay("a", "b", time.Hour)
	ctx, cancel := context.WithTimeout(c.ctx, 20*time.Millisecond)
	defer cancel()
	_, err := c.nodes["a"].Dial(ctx, "b", memnet.Address("b"), transport.ProtoRaft, transport.DialOptions{})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("dial with the header delayed an hour and a 20ms context: %v, want context.DeadlineExceeded", err)
	}
	c.net.SetDelay("a", "b", 0)
	c.open("a", "b")
}

// Faults changing under streams in use neither deadlock nor leak: writers,
// readers, partitions, heals, delays, drops and a kill all at once, with
// every goroutine ending.
func TestFaultsUnderLoad(t *testing.T) {
	c := newCluster(t, 3, "a", "b", "c")
	type pair struct{ ds, as transport.Stream }
	var pairs []pair
	for _, l := range [][2]transport.PeerID{{"a", "b"}, {"b", "c"}, {"c", "a"}, {"a", "c"}} {
		ds, as := c.open(l[0], l[1])
		pairs = append(pairs, pair{ds, as})
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	for _, p := range pairs {
		for _, s := range []transport.Stream{p.ds, p.as} {
			wg.Go(func() { // writer
				buf := make([]byte, 3000)
				for i := 0; ; i++ {
					select {
					case <-done:
						return
					default:
					}
					s.SetWriteDeadline(time.Now().Add(5 * time.Millisecond))
					if _, err := s.Write(buf[:1+i%len(buf)]); err != nil && !isTimeout(err) {
						return // broken or closed
					}
				}
			})
			wg.Go(func() { // reader
				buf := make([]byte, 1000)
				for {
					select {
					case <-done:
						return
					default:
					}
					s.SetReadDeadline(time.Now().Add(5 * time.Millisecond))
					if _, err := s.Read(buf); err != nil && !isTimeout(err) {
						return
					}
				}
			})
		}
	}
	for i := range 40 {
		switch i % 5 {
		case 0:
			c.net.Partition([]transport.PeerID{"a"}, []transport.PeerID{"b", "c"})
		case 1:
			c.net.SetDelay("b", "c", time.Duration(i)*100*time.Microsecond)
		case 2:
			c.net.Heal()
		case 3:
			c.net.Isolate("c")
		case 4:
			c.net.Heal()
			c.net.SetDrop("c", "a", 0.001)
		}
		if s, err := c.dial("a", "b"); err == nil {
			s.Close() // dials go on while the faults change
		}
		time.Sleep(time.Millisecond) // lets the streams run between changes; nothing depends on it
	}
	c.net.Kill("b")
	close(done)
	wg.Wait()
}

// BytesSent counts the payload each end writes, by protocol: what a test
// can hold the code under test to without trusting its own counters.
func TestBytesSent(t *testing.T) {
	c := newCluster(t, 1, "a", "b")
	ds, as := c.open("a", "b")
	proto := ds.Protocol()
	payload := bytes.Repeat([]byte("x"), 3*70_000+11) // several chunks
	go ds.Write(payload)
	readWithin(t, as, len(payload), 10*time.Second)
	as.Write([]byte("ok"))
	readWithin(t, ds, 2, 10*time.Second)
	if got := c.nodes["a"].BytesSent(proto); got != int64(len(payload)) {
		t.Errorf("a sent %d bytes of %s, want %d", got, proto, len(payload))
	}
	if got := c.nodes["b"].BytesSent(proto); got != 2 {
		t.Errorf("b sent %d bytes, want 2", got)
	}
	if got := c.nodes["a"].BytesSent("other"); got != 0 {
		t.Errorf("a sent %d bytes of another protocol", got)
	}
}
