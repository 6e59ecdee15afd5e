package nodetest

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/braidml/braid/coordinator"
	"github.com/braidml/braid/node"
	"github.com/braidml/braid/provenance"
)

// jobProvenance asks name for job id's provenance and decodes the record.
func jobProvenance(t *testing.T, c *Cluster, name, id string) (node.ProvenanceExport, *provenance.Record) {
	t.Helper()
	pe, err := c.Node(name).JobProvenance(context.Background(), id, false)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := provenance.Decode(pe.Record)
	if err != nil {
		t.Fatal(err)
	}
	return pe, rec
}

// checkEpochsCover fails unless the record's epochs serve steps 1..steps
// without a gap or an overlap.
func checkEpochsCover(t *testing.T, rec *provenance.Record, steps int) {
	t.Helper()
	next := 1
	for _, e := range rec.Epochs {
		if e.FirstStep != next || e.LastStep < e.FirstStep {
			t.Fatalf("epochs %+v: epoch %d serves %d–%d, want it to start at %d", rec.Epochs, e.Epoch, e.FirstStep, e.LastStep, next)
		}
		next = e.LastStep + 1
	}
	if next != steps+1 || rec.EpochsNote != "" {
		t.Fatalf("epochs %+v (note %q) cover steps up to %d, want %d", rec.Epochs, rec.EpochsNote, next-1, steps)
	}
}

// The model a job exports comes with a record, signed by the exporting
// node's cluster certificate, that verifies against the cluster's CA and
// names the base, the dataset, the ring that served every step, the
// checkpoints and the held-out losses.
func TestExportedModelHasASignedProvenance(t *testing.T) {
	c := NewCluster(t, 3, WithTLS())
	c.WaitEpoch(func(e coordinator.Epoch) bool { return len(e.Members) == 3 })
	api := c.Follower("n1", "n2")
	id := submit(t, c, api, node.JobRequest{Steps: 20, GlobalBatch: 12, MicroBatch: 4, LR: 3e-3, Warmup: 2,
		CheckpointEvery: 10, EvalEvery: 10, HashEvery: 5})
	js := waitJob(c, api, id, final)
	if js.State != coordinator.JobCompleted {
		t.Fatalf("job %s: %s", js.State, js.Error)
	}
	pe, rec := jobProvenance(t, c, api, id)
	last := js.Checkpoints[len(js.Checkpoints)-1]
	dir := checkpointDir(t, c, last)
	if err := provenance.WriteDir(dir, pe.Record, pe.Signature); err != nil {
		t.Fatal(err)
	}
	roots, err := provenance.ReadCAs(c.PKIDir())
	if err != nil {
		t.Fatal(err)
	}
	rep, err := provenance.Verify(dir, provenance.Options{Roots: roots})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() || rep.Signer != api || len(rep.Matched) != 2 {
		t.Fatalf("verify: problems %q, signer %q, %d files matched; want none, %s, 2", rep.Problems, rep.Signer, len(rep.Matched), api)
	}
	// The record is the replicated state's.
	if rec.Job != id || rec.Steps != 20 || rec.Kind != provenance.KindJob || rec.ConfigHash == "" || rec.Started == nil || rec.Finished == nil {
		t.Fatalf("record %+v", rec)
	}
	if len(rec.Datasets) != 1 || rec.Datasets[0].Name != "legal" || rec.Datasets[0].Documents != 40 || rec.Datasets[0].TrainSequences == 0 {
		t.Errorf("datasets %+v, want legal with its 40 documents", rec.Datasets)
	}
	if len(rec.Base.Files) != 2 || rec.Base.Files[1].SHA256 != js.Spec.Base.Weights {
		t.Errorf("base %+v, want the job's base weights %s", rec.Base, js.Spec.Base.Weights)
	}
	checkEpochsCover(t, rec, 20)
	if m := rec.Epochs[0].Members; len(m) != 3 {
		t.Errorf("epoch members %v, want the 3 nodes", m)
	}
	if len(rec.Checkpoints) != 2 || rec.Checkpoints[1].Files["model.safetensors"] != last.Weights || rec.Checkpoints[1].At == nil {
		t.Errorf("checkpoints %+v", rec.Checkpoints)
	}
	// Every evaluation, from the job's history: the base's, then steps 10
	// and 20's, lower.
	if h := rec.Heldout; len(h) != 3 || h[0].Step != 0 || h[1].Step != 10 || h[2].Step != 20 || !(h[2].Loss < h[0].Loss) {
		t.Errorf("held-out %+v, want the base's and steps 10 and 20's, lower", h)
	}
	// Tampered weights are named.
	if err := os.WriteFile(filepath.Join(dir, "model.safetensors"), []byte("not the weights"), 0o644); err != nil {
		t.Fatal(err)
	}
	rep, _ = provenance.Verify(dir, provenance.Options{Roots: roots})
	if len(rep.Problems) != 1 || !strings.HasPrefix(rep.Problems[0], "model.safetensors: sha256") {
		t.Fatalf("tampered weights: problems %q", rep.Problems)
	}
}

// A member killed mid-job: the record says which ring served which steps,
// the first with every node, the last without the victim.
func TestProvenanceNamesTheRingOfEveryStep(t *testing.T) {
	c := NewCluster(t, 3)
	c.WaitEpoch(func(e coordinator.Epoch) bool { return len(e.Members) == 3 })
	leader := c.WaitLeader()
	api := c.Follower("n1", "n2")
	id := submit(t, c, api, node.JobRequest{Steps: 40, GlobalBatch: 12, MicroBatch: 4, LR: 3e-3, Warmup: 2,
		CheckpointEvery: 20, HashEvery: 5})
	waitJob(c, api, id, func(js node.JobStatus) bool { return js.Step >= 10 })
	var victim string
	for _, n := range []string{"n1", "n2", "n3"} {
		if n != api && n != leader {
			victim = n
		}
	}
	c.Kill(victim)
	js := waitJob(c, api, id, final)
	if js.State != coordinator.JobCompleted {
		t.Fatalf("job %s: %s", js.State, js.Error)
	}
	pe, rec := jobProvenance(t, c, api, id)
	if pe.Signature != nil || rec.Signer != "" {
		t.Errorf("a node without a certificate of its own signed (%q)", rec.Signer)
	}
	checkEpochsCover(t, rec, 40)
	first, final := rec.Epochs[0], rec.Epochs[len(rec.Epochs)-1]
	if len(rec.Epochs) < 2 || !slices.Contains(first.Members, victim) || slices.Contains(final.Members, victim) {
		t.Fatalf("epochs %+v: want the first with %s and the last without", rec.Epochs, victim)
	}
	t.Logf("epochs %+v", rec.Epochs)
}

// A federated job's record names each unit's dataset and the unit that
// held it, and building it moves no byte of any unit's data.
func TestFederatedProvenanceNamesEachUnit(t *testing.T) {
	c := NewCluster(t, 2)
	c.WaitEpoch(func(e coordinator.Epoch) bool { return len(e.Members) == 2 })
	var names, objects []string
	for i, unit := range []string{"n1", "n2"} {
		name := []string{"legal", "bio"}[i]
		dir, m := prepareDataset(t, name, 20+10*i)
		d, err := c.PushDataset(unit, dir, node.DatasetOptions{Local: true})
		if err != nil {
			t.Fatal(err)
		}
		names, objects = append(names, name), append(objects, d.Manifest)
		for _, s := range m.Shards {
			objects = append(objects, s.Hash)
		}
	}
	j, err := c.Node("n2").SubmitJob(context.Background(), node.JobRequest{Base: pushBase(t, c, "n2"), Federated: true, Datasets: names,
		Steps: 10, GlobalBatch: 8, MicroBatch: 4, LR: 3e-3, Warmup: 2, EvalEvery: 10})
	if err != nil {
		t.Fatal(err)
	}
	if js := waitJob(c, "n2", j.ID, final); js.State != coordinator.JobCompleted {
		t.Fatalf("job %s: %s", js.State, js.Error)
	}
	_, rec := jobProvenance(t, c, "n2", j.ID)
	if len(rec.Datasets) != 2 {
		t.Fatalf("datasets %+v", rec.Datasets)
	}
	for i, d := range rec.Datasets {
		if d.Name != names[i] || d.Holder != []string{"n1", "n2"}[i] || d.TrainSequences == 0 {
			t.Errorf("dataset %+v, want %s held by n%d with its sequences", d, names[i], i+1)
		}
	}
	// n2 reads its own manifest; n1's stays with n1.
	if rec.Datasets[1].Documents != 30 || rec.Datasets[0].Documents != 0 {
		t.Errorf("documents %d and %d, want 0 (n1's manifest is not read here) and 30", rec.Datasets[0].Documents, rec.Datasets[1].Documents)
	}
	units := map[string]bool{}
	for _, h := range rec.Heldout {
		units[h.Unit] = h.Step == 10
	}
	if !units["n1"] || !units["n2"] {
		t.Errorf("held-out %+v, want each unit's at step 10", rec.Heldout)
	}
	for _, name := range []string{"n1", "n2"} {
		for _, h := range objects {
			if b := c.Node(name).ShardServer().BytesServed(h); b != 0 {
				t.Errorf("%s served %d bytes of %s", name, b, h[:12])
			}
		}
	}
}

// DiLoCo: the epoch is recorded at its first outer step, from the round's
// first step.
func TestDiLoCoProvenanceEpochs(t *testing.T) {
	c := NewCluster(t, 2)
	c.WaitEpoch(func(e coordinator.Epoch) bool { return len(e.Members) == 2 })
	id := submit(t, c, "n1", node.JobRequest{Steps: 12, GlobalBatch: 8, MicroBatch: 4, LR: 3e-3, Warmup: 2, InnerSteps: 4})
	if js := waitJob(c, "n1", id, final); js.State != coordinator.JobCompleted {
		t.Fatalf("job %s: %s", js.State, js.Error)
	}
	_, rec := jobProvenance(t, c, "n1", id)
	checkEpochsCover(t, rec, 12)
}
