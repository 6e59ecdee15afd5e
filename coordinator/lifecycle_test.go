package coordinator

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// TestDeleteJobFreesTheLimit: MaxJobs counts the jobs the state holds, so
// deleting finished jobs makes room for new ones; a running job is
// deleted only by force.
func TestDeleteJobFreesTheLimit(t *testing.T) {
	f := newFSM()
	if err := applyCmd(t, f, RegisterDataset{Dataset: testDataset("legal", false)}); err != nil {
		t.Fatal(err)
	}
	for i := range MaxJobs {
		if err := applyCmd(t, f, SubmitJob{ID: fmt.Sprintf("j%d", i), Spec: testJobSpec(), SubmittedBy: "n1"}); err != nil {
			t.Fatal(err)
		}
	}
	err := applyCmd(t, f, SubmitJob{ID: "one-more", Spec: testJobSpec(), SubmittedBy: "n1"})
	if !errors.Is(err, ErrLimit) || !strings.Contains(err.Error(), "braid job rm") {
		t.Fatalf("a job past the limit: %v", err)
	}
	if err := applyCmd(t, f, SetJobState{ID: "j0", State: JobRunning}); err != nil {
		t.Fatal(err)
	}
	if err := applyCmd(t, f, DeleteJob{ID: "j0"}); !errors.Is(err, ErrInUse) {
		t.Fatalf("deleting a running job without force: %v", err)
	}
	if err := applyCmd(t, f, SetJobState{ID: "j1", State: JobCompleted}); err != nil {
		t.Fatal(err)
	}
	if err := applyCmd(t, f, DeleteJob{ID: "j1"}); err != nil {
		t.Fatal(err)
	}
	if err := applyCmd(t, f, DeleteJob{ID: "j1"}); err != nil {
		t.Errorf("deleting an absent job: %v", err)
	}
	if err := applyCmd(t, f, SubmitJob{ID: "one-more", Spec: testJobSpec(), SubmittedBy: "n1"}); err != nil {
		t.Fatalf("a job after one was deleted: %v", err)
	}
	if err := applyCmd(t, f, DeleteJob{ID: "j0", Force: true}); err != nil {
		t.Fatal(err)
	}
	st := f.state()
	if _, ok := st.Job("j0"); ok {
		t.Error("j0 still listed after a forced delete")
	}
	if _, ok := st.RunningJob(); ok {
		t.Error("a job still runs after the running one was deleted")
	}
	if len(st.Jobs) != MaxJobs-1 {
		t.Errorf("%d jobs, want %d", len(st.Jobs), MaxJobs-1)
	}
}

// TestDeleteDatasetInUse: a dataset a running job trains on is not
// deleted, and the error names the job; once the job ended it is.
func TestDeleteDatasetInUse(t *testing.T) {
	f := newFSM()
	d := testDataset("legal", false)
	for _, c := range []Command{RegisterDataset{Dataset: d}, SubmitJob{ID: "j1", Spec: testJobSpec(), SubmittedBy: "n1"},
		SetJobState{ID: "j1", State: JobRunning}} {
		if err := applyCmd(t, f, c); err != nil {
			t.Fatal(err)
		}
	}
	err := applyCmd(t, f, DeleteDataset{ID: d.ID})
	if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "j1") {
		t.Fatalf("deleting the running job's dataset: %v", err)
	}
	if err := applyCmd(t, f, SetJobState{ID: "j1", State: JobFailed}); err != nil {
		t.Fatal(err)
	}
	if err := applyCmd(t, f, DeleteDataset{ID: d.ID}); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.state().Dataset(d.ID); ok {
		t.Error("the dataset is still registered")
	}
	// A job whose dataset is gone cannot be resumed.
	if err := applyCmd(t, f, ResumeJob{ID: "j1"}); !errors.Is(err, ErrUnknownDataset) {
		t.Errorf("resuming a job whose dataset was deleted: %v", err)
	}
}

// TestResumeJob: a failed or cancelled job goes back to submitted with
// its checkpoints and without its error; other states are refused.
func TestResumeJob(t *testing.T) {
	f := newFSM()
	for _, c := range []Command{RegisterDataset{Dataset: testDataset("legal", false)}, SubmitJob{ID: "j1", Spec: testJobSpec(), SubmittedBy: "n1"}} {
		if err := applyCmd(t, f, c); err != nil {
			t.Fatal(err)
		}
	}
	if err := applyCmd(t, f, ResumeJob{ID: "j1"}); !errors.Is(err, ErrJobFinal) {
		t.Errorf("resuming a submitted job: %v", err)
	}
	if err := applyCmd(t, f, ResumeJob{ID: "nope"}); !errors.Is(err, ErrUnknownJob) {
		t.Errorf("resuming an unknown job: %v", err)
	}
	for _, c := range []Command{SetJobState{ID: "j1", State: JobRunning}, RecordCheckpoint{ID: "j1", Checkpoint: testCheckpoint(20)},
		SetJobState{ID: "j1", State: JobFailed, Error: "n2 crashed"}, ResumeJob{ID: "j1"}} {
		if err := applyCmd(t, f, c); err != nil {
			t.Fatal(err)
		}
	}
	j, _ := f.state().Job("j1")
	if j.State != JobSubmitted || j.Error != "" || len(j.Checkpoints) != 1 || j.Seq != 1 {
		t.Errorf("resumed job %+v: want submitted, no error, its checkpoint, the same seq", j)
	}
	for _, c := range []Command{SetJobState{ID: "j1", State: JobRunning}, SetJobState{ID: "j1", State: JobCompleted}} {
		if err := applyCmd(t, f, c); err != nil {
			t.Fatal(err)
		}
	}
	if err := applyCmd(t, f, ResumeJob{ID: "j1"}); !errors.Is(err, ErrJobFinal) {
		t.Errorf("resuming a completed job: %v", err)
	}
}

// TestKeepCheckpoints: a job keeps its newest KeepCheckpoints records;
// 0 keeps MaxCheckpoints, and more than MaxCheckpoints is refused.
func TestKeepCheckpoints(t *testing.T) {
	for _, c := range []struct{ keep, want int }{{0, MaxCheckpoints}, {2, 2}, {1, 1}} {
		f := newFSM()
		spec := testJobSpec()
		spec.Steps, spec.KeepCheckpoints = 1000, c.keep
		for _, cmd := range []Command{RegisterDataset{Dataset: testDataset("legal", false)}, SubmitJob{ID: "j1", Spec: spec, SubmittedBy: "n1"}} {
			if err := applyCmd(t, f, cmd); err != nil {
				t.Fatal(err)
			}
		}
		for step := 10; step <= 200; step += 10 {
			if err := applyCmd(t, f, RecordCheckpoint{ID: "j1", Checkpoint: testCheckpoint(step)}); err != nil {
				t.Fatal(err)
			}
		}
		j, _ := f.state().Job("j1")
		if len(j.Checkpoints) != c.want || j.Checkpoints[len(j.Checkpoints)-1].Step != 200 {
			t.Errorf("keep %d: %d checkpoints, last %+v; want %d ending at 200", c.keep, len(j.Checkpoints), j.Checkpoints[len(j.Checkpoints)-1], c.want)
		}
		if _, err := decodeState(stateBytes(t, f)); err != nil {
			t.Errorf("keep %d: the state does not restore: %v", c.keep, err)
		}
	}
	spec := testJobSpec()
	spec.KeepCheckpoints = MaxCheckpoints + 1
	if _, err := EncodeCommand(SubmitJob{ID: "j1", Spec: spec, SubmittedBy: "n1"}); !errors.Is(err, ErrInvalidCommand) {
		t.Errorf("keep %d: %v", spec.KeepCheckpoints, err)
	}
	// A spec that does not set it encodes without the field, as before it
	// existed.
	b, _ := EncodeCommand(SubmitJob{ID: "j1", Spec: testJobSpec(), SubmittedBy: "n1"})
	if strings.Contains(string(b), "keep_checkpoints") {
		t.Errorf("a spec without KeepCheckpoints encodes it: %s", b)
	}
}

// TestRemoveMember: only a member that is neither alive nor in the epoch
// is forgotten, which makes room under MaxMembers.
func TestRemoveMember(t *testing.T) {
	f := newFSM()
	for _, c := range []Command{JoinMember{Name: "n1", Addr: "a1"}, JoinMember{Name: "n2", Addr: "a2"},
		CommitEpoch{ID: 1, Members: []string{"n1", "n2"}}} {
		if err := applyCmd(t, f, c); err != nil {
			t.Fatal(err)
		}
	}
	if err := applyCmd(t, f, RemoveMember{Name: "n2"}); !errors.Is(err, ErrInUse) {
		t.Errorf("removing an alive member: %v", err)
	}
	if err := applyCmd(t, f, FailMember{Name: "n2"}); err != nil {
		t.Fatal(err)
	}
	if err := applyCmd(t, f, RemoveMember{Name: "n2"}); !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "epoch 1") {
		t.Errorf("removing a member of the epoch: %v", err)
	}
	for _, c := range []Command{CommitEpoch{ID: 2, Members: []string{"n1"}}, RemoveMember{Name: "n2"}, RemoveMember{Name: "n2"}} {
		if err := applyCmd(t, f, c); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := f.state().Member("n2"); ok {
		t.Error("n2 still listed")
	}
	if err := applyCmd(t, f, JoinMember{Name: "n2", Addr: "a2"}); err != nil {
		t.Errorf("n2 joining again: %v", err)
	}
}
