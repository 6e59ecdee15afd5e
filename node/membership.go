package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// ErrGossipKey is returned for a missing or malformed gossip key.
var ErrGossipKey = errors.New("node: gossip key must be 16, 24 or 32 bytes")

// MembershipConfig configures gossip.
type MembershipConfig struct {
	Name          string
	BindAddr      string // interface to listen on for gossip (TCP and UDP)
	BindPort      int    // 0 picks a free port (tests)
	AdvertiseAddr string // address peers reach us at; empty: memberlist picks
	AdvertisePort int
	Seeds         []string // gossip host:port of any members, joined at start and re-joined after partitions
	// SecretKey encrypts and authenticates all gossip (memberlist's keyring);
	// a node with another key cannot join. Required unless Insecure is set.
	SecretKey []byte
	// ExtraKeys are further keys gossip from peers may be encrypted with
	// (this node sends under SecretKey only): the keys of a rotation.
	ExtraKeys [][]byte
	Insecure  bool // only for in-process tests on an in-memory network
	// Profile picks memberlist's timing: "lan" (default; memberlist's LAN
	// profile with faster failure detection, about 2 s), "local"
	// (memberlist's loopback profile) or "wan".
	Profile string
	// RejoinInterval is how often seeds that are not alive members are
	// joined again, so that the cluster heals after a partition.
	RejoinInterval time.Duration
	// Transport replaces memberlist's UDP/TCP transport (nodetest uses
	// memberlist.MockNetwork).
	Transport memberlist.Transport
	// Tune, when set, adjusts memberlist's config last (tests shorten
	// probe intervals).
	Tune func(*memberlist.Config)
	// OnProbe, when set, receives the round trip of every probe that was
	// answered; OnGossipEvent "suspect" when this node suspects a peer and
	// "refute" when it refutes a peer's suspicion of it.
	OnProbe       func(rtt time.Duration)
	OnGossipEvent func(kind, member string)
}

// EventKind says what happened to a member.
type EventKind int

// The membership events.
const (
	MemberJoined EventKind = iota
	MemberUpdated
	MemberLeft   // left gracefully
	MemberFailed // declared dead by failure detection
)

func (k EventKind) String() string {
	return [...]string{"joined", "updated", "left", "failed"}[k]
}

// MemberEvent is one change in membership, delivered in order.
type MemberEvent struct {
	Kind EventKind
	Member
}

// Member is a node as gossip sees it.
type Member struct {
	Name       string `json:"name"`
	GossipAddr string `json:"gossip_addr"`
	State      string `json:"state"` // alive, suspect, dead, left
	Meta       Meta   `json:"meta"`
}

// Membership is this node's gossip: memberlist plus an ordered event feed.
type Membership struct {
	cfg       MembershipConfig
	ml        *memberlist.Memberlist
	keyring   *memberlist.Keyring // nil when Insecure
	log       *slog.Logger
	events    chan MemberEvent
	localAddr string

	mu       sync.Mutex
	meta     Meta
	queue    []MemberEvent
	live     map[string]Member    // alive members (this node included), from events
	departed map[string]Member    // nodes that failed or left, until they rejoin or are forgotten
	goneAt   map[string]time.Time // when each departed node's departure arrived
	wake     chan struct{}
	done     chan struct{}
	wg       sync.WaitGroup
}

// NewMembership starts gossip for this node with the given metadata and
// joins the seeds (failing to reach any is not an error: the rejoin loop
// keeps trying).
func NewMembership(cfg MembershipConfig, meta Meta, logger *slog.Logger) (*Membership, error) {
	if cfg.Name == "" {
		return nil, errors.New("node: membership needs a name")
	}
	if !cfg.Insecure {
		if n := len(cfg.SecretKey); n != 16 && n != 24 && n != 32 {
			return nil, fmt.Errorf("%w (got %d)", ErrGossipKey, n)
		}
	}
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	var mc *memberlist.Config
	switch cfg.Profile {
	case "", "lan":
		// memberlist's LAN defaults take about 5 s to declare a crashed node
		// dead (1 s probes, suspicion 4 × probe interval). braid's jobs stall
		// while a dead node is in the ring, so probe 2.5× as often and
		// suspect for less: about 2 s on a LAN, at 2.5× the probe traffic
		// (still a few packets per second per node). memberlist's awareness
		// (Lifeguard) stretches the timeouts of a node that is itself slow,
		// which keeps false positives down under load.
		mc = fastDetection(memberlist.DefaultLANConfig(), 400*time.Millisecond, 200*time.Millisecond, 100*time.Millisecond)
	case "local":
		// One machine or a test rig: detection in about a second.
		mc = fastDetection(memberlist.DefaultLocalConfig(), 250*time.Millisecond, 100*time.Millisecond, 50*time.Millisecond)
	case "wan":
		mc = memberlist.DefaultWANConfig()
	default:
		return nil, fmt.Errorf("node: gossip profile %q: want lan, local or wan", cfg.Profile)
	}
	if cfg.RejoinInterval <= 0 {
		cfg.RejoinInterval = 10 * time.Second
		if cfg.Profile == "local" {
			cfg.RejoinInterval = 2 * time.Second
		}
	}
	m := &Membership{cfg: cfg, log: logger, meta: meta, events: make(chan MemberEvent),
		live: map[string]Member{}, departed: map[string]Member{}, goneAt: map[string]time.Time{},
		wake: make(chan struct{}, 1), done: make(chan struct{})}
	mc.Name = cfg.Name
	mc.BindAddr, mc.BindPort = cfg.BindAddr, cfg.BindPort
	mc.AdvertiseAddr, mc.AdvertisePort = cfg.AdvertiseAddr, cfg.AdvertisePort
	if cfg.SecretKey != nil {
		kr, err := memberlist.NewKeyring(cfg.ExtraKeys, cfg.SecretKey)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrGossipKey, err)
		}
		mc.Keyring, m.keyring = kr, kr
		mc.GossipVerifyIncoming, mc.GossipVerifyOutgoing = true, true
	}
	mc.Transport = cfg.Transport
	// A node restarted with the same name but another address (new IP,
	// new port) is accepted once its old incarnation has been dead this long.
	mc.DeadNodeReclaimTime = 5 * time.Second
	mc.Delegate = (*gossipDelegate)(m)
	mc.Events = (*eventDelegate)(m)
	mc.Logger = log.New(slogWriter{logger.With("component", "memberlist"), cfg.OnGossipEvent}, "", 0)
	if cfg.OnProbe != nil {
		mc.Ping = probeTimer(cfg.OnProbe)
	}
	if cfg.Tune != nil {
		cfg.Tune(mc)
	}
	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("node: starting gossip on %s:%d: %w", cfg.BindAddr, cfg.BindPort, err)
	}
	m.ml = ml
	ln := ml.LocalNode() // safe: nothing updates it before NewMembership returns
	m.localAddr = net.JoinHostPort(ln.Addr.String(), strconv.Itoa(int(ln.Port)))
	m.wg.Add(2)
	go m.deliver()
	go m.rejoin()
	if len(cfg.Seeds) > 0 {
		if n, err := ml.Join(cfg.Seeds); err != nil {
			logger.Warn("joining seeds failed; will retry", "seeds", cfg.Seeds, "joined", n, "err", err)
		}
	}
	return m, nil
}

// fastDetection sets mc's probe interval and timeout and gossip interval,
// with suspicion for two probe intervals (memberlist's profiles use 4 or 5).
func fastDetection(mc *memberlist.Config, probe, timeout, gossip time.Duration) *memberlist.Config {
	mc.ProbeInterval, mc.ProbeTimeout, mc.GossipInterval = probe, timeout, gossip
	mc.SuspicionMult = 2
	return mc
}

// Events delivers membership changes in order. The channel is closed by
// Shutdown. Consumers must keep reading.
func (m *Membership) Events() <-chan MemberEvent { return m.events }

// LocalAddr is this node's gossip address (host:port).
func (m *Membership) LocalAddr() string { return m.localAddr }

// Members lists every node gossip knows, sorted by name: the live ones and
// those that failed or left since this node started, until forgotten
// (Node.ForceLeave, or after Config.ReapAfter). The table is kept from
// memberlist's events (reading memberlist's own node structs outside its
// callbacks races with its updates).
func (m *Membership) Members() []Member {
	m.mu.Lock()
	out := make([]Member, 0, len(m.live)+len(m.departed))
	for _, mb := range m.live {
		out = append(out, mb)
	}
	for _, mb := range m.departed {
		out = append(out, mb)
	}
	m.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// departedAt is when the departure of node name arrived here (zero if it
// has not departed, or was forgotten).
func (m *Membership) departedAt(name string) time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.goneAt[name]
}

// forget drops a departed node from Members (force-leave, reaping); an
// alive one is kept: gossip would report it again at once.
func (m *Membership) forget(name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.departed, name)
	delete(m.goneAt, name)
}

// AliveCount is the number of live members, this node included.
func (m *Membership) AliveCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.live)
}

// SetMeta replaces this node's metadata and gossips it.
func (m *Membership) SetMeta(meta Meta) error {
	m.mu.Lock()
	m.meta = meta
	m.mu.Unlock()
	return m.ml.UpdateNode(5 * time.Second)
}

// SetKeys replaces the gossip keys: keys[0] becomes the key this node
// sends under, and exactly keys are accepted from peers (keys no longer
// listed are removed). It fails without changing anything on a node
// without encryption, or when a key is not 16, 24 or 32 bytes.
func (m *Membership) SetKeys(keys [][]byte) error {
	if m.keyring == nil {
		return errors.New("node: gossip is not encrypted, no keys to set")
	}
	if len(keys) == 0 {
		return fmt.Errorf("%w (no key)", ErrGossipKey)
	}
	for _, k := range keys {
		if n := len(k); n != 16 && n != 24 && n != 32 {
			return fmt.Errorf("%w (got %d)", ErrGossipKey, n)
		}
	}
	for _, k := range keys {
		if err := m.keyring.AddKey(k); err != nil {
			return fmt.Errorf("node: gossip key: %w", err)
		}
	}
	if err := m.keyring.UseKey(keys[0]); err != nil {
		return fmt.Errorf("node: gossip key: %w", err)
	}
	for _, old := range m.keyring.GetKeys() {
		if !slices.ContainsFunc(keys, func(k []byte) bool { return bytes.Equal(k, old) }) {
			if err := m.keyring.RemoveKey(old); err != nil {
				return fmt.Errorf("node: gossip key: %w", err)
			}
		}
	}
	return nil
}

// Leave announces a graceful departure, waiting up to timeout: it first
// gossips metadata marked Leaving, so that peers report MemberLeft rather
// than MemberFailed.
func (m *Membership) Leave(timeout time.Duration) error {
	m.mu.Lock()
	m.meta.Leaving = true
	m.mu.Unlock()
	if err := m.ml.UpdateNode(timeout); err != nil {
		m.log.Warn("announcing leave", "err", err)
	}
	return m.ml.Leave(timeout)
}

// Shutdown stops gossip without a leave message (as a crash would) and
// closes the event feed.
func (m *Membership) Shutdown() error {
	err := m.ml.Shutdown()
	select {
	case <-m.done:
	default:
		close(m.done)
	}
	m.wg.Wait()
	return err
}

func (m *Membership) member(n *memberlist.Node) Member {
	mb := Member{Name: n.Name, GossipAddr: net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port))), State: "alive"}
	if meta, err := DecodeMeta(n.Meta); err == nil {
		mb.Meta = meta
	}
	return mb
}

// push queues an event; memberlist's callbacks must not block. A leave is
// MemberLeft if the node announced it (Meta.Leaving), else MemberFailed.
func (m *Membership) push(kind EventKind, n *memberlist.Node) {
	ev := MemberEvent{Kind: kind, Member: m.member(n)}
	if _, err := DecodeMeta(n.Meta); err != nil && kind != MemberFailed {
		m.log.Warn("ignoring member with bad metadata", "member", n.Name, "addr", ev.GossipAddr, "err", err)
		return
	}
	m.mu.Lock()
	switch kind {
	case MemberJoined, MemberUpdated:
		m.live[n.Name] = ev.Member
		delete(m.departed, n.Name)
		delete(m.goneAt, n.Name)
	case MemberFailed:
		ev.Kind, ev.State = MemberFailed, "dead"
		if last, ok := m.live[n.Name]; ok && last.Meta.Leaving || ev.Meta.Leaving {
			ev.Kind, ev.State = MemberLeft, "left"
		}
		delete(m.live, n.Name)
		m.departed[n.Name] = ev.Member
		m.goneAt[n.Name] = time.Now()
	}
	m.queue = append(m.queue, ev)
	m.mu.Unlock()
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// deliver forwards queued events to the Events channel in order.
func (m *Membership) deliver() {
	defer m.wg.Done()
	defer close(m.events)
	for {
		m.mu.Lock()
		q := m.queue
		m.queue = nil
		m.mu.Unlock()
		for _, ev := range q {
			select {
			case m.events <- ev:
			case <-m.done:
				return
			}
		}
		select {
		case <-m.wake:
		case <-m.done:
			return
		}
	}
}

// rejoin joins, every RejoinInterval, the seeds that are not alive members,
// so that the two sides of a healed partition find each other again. While
// this node knows no other live member (it started before its seeds, or it
// was cut off) it retries every second.
func (m *Membership) rejoin() {
	defer m.wg.Done()
	t := time.NewTicker(min(time.Second, m.cfg.RejoinInterval))
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-m.done:
			return
		case <-t.C:
		}
		if m.AliveCount() > 1 && time.Since(last) < m.cfg.RejoinInterval {
			continue
		}
		last = time.Now()
		alive := map[string]bool{}
		for _, mb := range m.Members() {
			if mb.State == "alive" {
				alive[mb.GossipAddr] = true
			}
		}
		var missing []string
		for _, s := range m.cfg.Seeds {
			if !alive[s] {
				missing = append(missing, s)
			}
		}
		if len(missing) > 0 {
			if _, err := m.ml.Join(missing); err != nil {
				m.log.Debug("re-joining seeds", "seeds", missing, "err", err)
			}
		}
	}
}

// gossipDelegate supplies this node's metadata; memberlist calls it from
// its own goroutines.
type gossipDelegate Membership

func (d *gossipDelegate) NodeMeta(limit int) []byte {
	d.mu.Lock()
	meta := d.meta
	d.mu.Unlock()
	b, err := meta.Encode(limit)
	if err != nil {
		d.log.Error("node metadata does not fit", "err", err)
		return nil
	}
	return b
}
func (d *gossipDelegate) NotifyMsg([]byte)                           {}
func (d *gossipDelegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *gossipDelegate) LocalState(join bool) []byte                { return nil }
func (d *gossipDelegate) MergeRemoteState(buf []byte, join bool)     {}

// eventDelegate turns memberlist's callbacks into MemberEvents.
type eventDelegate Membership

func (d *eventDelegate) NotifyJoin(n *memberlist.Node)   { (*Membership)(d).push(MemberJoined, n) }
func (d *eventDelegate) NotifyUpdate(n *memberlist.Node) { (*Membership)(d).push(MemberUpdated, n) }
func (d *eventDelegate) NotifyLeave(n *memberlist.Node)  { (*Membership)(d).push(MemberFailed, n) }

// probeTimer reports the round trip of every answered probe
// (memberlist.PingDelegate).
type probeTimer func(time.Duration)

func (probeTimer) AckPayload() []byte { return nil }
func (f probeTimer) NotifyPingComplete(_ *memberlist.Node, rtt time.Duration, _ []byte) {
	f(rtt)
}

// slogWriter adapts memberlist's *log.Logger output to slog at debug level
// ([ERR] and [WARN] lines at their own level), and reports suspicions,
// which memberlist only logs, to event.
type slogWriter struct {
	l     *slog.Logger
	event func(kind, member string) // nil: not reported
}

func (w slogWriter) Write(p []byte) (int, error) {
	s := strings.TrimSpace(string(p))
	if w.event != nil {
		switch {
		case strings.Contains(s, "memberlist: Suspect ") && strings.Contains(s, " has failed, no acks received"):
			// "[INFO] memberlist: Suspect NAME has failed, no acks received"
			_, rest, _ := strings.Cut(s, "memberlist: Suspect ")
			name, _, _ := strings.Cut(rest, " has failed")
			w.event("suspect", name)
		case strings.Contains(s, "memberlist: Refuting a suspect message"):
			w.event("refute", "")
		}
	}
	// "[WARN] memberlist: Refuting ...": the level is the record's, and
	// the component an attribute already.
	level := slog.LevelDebug
	switch {
	case strings.Contains(s, "[ERR]"):
		level = slog.LevelError
	case strings.Contains(s, "[WARN]"):
		level = slog.LevelWarn
	}
	if _, rest, ok := strings.Cut(s, "] memberlist: "); ok {
		s = rest
	}
	w.l.Log(context.Background(), level, s)
	return len(p), nil
}
