package allreduce

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/braidml/braid/transport"
	"github.com/braidml/braid/transport/memnet"
)

// cluster is n rings on one memnet network, n0 .. n{n-1} in ring order.
type cluster struct {
	t     *testing.T
	net   *memnet.Network
	ids   []transport.PeerID
	rings []*Ring
}

func newCluster(t *testing.T, n int, cfg Config) *cluster {
	t.Helper()
	c := &cluster{t: t, net: memnet.New(1)}
	var members []Member
	for i := range n {
		id := transport.PeerID(fmt.Sprintf("n%d", i))
		c.ids = append(c.ids, id)
		members = append(members, Member{ID: id, Addr: memnet.Address(id)})
	}
	for _, id := range c.ids {
		tr, err := c.net.Node(id)
		if err != nil {
			t.Fatal(err)
		}
		r, err := NewRing(cfg, tr, members)
		if err != nil {
			t.Fatal(err)
		}
		c.rings = append(c.rings, r)
	}
	t.Cleanup(func() {
		for _, r := range c.rings {
			r.Close()
		}
		c.net.Close()
	})
	return c
}

// all runs f for each rank in the given ranks (every rank if none) at once
// and returns each rank's error.
func (c *cluster) all(f func(rank int) error, ranks ...int) []error {
	if len(ranks) == 0 {
		for i := range c.rings {
			ranks = append(ranks, i)
		}
	}
	errs := make([]error, len(c.rings))
	var wg sync.WaitGroup
	for _, i := range ranks {
		wg.Go(func() { errs[i] = f(i) })
	}
	wg.Wait()
	return errs
}

// allReduce runs AllReduce(step, bufs[i]) on every rank and fails the test
// on any error.
func (c *cluster) allReduce(step uint64, bufs [][]float32) {
	c.t.Helper()
	errs := c.all(func(i int) error { return c.rings[i].AllReduce(context.Background(), step, bufs[i]) })
	for i, err := range errs {
		if err != nil {
			c.t.Fatalf("rank %d: %v", i, err)
		}
	}
}

// randomBufs is n ranks' inputs of length l, uniform in [-1, 1).
func randomBufs(seed uint64, n, l int) [][]float32 {
	bufs := make([][]float32, n)
	for r := range bufs {
		rng := rand.New(rand.NewPCG(seed, uint64(r)))
		bufs[r] = make([]float32, l)
		for i := range bufs[r] {
			bufs[r][i] = rng.Float32()*2 - 1
		}
	}
	return bufs
}

// exact is the float64 sum over ranks and the sum of magnitudes.
func exact(bufs [][]float32) (sum, abs []float64) {
	l := len(bufs[0])
	sum, abs = make([]float64, l), make([]float64, l)
	for _, b := range bufs {
		for i, v := range b {
			sum[i] += float64(v)
			abs[i] += math.Abs(float64(v))
		}
	}
	return sum, abs
}

func cloneBufs(bufs [][]float32) [][]float32 {
	out := make([][]float32, len(bufs))
	for i, b := range bufs {
		out[i] = append([]float32(nil), b...)
	}
	return out
}

// requireIdentical fails unless every rank holds bitwise the same buffer.
func requireIdentical(t *testing.T, bufs [][]float32) {
	t.Helper()
	for r := 1; r < len(bufs); r++ {
		for i := range bufs[0] {
			if math.Float32bits(bufs[r][i]) != math.Float32bits(bufs[0][i]) {
				t.Fatalf("rank %d element %d = %g (%#x), rank 0 has %g (%#x)", r, i,
					bufs[r][i], math.Float32bits(bufs[r][i]), bufs[0][i], math.Float32bits(bufs[0][i]))
			}
		}
	}
}

func testConfig() Config {
	cfg := DefaultConfig()
	cfg.Streams = 3
	cfg.ChunkBytes = 4096 // 1024 elements: many chunks per segment
	cfg.HopTimeout = 5 * time.Second
	return cfg
}

// The sum in fp32 matches the float64 sum within fp32 rounding, on every
// world size, for lengths that do not divide evenly (or are shorter than
// the ring), reusing the ring's streams across calls.
func TestAllReduceFP32(t *testing.T) {
	lengths := []int{0, 1, 7, 1000, 123457}
	for n := 1; n <= 8; n++ {
		t.Run(fmt.Sprintf("N=%d", n), func(t *testing.T) {
			t.Parallel()
			c := newCluster(t, n, testConfig())
			for k, l := range lengths {
				in := randomBufs(uint64(100*n+k), n, l)
				bufs := cloneBufs(in)
				c.allReduce(uint64(k), bufs)
				requireIdentical(t, bufs)
				sum, abs := exact(in)
				var worst float64
				for i, v := range bufs[0] {
					tol := float64(n) * 0x1p-23 * abs[i]
					d := math.Abs(float64(v) - sum[i])
					if d > tol {
						t.Fatalf("len %d element %d = %g, want %g ± %g", l, i, v, sum[i], tol)
					}
					worst = max(worst, d)
				}
				t.Logf("N=%d len=%d: max |error| %.3g", n, l, worst)
			}
		})
	}
}

// Lossy wire types: every rank still ends bitwise identical, and the result
// is within N rounding bounds (N−1 reduce-scatter hops and the owner's
// rounding) of the exact sum.
func TestAllReduceDtypes(t *testing.T) {
	for _, d := range []Dtype{FP32, BF16, FP16, INT8} {
		for _, n := range []int{2, 3, 5} {
			t.Run(fmt.Sprintf("%v/N=%d", d, n), func(t *testing.T) {
				t.Parallel()
				cfg := testConfig()
				cfg.Dtype = d
				c := newCluster(t, n, cfg)
				in := randomBufs(uint64(n), n, 10007)
				bufs := cloneBufs(in)
				c.allReduce(3, bufs)
				requireIdentical(t, bufs)
				sum, abs := exact(in)
				var absmax float64
				for _, a := range abs {
					absmax = max(absmax, a)
				}
				for i, v := range bufs[0] {
					bound := float64(d.ErrorBound(float32(abs[i]), float32(absmax)))
					tol := float64(n)*bound + float64(n)*0x1p-23*abs[i]
					if e := math.Abs(float64(v) - sum[i]); e > tol {
						t.Fatalf("element %d = %g, want %g ± %g", i, v, sum[i], tol)
					}
				}
			})
		}
	}
}

// integerBufs holds small integers, so every sum is exact in fp32 whatever
// the order of additions.
func integerBufs(n, l int) [][]float32 {
	bufs := make([][]float32, n)
	for r := range bufs {
		bufs[r] = make([]float32, l)
		for i := range bufs[r] {
			bufs[r][i] = float32((i*7+r*13)%101 - 50)
		}
	}
	return bufs
}

// Buckets added to an Op come out as one big AllReduce of their
// concatenation would.
func TestBucketsEqualOneAllReduce(t *testing.T) {
	const n = 4
	c := newCluster(t, n, testConfig())
	sizes := []int{5000, 1, 0, 1000, 77}
	total := 0
	for _, s := range sizes {
		total += s
	}
	whole := integerBufs(n, total)
	flat := cloneBufs(whole)
	c.allReduce(1, flat)

	bucketed := cloneBufs(whole)
	errs := c.all(func(r int) error {
		op := c.rings[r].Start(context.Background(), 2)
		// Last layer first: hand the buckets over from the end.
		end := total
		for k := len(sizes) - 1; k >= 0; k-- {
			op.Add(bucketed[r][end-sizes[k] : end])
			end -= sizes[k]
		}
		return op.Wait()
	})
	for r, err := range errs {
		if err != nil {
			t.Fatalf("rank %d: %v", r, err)
		}
	}
	for r := range n {
		for i := range flat[r] {
			if bucketed[r][i] != flat[r][i] {
				t.Fatalf("rank %d element %d: bucketed %g, whole %g", r, i, bucketed[r][i], flat[r][i])
			}
		}
	}
}

// Killing a rank in the middle of an all-reduce: its neighbours fail at
// once with an error naming it, the phase and the step; everyone else fails
// soon after (the failure cascades as the ring breaks), well within
// HopTimeout.
func TestKilledRank(t *testing.T) {
	const n = 4
	cfg := testConfig()
	cfg.HopTimeout = time.Second
	c := newCluster(t, n, cfg)
	c.allReduce(1, integerBufs(n, 10000)) // streams up

	bufs := randomBufs(5, n, 1<<20)
	var killedAt time.Time
	go func() {
		time.Sleep(50 * time.Millisecond)
		killedAt = time.Now()
		c.net.Kill("n2")
	}()
	// n2 never calls: it is mid-step as far as its neighbours know (its
	// streams are open), then it dies.
	errs := c.all(func(r int) error { return c.rings[r].AllReduce(context.Background(), 7, bufs[r]) }, 0, 1, 3)
	elapsed := time.Since(killedAt)
	for _, r := range []int{0, 1, 3} {
		err := errs[r]
		t.Logf("rank %d: %v", r, err)
		if err == nil {
			t.Fatalf("rank %d: no error", r)
		}
		if !strings.Contains(err.Error(), "step 7") || !strings.Contains(err.Error(), "all-reduce") {
			t.Errorf("rank %d: error %q lacks the step or the operation", r, err)
		}
	}
	// Every rank names n2: its neighbours from their own streams, the
	// others from the abort frame passed round the ring.
	for _, r := range []int{0, 1, 3} {
		if !strings.Contains(errs[r].Error(), "n2") {
			t.Errorf("rank %d: error %q does not name n2", r, errs[r])
		}
	}
	if !errors.Is(errs[3], transport.ErrUnreachable) {
		t.Errorf("rank 3: error %q is not ErrUnreachable", errs[3])
	}
	if elapsed > cfg.HopTimeout {
		t.Errorf("ranks took %v after the kill, HopTimeout %v", elapsed, cfg.HopTimeout)
	}
	// The ring is broken for good.
	if err := c.rings[0].AllReduce(context.Background(), 8, bufs[0]); !errors.Is(err, ErrBroken) {
		t.Errorf("AllReduce after failure: %v, want ErrBroken", err)
	}
}

// A neighbour that is alive but stops taking part is reported after
// HopTimeout, as a deadline error naming it.
func TestStalledRank(t *testing.T) {
	const n = 3
	cfg := testConfig()
	cfg.HopTimeout = 500 * time.Millisecond
	c := newCluster(t, n, cfg)
	c.allReduce(1, integerBufs(n, 10000))

	bufs := randomBufs(6, n, 1<<20)
	start := time.Now()
	errs := c.all(func(r int) error {
		err := c.rings[r].AllReduce(context.Background(), 9, bufs[r])
		t.Logf("rank %d done after %v", r, time.Since(start))
		return err
	}, 0, 1)
	elapsed := time.Since(start)
	t.Logf("after %v: %v / %v", elapsed, errs[0], errs[1])
	// n0 receives from n2, which sends nothing.
	if errs[0] == nil || !strings.Contains(errs[0].Error(), "receive from n2") || !errors.Is(errs[0], os.ErrDeadlineExceeded) {
		t.Errorf("rank 0: %v, want a deadline receiving from n2", errs[0])
	}
	// n1 times out too, but hears the cause from n0's abort frame.
	if errs[1] == nil || !strings.Contains(errs[1].Error(), "n2") {
		t.Errorf("rank 1: %v, want an error naming n2", errs[1])
	}
	if elapsed > 4*cfg.HopTimeout { // generous: -race with parallel tests
		t.Errorf("took %v, HopTimeout %v", elapsed, cfg.HopTimeout)
	}
}

// Cancelling the context aborts an all-reduce at once, even with a long
// HopTimeout.
func TestCancel(t *testing.T) {
	const n = 3
	c := newCluster(t, n, testConfig()) // HopTimeout 5 s
	c.allReduce(1, integerBufs(n, 100))
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	bufs := randomBufs(7, n, 1<<20)
	start := time.Now()
	errs := c.all(func(r int) error { return c.rings[r].AllReduce(ctx, 2, bufs[r]) }, 0, 1) // n2 stalls
	if d := time.Since(start); d > time.Second {
		t.Errorf("cancel took %v", d)
	}
	for _, r := range []int{0, 1} {
		if !errors.Is(errs[r], context.Canceled) && errs[r] == nil {
			t.Errorf("rank %d: %v, want an error", r, errs[r])
		}
		t.Logf("rank %d: %v", r, errs[r])
	}
	if !errors.Is(errs[0], context.Canceled) && !errors.Is(errs[1], context.Canceled) {
		t.Errorf("neither rank reports context.Canceled")
	}
}

// Ranks that disagree about the step detect it: the message is stale.
func TestStaleStep(t *testing.T) {
	c := newCluster(t, 2, testConfig())
	bufs := integerBufs(2, 5000)
	errs := c.all(func(r int) error { return c.rings[r].AllReduce(context.Background(), uint64(10+r), bufs[r]) })
	// The first rank to read a stale frame reports it and breaks the ring;
	// the other may see that (EOF) before it reads the stale frame itself.
	if !errors.Is(errs[0], ErrProtocol) && !errors.Is(errs[1], ErrProtocol) {
		t.Errorf("errors %v / %v, want ErrProtocol", errs[0], errs[1])
	}
	for r, err := range errs {
		if err == nil {
			t.Errorf("rank %d: no error", r)
		}
		t.Logf("rank %d: %v", r, err)
	}
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	for name, tune := range map[string]func(*Config){
		"Streams":    func(c *Config) { c.Streams = 0 },
		"ChunkBytes": func(c *Config) { c.ChunkBytes = 2 },
		"HopTimeout": func(c *Config) { c.HopTimeout = 0 },
		"Dtype":      func(c *Config) { c.Dtype = 9 },
	} {
		cfg := DefaultConfig()
		tune(&cfg)
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: %v, want an error naming it", name, err)
		}
	}
}

func TestNewRingMembers(t *testing.T) {
	nw := memnet.New(1)
	defer nw.Close()
	tr, _ := nw.Node("a")
	for name, members := range map[string][]Member{
		"none":      nil,
		"not self":  {{ID: "b", Addr: "mem:b"}},
		"duplicate": {{ID: "a", Addr: "mem:a"}, {ID: "a", Addr: "mem:a"}},
	} {
		if _, err := NewRing(DefaultConfig(), tr, members); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// TestBench: the benchmark's check finds every element right on every rank,
// for every wire type and a world size whose bf16 bound differs.
func TestBench(t *testing.T) {
	for _, n := range []int{3, 5} {
		for _, dt := range []Dtype{FP32, BF16, FP16, INT8} {
			t.Run(fmt.Sprintf("%d ranks %s", n, dt), func(t *testing.T) {
				cfg := testConfig()
				cfg.Dtype = dt
				c := newCluster(t, n, cfg)
				errs := c.all(func(r int) error {
					_, wrong, err := Bench(context.Background(), c.rings[r], 1<<18, 2)
					if err == nil && wrong != 0 {
						err = fmt.Errorf("%d wrong elements", wrong)
					}
					return err
				})
				for r, err := range errs {
					if err != nil {
						t.Errorf("rank %d: %v", r, err)
					}
				}
			})
		}
	}
}

// BenchInput does not repeat with a short period in any of its arguments
// and stays below m.
func TestBenchInput(t *testing.T) {
	const m = 64
	seen := map[[8]float32]bool{}
	for start := 0; start < 4096; start += 8 {
		var w [8]float32
		for j := range w {
			w[j] = BenchInput(start+j, 0, 0, m)
			if w[j] < 0 || w[j] >= m || w[j] != float32(int(w[j])) {
				t.Fatalf("BenchInput = %v, want an integer in [0, %d)", w[j], m)
			}
		}
		seen[w] = true
	}
	if len(seen) < 500 {
		t.Errorf("only %d distinct windows of 8 in 512", len(seen))
	}
	if BenchInput(5, 0, 0, m) == BenchInput(5, 1, 0, m) && BenchInput(6, 0, 0, m) == BenchInput(6, 1, 0, m) && BenchInput(7, 0, 0, m) == BenchInput(7, 1, 0, m) {
		t.Error("ranks 0 and 1 get the same inputs")
	}
}

// Closing a Ring aborts its AllReduce in progress at once.
func TestCloseDuringAllReduce(t *testing.T) {
	const n = 3
	c := newCluster(t, n, testConfig()) // HopTimeout 5 s
	c.allReduce(1, integerBufs(n, 100))
	bufs := randomBufs(8, n, 1<<20)
	time.AfterFunc(50*time.Millisecond, func() { c.rings[0].Close() })
	start := time.Now()
	errs := c.all(func(r int) error { return c.rings[r].AllReduce(context.Background(), 2, bufs[r]) }, 0, 1) // n2 stalls
	if d := time.Since(start); d > time.Second {
		t.Errorf("took %v after Close", d)
	}
	for _, r := range []int{0, 1} {
		if errs[r] == nil {
			t.Errorf("rank %d: no error", r)
		}
		t.Logf("rank %d: %v", r, errs[r])
	}
	if err := c.rings[0].AllReduce(context.Background(), 3, bufs[0]); !errors.Is(err, ErrClosed) {
		t.Errorf("after Close: %v, want ErrClosed", err)
	}
}

// A dialer that never sends its handshake does not hold Close up.
func TestCloseWithSilentDialer(t *testing.T) {
	c := newCluster(t, 2, testConfig()) // HopTimeout 5 s
	// Stand in for n0's left neighbour n1 with a bare endpoint that dials
	// and then says nothing.
	c.rings[1].Close()
	c.net.Kill("n1")
	n1, err := c.net.Node("n1")
	if err != nil {
		t.Fatal(err)
	}
	s, err := n1.Dial(context.Background(), "n0", memnet.Address("n0"), transport.ProtoRing, transport.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	time.Sleep(20 * time.Millisecond) // let n0 accept it and wait for the handshake
	start := time.Now()
	c.rings[0].Close()
	if d := time.Since(start); d > time.Second {
		t.Errorf("Close took %v", d)
	}
}

// Optimised against naive: random world sizes, lengths, stream counts and
// chunk sizes, on integer inputs whose sums are exact in any order, must
// match the naive sum exactly.
func TestRandomShapes(t *testing.T) {
	rng := rand.New(rand.NewPCG(42, 0))
	for k := range 12 {
		n := 1 + rng.IntN(6)
		l := rng.IntN(20000)
		cfg := testConfig()
		cfg.Streams = 1 + rng.IntN(5)
		cfg.ChunkBytes = 4 * (1 + rng.IntN(3000))
		cfg.Dtype = Dtype(rng.IntN(3)) // FP32, BF16, FP16: small integers are exact
		t.Run(fmt.Sprintf("%d/N=%d/len=%d/S=%d/chunk=%d/%v", k, n, l, cfg.Streams, cfg.ChunkBytes, cfg.Dtype), func(t *testing.T) {
			t.Parallel()
			c := newCluster(t, n, cfg)
			in := make([][]float32, n)
			for r := range in {
				in[r] = make([]float32, l)
				for i := range in[r] {
					in[r][i] = float32((i*5+r*3)%9 - 4)
				}
			}
			for step := range uint64(2) { // twice: streams are reused
				bufs := cloneBufs(in)
				c.allReduce(step, bufs)
				sum, _ := exact(in)
				for r := range bufs {
					for i, v := range bufs[r] {
						if float64(v) != sum[i] {
							t.Fatalf("step %d rank %d element %d = %g, want %g", step, r, i, v, sum[i])
						}
					}
				}
			}
		})
	}
}

// An Op on a ring with a stalled member reports the failure from Wait,
// naming the peer, and leaves later buckets alone.
func TestOpFailure(t *testing.T) {
	const n = 3
	cfg := testConfig()
	cfg.HopTimeout = 300 * time.Millisecond
	c := newCluster(t, n, cfg)
	c.allReduce(3, integerBufs(n, 100)) // connected, as in mid-training
	errs := c.all(func(r int) error {
		op := c.rings[r].Start(context.Background(), 4)
		first := []float32{1, 2, 3}
		later := []float32{5, 6, 7}
		op.Add(first)
		op.Add(later)
		err := op.Wait()
		if later[0] != 5 || later[1] != 6 || later[2] != 7 {
			t.Errorf("rank %d: later bucket touched: %v", r, later)
		}
		return err
	}, 0, 1) // n2 never takes part
	for _, r := range []int{0, 1} {
		if errs[r] == nil || !strings.Contains(errs[r].Error(), "n2") {
			t.Errorf("rank %d: %v, want an error naming n2", r, errs[r])
		}
		t.Logf("rank %d: %v", r, errs[r])
	}
}

// TestDrainThenCloseLosesNothing: every rank drains right after its last
// all-reduce and closes its transport at once; a slower rank still gets
// every frame (on QUIC, closing a connection drops unsent data, which is
// what Drain is for; memnet checks the handshake itself).
func TestDrainThenCloseLosesNothing(t *testing.T) {
	for _, n := range []int{1, 2, 4} {
		c := newCluster(t, n, testConfig())
		bufs := integerBufs(n, 100003)
		want := cloneBufs(bufs)
		for i := range want[0] {
			var s float32
			for r := range n {
				s += bufs[r][i]
			}
			want[0][i] = s
		}
		errs := c.all(func(i int) error {
			if err := c.rings[i].AllReduce(context.Background(), 1, bufs[i]); err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return c.rings[i].Drain(ctx)
		})
		for i, err := range errs {
			if err != nil {
				t.Fatalf("n=%d rank %d: %v", n, i, err)
			}
		}
		for r := range n {
			for i, v := range bufs[r] {
				if v != want[0][i] {
					t.Fatalf("n=%d rank %d element %d: %v, want %v", n, r, i, v, want[0][i])
				}
			}
		}
	}
}

// BytesSent counts what a rank writes: 2(N−1)/N of the buffer per
// all-reduce in the wire type, plus the frame headers.
func TestRingBytesSent(t *testing.T) {
	const n, elems = 4, 1 << 16
	for _, d := range []Dtype{FP32, BF16} {
		cfg := testConfig()
		cfg.Dtype, cfg.ChunkBytes = d, 1<<14
		c := newCluster(t, n, cfg)
		c.allReduce(1, randomBufs(1, n, elems))
		want := int64(2 * (n - 1) * d.EncodedLen(elems) / n)
		for i, r := range c.rings {
			got := r.BytesSent()
			if got < want || got > want+want/20 {
				t.Errorf("%v rank %d sent %d bytes, want %d plus headers", d, i, got, want)
			}
		}
	}
}

// Connect sets up the streams ahead of the first all-reduce, which then
// works as usual; a ring of one has nothing to connect.
func TestConnect(t *testing.T) {
	one := newCluster(t, 1, testConfig())
	if err := one.rings[0].Connect(context.Background()); err != nil {
		t.Fatalf("ring of one: %v", err)
	}
	c := newCluster(t, 3, testConfig())
	for i, err := range c.all(func(i int) error { return c.rings[i].Connect(context.Background()) }) {
		if err != nil {
			t.Fatalf("rank %d: %v", i, err)
		}
	}
	bufs := randomBufs(3, 3, 1000)
	want, _ := exact(bufs)
	c.allReduce(1, bufs)
	requireIdentical(t, bufs)
	for i, v := range bufs[0] {
		if math.Abs(float64(v)-want[i]) > 1e-5 {
			t.Fatalf("element %d: %v, want %v", i, v, want[i])
		}
	}
}
