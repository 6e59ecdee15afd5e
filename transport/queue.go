package transport

import (
	"context"
	"sync"
)

// Queue is the Listener an implementation hands its accepted streams to:
// an unbuffered hand-over from the goroutine that accepted a stream to the
// caller of Accept. transport/quic and transport/tlstcp use it.
type Queue struct {
	p       Protocol
	ch      chan Stream
	done    chan struct{}
	once    sync.Once
	onClose func()
}

// NewQueue makes the listener of protocol p; onClose runs once, when it is
// closed (the implementation drops it from its table).
func NewQueue(p Protocol, onClose func()) *Queue {
	return &Queue{p: p, ch: make(chan Stream), done: make(chan struct{}), onClose: onClose}
}

// Protocol is the protocol the queue serves.
func (q *Queue) Protocol() Protocol { return q.p }

// In is where the implementation sends an accepted stream (unbuffered: it
// waits for Accept), selecting on Done too.
func (q *Queue) In() chan<- Stream { return q.ch }

// Done is closed when the queue is.
func (q *Queue) Done() <-chan struct{} { return q.done }

// Accept returns the next stream a peer opened for the protocol.
func (q *Queue) Accept(ctx context.Context) (Stream, error) {
	select {
	case <-q.done:
		return nil, ErrClosed
	default:
	}
	select {
	case s := <-q.ch:
		return s, nil
	case <-q.done:
		return nil, ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Close stops accepting; streams not yet accepted are the implementation's
// to drop (it sees Done), and the protocol can be listened for again.
func (q *Queue) Close() error {
	q.once.Do(func() {
		q.onClose()
		close(q.done)
	})
	return nil
}
