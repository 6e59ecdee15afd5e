package memnet

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/braidml/braid/transport"
)

// Transport is one node's endpoint on a Network; it implements
// transport.Transport. Make one with Network.Node. All methods are safe for
// concurrent use.
type Transport struct {
	net  *Network
	id   transport.PeerID
	addr string
	wg   sync.WaitGroup // handshakes of incoming streams

	mu        sync.Mutex // guards the fields below and every listener's state
	closed    bool
	listeners map[transport.Protocol]*listener
	streams   map[*stream]struct{} // open streams of this end, to close with it

	sent sync.Map // transport.Protocol → *atomic.Int64: payload bytes written by this end's streams
}

// BytesSent is the payload bytes this endpoint's streams of protocol p have
// written so far (what the peers were sent, counted by the network rather
// than by the code under test).
func (t *Transport) BytesSent(p transport.Protocol) int64 {
	if c, ok := t.sent.Load(p); ok {
		return c.(*atomic.Int64).Load()
	}
	return 0
}

func (t *Transport) countSent(p transport.Protocol, n int) {
	c, ok := t.sent.Load(p)
	if !ok {
		c, _ = t.sent.LoadOrStore(p, new(atomic.Int64))
	}
	c.(*atomic.Int64).Add(int64(n))
}

var _ transport.Transport = (*Transport)(nil)

// Self returns the node's id.
func (t *Transport) Self() transport.PeerID { return t.id }

// Addr returns Address(Self()).
func (t *Transport) Addr() string { return t.addr }

// Dial opens a stream for protocol p to the node at addr, which must be peer.
// It fails at once with transport.ErrUnreachable when no live node has that
// address or a partition separates the two, with transport.ErrWrongPeer when
// the node there is not peer, and with transport.ErrNotListening when the
// peer has no listener for p. Otherwise it writes the stream header, waits
// for the status byte (subject to delays and drops like any frame) and
// returns, or returns ctx's error when ctx ends first. opt.Lane must not be
// negative and is otherwise ignored.
func (t *Transport) Dial(ctx context.Context, peer transport.PeerID, addr string, p transport.Protocol, opt transport.DialOptions) (transport.Stream, error) {
	if !transport.ValidProtocol(p) {
		return nil, fmt.Errorf("memnet: dial %s: %w: %q", peer, transport.ErrBadProtocol, p)
	}
	if opt.Lane < 0 {
		return nil, fmt.Errorf("memnet: dial %s: DialOptions.Lane %d is negative", peer, opt.Lane)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("memnet: dial %s at %s: %w", peer, addr, err)
	}
	t.mu.Lock()
	closed := t.closed
	t.mu.Unlock()
	if closed {
		return nil, fmt.Errorf("memnet: dial %s from %s: %w", peer, t.id, transport.ErrClosed)
	}
	remote, seq, err := t.net.connect(t, peer, addr)
	if err != nil {
		return nil, err
	}

	ds, as := newStream(t, remote, seq, p)
	if !t.track(ds) {
		return nil, fmt.Errorf("memnet: dial %s from %s: %w", peer, t.id, transport.ErrClosed)
	}
	if !remote.handshake(as) {
		ds.abort(nil)
		return nil, fmt.Errorf("memnet: dial %s at %s: it closed: %w", peer, addr, transport.ErrUnreachable)
	}
	return t.finishDial(ctx, ds, peer, addr, p)
}

// finishDial is the dialing side of the stream handshake on ds: it writes
// the header and reads the status byte.
func (t *Transport) finishDial(ctx context.Context, ds *stream, peer transport.PeerID, addr string, p transport.Protocol) (transport.Stream, error) {
	c := ds.c
	fail := func(err error) (transport.Stream, error) {
		// The acceptor, which may have queued the stream already, sees a
		// reset, not the dialer's reason (such as its context's error).
		ds.abort(fmt.Errorf("memnet: %s gave up its %s stream to %s during the handshake: %w: %w", t.id, p, peer, ErrReset, transport.ErrUnreachable))
		return nil, fmt.Errorf("memnet: dial %s at %s for %s: %w", peer, addr, p, err)
	}

	var hdr bytes.Buffer
	if err := transport.WriteStreamHeader(&hdr, p); err != nil {
		return fail(err)
	}
	if err := ds.send(ctx, hdr.Bytes(), nil, true); err != nil {
		return fail(err)
	}
	c.mu.Lock()
	seg, err := ds.next(ctx, nil, true)
	c.mu.Unlock()
	switch {
	case err != nil:
		return fail(err)
	case seg.fin:
		return fail(fmt.Errorf("peer closed the stream before answering: %w", transport.ErrUnreachable))
	case len(seg.b) != 1:
		return fail(fmt.Errorf("%w: status of %d bytes", transport.ErrBadFrame, len(seg.b)))
	case seg.b[0] == transport.StatusOK:
		return ds, nil
	case seg.b[0] == transport.StatusNotListening:
		ds.Close()
		return nil, fmt.Errorf("memnet: dial %s at %s: %w: %s", peer, addr, transport.ErrNotListening, p)
	default:
		return fail(fmt.Errorf("%w: status byte %d", transport.ErrBadFrame, seg.b[0]))
	}
}

// newStream returns the two ends of a new stream for p from t to remote,
// numbered seq on that link. The accepting end learns p from the header.
func newStream(t, remote *Transport, seq uint64, p transport.Protocol) (ds, as *stream) {
	c := &conn{net: t.net, seq: seq}
	c.dir[0] = pipe{link: link{t.id, remote.id}}
	c.dir[1] = pipe{link: link{remote.id, t.id}}
	ds = &stream{c: c, side: 0, t: t, peer: remote.id, proto: p, laddr: netAddr(t.addr), raddr: netAddr(remote.addr)}
	as = &stream{c: c, side: 1, t: remote, peer: t.id, laddr: netAddr(remote.addr), raddr: netAddr(t.addr)}
	return ds, as
}

// Listen registers the listener for protocol p.
func (t *Transport) Listen(p transport.Protocol) (transport.Listener, error) {
	if !transport.ValidProtocol(p) {
		return nil, fmt.Errorf("memnet: listen on %s: %w: %q", t.id, transport.ErrBadProtocol, p)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, fmt.Errorf("memnet: listen %s on %s: %w", p, t.id, transport.ErrClosed)
	}
	if _, ok := t.listeners[p]; ok {
		return nil, fmt.Errorf("memnet: listen %s on %s: %w", p, t.id, transport.ErrAlreadyListens)
	}
	l := &listener{t: t, proto: p}
	t.listeners[p] = l
	return l, nil
}

// Close closes the endpoint gracefully: its listeners, and each of its
// streams as Stream.Close does (peers read io.EOF after the data in flight).
// It returns once every goroutine the endpoint started has ended. The id may
// then be used again with Network.Node. Closing twice is harmless.
func (t *Transport) Close() error {
	t.shutdown(nil)
	return nil
}

// shutdown closes t: gracefully when kill is nil, otherwise resetting every
// stream with kill.
func (t *Transport) shutdown(kill error) {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		t.wg.Wait()
		return
	}
	t.closed = true
	ls := t.listeners
	t.listeners = nil
	ss := make([]*stream, 0, len(t.streams))
	for s := range t.streams {
		ss = append(ss, s)
	}
	t.mu.Unlock()
	// Leave the network first, so that no new dial reaches t.
	t.net.forget(t)
	// Streams first, so that a kill resets the queued, unaccepted ones too.
	for _, s := range ss {
		if kill != nil {
			s.abort(kill)
		} else {
			s.Close()
		}
	}
	for _, l := range ls {
		l.Close()
	}
	t.wg.Wait()
}

// track registers an open stream of this end; false when t is closed.
func (t *Transport) track(s *stream) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.streams[s] = struct{}{}
	return true
}

func (t *Transport) untrack(s *stream) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.streams, s)
}

// handshake takes an incoming stream and starts answering its header; false
// when t is closed.
func (t *Transport) handshake(s *stream) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.streams[s] = struct{}{}
	t.wg.Add(1)
	go t.serve(s)
	return true
}

// serve is the accepting side of the stream handshake: it reads and decodes
// the header, answers with the status byte and hands the stream to the
// listener. It ends when the handshake does: the dialer gives up or breaks
// the stream, or t closes the stream.
func (t *Transport) serve(s *stream) {
	defer t.wg.Done()
	c := s.c
	c.mu.Lock()
	seg, err := s.next(nil, nil, false)
	c.mu.Unlock()
	switch {
	case err != nil:
		s.abort(nil)
		return
	case seg.fin:
		s.Close()
		return
	}
	p, err := decodeHeader(seg.b)
	if err != nil {
		s.abort(fmt.Errorf("memnet: stream from %s: %w", s.peer, err))
		return
	}
	s.proto = p // nobody else sees s until it is queued below
	t.mu.Lock()
	l := t.listeners[p]
	t.mu.Unlock()
	status := transport.StatusOK
	if l == nil {
		status = transport.StatusNotListening
	}
	// The status goes out before the stream is queued, so that it precedes
	// anything the accepting application writes.
	if err := s.send(nil, []byte{status}, nil, false); err != nil {
		s.abort(nil)
		return
	}
	if l == nil || !l.enqueue(s) {
		s.Close()
	}
}

// decodeHeader decodes a stream header that must fill b exactly.
func decodeHeader(b []byte) (transport.Protocol, error) {
	r := bytes.NewReader(b)
	p, err := transport.ReadStreamHeader(r)
	if err != nil {
		return "", err
	}
	if r.Len() != 0 {
		return "", fmt.Errorf("%w: %d bytes after the stream header", transport.ErrBadFrame, r.Len())
	}
	return p, nil
}

// listener implements transport.Listener. Its state is guarded by t.mu.
type listener struct {
	t     *Transport
	proto transport.Protocol

	closed bool
	queue  []*stream
	ready  chan struct{} // closed and cleared when queue or closed changes
}

func (l *listener) Protocol() transport.Protocol { return l.proto }

// Accept returns the next stream opened for the protocol, in the order the
// handshakes completed.
func (l *listener) Accept(ctx context.Context) (transport.Stream, error) {
	t := l.t
	t.mu.Lock()
	defer t.mu.Unlock()
	for {
		if l.closed {
			return nil, fmt.Errorf("memnet: accept %s on %s: %w", l.proto, t.id, transport.ErrClosed)
		}
		if len(l.queue) > 0 {
			s := l.queue[0]
			l.queue[0] = nil
			l.queue = l.queue[1:]
			return s, nil
		}
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("memnet: accept %s on %s: %w", l.proto, t.id, err)
		}
		if l.ready == nil {
			l.ready = make(chan struct{})
		}
		ready := l.ready
		t.mu.Unlock()
		select {
		case <-ready:
		case <-ctx.Done():
		}
		t.mu.Lock()
	}
}

// Close stops accepting and closes the streams that were queued but not
// accepted; accepted streams stay open. The protocol may be listened on again.
func (l *listener) Close() error {
	t := l.t
	t.mu.Lock()
	if l.closed {
		t.mu.Unlock()
		return nil
	}
	l.closed = true
	if t.listeners[l.proto] == l {
		delete(t.listeners, l.proto)
	}
	queued := l.queue
	l.queue = nil
	l.wake()
	t.mu.Unlock()
	for _, s := range queued {
		s.Close()
	}
	return nil
}

// enqueue hands s to Accept; false when the listener is closed.
func (l *listener) enqueue(s *stream) bool {
	l.t.mu.Lock()
	defer l.t.mu.Unlock()
	if l.closed {
		return false
	}
	l.queue = append(l.queue, s)
	l.wake()
	return true
}

func (l *listener) wake() {
	if l.ready != nil {
		close(l.ready)
		l.ready = nil
	}
}
