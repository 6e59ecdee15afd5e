package allreduce

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/braidml/braid/transport"
	"github.com/braidml/braid/transport/pki"
	"github.com/braidml/braid/transport/quic"
)

// quicRings starts n QUIC nodes on loopback with credentials from a fresh CA
// and builds a ring over them.
func quicRings(t testing.TB, n int, cfg Config) []*Ring {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "pki")
	if err := pki.InitCA(dir); err != nil {
		t.Fatal(err)
	}
	var trs []*quic.Transport
	var members []Member
	for i := range n {
		name := fmt.Sprintf("q%d", i)
		if err := pki.Issue(dir, name, []string{"127.0.0.1"}, time.Hour); err != nil {
			t.Fatal(err)
		}
		creds, err := pki.LoadNode(dir, name)
		if err != nil {
			t.Fatal(err)
		}
		qc := quic.DefaultConfig()
		qc.ListenAddr = "127.0.0.1:0"
		qc.Creds = creds
		qc.Lanes = cfg.Streams
		qc.HandshakeTimeout = 5 * time.Second
		qc.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
		tr, err := quic.New(qc)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tr.Close() })
		trs = append(trs, tr)
		members = append(members, Member{ID: transport.PeerID(name), Addr: tr.Addr()})
	}
	var rings []*Ring
	for _, tr := range trs {
		r, err := NewRing(cfg, tr, members)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() }) // runs before the transports close
		rings = append(rings, r)
	}
	return rings
}

// The same all-reduce over real QUIC with mutual TLS, three ranks.
func TestQUIC(t *testing.T) {
	const n = 3
	cfg := testConfig()
	cfg.ChunkBytes = 64 << 10
	cfg.Dtype = BF16
	c := &cluster{t: t, rings: quicRings(t, n, cfg)}
	for k, l := range []int{1, 100003} {
		in := integerBufs(n, l) // small integers: exact in bf16 too
		bufs := cloneBufs(in)
		c.allReduce(uint64(k), bufs)
		requireIdentical(t, bufs)
		sum, _ := exact(in)
		for i, v := range bufs[0] {
			if float64(v) != sum[i] {
				t.Fatalf("len %d element %d = %g, want %g", l, i, v, sum[i])
			}
		}
	}
}

// BenchmarkQUICLoopback reports bus bandwidth for BRAID_RING_N ranks
// (default 4) on QUIC loopback, 64 MiB per all-reduce:
// busbw = algbw × 2(N−1)/N.
func BenchmarkQUICLoopback(b *testing.B) {
	n := 4
	if s := os.Getenv("BRAID_RING_N"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	const bytes = 64 << 20
	cfg := DefaultConfig()
	rings := quicRings(b, n, cfg)
	bufs := make([][]float32, n)
	for r := range bufs {
		bufs[r] = make([]float32, bytes/4)
	}
	c := &cluster{rings: rings}
	run := func(step uint64) {
		errs := c.all(func(r int) error { return rings[r].AllReduce(context.Background(), step, bufs[r]) })
		for r, err := range errs {
			if err != nil {
				b.Fatalf("rank %d: %v", r, err)
			}
		}
	}
	run(0) // connect
	b.SetBytes(bytes)
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		run(uint64(i + 1))
	}
	per := time.Since(start).Seconds() / float64(b.N)
	alg := bytes / per / 1e9
	b.ReportMetric(alg, "algGB/s")
	b.ReportMetric(alg*2*float64(n-1)/float64(n), "busGB/s")
	_ = math.Abs
}
