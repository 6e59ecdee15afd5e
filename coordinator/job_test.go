package coordinator

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"testing"
)

func testJobSpec() JobSpec {
	return JobSpec{Base: ModelRef{Config: hexHash('a'), Weights: hexHash('b')}, Dataset: hexHash('d'),
		Steps: 100, GlobalBatch: 16, MicroBatch: 8, LR: 1e-3, MinLRFrac: 0.1, Warmup: 10, WeightDecay: 0.1, Clip: 1,
		Seed: 1, CheckpointEvery: 20, EvalEvery: 20, HashEvery: 10, Replicas: 2}
}

func testCheckpoint(step int) Checkpoint {
	return Checkpoint{Step: step, Config: hexHash('a'), Weights: hexHash('c'), State: hexHash('e'), Hash: hexHash('f'), Holders: []string{"n1", "n2"}}
}

func TestJobLifecycle(t *testing.T) {
	f := newFSM()
	if err := applyCmd(t, f, SubmitJob{ID: "j1", Spec: testJobSpec(), SubmittedBy: "n1"}); !errors.Is(err, ErrUnknownDataset) {
		t.Fatalf("a job on an unregistered dataset: %v", err)
	}
	if err := applyCmd(t, f, RegisterDataset{Dataset: testDataset("legal", false)}); err != nil {
		t.Fatal(err)
	}
	if err := applyCmd(t, f, SubmitJob{ID: "j1", Spec: testJobSpec(), SubmittedBy: "n1"}); err != nil {
		t.Fatal(err)
	}
	if err := applyCmd(t, f, SubmitJob{ID: "j1", Spec: testJobSpec(), SubmittedBy: "n1"}); !errors.Is(err, ErrConflict) {
		t.Errorf("the same job id twice: %v", err)
	}
	if err := applyCmd(t, f, SetJobState{ID: "j1", State: JobRunning, From: []JobState{JobSubmitted}}); err != nil {
		t.Fatal(err)
	}
	if err := applyCmd(t, f, SetJobState{ID: "j1", State: JobRunning, From: []JobState{JobSubmitted}}); !errors.Is(err, ErrJobFinal) {
		t.Errorf("running from submitted twice: %v", err)
	}
	for _, step := range []int{20, 40} {
		if err := applyCmd(t, f, RecordCheckpoint{ID: "j1", Checkpoint: testCheckpoint(step)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := applyCmd(t, f, RecordCheckpoint{ID: "j1", Checkpoint: testCheckpoint(40)}); !errors.Is(err, ErrStaleEpoch) {
		t.Errorf("a checkpoint not after the last: %v", err)
	}
	if err := applyCmd(t, f, RecordCheckpoint{ID: "j1", Checkpoint: testCheckpoint(101)}); !errors.Is(err, ErrInvalidCommand) {
		t.Errorf("a checkpoint beyond the job's steps: %v", err)
	}
	if err := applyCmd(t, f, SetJobState{ID: "j1", State: JobCancelled}); err != nil {
		t.Fatal(err)
	}
	if err := applyCmd(t, f, SetJobState{ID: "j1", State: JobCompleted}); !errors.Is(err, ErrJobFinal) {
		t.Errorf("completing a cancelled job: %v", err)
	}
	j, ok := f.state().Job("j1")
	if !ok || j.State != JobCancelled || len(j.Checkpoints) != 2 || j.Seq != 1 {
		t.Fatalf("job %+v", j)
	}
	if cp, _ := j.LastCheckpoint(); cp.Step != 40 {
		t.Errorf("last checkpoint at %d", cp.Step)
	}
	// The jobs survive a snapshot.
	snap := snapshotBytes(t, f)
	g := newFSM()
	if err := g.Restore(io.NopCloser(bytes.NewReader(snap))); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(f.state(), g.state()) {
		t.Fatalf("restored state differs")
	}
}

func TestJobSpecValidation(t *testing.T) {
	for name, mut := range map[string]func(*JobSpec){
		"no steps":          func(s *JobSpec) { s.Steps = 0 },
		"micro over global": func(s *JobSpec) { s.MicroBatch = 17 },
		"negative lr":       func(s *JobSpec) { s.LR = -1 },
		"NaN clip":          func(s *JobSpec) { s.Clip = nan() },
		"bad base hash":     func(s *JobSpec) { s.Base.Weights = "x" },
		"no replicas":       func(s *JobSpec) { s.Replicas = 0 },
	} {
		s := testJobSpec()
		mut(&s)
		if _, err := EncodeCommand(SubmitJob{ID: "j", Spec: s, SubmittedBy: "n1"}); !errors.Is(err, ErrInvalidCommand) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := EncodeCommand(SubmitJob{ID: "J_1", Spec: testJobSpec(), SubmittedBy: "n1"}); !errors.Is(err, ErrInvalidCommand) {
		t.Error("a job id with upper case and _ accepted")
	}
}

func nan() float64 { var z float64; return z / z }
