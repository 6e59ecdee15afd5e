package coordinator

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
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
//
// It admits Raft RPCs by identity. Accept hands raft a stream only from a
// peer its RaftPeers allows, and raft reads from that stream only RPCs whose
// header names the peer: the header's ID must be the peer's verified name,
// and its Addr (and the legacy sender field of older RPCs) a ServerAddress
// of that name. Both are checked again on every RPC, so that a peer that
// stops being allowed is refused on the streams it already has (see
// guardedConn). The address part of Addr is not compared with the
// configuration's: a node restarted on another port is still itself, and
// raft dials the configured address, not the header's. A refused stream is
// closed before raft reads a byte of the refused RPC; every refusal is
// counted (Refused) and logged with the peer's name. Streams this layer
// dials are not checked: the transport verified that the peer at the other
// end is the one named in the address, and raft only reads responses on
// them.
type StreamLayer struct {
	t       transport.Transport
	ln      transport.Listener
	addr    raftAddr
	peers   RaftPeers
	ctx     context.Context // ends on Close: unblocks Accept
	cancel  context.CancelFunc
	refusal refusalLog
	refuses atomic.Uint64

	handlers sync.WaitGroup // accepted streams their handlers have not closed yet

	mu      sync.Mutex
	streams map[*trackedStream]struct{}
	closed  bool
}

var _ raft.StreamLayer = (*StreamLayer)(nil)

// NewStreamLayer registers t's listener for transport.ProtoRaft. Peers
// decides who may send Raft RPCs (required); refusals are logged to logger
// (nil discards them).
func NewStreamLayer(t transport.Transport, peers RaftPeers, logger *slog.Logger) (*StreamLayer, error) {
	if peers == nil {
		return nil, fmt.Errorf("%w: raft stream layer without RaftPeers", ErrInvalidConfig)
	}
	if logger == nil {
		logger = discardLogger
	}
	ln, err := t.Listen(transport.ProtoRaft)
	if err != nil {
		return nil, fmt.Errorf("coordinator: listen for raft: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &StreamLayer{
		t:       t,
		ln:      ln,
		addr:    raftAddr(ServerAddress(string(t.Self()), t.Addr())),
		peers:   peers,
		ctx:     ctx,
		cancel:  cancel,
		refusal: refusalLog{log: logger},
		streams: make(map[*trackedStream]struct{}),
	}, nil
}

// Accept waits for the next raft stream that a peer allowed by RaftPeers
// opens; streams of other peers are refused (closed, counted and logged)
// and Accept waits on. After Close it returns an error wrapping
// transport.ErrClosed.
func (s *StreamLayer) Accept() (net.Conn, error) {
	for {
		st, err := s.ln.Accept(s.ctx)
		if err != nil {
			if s.ctx.Err() != nil {
				return nil, fmt.Errorf("coordinator: raft stream layer: %w", transport.ErrClosed)
			}
			return nil, err
		}
		peer := string(st.Peer())
		if !s.peers(peer) {
			s.refused(peer, fmt.Errorf("%w: not admitted to the cluster (not a server of the raft configuration nor a member)", ErrRaftPeerRefused))
			_ = st.Close()
			continue
		}
		ts, err := s.track(st, true)
		if err != nil {
			return nil, err
		}
		return newGuardedConn(ts, peer), nil
	}
}

// Refused is the number of raft streams refused so far: streams from peers
// RaftPeers does not allow, and streams closed on an RPC whose header does
// not name their peer.
func (s *StreamLayer) Refused() uint64 { return s.refuses.Load() }

// checkRPC returns nil if peer may send an RPC with header hdr and legacy
// sender field legacy (AppendEntries' and InstallSnapshot's Leader,
// RequestVote's Candidate; empty when absent), or an error wrapping
// ErrRaftPeerRefused that says why not.
func (s *StreamLayer) checkRPC(peer string, hdr raft.RPCHeader, legacy []byte) error {
	switch {
	case !s.peers(peer):
		return fmt.Errorf("%w: not admitted to the cluster (not a server of the raft configuration nor a member)", ErrRaftPeerRefused)
	case string(hdr.ID) != peer:
		return fmt.Errorf("%w: RPC header ID %q", ErrRaftPeerRefused, truncate(string(hdr.ID), 80))
	case !namesPeer(hdr.Addr, peer):
		return fmt.Errorf("%w: RPC header address %q is not %s's", ErrRaftPeerRefused, truncate(string(hdr.Addr), 80), peer)
	case len(legacy) > 0 && !namesPeer(legacy, peer):
		return fmt.Errorf("%w: RPC sender address %q is not %s's", ErrRaftPeerRefused, truncate(string(legacy), 80), peer)
	}
	return nil
}

// namesPeer reports whether addr is a ServerAddress of the server peer.
func namesPeer(addr []byte, peer string) bool {
	name, _, err := ParseServerAddress(raft.ServerAddress(addr))
	return err == nil && name == peer
}

func (s *StreamLayer) refused(peer string, err error) {
	s.refuses.Add(1)
	s.refusal.record(peer, err)
}

// track registers st so that Close closes it.

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
	ts, err := s.track(st, false)
	if err != nil {
		return nil, err
	}
	return ts, nil
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

// track registers st so that Close closes it. An accepted stream is also
// counted until its connection handler closes it (WaitHandlers).
func (s *StreamLayer) track(st transport.Stream, accepted bool) (*trackedStream, error) {
	ts := &trackedStream{Stream: st, owner: s, accepted: accepted}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		_ = st.Close()
		return nil, fmt.Errorf("coordinator: raft stream layer: %w", transport.ErrClosed)
	}
	s.streams[ts] = struct{}{}
	if accepted {
		s.handlers.Add(1)
	}
	return ts, nil
}

// WaitHandlers waits, after Close, until raft's handler of every accepted
// stream has closed it (and so will not call into raft again), or ctx
// ends. raft handles a heartbeat on the handler's goroutine, writing the
// term to the stable store: the store may be closed only once no handler
// can still be in the middle of one (raft panics when the write fails).
func (s *StreamLayer) WaitHandlers(ctx context.Context) error {
	done := make(chan struct{})
	go func() { s.handlers.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("coordinator: raft connection handlers still running: %w", ctx.Err())
	}
}

// trackedStream forgets itself in its StreamLayer when closed.
type trackedStream struct {
	transport.Stream
	owner    *StreamLayer
	accepted bool // counted in owner.handlers until closed
	once     sync.Once
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
		if t.accepted {
			t.owner.handlers.Done()
		}
	})
	return err
}

// raftAddr is a ServerAddress as a net.Addr.
type raftAddr string

func (a raftAddr) Network() string { return "braid" }
func (a raftAddr) String() string  { return string(a) }
