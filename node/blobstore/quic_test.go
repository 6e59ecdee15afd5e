package blobstore_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/braidml/braid/node/blobstore"
	"github.com/braidml/braid/transport"
	"github.com/braidml/braid/transport/pki"
	"github.com/braidml/braid/transport/quic"
)

// quicPair is two QUIC nodes on loopback with certificates from a fresh CA
// (mutual TLS): a serves its store on ProtoBlob, b fetches into its own.
type quicPair struct {
	a, b           *quic.Transport
	aStore, bStore *blobstore.Store
	srv            *blobstore.Server
}

func newQUICPair(tb testing.TB, lanes int, logger *slog.Logger) *quicPair {
	tb.Helper()
	dir := filepath.Join(tb.TempDir(), "pki")
	if err := pki.InitCA(dir); err != nil {
		tb.Fatal(err)
	}
	node := func(name string) *quic.Transport {
		if err := pki.Issue(dir, name, []string{"127.0.0.1"}, time.Hour); err != nil {
			tb.Fatal(err)
		}
		creds, err := pki.LoadNode(dir, name)
		if err != nil {
			tb.Fatal(err)
		}
		cfg := quic.DefaultConfig()
		cfg.ListenAddr = "127.0.0.1:0"
		cfg.Creds = creds
		cfg.Lanes = lanes
		cfg.HandshakeTimeout = 5 * time.Second
		cfg.Logger = logger
		tr, err := quic.New(cfg)
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { tr.Close() })
		return tr
	}
	p := &quicPair{a: node("qa"), b: node("qb")}
	var err error
	if p.aStore, err = blobstore.Open(tb.TempDir()); err != nil {
		tb.Fatal(err)
	}
	if p.bStore, err = blobstore.Open(tb.TempDir()); err != nil {
		tb.Fatal(err)
	}
	cfg := blobstore.DefaultServerConfig()
	cfg.Logger = logger
	if p.srv, err = blobstore.NewServer(p.aStore, cfg); err != nil {
		tb.Fatal(err)
	}
	l, err := p.a.Listen(transport.ProtoBlob)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.srv.Serve(ctx, l) }()
	tb.Cleanup(func() { // before the transports close
		cancel()
		l.Close()
		if err := <-done; err != nil {
			tb.Errorf("Serve: %v", err)
		}
	})
	return p
}

func (p *quicPair) fetch(ctx context.Context, h string, size int64, opts blobstore.FetchOptions) error {
	src := []blobstore.Source{{Peer: p.a.Self(), Addr: p.a.Addr()}}
	return p.bStore.Fetch(ctx, p.b, transport.ProtoBlob, src, h, size, opts)
}

// The round trip and the private refusal over real QUIC with mutual TLS.
func TestQUIC(t *testing.T) {
	log, logger := newTestLog(t)
	p := newQUICPair(t, 1, logger)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for i, size := range []int{0, 1, 1<<20 + 1, 9<<20 + 5} {
		obj := randomBytes(uint64(30+i), size)
		h, _, err := p.aStore.Put(strings.NewReader(string(obj)))
		if err != nil {
			t.Fatal(err)
		}
		if err := p.fetch(ctx, h, int64(size), blobstore.FetchOptions{Logger: logger}); err != nil {
			t.Fatalf("%d bytes: %v", size, err)
		}
		f, n, err := p.bStore.Open(h)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(f)
		f.Close()
		if n != int64(size) || string(got) != string(obj) {
			t.Fatalf("%d bytes: got %d back that differ", size, len(got))
		}
		if served := p.srv.BytesServed(h); served != int64(size) {
			t.Errorf("%d bytes: server counted %d", size, served)
		}
	}

	secret := randomBytes(39, 100<<10)
	h := blobstore.Sum(secret)
	if err := p.aStore.MarkPrivate(h); err != nil {
		t.Fatal(err)
	}
	if _, _, err := p.aStore.Put(strings.NewReader(string(secret))); err != nil {
		t.Fatal(err)
	}
	err := p.fetch(ctx, h, int64(len(secret)), blobstore.FetchOptions{Logger: logger})
	if !errors.Is(err, blobstore.ErrRefused) || !strings.Contains(err.Error(), "qa at 127.0.0.1:") {
		t.Fatalf("private object over QUIC: %v, want refused naming qa", err)
	}
	if served := p.srv.BytesServed(h); served != 0 {
		t.Fatalf("%d bytes of a private object served", served)
	}
	if _, ok := log.find("refused a private object", "peer=qb"); !ok {
		t.Error("the server did not log the refusal with the asking peer")
	}
}

// BenchmarkFetchQUIC is the transfer throughput of one 64 MiB object
// between two QUIC transports on loopback (mutual TLS), through the whole
// path: the server reads its file, the client writes, fsyncs and verifies
// the SHA-256 and renames. MB/s is 10^6 bytes per second (go test's own
// figure); Gbit/s is 10^9 bits per second, as braid bench transport
// reports.
func BenchmarkFetchQUIC(b *testing.B) {
	const size = 64 << 20
	p := newQUICPair(b, 1, slog.New(slog.NewTextHandler(io.Discard, nil)))
	h, _, err := p.aStore.Put(strings.NewReader(string(randomBytes(64, size))))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	// Warm up: the connection's handshake is not part of the figure.
	empty, _, err := p.aStore.Put(strings.NewReader(""))
	if err != nil {
		b.Fatal(err)
	}
	if err := p.fetch(ctx, empty, 0, blobstore.FetchOptions{}); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(size)
	b.ResetTimer()
	for range b.N {
		if err := p.fetch(ctx, h, size, blobstore.FetchOptions{}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := p.bStore.Delete(h); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.StopTimer()
	b.ReportMetric(float64(size)*float64(b.N)*8/b.Elapsed().Seconds()/1e9, "Gbit/s")
}
