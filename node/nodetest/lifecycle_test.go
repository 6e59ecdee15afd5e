package nodetest

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/braidml/braid/coordinator"
	"github.com/braidml/braid/node"
)

// storeObjects lists the hashes of the objects in name's store.
func storeObjects(t *testing.T, c *Cluster, name string) []string {
	t.Helper()
	objs, err := c.Node(name).Store().List()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, o := range objs {
		out = append(out, o.Hash)
	}
	return out
}

// checkpointObjects are the objects a checkpoint record names.
func checkpointObjects(cp coordinator.Checkpoint) []string {
	out := []string{cp.Config, cp.Weights, cp.State}
	for _, h := range cp.Tokenizer {
		out = append(out, h)
	}
	return out
}

// A dataset a running job trains on is not removed (the error names the
// job), nor is the running job without force; a job keeps only its newest
// --keep-checkpoints checkpoints and the older ones' objects are
// collected; once the jobs and the dataset are removed, every object they
// named is collected and the store is empty.
func TestRemovedJobsAndDatasetsAreCollected(t *testing.T) {
	clock := NewManualClock(time.Now())
	c := NewCluster(t, 1, WithClock(clock))
	c.WaitLeader()
	n := c.Node("n1")
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	dir, _ := prepareDataset(t, "legal", 40)
	d, err := c.PushDataset("n1", dir, node.DatasetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	base := pushBase(t, c, "n1")

	// A job that runs until it is removed.
	long, err := n.SubmitJob(ctx, node.JobRequest{Base: base, Dataset: "legal", Steps: 1_000_000, GlobalBatch: 2, MicroBatch: 2})
	if err != nil {
		t.Fatal(err)
	}
	waitJob(c, "n1", long.ID, func(js node.JobStatus) bool { return js.State == coordinator.JobRunning })
	if _, err := n.DeleteDataset(ctx, "legal"); !errors.Is(err, coordinator.ErrInUse) || !strings.Contains(err.Error(), long.ID) {
		t.Fatalf("removing the dataset of a running job: %v, want ErrInUse naming %s", err, long.ID)
	}
	if _, err := n.DeleteJob(ctx, long.ID, false); !errors.Is(err, coordinator.ErrInUse) || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("removing a running job without force: %v", err)
	}
	if _, err := n.DeleteJob(ctx, long.ID, true); err != nil {
		t.Fatal(err)
	}
	if _, ok := n.Coordinator().State().Job(long.ID); ok {
		t.Fatal("the job is still listed after a forced removal")
	}

	// A job that keeps its 2 newest checkpoints of 6.
	short, err := n.SubmitJob(ctx, node.JobRequest{Base: base, Dataset: "legal", Steps: 12, GlobalBatch: 2, MicroBatch: 2,
		CheckpointEvery: 2, KeepCheckpoints: 2})
	if err != nil {
		t.Fatal(err)
	}
	js := waitJob(c, "n1", short.ID, final)
	if js.State != coordinator.JobCompleted || len(js.Checkpoints) != 2 || js.Checkpoints[0].Step != 10 || js.Spec.KeepCheckpoints != 2 {
		t.Fatalf("job %s with %d checkpoints %+v, want completed with those of steps 10 and 12", js.State, len(js.Checkpoints), js.Checkpoints)
	}
	clock.Advance(node.DefaultGCGrace + time.Minute)
	got, err := n.CollectGarbage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The older checkpoints' weights and snapshots (and the removed job's
	// checkpoints, had it any) went; what is left is what the state names.
	if got.Objects < 2*4 {
		t.Errorf("collected %d objects, want at least the weights and snapshots of 4 older checkpoints", got.Objects)
	}
	held := storeObjects(t, c, "n1")
	for _, cp := range js.Checkpoints {
		for _, h := range checkpointObjects(cp) {
			if !slices.Contains(held, h) {
				t.Errorf("object %.12s of the kept checkpoint at step %d was collected", h, cp.Step)
			}
		}
	}

	// Removing the job and the dataset leaves nothing named.
	if _, err := n.DeleteJob(ctx, short.ID, false); err != nil {
		t.Fatal(err)
	}
	if _, err := n.DeleteDataset(ctx, d.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := n.DeleteJob(ctx, short.ID, false); !errors.Is(err, node.ErrNotFound) {
		t.Errorf("removing a removed job: %v, want ErrNotFound", err)
	}
	clock.Advance(node.DefaultGCGrace + time.Minute)
	if _, err := n.CollectGarbage(ctx); err != nil {
		t.Fatal(err)
	}
	if left := storeObjects(t, c, "n1"); len(left) != 0 {
		t.Errorf("%d objects left in the store after the jobs and the dataset were removed: %.12v", len(left), left)
	}
}

// A cancelled job resumed under its ID restarts on every worker from its
// last checkpoint (not from step 0, not from where it was cancelled) and
// completes; a running or completed job is not resumed.
func TestResumeCancelledJob(t *testing.T) {
	c := NewCluster(t, 2)
	c.WaitEpoch(func(e coordinator.Epoch) bool { return len(e.Members) == 2 })
	const steps, every = 60, 5
	id := submit(t, c, "n1", node.JobRequest{Steps: steps, GlobalBatch: 4, MicroBatch: 2, CheckpointEvery: every})
	waitJob(c, "n1", id, func(js node.JobStatus) bool { return len(js.Checkpoints) >= 2 })
	n := c.Node("n1")
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	if _, err := n.ResumeJob(ctx, id); !errors.Is(err, coordinator.ErrJobFinal) {
		t.Fatalf("resuming a running job: %v", err)
	}
	if err := n.CancelJob(ctx, id); err != nil {
		t.Fatal(err)
	}
	cancelled := waitJob(c, "n1", id, func(js node.JobStatus) bool { return js.State == coordinator.JobCancelled })
	if cancelled.Step >= steps {
		t.Fatalf("the job had run all its steps when cancelled: nothing to resume")
	}
	at, _ := n.Coordinator().State().Job(id)
	last, ok := at.LastCheckpoint()
	if !ok {
		t.Fatal("no checkpoint recorded")
	}
	resumed, err := n.ResumeJob(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if resumed.ID != id || resumed.State != coordinator.JobSubmitted {
		t.Errorf("resumed job %s %s, want %s submitted", resumed.ID, resumed.State, id)
	}
	got := waitJob(c, "n1", id, final)
	if got.State != coordinator.JobCompleted || got.Step != steps {
		t.Fatalf("resumed job %s at step %d: %s", got.State, got.Step, got.Error)
	}
	if len(got.Workers) != 2 {
		t.Fatalf("progress of %d workers, want 2", len(got.Workers))
	}
	for _, w := range got.Workers {
		// A checkpoint in flight at the cancel may be recorded after it:
		// the worker restores that one, later than last but a checkpoint
		// step all the same.
		if w.ResumedFrom < last.Step || w.ResumedFrom%every != 0 || w.ResumedFrom > cancelled.Step+every {
			t.Errorf("%s resumed from step %d; the last checkpoint was step %d, the job cancelled at step %d", w.Node, w.ResumedFrom, last.Step, cancelled.Step)
		}
	}
	if _, err := n.ResumeJob(ctx, id); !errors.Is(err, coordinator.ErrJobFinal) {
		t.Errorf("resuming a completed job: %v", err)
	}
	t.Logf("cancelled at step %d, last checkpoint %d, resumed from %d", cancelled.Step, last.Step, got.Workers[0].ResumedFrom)
}

// A member that is alive is not forced out without --force, nor is the
// node asked; a dead member is, from a follower: it leaves the Raft
// configuration, the state and the list. A member gone longer than the
// reap timeout is forgotten by itself. A node asked to leave (POST
// /v1/leave) stops and is recorded as left.
func TestMembersForceLeaveReapAndLeave(t *testing.T) {
	clock := NewManualClock(time.Now())
	c := NewCluster(t, 5, WithClock(clock), WithAPI())
	c.WaitEpoch(func(e coordinator.Epoch) bool { return len(e.Members) == 5 })
	leader := c.WaitLeader()
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	// The victims are followers, so that no election is waited out.
	var victims []string
	for _, name := range []string{"n5", "n4", "n3", "n2", "n1"} {
		if name != leader && len(victims) < 3 {
			victims = append(victims, name)
		}
	}
	dead, reaped, leaving := victims[0], victims[1], victims[2]
	var asker string
	for _, name := range []string{"n1", "n2", "n3", "n4", "n5"} {
		if name != leader && !slices.Contains(victims, name) {
			asker = name
		}
	}
	ms := c.Node(asker).Members()
	if len(ms) != 5 {
		t.Fatalf("members %+v, want 5", ms)
	}
	for _, m := range ms {
		if m.State != "alive" || (m.Name == leader) != (m.Role == "leader") {
			t.Errorf("member %+v: want alive, leader only for %s", m, leader)
		}
	}
	if err := c.Node(asker).ForceLeave(ctx, dead, false); !errors.Is(err, coordinator.ErrInUse) || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("force-leave of an alive member: %v", err)
	}
	if err := c.Node(asker).ForceLeave(ctx, asker, true); !errors.Is(err, coordinator.ErrInUse) {
		t.Fatalf("force-leave of the node asked: %v", err)
	}
	// A forwarded --force does not remove a live member: only the
	// leader's own API honours it (TestMemberCannotForceLeaveLiveMember).
	if err := c.Node(asker).ForceLeave(ctx, dead, true); !errors.Is(err, coordinator.ErrInUse) || !strings.Contains(err.Error(), "leader's own API") {
		t.Fatalf("forwarded --force of a live member: %v", err)
	}
	time.Sleep(200 * time.Millisecond)
	if m, ok := c.Node(leader).Coordinator().State().Member(dead); !ok || m.State != coordinator.MemberAlive || !c.Node(leader).Coordinator().State().Epoch.Has(dead) {
		t.Fatalf("%s removed by a member's force-leave: %+v %v", dead, m, ok)
	}

	gone := func(name string) func() bool {
		return func() bool {
			st := c.Node(leader).Coordinator().State()
			m, ok := st.Member(name)
			return ok && m.State != coordinator.MemberAlive && !st.Epoch.Has(name) &&
				!slices.ContainsFunc(c.Node(leader).Coordinator().Status().Servers, func(s coordinator.ServerStatus) bool { return s.Name == name })
		}
	}
	c.Kill(dead)
	c.waitFor(dead+" out of the epoch and raft", gone(dead))
	if err := c.Node(asker).ForceLeave(ctx, dead, false); err != nil {
		t.Fatal(err)
	}
	for _, name := range c.Live() {
		c.waitFor(dead+" forgotten by "+name, func() bool { _, ok := c.Node(name).Coordinator().State().Member(dead); return !ok })
	}
	if slices.ContainsFunc(c.Node(asker).Members(), func(m node.MemberInfo) bool { return m.Name == dead }) {
		t.Errorf("%s still listed after force-leave", dead)
	}

	// Reaped after the timeout, measured from when the leader saw it gone.
	c.Kill(reaped)
	c.waitFor(reaped+" out of the epoch and raft", gone(reaped))
	c.waitFor(reaped+" listed as dead", func() bool {
		ms := c.Node(asker).Members()
		i := slices.IndexFunc(ms, func(m node.MemberInfo) bool { return m.Name == reaped })
		return i >= 0 && ms[i].State == "dead" && !ms[i].LastSeen.IsZero() && ms[i].Role == "none"
	})
	c.Node(leader).ReapMembers(ctx)
	if _, ok := c.Node(leader).Coordinator().State().Member(reaped); !ok {
		t.Fatalf("%s reaped before the timeout", reaped)
	}
	clock.Advance(node.DefaultReapAfter + time.Minute)
	c.Node(leader).ReapMembers(ctx)
	c.waitFor(reaped+" removed from the state", func() bool { _, ok := c.Node(asker).Coordinator().State().Member(reaped); return !ok })
	if slices.ContainsFunc(c.Node(asker).Members(), func(m node.MemberInfo) bool { return m.Name == reaped }) {
		t.Errorf("%s still listed after the reap timeout", reaped)
	}

	// braid leave: the API answers, then the node leaves and stops.
	api := newAPIClient(t, c.Node(leaving))
	if code, msg := api.do(http.MethodPost, "/v1/leave", "application/json", nil, 0); code != http.StatusOK {
		t.Fatalf("POST /v1/leave: %d %s", code, msg)
	}
	select {
	case <-c.Node(leaving).Stopped():
	case <-ctx.Done():
		t.Fatal("the node did not stop after POST /v1/leave")
	}
	c.waitFor(leaving+" left", func() bool {
		m, ok := c.Node(leader).Coordinator().State().Member(leaving)
		return ok && m.State == coordinator.MemberLeft
	})
	c.Leave(leaving) // the harness's bookkeeping; the node has stopped
}

// A member (another business unit's) that sends force-leave straight to the
// leader over the control protocol, Force set, cannot have a member the
// leader sees alive removed: the leader refuses it whatever Force says.
func TestMemberCannotForceLeaveLiveMember(t *testing.T) {
	c := NewCluster(t, 3)
	c.WaitEpoch(func(e coordinator.Epoch) bool { return len(e.Members) == 3 })
	leader, others := c.Followers("n1", "n2", "n3")
	sender, victim := others[0], others[1]
	c.Kill(sender) // its certificate's name, now free on memnet; still a member
	got := control(t, c, sender, leader, map[string]any{"op": "force-leave", "force_leave": map[string]any{"name": victim, "force": true}})
	if !strings.Contains(got, "refused force-leave") || !strings.Contains(got, "alive") {
		t.Fatalf("%s's forced force-leave of live %s: %q, want a refusal", sender, victim, got)
	}
	time.Sleep(500 * time.Millisecond)
	st := c.Node(leader).Coordinator().State()
	if m, ok := st.Member(victim); !ok || m.State != coordinator.MemberAlive {
		t.Fatalf("%s removed by a member's force-leave: %+v %v", victim, m, ok)
	}
	if !slices.ContainsFunc(c.Node(leader).Coordinator().Status().Servers, func(s coordinator.ServerStatus) bool { return s.Name == victim }) {
		t.Fatalf("%s taken out of the raft configuration by a member's force-leave", victim)
	}
}
