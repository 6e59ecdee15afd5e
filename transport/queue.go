package transport

import (
	"context"
	"fmt"
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

// Listeners is an implementation's table of protocol listeners, one Queue
// per protocol. The zero value is ready; safe for concurrent use.
type Listeners struct {
	mu     sync.Mutex
	closed bool
	m      map[Protocol]*Queue
}

// Listen registers the listener for p on the endpoint self: ErrBadProtocol,
// ErrAlreadyListens, or ErrClosed after Close.
func (ls *Listeners) Listen(p Protocol, self PeerID) (*Queue, error) {
	if !ValidProtocol(p) {
		return nil, fmt.Errorf("%w: %q", ErrBadProtocol, p)
	}
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.closed {
		return nil, ErrClosed
	}
	if ls.m[p] != nil {
		return nil, fmt.Errorf("%w: %s on %s", ErrAlreadyListens, p, self)
	}
	if ls.m == nil {
		ls.m = map[Protocol]*Queue{}
	}
	var q *Queue
	q = NewQueue(p, func() {
		ls.mu.Lock()
		if ls.m[p] == q {
			delete(ls.m, p)
		}
		ls.mu.Unlock()
	})
	ls.m[p] = q
	return q, nil
}

// Get returns the listener of p, or nil.
func (ls *Listeners) Get(p Protocol) *Queue {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return ls.m[p]
}

// Close closes every listener and refuses Listen from then on.
func (ls *Listeners) Close() {
	ls.mu.Lock()
	ls.closed = true
	qs := make([]*Queue, 0, len(ls.m))
	for _, q := range ls.m {
		qs = append(qs, q)
	}
	ls.mu.Unlock()
	for _, q := range qs {
		q.Close()
	}
}
