package kernels

import (
	"runtime"
	"sync"
	"sync/atomic"
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
	done   *sync.WaitGroup
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
			for it := range q {
				it.task.Run(it.lo, it.hi)
				it.done.Done()
			}
		}()
	}
}

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

// wgPool recycles WaitGroups so that ParallelFor does not allocate.
var wgPool = sync.Pool{New: func() any { return new(sync.WaitGroup) }}

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
	wg := wgPool.Get().(*sync.WaitGroup)
	wg.Add(chunks - 1)
	per, extra := units/chunks, units%chunks
	bound := func(c int) int { // start of chunk c, in items
		u := c*per + min(c, extra)
		return min(u*grain, n)
	}
	for c := 1; c < chunks; c++ {
		pool.queues[c] <- workItem{task: t, lo: bound(c), hi: bound(c + 1), done: wg}
	}
	t.Run(0, bound(1))
	wg.Wait()
	wgPool.Put(wg)
}
