package kernels

import (
	"fmt"
	"sync"
)

// taskPool recycles the argument structs of one kind of parallel kernel, so
// that a kernel hands ParallelFor a pointer it already owns instead of a
// fresh closure (which would allocate on every call).
type taskPool[T any, PT interface {
	*T
	Task
}] struct{ p sync.Pool }

// run copies args into a pooled T and runs it over [0, n) with ParallelFor.
func (tp *taskPool[T, PT]) run(n, grain int, args T) {
	x, _ := tp.p.Get().(PT)
	if x == nil {
		x = PT(new(T))
	}
	*x = args
	ParallelFor(n, grain, x)
	var zero T
	*x = zero // drop references to the caller's slices
	tp.p.Put(x)
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
