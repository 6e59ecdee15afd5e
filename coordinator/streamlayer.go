package coordinator

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/braidml/braid/transport"
	"github.com/hashicorp/raft"
)

// ServerAddress returns the raft.ServerAddress of the server named name at
// transport address addr: "name@addr". raft hands a StreamLayer only the
// address when it dials, and the transport needs the peer's identity too,
// so both travel in it. Addresses never contain '@' (validAddr), so the
// last '@' separates the two.
func ServerAddress(name, addr string) raft.ServerAddress {
	return raft.ServerAddress(name + "@" + addr)
}

// ParseServerAddress splits a ServerAddress into name and transport address.
func ParseServerAddress(a raft.ServerAddress) (name, addr string, err error) {
	i := strings.LastIndexByte(string(a), '@')
	if i <= 0 || i == len(a)-1 {
		return "", "", fmt.Errorf("%w: %q", ErrInvalidAddress, truncate(string(a), 80))
	}
	return string(a[:i]), string(a[i+1:]), nil
}

// StreamLayer is a raft.StreamLayer over a transport.Transport: Dial opens a
// transport.ProtoRaft stream to the peer named in the ServerAddress, Accept
// returns the ProtoRaft streams peers open (each a transport.Stream, which
// is a net.Conn), and Addr is this node's ServerAddress. Close stops
// accepting and closes every stream it dialed or accepted that is still
// open, so that raft's connection handlers end. It is safe for concurrent
// use. It does not close the Transport, which its owner does.
type StreamLayer struct {
	t      transport.Transport
	ln     transport.Listener
	addr   raftAddr
	ctx    context.Context // ends on Close: unblocks Accept
	cancel context.CancelFunc

	mu      sync.Mutex
	streams map[*trackedStream]struct{}
	closed  bool
}

var _ raft.StreamLayer = (*StreamLayer)(nil)

// NewStreamLayer registers t's listener for transport.ProtoRaft.
func NewStreamLayer(t transport.Transport) (*StreamLayer, error) {
	ln, err := t.Listen(transport.ProtoRaft)
	if err != nil {
		return nil, fmt.Errorf("coordinator: listen for raft: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &StreamLayer{
		t:       t,
		ln:      ln,
		addr:    raftAddr(ServerAddress(string(t.Self()), t.Addr())),
		ctx:     ctx,
		cancel:  cancel,
		streams: make(map[*trackedStream]struct{}),
	}, nil
}

// Accept waits for the next raft stream a peer opens. After Close it
// returns an error wrapping transport.ErrClosed.
func (s *StreamLayer) Accept() (net.Conn, error) {
	st, err := s.ln.Accept(s.ctx)
	if err != nil {
		if s.ctx.Err() != nil {
			return nil, fmt.Errorf("coordinator: raft stream layer: %w", transport.ErrClosed)
		}
		return nil, err
	}
	return s.track(st)
}

// Dial opens a raft stream to the server at address ("name@addr"), giving
// up after timeout.
func (s *StreamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	name, addr, err := ParseServerAddress(address)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(s.ctx, timeout)
	defer cancel()
	st, err := s.t.Dial(ctx, transport.PeerID(name), addr, transport.ProtoRaft, transport.DialOptions{})
	if err != nil {
		return nil, err
	}
	return s.track(st)
}

// Addr returns this node's ServerAddress as a net.Addr (network "braid").
func (s *StreamLayer) Addr() net.Addr { return s.addr }

// Close stops accepting and closes the open streams. It is idempotent.
func (s *StreamLayer) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	open := s.streams
	s.streams = nil
	s.mu.Unlock()
	s.cancel()
	err := s.ln.Close()
	for st := range open {
		_ = st.Stream.Close()
	}
	return err
}

func (s *StreamLayer) track(st transport.Stream) (net.Conn, error) {
	ts := &trackedStream{Stream: st, owner: s}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		_ = st.Close()
		return nil, fmt.Errorf("coordinator: raft stream layer: %w", transport.ErrClosed)
	}
	s.streams[ts] = struct{}{}
	return ts, nil
}

// trackedStream forgets itself in its StreamLayer when closed.
type trackedStream struct {
	transport.Stream
	owner *StreamLayer
	once  sync.Once
}

// Read reports io.EOF, not the transport's error, once the layer is
// closed, so that raft's connection handlers end quietly.
func (t *trackedStream) Read(b []byte) (int, error) {
	n, err := t.Stream.Read(b)
	if err != nil && t.owner.ctx.Err() != nil {
		err = io.EOF
	}
	return n, err
}

func (t *trackedStream) Close() error {
	err := t.Stream.Close()
	t.once.Do(func() {
		t.owner.mu.Lock()
		delete(t.owner.streams, t)
		t.owner.mu.Unlock()
	})
	return err
}

// raftAddr is a ServerAddress as a net.Addr.
type raftAddr string

func (a raftAddr) Network() string { return "braid" }
func (a raftAddr) String() string  { return string(a) }
