package coordinator

import (
	"errors"
	"fmt"
	"slices"
)

// The operator's lifecycle commands: removing a job or a member from the
// replicated state, and resuming a job that ended without completing.
// Removing is what keeps the bounds on the state (MaxJobs, MaxDatasets,
// MaxMembers) bounds on what is live rather than on everything ever
// submitted: they count the entries the state holds, and these commands
// (with DeleteDataset) take entries out. The store objects the removed
// entries named are then collected by each node (package node, gc.go).

// ErrInUse: a dataset, job or member cannot be removed while something
// uses it (a running job, the committed epoch); the error names what.
var ErrInUse = errors.New("coordinator: in use")

// The lifecycle command types.
const (
	TypeDeleteJob    CommandType = "job.delete"
	TypeResumeJob    CommandType = "job.resume"
	TypeRemoveMember CommandType = "member.remove"
)

// DeleteJob removes a job and its checkpoint records. A running job is
// refused unless Force is set (a forced delete of a running job ends it
// on every member, as a cancel would, since the members run only what
// the state says is running). Deleting an absent job is not an error.
type DeleteJob struct {
	ID    string `json:"id"`
	Force bool   `json:"force,omitempty"`
}

// ResumeJob moves a failed or cancelled job back to submitted, keeping
// its ID, spec and checkpoint records: when it starts again each worker
// restores the last checkpoint (as after a restart of the whole cluster),
// so it goes on from that step; a job without a checkpoint starts over.
// Its error is cleared.
type ResumeJob struct {
	ID string `json:"id"`
}

// RemoveMember forgets a member that left or failed: it is taken out of
// the member list (and so out of the bounds), as if it had never joined;
// it may join again later like a new node. An alive member, or one still
// in the committed epoch, is refused: it must leave (or be declared
// failed) first. Removing an absent member is not an error.
type RemoveMember struct {
	Name string `json:"name"`
}

func (DeleteJob) Type() CommandType    { return TypeDeleteJob }
func (ResumeJob) Type() CommandType    { return TypeResumeJob }
func (RemoveMember) Type() CommandType { return TypeRemoveMember }

func (c DeleteJob) validate() error {
	if err := validJobID(c.ID); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrInvalidCommand, c.Type(), err)
	}
	return nil
}

func (c ResumeJob) validate() error {
	if err := validJobID(c.ID); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrInvalidCommand, c.Type(), err)
	}
	return nil
}

func (c RemoveMember) validate() error {
	if err := validName(c.Name); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrInvalidCommand, c.Type(), err)
	}
	return nil
}

func (c DeleteJob) apply(s *fsmState) error {
	j, ok := s.jobs[c.ID]
	if !ok {
		return nil
	}
	if j.State == JobRunning && !c.Force {
		return fmt.Errorf("%w: %s %s: the job is running; cancel it first (or force the delete)", ErrInUse, c.Type(), c.ID)
	}
	delete(s.jobs, c.ID)
	return nil
}

func (c ResumeJob) apply(s *fsmState) error {
	j, ok := s.jobs[c.ID]
	if !ok {
		return fmt.Errorf("%w: %s: job %s", ErrUnknownJob, c.Type(), c.ID)
	}
	if j.State != JobFailed && j.State != JobCancelled {
		return fmt.Errorf("%w: %s %s: the job is %s; only a failed or cancelled job is resumed", ErrJobFinal, c.Type(), c.ID, j.State)
	}
	for _, d := range append([]string{j.Spec.Dataset}, j.Spec.Datasets...) {
		if _, ok := s.datasets[d]; !ok {
			return fmt.Errorf("%w: %s %s: its dataset %s was deleted", ErrUnknownDataset, c.Type(), c.ID, d[:12])
		}
	}
	j = j.Clone()
	j.State, j.Error = JobSubmitted, ""
	s.jobs[c.ID] = j
	return nil
}

func (c RemoveMember) apply(s *fsmState) error {
	m, ok := s.members[c.Name]
	if !ok {
		return nil
	}
	if m.State == MemberAlive {
		return fmt.Errorf("%w: %s %q: the member is alive; it must leave or be declared failed first", ErrInUse, c.Type(), c.Name)
	}
	if s.epoch.Has(c.Name) {
		return fmt.Errorf("%w: %s %q: the member is in epoch %d; wait for the next epoch", ErrInUse, c.Type(), c.Name, s.epoch.ID)
	}
	delete(s.members, c.Name)
	return nil
}

// checkDatasetUnused refuses to delete dataset id while a running job
// trains on it, naming the job.
func checkDatasetUnused(s *fsmState, t CommandType, id string) error {
	for _, j := range s.jobs {
		if j.State == JobRunning && (j.Spec.Dataset == id || slices.Contains(j.Spec.Datasets, id)) {
			return fmt.Errorf("%w: %s %s: job %s is running on it; cancel it first", ErrInUse, t, id[:12], j.ID)
		}
	}
	return nil
}

// keepCheckpoints is how many checkpoint records the state keeps for a
// job of spec s: its KeepCheckpoints, or MaxCheckpoints when it does not
// say.
func (s JobSpec) keepCheckpoints() int {
	if s.KeepCheckpoints > 0 {
		return s.KeepCheckpoints
	}
	return MaxCheckpoints
}
