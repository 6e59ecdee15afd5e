package nodetest

import (
	"context"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/braidml/braid/coordinator"
	"github.com/braidml/braid/node"
	"github.com/braidml/braid/transport"
	"github.com/braidml/braid/transport/pki"
)

// cutOffWithin is how soon a revoked node must be cut off (issue 12).
const cutOffWithin = 5 * time.Second

// others returns the names of c's running nodes but skip.
func others(c *Cluster, skip string) []string {
	return slices.DeleteFunc(c.Live(), func(n string) bool { return n == skip })
}

// notIn reports whether name has left the epoch and the Raft configuration
// on every node of among.
func notIn(c *Cluster, name string, among []string) bool {
	for _, o := range among {
		n := c.Node(o)
		if n == nil || n.Coordinator().State().Epoch.Has(name) {
			return false
		}
		for _, s := range n.Coordinator().Status().Servers {
			if s.Name == name {
				return false
			}
		}
	}
	return true
}

// A certificate revoked through one node's API is refused everywhere
// within cutOffWithin: the stream the revoked node had open fails, the
// survivors drop it from the epoch and the Raft configuration and keep a
// leader, and neither side can dial the other. Restarted with the same
// certificate it is not let back in; with a new certificate it is.
func TestRevokedNodeIsCutOff(t *testing.T) {
	c := NewCluster(t, 3, WithTLS())
	c.WaitEpoch(func(e coordinator.Epoch) bool { return len(e.Members) == 3 })
	leader := c.WaitLeader()
	victim := c.Follower("n1", "n2")
	survivors := others(c, victim)
	api := survivors[0]
	if api == leader {
		api = survivors[1] // revoke through a follower: the command is forwarded
	}

	// The victim holds a stream to a survivor.
	l, err := c.Node(leader).Transport().Listen(transport.ProtoBlob)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	leaderAddr := c.Node(leader).Transport().Addr()
	s, err := c.Node(victim).Transport().Dial(ctx, transport.PeerID(leader), leaderAddr, transport.ProtoBlob, transport.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	acc, err := l.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer acc.Close()
	streamDone := make(chan time.Time, 1)
	go func() {
		io.Copy(io.Discard, s) // until the connection is closed under it
		streamDone <- time.Now()
	}()

	serial := c.Node(victim).Certs().Node.Serial
	start := time.Now()
	rev, err := c.Node(api).RevokeCert(ctx, node.RevokeRequest{Serial: serial, Name: victim})
	if err != nil {
		t.Fatal(err)
	}
	if rev.Serial != serial || rev.Name != victim || rev.At == 0 {
		t.Fatalf("revocation %+v", rev)
	}
	var streamFailed time.Duration
	select {
	case at := <-streamDone:
		streamFailed = at.Sub(start)
	case <-time.After(cutOffWithin):
		t.Fatalf("the revoked node's stream still open after %v", cutOffWithin)
	}
	c.waitFor("the revoked node out of the epoch and the Raft configuration", func() bool { return notIn(c, victim, survivors) })
	dropped := time.Since(start)
	newLeader := c.WaitLeader(survivors...)
	if dropped > cutOffWithin {
		t.Errorf("dropped after %v, want within %v", dropped, cutOffWithin)
	}
	t.Logf("revoked %s (serial %s): its stream failed after %v, out of the epoch and Raft after %v; leader %s",
		victim, serial, streamFailed.Round(time.Millisecond), dropped.Round(time.Millisecond), newLeader)
	if m, _ := c.Node(newLeader).Coordinator().State().Member(victim); m.State != coordinator.MemberLeft {
		t.Errorf("%s is %s in the state, want left", victim, m.State)
	}
	refusedBothWays(t, c, victim, newLeader)

	// Restarted with the revoked certificate: gossip sees it, nobody
	// admits it.
	c.Restart(victim)
	c.waitFor("gossip to see the restarted node", func() bool {
		for _, m := range c.Node(newLeader).Membership().Members() {
			if m.Name == victim && m.State == "alive" {
				return true
			}
		}
		return false
	})
	refusedBothWays(t, c, victim, newLeader)
	if m, _ := c.Node(newLeader).Coordinator().State().Member(victim); m.State == coordinator.MemberAlive {
		t.Fatalf("%s rejoined with a revoked certificate", victim)
	}

	// With a new certificate (and a SIGHUP) it is a member again.
	c.Reissue(victim)
	c.Reload(victim)
	c.WaitEpoch(func(e coordinator.Epoch) bool { return e.Has(victim) && len(e.Members) == 3 })
}

// refusedBothWays checks that a and b cannot open a stream to each other.
func refusedBothWays(t *testing.T, c *Cluster, a, b string) {
	t.Helper()
	for _, p := range [][2]string{{a, b}, {b, a}} {
		from, to := c.Node(p[0]), c.Node(p[1])
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		s, err := from.Transport().Dial(ctx, transport.PeerID(p[1]), to.Transport().Addr(), transport.ProtoControl, transport.DialOptions{Lane: 3})
		cancel()
		if err == nil {
			s.Close()
			t.Fatalf("%s opened a stream to %s after the revocation", p[0], p[1])
		}
	}
}

// epochWatch records, on one node, every epoch committed while it runs.
type epochWatch struct {
	mu     sync.Mutex
	epochs []coordinator.Epoch
	stop   context.CancelFunc
	done   chan struct{}
}

func watchEpochs(n *node.Node) *epochWatch {
	ctx, cancel := context.WithCancel(context.Background())
	w := &epochWatch{stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		n.Coordinator().Wait(ctx, func(st coordinator.State) bool {
			w.mu.Lock()
			defer w.mu.Unlock()
			if len(w.epochs) == 0 || w.epochs[len(w.epochs)-1].ID != st.Epoch.ID {
				w.epochs = append(w.epochs, st.Epoch)
			}
			return false
		})
	}()
	return w
}

func (w *epochWatch) close() []coordinator.Epoch {
	w.stop()
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.epochs
}

// The rolling CA rotation of docs/SECURITY.md while a 3-node job trains:
// the new CA joins every node's bundle, every node gets a certificate of
// the new CA, the old CA is dropped, each stage followed by a reload of
// every node (SIGHUP). The job completes, and no node ever left its epoch.
func TestCARotationKeepsJobRunning(t *testing.T) {
	c := NewCluster(t, 3, WithTLS())
	c.WaitEpoch(func(e coordinator.Epoch) bool { return len(e.Members) == 3 })
	c.WaitLeader()
	const steps = 40
	id := submit(t, c, "n1", node.JobRequest{Steps: steps, GlobalBatch: 12, MicroBatch: 4, LR: 3e-3, Warmup: 3,
		CheckpointEvery: 20, HashEvery: 5})
	waitJob(c, "n1", id, func(js node.JobStatus) bool { return js.Step >= 3 })
	w := watchEpochs(c.Node("n1"))
	names := c.Live()
	oldCA := c.Node("n1").Certs().CAs[0].Serial

	// 1. The bundle of the new and the old CA on every node.
	if err := pki.RotateCA(c.PKIDir()); err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		c.CopyTLSFile(n, pki.CAFile)
		c.Reload(n)
	}
	// 2. A certificate of the new CA for every node.
	for _, n := range names {
		c.Reissue(n)
		c.Reload(n)
	}
	// 3. The old CA dropped.
	if err := pki.DropOldCAs(c.PKIDir()); err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		c.CopyTLSFile(n, pki.CAFile)
		c.Reload(n)
	}
	rotatedAt := waitJob(c, "n1", id, func(node.JobStatus) bool { return true })
	if rotatedAt.State.Final() {
		t.Fatalf("the job ended (%s at step %d) before the rotation did: the test proves nothing", rotatedAt.State, rotatedAt.Step)
	}
	for _, n := range names {
		cs := c.Node(n).Certs()
		if len(cs.CAs) != 1 || cs.CAs[0].Serial == oldCA {
			t.Fatalf("%s trusts %+v after the rotation", n, cs.CAs)
		}
	}

	js := waitJob(c, "n1", id, final)
	epochs := w.close()
	if js.State != coordinator.JobCompleted {
		t.Fatalf("job %s: %s", js.State, js.Error)
	}
	for _, e := range epochs {
		if len(e.Members) != 3 {
			t.Errorf("epoch %d during the rotation has members %v", e.ID, e.Members)
		}
	}
	for _, name := range names {
		if m, _ := c.Node("n1").Coordinator().State().Member(name); m.State != coordinator.MemberAlive {
			t.Errorf("%s is %s", name, m.State)
		}
	}
	t.Logf("rotated the CA at step %d of %d; epochs during the job: %d; job %s", rotatedAt.Step, steps, len(epochs), js.State)
}

// The gossip key rotation of docs/SECURITY.md (add, promote, drop, each
// stage on every node followed by a reload): the cluster stays whole, and
// at the end a new node that knows only the new key joins it, which it
// could not if the members still spoke the old one.
func TestGossipKeyRotation(t *testing.T) {
	c := NewCluster(t, 3, WithTLS())
	c.WaitEpoch(func(e coordinator.Epoch) bool { return len(e.Members) == 3 })
	names := c.Live()
	for _, stage := range []func(string) error{pki.AddGossipKey, pki.PromoteGossipKey, pki.DropGossipKeys} {
		if err := stage(c.PKIDir()); err != nil {
			t.Fatal(err)
		}
		for _, n := range names {
			c.CopyTLSFile(n, pki.GossipKeyFile)
			c.Reload(n)
		}
	}
	c.Start("n4") // its directory gets the gossip.key of now: the new key only
	c.WaitEpoch(func(e coordinator.Epoch) bool { return len(e.Members) == 4 })
	for _, name := range names {
		if m, _ := c.Node("n4").Coordinator().State().Member(name); m.State != coordinator.MemberAlive {
			t.Errorf("%s is %s after the rotation", name, m.State)
		}
	}
}
