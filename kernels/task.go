package kernels

import (
	"fmt"
	"runtime"
	"sync"
)

// freeList recycles *T values through a small bounded channel. Unlike
// sync.Pool it never drops an item at a GC or (under the race detector) at
// random, so steady-state callers allocate nothing. The zero value is ready
// to use.
type freeList[T any] struct {
	once sync.Once
	ch   chan *T
}

func (f *freeList[T]) init() { f.ch = make(chan *T, 2*runtime.GOMAXPROCS(0)+2) }

// get returns a recycled *T, or a new zero one.
func (f *freeList[T]) get() *T {
	f.once.Do(f.init)
	select {
	case x := <-f.ch:
		return x
	default:
		return new(T)
	}
}

// put recycles x (or lets it go when the list is full).
func (f *freeList[T]) put(x *T) {
	f.once.Do(f.init)
	select {
	case f.ch <- x:
	default:
	}
}

// taskPool recycles the argument structs of one kind of parallel kernel, so
// that a kernel hands ParallelFor a pointer it already owns instead of a
// fresh closure (which would allocate on every call).
type taskPool[T any, PT interface {
	*T
	Task
}] struct{ free freeList[T] }

// run copies args into a pooled T and runs it over [0, n) with ParallelFor.
func (tp *taskPool[T, PT]) run(n, grain int, args T) {
	x := tp.free.get()
	*x = args
	ParallelFor(n, grain, PT(x))
	var zero T
	*x = zero // drop references to the caller's slices
	tp.free.put(x)
}

// grainFor returns how many items of cost work (in rough float operations
// each) make a chunk worth a goroutine hand-off.
func grainFor(work int) int {
	const chunkWork = 1 << 15
	if work <= 0 {
		return chunkWork
	}
	g := chunkWork / work
	if g < 1 {
		g = 1
	}
	return g
}

// need panics with a kernels: message when a buffer is shorter than its shape
// says. Kernels check their arguments once, up front, so that the loops below
// can index without surprises.
func need(name string, buf []float32, n int) {
	if len(buf) < n {
		panic(fmt.Sprintf("kernels: %s has %d elements, shape needs %d", name, len(buf), n))
	}
}

func needInts(name string, buf []int32, n int) {
	if len(buf) < n {
		panic(fmt.Sprintf("kernels: %s has %d elements, shape needs %d", name, len(buf), n))
	}
}
