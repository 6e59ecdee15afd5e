// Package transport defines how braid nodes talk to each other: named,
// mutually authenticated peers open byte streams to one another, each stream
// carrying one logical protocol (raft, ring, shard, blob, control) named in
// a header when it opens.
//
// Implementations: transport/memnet (in-process, deterministic, with
// partition, drop and delay hooks, for tests of whole clusters) and
// transport/quic (quic-go with mutual TLS, the only one used in production).
// Both pass the conformance suite in transport/transporttest.
//
// What this package does not do: membership (package node), message
// framing beyond the stream header (each protocol frames its own bytes, with
// WriteFrame/ReadFrame where it wants length-prefixed messages), or retries.
package transport

import (
	"context"
	"errors"
	"net"
)

// PeerID is a node's name. A peer's PeerID is taken from its certificate
// (the CommonName of a certificate signed by the cluster CA), never from
// anything the peer says, so a stream's Peer cannot be forged.
type PeerID string

// Protocol names the logical protocol a stream carries. Names are short
// ASCII identifiers (1..32 bytes of [a-z0-9_.-]).
type Protocol string

// The protocols braid uses.
const (
	ProtoRaft    Protocol = "raft"    // hashicorp/raft RPCs (coordinator)
	ProtoRing    Protocol = "ring"    // all-reduce chunks between ring neighbours
	ProtoShard   Protocol = "shard"   // dataset shard transfer
	ProtoBlob    Protocol = "blob"    // model weights and checkpoints by hash
	ProtoControl Protocol = "control" // small request/response messages
)

// Errors. Implementations wrap these with the peer and address at fault.
var (
	ErrClosed         = errors.New("transport: closed")
	ErrUnreachable    = errors.New("transport: peer unreachable")
	ErrWrongPeer      = errors.New("transport: peer identity does not match")
	ErrBadProtocol    = errors.New("transport: invalid protocol name")
	ErrNotListening   = errors.New("transport: peer does not accept this protocol")
	ErrAlreadyListens = errors.New("transport: protocol already has a listener")
	ErrFrameTooLarge  = errors.New("transport: frame larger than the limit")
	ErrBadFrame       = errors.New("transport: malformed frame")
)

// Stream is one bidirectional byte stream to a peer, carrying one protocol.
// It is a net.Conn so that libraries that want one (raft's StreamLayer) can
// use it as is: Read and Write may be called concurrently with each other,
// deadlines work as net.Conn documents (an expired deadline is a net.Error
// whose Timeout() is true, wrapping os.ErrDeadlineExceeded), Write blocks
// when the peer does not read (flow control), and Close delivers what was
// written and then io.EOF to the peer. LocalAddr and RemoteAddr are the
// transport addresses of the two nodes (on QUIC the accepting side sees the
// dialer's UDP source address).
type Stream interface {
	net.Conn
	// Peer is the authenticated identity of the other end.
	Peer() PeerID
	// Protocol is the protocol this stream was opened for.
	Protocol() Protocol
	// CloseWrite ends the write direction (the peer reads io.EOF) while
	// reads go on.
	CloseWrite() error
}

// DialOptions tune Dial. The zero value is the default.
type DialOptions struct {
	// Lane picks one of several connections to the same peer for bulk
	// traffic: streams on different lanes do not share a connection (and so
	// not a congestion window or a CPU-bound crypto pipeline). Lanes are
	// numbered from 0; implementations cap the count (QUIC: Config.Lanes)
	// and take lane mod that cap. Lane 0 is the connection everything
	// else shares.
	Lane int
}

// Transport is a node's endpoint: it dials peers and accepts their streams.
// All methods are safe for concurrent use.
type Transport interface {
	// Self is this node's identity.
	Self() PeerID
	// Addr is the address peers dial to reach this node.
	Addr() string
	// Dial opens a stream for protocol p to the node at addr, which must
	// authenticate as peer (ErrWrongPeer otherwise). It returns once the
	// stream is open and the peer has a listener for p (ErrNotListening
	// otherwise), or when ctx ends. Connections are reused across Dials.
	Dial(ctx context.Context, peer PeerID, addr string, p Protocol, opt DialOptions) (Stream, error)
	// Listen registers the listener for protocol p; streams peers open for p
	// are delivered to it. One listener per protocol (ErrAlreadyListens).
	Listen(p Protocol) (Listener, error)
	// Close closes every listener, connection and stream; a second Close
	// is a no-op. Dial and Listen on a closed Transport return ErrClosed.
	Close() error
}

// Listener delivers the streams peers open for one protocol.
type Listener interface {
	// Accept waits for the next stream or for ctx to end. After Close it
	// returns ErrClosed.
	Accept(ctx context.Context) (Stream, error)
	// Close stops accepting; streams already accepted stay open.
	Close() error
	// Protocol is the protocol this listener serves.
	Protocol() Protocol
}

// ValidProtocol reports whether p is a well-formed protocol name.
func ValidProtocol(p Protocol) bool {
	if len(p) < 1 || len(p) > 32 {
		return false
	}
	for _, c := range []byte(p) {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}
