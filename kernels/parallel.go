package kernels

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// A Task is a unit of data-parallel work: Run processes items [lo, hi).
// Run is called concurrently from several goroutines on disjoint ranges and
// must not call ParallelFor itself (use the serial variants, such as
// GemmSerial, inside a task); a nested ParallelFor would wait on workers that
// are busy running its caller.
type Task interface {
	Run(lo, hi int)
}

// TaskFunc adapts a function to Task. Converting a closure allocates, so the
// hot paths use preallocated Task structs instead; TaskFunc is for tests and
// setup code.
type TaskFunc func(lo, hi int)

// Run calls f(lo, hi).
func (f TaskFunc) Run(lo, hi int) { f(lo, hi) }

// workItem is one chunk of a ParallelFor handed to a pool worker.
type workItem struct {
	task   Task
	lo, hi int
	done   *join
}

// A join is how ParallelFor waits for its workers. Each worker calls finish
// once; the caller polls pending, yielding between polls, and only falls
// back to blocking on wg after workerSpin. Blocking at once would cost more
// than a short kernel: the worker that readies the blocked caller takes its
// place on the CPU, and the two goroutines end up running in turn instead
// of side by side.
type join struct {
	wg      sync.WaitGroup
	pending atomic.Int32
}

// finish marks one worker's chunk as done. pending drops last, so once the
// caller sees it at zero, no worker touches j again.
func (j *join) finish() {
	j.wg.Done()
	j.pending.Add(-1)
}

// wait returns when every worker has called finish.
func (j *join) wait() {
	deadline := time.Now().Add(workerSpin)
	for spin := 1; j.pending.Load() != 0; spin++ {
		if spin%64 == 0 && time.Now().After(deadline) {
			j.wg.Wait()
			deadline = time.Now().Add(workerSpin) // pending follows Done at once
		}
		runtime.Gosched()
	}
}

// pool is the process-wide set of worker goroutines, started on first use.
// Worker i (1 ≤ i < len(queues)) serves queues[i]; chunk 0 of every
// ParallelFor runs on the calling goroutine.
var pool struct {
	once    sync.Once
	queues  []chan workItem
	threads atomic.Int32 // chunks a ParallelFor uses; 0 means GOMAXPROCS
}

// maxWorkers bounds the pool; more goroutines than this would not help a
// float32 workload on the machines braid targets.
const maxWorkers = 256

func startPool() {
	n := runtime.GOMAXPROCS(0)
	if n > maxWorkers {
		n = maxWorkers
	}
	pool.queues = make([]chan workItem, n)
	for i := 1; i < n; i++ {
		q := make(chan workItem, 4)
		pool.queues[i] = q
		go func() {
			for {
				// Poll q for up to workerSpin, yielding the processor
				// between polls, before blocking on it.
				var it workItem
				deadline := time.Now().Add(workerSpin)
			poll:
				for spin := 1; ; spin++ {
					select {
					case it = <-q:
						break poll
					default:
					}
					if spin%64 == 0 && time.Now().After(deadline) {
						it = <-q
						break poll
					}
					runtime.Gosched()
				}
				it.task.Run(it.lo, it.hi)
				it.done.finish()
			}
		}()
	}
}

// workerSpin is how long an idle worker keeps polling its queue before it
// blocks. Waking a blocked goroutine on an idle CPU took 100–300 µs on the
// 2-vCPU development VM, longer than many kernel calls, so without the spin
// a short ParallelFor ran its chunks one after the other on the caller's
// CPU. Kernels run back to back, so a worker that has just finished stays
// awake for the next call.
const workerSpin = 200 * time.Microsecond

// Threads reports how many goroutines ParallelFor spreads work over.
func Threads() int {
	pool.once.Do(startPool)
	t := int(pool.threads.Load())
	if t <= 0 || t > len(pool.queues) {
		return len(pool.queues)
	}
	return t
}

// SetThreads sets how many goroutines kernels use, at most GOMAXPROCS as it
// was when the pool started; n ≤ 0 restores the default (all of them). It
// returns the previous setting. Safe to call concurrently with kernels, which
// see the new value from their next call.
func SetThreads(n int) (previous int) {
	pool.once.Do(startPool)
	previous = Threads()
	if n > len(pool.queues) {
		n = len(pool.queues)
	}
	pool.threads.Store(int32(n))
	return previous
}

// joinPool recycles joins so that ParallelFor does not allocate.
var joinPool = sync.Pool{New: func() any { return new(join) }}

// ParallelFor runs t over [0, n) split into at most Threads() contiguous
// chunks whose boundaries are multiples of grain (except the last), and
// returns when every chunk is done. Chunk 0 runs on the calling goroutine. It
// does not allocate when t is a pointer. Concurrent ParallelFor calls from
// different goroutines are safe; they share the workers.
func ParallelFor(n, grain int, t Task) {
	if n <= 0 {
		return
	}
	if grain < 1 {
		grain = 1
	}
	units := (n + grain - 1) / grain
	chunks := Threads()
	if chunks > units {
		chunks = units
	}
	if chunks <= 1 {
		t.Run(0, n)
		return
	}
	j := joinPool.Get().(*join)
	j.wg.Add(chunks - 1)
	j.pending.Store(int32(chunks - 1))
	per, extra := units/chunks, units%chunks
	bound := func(c int) int { // start of chunk c, in items
		u := c*per + min(c, extra)
		return min(u*grain, n)
	}
	for c := 1; c < chunks; c++ {
		pool.queues[c] <- workItem{task: t, lo: bound(c), hi: bound(c + 1), done: j}
	}
	t.Run(0, bound(1))
	j.wait()
	joinPool.Put(j)
}
