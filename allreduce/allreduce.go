package allreduce

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/braidml/braid/transport"
)

// Message frames (one transport frame each):
//
//	step u64 | seq u64 | phase u8 | hop u32 | chunk u32 | 3 zero bytes | payload
//
// The padding puts the payload 32 bytes into the buffer that also holds the
// frame's 4-byte length prefix, so that an FP32 payload is 4-byte aligned
// and is encoded, decoded and summed as float32s in place (see
// float32View). Buffers are laid out as msgOff bytes of prefix and header,
// then the payload, and written with transport.WriteFramed: nothing is
// copied between the encoder and the transport.
// seq counts AllReduce calls on the ring, so that two calls with the same
// step (the buckets of one Op) are still told apart; phase is
// phaseReduceScatter or phaseAllGather; hop is the ring step within the
// phase (0 .. N-2); payload is the chunk encoded as Config.Dtype.
const headerLen = 28

// msgOff is where the header starts in a message buffer: after the frame's
// length prefix. The payload starts at msgOff+headerLen.
const msgOff = transport.FramePrefix

const (
	phaseReduceScatter byte = 1
	phaseAllGather     byte = 2
	// phaseAbort carries, as its payload, the text of the error that broke
	// the ring (the root cause, as the first rank to fail saw it), so that
	// every rank's error names the peer at fault, not just the neighbour
	// that closed on it. Best effort: a lane whose sender is blocked in a
	// write gets no abort frame, only the close.
	phaseAbort byte = 3
)

// maxReason bounds the text of an abort frame.
const maxReason = 1024

func phaseName(p byte) string {
	if p == phaseReduceScatter {
		return "all-reduce reduce-scatter"
	}
	return "all-reduce all-gather"
}

func putHeader(b []byte, step, seq uint64, phase byte, hop, chunk int) {
	binary.BigEndian.PutUint64(b[0:], step)
	binary.BigEndian.PutUint64(b[8:], seq)
	b[16] = phase
	binary.BigEndian.PutUint32(b[17:], uint32(hop))
	binary.BigEndian.PutUint32(b[21:], uint32(chunk))
}

// AllReduce replaces buf, on every member, with the elementwise sum of every
// member's buf. Every member must call it with the same step and the same
// len(buf), in the same order of calls. It blocks until done, ctx ends, or a
// neighbour fails or stalls for HopTimeout; on return every member holds
// bitwise the same buf. With a lossy Dtype the result is rounded to what
// the wire type carries (also at world size 1, which sends nothing). buf is
// not retained. Calls do not overlap: a second concurrent call (or one
// during an Op) returns ErrBusy.
//
// Any error leaves buf partly reduced and the Ring broken (later calls
// return ErrBroken); errors name the step, the phase and the peer.
func (r *Ring) AllReduce(ctx context.Context, step uint64, buf []float32) error {
	if !r.run.TryLock() {
		return ErrBusy
	}
	defer r.run.Unlock()
	r.mu.Lock()
	closed, broken := r.closed, r.broken
	seq := r.seq
	r.seq++
	r.mu.Unlock()
	if closed {
		return ErrClosed
	}
	if broken != nil {
		return fmt.Errorf("%w: %w", ErrBroken, broken)
	}
	if err := ctx.Err(); err != nil {
		err = fmt.Errorf("allreduce: step %d: all-reduce: %w", step, err)
		r.breakRing(err)
		return err
	}
	n := len(r.members)
	if n == 1 {
		// The same result as N ranks would give: the owner's rounding.
		var scratch []byte
		for c := 0; c*r.chunkElems < len(buf); c++ {
			x := buf[c*r.chunkElems : min((c+1)*r.chunkElems, len(buf))]
			scratch = Encode(r.cfg.Dtype, scratch[:0], x)
			if err := Decode(r.cfg.Dtype, x, scratch); err != nil {
				return fmt.Errorf("allreduce: step %d: all-reduce: %w", step, err)
			}
		}
		return nil
	}
	if err := r.connect(ctx, step); err != nil {
		r.breakRing(err)
		return err
	}
	r.mu.Lock()
	out, in := r.out, r.in
	r.mu.Unlock()

	o := &op{r: r, step: step, seq: seq, buf: buf, abort: make(chan struct{}), out: out,
		lanes: make([]sync.Mutex, len(out))}
	var wg sync.WaitGroup
	for lane := range r.cfg.Streams {
		q := newQueue()
		sent := make(chan struct{})
		wg.Add(2)
		go func() { defer wg.Done(); o.send(lane, out[lane], q, sent) }()
		go func() { defer wg.Done(); o.recv(lane, in[lane], q, sent) }()
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-ctx.Done():
		select {
		case <-finished: // done anyway: the result stands
		default:
			o.fail(fmt.Errorf("allreduce: step %d: all-reduce: %w", step, ctx.Err()))
			<-finished
		}
	}
	if o.err != nil {
		return o.err
	}
	return nil
}

// op is one AllReduce in flight.
type op struct {
	r         *Ring
	step, seq uint64
	buf       []float32

	out   []transport.Stream
	lanes []sync.Mutex // held by send around each write on out[lane]

	heard atomic.Bool // a frame came from the left neighbour in this call

	once  sync.Once
	abort chan struct{} // closed on the first error
	err   error         // the first error; set before abort closes
}

// fail records the first error, tells the right neighbour why (see
// phaseAbort) and breaks the ring. root is the root cause's text when the
// error is a neighbour's abort, else "".
func (o *op) fail(err error) { o.failRoot(err, "") }

func (o *op) failRoot(err error, root string) {
	o.once.Do(func() {
		o.err = err
		close(o.abort)
		if root == "" {
			root = err.Error()
		}
		if len(root) > maxReason {
			root = root[:maxReason]
		}
		grace := min(o.r.cfg.HopTimeout, 100*time.Millisecond)
		var wg sync.WaitGroup
		for lane, s := range o.out {
			if !o.lanes[lane].TryLock() {
				continue // send is mid-write; the close will do
			}
			wg.Go(func() {
				defer o.lanes[lane].Unlock()
				f := make([]byte, msgOff+headerLen, msgOff+headerLen+len(root))
				putHeader(f[msgOff:], o.step, o.seq, phaseAbort, 0, 0)
				s.SetWriteDeadline(time.Now().Add(grace))
				transport.WriteFramed(s, append(f, root...))
			})
		}
		wg.Wait()
		o.r.breakRing(err)
	})
}

func (o *op) failed() bool {
	select {
	case <-o.abort:
		return true
	default:
		return false
	}
}

// seg is segment k of the buffer, for lane: [lo, hi).
func (o *op) seg(k, lane int) (lo, hi int) {
	n, size, s := len(o.buf), len(o.r.members), o.r.cfg.Streams
	k = ((k % size) + size) % size
	slo, shi := k*n/size, (k+1)*n/size
	l := shi - slo
	return slo + lane*l/s, slo + (lane+1)*l/s
}

func (o *op) nchunks(lo, hi int) int { return (hi - lo + o.r.chunkElems - 1) / o.r.chunkElems }

func (o *op) chunk(lo, hi, c int) []float32 {
	a := lo + c*o.r.chunkElems
	return o.buf[a:min(a+o.r.chunkElems, hi)]
}

// send writes this lane's share of every hop to the right neighbour. It
// sends what recv has made ready, in order: reduce-scatter hop 0 is local
// data, hop h>0 is what recv reduced at hop h-1; all-gather hop 0 is this
// rank's own reduced segment, encoded once and decoded back in place (so the
// owner keeps exactly what the others decode); hop h>0 forwards the bytes
// recv took at hop h-1 unchanged.
func (o *op) send(lane int, s transport.Stream, q *queue, sent chan struct{}) {
	r := o.r
	size := len(r.members)
	scratch := make([]byte, msgOff+headerLen, msgOff+headerLen+r.cfg.Dtype.EncodedLen(r.chunkElems))
	// writeParts sends one frame of head (the length prefix's room and
	// the header) followed by payload, in two writes when payload is not
	// empty: payload is then the buffer's own bytes, sent without a copy.
	writeParts := func(phase byte, hop, c int, head, payload []byte) bool {
		putHeader(head[msgOff:], o.step, o.seq, phase, hop, c)
		o.lanes[lane].Lock()
		if o.failed() {
			o.lanes[lane].Unlock()
			return false
		}
		s.SetWriteDeadline(time.Now().Add(r.cfg.HopTimeout))
		var err error
		if len(payload) == 0 {
			err = transport.WriteFramed(s, head)
		} else {
			binary.BigEndian.PutUint32(head, uint32(len(head)-msgOff+len(payload)))
			if _, err = s.Write(head); err == nil {
				_, err = s.Write(payload)
			}
		}
		if err == nil {
			r.sent.Add(int64(len(head) + len(payload)))
		}
		o.lanes[lane].Unlock()
		if err != nil {
			// A neighbour that closed on us is usually reporting a failure
			// further on, whose cause is on its way round the ring in an
			// abort frame: give the receiving side a moment to deliver it.
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				select {
				case <-o.abort:
					return false
				case <-time.After(min(r.cfg.HopTimeout, 100*time.Millisecond)):
				}
			}
			o.fail(fmt.Errorf("allreduce: step %d: %s: send to %s (lane %d, hop %d): %w",
				o.step, phaseName(phase), r.right.ID, lane, hop, err))
			return false
		}
		return true
	}
	write := func(phase byte, hop, c int, frame []byte) bool { return writeParts(phase, hop, c, frame, nil) }
	for hop := 0; hop < size-1; hop++ {
		lo, hi := o.seg(r.rank-hop, lane)
		for c := range o.nchunks(lo, hi) {
			if hop > 0 {
				if _, ok := q.pop(o.abort); !ok {
					return
				}
			}
			x := o.chunk(lo, hi, c)
			if raw, ok := fp32Bytes(x); ok && r.cfg.Dtype == FP32 {
				// FP32's encoding is the buffer's own bytes: no copy.
				if !writeParts(phaseReduceScatter, hop, c, scratch[:msgOff+headerLen], raw) {
					return
				}
				continue
			}
			scratch = Encode(r.cfg.Dtype, scratch[:msgOff+headerLen], x)
			if !write(phaseReduceScatter, hop, c, scratch) {
				return
			}
		}
	}
	close(sent)
	for hop := 0; hop < size-1; hop++ {
		lo, hi := o.seg(r.rank+1-hop, lane)
		for c := range o.nchunks(lo, hi) {
			frame, ok := q.pop(o.abort)
			if !ok {
				return
			}

			if hop == 0 {
				x := o.chunk(lo, hi, c)
				if raw, ok := fp32Bytes(x); ok && r.cfg.Dtype == FP32 {
					if !writeParts(phaseAllGather, hop, c, scratch[:msgOff+headerLen], raw) {
						return
					}
					continue
				}
				scratch = Encode(r.cfg.Dtype, scratch[:msgOff+headerLen], x)
				if r.cfg.Dtype != FP32 { // FP32 decodes to the same bits
					if err := Decode(r.cfg.Dtype, x, scratch[msgOff+headerLen:]); err != nil {
						o.fail(fmt.Errorf("allreduce: step %d: all-reduce all-gather: round own segment: %w", o.step, err))
						return
					}
				}
				frame = scratch
			}
			ok = write(phaseAllGather, hop, c, frame)
			if hop > 0 {
				r.frames.put(frame) // recv took it from the list to forward it
			}
			if !ok {
				return
			}
		}
	}
}

// recv reads this lane's share of every hop from the left neighbour: in
// reduce-scatter it adds each chunk into buf and tells send it is ready; in
// all-gather it decodes each chunk into buf and hands the frame to send to
// forward.
func (o *op) recv(lane int, s transport.Stream, q *queue, sent chan struct{}) {
	r := o.r
	size := len(r.members)
	maxFrame := r.maxFrame()
	rbuf := r.frames.get(maxFrame)
	defer func() { r.frames.put(rbuf) }()
	// read reads the next frame into buf (a buffer from r.frames) after its
	// length prefix and returns it without the prefix: f = buf[msgOff:...].
	read := func(phase byte, hop, c, elems int, buf []byte) []byte {
		dst := buf[msgOff:msgOff]
		s.SetReadDeadline(time.Now().Add(r.cfg.HopTimeout))
		f, err := transport.ReadFrame(s, dst, maxFrame)
		if errors.Is(err, os.ErrDeadlineExceeded) && !errors.Is(err, transport.ErrBadFrame) && o.heard.Load() && !o.failed() {
			// Nothing of a frame arrived in time, from a neighbour that did
			// send earlier in this call, so the stall is probably further
			// up the ring. A stall times every rank out at about the same
			// moment, but the rank right after it (which heard nothing)
			// fails at once and sends the cause round in an abort frame:
			// wait a moment for it so that the error names the culprit.
			s.SetReadDeadline(time.Now().Add(min(r.cfg.HopTimeout/2, time.Second)))
			if g, err2 := transport.ReadFrame(s, buf[msgOff:msgOff], maxFrame); err2 == nil && len(g) >= headerLen && g[16] == phaseAbort {
				f, err = g, nil
			}
		}
		if err == nil && len(f) >= headerLen && f[16] == phaseAbort {
			root := string(f[headerLen:])
			o.failRoot(fmt.Errorf("allreduce: step %d: %s: %s broke the ring: %w: %s",
				o.step, phaseName(phase), r.left.ID, ErrPeerAborted, root), root)
			return nil
		}
		if err == nil {
			err = o.check(f, phase, hop, c, elems)
			o.heard.Store(true)
		}
		if err != nil {
			if !errors.Is(err, os.ErrDeadlineExceeded) && !errors.Is(err, ErrProtocol) {
				// A neighbour that closed on us may have sent the cause on
				// another lane (see phaseAbort): give it a moment.
				select {
				case <-o.abort:
					return nil
				case <-time.After(min(r.cfg.HopTimeout, 100*time.Millisecond)):
				}
			}
			o.fail(fmt.Errorf("allreduce: step %d: %s: receive from %s (lane %d, hop %d): %w",
				o.step, phaseName(phase), r.left.ID, lane, hop, err))
			return nil
		}
		return f
	}
	for hop := 0; hop < size-1; hop++ {
		lo, hi := o.seg(r.rank-hop-1, lane)
		for c := range o.nchunks(lo, hi) {
			x := o.chunk(lo, hi, c)
			f := read(phaseReduceScatter, hop, c, len(x), rbuf)
			if f == nil {
				return
			}
			if err := DecodeAdd(r.cfg.Dtype, x, f[headerLen:]); err != nil {
				o.fail(fmt.Errorf("allreduce: step %d: all-reduce reduce-scatter: receive from %s: %w: %w", o.step, r.left.ID, ErrProtocol, err))
				return
			}
			q.push(nil)
		}
	}
	// All-gather overwrites segments that send read during
	// reduce-scatter: wait until it has sent them.
	select {
	case <-sent:
	case <-o.abort:
		return
	}
	for hop := 0; hop < size-1; hop++ {
		lo, hi := o.seg(r.rank-hop, lane)
		forward := hop < size-2
		for c := range o.nchunks(lo, hi) {
			x := o.chunk(lo, hi, c)
			buf := rbuf
			if forward {
				buf = r.frames.get(maxFrame) // goes to send, which puts it back
			}
			f := read(phaseAllGather, hop, c, len(x), buf)
			if f == nil {
				if forward {
					r.frames.put(buf)
				}
				return
			}
			if err := Decode(r.cfg.Dtype, x, f[headerLen:]); err != nil {
				o.fail(fmt.Errorf("allreduce: step %d: all-reduce all-gather: receive from %s: %w: %w", o.step, r.left.ID, ErrProtocol, err))
				if forward {
					r.frames.put(buf)
				}
				return
			}
			if forward {
				q.push(buf[:msgOff+len(f)])
			}
		}
	}
}

// check validates a message frame's header against what the schedule
// expects next.
func (o *op) check(f []byte, phase byte, hop, c, elems int) error {
	if len(f) < headerLen {
		return fmt.Errorf("%w: frame of %d bytes", ErrProtocol, len(f))
	}
	step, seq := binary.BigEndian.Uint64(f[0:]), binary.BigEndian.Uint64(f[8:])
	gp, gh, gc := f[16], int(binary.BigEndian.Uint32(f[17:])), int(binary.BigEndian.Uint32(f[21:]))
	if step != o.step || seq != o.seq || gp != phase || gh != hop || gc != c {
		return fmt.Errorf("%w: got step %d call %d phase %d hop %d chunk %d, want step %d call %d phase %d hop %d chunk %d",
			ErrProtocol, step, seq, gp, gh, gc, o.step, o.seq, phase, hop, c)
	}
	if want := headerLen + o.r.cfg.Dtype.EncodedLen(elems); len(f) != want {
		return fmt.Errorf("%w: frame of %d bytes, want %d (buffers of different lengths?)", ErrProtocol, len(f), want)
	}
	return nil
}

// frameList keeps message buffers (msgOff + the largest frame) between
// uses, across calls: recv takes one per forwarded all-gather chunk and send
// returns it once written, so a long all-reduce allocates only as many as
// are in flight at once.
type frameList struct {
	mu   sync.Mutex
	bufs [][]byte
}

// get returns a buffer with room for msgOff + max bytes.
func (l *frameList) get(max int) []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	if n := len(l.bufs); n > 0 {
		b := l.bufs[n-1]
		l.bufs[n-1] = nil
		l.bufs = l.bufs[:n-1]
		return b[:cap(b)]
	}
	return make([]byte, msgOff+max)
}

// put returns b for reuse; the list keeps at most 64 buffers.
func (l *frameList) put(b []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.bufs) < 64 {
		l.bufs = append(l.bufs, b)
	}
}

// maxFrame is the largest frame (header + payload) a ring message can be.
func (r *Ring) maxFrame() int {
	return headerLen + max(r.cfg.Dtype.EncodedLen(r.chunkElems), maxReason)
}

// queue hands items from recv to send in order, without ever blocking recv
// (a bounded hand-off could deadlock the ring under flow control).
type queue struct {
	mu    sync.Mutex
	items [][]byte
	more  chan struct{} // capacity 1: "items may be non-empty"
}

func newQueue() *queue { return &queue{more: make(chan struct{}, 1)} }

func (q *queue) push(b []byte) {
	q.mu.Lock()
	q.items = append(q.items, b)
	q.mu.Unlock()
	select {
	case q.more <- struct{}{}:
	default:
	}
}

// pop waits for the next item; false when abort closes first.
func (q *queue) pop(abort <-chan struct{}) ([]byte, bool) {
	for {
		q.mu.Lock()
		if len(q.items) > 0 {
			b := q.items[0]
			q.items[0] = nil
			q.items = q.items[1:]
			q.mu.Unlock()
			return b, true
		}
		q.mu.Unlock()
		select {
		case <-q.more:
		case <-abort:
			return nil, false
		}
	}
}
