package node

import (
	"context"
	"errors"
	"sort"
	"time"

	"github.com/braidml/braid/coordinator"
	"github.com/braidml/braid/transport"
)

// Admission: turning gossip members into cluster members (admit checks
// each by its certificate before the coordinator hears of it), and the
// first bootstrap of a new cluster.

// admit reports a gossip member to the coordinator only once this node has
// reached it over the transport and the peer authenticated as that name
// (mutual TLS with the cluster CA on QUIC). Gossip alone is not enough: a
// node that shares the gossip key but has no valid certificate must never
// enter an epoch, or the ring would stall on it.
func (n *Node) admit(m Member) {
	defer n.wg.Done()
	if m.Name != n.cfg.Name {
		backoff := 200 * time.Millisecond
		for attempt := 1; ; attempt++ {
			err := n.authenticate(m)
			if err == nil {
				break
			}
			if attempt == 1 || errors.Is(err, transport.ErrWrongPeer) {
				n.log.Error("refusing member until it authenticates over the transport", "member", m.Name, "addr", m.Meta.QUICAddr, "err", err)
			}
			// Retry while gossip still sees it alive: the failure may be
			// transient (the peer was still starting, a packet was lost).
			select {
			case <-n.stop:
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 10*time.Second)
			if !n.gossipAlive(m.Name) {
				return
			}
		}
	}
	n.bootMu.Lock()
	n.admitted[m.Name] = true
	n.bootMu.Unlock()
	n.maybeBootstrap()
	if err := n.coord.MemberJoined(coordinator.Member{Name: m.Name, Addr: m.Meta.QUICAddr, Meta: metaMap(m.Meta)}); err != nil {
		n.log.Warn("member rejected by the coordinator", "member", m.Name, "err", err)
	}
}

// authenticate dials m's control protocol: the dial succeeds only if m
// proves its name with a certificate of the cluster CA.
func (n *Node) authenticate(m Member) error {
	ctx, cancel := context.WithTimeout(context.Background(), admitTimeout)
	defer cancel()
	go func() {
		select {
		case <-n.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	s, err := n.tr.Dial(ctx, transport.PeerID(m.Name), m.Meta.QUICAddr, transport.ProtoControl, transport.DialOptions{})
	if err != nil {
		return err
	}
	return s.Close()
}

// gossipAlive reports whether gossip currently sees name alive.
func (n *Node) gossipAlive(name string) bool {
	for _, m := range n.ml.Members() {
		if m.Name == name {
			return m.State == "alive"
		}
	}
	return false
}

// admitTimeout bounds the authenticated dial that admits a member.
const admitTimeout = 10 * time.Second

// maybeBootstrap forms the first Raft cluster once BootstrapExpect servers
// are alive and authenticated, and none of them has Raft state: every one of them calls
// Bootstrap with the same list, the first BootstrapExpect names in sorted
// order (start exactly that many servers first, as with Consul).
func (n *Node) maybeBootstrap() {
	n.bootMu.Lock()
	defer n.bootMu.Unlock()
	if n.bootstrapped || n.cfg.BootstrapExpect == 0 {
		return
	}
	members := n.ml.Members()
	var alive []Member
	for _, m := range members {
		if m.State != "alive" {
			continue
		}
		if m.Meta.RaftState {
			return // a cluster exists: join it instead (the leader adds us)
		}
		if n.admitted[m.Name] { // only members that authenticated count
			alive = append(alive, m)
		}
	}
	if len(alive) < n.cfg.BootstrapExpect {
		return
	}
	sort.Slice(alive, func(i, j int) bool { return alive[i].Name < alive[j].Name })
	var servers []coordinator.Server
	self := false
	for _, m := range alive[:n.cfg.BootstrapExpect] {
		servers = append(servers, coordinator.Server{Name: m.Name, Addr: m.Meta.QUICAddr})
		self = self || m.Name == n.cfg.Name
	}
	n.bootstrapped = true
	if !self {
		return
	}
	if err := n.coord.Bootstrap(servers); err != nil && !errors.Is(err, coordinator.ErrHasState) {
		n.log.Error("bootstrap failed", "err", err)
		n.bootstrapped = false
		return
	}
	n.log.Info("bootstrapped the cluster", "servers", len(servers))
	if err := n.ml.SetMeta(n.meta(true)); err != nil {
		n.log.Warn("gossiping raft state", "err", err)
	}
}
