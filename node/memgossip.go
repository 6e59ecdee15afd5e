package node

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// MemGossip is an in-memory network for memberlist, for whole-cluster tests
// in one process (node/nodetest): each node gets a memberlist.Transport
// with an address "127.0.0.1:<n>", packets and streams are delivered in
// memory, and Partition/Heal cut and restore reachability between nodes.
// It is safe for concurrent use, unlike memberlist.MockNetwork.
type MemGossip struct {
	mu        sync.Mutex
	next      int
	byAddr    map[string]*memGossipTransport
	byName    map[string]*memGossipTransport
	reachable func(from, to string) bool // by node name; nil: all reachable
}

// NewMemGossip returns an empty in-memory gossip network.
func NewMemGossip() *MemGossip {
	return &MemGossip{byAddr: map[string]*memGossipTransport{}, byName: map[string]*memGossipTransport{}, next: 1}
}

// Transport returns a new endpoint for the node called name. A restarted
// node gets its old address back, as a process restarted with the same
// flags would.
func (g *MemGossip) Transport(name string) memberlist.Transport {
	g.mu.Lock()
	defer g.mu.Unlock()
	addr := ""
	if old, ok := g.byName[name]; ok {
		addr = old.addr
	} else {
		addr = "127.0.0.1:" + strconv.Itoa(g.next)
		g.next++
	}
	t := &memGossipTransport{g: g, name: name, addr: addr,
		packets: make(chan *memberlist.Packet, 1024), streams: make(chan net.Conn, 64), done: make(chan struct{})}
	g.byAddr[t.addr] = t
	g.byName[name] = t
	return t
}

// Partition lets nodes reach each other only within their group; nodes in
// no group reach nobody.
func (g *MemGossip) Partition(groups ...[]string) {
	group := map[string]int{}
	for i, gr := range groups {
		for _, n := range gr {
			group[n] = i + 1
		}
	}
	g.mu.Lock()
	g.reachable = func(a, b string) bool { return group[a] != 0 && group[a] == group[b] }
	g.mu.Unlock()
}

// Heal makes every node reachable again.
func (g *MemGossip) Heal() {
	g.mu.Lock()
	g.reachable = nil
	g.mu.Unlock()
}

var errGossipUnreachable = errors.New("memgossip: unreachable")

// peer returns the live transport at addr if from may reach it.
func (g *MemGossip) peer(from *memGossipTransport, addr string) (*memGossipTransport, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	to, ok := g.byAddr[addr]
	if !ok || to.closed() || from.closed() {
		return nil, fmt.Errorf("%w: %s", errGossipUnreachable, addr)
	}
	if g.reachable != nil && !g.reachable(from.name, to.name) {
		return nil, fmt.Errorf("%w: %s (partitioned)", errGossipUnreachable, addr)
	}
	return to, nil
}

type memGossipTransport struct {
	g       *MemGossip
	name    string
	addr    string
	packets chan *memberlist.Packet
	streams chan net.Conn
	once    sync.Once
	done    chan struct{}
}

type memAddr string

func (a memAddr) Network() string { return "mem" }
func (a memAddr) String() string  { return string(a) }

func (t *memGossipTransport) closed() bool {
	select {
	case <-t.done:
		return true
	default:
		return false
	}
}

func (t *memGossipTransport) FinalAdvertiseAddr(string, int) (net.IP, int, error) {
	host, port, _ := net.SplitHostPort(t.addr)
	p, _ := strconv.Atoi(port)
	return net.ParseIP(host), p, nil
}

// WriteTo delivers a packet, or silently drops it when the target is
// unreachable or its queue is full, as UDP would.
func (t *memGossipTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	now := time.Now()
	to, err := t.g.peer(t, addr)
	if err != nil {
		return now, nil
	}
	p := &memberlist.Packet{Buf: append([]byte(nil), b...), From: memAddr(t.addr), Timestamp: now}
	select {
	case to.packets <- p:
	case <-to.done:
	default:
	}
	return now, nil
}

func (t *memGossipTransport) PacketCh() <-chan *memberlist.Packet { return t.packets }
func (t *memGossipTransport) StreamCh() <-chan net.Conn           { return t.streams }

func (t *memGossipTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	to, err := t.g.peer(t, addr)
	if err != nil {
		return nil, err
	}
	a, b := net.Pipe()
	select {
	case to.streams <- b:
		return a, nil
	case <-to.done:
	case <-time.After(timeout):
	}
	a.Close()
	b.Close()
	return nil, fmt.Errorf("%w: %s did not accept", errGossipUnreachable, addr)
}

func (t *memGossipTransport) Shutdown() error {
	t.once.Do(func() { close(t.done) })
	return nil
}
