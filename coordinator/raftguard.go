package coordinator

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/raft"
)

// RaftPeers decides who may send Raft RPCs to this server: given the
// verified name of the peer at the other end of an accepted stream (its
// certificate's name, transport.Stream.Peer), it reports whether that peer
// may speak Raft here. The StreamLayer calls it when it accepts a stream and
// again for every RPC read from it, from several goroutines at once: it must
// be safe for concurrent use, cheap, and must not block.
type RaftPeers func(name string) bool

// The RPC types of raft's NetworkTransport (net_transport.go in
// hashicorp/raft v1.8: rpcAppendEntries ... rpcRequestPreVote). Each RPC on
// a stream is one of these bytes followed by the msgpack encoding of its
// request; an InstallSnapshot request is followed by Size bytes of
// snapshot.
const (
	rpcAppendEntries uint8 = iota
	rpcRequestVote
	rpcInstallSnapshot
	rpcTimeoutNow
	rpcRequestPreVote
)

// guardedConn is an accepted raft stream that hands raft only RPCs whose
// sender is allowed: before raft reads an RPC, guardedConn reads it whole,
// decodes it with the codec raft uses, checks that the peer is still one of
// the layer's RaftPeers and that the RPC header's ID is the peer's verified
// name and its Addr (and the legacy Leader/Candidate field, when set) the
// address RaftPeers gives for it, and only then passes the exact bytes it
// read on to raft. The first RPC that fails the check closes the stream:
// raft sees io.EOF and never the RPC.
//
// Raft reads from one goroutine per connection (NetworkTransport.handleConn),
// so Read is not safe for concurrent use; Write and Close are the
// trackedStream's and are.
type guardedConn struct {
	*trackedStream
	peer string

	br  *bufio.Reader
	rec recorder
	dec *codec.Decoder

	pending []byte // checked bytes raft has not read yet
	raw     int64  // snapshot bytes after an InstallSnapshot request still to pass on
	err     error  // sticky: the stream is done
}

// maxKeptBuffer bounds the decode buffer kept between RPCs: one large
// AppendEntries does not pin its size for the life of the stream.
const maxKeptBuffer = 1 << 20

func newGuardedConn(ts *trackedStream, peer string) *guardedConn {
	g := &guardedConn{trackedStream: ts, peer: peer}
	g.br = bufio.NewReaderSize(ts, 64<<10)
	g.rec.r = g.br
	g.dec = codec.NewDecoder(&g.rec, &codec.MsgpackHandle{})
	return g
}

// Read hands raft the bytes of checked RPCs only.
func (g *guardedConn) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	for len(g.pending) == 0 && g.raw == 0 {
		if g.err != nil {
			return 0, g.err
		}
		g.err = g.next()
	}
	if len(g.pending) > 0 {
		n := copy(b, g.pending)
		g.pending = g.pending[n:]
		return n, nil
	}
	if int64(len(b)) > g.raw {
		b = b[:g.raw]
	}
	n, err := g.br.Read(b)
	g.raw -= int64(n)
	if err != nil {
		g.err = err
	}
	return n, err
}

// next reads, decodes and checks the next RPC and queues its bytes for
// raft. It returns the stream's error, or io.EOF after refusing the RPC (it
// has then logged, counted and closed the stream).
func (g *guardedConn) next() error {
	if cap(g.rec.buf) > maxKeptBuffer {
		g.rec.buf = nil
	}
	typ, err := g.br.ReadByte()
	if err != nil {
		return err
	}
	g.rec.buf = append(g.rec.buf[:0], typ)
	var (
		hdr    raft.RPCHeader
		legacy []byte // the pre-v3 sender address field, if the request has one
		raw    int64
	)
	switch typ {
	case rpcAppendEntries:
		var req raft.AppendEntriesRequest
		err = g.dec.Decode(&req)
		hdr, legacy = req.RPCHeader, req.Leader
	case rpcRequestVote:
		var req raft.RequestVoteRequest
		err = g.dec.Decode(&req)
		hdr, legacy = req.RPCHeader, req.Candidate
	case rpcInstallSnapshot:
		var req raft.InstallSnapshotRequest
		err = g.dec.Decode(&req)
		hdr, legacy, raw = req.RPCHeader, req.Leader, req.Size
		if err == nil && raw < 0 {
			err = fmt.Errorf("snapshot size %d", raw)
		}
	case rpcTimeoutNow:
		var req raft.TimeoutNowRequest
		err = g.dec.Decode(&req)
		hdr = req.RPCHeader
	case rpcRequestPreVote:
		var req raft.RequestPreVoteRequest
		err = g.dec.Decode(&req)
		hdr = req.RPCHeader
	default:
		return g.refuse(fmt.Errorf("%w: unknown RPC type %d", ErrRaftPeerRefused, typ))
	}
	if err != nil {
		// A member's stream that does not decode would fail in raft too;
		// it is an error of the stream, not a refusal.
		return fmt.Errorf("coordinator: raft RPC from %q: %w", g.peer, err)
	}
	if err := g.owner.checkRPC(g.peer, hdr, legacy); err != nil {
		return g.refuse(err)
	}
	g.pending, g.raw = g.rec.buf, raw
	return nil
}

func (g *guardedConn) refuse(err error) error {
	g.owner.refused(g.peer, err)
	_ = g.Close()
	return io.EOF
}

// recorder is the decoder's reader: it keeps every byte the decoder
// consumes from r, so that the RPC raft reads is byte for byte the one that
// was checked. It is an io.ByteScanner, so the decoder reads no further
// than the end of the request (raft relies on the same for the snapshot
// bytes that follow an InstallSnapshot request).
type recorder struct {
	r   *bufio.Reader
	buf []byte
}

func (r *recorder) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.buf = append(r.buf, p[:n]...)
	return n, err
}

func (r *recorder) ReadByte() (byte, error) {
	b, err := r.r.ReadByte()
	if err == nil {
		r.buf = append(r.buf, b)
	}
	return b, err
}

func (r *recorder) UnreadByte() error {
	if err := r.r.UnreadByte(); err != nil {
		return err
	}
	r.buf = r.buf[:len(r.buf)-1]
	return nil
}

// refusalLog rate-limits the log line about refused raft peers: the first
// refusal of a name is logged, later ones within refusalLogEvery are only
// counted and reported with the next line logged for that name. A removed
// server that still campaigns would otherwise log once per election
// timeout.
type refusalLog struct {
	log *slog.Logger

	mu    sync.Mutex
	names map[string]*refusalLogEntry // bounded by maxRefusalNames
}

type refusalLogEntry struct {
	last       time.Time
	suppressed uint64
}

const (
	refusalLogEvery = time.Minute
	maxRefusalNames = 1024
)

func (l *refusalLog) record(peer string, err error) {
	now := time.Now()
	l.mu.Lock()
	if l.names == nil || len(l.names) >= maxRefusalNames {
		l.names = make(map[string]*refusalLogEntry)
	}
	e := l.names[peer]
	if e != nil && now.Sub(e.last) < refusalLogEvery {
		e.suppressed++
		l.mu.Unlock()
		return
	}
	var suppressed uint64
	if e != nil {
		suppressed = e.suppressed
	}
	l.names[peer] = &refusalLogEntry{last: now}
	l.mu.Unlock()
	l.log.Warn("refused raft peer", "peer", truncate(peer, 80), "err", err, "suppressed", suppressed)
}

// raftPeer is the Coordinator's RaftPeers, the rule for who may send Raft
// RPCs to this server. A peer may if it has been admitted to the cluster
// through the normal path, by any of the three records of admission this
// server holds:
//
//   - a server of its latest Raft configuration (from Bootstrap, its log or
//     a snapshot, or the leader that added it; latest, not committed, as
//     raft acts on a configuration as soon as it is in the log);
//   - a member of its committed state that has not left (a server that an
//     uncommitted configuration change of this server's log dropped, or the
//     far side of a healed partition, is heard while raft sorts it out);
//   - a member the node layer reports alive (MemberJoined: a peer that
//     joined gossip with a certificate of the CA). This is what a new
//     server waiting to be added has, and what a server that fell behind
//     has of a leader that was added while it was away: without it such a
//     server would refuse that leader for good and need a reset.
//
// A peer that holds a certificate but never joined (the takeover in issue
// 12) is none of these and is refused; so is a member that left, and this
// server itself. While New is still starting raft no one is admitted (peers
// retry).
func (c *Coordinator) raftPeer(name string) bool {
	r := c.started.Load()
	if r == nil || name == c.self {
		return false
	}
	for _, s := range r.GetConfiguration().Configuration().Servers {
		if string(s.ID) == name {
			return true
		}
	}
	if m, ok := c.fsm.member(name); ok && m.State != MemberLeft {
		return true
	}
	c.mu.Lock()
	m, ok := c.view[name]
	c.mu.Unlock()
	return ok && m.State == MemberAlive
}

// RefusedRaftStreams is the number of raft streams this server has refused
// since New: streams from peers that are not servers of its Raft
// configuration, and streams that carried an RPC whose header named another
// server or address (see StreamLayer). Each refusal is also logged, at most
// once a minute per peer name.
func (c *Coordinator) RefusedRaftStreams() uint64 { return c.layer.Refused() }
