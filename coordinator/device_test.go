package coordinator

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/braidml/braid/transport"
	"github.com/braidml/braid/transport/memnet"
)

func TestJobSpecDevice(t *testing.T) {
	for _, d := range []string{"", DeviceCPU, DeviceCUDA} {
		s := testJobSpec()
		s.Device = d
		if _, err := EncodeCommand(SubmitJob{ID: "j", Spec: s, SubmittedBy: "n1"}); err != nil {
			t.Errorf("device %q: %v", d, err)
		}
	}
	for _, d := range []string{"tpu", "CUDA", "cuda:0", "gpu"} {
		s := testJobSpec()
		s.Device = d
		_, err := EncodeCommand(SubmitJob{ID: "j", Spec: s, SubmittedBy: "n1"})
		if !errors.Is(err, ErrInvalidCommand) || !strings.Contains(err.Error(), `device "`+d+`"`) {
			t.Errorf("device %q: %v, want ErrInvalidCommand naming it", d, err)
		}
	}
	if got := (JobSpec{}).DeviceKind(); got != DeviceCPU {
		t.Errorf("a spec without a device runs on %q, want cpu", got)
	}
	if got := (Member{Meta: map[string]string{"zone": "a"}}).Device(); got != DeviceCPU {
		t.Errorf("a member without a device computes on %q, want cpu", got)
	}
}

// mixedFSM holds members n1 (no device: cpu), n2 and n3 (cuda), n4 (cpu)
// and the dataset jobs train on.
func mixedFSM(t *testing.T) *fsm {
	t.Helper()
	f := newFSM()
	for _, c := range []Command{
		JoinMember{Name: "n1", Addr: "mem:n1"},
		JoinMember{Name: "n2", Addr: "mem:n2", Meta: map[string]string{MetaDevice: DeviceCUDA}},
		JoinMember{Name: "n3", Addr: "mem:n3", Meta: map[string]string{MetaDevice: DeviceCUDA, "gpu": "NVIDIA H200"}},
		JoinMember{Name: "n4", Addr: "mem:n4", Meta: map[string]string{MetaDevice: DeviceCPU}},
		RegisterDataset{Dataset: testDataset("legal", false)},
	} {
		if err := applyCmd(t, f, c); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func submitOn(t *testing.T, f *fsm, id, device string) {
	t.Helper()
	s := testJobSpec()
	s.Device = device
	if err := applyCmd(t, f, SubmitJob{ID: id, Spec: s, SubmittedBy: "n1"}); err != nil {
		t.Fatal(err)
	}
}

func setJob(t *testing.T, f *fsm, id string, st JobState) {
	t.Helper()
	if err := applyCmd(t, f, SetJobState{ID: id, State: st}); err != nil {
		t.Fatal(err)
	}
}

// A job runs on members of one device kind: the epoch's candidates are the
// alive members on the running job's device, every alive member when none
// runs, and an epoch that puts another device's member in is refused.
func TestEpochCandidatesFollowTheRunningJob(t *testing.T) {
	f := mixedFSM(t)
	all := []string{"n1", "n2", "n3", "n4"}
	if got := f.state().EpochCandidates(); !slices.Equal(got, all) {
		t.Fatalf("no job: candidates %v, want %v", got, all)
	}
	if got := f.state().AliveOn(DeviceCUDA); !slices.Equal(got, []string{"n2", "n3"}) {
		t.Errorf("alive on cuda: %v", got)
	}
	if err := applyCmd(t, f, CommitEpoch{ID: 1, Members: all}); err != nil {
		t.Fatalf("a mixed epoch with no job running: %v", err)
	}

	submitOn(t, f, "gpu-job", DeviceCUDA)
	if got := f.state().EpochCandidates(); !slices.Equal(got, all) {
		t.Errorf("a submitted job does not move the epoch: candidates %v", got)
	}
	setJob(t, f, "gpu-job", JobRunning)
	if got := f.state().EpochCandidates(); !slices.Equal(got, []string{"n2", "n3"}) {
		t.Fatalf("cuda job running: candidates %v, want [n2 n3]", got)
	}
	if !epochStale(f.state()) {
		t.Error("the mixed epoch is not stale while a cuda job runs")
	}
	for _, ring := range [][]string{{"n2", "n1"}, {"n4"}, all} {
		err := applyCmd(t, f, CommitEpoch{ID: 2, Members: ring})
		if !errors.Is(err, ErrWrongDevice) || !strings.Contains(err.Error(), "cpu") || !strings.Contains(err.Error(), "gpu-job") {
			t.Errorf("epoch %v during the cuda job: %v, want ErrWrongDevice naming the job and the device", ring, err)
		}
	}
	if err := applyCmd(t, f, CommitEpoch{ID: 2, Members: []string{"n3", "n2"}}); err != nil {
		t.Fatalf("a cuda epoch during the cuda job: %v", err)
	}
	if epochStale(f.state()) {
		t.Error("the cuda epoch is stale")
	}
	// The cuda members die: no candidate, the job waits on its epoch.
	for _, n := range []string{"n2", "n3"} {
		if err := applyCmd(t, f, FailMember{Name: n}); err != nil {
			t.Fatal(err)
		}
	}
	if got := f.state().EpochCandidates(); len(got) != 0 || epochStale(f.state()) {
		t.Errorf("no cuda member alive: candidates %v, stale %v", got, epochStale(f.state()))
	}

	setJob(t, f, "gpu-job", JobCancelled)
	if got := f.state().EpochCandidates(); !slices.Equal(got, []string{"n1", "n4"}) {
		t.Errorf("no job: candidates %v, want the alive [n1 n4]", got)
	}
	submitOn(t, f, "cpu-job", "")
	setJob(t, f, "cpu-job", JobRunning)
	if got := f.state().EpochCandidates(); !slices.Equal(got, []string{"n1", "n4"}) {
		t.Errorf("cpu job running: candidates %v, want [n1 n4]", got)
	}
}

// The leader moves the epoch to the running job's device as soon as the job
// starts and back to every member when it ends, without waiting for its
// reconcile interval.
func TestLeaderCommitsEpochsOfTheJobsDevice(t *testing.T) {
	cfg := testConfig()
	cfg.ReconcileInterval = time.Hour // only kicks and state changes reconcile
	tc := newTestCluster(t, cfg)
	names := []string{"n1", "n2", "n3"}
	tc.bootstrap(names...)
	devices := map[string]string{"n1": DeviceCPU, "n2": DeviceCUDA, "n3": DeviceCUDA}
	for _, to := range tc.up() {
		for _, m := range names {
			err := to.c.MemberJoined(Member{Name: m, Addr: memnet.Address(transport.PeerID(m)), Meta: map[string]string{MetaDevice: devices[m]}})
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	l := tc.leader()
	tc.waitEpoch(names...)
	ctx := ctxTimeout(t, waitFor)
	if _, err := l.c.Wait(ctx, func(s State) bool { return slices.Equal(s.AliveOn(DeviceCUDA), []string{"n2", "n3"}) }); err != nil {
		t.Fatal(err)
	}
	spec := testJobSpec()
	spec.Device = DeviceCUDA
	for _, c := range []Command{
		RegisterDataset{Dataset: testDataset("legal", false)},
		SubmitJob{ID: "gpu-job", Spec: spec, SubmittedBy: "n1"},
		SetJobState{ID: "gpu-job", State: JobRunning},
	} {
		if err := l.c.Apply(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	tc.waitEpoch("n2", "n3")
	if err := l.c.Apply(ctx, SetJobState{ID: "gpu-job", State: JobCompleted}); err != nil {
		t.Fatal(err)
	}
	tc.waitEpoch(names...)
}
