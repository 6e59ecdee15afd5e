package blobstore_test

import (
	"bytes"
	"context"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/braidml/braid/node/blobstore"
	"github.com/braidml/braid/transport"
	"github.com/braidml/braid/transport/memnet"
)

func TestMain(m *testing.M) {
	// quic-go warns once per process when it cannot enlarge the UDP
	// buffers (containers); the warning is noise in tests.
	os.Setenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING", "true")
	goleak.VerifyTestMain(m)
}

// testLog is a slog destination that forwards to t.Log and keeps the lines
// for assertions.
type testLog struct {
	t       testing.TB
	mu      sync.Mutex
	lines   []string
	changed chan struct{} // closed and replaced on each line
}

func newTestLog(t testing.TB) (*testLog, *slog.Logger) {
	l := &testLog{t: t, changed: make(chan struct{})}
	return l, slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func (l *testLog) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	l.mu.Lock()
	l.lines = append(l.lines, line)
	close(l.changed)
	l.changed = make(chan struct{})
	l.mu.Unlock()
	l.t.Log(line)
	return len(p), nil
}

// waitFor waits until a line contains every one of subs, failing the test
// when ctx ends first.
func (l *testLog) waitFor(ctx context.Context, subs ...string) string {
	l.t.Helper()
	for {
		l.mu.Lock()
		changed := l.changed
		l.mu.Unlock()
		if line, ok := l.find(subs...); ok {
			return line
		}
		select {
		case <-changed:
		case <-ctx.Done():
			l.t.Fatalf("no log line with %q: %v", subs, ctx.Err())
		}
	}
}

// find returns the first line containing every one of subs.
func (l *testLog) find(subs ...string) (string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
next:
	for _, line := range l.lines {
		for _, s := range subs {
			if !strings.Contains(line, s) {
				continue next
			}
		}
		return line, true
	}
	return "", false
}

// requireLogged fails t unless a line contains every one of subs, and
// shows the line.
func (l *testLog) requireLogged(t *testing.T, subs ...string) {
	t.Helper()
	line, ok := l.find(subs...)
	if !ok {
		t.Errorf("no log line with %q", subs)
		return
	}
	t.Logf("logged: %s", line)
}

// randomBytes returns n bytes from a generator seeded with seed.
func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 0x626c6f62))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// testNet is a memnet network of nodes, each with a store and (unless
// made with addClient) a Server on ProtoShard.
type testNet struct {
	t     *testing.T
	ctx   context.Context
	mem   *memnet.Network
	nodes map[transport.PeerID]*testNode
}

// testNode is one node of a testNet.
type testNode struct {
	id    transport.PeerID
	dir   string
	tr    *memnet.Transport
	store *blobstore.Store
	srv   *blobstore.Server
	log   *testLog
	stop  func() // stops the server and waits for it
}

func newTestNet(t *testing.T, seed uint64) *testNet {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	n := &testNet{t: t, ctx: ctx, mem: memnet.New(seed), nodes: map[transport.PeerID]*testNode{}}
	t.Cleanup(func() {
		for _, nd := range n.nodes {
			if nd.stop != nil {
				nd.stop()
			}
		}
		n.mem.Close()
		cancel()
	})
	return n
}

// addServer starts node id with a store and a server of it.
func (n *testNet) addServer(id transport.PeerID, tune ...func(*blobstore.ServerConfig)) *testNode {
	nd := n.addClient(id)
	n.serve(nd, tune...)
	return nd
}

// addClient starts node id with a store and no server.
func (n *testNet) addClient(id transport.PeerID) *testNode {
	n.t.Helper()
	tr, err := n.mem.Node(id)
	if err != nil {
		n.t.Fatal(err)
	}
	dir := n.t.TempDir()
	st, err := blobstore.Open(dir)
	if err != nil {
		n.t.Fatal(err)
	}
	log, _ := newTestLog(n.t)
	nd := &testNode{id: id, dir: dir, tr: tr, store: st, log: log}
	n.nodes[id] = nd
	return nd
}

// serve starts a server of nd's store on ProtoShard (replacing nd.srv).
func (n *testNet) serve(nd *testNode, tune ...func(*blobstore.ServerConfig)) {
	n.t.Helper()
	cfg := blobstore.DefaultServerConfig()
	cfg.Logger = slog.New(slog.NewTextHandler(nd.log, nil))
	for _, f := range tune {
		f(&cfg)
	}
	srv, err := blobstore.NewServer(nd.store, cfg)
	if err != nil {
		n.t.Fatal(err)
	}
	l, err := nd.tr.Listen(transport.ProtoShard)
	if err != nil {
		n.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(n.ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l) }()
	nd.srv = srv
	nd.stop = func() {
		cancel()
		l.Close()
		if err := <-done; err != nil {
			n.t.Errorf("%s: Serve: %v", nd.id, err)
		}
		nd.stop = nil
	}
}

// restart kills node id (as a crash would) and starts it again on the same
// store directory, with a new server.
func (n *testNet) restart(nd *testNode) {
	n.t.Helper()
	n.mem.Kill(nd.id)
	if nd.stop != nil {
		nd.stop()
	}
	tr, err := n.mem.Node(nd.id)
	if err != nil {
		n.t.Fatal(err)
	}
	st, err := blobstore.Open(nd.dir)
	if err != nil {
		n.t.Fatal(err)
	}
	nd.tr, nd.store = tr, st
	n.serve(nd)
}

func (nd *testNode) source() blobstore.Source {
	return blobstore.Source{Peer: nd.id, Addr: nd.tr.Addr()}
}

// put stores b on nd and returns its hash.
func (nd *testNode) put(t *testing.T, b []byte) string {
	t.Helper()
	h, size, err := nd.store.Put(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if size != int64(len(b)) || h != blobstore.Sum(b) {
		t.Fatalf("Put: %s, %d; want %s, %d", h, size, blobstore.Sum(b), len(b))
	}
	return h
}

// fetch fetches h from the sources into nd's store over ProtoShard.
func (nd *testNode) fetch(ctx context.Context, h string, size int64, opts blobstore.FetchOptions, from ...*testNode) error {
	var srcs []blobstore.Source
	for _, s := range from {
		srcs = append(srcs, s.source())
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(nd.log, nil))
	}
	return nd.store.Fetch(ctx, nd.tr, transport.ProtoShard, srcs, h, size, opts)
}

// requireObject fails unless nd stores exactly want under its hash.
func (nd *testNode) requireObject(t *testing.T, want []byte) {
	t.Helper()
	h := blobstore.Sum(want)
	p, err := nd.store.Path(h)
	if err != nil {
		t.Fatalf("%s: %v", nd.id, err)
	}
	got, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: object %.12s has %d bytes that differ from the %d wanted", nd.id, h, len(got), len(want))
	}
	if n, ok := nd.store.Partial(h); ok {
		t.Errorf("%s: a partial download of %d bytes remains", nd.id, n)
	}
}
