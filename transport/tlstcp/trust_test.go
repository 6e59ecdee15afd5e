package tlstcp

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/braidml/braid/transport"
	"github.com/braidml/braid/transport/pki"
)

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// open dials a stream from b to a for p and returns both ends.
func open(t *testing.T, a, b *Transport, l transport.Listener) (dialled, accepted transport.Stream) {
	t.Helper()
	got := make(chan transport.Stream, 1)
	go func() {
		s, _ := l.Accept(ctxT(t, 10*time.Second))
		got <- s
	}()
	d, err := b.Dial(ctxT(t, 10*time.Second), a.Self(), a.Addr(), l.Protocol(), transport.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	s := <-got
	if s == nil {
		t.Fatal("nothing accepted")
	}
	t.Cleanup(func() { s.Close() })
	return d, s
}

// A node of another cluster (another CA) can neither dial in nor be
// dialled: the handshake fails and nothing reaches a listener.
func TestOtherClusterRefused(t *testing.T) {
	a := start(t, newCluster(t).Creds("a"))
	mallory := start(t, newCluster(t).Creds("a")) // same name, other CA
	l, err := a.Listen(transport.ProtoRing)
	if err != nil {
		t.Fatal(err)
	}
	if s, err := mallory.Dial(ctxT(t, 5*time.Second), "a", a.Addr(), transport.ProtoRing, transport.DialOptions{}); err == nil {
		s.Close()
		t.Fatal("a node of another cluster dialled in")
	} else if !errors.Is(err, transport.ErrUnreachable) {
		t.Errorf("dial from another cluster: %v, want ErrUnreachable", err)
	}
	if s, err := a.Dial(ctxT(t, 5*time.Second), "a", mallory.Addr(), transport.ProtoRing, transport.DialOptions{}); err == nil {
		s.Close()
		t.Fatal("a dialled a node of another cluster")
	}
	if s, err := l.Accept(ctxT(t, 200*time.Millisecond)); err == nil {
		s.Close()
		t.Fatal("a stream from another cluster reached the listener")
	}
}

// Bytes that are not TLS, and a client that connects and says nothing,
// are dropped without harm; the transport goes on serving.
func TestGarbageAndSilentClients(t *testing.T) {
	c := newCluster(t)
	a, b := start(t, c.Creds("a")), start(t, c.Creds("b"))
	l, _ := a.Listen(transport.ProtoControl)
	junk, err := net.Dial("tcp", a.Addr())
	if err != nil {
		t.Fatal(err)
	}
	junk.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	if _, err := io.ReadAll(junk); err != nil && !errors.Is(err, net.ErrClosed) {
		t.Logf("garbage client: %v", err)
	}
	junk.Close()
	silent, err := net.Dial("tcp", a.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	d, s := open(t, a, b, l)
	if _, err := d.Write([]byte("ok")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2)
	if _, err := io.ReadFull(s, buf); err != nil || string(buf) != "ok" {
		t.Fatalf("after the garbage: read %q, %v", buf, err)
	}
	if s.Peer() != "b" || d.Peer() != "a" {
		t.Errorf("peers %q and %q, want b and a", s.Peer(), d.Peer())
	}
}

// Revoking b's certificate on a and revalidating cuts b's streams, and b's
// next dials are refused, while c still talks to a.
func TestRevalidateCutsOffRevokedPeer(t *testing.T) {
	cl := newCluster(t)
	ra, rb, rc := cl.Reloader("a"), cl.Reloader("b"), cl.Reloader("c")
	a, b, cNode := start(t, ra), start(t, rb), start(t, rc)
	l, _ := a.Listen(transport.ProtoRing)
	d, _ := open(t, a, b, l)
	if cut := a.Revalidate(); len(cut) != 0 {
		t.Fatalf("nothing revoked yet, cut %v", cut)
	}
	ra.SetRevoked([]string{pki.Serial(rb.Current().Cert.Leaf)})
	if cut := a.Revalidate(); len(cut) != 1 || cut[0] != "b" {
		t.Fatalf("cut %v, want [b]", cut)
	}
	if _, err := io.ReadAll(d); err == nil {
		t.Log("b's stream ended with io.EOF") // a's close_notify: ended all the same
	}
	if s, err := b.Dial(ctxT(t, 5*time.Second), "a", a.Addr(), transport.ProtoRing, transport.DialOptions{}); err == nil {
		s.Close()
		t.Fatal("b dialled a after its certificate was revoked")
	}
	cs, err := cNode.Dial(ctxT(t, 5*time.Second), "a", a.Addr(), transport.ProtoRing, transport.DialOptions{})
	if err != nil {
		t.Fatalf("c dialling a: %v", err)
	}
	cs.Close()
}

// At most MaxPending connections wait in their handshake; more are closed
// at once, and the transport serves again once they go.
func TestPendingConnectionsBounded(t *testing.T) {
	c := newCluster(t)
	cfg := DefaultConfig()
	cfg.ListenAddr, cfg.Creds, cfg.MaxPending, cfg.HandshakeTimeout = "127.0.0.1:0", c.Creds("a"), 2, 500*time.Millisecond
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	var idle []net.Conn
	for range 2 {
		conn, err := net.Dial("tcp", a.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		idle = append(idle, conn)
	}
	// The third is closed at once while the two wait.
	third, err := net.Dial("tcp", a.Addr())
	if err != nil {
		t.Fatal(err)
	}
	third.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := third.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("third connection: %v, want io.EOF (closed at once)", err)
	}
	third.Close()
	// After the handshake timeout the two are dropped and dials work.
	for _, conn := range idle {
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		io.ReadAll(conn)
	}
	b := start(t, c.Creds("b"))
	l, _ := a.Listen(transport.ProtoControl)
	open(t, a, b, l)
}

// Close while a Write is blocked on a peer that does not read returns at
// once, and the Write fails.
func TestCloseUnblocksWrite(t *testing.T) {
	c := newCluster(t)
	a, b := start(t, c.Creds("a")), start(t, c.Creds("b"))
	l, _ := a.Listen(transport.ProtoRing)
	d, _ := open(t, a, b, l)
	wrote := make(chan error, 1)
	go func() {
		chunk := make([]byte, 1<<20)
		for {
			if _, err := d.Write(chunk); err != nil {
				wrote <- err
				return
			}
		}
	}()
	// The peer reads nothing: the writer blocks once the buffers are full.
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	d.Close()
	select {
	case err := <-wrote:
		t.Logf("write after Close: %v (%v)", err, time.Since(start))
	case <-time.After(3 * time.Second):
		t.Fatal("Close did not unblock the Write")
	}
	if time.Since(start) > time.Second {
		t.Errorf("Close took %v", time.Since(start))
	}
}
