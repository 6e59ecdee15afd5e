package allreduce

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"
)

// Op is a bucketed all-reduce that overlaps with the backward pass: the
// caller hands over gradient buckets as backward produces them (last layer
// first) and each is reduced in the background, one after another in Add
// order, while the caller carries on. Every member must Add buckets of the
// same lengths in the same order.
type Op struct {
	r    *Ring
	ctx  context.Context
	step uint64

	mu      sync.Mutex
	buckets [][]float32
	closed  bool
	more    chan struct{} // capacity 1
	done    chan struct{}
	err     error // set before done closes
}

// Start begins a bucketed all-reduce for step. The caller must call Wait,
// even after an error.
func (r *Ring) Start(ctx context.Context, step uint64) *Op {
	op := &Op{r: r, ctx: ctx, step: step, more: make(chan struct{}, 1), done: make(chan struct{})}
	go op.loop()
	return op
}

// Add queues bucket to be summed in place across members; it does not
// block. The caller must not touch bucket until Wait returns. Add after Wait
// panics. After an error, later buckets are left as they are.
func (op *Op) Add(bucket []float32) {
	op.mu.Lock()
	defer op.mu.Unlock()
	if op.closed {
		panic("allreduce: Op.Add after Wait")
	}
	op.buckets = append(op.buckets, bucket)
	select {
	case op.more <- struct{}{}:
	default:
	}
}

// Wait waits until every bucket added is reduced and returns the first
// error, which names the step, the phase and the peer at fault.
func (op *Op) Wait() error {
	op.mu.Lock()
	op.closed = true
	op.mu.Unlock()
	select {
	case op.more <- struct{}{}:
	default:
	}
	<-op.done
	return op.err
}

func (op *Op) loop() {
	defer close(op.done)
	for {
		op.mu.Lock()
		if len(op.buckets) == 0 {
			closed := op.closed
			op.mu.Unlock()
			if closed {
				return
			}
			<-op.more
			continue
		}
		b := op.buckets[0]
		op.buckets[0] = nil
		op.buckets = op.buckets[1:]
		op.mu.Unlock()
		if op.err == nil {
			op.err = op.r.AllReduce(op.ctx, op.step, b)
		}
	}
}

// Bench runs iters all-reduces of bytes/4 elements on ring (after one
// warm-up) and returns the mean time per all-reduce and the count of
// elements that came out wrong over all iterations, on this rank. Every
// member of the ring must call it with the same arguments at about the same
// time; a barrier starts each timed all-reduce on every rank at once. Each element of each rank's input is a small integer drawn from a
// hash of (element, rank, iteration), so no two chunks, ranks or iterations
// look alike (a chunk sent to the wrong offset or a stale buffer shows), and
// every element's expected sum is computed from the same formula; the sums
// stay exact in fp32, bf16 and fp16, so any wrong element is a bug (INT8 is
// lossy and is allowed its documented bound). Bus bandwidth is
// bytes/timePerOp × 2(N−1)/N.
func Bench(ctx context.Context, ring *Ring, bytes int, iters int) (timePerOp time.Duration, wrong int, err error) {
	n := bytes / 4
	size := ring.Size()
	buf, barrier := make([]float32, n), make([]float32, size)
	// Sums up to 256 are exact in bf16 (8 significant bits).
	m := uint64(max(1, 256/size))
	var total time.Duration
	for it := 0; it <= iters; it++ {
		for i := range buf {
			buf[i] = BenchInput(i, ring.Rank(), it, m)
		}
		// A barrier (an all-reduce of one element per rank), so that the
		// time is the all-reduce's and not also the wait for the slowest
		// rank to finish filling its input (Gloo's script times after a
		// barrier too).
		if err := ring.AllReduce(ctx, uint64(it), barrier); err != nil {
			return 0, wrong, fmt.Errorf("allreduce: bench iteration %d: barrier: %w", it, err)
		}
		t0 := time.Now()
		if err := ring.AllReduce(ctx, uint64(it), buf); err != nil {
			return 0, wrong, fmt.Errorf("allreduce: bench iteration %d: %w", it, err)
		}
		elapsed := time.Since(t0)
		if it > 0 { // iteration 0 warms up: dials and handshakes
			total += elapsed
		}
		// And another, so that no rank checks its result (which takes CPU)
		// while others still run the all-reduce.
		if err := ring.AllReduce(ctx, uint64(it), barrier); err != nil {
			return 0, wrong, fmt.Errorf("allreduce: bench iteration %d: barrier: %w", it, err)
		}
		absmax := float32((m - 1) * uint64(size))
		for i, v := range buf {
			var w float32
			for r := range size {
				w += BenchInput(i, r, it, m)
			}
			if v != w && (ring.cfg.Dtype != INT8 || float32(math.Abs(float64(v-w))) > float32(size)*INT8.ErrorBound(w, absmax)) {
				wrong++
			}
		}
	}
	if iters > 0 {
		timePerOp = total / time.Duration(iters)
	}
	return timePerOp, wrong, nil
}

// BenchInput is rank's input at element i of Bench's iteration it: an
// integer in [0, m) from a hash of the three (SplitMix64's finaliser).
func BenchInput(i, rank, it int, m uint64) float32 {
	x := uint64(i)*0x9e3779b97f4a7c15 ^ uint64(rank+1)*0xbf58476d1ce4e5b9 ^ uint64(it+1)*0x94d049bb133111eb
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return float32(x % m)
}

// BenchRow is one measurement in the manner of nccl-tests, as `braid bench
// allreduce` prints it: algbw = bytes/time, busbw = algbw × 2(N−1)/N.
type BenchRow struct {
	Nodes  int     `json:"nodes"`
	Bytes  int     `json:"bytes"`
	Dtype  string  `json:"dtype"`
	TimeMS float64 `json:"time_ms"`
	AlgBW  float64 `json:"algbw_GBps"`
	BusBW  float64 `json:"busbw_GBps"`
	Wrong  int     `json:"wrong"`
}

// BenchSize is Bench for one size, as a BenchRow of this rank's figures
// (every member must call it with the same arguments; rank 0's row is the
// one reported).
func BenchSize(ctx context.Context, ring *Ring, bytes, iters int) (BenchRow, error) {
	d, wrong, err := Bench(ctx, ring, bytes, iters)
	if err != nil {
		return BenchRow{}, err
	}
	n := ring.Size()
	algbw := float64(bytes) / d.Seconds() / 1e9
	return BenchRow{Nodes: n, Bytes: bytes, Dtype: ring.Config().Dtype.String(), TimeMS: float64(d.Microseconds()) / 1e3,
		AlgBW: algbw, BusBW: algbw * 2 * float64(n-1) / float64(n), Wrong: wrong}, nil
}
