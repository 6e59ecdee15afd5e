// Package nodetest runs whole braid clusters in one process, for tests:
// every node is a real node.Node (gossip, coordinator, Raft) whose streams go
// over transport/memnet and whose gossip goes over node.MemGossip, so a test
// can partition, kill and restart nodes deterministically and wait for the
// cluster to react. Scenarios read like
//
//	c := nodetest.NewCluster(t, 3)
//	leader := c.WaitLeader()
//	c.Kill(leader)
//	c.WaitEpoch(func(e coordinator.Epoch) bool { return !slices.Contains(e.Members, leader) })
//
// What it does not do: real sockets or TLS (see the process-level tests in
// cmd/braid).
package nodetest

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/braidml/braid/coordinator"
	"github.com/braidml/braid/kernels/cuda"
	"github.com/braidml/braid/node"
	"github.com/braidml/braid/transport"
	"github.com/braidml/braid/transport/memnet"
)

// Timeout bounds every Wait of the harness.
var Timeout = 60 * time.Second

// Cluster is a set of in-process nodes on one in-memory network.
type Cluster struct {
	t       testing.TB
	Net     *memnet.Network
	Gossip  *node.MemGossip
	expect  int
	root    string // the nodes' data directories live below
	mu      sync.Mutex
	nodes   map[string]*node.Node
	dirs    map[string]string
	members []string         // every name ever started, in order
	hooks   map[string]hooks // by name: what a test injects into that node
	gpu     *cuda.DeviceInfo // every node computes on this GPU (WithGPU), or nil
	tls     *tlsCluster      // WithTLS, or nil: memnet streams, no certificates
	api     bool             // nodes serve the HTTP API (WithAPI)
	upload  int64            // node.Config.MaxUploadBytes (WithMaxUploadBytes)
	pending int64            // node.Config.MaxPendingUploadBytes (WithMaxPendingUploadBytes)
	clock   *ManualClock     // node.Deps.Now (WithClock), or nil: time.Now
}

// Option configures a Cluster before its first nodes start.
type Option func(*Cluster)

// WithDeviceLabels labels the nodes n1, n2, ... in order with the device
// kinds given ("cpu" or "cuda"; node.Deps.DeviceLabel): jobs place them by
// that kind, and they compute on the CPU all the same. Nodes beyond the
// list are not labelled (cpu).
func WithDeviceLabels(labels ...string) Option {
	return func(c *Cluster) {
		for i, l := range labels {
			c.SetDeviceLabel(fmt.Sprintf("n%d", i+1), l)
		}
	}
}

// WithGPU makes every node compute on gpu (node.Config.Device "cuda"):
// several nodes of one process share it, each with a device of its own, as
// several processes would.
func WithGPU(gpu cuda.DeviceInfo) Option {
	return func(c *Cluster) { c.gpu = &gpu }
}

// hooks are what a test injects into one node (node.Deps): its device
// label, and faults in its training steps.
type hooks struct {
	label   string
	perturb func(step int) bool
	fault   func(step int) bool
}

// setHooks changes name's hooks, for when it is next started.
func (c *Cluster) setHooks(name string, set func(*hooks)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.hooks == nil {
		c.hooks = map[string]hooks{}
	}
	h := c.hooks[name]
	set(&h)
	c.hooks[name] = h
}

// SetDeviceLabel makes name's node, when it is next started, advertise the
// device kind label (node.Deps.DeviceLabel) while computing on the CPU.
func (c *Cluster) SetDeviceLabel(name, label string) {
	c.setHooks(name, func(h *hooks) { h.label = label })
}

// WithPerturb makes name's node nudge its weights after the training steps
// for which fn returns true (node.Deps.PerturbWeights).
func WithPerturb(name string, fn func(step int) bool) Option {
	return func(c *Cluster) { c.setHooks(name, func(h *hooks) { h.perturb = fn }) }
}

// WithDeviceFault makes name's node fail the training steps for which fn
// returns true as a GPU fault does (node.Deps.DeviceFault).
func WithDeviceFault(name string, fn func(step int) bool) Option {
	return func(c *Cluster) { c.setHooks(name, func(h *hooks) { h.fault = fn }) }
}

// Restart crashes name's node and starts it again on its data directory.
func (c *Cluster) Restart(name string) *node.Node {
	c.t.Helper()
	c.Kill(name)
	return c.Start(name)
}

// NewCluster starts n nodes named n1..nN that bootstrap as one cluster
// (bootstrap-expect n) and registers cleanup with t.
func NewCluster(t testing.TB, n int, opts ...Option) *Cluster {
	t.Helper()
	// The root directory is removed after closeAll (cleanups run last
	// first): a node started later in the test still writes to its data
	// directory until closeAll stops it.
	c := &Cluster{t: t, Net: memnet.New(1), Gossip: node.NewMemGossip(), expect: n, root: t.TempDir(),
		nodes: map[string]*node.Node{}, dirs: map[string]string{}}
	for _, o := range opts {
		o(c)
	}
	t.Cleanup(c.closeAll)
	for i := 1; i <= n; i++ {
		c.Start(fmt.Sprintf("n%d", i))
	}
	return c
}

// fastGossip shortens memberlist's timers so failures are noticed in well
// under a second.
func fastGossip(m *memberlist.Config) {
	m.ProbeInterval = timerScale * 100 * time.Millisecond
	m.ProbeTimeout = timerScale * 50 * time.Millisecond
	m.GossipInterval = timerScale * 20 * time.Millisecond
	m.PushPullInterval = timerScale * 500 * time.Millisecond
	m.SuspicionMult = 2
	m.SuspicionMaxTimeoutMult = 2
	m.TCPTimeout = timerScale * 500 * time.Millisecond
}

// scaledRaft is c with its Raft timers stretched by timerScale.
func scaledRaft(c coordinator.Config) coordinator.Config {
	c.HeartbeatTimeout *= timerScale
	c.ElectionTimeout *= timerScale
	c.LeaderLeaseTimeout *= timerScale
	return c
}

// Start starts (or restarts, on its old data directory) the node called
// name and joins it to the others.
func (c *Cluster) Start(name string) *node.Node {
	c.t.Helper()
	c.mu.Lock()
	dir, ok := c.dirs[name]
	if !ok {
		var err error
		if dir, err = os.MkdirTemp(c.root, name+"-"); err != nil {
			c.mu.Unlock()
			c.t.Fatalf("nodetest: data directory for %s: %v", name, err)
		}
		c.dirs[name] = dir
		c.members = append(c.members, name)
	}
	var seeds []string
	for _, other := range c.nodes {
		seeds = append(seeds, other.Membership().LocalAddr())
	}
	c.mu.Unlock()
	sort.Strings(seeds)
	cfg := node.DefaultConfig()
	cfg.Name, cfg.DataDir, cfg.GossipAddr, cfg.HTTPAddr = name, dir, "127.0.0.1:0", ""
	var tr transport.Transport
	insecureGossip := true
	if c.tls != nil {
		// Real QUIC on loopback with this node's certificates; the node
		// builds the transport (and owns it).
		cfg.TLSDir, cfg.QUICAddr, insecureGossip = c.tls.nodeDir(name), "127.0.0.1:0", false
	} else {
		mt, err := c.Net.Node(transport.PeerID(name))
		if err != nil {
			c.t.Fatalf("nodetest: transport for %s: %v", name, err)
		}
		tr = mt
	}
	cfg.Join, cfg.BootstrapExpect = seeds, c.expect
	if c.api {
		cfg.HTTPAddr = "127.0.0.1:0"
	}
	cfg.MaxUploadBytes, cfg.MaxPendingUploadBytes = c.upload, c.pending
	var now func() time.Time
	if c.clock != nil {
		now = c.clock.Now
	}
	cfg.Coordinator = scaledRaft(coordinator.LocalConfig())
	if c.gpu != nil {
		cfg.Device, cfg.GPU = coordinator.DeviceCUDA, c.gpu
	}
	logger := slog.New(slog.NewTextHandler(testWriter{c.t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	c.mu.Lock()
	h := c.hooks[name]
	c.mu.Unlock()
	n, err := node.New(cfg, node.Deps{Transport: tr, GossipTransport: c.Gossip.Transport(name),
		InsecureGossip: insecureGossip, GossipTune: fastGossip, Logger: logger, PerturbWeights: h.perturb, DeviceLabel: h.label, DeviceFault: h.fault, Now: now})
	if err != nil {
		if tr != nil {
			tr.Close()
		}
		c.t.Fatalf("nodetest: starting %s: %v", name, err)
	}
	c.mu.Lock()
	c.nodes[name] = n
	c.mu.Unlock()
	return n
}

// DataDir is the data directory of the node called name ("" if it was
// never started); it outlives Kill, for Start to reuse.
func (c *Cluster) DataDir(name string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dirs[name]
}

// Node returns the running node called name (nil if stopped).
func (c *Cluster) Node(name string) *node.Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[name]
}

// Live lists the running nodes' names, sorted.
func (c *Cluster) Live() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for name := range c.nodes {
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

// take removes name's node from the running ones and returns it (nil if
// it is not running).
func (c *Cluster) take(name string) *node.Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.nodes[name]
	delete(c.nodes, name)
	return n
}

// Kill crashes a node: its streams break, its gossip stops, nothing is
// handed over. Its data directory stays for Start.
func (c *Cluster) Kill(name string) {
	n := c.take(name)
	if n == nil {
		return
	}
	c.Net.Kill(transport.PeerID(name))
	n.Kill()
}

// Leave shuts a node down gracefully (leadership transfer, leave).
func (c *Cluster) Leave(name string) {
	n := c.take(name)
	if n == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	if err := n.Shutdown(ctx); err != nil {
		c.t.Logf("nodetest: %s left with: %v", name, err)
	}
	c.Net.Kill(transport.PeerID(name)) // the endpoint belongs to the harness
}

// Partition splits both the stream network and gossip into groups.
func (c *Cluster) Partition(groups ...[]string) {
	var ids [][]transport.PeerID
	for _, g := range groups {
		var ig []transport.PeerID
		for _, n := range g {
			ig = append(ig, transport.PeerID(n))
		}
		ids = append(ids, ig)
	}
	c.Net.Partition(ids...)
	c.Gossip.Partition(groups...)
}

// Heal undoes Partition.
func (c *Cluster) Heal() {
	c.Net.Heal()
	c.Gossip.Heal()
}

// WaitLeader waits until every running node in among (default: all
// running) agrees on one leader that is itself among them, and returns it.
func (c *Cluster) WaitLeader(among ...string) string {
	c.t.Helper()
	var leader string
	c.waitFor("one agreed leader", func() bool {
		names := among
		if len(names) == 0 {
			names = c.Live()
		}
		leader = ""
		for _, name := range names {
			n := c.Node(name)
			if n == nil {
				return false
			}
			l := n.Status().Leader
			if l == "" || (leader != "" && l != leader) {
				return false
			}
			leader = l
		}
		return slices.Contains(names, leader)
	})
	return leader
}

// Follower returns the first of names that is not the agreed leader (it
// waits for one).
func (c *Cluster) Follower(names ...string) string {
	c.t.Helper()
	leader := c.WaitLeader()
	for _, n := range names {
		if n != leader {
			return n
		}
	}
	c.t.Fatalf("nodetest: every one of %v is the leader", names)
	return ""
}

// Followers waits for a leader and returns it and, in their order, the
// names that are not it.
func (c *Cluster) Followers(names ...string) (leader string, followers []string) {
	c.t.Helper()
	leader = c.WaitLeader()
	for _, n := range names {
		if n != leader {
			followers = append(followers, n)
		}
	}
	return leader, followers
}

// WaitEpoch waits until every running node has applied an epoch for which
// pred holds, and returns the first node's.
func (c *Cluster) WaitEpoch(pred func(coordinator.Epoch) bool) coordinator.Epoch {
	c.t.Helper()
	var e coordinator.Epoch
	c.waitFor("an epoch that satisfies the test", func() bool {
		live := c.Live()
		for i, name := range live {
			n := c.Node(name)
			if n == nil {
				return false
			}
			ep := n.Coordinator().State().Epoch
			if !pred(ep) {
				return false
			}
			if i == 0 {
				e = ep
			}
		}
		return len(live) > 0
	})
	return e
}

// waitFor polls cond until it holds or Timeout passes. The cluster's state
// changes come from several goroutines (gossip, Raft) with no single event
// to wait on, so the harness polls, with a deadline and a short interval.
func (c *Cluster) waitFor(what string, cond func() bool) {
	c.t.Helper()
	deadline := time.Now().Add(Timeout)
	for !cond() {
		if time.Now().After(deadline) {
			c.t.Fatalf("nodetest: no %s within %v; %s", what, Timeout, c.describe())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (c *Cluster) describe() string {
	s := ""
	for _, name := range c.Live() {
		if n := c.Node(name); n != nil {
			st := n.Status()
			s += fmt.Sprintf("[%s: leader %q term %d epoch %d %v] ", name, st.Leader, st.Term, st.Epoch.ID, st.Epoch.Members)
		}
	}
	return s
}

func (c *Cluster) closeAll() {
	for _, name := range c.Live() {
		c.Kill(name)
	}
	c.Net.Close()
}

// testWriter sends node logs to t.Log, so only failing tests are noisy.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}
