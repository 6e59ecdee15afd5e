// Package memnet is an in-process network that implements transport.Transport,
// so that a whole cluster (raft, ring all-reduce, shard transfer) can run in
// one test process, with faults injected deterministically: partitions,
// isolation, frame drops, delays, and killing and restarting nodes.
//
// Every byte crosses the real codec: opening a stream writes
// transport.WriteStreamHeader and waits for the status byte; the accepting
// side decodes the header with transport.ReadStreamHeader and looks the
// protocol up in its listeners; every Write is cut into frames encoded with
// transport.WriteFrame and decoded with transport.ReadFrame on the other side.
// A frame that does not decode breaks the stream with transport.ErrBadFrame,
// so encoding bugs cannot hide behind the fake network.
//
// The model, stated once for every hook below:
//
//   - A node is named by its transport.PeerID, which is also its identity
//     (memnet's stand-in for a certificate). Its address is Address(id),
//     "mem:<id>". Dialing an address with no live node is
//     transport.ErrUnreachable; dialing a live node with the wrong peer is
//     transport.ErrWrongPeer.
//   - Faults are set per node id (or pair of ids), so they outlive a node's
//     restart; Heal, SetDrop(..., 0) and SetDelay(..., 0) clear them.
//   - Each stream is independent: there are no connections, so DialOptions.Lane
//     is validated (it must not be negative) and otherwise ignored. A fault that
//     breaks a stream breaks only that stream.
//   - Each direction of a stream carries at most 1 MiB of frames that the
//     reader has not taken yet; Write blocks beyond that, as a real
//     transport's flow control would.
//   - Partition and Isolate stall existing streams between nodes that can no
//     longer reach each other: frames in flight are held, Write blocks and
//     Read waits, until Heal or a deadline, as a TCP or QUIC stream would
//     while its packets are lost. After Heal they carry on with nothing lost.
//     New dials between such nodes fail at once with transport.ErrUnreachable,
//     and a dial whose handshake is under way when the link goes down fails
//     the same way.
//   - SetDrop models loss that a reliable stream cannot hide: the frame is
//     lost and the stream breaks (it is reset): both ends' Reads and Writes
//     fail with an error wrapping ErrReset and transport.ErrUnreachable, and
//     data not yet read is discarded. Whether the k-th frame in one direction
//     of a stream is dropped is a pure function of the Network's seed, the
//     two node ids, the stream's sequence number on that link (dials from one
//     node to another are numbered 0, 1, 2, ...) and k, so a test that dials
//     and writes in the same order sees the same drops on every run, however
//     goroutines interleave across streams. The stream header and the status
//     byte count as frames, so a dial can fail by a drop too.
//   - SetDelay delivers each frame no earlier than the delay after it was
//     written; frames stay in order (a frame never overtakes an earlier one).
//     Delays use real time, or the fake clock of testing/synctest when the
//     Network is created inside a synctest bubble.
//   - Kill closes a node abruptly, as a crash would: its own Transport
//     behaves as closed, and its peers' streams to it fail at once with an
//     error wrapping ErrReset and transport.ErrUnreachable. Network.Node with
//     the same id then starts a fresh endpoint at the same address (a
//     restart). Transport.Close instead closes gracefully: it closes each
//     stream as Stream.Close does, so peers read what was in flight and then
//     io.EOF.
//   - Stream.Close ends the write direction (the peer reads io.EOF after the
//     data in flight) and discards what arrives from then on; the peer's
//     Writes fail with an error wrapping io.ErrClosedPipe.
//
// What memnet does not do: model bandwidth, reorder or duplicate bytes
// (streams are reliable and ordered, as QUIC streams are), or authenticate
// anything: identities are whatever ids the test passes to Node.
//
// All methods are safe for concurrent use. Nothing in memnet waits by
// sleeping: every wait ends on a state change, a deadline, a context or a
// delivery time.
package memnet

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/braidml/braid/transport"
)

// Errors.
var (
	// ErrReset is wrapped (with transport.ErrUnreachable) by every error of a
	// stream that broke: a dropped frame, a killed peer.
	ErrReset = errors.New("memnet: stream reset")
	// ErrNodeExists is returned by Network.Node for an id whose endpoint is
	// still open.
	ErrNodeExists = errors.New("memnet: node id in use")
	// ErrNetworkClosed is returned by Network.Node after Network.Close.
	ErrNetworkClosed = errors.New("memnet: network closed")
)

// addrPrefix starts every memnet address.
const addrPrefix = "mem:"

// Address returns the address of the node named id: "mem:<id>".
func Address(id transport.PeerID) string { return addrPrefix + string(id) }

// ParseAddress returns the node id in a memnet address, and false for
// anything that is not one.
func ParseAddress(addr string) (transport.PeerID, bool) {
	id, ok := strings.CutPrefix(addr, addrPrefix)
	if !ok || id == "" {
		return "", false
	}
	return transport.PeerID(id), true
}

// Network is one in-process network: a set of named nodes and the faults
// between them. The zero value is not usable; call New.
type Network struct {
	seed uint64
	topo atomic.Pointer[topology] // replaced, never changed in place

	mu     sync.Mutex // guards the fields below and serialises topology updates
	nodes  map[transport.PeerID]*Transport
	seqs   map[link]uint64 // the next stream sequence number per dialing link
	closed bool
}

// New returns an empty network. seed fixes every random decision it makes
// (today: which frames SetDrop drops). To use the network inside a
// testing/synctest bubble, create it inside the bubble.
func New(seed uint64) *Network {
	n := &Network{
		seed:  seed,
		nodes: make(map[transport.PeerID]*Transport),
		seqs:  make(map[link]uint64),
	}
	n.topo.Store(&topology{changed: make(chan struct{})})
	return n
}

// Node starts the endpoint of the node named id, at Address(id). An id may be
// used again once its previous endpoint was closed or killed (a restart);
// while that endpoint is open, Node returns ErrNodeExists.
func (n *Network) Node(id transport.PeerID) (*Transport, error) {
	if id == "" {
		return nil, errors.New("memnet: empty node id")
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil, fmt.Errorf("memnet: node %s: %w", id, ErrNetworkClosed)
	}
	if _, ok := n.nodes[id]; ok {
		return nil, fmt.Errorf("%w: %s", ErrNodeExists, id)
	}
	t := &Transport{
		net:       n,
		id:        id,
		addr:      Address(id),
		listeners: make(map[transport.Protocol]*listener),
		streams:   make(map[*stream]struct{}),
	}
	n.nodes[id] = t
	return t, nil
}

// Kill closes the endpoint of node id abruptly, as if its process had died:
// its listeners and streams close, and every peer's stream to it fails at once
// with an error wrapping ErrReset and transport.ErrUnreachable. It reports
// whether there was a live node to kill. Kill returns once the endpoint is
// fully closed; Node(id) may then start it again.
func (n *Network) Kill(id transport.PeerID) bool {
	n.mu.Lock()
	t := n.nodes[id]
	n.mu.Unlock()
	if t == nil {
		return false
	}
	t.shutdown(fmt.Errorf("memnet: node %s killed: %w: %w", id, ErrReset, transport.ErrUnreachable))
	return true
}

// Close closes every live node (as Transport.Close does) and refuses new
// ones. Faults stay as they were.
func (n *Network) Close() error {
	n.mu.Lock()
	n.closed = true
	nodes := make([]*Transport, 0, len(n.nodes))
	for _, t := range n.nodes {
		nodes = append(nodes, t)
	}
	n.mu.Unlock()
	for _, t := range nodes {
		t.Close()
	}
	return nil
}

// Partition splits the network: nodes in different groups cannot reach each
// other; nodes named in no group form one more group of their own. So
// Partition([]PeerID{"n1"}) cuts n1 off from everyone else. It replaces any
// earlier Partition; Isolate stays in force. See the package comment for what
// happens to streams.
func (n *Network) Partition(groups ...[]transport.PeerID) {
	n.update(func(tp *topology) {
		tp.group = make(map[transport.PeerID]int)
		for i, g := range groups {
			for _, id := range g {
				tp.group[id] = i + 1
			}
		}
	})
}

// Isolate cuts node id off from every other node until Heal.
func (n *Network) Isolate(id transport.PeerID) {
	n.update(func(tp *topology) {
		tp.isolated = clone(tp.isolated)
		tp.isolated[id] = true
	})
}

// Heal undoes every Partition and Isolate; stalled streams carry on. Drops
// and delays stay (set them to zero to clear them).
func (n *Network) Heal() {
	n.update(func(tp *topology) {
		tp.group = nil
		tp.isolated = nil
	})
}

// SetDrop makes each frame written from node from to node to be lost with
// probability p, which breaks its stream (see the package comment). p = 0
// clears it. It applies to frames written from now on. p outside [0, 1]
// panics.
func (n *Network) SetDrop(from, to transport.PeerID, p float64) {
	if !(p >= 0 && p <= 1) {
		panic(fmt.Sprintf("memnet: SetDrop(%s, %s) probability %v outside [0, 1]", from, to, p))
	}
	n.update(func(tp *topology) {
		tp.drop = clone(tp.drop)
		if p == 0 {
			delete(tp.drop, link{from, to})
		} else {
			tp.drop[link{from, to}] = p
		}
	})
}

// SetDelay makes each frame written from node from to node to arrive no
// earlier than d after it was written, in order. d = 0 clears it. It applies
// to frames written from now on. A negative d panics.
func (n *Network) SetDelay(from, to transport.PeerID, d time.Duration) {
	if d < 0 {
		panic(fmt.Sprintf("memnet: SetDelay(%s, %s) negative delay %v", from, to, d))
	}
	n.update(func(tp *topology) {
		tp.delay = clone(tp.delay)
		if d == 0 {
			delete(tp.delay, link{from, to})
		} else {
			tp.delay[link{from, to}] = d
		}
	})
}

// Reachable reports whether node from can reach node to under the current
// Partition and Isolate (whether either is alive does not matter). A node can
// always reach itself.
func (n *Network) Reachable(from, to transport.PeerID) bool {
	return n.topology().reachable(from, to)
}

func (n *Network) topology() *topology { return n.topo.Load() }

// update replaces the topology with a modified copy and wakes everything that
// waits on the old one.
func (n *Network) update(change func(*topology)) {
	n.mu.Lock()
	defer n.mu.Unlock()
	old := n.topo.Load()
	tp := *old
	change(&tp)
	tp.changed = make(chan struct{})
	n.topo.Store(&tp)
	close(old.changed)
}

// connect checks that from may open a stream to peer at addr and numbers the
// stream.
func (n *Network) connect(from *Transport, peer transport.PeerID, addr string) (*Transport, uint64, error) {
	id, ok := ParseAddress(addr)
	n.mu.Lock()
	defer n.mu.Unlock()
	remote := n.nodes[id]
	switch {
	case !ok || remote == nil:
		return nil, 0, fmt.Errorf("memnet: dial %s at %s: no node at that address: %w", peer, addr, transport.ErrUnreachable)
	case !n.topology().reachable(from.id, id):
		return nil, 0, fmt.Errorf("memnet: dial %s at %s: %s cannot reach it: %w", peer, addr, from.id, transport.ErrUnreachable)
	case id != peer:
		return nil, 0, fmt.Errorf("memnet: dial %s at %s: %w: the node there is %s", peer, addr, transport.ErrWrongPeer, id)
	}
	l := link{from.id, id}
	seq := n.seqs[l]
	n.seqs[l]++
	return remote, seq, nil
}

// forget removes t from the live nodes, if it is still the one named t.id.
func (n *Network) forget(t *Transport) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.nodes[t.id] == t {
		delete(n.nodes, t.id)
	}
}

// dropped decides whether the k-th frame of stream seq on link l is lost.
func (n *Network) dropped(tp *topology, l link, seq, k uint64) bool {
	p := tp.drop[l]
	if p <= 0 {
		return false
	}
	h := mix(n.seed ^ 0x6d656d6e6574) // "memnet"
	h = mix(h ^ hashString(string(l.from)))
	h = mix(h ^ hashString(string(l.to)))
	h = mix(h ^ seq)
	h = mix(h ^ k)
	return float64(h>>11)/(1<<53) < p
}

// link is one direction between two nodes.
type link struct{ from, to transport.PeerID }

// topology is the fault state. It is never changed once stored; changes
// store a copy and close changed.
type topology struct {
	group    map[transport.PeerID]int // partition group; absent is group 0
	isolated map[transport.PeerID]bool
	drop     map[link]float64
	delay    map[link]time.Duration
	changed  chan struct{} // closed when this topology is replaced
}

func (tp *topology) reachable(a, b transport.PeerID) bool {
	if a == b {
		return true
	}
	return !tp.isolated[a] && !tp.isolated[b] && tp.group[a] == tp.group[b]
}

func clone[K comparable, V any](m map[K]V) map[K]V {
	c := make(map[K]V, len(m)+1)
	for k, v := range m {
		c[k] = v
	}
	return c
}

// mix is the splitmix64 finaliser.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// hashString is 64-bit FNV-1a.
func hashString(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}
