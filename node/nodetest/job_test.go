package nodetest

import (
	"context"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/braidml/braid/coordinator"
	"github.com/braidml/braid/model"
	"github.com/braidml/braid/node"
	"github.com/braidml/braid/train"
	"github.com/braidml/braid/transport"
	"github.com/braidml/braid/transport/memnet"
)

// baseModel writes a small randomly initialised byte-level model.
func baseModel(t *testing.T) string {
	t.Helper()
	c := model.Config{Context: 64, Dim: 32, Layers: 2, Heads: 2, Vocab: model.ByteTokenizer{}.Vocab()}
	m, err := model.NewInference(c, 1, 64)
	if err != nil {
		t.Fatal(err)
	}
	m.Init(7)
	dir := filepath.Join(t.TempDir(), "base")
	if err := model.SaveCheckpoint(dir, c, model.ByteTokenizer{}, m.Params); err != nil {
		t.Fatal(err)
	}
	return dir
}

// pushBase pushes baseModel's model to name's node, as `braid job submit
// --base` does, for a JobRequest's Base.
func pushBase(t *testing.T, c *Cluster, name string) coordinator.ModelRef {
	t.Helper()
	ref, err := c.PushModel(name, baseModel(t))
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

// waitJob waits until the job reaches a final state (or cond holds) and
// returns its status as name reports it.
func waitJob(c *Cluster, name, id string, cond func(node.JobStatus) bool) node.JobStatus {
	var js node.JobStatus
	c.waitFor("job "+id, func() bool {
		n := c.Node(name)
		if n == nil {
			return false
		}
		var err error
		js, err = n.JobStatus(context.Background(), id)
		return err == nil && cond(js)
	})
	return js
}

func final(js node.JobStatus) bool { return js.State.Final() }

// submit registers a dataset and submits a job on name.
func submit(t *testing.T, c *Cluster, name string, req node.JobRequest) string {
	t.Helper()
	dir, _ := prepareDataset(t, "legal", 40)
	if _, err := c.PushDataset(name, dir, node.DatasetOptions{}); err != nil {
		t.Fatal(err)
	}
	req.Base, req.Dataset = pushBase(t, c, name), "legal"
	j, err := c.Node(name).SubmitJob(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	return j.ID
}

// replicaHashes returns every live worker's weights hash for job id.
func replicaHashes(t *testing.T, js node.JobStatus, workers int) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, w := range js.Workers {
		if w.WeightsHash == "" {
			t.Fatalf("%s reports no weights hash", w.Node)
		}
		out[w.Node] = w.WeightsHash
	}
	// Checks of agreement over the replicas mean nothing over fewer
	// replicas than ran: JobStatus leaves out a worker it cannot reach.
	if len(out) != workers {
		t.Fatalf("weights hashes of %d workers (%v), want %d; unreachable: %v", len(out), slices.Sorted(maps.Keys(out)), workers, js.Unreachable)
	}
	return out
}

// A job submitted to a follower trains on every member, checkpoints,
// evaluates, and completes with bitwise-identical replicas and a held-out
// loss below the base model's.
func TestJobTrainsOnEveryMember(t *testing.T) {
	c := NewCluster(t, 3)
	c.WaitEpoch(func(e coordinator.Epoch) bool { return len(e.Members) == 3 })
	sub := c.Follower("n1", "n2")
	id := submit(t, c, sub, node.JobRequest{Steps: 30, GlobalBatch: 12, MicroBatch: 4, LR: 3e-3, Warmup: 3,
		CheckpointEvery: 10, EvalEvery: 10, HashEvery: 5})
	js := waitJob(c, sub, id, final)
	if js.State != coordinator.JobCompleted {
		t.Fatalf("job %s: %s", js.State, js.Error)
	}
	// The optimizer's constants are in the replicated spec, not left to
	// each binary's defaults.
	if def := train.DefaultJobConfig(); js.Spec.Beta1 != def.Beta1 || js.Spec.Beta2 != def.Beta2 || js.Spec.Eps != def.Eps {
		t.Errorf("spec betas %v %v eps %v, want the trainer's %v %v %v", js.Spec.Beta1, js.Spec.Beta2, js.Spec.Eps, def.Beta1, def.Beta2, def.Eps)
	}
	if js.Step != 30 || len(js.Checkpoints) != 3 || js.Checkpoints[2].Step != 30 || len(js.Checkpoints[2].Holders) != 2 {
		t.Fatalf("status %+v", js)
	}
	if !(js.HeldoutLoss > 0 && js.HeldoutLoss < js.BaseHeldoutLoss) {
		t.Errorf("held-out loss %v, base %v", js.HeldoutLoss, js.BaseHeldoutLoss)
	}
	hashes := replicaHashes(t, js, 3)
	for name, h := range hashes {
		if h != js.Checkpoints[2].Hash {
			t.Errorf("%s's weights %s differ from the final checkpoint's %s", name, h, js.Checkpoints[2].Hash)
		}
	}
	t.Logf("held-out loss %.4f → %.4f", js.BaseHeldoutLoss, js.HeldoutLoss)
}

// kill -9 of a member in the middle of the job, then of the leader: the
// survivors go on without restarting anything and finish with identical
// weights.
func TestJobSurvivesKilledMembersAndLeader(t *testing.T) {
	c := NewCluster(t, 4)
	c.WaitEpoch(func(e coordinator.Epoch) bool { return len(e.Members) == 4 })
	leader := c.WaitLeader()
	api := c.Follower("n1", "n2")
	id := submit(t, c, api, node.JobRequest{Steps: 60, GlobalBatch: 12, MicroBatch: 4, LR: 3e-3, Warmup: 3,
		CheckpointEvery: 20, HashEvery: 5})
	waitJob(c, api, id, func(js node.JobStatus) bool { return js.Step >= 10 })
	var victim string
	for _, n := range []string{"n1", "n2", "n3", "n4"} {
		if n != api && n != leader {
			victim = n
			break
		}
	}
	c.Kill(victim)
	t.Logf("killed %s", victim)
	waitJob(c, api, id, func(js node.JobStatus) bool {
		return js.Step >= 30 && !strings.Contains(strings.Join(js.Members, ","), victim)
	})
	c.Kill(leader)
	t.Logf("killed the leader %s", leader)
	js := waitJob(c, api, id, final)
	if js.State != coordinator.JobCompleted || js.Step != 60 {
		t.Fatalf("job %s at step %d: %s", js.State, js.Step, js.Error)
	}
	hashes := replicaHashes(t, js, 2)
	for name, h := range hashes {
		if h != js.WeightsHash {
			t.Errorf("%s's weights %s differ from %s", name, h, js.WeightsHash)
		}
	}
	// The survivors went on with the state they had: no checkpoint
	// restored, no snapshot copied from a peer.
	if len(js.Workers) != 2 {
		t.Fatalf("progress of %d workers, want the 2 survivors: %+v", len(js.Workers), js.Workers)
	}
	for _, w := range js.Workers {
		if w.Restores != 0 || w.ResumedFrom != 0 {
			t.Errorf("survivor %s restored its state %d times (resumed from step %d)", w.Node, w.Restores, w.ResumedFrom)
		}
		requireFailoverTimeline(t, w, victim, leader)
	}
}

// requireFailoverTimeline checks a survivor's timeline of the job's epoch
// changes: one for each killed member, in order, each with the phases in
// order and a step done on the new ring.
func requireFailoverTimeline(t *testing.T, w node.JobProgress, killed ...string) {
	t.Helper()
	var lost []string
	for _, ch := range w.EpochChanges {
		if len(ch.Lost) == 1 {
			lost = append(lost, ch.Lost[0])
		}
		if ch.Declared == nil {
			continue // the member left the epoch before gossip declared it here
		}
		phases := []float64{*ch.Declared, ch.Committed, ch.Resynced, ch.Connected, ch.FirstStep}
		if !slices.IsSorted(phases) || ch.Resync == "" || ch.Epoch <= ch.From {
			t.Errorf("%s: epoch change %+v: phases out of order %v", w.Node, ch, phases)
		}
		if ch.Suspected != nil && *ch.Suspected > *ch.Declared {
			t.Errorf("%s: suspected after declared: %+v", w.Node, ch)
		}
		t.Logf("%s: epoch %d→%d lost %v: declared %.0f ms, committed %.0f, resynced %.0f (%s), connected %.0f, first step %.0f",
			w.Node, ch.From, ch.Epoch, ch.Lost, *ch.Declared, ch.Committed, ch.Resynced, ch.Resync, ch.Connected, ch.FirstStep)
	}
	if !slices.Equal(lost, killed) {
		t.Errorf("%s: epoch changes lost %v, want %v: %+v", w.Node, lost, killed, w.EpochChanges)
	}
}

// Replicas that diverge stop the job with an error naming the node.
func TestDivergedReplicaStopsTheJob(t *testing.T) {
	c := NewCluster(t, 3, WithPerturb("n3", func(step int) bool { return step == 7 }))
	c.WaitEpoch(func(e coordinator.Epoch) bool { return len(e.Members) == 3 })
	id := submit(t, c, "n1", node.JobRequest{Steps: 40, GlobalBatch: 6, MicroBatch: 2, HashEvery: 5})
	js := waitJob(c, "n1", id, final)
	if js.State != coordinator.JobFailed || !strings.Contains(js.Error, "n3") || !strings.Contains(js.Error, "diverged") {
		t.Fatalf("job %s: %q", js.State, js.Error)
	}
	t.Logf("error: %s", js.Error)
}

// The whole cluster stopped and started again resumes the job from its last
// checkpoint and ends with weights bitwise identical to an uninterrupted
// run with the same membership: for full training, for DiLoCo (whose
// checkpoint holds the outer state: base weights and momentum) and for
// LoRA (whose checkpoint holds only the adapter and its optimiser).
func TestJobResumesAfterWholeClusterRestart(t *testing.T) {
	full := node.JobRequest{Steps: 24, GlobalBatch: 6, MicroBatch: 3, LR: 3e-3, Warmup: 2, CheckpointEvery: 8, HashEvery: 4}
	diloco, lora := full, full
	diloco.InnerSteps, diloco.HashEvery = 4, 0
	lora.LoRARank = 4
	for _, c := range []struct {
		name string
		req  node.JobRequest
	}{{"full", full}, {"diloco", diloco}, {"lora", lora}} {
		t.Run(c.name, func(t *testing.T) { testResume(t, c.req) })
	}
}

func testResume(t *testing.T, req node.JobRequest) {
	// The uninterrupted run.
	ref := NewCluster(t, 3)
	ref.WaitEpoch(func(e coordinator.Epoch) bool { return len(e.Members) == 3 })
	refID := submit(t, ref, "n1", req)
	want := waitJob(ref, "n1", refID, final)
	if want.State != coordinator.JobCompleted {
		t.Fatalf("reference job %s: %s", want.State, want.Error)
	}
	// The interrupted one: stop everything after the checkpoint at step 8.
	c := NewCluster(t, 3)
	c.WaitEpoch(func(e coordinator.Epoch) bool { return len(e.Members) == 3 })
	id := submit(t, c, "n1", req)
	before := waitJob(c, "n1", id, func(js node.JobStatus) bool { return len(js.Checkpoints) >= 1 && js.Step >= 10 })
	for _, n := range []string{"n1", "n2", "n3"} {
		c.Kill(n)
	}
	// The nodes were killed in the middle of the job, after a checkpoint:
	// what the restarted nodes do is resume, not finish or start over.
	if before.State.Final() || before.Step >= req.Steps {
		t.Fatalf("the job was %s at step %d when the nodes were killed: nothing to resume", before.State, before.Step)
	}
	lastBefore := before.Checkpoints[len(before.Checkpoints)-1].Step
	for _, n := range []string{"n1", "n2", "n3"} {
		c.Start(n)
	}
	got := waitJob(c, "n1", id, final)
	if got.State != coordinator.JobCompleted || got.Step != req.Steps {
		t.Fatalf("resumed job %s at step %d: %s", got.State, got.Step, got.Error)
	}
	// Every worker restored a checkpoint at least as late as the last one
	// seen before the kill (one more may have been committed in between)
	// and not the last of the job: training from step 0 again would end
	// with the same weights, as training is deterministic.
	if len(got.Workers) != 3 {
		t.Fatalf("progress of %d workers, want 3: %+v", len(got.Workers), got.Workers)
	}
	for _, w := range got.Workers {
		if w.ResumedFrom < lastBefore || w.ResumedFrom >= req.Steps || w.ResumedFrom%req.CheckpointEvery != 0 {
			t.Errorf("%s resumed from step %d; the last checkpoint before the kill was step %d", w.Node, w.ResumedFrom, lastBefore)
		}
		// What it restored is the checkpoint's state, bit for bit.
		i := slices.IndexFunc(got.Checkpoints, func(cp coordinator.Checkpoint) bool { return cp.Step == w.ResumedFrom })
		if i < 0 || got.Checkpoints[i].Hash != w.ResumedHash {
			t.Errorf("%s resumed from step %d with weights %.12s; the checkpoints: %+v", w.Node, w.ResumedFrom, w.ResumedHash, got.Checkpoints)
		}
	}
	// The resumed run ends where the uninterrupted one does, DiLoCo too:
	// each DiLoCo member keeps its own inner moments of the checkpoint's
	// boundary and restores them (the checkpoint holds one member's).
	if got.WeightsHash != want.WeightsHash {
		t.Fatalf("resumed run ends with weights %s, the uninterrupted run with %s", got.WeightsHash, want.WeightsHash)
	}
	t.Logf("killed at step %d (checkpoint %d), resumed from %d", before.Step, lastBefore, got.Workers[0].ResumedFrom)
}

// The per-step loss of a job on 3 nodes matches the same job on 1 node
// (the same global batches, summed in a different order) within 1e-4
// relative: data-parallel training computes the single-process step.
func TestThreeNodeLossMatchesOneNode(t *testing.T) {
	req := node.JobRequest{Steps: 20, GlobalBatch: 12, MicroBatch: 4, LR: 3e-3, Warmup: 2}
	losses := func(n int) []float64 {
		c := NewCluster(t, n)
		c.WaitEpoch(func(e coordinator.Epoch) bool { return len(e.Members) == n })
		id := submit(t, c, "n1", req)
		waitJob(c, "n1", id, final)
		var l []float64
		c.waitFor("n1's losses of all 20 steps", func() bool {
			l = c.Node("n1").JobLosses(id)
			return len(l) == 20
		})
		return l
	}
	one, three := losses(1), losses(3)
	if len(one) != 20 || len(three) != 20 {
		t.Fatalf("%d and %d losses, want 20", len(one), len(three))
	}
	for i := range one {
		if d := math.Abs(one[i]-three[i]) / math.Abs(one[i]); d > 1e-4 || math.IsNaN(d) {
			t.Errorf("step %d: loss %.7f on 1 node, %.7f on 3 (relative %.2g)", i, one[i], three[i], d)
		}
	}
	t.Logf("step 0 loss %.6f / %.6f, step 19 %.6f / %.6f", one[0], three[0], one[19], three[19])
}

// A node that joins in the middle of a job fetches the state from a peer,
// enters at the next epoch and trains: at the end all four replicas agree.
func TestNodeJoinsARunningJob(t *testing.T) {
	c := NewCluster(t, 3)
	c.WaitEpoch(func(e coordinator.Epoch) bool { return len(e.Members) == 3 })
	id := submit(t, c, "n1", node.JobRequest{Steps: 60, GlobalBatch: 12, MicroBatch: 4, HashEvery: 5})
	waitJob(c, "n1", id, func(js node.JobStatus) bool { return js.Step >= 10 })
	c.Start("n4")
	js := waitJob(c, "n1", id, func(js node.JobStatus) bool {
		for _, w := range js.Workers {
			if w.Node == "n4" && w.Phase == "training" && w.Step > 10 {
				return true
			}
		}
		return js.State.Final()
	})
	if js.State.Final() {
		t.Fatalf("the job ended (%s) before n4 joined it", js.State)
	}
	js = waitJob(c, "n1", id, final)
	if js.State != coordinator.JobCompleted {
		t.Fatalf("job %s: %s", js.State, js.Error)
	}
	hashes := replicaHashes(t, js, 4)
	for name, h := range hashes {
		if h != js.WeightsHash {
			t.Errorf("%s's weights %s differ from %s", name, h, js.WeightsHash)
		}
	}
}

// bf16 on the wire: the replicas still agree bit for bit (every member
// decodes the same bytes) and the job still learns.
func TestJobWithBF16OnTheWire(t *testing.T) {
	c := NewCluster(t, 3)
	c.WaitEpoch(func(e coordinator.Epoch) bool { return len(e.Members) == 3 })
	id := submit(t, c, "n1", node.JobRequest{Steps: 20, GlobalBatch: 12, MicroBatch: 4, LR: 3e-3, Warmup: 2, EvalEvery: 20, HashEvery: 5, Wire: "bf16"})
	js := waitJob(c, "n1", id, final)
	requireLearnedInStep(t, js, 3, "weights differ")
	// Each node sends 2(N−1)/N of the gradient per step, 2 bytes an element.
	c0 := model.Config{Context: 64, Dim: 32, Layers: 2, Heads: 2, Vocab: model.ByteTokenizer{}.Vocab()}
	want := int64(2 * 2 * c0.NumParams() * 2 / 3)
	if got := js.WireBytesPerStep; got < want || got > want+want/10 {
		t.Errorf("%d bytes sent per node per step, want about %d", got, want)
	}
}

// A federated job: each of 3 units registered its own local dataset; each
// trains only on its own, no byte of any dataset crosses the wire (the
// servers' counters), the replicas agree, and every unit's held-out loss
// drops.
func TestFederatedJobKeepsDataHome(t *testing.T) {
	c := NewCluster(t, 3)
	c.WaitEpoch(func(e coordinator.Epoch) bool { return len(e.Members) == 3 })
	var names []string
	var objects []string
	for i, unit := range []string{"n1", "n2", "n3"} {
		name := []string{"legal", "bio", "code"}[i]
		dir, m := prepareDataset(t, name, 20+10*i)
		d, err := c.PushDataset(unit, dir, node.DatasetOptions{Local: true})
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, name)
		objects = append(objects, d.Manifest)
		for _, s := range m.Shards {
			objects = append(objects, s.Hash)
		}
	}
	base := pushBase(t, c, "n2")
	// What a federated run must refuse at submission, before anything is
	// committed: a local dataset in an ordinary job (its shards never
	// leave its unit, so every other member would fail to fetch them), a
	// shared dataset in a federated job, two datasets of one unit, none.
	sharedDir, _ := prepareDataset(t, "shared", 20)
	if _, err := c.PushDataset("n1", sharedDir, node.DatasetOptions{}); err != nil {
		t.Fatal(err)
	}
	extraDir, _ := prepareDataset(t, "legal2", 20)
	if _, err := c.PushDataset("n1", extraDir, node.DatasetOptions{Local: true}); err != nil {
		t.Fatal(err)
	}
	jobs := len(c.Node("n2").Coordinator().State().Jobs)
	for _, bad := range []struct {
		name string
		req  node.JobRequest
		want string
	}{
		{"a local dataset in an ordinary job", node.JobRequest{Dataset: "legal"}, "local to n1"},
		{"a shared dataset in a federated job", node.JobRequest{Federated: true, Datasets: []string{"legal", "shared"}}, "shared, not local"},
		{"two datasets of one unit", node.JobRequest{Federated: true, Datasets: []string{"legal", "legal2", "bio"}}, "n1 holds two"},
		{"no dataset", node.JobRequest{Federated: true}, "names the local datasets"},
	} {
		bad.req.Base, bad.req.Steps, bad.req.GlobalBatch, bad.req.MicroBatch = base, 20, 12, 4
		if _, err := c.Node("n2").SubmitJob(context.Background(), bad.req); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%s: %v, want an error saying %q", bad.name, err, bad.want)
		}
	}
	if got := len(c.Node("n2").Coordinator().State().Jobs); got != jobs {
		t.Fatalf("%d jobs committed by refused submissions", got-jobs)
	}
	j, err := c.Node("n2").SubmitJob(context.Background(), node.JobRequest{Base: base, Federated: true, Datasets: names,
		Steps: 20, GlobalBatch: 12, MicroBatch: 4, LR: 3e-3, Warmup: 2, EvalEvery: 10, HashEvery: 5})
	if err != nil {
		t.Fatal(err)
	}
	js := waitJob(c, "n2", j.ID, final)
	if js.State != coordinator.JobCompleted {
		t.Fatalf("job %s: %s", js.State, js.Error)
	}
	if len(js.Workers) != 3 {
		t.Fatalf("workers %+v", js.Workers)
	}
	for _, w := range js.Workers {
		if w.WeightsHash != js.WeightsHash {
			t.Errorf("%s's weights differ", w.Node)
		}
		if !(w.HeldoutLoss > 0 && w.HeldoutLoss < w.BaseHeldoutLoss) {
			t.Errorf("unit %s: held-out loss %v, base %v", w.Node, w.HeldoutLoss, w.BaseHeldoutLoss)
		}
		t.Logf("unit %s: held-out loss %.3f → %.3f", w.Node, w.BaseHeldoutLoss, w.HeldoutLoss)
	}
	for _, name := range []string{"n1", "n2", "n3"} {
		srv := c.Node(name).ShardServer()
		for _, h := range objects {
			if b := srv.BytesServed(h); b != 0 {
				t.Errorf("%s served %d bytes of %s", name, b, h[:12])
			}
		}
	}
}

// DiLoCo: H local steps between all-reduces of the pseudo-gradient; the
// replicas agree after every outer step, the job learns, and the bytes on
// the wire per step are about 1/H of the every-step all-reduce's.
func TestDiLoCoJob(t *testing.T) {
	c := NewCluster(t, 3)
	c.WaitEpoch(func(e coordinator.Epoch) bool { return len(e.Members) == 3 })
	id := submit(t, c, "n1", node.JobRequest{Steps: 40, GlobalBatch: 12, MicroBatch: 4, LR: 3e-3, Warmup: 2,
		EvalEvery: 20, CheckpointEvery: 20, InnerSteps: 10, Wire: "bf16"})
	js := waitJob(c, "n1", id, final)
	requireLearnedInStep(t, js, 3, "weights differ after the last outer step")
	c0 := model.Config{Context: 64, Dim: 32, Layers: 2, Heads: 2, Vocab: model.ByteTokenizer{}.Vocab()}
	every := int64(2 * 2 * c0.NumParams() * 2 / 3) // bf16, every step
	if got := js.WireBytesPerStep; got < every/10 || got > every/10+every/50 {
		t.Errorf("%d bytes per node per step, want about %d (1/10 of %d)", got, every/10, every)
	}
	// The same, counted by the network instead of by the job: all the ring
	// traffic each node sent over the job is 4 outer all-reduces, so the
	// inner steps sent nothing.
	for _, name := range []string{"n1", "n2", "n3"} {
		sent := c.Node(name).Transport().(*memnet.Transport).BytesSent(transport.ProtoRing)
		if want := 4 * every; sent < want || sent > want+want/20 {
			t.Errorf("%s sent %d bytes of ring traffic over the job, want about %d (4 outer steps of %d)", name, sent, want, every)
		}
	}
	t.Logf("held-out %.3f → %.3f, %d bytes/step on the wire", js.BaseHeldoutLoss, js.HeldoutLoss, js.WireBytesPerStep)
}

// A LoRA job trains, reduces and checkpoints only the adapter: the replicas
// agree, the job learns, the checkpoint is a PEFT adapter that loads on the
// base, and far fewer bytes cross the wire than for the full model.
func TestLoRAJob(t *testing.T) {
	c := NewCluster(t, 3)
	c.WaitEpoch(func(e coordinator.Epoch) bool { return len(e.Members) == 3 })
	id := submit(t, c, "n1", node.JobRequest{Steps: 20, GlobalBatch: 12, MicroBatch: 4, Warmup: 2, EvalEvery: 20, HashEvery: 5,
		LoRARank: 4})
	js := waitJob(c, "n1", id, final)
	requireLearnedInStep(t, js, 3, "adapter differs")
	cp := js.Checkpoints[len(js.Checkpoints)-1]
	dir := t.TempDir()
	st := c.Node(cp.Holders[0]).Store()
	for _, f := range [][2]string{{cp.Config, model.AdapterConfigFile}, {cp.Weights, model.AdapterWeightsFile}} {
		p, err := st.Path(f[0])
		if err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(p)
		os.WriteFile(filepath.Join(dir, f[1]), b, 0o644)
	}
	base := model.Config{Context: 64, Dim: 32, Layers: 2, Heads: 2, Vocab: model.ByteTokenizer{}.Vocab()}
	a, err := model.LoadAdapter(dir, base)
	if err != nil {
		t.Fatalf("the checkpoint is not a loadable adapter: %v", err)
	}
	if a.Config.Rank != 4 {
		t.Errorf("adapter rank %d", a.Config.Rank)
	}
	full := int64(2 * 2 * base.NumParams() * 4 / 3)
	if js.WireBytesPerStep >= full/4 {
		t.Errorf("%d bytes per node per step, the full model would send %d", js.WireBytesPerStep, full)
	}
	t.Logf("held-out %.3f → %.3f, %d adapter parameters, %d bytes/step", js.BaseHeldoutLoss, js.HeldoutLoss, a.NumParams(), js.WireBytesPerStep)
}

// A DiLoCo job survives a member's death: the broken round is redone from
// its start on the new ring, and the survivors end identical.
func TestDiLoCoJobSurvivesAKilledMember(t *testing.T) {
	c := NewCluster(t, 4)
	c.WaitEpoch(func(e coordinator.Epoch) bool { return len(e.Members) == 4 })
	id := submit(t, c, "n1", node.JobRequest{Steps: 60, GlobalBatch: 12, MicroBatch: 4, InnerSteps: 5, Wire: "int8"})
	waitJob(c, "n1", id, func(js node.JobStatus) bool { return js.Step >= 12 })
	victim := c.Follower("n2", "n3")
	c.Kill(victim)
	js := waitJob(c, "n1", id, final)
	if js.State != coordinator.JobCompleted || js.Step != 60 {
		t.Fatalf("job %s at step %d: %s", js.State, js.Step, js.Error)
	}
	hashes := replicaHashes(t, js, 3)
	for name, h := range hashes {
		if h != js.WeightsHash {
			t.Errorf("%s's weights differ", name)
		}
	}
}

// A federated job that a member cannot serve (it registered no local
// dataset) fails at that member's preparation, with an error naming it,
// and the unit's data still never leaves its node.
func TestFederatedJobRefusedByAMemberWithoutData(t *testing.T) {
	c := NewCluster(t, 2)
	c.WaitEpoch(func(e coordinator.Epoch) bool { return len(e.Members) == 2 })
	dir, _ := prepareDataset(t, "legal", 20)
	if _, err := c.PushDataset("n1", dir, node.DatasetOptions{Local: true}); err != nil {
		t.Fatal(err)
	}
	j, err := c.Node("n1").SubmitJob(context.Background(), node.JobRequest{Base: pushBase(t, c, "n1"), Federated: true,
		Datasets: []string{"legal"}, Steps: 10, GlobalBatch: 4, MicroBatch: 2})
	if err != nil {
		t.Fatal(err)
	}
	js := waitJob(c, "n1", j.ID, final)
	if js.State != coordinator.JobFailed || !strings.Contains(js.Error, "n2") || !strings.Contains(js.Error, "registered none") {
		t.Fatalf("job %s: %q; want failed, naming n2 and its missing local dataset", js.State, js.Error)
	}
	for _, name := range []string{"n1", "n2"} {
		if b := c.Node(name).ShardServer().Stats().BytesServed; b != 0 {
			t.Errorf("%s served %d bytes of shards", name, b)
		}
	}
}

// Settings the trainer refuses are refused at submission, naming the
// setting, before anything is committed: not committed and then failed on
// every member.
func TestSubmitRefusesWhatTheTrainerRefuses(t *testing.T) {
	c := NewCluster(t, 1)
	c.WaitLeader()
	dir, _ := prepareDataset(t, "legal", 20)
	if _, err := c.PushDataset("n1", dir, node.DatasetOptions{}); err != nil {
		t.Fatal(err)
	}
	base := pushBase(t, c, "n1")
	for _, bad := range []struct {
		req  node.JobRequest
		want string
	}{
		{node.JobRequest{WeightDecay: 2}, "weight decay"},
		{node.JobRequest{WeightDecay: 1}, "weight decay"},
		{node.JobRequest{Clip: math.Inf(1)}, "clip"},
	} {
		bad.req.Base, bad.req.Dataset, bad.req.Steps, bad.req.GlobalBatch = base, "legal", 10, 4
		if _, err := c.Node("n1").SubmitJob(context.Background(), bad.req); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%+v: %v, want an error naming %q", bad.req, err, bad.want)
		}
	}
	if jobs := c.Node("n1").Coordinator().State().Jobs; len(jobs) != 0 {
		t.Fatalf("refused submissions committed %d jobs", len(jobs))
	}
}

// requireLearnedInStep checks that job js completed with a held-out loss
// below the base model's, and that its n replicas hold the final weights
// (what names them in the error: "weights differ", "adapter differs").
func requireLearnedInStep(t *testing.T, js node.JobStatus, n int, what string) {
	t.Helper()
	if js.State != coordinator.JobCompleted || !(js.HeldoutLoss < js.BaseHeldoutLoss) {
		t.Fatalf("job %s (%s): held-out %v, base %v", js.State, js.Error, js.HeldoutLoss, js.BaseHeldoutLoss)
	}
	for name, h := range replicaHashes(t, js, n) {
		if h != js.WeightsHash {
			t.Errorf("%s's %s", name, what)
		}
	}
}
