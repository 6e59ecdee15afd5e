package quic

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	quicgo "github.com/quic-go/quic-go"
	"go.uber.org/goleak"

	"github.com/braidml/braid/transport"
	"github.com/braidml/braid/transport/pki"
	"github.com/braidml/braid/transport/pki/pkitest"
)

// cluster is a CA that issues node credentials (pkitest).
type cluster = pkitest.CA

func newCluster(t *testing.T) *cluster { return pkitest.NewCA(t) }

func TestMain(m *testing.M) {
	// quic-go warns once per process when it cannot enlarge the UDP
	// buffers (containers); the warning is noise in tests.
	os.Setenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING", "true")
	goleak.VerifyTestMain(m)
}

// rawCreds builds credentials without LoadNode's checks: certificate and
// key of name from dir, trusting the CA in trustDir.
func rawCreds(t *testing.T, dir, name, trustDir string) *pki.NodeCreds {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, pki.CertFile(name)), filepath.Join(dir, pki.KeyFile(name)))
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(filepath.Join(trustDir, pki.CAFile))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	return &pki.NodeCreds{ID: transport.PeerID(name), Cert: cert, Pool: pool}
}

// testLogger sends a node's log to t.Log and counts warnings.
type testLogger struct {
	t     *testing.T
	mu    sync.Mutex
	lines []string
}

func (l *testLogger) Write(p []byte) (int, error) {
	l.mu.Lock()
	l.lines = append(l.lines, string(p))
	l.mu.Unlock()
	l.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func (l *testLogger) contains(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range l.lines {
		if strings.Contains(line, s) {
			return true
		}
	}
	return false
}

// start runs a node on a loopback port with creds; it closes with the test.
func start(t *testing.T, creds Credentials, tune ...func(*Config)) (*Transport, *testLogger) {
	t.Helper()
	log := &testLogger{t: t}
	cfg := DefaultConfig()
	cfg.ListenAddr = "127.0.0.1:0"
	cfg.Creds = creds
	cfg.HandshakeTimeout = 3 * time.Second
	cfg.Logger = slog.New(slog.NewTextHandler(log, nil))
	for _, f := range tune {
		f(&cfg)
	}
	tr, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := tr.Close(); err != nil {
			t.Errorf("close %s: %v", tr.Self(), err)
		}
	})
	return tr, log
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func listen(t *testing.T, tr *Transport, p transport.Protocol) transport.Listener {
	t.Helper()
	l, err := tr.Listen(p)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// accept accepts one stream in the background.
func accept(l transport.Listener, d time.Duration) <-chan transport.Stream {
	ch := make(chan transport.Stream, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		s, _ := l.Accept(ctx)
		ch <- s
	}()
	return ch
}

func TestStreamRoundTrip(t *testing.T) {
	c := newCluster(t)
	a, _ := start(t, c.Creds("a"))
	b, _ := start(t, c.Creds("b"))
	l := listen(t, b, transport.ProtoRing)
	got := accept(l, 10*time.Second)

	s, err := a.Dial(ctxT(t, 10*time.Second), "b", b.Addr(), transport.ProtoRing, transport.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	msg := bytes.Repeat([]byte("braid "), 100_000) // several flow-control windows' worth
	go func() {
		s.Write(msg)
		s.CloseWrite()
	}()
	r := <-got
	if r == nil {
		t.Fatal("no stream accepted")
	}
	defer r.Close()
	if r.Peer() != "a" || s.Peer() != "b" || r.Protocol() != transport.ProtoRing || s.Protocol() != transport.ProtoRing {
		t.Errorf("identities: accepted peer %q proto %q, dialled peer %q proto %q", r.Peer(), r.Protocol(), s.Peer(), s.Protocol())
	}
	if s.RemoteAddr().String() != b.Addr() || r.LocalAddr().String() != b.Addr() || r.RemoteAddr().String() != a.Addr() {
		t.Errorf("addrs: dialled remote %v, accepted local %v remote %v; nodes a=%s b=%s",
			s.RemoteAddr(), r.LocalAddr(), r.RemoteAddr(), a.Addr(), b.Addr())
	}
	body, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(body, msg) {
		t.Fatalf("read %d bytes, %v; want %d", len(body), err, len(msg))
	}
	// The other direction still works after CloseWrite.
	if _, err := r.Write([]byte("ok")); err != nil {
		t.Fatal(err)
	}
	r.Close()
	back, err := io.ReadAll(s)
	if err != nil || string(back) != "ok" {
		t.Errorf("reply %q, %v", back, err)
	}
	// Reads and writes after Close fail with net.ErrClosed.
	s.Close()
	if _, err := s.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("write after close: %v", err)
	}
}

func TestListenRules(t *testing.T) {
	c := newCluster(t)
	a, _ := start(t, c.Creds("a"))
	b, _ := start(t, c.Creds("b"))
	ctx := ctxT(t, 10*time.Second)

	if _, err := a.Dial(ctx, "b", b.Addr(), "shard", transport.DialOptions{}); !errors.Is(err, transport.ErrNotListening) {
		t.Fatalf("dial without listener: %v, want ErrNotListening", err)
	}
	if _, err := a.Dial(ctx, "b", b.Addr(), "Bad Name", transport.DialOptions{}); !errors.Is(err, transport.ErrBadProtocol) {
		t.Errorf("bad protocol: %v", err)
	}
	l := listen(t, b, "shard")
	if _, err := b.Listen("shard"); !errors.Is(err, transport.ErrAlreadyListens) {
		t.Errorf("second Listen: %v", err)
	}
	got := accept(l, 10*time.Second)
	s, err := a.Dial(ctx, "b", b.Addr(), "shard", transport.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if r := <-got; r == nil {
		t.Error("nothing accepted")
	} else {
		r.Close()
	}
	l.Close()
	if _, err := l.Accept(ctx); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Accept after Close: %v", err)
	}
	if _, err := a.Dial(ctx, "b", b.Addr(), "shard", transport.DialOptions{}); !errors.Is(err, transport.ErrNotListening) {
		t.Errorf("dial after listener closed: %v", err)
	}
	l2 := listen(t, b, "shard") // a protocol can be listened for again
	l2.Close()
}

func TestWrongPeer(t *testing.T) {
	c := newCluster(t)
	a, _ := start(t, c.Creds("a"))
	b, _ := start(t, c.Creds("b"))
	listen(t, b, transport.ProtoControl)
	ctx := ctxT(t, 10*time.Second)

	// A new connection: the handshake itself fails.
	_, err := a.Dial(ctx, "c", b.Addr(), transport.ProtoControl, transport.DialOptions{})
	if !errors.Is(err, transport.ErrWrongPeer) || !strings.Contains(err.Error(), b.Addr()) {
		t.Fatalf("dial c at b's address: %v, want ErrWrongPeer naming %s", err, b.Addr())
	}
	// A cached connection to b is not reused for another name.
	s, err := a.Dial(ctx, "b", b.Addr(), transport.ProtoControl, transport.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := a.Dial(ctx, "c", b.Addr(), transport.ProtoControl, transport.DialOptions{}); !errors.Is(err, transport.ErrWrongPeer) {
		t.Errorf("dial c over b's cached connection: %v, want ErrWrongPeer", err)
	}
}

// TestHandshakeRefused: a peer without a valid certificate never gets past
// the handshake: nothing reaches a listener and the dialler's error names
// the peer and the address.
func TestHandshakeRefused(t *testing.T) {
	c := newCluster(t)
	b, _ := start(t, c.Creds("b"))
	l := listen(t, b, transport.ProtoRaft)
	other := newCluster(t)
	other.Creds("a")
	if err := pki.IssueBetween(c.Dir, "old", nil, time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		what  string
		creds *pki.NodeCreds
	}{
		// Signed by another CA, but trusting ours, so only the server can
		// say no.
		{"other CA", rawCreds(t, other.Dir, "a", c.Dir)},
		{"expired", rawCreds(t, c.Dir, "old", c.Dir)},
	} {
		t.Run(tc.what, func(t *testing.T) {
			a, _ := start(t, tc.creds)
			_, err := a.Dial(ctxT(t, 10*time.Second), "b", b.Addr(), transport.ProtoRaft, transport.DialOptions{})
			if err == nil {
				t.Fatal("dial succeeded")
			}
			if !errors.Is(err, transport.ErrUnreachable) || !strings.Contains(err.Error(), `b at `+b.Addr()) {
				t.Errorf("error %q: want ErrUnreachable naming b at %s", err, b.Addr())
			}
			t.Logf("refused as expected: %v", err)
		})
	}

	t.Run("no client certificate", func(t *testing.T) {
		cc := c.Creds("a").ClientConfig("b")
		cc.Certificates = nil
		err := rawDial(t, b.Addr(), cc)
		if err == nil {
			t.Fatal("stream exchange succeeded without a client certificate")
		}
		t.Logf("refused as expected: %v", err)
	})
	t.Run("ALPN mismatch", func(t *testing.T) {
		cc := c.Creds("a").ClientConfig("b")
		cc.NextProtos = []string{"h3"}
		err := rawDial(t, b.Addr(), cc)
		if err == nil || !strings.Contains(err.Error(), "application protocol") {
			t.Fatalf("dial with ALPN h3: %v, want no application protocol", err)
		}
	})

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if s, err := l.Accept(ctx); err == nil {
		t.Errorf("listener accepted a stream from %q", s.Peer())
	}
	b.mu.Lock()
	n := len(b.accepted)
	b.mu.Unlock()
	if n != 0 {
		t.Errorf("%d connections accepted", n)
	}
}

// rawDial dials addr with quic-go directly and tries to open a raft stream.
func rawDial(t *testing.T, addr string, tc *tls.Config) error {
	t.Helper()
	ctx := ctxT(t, 5*time.Second)
	conn, err := quicgo.DialAddr(ctx, addr, tc, &quicgo.Config{HandshakeIdleTimeout: 2 * time.Second})
	if err != nil {
		return err
	}
	defer conn.CloseWithError(0, "")
	s, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return err
	}
	if err := transport.WriteStreamHeader(s, transport.ProtoRaft); err != nil {
		return err
	}
	var status [1]byte
	_, err = io.ReadFull(s, status[:])
	return err
}

// TestLanes: four lanes are four connections; lane numbers wrap.
func TestLanes(t *testing.T) {
	c := newCluster(t)
	a, _ := start(t, c.Creds("a"))
	b, _ := start(t, c.Creds("b"))
	listen(t, b, transport.ProtoRing)
	ctx := ctxT(t, 10*time.Second)

	conns := map[*quicgo.Conn]int{}
	var lane0 *quicgo.Conn
	for lane := range 6 {
		s, err := a.Dial(ctx, "b", b.Addr(), transport.ProtoRing, transport.DialOptions{Lane: lane})
		if err != nil {
			t.Fatal(err)
		}
		conn := s.(*stream).conn
		conns[conn]++
		if lane == 0 {
			lane0 = conn
		}
		if lane == 4 && conn != lane0 {
			t.Error("lane 4 does not share lane 0's connection")
		}
		s.Close()
	}
	if len(conns) != 4 {
		t.Errorf("6 dials on lanes 0..5 used %d connections, want 4", len(conns))
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		b.mu.Lock()
		n := len(b.accepted)
		b.mu.Unlock()
		if n == 4 || time.Now().After(deadline) {
			if n != 4 {
				t.Errorf("b accepted %d connections, want 4", n)
			}
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestMalformedHeader: a stream with a bad header is reset and logged; the
// connection and the node go on serving.
func TestMalformedHeader(t *testing.T) {
	c := newCluster(t)
	b, blog := start(t, c.Creds("b"), func(cfg *Config) { cfg.HeaderTimeout = 500 * time.Millisecond })
	l := listen(t, b, transport.ProtoControl)
	ctx := ctxT(t, 10*time.Second)

	conn, err := quicgo.DialAddr(ctx, b.Addr(), c.Creds("a").ClientConfig("b"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseWithError(0, "")
	for _, bad := range [][]byte{
		[]byte("HTTP/1.1 GET /\r\n"),    // wrong magic
		[]byte("BRD1\x00"),              // empty protocol name
		[]byte("BRD1\x04RAFT"),          // outside the alphabet
		[]byte("BRD1\x0bcontrol"),       // too short, then silence: header timeout
		append([]byte("BRD1\x21"), 'a'), // 33-byte name
	} {
		s, err := conn.OpenStreamSync(ctx)
		if err != nil {
			t.Fatal(err)
		}
		s.Write(bad)
		s.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = s.Read(make([]byte, 1))
		var se *quicgo.StreamError
		if !errors.As(err, &se) || se.ErrorCode != streamBadHeader {
			t.Errorf("header %q: read %v, want stream reset with code %d", bad, err, streamBadHeader)
		}
		s.CancelWrite(0)
	}
	if !blog.contains("bad stream header") {
		t.Error("no warning logged")
	}
	// The same connection still carries good streams.
	got := accept(l, 10*time.Second)
	s, err := conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	transport.WriteStreamHeader(s, transport.ProtoControl)
	var status [1]byte
	if _, err := io.ReadFull(s, status[:]); err != nil || status[0] != transport.StatusOK {
		t.Fatalf("good header after bad ones: status %d, %v", status[0], err)
	}
	if r := <-got; r == nil || r.Peer() != "a" {
		t.Errorf("accepted %v", r)
	} else {
		r.Close()
	}
	s.CancelRead(0)
	s.Close()
}

// TestRedial: when the peer restarts on the same address, the cached
// connection is found dead and redialled.
func TestRedial(t *testing.T) {
	c := newCluster(t)
	a, _ := start(t, c.Creds("a"))
	bc := c.Creds("b")
	b, _ := start(t, bc)
	addr := b.Addr()
	listen(t, b, transport.ProtoBlob)
	ctx := ctxT(t, 20*time.Second)
	s, err := a.Dial(ctx, "b", addr, transport.ProtoBlob, transport.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	b.Close()
	b2, _ := start(t, bc, func(cfg *Config) { cfg.ListenAddr = addr })
	listen(t, b2, transport.ProtoBlob)
	s, err = a.Dial(ctx, "b", addr, transport.ProtoBlob, transport.DialOptions{})
	if err != nil {
		t.Fatalf("dial after restart: %v", err)
	}
	s.Close()
}

// TestClose: Close unblocks readers, acceptors and later calls.
func TestClose(t *testing.T) {
	c := newCluster(t)
	a, _ := start(t, c.Creds("a"))
	b, _ := start(t, c.Creds("b"))
	l := listen(t, b, transport.ProtoRing)
	got := accept(l, 10*time.Second)
	ctx := ctxT(t, 10*time.Second)
	s, err := a.Dial(ctx, "b", b.Addr(), transport.ProtoRing, transport.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r := <-got
	if r == nil {
		t.Fatal("nothing accepted")
	}
	readErr := make(chan error, 2)
	go func() { _, err := s.Read(make([]byte, 1)); readErr <- err }()
	go func() { _, err := r.Read(make([]byte, 1)); readErr <- err }()
	acceptErr := make(chan error, 1)
	go func() { _, err := l.Accept(context.Background()); acceptErr <- err }()

	b.Close()
	for range 2 {
		select {
		case err := <-readErr:
			if err == nil {
				t.Error("read returned no error")
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a read stayed blocked after Close")
		}
	}
	if err := <-acceptErr; !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Accept: %v", err)
	}
	if _, err := b.Dial(ctx, "a", a.Addr(), transport.ProtoRing, transport.DialOptions{}); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Dial after Close: %v", err)
	}
	if _, err := b.Listen(transport.ProtoRaft); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Listen after Close: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestCloseUnblocksWrite: a Write blocked on flow control returns when the
// stream is closed.
func TestCloseUnblocksWrite(t *testing.T) {
	c := newCluster(t)
	a, _ := start(t, c.Creds("a"))
	b, _ := start(t, c.Creds("b"))
	l := listen(t, b, transport.ProtoRing)
	got := accept(l, 10*time.Second)
	s, err := a.Dial(ctxT(t, 10*time.Second), "b", b.Addr(), transport.ProtoRing, transport.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r := <-got
	defer r.Close()
	done := make(chan error, 1)
	go func() { _, err := s.Write(make([]byte, 64<<20)); done <- err }() // nobody reads
	time.Sleep(100 * time.Millisecond)
	s.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("write: %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Write stayed blocked after Close")
	}
}

func TestDialContext(t *testing.T) {
	c := newCluster(t)
	a, _ := start(t, c.Creds("a"))
	// A UDP socket that never answers.
	silent, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = a.Dial(ctx, "b", silent.LocalAddr().String(), transport.ProtoRaft, transport.DialOptions{})
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), silent.LocalAddr().String()) {
		t.Errorf("dial to a silent address: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("dial took %v past a 300ms deadline", d)
	}
}

func TestConfigValidate(t *testing.T) {
	c := newCluster(t)
	good := DefaultConfig()
	good.Creds = c.Creds("a")
	if err := good.Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	for _, tc := range []struct {
		field string
		edit  func(*Config)
	}{
		{"ListenAddr", func(c *Config) { c.ListenAddr = "nohostport" }},
		{"ListenAddr", func(c *Config) { c.ListenAddr = "127.0.0.1:99999" }},
		{"AdvertiseAddr", func(c *Config) { c.AdvertiseAddr = "10.0.0.1:0" }},
		{"Creds", func(c *Config) { c.Creds = nil }},
		{"Lanes", func(c *Config) { c.Lanes = 0 }},
		{"Lanes", func(c *Config) { c.Lanes = MaxLanes + 1 }},
		{"IdleTimeout", func(c *Config) { c.IdleTimeout = 0 }},
		{"KeepAlive", func(c *Config) { c.KeepAlive = c.IdleTimeout }},
		{"HandshakeTimeout", func(c *Config) { c.HandshakeTimeout = 0 }},
		{"HeaderTimeout", func(c *Config) { c.HeaderTimeout = -1 }},
		{"MaxStreams", func(c *Config) { c.MaxStreams = 0 }},
	} {
		cfg := good
		tc.edit(&cfg)
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "Config."+tc.field) {
			t.Errorf("%s: %v, want an error naming Config.%s", tc.field, err, tc.field)
		}
	}
}

// TestRedialAfterCrash: a peer that dies without closing its connections
// and restarts on the same address resets them statelessly (its reset key
// derives from its private key), so the next Dial redials at once instead
// of waiting for the idle timeout.
func TestRedialAfterCrash(t *testing.T) {
	c := newCluster(t)
	a, _ := start(t, c.Creds("a"))
	bc := c.Creds("b")
	b, _ := start(t, bc)
	addr := b.Addr()
	listen(t, b, transport.ProtoBlob)
	s, err := a.Dial(ctxT(t, 10*time.Second), "b", addr, transport.ProtoBlob, transport.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	// Crash: quic-go's Transport.Close sends no CONNECTION_CLOSE.
	b.qt.Close()
	b.udp.Close()
	b.Close()

	b2, _ := start(t, bc, func(cfg *Config) { cfg.ListenAddr = addr })
	listen(t, b2, transport.ProtoBlob)
	begin := time.Now()
	s, err = a.Dial(ctxT(t, 5*time.Second), "b", addr, transport.ProtoBlob, transport.DialOptions{})
	if err != nil {
		t.Fatalf("dial after crash and restart: %v", err)
	}
	s.Close()
	t.Logf("redialled in %v", time.Since(begin))
}

// TestSelfDial: a node can open streams to itself.
func TestSelfDial(t *testing.T) {
	c := newCluster(t)
	a, _ := start(t, c.Creds("a"))
	l := listen(t, a, transport.ProtoControl)
	got := accept(l, 10*time.Second)
	s, err := a.Dial(ctxT(t, 10*time.Second), "a", a.Addr(), transport.ProtoControl, transport.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r := <-got
	if r == nil || r.Peer() != "a" {
		t.Fatalf("accepted %v", r)
	}
	r.Close()
}

// SegmentationOffload says no, and why, when quic-go is told not to use it.
func TestSegmentationOffloadDisabled(t *testing.T) {
	t.Setenv("QUIC_GO_DISABLE_GSO", "true")
	if gso, why := SegmentationOffload(); gso || !strings.Contains(why, "QUIC_GO_DISABLE_GSO") {
		t.Errorf("SegmentationOffload() = %v, %q with QUIC_GO_DISABLE_GSO=true", gso, why)
	}
	os.Unsetenv("QUIC_GO_DISABLE_GSO")
	gso, why := SegmentationOffload()
	t.Logf("this machine: GSO %v %s", gso, why)
}

// Forget drops the connections to a peer, and the next Dial makes a new
// one: what a node does when gossip sees that peer join again.
func TestForget(t *testing.T) {
	c := newCluster(t)
	a, _ := start(t, c.Creds("a"))
	b, _ := start(t, c.Creds("b"))
	listen(t, b, transport.ProtoControl)
	s, err := a.Dial(ctxT(t, 10*time.Second), "b", b.Addr(), transport.ProtoControl, transport.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n := a.Forget("b"); n != 1 {
		t.Fatalf("Forget closed %d connections, want 1", n)
	}
	if _, err := io.ReadAll(s); err == nil {
		t.Error("a stream of the forgotten connection still reads")
	}
	if n := a.Forget("b"); n != 0 {
		t.Errorf("a second Forget closed %d", n)
	}
	s, err = a.Dial(ctxT(t, 10*time.Second), "b", b.Addr(), transport.ProtoControl, transport.DialOptions{})
	if err != nil {
		t.Fatalf("dial after Forget: %v", err)
	}
	s.Close()
}
