package nodetest

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/braidml/braid/coordinator"
)

func TestThreeNodesElectOneLeaderAndCommitAnEpoch(t *testing.T) {
	c := NewCluster(t, 3)
	leader := c.WaitLeader()
	e := c.WaitEpoch(func(e coordinator.Epoch) bool { return len(e.Members) == 3 })
	t.Logf("leader %s, epoch %d %v", leader, e.ID, e.Members)
}

func TestKilledLeaderIsReplacedAndLeavesTheEpoch(t *testing.T) {
	c := NewCluster(t, 3)
	leader := c.WaitLeader()
	first := c.WaitEpoch(func(e coordinator.Epoch) bool { return len(e.Members) == 3 })
	c.Kill(leader)
	next := c.WaitLeader()
	if next == leader {
		t.Fatalf("leader is still %s", leader)
	}
	e := c.WaitEpoch(func(e coordinator.Epoch) bool { return e.ID > first.ID && !slices.Contains(e.Members, leader) })
	t.Logf("killed %s; new leader %s, epoch %d %v", leader, next, e.ID, e.Members)
}

func TestFiveNodesElectOneLeader(t *testing.T) {
	c := NewCluster(t, 5)
	leader := c.WaitLeader()
	e := c.WaitEpoch(func(e coordinator.Epoch) bool { return len(e.Members) == 5 })
	voters := 0
	for _, m := range c.Node(leader).Status().Members {
		if m.Voter {
			voters++
		}
	}
	if voters != 5 {
		t.Errorf("%d voters, want 5", voters)
	}
	t.Logf("leader %s, epoch %d %v", leader, e.ID, e.Members)
}

// TestMinorityCannotCommit: the side of a partition without a majority
// cannot change the replicated state; the majority goes on; after healing
// everyone converges on the majority's state.
func TestMinorityCannotCommit(t *testing.T) {
	c := NewCluster(t, 5)
	leader := c.WaitLeader()
	c.WaitEpoch(func(e coordinator.Epoch) bool { return len(e.Members) == 5 })
	// Put the leader in the minority with one follower.
	var minority, majority []string
	for _, n := range c.Live() {
		if n == leader || (len(minority) < 2 && n != leader && len(minority) == 1) {
			minority = append(minority, n)
		} else {
			majority = append(majority, n)
		}
	}
	if len(minority) == 1 { // leader only so far: add one more
		minority = append(minority, majority[0])
		majority = majority[1:]
	}
	c.Partition(minority, majority)
	newLeader := c.WaitLeader(majority...)
	// The old leader cannot commit a setting.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	err := c.Node(leader).Coordinator().Apply(ctx, coordinator.SetSetting{Key: "who", Value: "minority"})
	cancel()
	if err == nil {
		t.Fatalf("the minority (%v) committed a command", minority)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Node(newLeader).Coordinator().Apply(ctx, coordinator.SetSetting{Key: "who", Value: "majority"}); err != nil {
		t.Fatalf("the majority could not commit: %v", err)
	}
	c.Heal()
	c.waitFor("every node converged on the majority's setting", func() bool {
		for _, n := range c.Live() {
			if c.Node(n).Coordinator().State().Settings["who"] != "majority" {
				return false
			}
		}
		return true
	})
	c.WaitLeader()
}

// TestJoinAndLeaveProduceEpochs: a new node enters the next epoch; a node
// that leaves gracefully is removed from it.
func TestJoinAndLeaveProduceEpochs(t *testing.T) {
	c := NewCluster(t, 3)
	c.WaitLeader()
	first := c.WaitEpoch(func(e coordinator.Epoch) bool { return len(e.Members) == 3 })
	c.Start("n4")
	joined := c.WaitEpoch(func(e coordinator.Epoch) bool { return e.ID > first.ID && slices.Contains(e.Members, "n4") })
	c.Leave("n2")
	left := c.WaitEpoch(func(e coordinator.Epoch) bool { return e.ID > joined.ID && !slices.Contains(e.Members, "n2") })
	t.Logf("epochs: %v → %v → %v", first.Members, joined.Members, left.Members)
}

// TestRestartedNodeRejoinsWithItsState: a node killed and restarted on its
// data directory comes back with the replicated state and is in the ring.
func TestRestartedNodeRejoinsWithItsState(t *testing.T) {
	c := NewCluster(t, 3)
	leader := c.WaitLeader()
	c.WaitEpoch(func(e coordinator.Epoch) bool { return len(e.Members) == 3 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Node(leader).Coordinator().Apply(ctx, coordinator.SetSetting{Key: "model", Value: "base-en"}); err != nil {
		t.Fatal(err)
	}
	victim := "n1"
	if victim == leader {
		victim = "n2"
	}
	c.Kill(victim)
	gone := c.WaitEpoch(func(e coordinator.Epoch) bool { return !slices.Contains(e.Members, victim) })
	n := c.Start(victim)
	if has, _ := n.Coordinator().HasState(); !has {
		t.Fatal("restarted node has no Raft state")
	}
	back := c.WaitEpoch(func(e coordinator.Epoch) bool { return e.ID > gone.ID && slices.Contains(e.Members, victim) })
	if got := n.Coordinator().State().Settings["model"]; got != "base-en" {
		t.Errorf("restarted node's setting %q, want base-en", got)
	}
	t.Logf("%s back in epoch %d %v", victim, back.ID, back.Members)
}

// The health monitor hears the leader's heartbeats on a follower and times
// gossip probes, and a quiet cluster has no leader change after it formed
// and no suspicion.
func TestHealthMonitor(t *testing.T) {
	c := NewCluster(t, 3)
	c.WaitEpoch(func(e coordinator.Epoch) bool { return len(e.Members) == 3 })
	f := c.Node(c.Follower("n1", "n2"))
	before := f.Health()
	c.waitFor("heartbeats and probes timed on a follower", func() bool {
		h := f.Health()
		return h.ContactGap.Count >= 5 && h.ProbeRTT.Count >= 2
	})
	h := f.Health()
	if h.LeaderChanges != before.LeaderChanges || h.Suspicions != 0 {
		t.Errorf("quiet cluster: %+v (before %+v)", h, before)
	}
	if h.ContactGap.Max <= 0 || h.ContactGap.P99 > h.ContactGap.Max {
		t.Errorf("contact gaps %+v", h.ContactGap)
	}
	if st := f.Status(); st.Health == nil || st.Health.ContactGap.Count < h.ContactGap.Count {
		t.Errorf("Status.Health %+v", st.Health)
	}
	t.Logf("follower %s: %+v", f.Name(), h)
}
