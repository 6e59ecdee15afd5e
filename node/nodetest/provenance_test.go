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
	if len(rec.Heldout) != 2 || rec.Heldout[0].Step != 0 || rec.Heldout[1].Step != 20 || !(rec.Heldout[1].Loss < rec.Heldout[0].Loss) {
		t.Errorf("held-out %+v, want the base's and step 20's, lower", rec.Heldout)
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
