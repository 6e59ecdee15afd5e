// Package allreduce sums a float32 buffer across the members of a training
// ring: a ring all-reduce (reduce-scatter, then all-gather) over
// transport.ProtoRing streams, each neighbour's traffic split across several
// parallel streams (transport lanes) and pipelined in chunks, accumulated in
// fp32 and carried on the wire as fp32, bf16, fp16 or int8 (see Dtype).
//
// Every rank ends an AllReduce with bitwise the same buffer: the rank that
// owns a segment encodes its reduced segment once, keeps the decoded result
// itself and sends those same bytes around the ring, which every other rank
// decodes and forwards unchanged.
//
// What this package does not do: membership, retries or recovery. Any error
// (a dead or stalled neighbour, a stale message, a cancelled context) breaks
// the Ring for good; the caller closes it and builds a new one for the next
// epoch. It does not choose ring order either: members arrive in ring order.
package allreduce

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/braidml/braid/transport"
)

// Errors, wrapped with the step, the operation and the peer at fault.
var (
	// ErrClosed is returned by calls on a closed Ring.
	ErrClosed = errors.New("allreduce: ring closed")
	// ErrBroken is returned by calls on a Ring that an earlier error broke.
	ErrBroken = errors.New("allreduce: ring broken by an earlier error")
	// ErrProtocol is a message that does not belong here: a stale step or
	// operation, a wrong hop or chunk, a wrong length.
	ErrProtocol = errors.New("allreduce: unexpected message")
	// ErrPeerAborted is a neighbour reporting that the ring broke; the
	// error's text goes on with the root cause as the first rank to fail
	// saw it.
	ErrPeerAborted = errors.New("allreduce: ring aborted")
	// ErrBusy is returned by AllReduce while another AllReduce (or an Op)
	// runs on the same Ring.
	ErrBusy = errors.New("allreduce: ring busy")
)

// Member is one rank of the ring.
type Member struct {
	ID   transport.PeerID
	Addr string
}

// Config tunes a Ring. Start from DefaultConfig.
type Config struct {
	// Dtype is the element type on the wire; accumulation is always fp32.
	Dtype Dtype
	// Streams is how many parallel streams carry the traffic to each
	// neighbour; stream i is dialled on transport lane i. 1..64.
	Streams int
	// ChunkBytes is the pipelining unit, counted in fp32 bytes (ChunkBytes/4
	// elements per message, fewer on the wire for narrower dtypes).
	// 4 .. 16 MiB.
	ChunkBytes int
	// HopTimeout bounds every read and write of a message, the dial and the
	// handshake: a dead or stalled neighbour is reported within about this.
	HopTimeout time.Duration
}

// DefaultConfig is fp32 on the wire, 4 streams per neighbour, 1 MiB chunks
// and a 10 s hop timeout.
func DefaultConfig() Config {
	return Config{Dtype: FP32, Streams: 4, ChunkBytes: 1 << 20, HopTimeout: 10 * time.Second}
}

// Validate reports the first field out of bounds.
func (c Config) Validate() error {
	switch {
	case c.Dtype > INT8:
		return fmt.Errorf("allreduce: Config.Dtype %d unknown (want FP32, BF16, FP16 or INT8)", c.Dtype)
	case c.Streams < 1 || c.Streams > 64:
		return fmt.Errorf("allreduce: Config.Streams %d out of range 1..64", c.Streams)
	case c.ChunkBytes < 4 || c.ChunkBytes > 16<<20:
		return fmt.Errorf("allreduce: Config.ChunkBytes %d out of range 4..%d", c.ChunkBytes, 16<<20)
	case c.HopTimeout <= 0:
		return fmt.Errorf("allreduce: Config.HopTimeout %v must be positive", c.HopTimeout)
	}
	return nil
}

// Ring runs all-reduces among a fixed list of members. Its methods are safe
// for concurrent use, but only one AllReduce (or Op) runs at a time; a
// second concurrent one returns ErrBusy.
type Ring struct {
	cfg        Config
	tr         transport.Transport
	members    []Member
	rank       int
	left       Member // we receive from left
	right      Member // we send to right
	chunkElems int

	ln         transport.Listener // nil when world size is 1
	stopAccept context.CancelFunc
	acceptDone chan struct{}

	run sync.Mutex // held by the AllReduce in progress (TryLock)

	frames frameList // message buffers, reused across calls

	sent atomic.Int64 // bytes written to the right neighbour (BytesSent)

	mu      sync.Mutex
	closed  bool
	broken  error
	out     []transport.Stream // to right, by lane; nil until connected
	in      []transport.Stream // from left, by lane; filled by acceptLoop
	nin     int
	pending transport.Stream // accepted, handshake not yet read
	inReady chan struct{}    // closed once every in[lane] is set
	seq     uint64           // AllReduce calls so far (same on every rank)
}

// NewRing builds the ring members (in ring order, tr.Self() among them) on
// tr. It starts listening for ProtoRing streams at once (so tr must have no
// other ProtoRing listener) but dials nothing: the streams to the right
// neighbour are dialled by the first AllReduce and reused after.
func NewRing(cfg Config, tr transport.Transport, members []Member) (*Ring, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if len(members) == 0 {
		return nil, errors.New("allreduce: no members")
	}
	rank := -1
	seen := make(map[transport.PeerID]bool, len(members))
	for i, m := range members {
		if m.ID == "" {
			return nil, fmt.Errorf("allreduce: member %d has an empty ID", i)
		}
		if seen[m.ID] {
			return nil, fmt.Errorf("allreduce: member %s listed twice", m.ID)
		}
		seen[m.ID] = true
		if m.ID == tr.Self() {
			rank = i
		}
	}
	if rank < 0 {
		return nil, fmt.Errorf("allreduce: self %s is not a member", tr.Self())
	}
	n := len(members)
	r := &Ring{
		cfg:        cfg,
		tr:         tr,
		members:    append([]Member(nil), members...),
		rank:       rank,
		left:       members[(rank+n-1)%n],
		right:      members[(rank+1)%n],
		chunkElems: cfg.ChunkBytes / 4,
		in:         make([]transport.Stream, cfg.Streams),
		inReady:    make(chan struct{}),
	}
	if n > 1 {
		ln, err := tr.Listen(transport.ProtoRing)
		if err != nil {
			return nil, fmt.Errorf("allreduce: listen: %w", err)
		}
		r.ln = ln
		ctx, cancel := context.WithCancel(context.Background())
		r.stopAccept = cancel
		r.acceptDone = make(chan struct{})
		go r.acceptLoop(ctx)
	}
	return r, nil
}

// Rank is this node's index in the ring; Size is the world size.
func (r *Ring) Rank() int { return r.rank }

// Size is the number of members.
func (r *Ring) Size() int { return len(r.members) }

// BytesSent is how many bytes this rank has written to its right
// neighbour so far (frames: headers and payloads, as the transport took
// them; the transport's own overhead is not counted).
func (r *Ring) BytesSent() int64 { return r.sent.Load() }

// Config is the configuration the ring was built with.
func (r *Ring) Config() Config { return r.cfg }

// Close stops listening and closes every stream; an AllReduce in progress
// fails. A second Close is a no-op.
func (r *Ring) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	streams := r.streamsLocked()
	if r.pending != nil {
		streams = append(streams, r.pending)
	}
	r.mu.Unlock()
	for _, s := range streams {
		s.Close()
	}
	if r.ln != nil {
		r.stopAccept()
		r.ln.Close()
		<-r.acceptDone
	}
	// Streams accepted after the snapshot above are closed by acceptLoop,
	// which sees closed under mu.
	return nil
}

func (r *Ring) streamsLocked() []transport.Stream {
	var all []transport.Stream
	for _, s := range r.out {
		if s != nil {
			all = append(all, s)
		}
	}
	for _, s := range r.in {
		if s != nil {
			all = append(all, s)
		}
	}
	return all
}

// breakRing marks the ring unusable and closes its streams, which makes
// every blocked read and write of the AllReduce in progress return.
func (r *Ring) breakRing(err error) {
	r.mu.Lock()
	if r.broken == nil {
		r.broken = err
	}
	streams := r.streamsLocked()
	r.mu.Unlock()
	for _, s := range streams {
		s.Close()
	}
}

// handshake is the first frame on each ring stream:
//
//	"ARR1" | lane u16 | streams u16 | world size u32
const handshakeMagic = "ARR1"

func (r *Ring) handshakeFrame(lane int) []byte {
	b := make([]byte, 0, 12)
	b = append(b, handshakeMagic...)
	b = binary.BigEndian.AppendUint16(b, uint16(lane))
	b = binary.BigEndian.AppendUint16(b, uint16(r.cfg.Streams))
	b = binary.BigEndian.AppendUint32(b, uint32(len(r.members)))
	return b
}

// acceptLoop takes the left neighbour's streams and files them by lane.
// Streams from anyone else, or with a handshake that does not match this
// ring's shape, are closed.
func (r *Ring) acceptLoop(ctx context.Context) {
	defer close(r.acceptDone)
	for {
		s, err := r.ln.Accept(ctx)
		if err != nil {
			return
		}
		if s.Peer() != r.left.ID {
			s.Close()
			continue
		}
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			s.Close()
			return
		}
		r.pending = s // Close closes it, so a silent dialer cannot hold Close up
		r.mu.Unlock()
		s.SetReadDeadline(time.Now().Add(r.cfg.HopTimeout))
		f, err := transport.ReadFrame(s, nil, 64)
		s.SetReadDeadline(time.Time{})
		r.mu.Lock()
		r.pending = nil
		r.mu.Unlock()
		if err != nil || len(f) != 12 || string(f[:4]) != handshakeMagic ||
			int(binary.BigEndian.Uint16(f[6:])) != r.cfg.Streams ||
			int(binary.BigEndian.Uint32(f[8:])) != len(r.members) {
			s.Close()
			continue
		}
		lane := int(binary.BigEndian.Uint16(f[4:]))
		r.mu.Lock()
		if r.closed || r.broken != nil || lane >= len(r.in) || r.in[lane] != nil {
			r.mu.Unlock()
			s.Close()
			continue
		}
		r.in[lane] = s
		r.nin++
		if r.nin == len(r.in) {
			close(r.inReady)
		}
		r.mu.Unlock()
	}
}

// Connect sets up the ring's streams now instead of at the first
// all-reduce (which otherwise does it): the neighbours' dials and
// handshakes, within HopTimeout. Every member must call it, or start an
// all-reduce.
func (r *Ring) Connect(ctx context.Context) error {
	if len(r.members) == 1 {
		return nil // a ring of one has no streams
	}
	return r.connect(ctx, 0)
}

// connect dials the right neighbour's lanes (once) and waits for the left
// neighbour's, all within HopTimeout. A dial the neighbour is not yet ready
// for (no listener yet, not yet up) is retried until then.
func (r *Ring) connect(ctx context.Context, step uint64) error {
	r.mu.Lock()
	done := r.out != nil
	r.mu.Unlock()
	if done {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.HopTimeout)
	defer cancel()
	out := make([]transport.Stream, r.cfg.Streams)
	fail := func(err error) error {
		for _, s := range out {
			if s != nil {
				s.Close()
			}
		}
		return err
	}
	for lane := range out {
		for {
			s, err := r.tr.Dial(ctx, r.right.ID, r.right.Addr, transport.ProtoRing, transport.DialOptions{Lane: lane})
			if err == nil {
				out[lane] = s
				break
			}
			if !errors.Is(err, transport.ErrNotListening) && !errors.Is(err, transport.ErrUnreachable) || ctx.Err() != nil {
				return fail(fmt.Errorf("allreduce: step %d: all-reduce connect: dial %s lane %d: %w", step, r.right.ID, lane, err))
			}
			select {
			case <-ctx.Done():
				return fail(fmt.Errorf("allreduce: step %d: all-reduce connect: dial %s lane %d: %w (last: %w)", step, r.right.ID, lane, ctx.Err(), err))
			case <-time.After(20 * time.Millisecond):
			}
		}
		s := out[lane]
		s.SetWriteDeadline(time.Now().Add(r.cfg.HopTimeout))
		if err := transport.WriteFrame(s, r.handshakeFrame(lane)); err != nil {
			return fail(fmt.Errorf("allreduce: step %d: all-reduce connect: handshake to %s lane %d: %w", step, r.right.ID, lane, err))
		}
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return fail(ErrClosed)
	}
	r.out = out
	r.mu.Unlock()
	select {
	case <-r.inReady:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("allreduce: step %d: all-reduce connect: waiting for %s to dial in: %w", step, r.left.ID, ctx.Err())
	}
}

// Drain ends the ring gracefully, for a caller that is about to close the
// transport (a process about to exit): it closes the write side of every
// stream to the right neighbour, reads each stream from the left neighbour
// to its end and acknowledges it by closing its write side too, and waits
// for the right neighbour's acknowledgements (or for it to close its
// transport, which it does only once its own Drain has read everything).
// When Drain returns nil, every frame this rank sent has been read by its
// neighbour, so closing the transport loses nothing. Every rank must call Drain after its last
// operation; it returns when ctx ends otherwise. The Ring is closed after.
func (r *Ring) Drain(ctx context.Context) error {
	r.mu.Lock()
	out := append([]transport.Stream(nil), r.out...)
	in := append([]transport.Stream(nil), r.in...)
	r.mu.Unlock()
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(r.cfg.HopTimeout)
	}
	errs := make(chan error, len(out)+len(in))
	// untilEOF reads s to its end; anything but io.EOF is an error.
	untilEOF := func(s transport.Stream, what string) error {
		s.SetReadDeadline(deadline)
		var buf [512]byte
		for {
			_, err := s.Read(buf[:])
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return fmt.Errorf("allreduce: drain: %s %s: %w", what, s.Peer(), err)
			}
		}
	}
	n := 0
	for _, s := range out {
		if s == nil {
			continue
		}
		n++
		go func() {
			if err := s.CloseWrite(); err != nil {
				errs <- fmt.Errorf("allreduce: drain: closing the stream to %s: %w", s.Peer(), err)
				return
			}
			err := untilEOF(s, "waiting for the acknowledgement of")
			if errors.Is(err, transport.ErrUnreachable) {
				// The neighbour closed its transport before its
				// acknowledgement arrived. It does that only after its own
				// Drain read our stream to its end, so this is a delivery
				// too; the last acknowledgement of a ring cannot itself be
				// acknowledged.
				err = nil
			}
			errs <- err
		}()
	}
	for _, s := range in {
		if s == nil {
			continue
		}
		n++
		go func() {
			if err := untilEOF(s, "reading the end of the stream from"); err != nil {
				errs <- err
				return
			}
			errs <- s.CloseWrite()
		}()
	}
	var first error
	for range n {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return errors.Join(first, r.Close())
}
