package node

import (
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

func fastGossip(c *memberlist.Config) {
	c.ProbeInterval = 50 * time.Millisecond
	c.ProbeTimeout = 25 * time.Millisecond
	c.GossipInterval = 10 * time.Millisecond
	c.PushPullInterval = 200 * time.Millisecond
	c.SuspicionMult = 1
	c.SuspicionMaxTimeoutMult = 1
	c.TCPTimeout = 200 * time.Millisecond
}

func startMembers(t *testing.T, net *MemGossip, key []byte, names ...string) []*Membership {
	t.Helper()
	var out []*Membership
	var seeds []string
	for i, name := range names {
		tr := net.Transport(name)
		cfg := MembershipConfig{Name: name, Seeds: seeds, SecretKey: key, Insecure: key == nil,
			Transport: tr, Tune: fastGossip, RejoinInterval: 100 * time.Millisecond}
		m, err := NewMembership(cfg, Meta{Version: MetaVersion, QUICAddr: fmt.Sprintf("127.0.0.1:%d", 7000+i), Cores: 2}, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Shutdown() })
		if i == 0 {
			seeds = []string{m.LocalAddr()}
		}
		out = append(out, m)
	}
	return out
}

// waitEvent reads events until one matches or the deadline passes.
func waitEvent(t *testing.T, m *Membership, kind EventKind, name string, within time.Duration) MemberEvent {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case ev, ok := <-m.Events():
			if !ok {
				t.Fatalf("event feed closed waiting for %s %s", name, kind)
			}
			t.Logf("event: %s %s %s", ev.Kind, ev.Name, ev.State)
			if ev.Kind == kind && ev.Name == name {
				return ev
			}
		case <-deadline:
			t.Fatalf("no %s event for %s within %v", kind, name, within)
		}
	}
}

func TestMembershipJoinMetaAndFailure(t *testing.T) {
	key := make([]byte, 32)
	ms := startMembers(t, NewMemGossip(), key, "n1", "n2", "n3")
	// n2 and n3 join in either order.
	var ev MemberEvent
	joined := map[string]bool{}
	deadline := time.After(5 * time.Second)
	for !joined["n2"] || !joined["n3"] {
		select {
		case e := <-ms[0].Events():
			t.Logf("event: %s %s %s", e.Kind, e.Name, e.State)
			if e.Kind == MemberJoined {
				joined[e.Name] = true
				if e.Name == "n3" {
					ev = e
				}
			}
		case <-deadline:
			t.Fatalf("n1 saw joins of %v within 5s, want n2 and n3", joined)
		}
	}
	if ev.Meta.QUICAddr != "127.0.0.1:7002" || ev.Meta.Cores != 2 {
		t.Errorf("n3's metadata as n1 sees it: %+v", ev.Meta)
	}
	ms[2].Shutdown() // a crash: no leave message
	waitEvent(t, ms[0], MemberFailed, "n3", 10*time.Second)
	if err := ms[1].Leave(time.Second); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, ms[0], MemberLeft, "n2", 10*time.Second)
}

// TestMembershipHealsAfterPartition: the rejoin loop brings the two sides
// of a healed partition back together.
func TestMembershipHealsAfterPartition(t *testing.T) {
	g := NewMemGossip()
	ms := startMembers(t, g, nil, "p1", "p2", "p3")
	waitEvent(t, ms[2], MemberJoined, "p1", 5*time.Second)
	g.Partition([]string{"p1", "p2"}, []string{"p3"})
	waitEvent(t, ms[0], MemberFailed, "p3", 10*time.Second)
	g.Heal()
	waitEvent(t, ms[0], MemberJoined, "p3", 10*time.Second)
}

func TestMembershipWrongKeyCannotJoin(t *testing.T) {
	net := NewMemGossip()
	good := startMembers(t, net, []byte("0123456789abcdef0123456789abcdef"), "a1")
	tr := net.Transport("intruder")
	bad, err := NewMembership(MembershipConfig{Name: "intruder", Seeds: []string{good[0].LocalAddr()},
		SecretKey: []byte("ffffffffffffffffffffffffffffffff"), Transport: tr, Tune: fastGossip, RejoinInterval: time.Hour},
		Meta{Version: MetaVersion, QUICAddr: "127.0.0.1:9"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Shutdown()
	// The join's push/pull cannot be decrypted by the other side: it fails.
	if n, err := bad.ml.Join([]string{good[0].LocalAddr()}); err == nil || n != 0 {
		t.Fatalf("join with the wrong key: joined %d, err %v", n, err)
	}
	for _, m := range good[0].Members() {
		if m.Name == "intruder" {
			t.Fatal("a node with another gossip key joined")
		}
	}
	if _, err := NewMembership(MembershipConfig{Name: "x", SecretKey: []byte("short")}, Meta{}, nil); err == nil {
		t.Error("a 5-byte key: no error")
	}
}
