package coordinator

import (
	"fmt"
	"slices"
)

// The epochs a job trained in: which ring served which steps. A cluster
// epoch (State.Epoch) changes with membership whether or not a job runs,
// and the job step it reaches is not replicated; the member that leads a
// job's ring records, once the first step of an epoch is done, that the
// epoch served the job from that step on. The provenance record of an
// exported model lists them (package node, provenance.go).

// MaxJobEpochs bounds the epoch records kept per job (the newest are kept;
// a record that has dropped some says so).
const MaxJobEpochs = 64

// JobEpoch records that epoch Epoch, whose ring was Members, served a job
// from step FirstStep (the first step done on that ring, counting from 1)
// until the next record's first step. At is when that first step was done,
// in Unix milliseconds by the recording member's clock (0: unknown).
type JobEpoch struct {
	Epoch     uint64   `json:"epoch"`
	Members   []string `json:"members"`
	FirstStep int      `json:"first_step"`
	At        int64    `json:"at,omitempty"`
}

// Clone returns a deep copy of e.
func (e JobEpoch) Clone() JobEpoch {
	e.Members = slices.Clone(e.Members)
	return e
}

func (e JobEpoch) validate() error {
	if e.Epoch == 0 {
		return fmt.Errorf("job epoch 0: epochs count from 1")
	}
	if e.FirstStep < 1 || e.FirstStep > MaxJobSteps {
		return fmt.Errorf("epoch %d: first step %d out of range 1..%d", e.Epoch, e.FirstStep, MaxJobSteps)
	}
	if e.At < 0 {
		return fmt.Errorf("epoch %d: time %d before 1970", e.Epoch, e.At)
	}
	if len(e.Members) < 1 || len(e.Members) > MaxMembers {
		return fmt.Errorf("epoch %d: %d members, want 1..%d", e.Epoch, len(e.Members), MaxMembers)
	}
	seen := make(map[string]bool, len(e.Members))
	for _, m := range e.Members {
		if err := validName(m); err != nil {
			return fmt.Errorf("epoch %d: member: %v", e.Epoch, err)
		}
		if seen[m] {
			return fmt.Errorf("epoch %d: member %q listed twice", e.Epoch, m)
		}
		seen[m] = true
	}
	return nil
}

// RecordJobEpoch appends an epoch record to a job that has not ended; its
// epoch must come after the last record's, and be the committed epoch with
// its members. Records from its first step on
// are dropped: their steps were redone.
type RecordJobEpoch struct {
	ID    string   `json:"id"`
	Epoch JobEpoch `json:"epoch"`
}

func (RecordJobEpoch) Type() CommandType { return TypeRecordJobEpoch }

func (c RecordJobEpoch) validate() error {
	if err := validJobID(c.ID); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrInvalidCommand, c.Type(), err)
	}
	if err := c.Epoch.validate(); err != nil {
		return fmt.Errorf("%w: %s %s: %v", ErrInvalidCommand, c.Type(), c.ID, err)
	}
	return nil
}

func (c RecordJobEpoch) apply(s *fsmState) error {
	j, ok := s.jobs[c.ID]
	if !ok {
		return fmt.Errorf("%w: %s: job %s", ErrUnknownJob, c.Type(), c.ID)
	}
	if j.State.Final() {
		return fmt.Errorf("%w: %s %s: the job is already %s", ErrJobFinal, c.Type(), c.ID, j.State)
	}
	if n := len(j.Epochs); n > 0 && c.Epoch.Epoch <= j.Epochs[n-1].Epoch {
		return fmt.Errorf("%w: %s %s: epoch %d is not after the last record's %d", ErrStaleEpoch, c.Type(), c.ID, c.Epoch.Epoch, j.Epochs[n-1].Epoch)
	}
	// Only the committed epoch is recorded, with its own ring: a member of
	// the ring must not be able to credit a future or invented ring with
	// the job's steps (the record goes into signed provenance).
	if c.Epoch.Epoch < s.epoch.ID {
		return fmt.Errorf("%w: %s %s: epoch %d, the committed epoch is %d", ErrStaleEpoch, c.Type(), c.ID, c.Epoch.Epoch, s.epoch.ID)
	}
	if c.Epoch.Epoch != s.epoch.ID || !sameMembers(c.Epoch.Members, s.epoch.Members) {
		return fmt.Errorf("%w: %s %s: epoch %d with members %v is not the committed epoch %d (members %v)", ErrInvalidCommand, c.Type(), c.ID, c.Epoch.Epoch, c.Epoch.Members, s.epoch.ID, s.epoch.Members)
	}
	if c.Epoch.FirstStep > j.Spec.Steps {
		return fmt.Errorf("%w: %s %s: step %d beyond the job's %d steps", ErrInvalidCommand, c.Type(), c.ID, c.Epoch.FirstStep, j.Spec.Steps)
	}
	j = j.Clone()
	// A job that went back (resumed from a checkpoint, a DiLoCo round
	// redone) redid the steps of the records from this first step on: the
	// new epoch served them, not those.
	for len(j.Epochs) > 0 && j.Epochs[len(j.Epochs)-1].FirstStep >= c.Epoch.FirstStep {
		j.Epochs = j.Epochs[:len(j.Epochs)-1]
	}
	j.Epochs = append(j.Epochs, c.Epoch.Clone())
	if len(j.Epochs) > MaxJobEpochs {
		j.Epochs = j.Epochs[len(j.Epochs)-MaxJobEpochs:]
	}
	s.jobs[c.ID] = j
	return nil
}

// validJobEpochs checks a job's epoch records from a snapshot: bounded,
// each valid, in order.
func validJobEpochs(epochs []JobEpoch) error {
	if len(epochs) > MaxJobEpochs {
		return fmt.Errorf("%d epoch records, limit %d", len(epochs), MaxJobEpochs)
	}
	for i, e := range epochs {
		if err := e.validate(); err != nil {
			return err
		}
		if i > 0 && (e.Epoch <= epochs[i-1].Epoch || e.FirstStep <= epochs[i-1].FirstStep) {
			return fmt.Errorf("epoch record %d (epoch %d from step %d) is not after the one before", i, e.Epoch, e.FirstStep)
		}
	}
	return nil
}

// sameMembers reports whether a and b list the same names, in any order.
func sameMembers(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}
