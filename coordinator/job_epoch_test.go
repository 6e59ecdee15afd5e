package coordinator

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
)

// runningJob is an FSM with job j1 (100 steps) running.
func runningJob(t *testing.T) *fsm {
	t.Helper()
	f := newFSM()
	for _, cmd := range []Command{RegisterDataset{Dataset: testDataset("legal", false)}, SubmitJob{ID: "j1", Spec: testJobSpec(), SubmittedBy: "n1"},
		SetJobState{ID: "j1", State: JobRunning}} {
		if err := applyCmd(t, f, cmd); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func TestRecordJobEpoch(t *testing.T) {
	f := runningJob(t)
	rec := func(epoch uint64, first int, members ...string) error {
		if epoch > f.s.epoch.ID {
			f.s.epoch = Epoch{ID: epoch, Members: members} // committed (CommitEpoch's own rules aside)
		}
		return applyCmd(t, f, RecordJobEpoch{ID: "j1", Epoch: JobEpoch{Epoch: epoch, Members: members, FirstStep: first, At: 1767225600000}})
	}
	if err := rec(1, 1, "n1", "n2", "n3"); err != nil {
		t.Fatal(err)
	}
	if err := rec(3, 41, "n1", "n3"); err != nil {
		t.Fatal(err)
	}
	// Records come in the order of epochs: a late one for an older epoch
	// is stale.
	for _, epoch := range []uint64{2, 3} {
		if err := rec(epoch, 50, "n1"); !errors.Is(err, ErrStaleEpoch) {
			t.Errorf("epoch %d after epoch 3: %v, want stale", epoch, err)
		}
	}
	if err := rec(4, 101, "n1"); !errors.Is(err, ErrInvalidCommand) {
		t.Errorf("a first step beyond the job's steps: %v", err)
	}
	// A job that went back to step 31 (resumed from its checkpoint): epoch
	// 5 served steps from 31 on, and epoch 3 (from 41) served none of the
	// result.
	if err := rec(5, 31, "n2"); err != nil {
		t.Fatal(err)
	}
	j, _ := f.state().Job("j1")
	if len(j.Epochs) != 2 || j.Epochs[1].Epoch != 5 {
		t.Fatalf("epochs %+v after going back to step 31, want epochs 1 and 5", j.Epochs)
	}
	if err := rec(6, 41, "n1", "n3"); err != nil {
		t.Fatal(err)
	}
	if err := applyCmd(t, f, RecordJobEpoch{ID: "nope", Epoch: JobEpoch{Epoch: 9, Members: []string{"n1"}, FirstStep: 1}}); !errors.Is(err, ErrUnknownJob) {
		t.Errorf("an unknown job: %v", err)
	}
	j, _ = f.state().Job("j1")
	want := []JobEpoch{{1, []string{"n1", "n2", "n3"}, 1, 1767225600000}, {5, []string{"n2"}, 31, 1767225600000}, {6, []string{"n1", "n3"}, 41, 1767225600000}}
	if !reflect.DeepEqual(j.Epochs, want) {
		t.Fatalf("epochs %+v, want %+v", j.Epochs, want)
	}
	// They survive a snapshot (the test's epochs named no joined member).
	f.s.epoch = Epoch{}
	g := newFSM()
	if err := g.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, f)))); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(f.state(), g.state()) {
		t.Fatalf("restored state differs")
	}
	// An ended job takes no more.
	if err := applyCmd(t, f, SetJobState{ID: "j1", State: JobCompleted}); err != nil {
		t.Fatal(err)
	}
	if err := rec(7, 60, "n1"); !errors.Is(err, ErrJobFinal) {
		t.Errorf("a record for a completed job: %v", err)
	}
}

// A member of the ring cannot record a future epoch, or the committed
// epoch with invented members: only the committed epoch with its ring,
// and the job's records are unchanged by a refused one.
func TestRecordJobEpochOnlyTheCommittedEpoch(t *testing.T) {
	f := runningJob(t)
	f.s.epoch = Epoch{ID: 4, Members: []string{"n1", "n2"}}
	rec := func(epoch uint64, members ...string) error {
		return applyCmd(t, f, RecordJobEpoch{ID: "j1", Epoch: JobEpoch{Epoch: epoch, Members: members, FirstStep: 1}})
	}
	for _, bad := range []struct {
		epoch   uint64
		members []string
	}{{5, []string{"n1", "n2"}}, {99, []string{"n1"}}, {4, []string{"n1", "n9"}}, {4, []string{"n1"}}, {4, []string{"n1", "n2", "n3"}}} {
		if err := rec(bad.epoch, bad.members...); !errors.Is(err, ErrInvalidCommand) {
			t.Errorf("epoch %d members %v with epoch 4 (n1, n2) committed: %v, want refused", bad.epoch, bad.members, err)
		}
	}
	if err := rec(3, "n1", "n2"); !errors.Is(err, ErrStaleEpoch) {
		t.Errorf("an older epoch: %v, want stale", err)
	}
	if j, _ := f.state().Job("j1"); len(j.Epochs) != 0 {
		t.Fatalf("refused records were kept: %+v", j.Epochs)
	}
	if err := rec(4, "n2", "n1"); err != nil {
		t.Fatalf("the committed epoch, members in another order: %v", err)
	}
}

func TestRecordJobEpochKeepsTheNewest(t *testing.T) {
	f := runningJob(t)
	for i := 1; i <= MaxJobEpochs+5; i++ {
		f.s.epoch = Epoch{ID: uint64(i), Members: []string{"n1"}}
		if err := applyCmd(t, f, RecordJobEpoch{ID: "j1", Epoch: JobEpoch{Epoch: uint64(i), Members: []string{"n1"}, FirstStep: i}}); err != nil {
			t.Fatal(err)
		}
	}
	j, _ := f.state().Job("j1")
	if len(j.Epochs) != MaxJobEpochs || j.Epochs[0].Epoch != 6 || j.Epochs[MaxJobEpochs-1].Epoch != MaxJobEpochs+5 {
		t.Fatalf("%d records from epoch %d, want the newest %d", len(j.Epochs), j.Epochs[0].Epoch, MaxJobEpochs)
	}
}

func TestRecordJobEpochValidation(t *testing.T) {
	ok := JobEpoch{Epoch: 1, Members: []string{"n1"}, FirstStep: 1}
	for name, mut := range map[string]func(*JobEpoch){
		"epoch 0":         func(e *JobEpoch) { e.Epoch = 0 },
		"step 0":          func(e *JobEpoch) { e.FirstStep = 0 },
		"no members":      func(e *JobEpoch) { e.Members = nil },
		"twice":           func(e *JobEpoch) { e.Members = []string{"n1", "n1"} },
		"bad name":        func(e *JobEpoch) { e.Members = []string{strings.Repeat("x", MaxNameLen+1)} },
		"negative time":   func(e *JobEpoch) { e.At = -1 },
		"step over bound": func(e *JobEpoch) { e.FirstStep = MaxJobSteps + 1 },
	} {
		e := ok.Clone()
		mut(&e)
		if _, err := EncodeCommand(RecordJobEpoch{ID: "j1", Epoch: e}); !errors.Is(err, ErrInvalidCommand) {
			t.Errorf("%s: %v", name, err)
		}
	}
}
