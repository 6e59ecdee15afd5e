// Package traintest holds what the tests of the training engine and of
// the packages above it share: Group, an in-memory all-reduce among the
// workers of one process, which is the reference Reducer the ring is
// compared with, and which can inject the faults a broken ring shows.
package traintest

import (
	"context"
	"fmt"
	"math"
	"sync"

	"github.com/braidml/braid/train"
)

// Group is an in-memory all-reduce among the workers of one process,
// the reference Reducer of the tests. Each collective waits until every
// member has called it (a barrier), sums the members' buffers in member
// order, so that every member gets bitwise the same sum as a ring gives,
// and writes the sum into each member's buffer. Members must make the same
// calls in the same order, as the Reducer contract says.
type Group struct {
	mu     sync.Mutex
	cond   *sync.Cond
	size   int
	rounds map[uint64]*round // by collective sequence number
}

type round struct {
	bufs          [][]float32
	arrived, left int
	done          bool // sum (or err) is set
	sum           []float32
	err           error
}

// NewGroup makes a Group of n members and returns each member's Reducer.
func NewGroup(n int) []*Reducer {
	g := &Group{size: n, rounds: map[uint64]*round{}}
	g.cond = sync.NewCond(&g.mu)
	var rs []*Reducer
	for i := range n {
		rs = append(rs, &Reducer{g: g, member: i})
	}
	return rs
}

// Reducers returns rs as train.Reducers.
func Reducers(rs []*Reducer) []train.Reducer {
	var out []train.Reducer
	for _, r := range rs {
		out = append(out, r)
	}
	return out
}

// reduce is member's part in collective seq: it sums buf with the other
// members' buffers, or, with abort set, fails the collective for every
// member with that error (a ring that broke).
func (g *Group) reduce(member int, seq uint64, buf []float32, abort error) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	r := g.rounds[seq]
	if r == nil {
		r = &round{bufs: make([][]float32, g.size)}
		g.rounds[seq] = r
	}
	r.arrived++
	r.bufs[member] = buf
	switch {
	case r.done:
	case abort != nil:
		r.err, r.done = abort, true
		g.cond.Broadcast()
	case r.arrived == g.size:
		r.sum = make([]float32, len(buf))
		for m, b := range r.bufs {
			if len(b) != len(buf) {
				r.err = fmt.Errorf("Group: collective %d: member %d has %d elements, member %d %d", seq, m, len(b), member, len(buf))
				continue
			}
			for i, v := range b {
				r.sum[i] += v
			}
		}
		r.done = true
		g.cond.Broadcast()
	}
	for !r.done {
		g.cond.Wait()
	}
	if r.err == nil {
		copy(buf, r.sum)
	}
	if r.left++; r.left == g.size {
		delete(g.rounds, seq)
	}
	return r.err
}

// Reducer is one member's train.Reducer on a Group.
type Reducer struct {
	g      *Group
	member int
	seq    uint64 // collectives so far; used by one goroutine at a time
	// Abort, if set, may break a collective ("gradient" or "loss") for
	// every member, as a ring that loses this member does.
	Abort func(what string, step uint64) error
	// FailAfter, if set, may fail a collective for this member only, after
	// the sum: the others succeed, and this member's buffer is scribbled
	// over, as a ring whose last hops to this member broke leaves it.
	FailAfter func(what string, step uint64) error
	// OnAdd, if set, sees each bucket as the worker adds it.
	OnAdd func(bucket []float32)
}

func (r *Reducer) collective(what string, step uint64, buf []float32) error {
	seq := r.seq
	r.seq++
	var abort error
	if r.Abort != nil {
		abort = r.Abort(what, step)
	}
	if err := r.g.reduce(r.member, seq, buf, abort); err != nil {
		return err
	}
	if r.FailAfter != nil {
		if err := r.FailAfter(what, step); err != nil {
			for i := range buf {
				buf[i] = float32(math.NaN())
			}
			return err
		}
	}
	return nil
}

// AllReduce sums buf over the group (the loss collective).
func (r *Reducer) AllReduce(_ context.Context, step uint64, buf []float32) error {
	return r.collective("loss", step, buf)
}

// Start reduces the buckets one after another on a goroutine of its own,
// while the worker's backward pass goes on.
func (r *Reducer) Start(_ context.Context, step uint64) train.ReduceOp {
	op := &reduceOp{r: r, queue: make(chan []float32, 64), done: make(chan struct{})}
	go func() {
		defer close(op.done)
		for b := range op.queue {
			if err := r.collective("gradient", step, b); err != nil && op.err == nil {
				op.err = err // carry on: the other members count on this one's calls
			}
		}
	}()
	return op
}

type reduceOp struct {
	r     *Reducer
	queue chan []float32
	done  chan struct{}
	err   error
}

func (op *reduceOp) Add(b []float32) {
	if op.r.OnAdd != nil {
		op.r.OnAdd(b)
	}
	op.queue <- b
}

func (op *reduceOp) Wait() error {
	close(op.queue)
	<-op.done
	return op.err
}
