package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/braidml/braid/transport"
	"github.com/braidml/braid/transport/memnet"
)

// waitFor bounds every wait in the cluster tests. Elections take a few
// hundred milliseconds with testConfig; the bound is generous for -race on
// a loaded machine.
const waitFor = 15 * time.Second

// testConfig is LocalConfig with a short reconcile interval, its Raft timers
// stretched under the race detector (timerScale).
func testConfig() Config {
	c := LocalConfig()
	c.ReconcileInterval = 100 * time.Millisecond
	c.HeartbeatTimeout *= timerScale
	c.ElectionTimeout *= timerScale
	c.LeaderLeaseTimeout *= timerScale
	return c
}

// testCluster runs coordinators on a memnet network. It plays the node
// layer: it starts servers, bootstraps them, and reports gossip events
// (MemberJoined, MemberFailed) to every live server.
type testCluster struct {
	t     *testing.T
	net   *memnet.Network
	cfg   Config
	log   *slog.Logger
	root  string
	nodes map[string]*testNode
}

type testNode struct {
	name string
	dir  string
	tr   *memnet.Transport
	c    *Coordinator
}

func newTestCluster(t *testing.T, cfg Config) *testCluster {
	tc := &testCluster{
		t:     t,
		net:   memnet.New(1),
		cfg:   cfg,
		log:   testLogger(t, slog.LevelInfo),
		root:  t.TempDir(),
		nodes: map[string]*testNode{},
	}
	t.Cleanup(func() {
		for _, n := range tc.nodes {
			if n.c != nil {
				n.c.Close()
			}
		}
		tc.net.Close()
	})
	return tc
}

// start starts server name on its data dir (kept across restarts).
func (tc *testCluster) start(name string) *testNode {
	tc.t.Helper()
	tr, err := tc.net.Node(transport.PeerID(name))
	if err != nil {
		tc.t.Fatal(err)
	}
	n := &testNode{name: name, dir: filepath.Join(tc.root, name), tr: tr}
	n.c, err = New(tc.cfg, Deps{Transport: tr, DataDir: n.dir, Logger: tc.log.With("node", name)})
	if err != nil {
		tc.t.Fatalf("New(%s): %v", name, err)
	}
	tc.nodes[name] = n
	return n
}

// up returns the running servers, sorted by name.
func (tc *testCluster) up() []*testNode {
	var out []*testNode
	for _, name := range slices.Sorted(mapKeys(tc.nodes)) {
		if n := tc.nodes[name]; n.c != nil {
			out = append(out, n)
		}
	}
	return out
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// bootstrap starts names and bootstraps them together, as the node layer
// does once it has seen all of them, then gossips their joins.
func (tc *testCluster) bootstrap(names ...string) {
	tc.t.Helper()
	var servers []Server
	for _, name := range names {
		servers = append(servers, Server{Name: name, Addr: memnet.Address(transport.PeerID(name))})
	}
	for _, name := range names {
		n := tc.start(name)
		if err := n.c.Bootstrap(servers); err != nil {
			tc.t.Fatalf("Bootstrap(%s): %v", name, err)
		}
	}
	tc.gossipJoins()
}

// gossipJoins reports every running server to every running server.
func (tc *testCluster) gossipJoins() {
	tc.t.Helper()
	for _, to := range tc.up() {
		for _, m := range tc.up() {
			err := to.c.MemberJoined(Member{Name: m.name, Addr: m.tr.Addr(), Meta: map[string]string{"role": "worker"}})
			if err != nil {
				tc.t.Fatal(err)
			}
		}
	}
}

// gossipFailed reports name dead to every running server.
func (tc *testCluster) gossipFailed(name string) {
	for _, n := range tc.up() {
		n.c.MemberFailed(name)
	}
}

// kill crashes server name: its transport dies, then its coordinator is
// closed (without leaving) to release its goroutines.
func (tc *testCluster) kill(name string) {
	tc.t.Helper()
	n := tc.nodes[name]
	tc.net.Kill(transport.PeerID(name))
	if err := n.c.Close(); err != nil {
		tc.t.Logf("close %s: %v", name, err)
	}
	n.c = nil
}

// leader waits until exactly one running server is the leader and every
// running server knows it, and returns it.
func (tc *testCluster) leader() *testNode {
	tc.t.Helper()
	var l *testNode
	eventually(tc.t, waitFor, "one leader that every server knows", func() bool {
		l = nil
		for _, n := range tc.up() {
			if n.c.IsLeader() {
				if l != nil {
					return false
				}
				l = n
			}
		}
		if l == nil {
			return false
		}
		for _, n := range tc.up() {
			if name, _ := n.c.Leader(); name != l.name {
				return false
			}
		}
		return true
	})
	return l
}

// waitEpoch waits until every running server has applied an epoch whose
// ring holds exactly members (in any order), and returns the leader's.
func (tc *testCluster) waitEpoch(members ...string) Epoch {
	tc.t.Helper()
	want := slices.Sorted(slices.Values(members))
	var e Epoch
	for _, n := range tc.up() {
		var err error
		e, err = n.c.WaitEpoch(ctxTimeout(tc.t, waitFor), func(e Epoch) bool {
			return slices.Equal(slices.Sorted(slices.Values(e.Members)), want)
		})
		if err != nil {
			tc.t.Fatalf("%s: epoch with %v: %v (have %+v)", n.name, want, err, n.c.State().Epoch)
		}
	}
	return e
}

// waitServers waits until server on's Raft configuration has exactly the
// voters and non-voters given.
func (tc *testCluster) waitServers(on *testNode, voters, nonvoters []string) {
	tc.t.Helper()
	var got Status
	eventually(tc.t, waitFor, fmt.Sprintf("servers voters=%v nonvoters=%v", voters, nonvoters), func() bool {
		got = on.c.Status()
		var v, nv []string
		for _, s := range got.Servers {
			if s.Voter {
				v = append(v, s.Name)
			} else {
				nv = append(nv, s.Name)
			}
		}
		return slices.Equal(v, voters) && slices.Equal(nv, nonvoters)
	})
}

// waitSetting waits until every running server has applied key=value.
func (tc *testCluster) waitSetting(key, value string) {
	tc.t.Helper()
	for _, n := range tc.up() {
		_, err := n.c.Wait(ctxTimeout(tc.t, waitFor), func(s State) bool { return s.Settings[key] == value })
		if err != nil {
			tc.t.Fatalf("%s: setting %s=%s: %v", n.name, key, value, err)
		}
	}
}

// TestBootstrapThree: three servers bootstrap together and elect exactly
// one leader, which commits them as members and the first epoch; commands
// commit through it and followers refuse them, naming it.
func TestBootstrapThree(t *testing.T) {
	tc := newTestCluster(t, testConfig())
	tc.bootstrap("n1", "n2", "n3")
	l := tc.leader()
	e := tc.waitEpoch("n1", "n2", "n3")
	if e.ID < 1 {
		t.Fatalf("epoch %+v", e)
	}
	tc.waitServers(l, []string{"n1", "n2", "n3"}, nil)
	for _, n := range tc.up() {
		m, ok := n.c.State().Member("n2")
		if !ok || m.State != MemberAlive || m.Addr != "mem:n2" || m.Meta["role"] != "worker" {
			t.Fatalf("%s sees n2 as %+v", n.name, m)
		}
	}

	// Commands go through the leader.
	ctx := ctxTimeout(t, waitFor)
	if err := l.c.Apply(ctx, SetSetting{Key: "lr", Value: "3e-4"}); err != nil {
		t.Fatal(err)
	}
	tc.waitSetting("lr", "3e-4")
	for _, n := range tc.up() {
		if n == l {
			continue
		}
		err := n.c.Apply(ctx, SetSetting{Key: "lr", Value: "1"})
		var nle *NotLeaderError
		if !errors.As(err, &nle) || !errors.Is(err, ErrNotLeader) || nle.Leader != l.name || nle.Addr != "mem:"+l.name {
			t.Fatalf("Apply on follower %s = %v, want NotLeaderError naming %s", n.name, err, l.name)
		}
	}
	// The FSM's verdict comes back to the caller.
	cur := l.c.State().Epoch
	if err := l.c.Apply(ctx, CommitEpoch{ID: cur.ID, Members: []string{"n1"}, StartStep: cur.StartStep}); !errors.Is(err, ErrStaleEpoch) {
		t.Fatalf("stale epoch: %v", err)
	}
	if err := l.c.Apply(ctx, CommitEpoch{ID: cur.ID + 1, Members: []string{"n9"}, StartStep: cur.StartStep}); !errors.Is(err, ErrUnknownMember) {
		t.Fatalf("epoch with unknown member: %v", err)
	}
	if err := l.c.Apply(ctx, SetSetting{Key: "bad key"}); !errors.Is(err, ErrInvalidCommand) {
		t.Fatalf("invalid command: %v", err)
	}
	// Bootstrapping again is refused: the servers have state now.
	for _, n := range tc.up() {
		if has, err := n.c.HasState(); !has || err != nil {
			t.Fatalf("%s HasState = %v, %v", n.name, has, err)
		}
		if err := n.c.Bootstrap([]Server{{Name: n.name, Addr: n.tr.Addr()}}); !errors.Is(err, ErrHasState) {
			t.Fatalf("second Bootstrap on %s: %v", n.name, err)
		}
	}
}

// TestVotersAndNonVoters: servers that join later are added as voters up to
// MaxVoters (5) and as non-voters beyond; every join commits an epoch; when
// a voter dies, the leader removes it, promotes a non-voter and commits an
// epoch without the dead server.
func TestVotersAndNonVoters(t *testing.T) {
	tc := newTestCluster(t, testConfig())
	tc.bootstrap("n1", "n2", "n3")
	tc.leader()
	tc.waitEpoch("n1", "n2", "n3")
	for _, name := range []string{"n4", "n5", "n6"} {
		if err := tc.start(name).c.Bootstrap(nil); !errors.Is(err, ErrInvalidServers) {
			t.Fatalf("Bootstrap(nil): %v", err)
		}
	}
	tc.gossipJoins()
	l := tc.leader()
	tc.waitEpoch("n1", "n2", "n3", "n4", "n5", "n6")
	tc.waitServers(l, []string{"n1", "n2", "n3", "n4", "n5"}, []string{"n6"})

	// A voter other than the leader dies.
	victim := "n2"
	if l.name == victim {
		victim = "n3"
	}
	tc.kill(victim)
	tc.gossipFailed(victim)
	rest := slices.DeleteFunc([]string{"n1", "n2", "n3", "n4", "n5", "n6"}, func(s string) bool { return s == victim })
	tc.waitEpoch(rest...)
	l = tc.leader()
	tc.waitServers(l, rest, nil)
	if m, _ := l.c.State().Member(victim); m.State != MemberFailed {
		t.Fatalf("%s is %+v, want failed", victim, m)
	}
}

// TestLeaderFailure: when the leader dies, the others elect a new one; once
// gossip reports the death, the new leader commits an epoch without it.
func TestLeaderFailure(t *testing.T) {
	tc := newTestCluster(t, testConfig())
	tc.bootstrap("n1", "n2", "n3")
	old := tc.leader()
	first := tc.waitEpoch("n1", "n2", "n3")
	tc.kill(old.name)
	l := tc.leader()
	if l.name == old.name {
		t.Fatal("dead leader still leads")
	}
	tc.gossipFailed(old.name)
	var rest []string
	for _, n := range tc.up() {
		rest = append(rest, n.name)
	}
	e := tc.waitEpoch(rest...)
	if e.ID <= first.ID {
		t.Fatalf("epoch %d after %d", e.ID, first.ID)
	}
	tc.waitServers(l, rest, nil)
	if err := l.c.Apply(ctxTimeout(t, waitFor), SetSetting{Key: "after", Value: "failover"}); err != nil {
		t.Fatal(err)
	}
	tc.waitSetting("after", "failover")
}

// TestPartition: a leader cut off in a minority cannot commit; the majority
// elects a leader and goes on; after the partition heals every server
// converges on the majority's log.
func TestPartition(t *testing.T) {
	tc := newTestCluster(t, testConfig())
	tc.bootstrap("n1", "n2", "n3")
	old := tc.leader()
	tc.waitEpoch("n1", "n2", "n3")
	tc.net.Partition([]transport.PeerID{transport.PeerID(old.name)})

	// The minority's command does not commit.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	err := old.c.Apply(ctx, SetSetting{Key: "minority", Value: "x"})
	cancel()
	if err == nil {
		t.Fatal("a leader in a minority committed a command")
	}
	t.Logf("minority Apply: %v", err)

	// The majority elects a new leader and commits.
	var majority []*testNode
	for _, n := range tc.up() {
		if n != old {
			majority = append(majority, n)
		}
	}
	var nl *testNode
	eventually(t, waitFor, "a leader in the majority", func() bool {
		for _, n := range majority {
			if n.c.IsLeader() {
				nl = n
				return true
			}
		}
		return false
	})
	if err := nl.c.Apply(ctxTimeout(t, waitFor), SetSetting{Key: "majority", Value: "y"}); err != nil {
		t.Fatal(err)
	}

	// After the heal all converge: one leader, the majority's setting, not
	// the minority's.
	tc.net.Heal()
	tc.leader()
	tc.waitSetting("majority", "y")
	for _, n := range tc.up() {
		if _, ok := n.c.State().Settings["minority"]; ok {
			t.Fatalf("%s applied the minority's command", n.name)
		}
	}
	want, _ := encodeState(nl.c.State())
	eventually(t, waitFor, "identical states", func() bool {
		for _, n := range tc.up() {
			got, _ := encodeState(n.c.State())
			if string(got) != string(want) {
				return false
			}
		}
		return true
	})
}

// TestRestartKeepsState: servers restarted on their data dirs come back
// with their state and do not bootstrap again.
func TestRestartKeepsState(t *testing.T) {
	tc := newTestCluster(t, testConfig())
	tc.bootstrap("n1", "n2", "n3")
	l := tc.leader()
	e := tc.waitEpoch("n1", "n2", "n3")
	for i := range 80 {
		if err := l.c.Apply(ctxTimeout(t, waitFor), SetSetting{Key: "k", Value: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	tc.waitSetting("k", "79")
	for _, n := range tc.up() {
		// Snapshot now, so that the restart restores a snapshot and then
		// replays the log after it.
		if err := n.c.raft.Snapshot().Error(); err != nil {
			t.Fatalf("snapshot on %s: %v", n.name, err)
		}
		if has, err := hasSnapshots(filepath.Join(n.dir, snapshotDir)); !has || err != nil {
			t.Fatalf("no snapshot in %s: %v", n.dir, err)
		}
	}
	if err := l.c.Apply(ctxTimeout(t, waitFor), SetSetting{Key: "after-snapshot", Value: "yes"}); err != nil {
		t.Fatal(err)
	}
	tc.waitSetting("after-snapshot", "yes")
	for _, n := range tc.up() {
		if err := n.c.Close(); err != nil {
			t.Fatal(err)
		}
		n.c = nil
		n.tr.Close()
		if has, err := HasState(n.dir); !has || err != nil {
			t.Fatalf("HasState(%s) = %v, %v", n.dir, has, err)
		}
	}
	for _, name := range []string{"n1", "n2", "n3"} {
		n := tc.start(name)
		if err := n.c.Bootstrap([]Server{{Name: name, Addr: n.tr.Addr()}}); !errors.Is(err, ErrHasState) {
			t.Fatalf("Bootstrap after restart: %v", err)
		}
	}
	tc.leader()
	tc.waitSetting("k", "79")
	tc.waitSetting("after-snapshot", "yes")
	for _, n := range tc.up() {
		if got := n.c.State().Epoch; got.ID < e.ID {
			t.Fatalf("%s: epoch %+v after restart, had %+v", n.name, got, e)
		}
	}
}

// TestGracefulShutdown: a leader that shuts down commits its leave and an
// epoch without itself, hands leadership over and is removed from Raft.
func TestGracefulShutdown(t *testing.T) {
	tc := newTestCluster(t, testConfig())
	tc.bootstrap("n1", "n2", "n3")
	old := tc.leader()
	tc.waitEpoch("n1", "n2", "n3")
	if err := old.c.Shutdown(ctxTimeout(t, waitFor)); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := old.c.Shutdown(ctxTimeout(t, waitFor)); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
	if err := old.c.Apply(context.Background(), SetSetting{Key: "k"}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Apply after Shutdown: %v", err)
	}
	old.c = nil
	var rest []string
	for _, n := range tc.up() {
		rest = append(rest, n.name)
	}
	tc.waitEpoch(rest...)
	l := tc.leader()
	tc.waitServers(l, rest, nil)
	if m, _ := l.c.State().Member(old.name); m.State != MemberLeft {
		t.Fatalf("%s is %+v, want left", old.name, m)
	}
	// A follower's Shutdown does not wait for anything.
	for _, n := range tc.up() {
		if n != l {
			if err := n.c.Shutdown(ctxTimeout(t, waitFor)); err != nil {
				t.Fatal(err)
			}
			n.c = nil
		}
	}
}

// TestSingleServer: world size 1 is the same code path.
func TestSingleServer(t *testing.T) {
	tc := newTestCluster(t, testConfig())
	tc.bootstrap("solo")
	l := tc.leader()
	tc.waitEpoch("solo")
	if err := l.c.Apply(ctxTimeout(t, waitFor), SetSetting{Key: "k", Value: "v"}); err != nil {
		t.Fatal(err)
	}
	if err := l.c.Shutdown(ctxTimeout(t, waitFor)); err != nil {
		t.Fatal(err)
	}
	l.c = nil
}

// TestLeaveAndRejoin: a follower shuts down and gossip reports it left; the
// leader commits an epoch without it and removes it from Raft. Restarted on
// its data dir and reported alive again, it is added back as a voter and
// enters the next epoch.
func TestLeaveAndRejoin(t *testing.T) {
	tc := newTestCluster(t, testConfig())
	tc.bootstrap("n1", "n2", "n3")
	l := tc.leader()
	first := tc.waitEpoch("n1", "n2", "n3")
	f := tc.nodes["n1"]
	if f == l {
		f = tc.nodes["n2"]
	}
	st, changed := l.c.Watch()
	if st.Epoch.ID != first.ID {
		t.Fatalf("Watch state epoch %d, want %d", st.Epoch.ID, first.ID)
	}
	if err := f.c.Shutdown(ctxTimeout(t, waitFor)); err != nil {
		t.Fatal(err)
	}
	f.c = nil
	f.tr.Close()
	for _, n := range tc.up() {
		n.c.MemberLeft(f.name)
	}
	select {
	case <-changed:
	case <-time.After(waitFor):
		t.Fatal("Watch channel not closed by the leave")
	}
	var rest []string
	for _, n := range tc.up() {
		rest = append(rest, n.name)
	}
	tc.waitEpoch(rest...)
	tc.waitServers(l, rest, nil)
	if m, _ := l.c.State().Member(f.name); m.State != MemberLeft {
		t.Fatalf("%s is %+v, want left", f.name, m)
	}

	tc.start(f.name)
	tc.gossipJoins()
	e := tc.waitEpoch("n1", "n2", "n3")
	if e.ID < first.ID+2 {
		t.Fatalf("epoch %d after leaving and rejoining, first was %d", e.ID, first.ID)
	}
	l = tc.leader()
	tc.waitServers(l, []string{"n1", "n2", "n3"}, nil)
}

// TestCurrentState: the leader and a follower in touch with it answer with
// a state that holds what was committed (the follower once the leader's
// next message tells it the commit); a server cut off from the
// majority, leader or not, refuses to vouch for its state.
func TestCurrentState(t *testing.T) {
	tc := newTestCluster(t, testConfig())
	tc.bootstrap("n1", "n2", "n3")
	l := tc.leader()
	if err := l.c.Apply(ctxTimeout(t, waitFor), SetSetting{Key: "k", Value: "v"}); err != nil {
		t.Fatal(err)
	}
	// A follower hears of a commit with the leader's next message.
	for _, n := range tc.up() {
		eventually(t, waitFor, n.name+" vouches for a state with the setting", func() bool {
			st, err := n.c.CurrentState(ctxTimeout(t, time.Second))
			return err == nil && st.Settings["k"] == "v"
		})
	}
	var follower *testNode
	for _, n := range tc.up() {
		if n != l {
			follower = n
			break
		}
	}
	tc.net.Partition([]transport.PeerID{transport.PeerID(l.name)}, []transport.PeerID{transport.PeerID(follower.name)})
	for _, n := range []*testNode{l, follower} {
		eventually(t, waitFor, n.name+" cut off refuses to vouch", func() bool {
			_, err := n.c.CurrentState(ctxTimeout(t, time.Second))
			t.Logf("%s: %v", n.name, err)
			return errors.Is(err, ErrStateNotCurrent)
		})
	}
}
