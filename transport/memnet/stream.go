package memnet

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/braidml/braid/transport"
)

const (
	// maxChunk is the largest payload of one frame: Write cuts its bytes into
	// frames of at most this many.
	maxChunk = 64 << 10
	// window is how many encoded bytes one direction of a stream holds before
	// the reader takes them; Write blocks beyond it.
	window = 1 << 20
)

var (
	errLocalClosed = fmt.Errorf("memnet: use of closed stream: %w (%w)", transport.ErrClosed, net.ErrClosed)
	errWriteClosed = fmt.Errorf("memnet: write after CloseWrite: %w", io.ErrClosedPipe)
)

// conn is the shared state of one stream's two ends.
type conn struct {
	net *Network
	seq uint64 // the stream's number on the dialer→acceptor link

	mu      sync.Mutex // guards the fields below and both ends' guarded fields
	changed chan struct{}
	err     error   // set when the stream breaks; every operation then fails with it
	dir     [2]pipe // 0: dialer→acceptor, 1: acceptor→dialer
}

// wake wakes every goroutine waiting on c. Called with c.mu held.
func (c *conn) wake() {
	if c.changed != nil {
		close(c.changed)
		c.changed = nil
	}
}

// breakLocked resets the stream: both ends fail with err from now on and
// what was in flight is discarded. The first error wins.
func (c *conn) breakLocked(err error) {
	if c.err != nil {
		return
	}
	c.err = err
	for i := range c.dir {
		c.dir[i].segs = nil
		c.dir[i].queued = 0
	}
	c.wake()
}

// wait releases c.mu until c changes, the topology tp is replaced, the
// deadline dl or ctx ends, or the time at (when not zero) comes. The caller
// re-checks its condition. Called with c.mu held; returns with it held.
func (c *conn) wait(ctx context.Context, tp *topology, dl *deadline, at time.Time) {
	if c.changed == nil {
		c.changed = make(chan struct{})
	}
	changed := c.changed
	var dlc, ctxc <-chan struct{}
	var timer <-chan time.Time
	if dl != nil {
		dlc = dl.done()
	}
	if ctx != nil {
		ctxc = ctx.Done()
	}
	if !at.IsZero() {
		tm := time.NewTimer(time.Until(at))
		defer tm.Stop()
		timer = tm.C
	}
	c.mu.Unlock()
	select {
	case <-changed:
	case <-tp.changed:
	case <-dlc:
	case <-ctxc:
	case <-timer:
	}
	c.mu.Lock()
}

// segment is one unit in flight: the stream header, the status byte, an
// encoded frame, or the end of the direction (fin).
type segment struct {
	at  time.Time // delivered no earlier than this
	b   []byte
	fin bool
}

// pipe is one direction of a stream. Guarded by conn.mu.
type pipe struct {
	link
	segs    []segment // in flight, in order
	queued  int       // bytes in segs
	sent    uint64    // segments written so far, numbering them for drops
	lastAt  time.Time // delivery time of the last segment
	fin     bool      // the writer ended this direction
	eof     bool      // the reader took the fin
	rclosed bool      // the reader closed its end: writes fail, nothing is kept
}

// push appends a segment, delivered after the link's delay and never before
// the previous one.
func (p *pipe) push(tp *topology, b []byte, fin bool) {
	if fin {
		p.fin = true
	}
	if p.rclosed {
		return
	}
	at := time.Now().Add(tp.delay[p.link])
	if at.Before(p.lastAt) {
		at = p.lastAt
	}
	p.lastAt = at
	p.segs = append(p.segs, segment{at: at, b: b, fin: fin})
	p.queued += len(b)
}

// stream is one end of a stream; it implements transport.Stream.
type stream struct {
	c            *conn
	side         int        // index in c.dir of the direction this end writes
	t            *Transport // the endpoint this end belongs to
	peer         transport.PeerID
	proto        transport.Protocol
	laddr, raddr netAddr
	rdl, wdl     deadline
	wmu          sync.Mutex // serialises Writes, so each one's bytes stay together

	// guarded by c.mu
	closed bool
	rbuf   []byte // payload of the last frame, not yet read
}

var _ transport.Stream = (*stream)(nil)

func (s *stream) out() *pipe { return &s.c.dir[s.side] }
func (s *stream) in() *pipe  { return &s.c.dir[1-s.side] }

func (s *stream) Peer() transport.PeerID       { return s.peer }
func (s *stream) Protocol() transport.Protocol { return s.proto }
func (s *stream) LocalAddr() net.Addr          { return s.laddr }
func (s *stream) RemoteAddr() net.Addr         { return s.raddr }

func (s *stream) SetDeadline(t time.Time) error {
	s.rdl.set(t)
	s.wdl.set(t)
	return nil
}

func (s *stream) SetReadDeadline(t time.Time) error  { s.rdl.set(t); return nil }
func (s *stream) SetWriteDeadline(t time.Time) error { s.wdl.set(t); return nil }

// usable returns the error every operation on a closed or broken end returns.
// Called with c.mu held.
func (s *stream) usable() error {
	if s.closed {
		return errLocalClosed
	}
	return s.c.err
}

// Read reads what the peer wrote. A deadline that passes returns
// os.ErrDeadlineExceeded (a net.Error whose Timeout is true); the peer's
// CloseWrite or Close returns io.EOF once everything before it was read.
func (s *stream) Read(b []byte) (int, error) {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		if err := s.usable(); err != nil {
			return 0, err
		}
		if s.rdl.expired() {
			return 0, os.ErrDeadlineExceeded
		}
		if len(s.rbuf) > 0 || len(b) == 0 {
			n := copy(b, s.rbuf)
			s.rbuf = s.rbuf[n:]
			return n, nil
		}
		seg, err := s.next(nil, &s.rdl, false)
		if err != nil {
			return 0, err
		}
		if seg.fin {
			return 0, io.EOF
		}
		payload, err := decodeFrame(seg.b)
		if err != nil {
			err = fmt.Errorf("memnet: %s stream from %s: %w", s.proto, s.peer, err)
			c.breakLocked(err)
			return 0, err
		}
		s.rbuf = payload
	}
}

// next waits for the next segment that has arrived and takes it. With
// dialing set, a link that is down fails the stream with
// transport.ErrUnreachable instead of stalling it. Called with c.mu held.
func (s *stream) next(ctx context.Context, dl *deadline, dialing bool) (segment, error) {
	c, in := s.c, s.in()
	for {
		if err := s.usable(); err != nil {
			return segment{}, err
		}
		if in.eof {
			return segment{}, io.EOF
		}
		if dl != nil && dl.expired() {
			return segment{}, os.ErrDeadlineExceeded
		}
		if ctx != nil && ctx.Err() != nil {
			return segment{}, ctx.Err()
		}
		tp := c.net.topology()
		up := tp.reachable(in.from, in.to)
		if !up && dialing {
			c.breakLocked(fmt.Errorf("memnet: link from %s to %s went down during the handshake: %w", in.from, in.to, transport.ErrUnreachable))
			return segment{}, c.err
		}
		var at time.Time
		if up && len(in.segs) > 0 {
			seg := in.segs[0]
			if !time.Now().Before(seg.at) {
				in.segs[0] = segment{}
				in.segs = in.segs[1:]
				in.queued -= len(seg.b)
				in.eof = seg.fin
				c.wake() // a writer may wait for room
				return seg, nil
			}
			at = seg.at
		}
		c.wait(ctx, tp, dl, at)
	}
}

// decodeFrame decodes a frame that must fill b exactly.
func decodeFrame(b []byte) ([]byte, error) {
	r := bytes.NewReader(b)
	payload, err := transport.ReadFrame(r, nil, maxChunk)
	if err == io.EOF {
		return nil, fmt.Errorf("%w: empty segment", transport.ErrBadFrame)
	}
	if err != nil {
		return nil, err
	}
	if r.Len() != 0 {
		return nil, fmt.Errorf("%w: %d bytes after the frame", transport.ErrBadFrame, r.Len())
	}
	return payload, nil
}

// Write writes b as frames of at most 64 KiB. It blocks while the peer has
// 1 MiB unread or a partition cuts the link. A deadline that passes returns
// os.ErrDeadlineExceeded with the count of the bytes written before it.
// Writes are serialised: the bytes of one Write are never interleaved with
// another's.
func (s *stream) Write(b []byte) (int, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if len(b) == 0 {
		s.c.mu.Lock()
		defer s.c.mu.Unlock()
		if err := s.usable(); err != nil {
			return 0, err
		}
		if s.wdl.expired() {
			return 0, os.ErrDeadlineExceeded
		}
		return 0, nil
	}
	n := 0
	for n < len(b) {
		m := min(len(b)-n, maxChunk)
		var frame bytes.Buffer
		frame.Grow(4 + m)
		if err := transport.WriteFrame(&frame, b[n:n+m]); err != nil {
			return n, err
		}
		if err := s.send(nil, frame.Bytes(), &s.wdl, false); err != nil {
			return n, err
		}
		s.t.countSent(s.proto, m)
		n += m
	}
	return n, nil
}

// send writes one segment, waiting for room and for the link to be up (with
// dialing set, a link that is down fails the stream instead). It applies the
// drop and delay of the link.
func (s *stream) send(ctx context.Context, b []byte, dl *deadline, dialing bool) error {
	c, out := s.c, s.out()
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		if err := s.usable(); err != nil {
			return err
		}
		if out.fin {
			return errWriteClosed
		}
		if out.rclosed {
			return fmt.Errorf("memnet: %s closed the %s stream: %w", s.peer, s.proto, io.ErrClosedPipe)
		}
		if dl != nil && dl.expired() {
			return os.ErrDeadlineExceeded
		}
		if ctx != nil && ctx.Err() != nil {
			return ctx.Err()
		}
		tp := c.net.topology()
		up := tp.reachable(out.from, out.to)
		if !up && dialing {
			c.breakLocked(fmt.Errorf("memnet: %s cannot reach %s: %w", out.from, out.to, transport.ErrUnreachable))
			return c.err
		}
		if up && out.queued < window {
			k := out.sent
			out.sent++
			if c.net.dropped(tp, out.link, c.seq, k) {
				c.breakLocked(fmt.Errorf("memnet: frame %d of stream %d from %s to %s dropped: %w: %w",
					k, c.seq, out.from, out.to, ErrReset, transport.ErrUnreachable))
				return c.err
			}
			out.push(tp, b, false)
			c.wake()
			return nil
		}
		c.wait(ctx, tp, dl, time.Time{})
	}
}

// CloseWrite ends the write direction: the peer reads io.EOF once it has
// read everything written before. Reads go on. Calling it twice is harmless.
func (s *stream) CloseWrite() error {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := s.usable(); err != nil {
		return err
	}
	if out := s.out(); !out.fin {
		out.push(c.net.topology(), nil, true)
		c.wake()
	}
	return nil
}

// Close closes both directions: the peer reads io.EOF after the data in
// flight, and its Writes fail from now on; pending Reads and Writes on this
// end return an error wrapping transport.ErrClosed and net.ErrClosed.
func (s *stream) Close() error {
	c := s.c
	c.mu.Lock()
	if s.closed {
		c.mu.Unlock()
		return errLocalClosed
	}
	s.closed = true
	s.rbuf = nil
	if c.err == nil {
		if out := s.out(); !out.fin {
			out.push(c.net.topology(), nil, true)
		}
		in := s.in()
		in.rclosed = true
		in.segs = nil
		in.queued = 0
	}
	c.wake()
	c.mu.Unlock()
	s.release()
	return nil
}

// abort closes this end and breaks the stream with err (a generic reset when
// nil), unless this end was closed already.
func (s *stream) abort(err error) {
	c := s.c
	c.mu.Lock()
	if !s.closed {
		s.closed = true
		s.rbuf = nil
		if err == nil {
			err = fmt.Errorf("memnet: %s stream between %s and %s aborted: %w: %w", s.proto, s.t.id, s.peer, ErrReset, transport.ErrUnreachable)
		}
		c.breakLocked(err)
	}
	c.mu.Unlock()
	s.release()
}

// release drops what a closed end holds.
func (s *stream) release() {
	s.rdl.set(time.Time{})
	s.wdl.set(time.Time{})
	s.t.untrack(s)
}

// netAddr is a memnet address as a net.Addr.
type netAddr string

func (a netAddr) Network() string { return "memnet" }
func (a netAddr) String() string  { return string(a) }

// deadline is one direction's deadline, as net.Conn defines it: changing it
// affects operations already waiting.
type deadline struct {
	mu    sync.Mutex
	timer *time.Timer
	ch    chan struct{} // closed once the deadline has passed
}

// set sets the deadline; the zero time clears it.
func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		<-d.ch // the timer fired: wait until it has closed ch
	}
	d.timer = nil
	if d.ch == nil {
		d.ch = make(chan struct{})
	}
	passed := isClosed(d.ch)
	if t.IsZero() {
		if passed {
			d.ch = make(chan struct{})
		}
		return
	}
	if dur := time.Until(t); dur > 0 {
		if passed {
			d.ch = make(chan struct{})
		}
		ch := d.ch
		d.timer = time.AfterFunc(dur, func() { close(ch) })
		return
	}
	if !passed {
		close(d.ch)
	}
}

// done returns a channel closed once the deadline passes.
func (d *deadline) done() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ch == nil {
		d.ch = make(chan struct{})
	}
	return d.ch
}

func (d *deadline) expired() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ch != nil && isClosed(d.ch)
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
