// Package transporttest is the conformance suite that every
// transport.Transport implementation must pass: transport/memnet in its own
// tests, transport/quic in its own. One suite, many implementations, so that
// code tested on memnet behaves the same on QUIC.
//
// An implementation plugs in through a Factory that makes named endpoints
// able to reach each other:
//
//	func TestConformance(t *testing.T) {
//		transporttest.Run(t, func(t *testing.T) transporttest.Factory {
//			net := memnet.New(1)
//			t.Cleanup(func() { net.Close() })
//			return transporttest.FactoryFunc(func(t *testing.T, id transport.PeerID) transport.Transport {
//				tr, err := net.Node(id)
//				if err != nil {
//					t.Fatal(err)
//				}
//				return tr
//			})
//		})
//	}
//
// The suite checks what the transport package documents: dial and accept with
// the peer's identity on both ends, the stream header's status (ErrNotListening),
// ErrWrongPeer, ErrAlreadyListens, ErrBadProtocol, data integrity in both
// directions at once, many concurrent streams, half-close, net.Conn deadlines,
// Close unblocking what waits, context cancellation, and lanes; and that
// streams are net.Conns as golang.org/x/net/nettest.TestConn checks them. Each case takes
// well under a second on memnet and needs no more than a few MiB of buffering
// in flight.
//
// What it does not check: anything an implementation adds beyond the
// interfaces (certificates, partitions, congestion), performance, or leaks
// (run go.uber.org/goleak in the implementation's package, where the
// implementation's own background goroutines are known).
package transporttest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/nettest"

	"github.com/braidml/braid/transport"
)

// Factory makes the endpoints of one test case.
type Factory interface {
	// New returns an open endpoint whose Self is id, and that every other
	// endpoint this Factory made (and will make) can dial at its Addr. The
	// suite closes the endpoint when the case ends, and may close it earlier
	// itself; Close must therefore tolerate being called twice. New releases
	// whatever else it holds with t.Cleanup, and fails t when it cannot make
	// the endpoint.
	New(t *testing.T, id transport.PeerID) transport.Transport
}

// FactoryFunc adapts a function to Factory.
type FactoryFunc func(t *testing.T, id transport.PeerID) transport.Transport

// New calls f.
func (f FactoryFunc) New(t *testing.T, id transport.PeerID) transport.Transport { return f(t, id) }

// Run runs every case of the suite as a subtest of t, one after another.
// newFactory is called once per case with the case's *testing.T, so each case
// gets fresh endpoints (the same ids, such as "alice" and "bob", recur
// across cases).
func Run(t *testing.T, newFactory func(t *testing.T) Factory) {
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.run(newEnv(t, newFactory(t)))
		})
	}
}

// The cases, grouped by what they check.
var cases = []struct {
	name string
	run  func(e *env)
}{
	// Opening streams.
	{"DialAccept", testDialAccept},
	{"ConcurrentProtocols", testConcurrentProtocols},
	{"NotListening", testNotListening},
	{"BadProtocol", testBadProtocol},
	{"WrongPeer", testWrongPeer},
	{"AlreadyListens", testAlreadyListens},
	{"Lanes", testLanes},
	// Data.
	{"LargeBidirectional", testLargeBidirectional},
	{"ManyStreams", testManyStreams},
	{"IndependentStreams", testIndependentStreams},
	{"NetConn", testNetConn},
	// Closing.
	{"CloseWrite", testCloseWrite},
	{"CloseStream", testCloseStream},
	{"CloseTransport", testCloseTransport},
	// Waiting.
	{"ReadDeadline", testReadDeadline},
	{"WriteDeadline", testWriteDeadline},
	{"DialContext", testDialContext},
	{"AcceptContext", testAcceptContext},
}

// protocols are the protocols braid uses.
var protocols = []transport.Protocol{
	transport.ProtoRaft, transport.ProtoRing, transport.ProtoShard, transport.ProtoBlob, transport.ProtoControl,
}

const (
	// caseTimeout bounds every Dial and Accept of a case, and is the
	// deadline of every stream open returns, so that a broken
	// implementation fails instead of hanging.
	caseTimeout = 30 * time.Second
	// unblockWithin bounds how long Close, a deadline or a cancellation may
	// take to unblock a waiter.
	unblockWithin = 5 * time.Second
)

// env is one case's world.
type env struct {
	t   *testing.T
	ctx context.Context
	f   Factory
}

func newEnv(t *testing.T, f Factory) *env {
	ctx, cancel := context.WithTimeout(t.Context(), caseTimeout)
	t.Cleanup(cancel)
	return &env{t: t, ctx: ctx, f: f}
}

// node makes an endpoint that is closed when the case ends.
func (e *env) node(id transport.PeerID) transport.Transport {
	e.t.Helper()
	tr := e.f.New(e.t, id)
	if tr == nil {
		e.t.Fatalf("Factory.New(%q) returned nil", id)
	}
	e.t.Cleanup(func() { tr.Close() })
	if tr.Self() != id {
		e.t.Fatalf("Factory.New(%q): Self() = %q", id, tr.Self())
	}
	return tr
}

func (e *env) listen(tr transport.Transport, p transport.Protocol) transport.Listener {
	e.t.Helper()
	l, err := tr.Listen(p)
	if err != nil {
		e.t.Fatalf("%s: Listen(%s): %v", tr.Self(), p, err)
	}
	if l.Protocol() != p {
		e.t.Fatalf("%s: Listen(%s): listener's Protocol() = %q", tr.Self(), p, l.Protocol())
	}
	return l
}

// open opens a stream from d to the endpoint a, whose listener l accepts it,
// and checks what both ends report. It dials and accepts concurrently, so an
// implementation may complete the handshake in Dial or in Accept.
func (e *env) open(d, a transport.Transport, l transport.Listener, opt transport.DialOptions) (ds, as transport.Stream) {
	e.t.Helper()
	ds, as, err := e.tryOpen(d, a, l, opt)
	if err != nil {
		e.t.Fatal(err)
	}
	checkEnds(e.t, ds, as, d, a, l.Protocol())
	deadline := time.Now().Add(caseTimeout)
	ds.SetDeadline(deadline)
	as.SetDeadline(deadline)
	return ds, as
}

// tryOpen is open without the checks, the deadlines and t.Fatal, for use
// outside the case's goroutine. The streams are closed when the case ends.
func (e *env) tryOpen(d, a transport.Transport, l transport.Listener, opt transport.DialOptions) (ds, as transport.Stream, err error) {
	type accepted struct {
		s   transport.Stream
		err error
	}
	actx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	acc := make(chan accepted, 1)
	go func() {
		s, err := l.Accept(actx)
		acc <- accepted{s, err}
	}()
	ds, err = d.Dial(e.ctx, a.Self(), a.Addr(), l.Protocol(), opt)
	if err != nil {
		cancel()
		if r := <-acc; r.s != nil {
			r.s.Close()
		}
		return nil, nil, fmt.Errorf("%s: Dial(%s, %s, %s, %+v): %w", d.Self(), a.Self(), a.Addr(), l.Protocol(), opt, err)
	}
	r := <-acc
	if r.err != nil {
		ds.Close()
		return nil, nil, fmt.Errorf("%s: Accept(%s): %w", a.Self(), l.Protocol(), r.err)
	}
	as = r.s
	e.t.Cleanup(func() { ds.Close(); as.Close() })
	return ds, as, nil
}

// checkEnds checks the identities, protocol and addresses the two ends of a
// stream report.
func checkEnds(t *testing.T, ds, as transport.Stream, d, a transport.Transport, p transport.Protocol) {
	t.Helper()
	if ds.Peer() != a.Self() {
		t.Errorf("dialer's Peer() = %q, want %q", ds.Peer(), a.Self())
	}
	if as.Peer() != d.Self() {
		t.Errorf("acceptor's Peer() = %q, want %q", as.Peer(), d.Self())
	}
	if ds.Protocol() != p || as.Protocol() != p {
		t.Errorf("Protocol() = %q (dialer), %q (acceptor), want %q", ds.Protocol(), as.Protocol(), p)
	}
	if ra := ds.RemoteAddr(); ra == nil || ra.String() != a.Addr() {
		t.Errorf("dialer's RemoteAddr() = %v, want %s", ra, a.Addr())
	}
	for name, ad := range map[string]net.Addr{
		"dialer's LocalAddr": ds.LocalAddr(), "acceptor's LocalAddr": as.LocalAddr(), "acceptor's RemoteAddr": as.RemoteAddr(),
	} {
		if ad == nil || ad.String() == "" {
			t.Errorf("%s() = %v, want an address", name, ad)
		}
	}
}

// exchange sends msg from x to y and back, framed, and checks both arrive.
func exchange(t *testing.T, x, y transport.Stream, msg string) {
	t.Helper()
	if err := transport.WriteFrame(x, []byte(msg)); err != nil {
		t.Fatalf("write %q: %v", msg, err)
	}
	got, err := transport.ReadFrame(y, nil, 1<<20)
	if err != nil || string(got) != msg {
		t.Fatalf("read %q, %v; want %q", got, err, msg)
	}
	if err := transport.WriteFrame(y, got); err != nil {
		t.Fatalf("echo %q: %v", msg, err)
	}
	got, err = transport.ReadFrame(x, nil, 1<<20)
	if err != nil || string(got) != msg {
		t.Fatalf("read echo %q, %v; want %q", got, err, msg)
	}
}

// payload returns n bytes of seeded random data.
func payload(seed uint64, n int) []byte {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	b := make([]byte, n)
	rand.NewChaCha8(key).Read(b)
	return b
}

// isTimeout reports whether err is a deadline error as net.Conn defines it.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() && errors.Is(err, os.ErrDeadlineExceeded)
}

// waitErr waits for the error of a goroutine that something (Close, a
// deadline, a cancellation) should unblock.
func waitErr(t *testing.T, what string, ch <-chan error) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(unblockWithin):
		t.Fatalf("%s still blocked after %v", what, unblockWithin)
		return nil
	}
}

// testDialAccept: each protocol opens with the peer's identity and the
// protocol on both ends, in both directions, and carries data.
func testDialAccept(e *env) {
	a, b := e.node("alice"), e.node("bob")
	for _, p := range protocols {
		l := e.listen(a, p)
		ds, as := e.open(b, a, l, transport.DialOptions{})
		exchange(e.t, ds, as, "hello over "+string(p))
		ds.Close()
		as.Close()
		l.Close()
	}
	l := e.listen(b, transport.ProtoControl)
	ds, as := e.open(a, b, l, transport.DialOptions{})
	exchange(e.t, ds, as, "the other way")
}

// testConcurrentProtocols: streams of every protocol open at once between
// one pair, each reaching the listener of its own protocol.
func testConcurrentProtocols(e *env) {
	a, b := e.node("alice"), e.node("bob")
	const perProtocol = 3
	var wg sync.WaitGroup
	for _, p := range protocols {
		l := e.listen(a, p)
		for range perProtocol {
			wg.Go(func() {
				s, err := l.Accept(e.ctx)
				if err != nil {
					e.t.Errorf("Accept(%s): %v", p, err)
					return
				}
				defer s.Close()
				s.SetDeadline(time.Now().Add(caseTimeout))
				msg, err := transport.ReadFrame(s, nil, 1024)
				if err != nil || string(msg) != string(p) || s.Protocol() != p {
					e.t.Errorf("%s listener got %q (%v) on a stream for %q", p, msg, err, s.Protocol())
					return
				}
				if err := transport.WriteFrame(s, []byte("ack "+p)); err != nil {
					e.t.Errorf("%s: reply: %v", p, err)
				}
			})
			wg.Go(func() {
				s, err := b.Dial(e.ctx, a.Self(), a.Addr(), p, transport.DialOptions{})
				if err != nil {
					e.t.Errorf("Dial(%s): %v", p, err)
					return
				}
				defer s.Close()
				s.SetDeadline(time.Now().Add(caseTimeout))
				if err := transport.WriteFrame(s, []byte(p)); err != nil {
					e.t.Errorf("%s: write: %v", p, err)
					return
				}
				if msg, err := transport.ReadFrame(s, nil, 1024); err != nil || string(msg) != "ack "+string(p) {
					e.t.Errorf("%s: reply %q, %v", p, msg, err)
				}
			})
		}
	}
	wg.Wait()
}

// testNotListening: a protocol without a listener, or whose listener
// closed, is ErrNotListening; the protocol works once listened on again.
func testNotListening(e *env) {
	a, b := e.node("alice"), e.node("bob")
	e.listen(a, transport.ProtoRaft)
	if s, err := b.Dial(e.ctx, a.Self(), a.Addr(), transport.ProtoShard, transport.DialOptions{}); !errors.Is(err, transport.ErrNotListening) {
		if s != nil {
			s.Close()
		}
		e.t.Fatalf("Dial(shard) without a listener: %v, want ErrNotListening", err)
	}
	l := e.listen(a, transport.ProtoShard)
	l.Close()
	if s, err := b.Dial(e.ctx, a.Self(), a.Addr(), transport.ProtoShard, transport.DialOptions{}); !errors.Is(err, transport.ErrNotListening) {
		if s != nil {
			s.Close()
		}
		e.t.Fatalf("Dial(shard) after the listener closed: %v, want ErrNotListening", err)
	}
	l = e.listen(a, transport.ProtoShard)
	ds, as := e.open(b, a, l, transport.DialOptions{})
	exchange(e.t, ds, as, "listening now")
}

// testBadProtocol: Listen and Dial reject malformed protocol names.
func testBadProtocol(e *env) {
	a, b := e.node("alice"), e.node("bob")
	for _, p := range []transport.Protocol{"", "Raft", "has space", "x/y", transport.Protocol(bytes.Repeat([]byte("a"), 33))} {
		if l, err := a.Listen(p); !errors.Is(err, transport.ErrBadProtocol) {
			if l != nil {
				l.Close()
			}
			e.t.Errorf("Listen(%q): %v, want ErrBadProtocol", p, err)
		}
		if s, err := b.Dial(e.ctx, a.Self(), a.Addr(), p, transport.DialOptions{}); !errors.Is(err, transport.ErrBadProtocol) {
			if s != nil {
				s.Close()
			}
			e.t.Errorf("Dial(%q): %v, want ErrBadProtocol", p, err)
		}
	}
}

// testWrongPeer: an address whose node is not the expected peer is
// ErrWrongPeer, whoever the expected peer is.
func testWrongPeer(e *env) {
	a, b, c := e.node("alice"), e.node("bob"), e.node("carol")
	l := e.listen(a, transport.ProtoRaft)
	for _, claimed := range []transport.PeerID{"mallory", b.Self(), c.Self()} {
		if s, err := b.Dial(e.ctx, claimed, a.Addr(), transport.ProtoRaft, transport.DialOptions{}); !errors.Is(err, transport.ErrWrongPeer) {
			if s != nil {
				s.Close()
			}
			e.t.Errorf("Dial(%s at %s's address %s): %v, want ErrWrongPeer", claimed, a.Self(), a.Addr(), err)
		}
	}
	ds, as := e.open(b, a, l, transport.DialOptions{})
	exchange(e.t, ds, as, "right peer")
}

// testAlreadyListens: one listener per protocol; closing it frees the
// protocol, ends Accept with ErrClosed and leaves accepted streams open.
func testAlreadyListens(e *env) {
	a, b := e.node("alice"), e.node("bob")
	l := e.listen(a, transport.ProtoRaft)
	if l2, err := a.Listen(transport.ProtoRaft); !errors.Is(err, transport.ErrAlreadyListens) {
		if l2 != nil {
			l2.Close()
		}
		e.t.Fatalf("second Listen(raft): %v, want ErrAlreadyListens", err)
	}
	e.listen(a, transport.ProtoRing) // another protocol is fine
	ds, as := e.open(b, a, l, transport.DialOptions{})
	if err := l.Close(); err != nil {
		e.t.Fatalf("listener Close: %v", err)
	}
	if s, err := l.Accept(e.ctx); !errors.Is(err, transport.ErrClosed) {
		if s != nil {
			s.Close()
		}
		e.t.Fatalf("Accept after the listener closed: %v, want ErrClosed", err)
	}
	exchange(e.t, ds, as, "accepted streams outlive their listener")
	l = e.listen(a, transport.ProtoRaft)
	ds, as = e.open(b, a, l, transport.DialOptions{})
	exchange(e.t, ds, as, "listening again")
}

// testLanes: lanes 0..7 are accepted and each gives a working stream with
// the right identities.
func testLanes(e *env) {
	a, b := e.node("alice"), e.node("bob")
	l := e.listen(a, transport.ProtoRing)
	for lane := range 8 {
		ds, as := e.open(b, a, l, transport.DialOptions{Lane: lane})
		exchange(e.t, ds, as, fmt.Sprintf("lane %d", lane))
	}
}

// testLargeBidirectional: 8 MiB of seeded random bytes each way at once,
// written in random-sized pieces, arrive intact and in order; CloseWrite
// ends each direction with io.EOF.
func testLargeBidirectional(e *env) {
	const size = 8 << 20
	a, b := e.node("alice"), e.node("bob")
	l := e.listen(a, transport.ProtoRing)
	ds, as := e.open(b, a, l, transport.DialOptions{})
	var wg sync.WaitGroup
	for i, dir := range []struct{ w, r transport.Stream }{{ds, as}, {as, ds}} {
		data := payload(uint64(i+1), size)
		want := sha256.Sum256(data)
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(i), 7))
			for off := 0; off < len(data); {
				n := min(1+rng.IntN(256<<10), len(data)-off)
				if _, err := dir.w.Write(data[off : off+n]); err != nil {
					e.t.Errorf("direction %d: write at %d: %v", i, off, err)
					return
				}
				off += n
			}
			if err := dir.w.CloseWrite(); err != nil {
				e.t.Errorf("direction %d: CloseWrite: %v", i, err)
			}
		})
		wg.Go(func() {
			h := sha256.New()
			n, err := io.Copy(h, dir.r)
			if err != nil {
				e.t.Errorf("direction %d: read after %d bytes: %v", i, n, err)
				return
			}
			if n != size || !bytes.Equal(h.Sum(nil), want[:]) {
				e.t.Errorf("direction %d: got %d bytes with sha256 %x, want %d bytes with %x", i, n, h.Sum(nil), size, want)
			}
		})
	}
	wg.Wait()
}

// testManyStreams: 64 streams open at once on one pair, each echoing its
// own payload.
func testManyStreams(e *env) {
	const streams, size = 64, 32 << 10
	a, b := e.node("alice"), e.node("bob")
	l := e.listen(a, transport.ProtoRing)
	var wg sync.WaitGroup
	wg.Go(func() { // echo server
		var echoes sync.WaitGroup
		defer echoes.Wait()
		for range streams {
			s, err := l.Accept(e.ctx)
			if err != nil {
				e.t.Errorf("Accept: %v", err)
				return
			}
			echoes.Go(func() {
				defer s.Close()
				s.SetDeadline(time.Now().Add(caseTimeout))
				if _, err := io.Copy(s, s); err != nil {
					e.t.Errorf("echo: %v", err)
					return
				}
				if err := s.CloseWrite(); err != nil {
					e.t.Errorf("echo: CloseWrite: %v", err)
				}
			})
		}
	})
	for i := range streams {
		wg.Go(func() {
			s, err := b.Dial(e.ctx, a.Self(), a.Addr(), transport.ProtoRing, transport.DialOptions{})
			if err != nil {
				e.t.Errorf("stream %d: Dial: %v", i, err)
				return
			}
			defer s.Close()
			s.SetDeadline(time.Now().Add(caseTimeout))
			data := payload(uint64(100+i), size)
			var writer sync.WaitGroup
			writer.Go(func() {
				if _, err := s.Write(data); err != nil {
					e.t.Errorf("stream %d: write: %v", i, err)
				}
				if err := s.CloseWrite(); err != nil {
					e.t.Errorf("stream %d: CloseWrite: %v", i, err)
				}
			})
			got, err := io.ReadAll(s)
			writer.Wait()
			if err != nil || !bytes.Equal(got, data) {
				e.t.Errorf("stream %d: echo of %d bytes came back as %d bytes (equal: %v), %v", i, size, len(got), bytes.Equal(got, data), err)
			}
		})
	}
	wg.Wait()
}

// testIndependentStreams: closing one stream leaves the others on the same
// pair of endpoints working.
func testIndependentStreams(e *env) {
	a, b := e.node("alice"), e.node("bob")
	l := e.listen(a, transport.ProtoBlob)
	ds1, as1 := e.open(b, a, l, transport.DialOptions{})
	ds2, as2 := e.open(b, a, l, transport.DialOptions{})
	exchange(e.t, ds1, as1, "first")
	ds1.Close()
	as1.Close()
	exchange(e.t, ds2, as2, "second, after the first closed")
	ds3, as3 := e.open(b, a, l, transport.DialOptions{})
	exchange(e.t, ds3, as3, "third")
}

// testNetConn: streams pass golang.org/x/net/nettest.TestConn, the net.Conn
// conformance test (data, ping-pong, deadlines in the past, present and
// future, Close unblocking Read and Write, every method concurrently), with
// the dialer's end as c1 and the acceptor's as c2.
func testNetConn(e *env) {
	a, b := e.node("alice"), e.node("bob")
	l := e.listen(a, transport.ProtoRaft)
	nettest.TestConn(e.t, func() (c1, c2 net.Conn, stop func(), err error) {
		ds, as, err := e.tryOpen(b, a, l, transport.DialOptions{})
		if err != nil {
			return nil, nil, nil, err
		}
		return ds, as, func() { ds.Close(); as.Close() }, nil
	})
}

// testCloseWrite: after CloseWrite the peer reads everything and then
// io.EOF, and can still answer; Write after CloseWrite fails.
func testCloseWrite(e *env) {
	a, b := e.node("alice"), e.node("bob")
	l := e.listen(a, transport.ProtoControl)
	ds, as := e.open(b, a, l, transport.DialOptions{})
	if _, err := ds.Write([]byte("request")); err != nil {
		e.t.Fatal(err)
	}
	if err := ds.CloseWrite(); err != nil {
		e.t.Fatalf("CloseWrite: %v", err)
	}
	if n, err := ds.Write([]byte("more")); err == nil {
		e.t.Errorf("Write after CloseWrite wrote %d bytes without error", n)
	}
	got, err := io.ReadAll(as)
	if err != nil || string(got) != "request" {
		e.t.Fatalf("acceptor read %q, %v; want %q then io.EOF", got, err, "request")
	}
	if n, err := as.Read(make([]byte, 8)); n != 0 || err != io.EOF {
		e.t.Errorf("Read after io.EOF: %d, %v; want 0, io.EOF", n, err)
	}
	if _, err := as.Write([]byte("response")); err != nil {
		e.t.Fatalf("acceptor's write after the dialer's CloseWrite: %v", err)
	}
	if err := as.CloseWrite(); err != nil {
		e.t.Fatalf("acceptor's CloseWrite: %v", err)
	}
	got, err = io.ReadAll(ds)
	if err != nil || string(got) != "response" {
		e.t.Fatalf("dialer read %q, %v; want %q then io.EOF", got, err, "response")
	}
}

// testCloseStream: Close delivers what was written and then io.EOF to the
// peer; the closed end refuses Reads and Writes.
func testCloseStream(e *env) {
	a, b := e.node("alice"), e.node("bob")
	l := e.listen(a, transport.ProtoControl)
	ds, as := e.open(b, a, l, transport.DialOptions{})
	if _, err := ds.Write([]byte("last words")); err != nil {
		e.t.Fatal(err)
	}
	if err := ds.Close(); err != nil {
		e.t.Fatalf("Close: %v", err)
	}
	got, err := io.ReadAll(as)
	if err != nil || string(got) != "last words" {
		e.t.Fatalf("peer read %q, %v; want %q then io.EOF", got, err, "last words")
	}
	if n, err := ds.Write([]byte("x")); err == nil {
		e.t.Errorf("Write after Close wrote %d bytes without error", n)
	}
	if n, err := ds.Read(make([]byte, 8)); err == nil {
		e.t.Errorf("Read after Close read %d bytes without error", n)
	}
}

// testCloseTransport: closing an endpoint unblocks its Accepts (ErrClosed)
// and the Reads on both ends of its streams, and refuses Dial and Listen
// (ErrClosed); closing it twice is harmless.
func testCloseTransport(e *env) {
	a, b := e.node("alice"), e.node("bob")
	l := e.listen(a, transport.ProtoRaft)
	idle := e.listen(a, transport.ProtoControl)
	ds, as := e.open(b, a, l, transport.DialOptions{})
	accepted, readA, readB := make(chan error, 1), make(chan error, 1), make(chan error, 1)
	var wg sync.WaitGroup
	wg.Go(func() {
		s, err := idle.Accept(e.ctx)
		if s != nil {
			s.Close()
		}
		accepted <- err
	})
	wg.Go(func() { _, err := as.Read(make([]byte, 8)); readA <- err })
	wg.Go(func() { _, err := ds.Read(make([]byte, 8)); readB <- err })
	defer wg.Wait()
	if err := a.Close(); err != nil {
		e.t.Errorf("Close: %v", err)
	}
	if err := waitErr(e.t, "Accept", accepted); !errors.Is(err, transport.ErrClosed) {
		e.t.Errorf("Accept on the closed endpoint: %v, want ErrClosed", err)
	}
	if err := waitErr(e.t, "Read on the closed endpoint's stream", readA); err == nil {
		e.t.Errorf("Read on the closed endpoint's stream returned no error")
	}
	if err := waitErr(e.t, "the peer's Read", readB); err == nil {
		e.t.Errorf("the peer's Read returned no error after the endpoint closed")
	}
	if s, err := l.Accept(e.ctx); !errors.Is(err, transport.ErrClosed) {
		if s != nil {
			s.Close()
		}
		e.t.Errorf("Accept after Close: %v, want ErrClosed", err)
	}
	if s, err := a.Dial(e.ctx, b.Self(), b.Addr(), transport.ProtoRaft, transport.DialOptions{}); !errors.Is(err, transport.ErrClosed) {
		if s != nil {
			s.Close()
		}
		e.t.Errorf("Dial from the closed endpoint: %v, want ErrClosed", err)
	}
	if l, err := a.Listen(transport.ProtoRing); !errors.Is(err, transport.ErrClosed) {
		if l != nil {
			l.Close()
		}
		e.t.Errorf("Listen on the closed endpoint: %v, want ErrClosed", err)
	}
	a.Close() // twice: must not panic or hang
}

// testReadDeadline: a read deadline ends a Read with a timeout, including
// one already waiting and one set in the past; the stream works again once
// the deadline is moved.
func testReadDeadline(e *env) {
	const d = 50 * time.Millisecond
	a, b := e.node("alice"), e.node("bob")
	l := e.listen(a, transport.ProtoRaft)
	ds, as := e.open(b, a, l, transport.DialOptions{})
	buf := make([]byte, 16)

	start := time.Now()
	as.SetReadDeadline(start.Add(d))
	if n, err := as.Read(buf); !isTimeout(err) {
		e.t.Fatalf("Read past the deadline: %d, %v; want a timeout wrapping os.ErrDeadlineExceeded", n, err)
	}
	if took := time.Since(start); took < d-5*time.Millisecond || took > unblockWithin {
		e.t.Errorf("Read with a %v deadline returned after %v", d, took)
	}

	as.SetReadDeadline(time.Now().Add(time.Hour))
	done := make(chan error, 1)
	go func() { _, err := as.Read(buf); done <- err }()
	as.SetReadDeadline(time.Now()) // moves the deadline of the waiting Read
	if err := waitErr(e.t, "waiting Read", done); !isTimeout(err) {
		e.t.Fatalf("waiting Read after its deadline moved: %v; want a timeout", err)
	}

	as.SetReadDeadline(time.Now().Add(-time.Second))
	if _, err := as.Read(buf); !isTimeout(err) {
		e.t.Fatalf("Read with a deadline in the past: %v; want a timeout", err)
	}

	as.SetReadDeadline(time.Time{})
	if _, err := ds.Write([]byte("after")); err != nil {
		e.t.Fatal(err)
	}
	as.SetReadDeadline(time.Now().Add(caseTimeout))
	if _, err := io.ReadFull(as, buf[:5]); err != nil || string(buf[:5]) != "after" {
		e.t.Fatalf("read after the deadlines: %q, %v", buf[:5], err)
	}
}

// testWriteDeadline: a write deadline ends a Write with a timeout, both one
// set in the past and one that passes while the Write is blocked because
// the peer does not read (flow control must bound what is buffered).
func testWriteDeadline(e *env) {
	const limit = 64 << 20 // a transport that buffers this much has no flow control
	a, b := e.node("alice"), e.node("bob")
	l := e.listen(a, transport.ProtoRing)
	ds, _ := e.open(b, a, l, transport.DialOptions{})

	ds.SetWriteDeadline(time.Now().Add(-time.Second))
	if _, err := ds.Write([]byte("x")); !isTimeout(err) {
		e.t.Fatalf("Write with a deadline in the past: %v; want a timeout wrapping os.ErrDeadlineExceeded", err)
	}

	ds.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	chunk := make([]byte, 256<<10)
	total := 0
	var err error
	for total < limit && err == nil {
		var n int
		n, err = ds.Write(chunk)
		total += n
	}
	if !isTimeout(err) {
		e.t.Fatalf("Write to a peer that does not read: %d bytes written, then %v; want a timeout before %d bytes", total, err, limit)
	}
}

// testDialContext: Dial with an ended context fails with the context's error.
func testDialContext(e *env) {
	a, b := e.node("alice"), e.node("bob")
	l := e.listen(a, transport.ProtoRaft)
	ctx, cancel := context.WithCancel(e.ctx)
	cancel()
	if s, err := b.Dial(ctx, a.Self(), a.Addr(), transport.ProtoRaft, transport.DialOptions{}); !errors.Is(err, context.Canceled) {
		if s != nil {
			s.Close()
		}
		e.t.Fatalf("Dial with a cancelled context: %v, want context.Canceled", err)
	}
	ctx, cancel = context.WithDeadline(e.ctx, time.Now().Add(-time.Second))
	defer cancel()
	if s, err := b.Dial(ctx, a.Self(), a.Addr(), transport.ProtoRaft, transport.DialOptions{}); !errors.Is(err, context.DeadlineExceeded) {
		if s != nil {
			s.Close()
		}
		e.t.Fatalf("Dial with an expired context: %v, want context.DeadlineExceeded", err)
	}
	ds, as := e.open(b, a, l, transport.DialOptions{})
	exchange(e.t, ds, as, "dialled after the failures")
}

// testAcceptContext: Accept ends with its context (before and while it
// waits), and the listener still works afterwards.
func testAcceptContext(e *env) {
	a, b := e.node("alice"), e.node("bob")
	l := e.listen(a, transport.ProtoRaft)

	ctx, cancel := context.WithCancel(e.ctx)
	cancel()
	if s, err := l.Accept(ctx); !errors.Is(err, context.Canceled) {
		if s != nil {
			s.Close()
		}
		e.t.Fatalf("Accept with a cancelled context: %v, want context.Canceled", err)
	}

	ctx, cancel = context.WithTimeout(e.ctx, 50*time.Millisecond)
	defer cancel()
	if s, err := l.Accept(ctx); !errors.Is(err, context.DeadlineExceeded) {
		if s != nil {
			s.Close()
		}
		e.t.Fatalf("Accept with a 50ms timeout and nothing to accept: %v, want context.DeadlineExceeded", err)
	}

	ctx, cancel = context.WithCancel(e.ctx)
	done := make(chan error, 1)
	go func() {
		s, err := l.Accept(ctx)
		if s != nil {
			s.Close()
		}
		done <- err
	}()
	cancel()
	if err := waitErr(e.t, "Accept after its context was cancelled", done); !errors.Is(err, context.Canceled) {
		e.t.Fatalf("waiting Accept after its context was cancelled: %v, want context.Canceled", err)
	}

	ds, as := e.open(b, a, l, transport.DialOptions{})
	exchange(e.t, ds, as, "accepted after the cancellations")
}
