package coordinator

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"
)

// SnapshotVersion is the version of the FSM snapshot format.
const SnapshotVersion = 1

// MaxSnapshotSize bounds an FSM snapshot in bytes; Restore refuses larger
// ones. The bounds on members and settings keep real snapshots far below.
const MaxSnapshotSize = 64 << 20

// fsmState is the replicated state. Only fsm (under its lock) touches it.
type fsmState struct {
	members  map[string]Member
	epoch    Epoch
	settings map[string]string
	datasets map[string]Dataset    // by ID
	jobs     map[string]Job        // by ID
	jobSeq   uint64                // jobs submitted so far
	revoked  map[string]Revocation // by serial
}

func newFSMState() *fsmState {
	return &fsmState{members: map[string]Member{}, settings: map[string]string{}, datasets: map[string]Dataset{}, jobs: map[string]Job{},
		revoked: map[string]Revocation{}}
}

// export returns a deep copy in the public form, members sorted by name.
func (s *fsmState) export() State {
	st := State{
		Members:  make([]Member, 0, len(s.members)),
		Epoch:    s.epoch.Clone(),
		Settings: maps.Clone(s.settings),
		Datasets: s.exportDatasets(),
		Jobs:     s.exportJobs(),
		JobSeq:   s.jobSeq,
		Revoked:  s.exportRevoked(),
	}
	for _, name := range slices.Sorted(maps.Keys(s.members)) {
		st.Members = append(st.Members, s.members[name].Clone())
	}
	return st
}

// --- apply: each checks everything first and mutates only on success ---

func (c JoinMember) apply(s *fsmState) error {
	if _, ok := s.members[c.Name]; !ok && len(s.members) >= MaxMembers {
		return fmt.Errorf("%w: %s %q: %d members, limit %d", ErrLimit, c.Type(), c.Name, len(s.members), MaxMembers)
	}
	m := Member{Name: c.Name, Addr: c.Addr, State: MemberAlive}
	if len(c.Meta) > 0 {
		m.Meta = maps.Clone(c.Meta)
	}
	s.members[c.Name] = m
	return nil
}

func setMemberState(s *fsmState, t CommandType, name string, st MemberState) error {
	m, ok := s.members[name]
	if !ok {
		return fmt.Errorf("%w: %s %q", ErrUnknownMember, t, name)
	}
	m.State = st
	s.members[name] = m
	return nil
}

func (c LeaveMember) apply(s *fsmState) error {
	return setMemberState(s, c.Type(), c.Name, MemberLeft)
}

func (c FailMember) apply(s *fsmState) error {
	return setMemberState(s, c.Type(), c.Name, MemberFailed)
}

func (c CommitEpoch) apply(s *fsmState) error {
	if c.ID != s.epoch.ID+1 {
		return fmt.Errorf("%w: %s %d: current epoch is %d", ErrStaleEpoch, c.Type(), c.ID, s.epoch.ID)
	}
	if c.StartStep < s.epoch.StartStep {
		return fmt.Errorf("%w: %s %d: start step %d is before the current epoch's %d", ErrStaleEpoch, c.Type(), c.ID, c.StartStep, s.epoch.StartStep)
	}
	for _, name := range c.Members {
		m, ok := s.members[name]
		if !ok {
			return fmt.Errorf("%w: %s %d: %q", ErrUnknownMember, c.Type(), c.ID, name)
		}
		if m.State != MemberAlive {
			return fmt.Errorf("%w: %s %d: %q is %s", ErrMemberNotAlive, c.Type(), c.ID, name, m.State)
		}
	}
	if err := checkEpochDevices(s, c); err != nil {
		return err
	}
	s.epoch = Epoch{ID: c.ID, Members: slices.Clone(c.Members), StartStep: c.StartStep}
	return nil
}

func (c SetSetting) apply(s *fsmState) error {
	if _, ok := s.settings[c.Key]; !ok && len(s.settings) >= MaxSettings {
		return fmt.Errorf("%w: %s %q: %d settings, limit %d", ErrLimit, c.Type(), c.Key, len(s.settings), MaxSettings)
	}
	s.settings[c.Key] = c.Value
	return nil
}

func (c DeleteSetting) apply(s *fsmState) error {
	delete(s.settings, c.Key)
	return nil
}

// fsm is the raft.FSM. Apply, Snapshot and Restore are called by raft from
// one goroutine; state, watch and the snapshot's Persist may run
// concurrently with them.
type fsm struct {
	mu      sync.RWMutex
	s       *fsmState
	changed chan struct{} // closed and replaced after every change
	// departed is when (in eventSeq) this server applied each member's
	// last change from alive to left or failed (local bookkeeping, not
	// replicated): a report that the member is alive made before then is
	// stale (see observe).
	departed map[string]uint64

	maxSnapshot int // MaxSnapshotSize; tests lower it
}

var _ raft.FSM = (*fsm)(nil)

// eventSeq orders, within this process, the departures the FSM applies and
// the reports the node layer makes (Coordinator.report): a clock that never
// gives two events the same time.
var eventSeq atomic.Uint64

func newFSM() *fsm {
	return &fsm{s: newFSMState(), changed: make(chan struct{}), departed: map[string]uint64{}, maxSnapshot: MaxSnapshotSize}
}

// Apply decodes and applies one committed log entry. The result is nil on
// success or an error value (wrapping ErrInvalidCommand, ErrUnknownMember,
// ErrMemberNotAlive, ErrStaleEpoch or ErrLimit) when the entry is malformed
// or does not apply; a rejected entry leaves the state unchanged. It never
// panics and is deterministic: the same entries in the same order give the
// same state on every server.
func (f *fsm) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil
	}
	cmd, err := DecodeCommand(l.Data)
	if err != nil {
		return err
	}
	return f.applyCommand(cmd)
}

func (f *fsm) applyCommand(cmd Command) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	var alive []string // members alive before a command that may end some
	switch cmd.Type() {
	case TypeLeaveMember, TypeFailMember, TypeRevokeCert:
		for name, m := range f.s.members {
			if m.State == MemberAlive {
				alive = append(alive, name)
			}
		}
	}
	if err := cmd.apply(f.s); err != nil {
		return err
	}
	f.noteDepartures(alive)
	f.notifyLocked()
	return nil
}

// noteDepartures records now as the departure of the members of alive that
// are no longer alive. f.mu is held.
func (f *fsm) noteDepartures(alive []string) {
	now := eventSeq.Add(1)
	for _, name := range alive {
		if m, ok := f.s.members[name]; !ok || m.State != MemberAlive {
			f.departed[name] = now
		}
	}
}

// departedAt returns when (in eventSeq) this server applied member name's
// last departure (0 if it has seen none).
func (f *fsm) departedAt(name string) uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.departed[name]
}

func (f *fsm) notifyLocked() {
	close(f.changed)
	f.changed = make(chan struct{})
}

// state returns a copy of the current state.
func (f *fsm) state() State {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.s.export()
}

// member returns the committed member called name, without copying the
// rest of the state (the Raft guard asks for every RPC).
func (f *fsm) member(name string) (Member, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	m, ok := f.s.members[name]
	return m, ok
}

// watch returns a copy of the current state and a channel that is closed
// when the state next changes.
func (f *fsm) watch() (State, <-chan struct{}) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.s.export(), f.changed
}

// snapshotDoc is the snapshot's on-disk form.
type snapshotDoc struct {
	Version int   `json:"version"`
	State   State `json:"state"`
}

// encodeState returns the snapshot bytes of st: deterministic (members
// sorted, maps with sorted keys), so equal states give equal bytes.
func encodeState(st State) ([]byte, error) {
	if st.Members == nil {
		st.Members = []Member{}
	}
	if st.Settings == nil {
		st.Settings = map[string]string{}
	}
	if st.Datasets == nil {
		st.Datasets = []Dataset{}
	}
	if st.Jobs == nil {
		st.Jobs = []Job{}
	}
	return json.Marshal(snapshotDoc{Version: SnapshotVersion, State: st})
}

// Snapshot captures the state; Persist writes it as JSON.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	b, err := encodeState(f.state())
	if err != nil {
		return nil, err
	}
	return fsmSnapshot(b), nil
}

type fsmSnapshot []byte

func (s fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (fsmSnapshot) Release() {}

// Restore replaces the state with a snapshot's, after decoding it and
// checking every invariant the commands maintain. On error the state is
// unchanged and the error wraps ErrInvalidSnapshot.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, int64(f.maxSnapshot)+1))
	if err != nil {
		return fmt.Errorf("%w: read: %v", ErrInvalidSnapshot, err)
	}
	if len(b) > f.maxSnapshot {
		return fmt.Errorf("%w: more than %d bytes", ErrInvalidSnapshot, f.maxSnapshot)
	}
	s, err := decodeState(b)
	if err != nil {
		return err
	}
	f.mu.Lock()
	var alive []string
	for name, m := range f.s.members {
		if m.State == MemberAlive {
			alive = append(alive, name)
		}
	}
	f.s = s
	f.noteDepartures(alive)
	f.notifyLocked()
	f.mu.Unlock()
	return nil
}

// decodeState decodes and validates snapshot bytes.
func decodeState(b []byte) (*fsmState, error) {
	if len(b) > MaxSnapshotSize {
		return nil, fmt.Errorf("%w: more than %d bytes", ErrInvalidSnapshot, MaxSnapshotSize)
	}
	var doc snapshotDoc
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(&doc); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidSnapshot, err)
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: trailing data", ErrInvalidSnapshot)
	}
	if doc.Version != SnapshotVersion {
		return nil, fmt.Errorf("%w: version %d, want %d", ErrInvalidSnapshot, doc.Version, SnapshotVersion)
	}
	st := doc.State
	s := newFSMState()
	if len(st.Members) > MaxMembers {
		return nil, fmt.Errorf("%w: %d members, limit %d", ErrInvalidSnapshot, len(st.Members), MaxMembers)
	}
	for _, m := range st.Members {
		if err := (JoinMember{Name: m.Name, Addr: m.Addr, Meta: m.Meta}).validate(); err != nil {
			return nil, restoreErr(err)
		}
		if !m.State.valid() {
			return nil, fmt.Errorf("%w: member %q: state %q", ErrInvalidSnapshot, m.Name, truncate(string(m.State), 20))
		}
		if _, dup := s.members[m.Name]; dup {
			return nil, fmt.Errorf("%w: member %q listed twice", ErrInvalidSnapshot, m.Name)
		}
		if len(m.Meta) == 0 {
			m.Meta = nil
		}
		s.members[m.Name] = m
	}
	if e := st.Epoch; e.ID != 0 || len(e.Members) != 0 || e.StartStep != 0 {
		c := CommitEpoch(e)
		if err := c.validate(); err != nil {
			return nil, restoreErr(err)
		}
		for _, name := range e.Members {
			if _, ok := s.members[name]; !ok {
				return nil, fmt.Errorf("%w: epoch %d names unknown member %q", ErrInvalidSnapshot, e.ID, name)
			}
		}
		s.epoch = e.Clone()
	}
	if len(st.Settings) > MaxSettings {
		return nil, fmt.Errorf("%w: %d settings, limit %d", ErrInvalidSnapshot, len(st.Settings), MaxSettings)
	}
	for _, k := range slices.Sorted(maps.Keys(st.Settings)) {
		if err := (SetSetting{Key: k, Value: st.Settings[k]}).validate(); err != nil {
			return nil, restoreErr(err)
		}
		s.settings[k] = st.Settings[k]
	}
	if len(st.Datasets) > MaxDatasets {
		return nil, fmt.Errorf("%w: %d datasets, limit %d", ErrInvalidSnapshot, len(st.Datasets), MaxDatasets)
	}
	for _, d := range st.Datasets {
		if err := d.validate(); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrInvalidSnapshot, err)
		}
		if err := (RegisterDataset{Dataset: Dataset{ID: d.ID, Name: d.Name, Manifest: d.Manifest, Source: d.Source, Local: d.Local}}).apply(s); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrInvalidSnapshot, err)
		}
		s.datasets[d.ID] = d.Clone()
	}
	if len(st.Jobs) > MaxJobs {
		return nil, fmt.Errorf("%w: %d jobs, limit %d", ErrInvalidSnapshot, len(st.Jobs), MaxJobs)
	}
	for _, j := range st.Jobs {
		if err := (SubmitJob{ID: j.ID, Spec: j.Spec, SubmittedBy: j.SubmittedBy}).validate(); err != nil {
			return nil, restoreErr(err)
		}
		if !j.State.valid() || len(j.Checkpoints) > j.Spec.keepCheckpoints() || j.Seq == 0 || j.Seq > st.JobSeq {
			return nil, fmt.Errorf("%w: job %s: state %q, %d checkpoints, seq %d", ErrInvalidSnapshot, j.ID, truncate(string(j.State), 20), len(j.Checkpoints), j.Seq)
		}
		for _, cp := range j.Checkpoints {
			if err := cp.validate(); err != nil {
				return nil, fmt.Errorf("%w: job %s: %v", ErrInvalidSnapshot, j.ID, err)
			}
		}
		if err := validJobEpochs(j.Epochs); err != nil {
			return nil, fmt.Errorf("%w: job %s: %v", ErrInvalidSnapshot, j.ID, err)
		}
		if _, dup := s.jobs[j.ID]; dup {
			return nil, fmt.Errorf("%w: job %s listed twice", ErrInvalidSnapshot, j.ID)
		}
		s.jobs[j.ID] = j.Clone()
	}
	s.jobSeq = st.JobSeq
	if err := restoreRevoked(s, st.Revoked); err != nil {
		return nil, err
	}
	return s, nil
}

// restoreErr turns a command validation error into a snapshot error.
func restoreErr(err error) error {
	return fmt.Errorf("%w: %s", ErrInvalidSnapshot, strings.TrimPrefix(err.Error(), ErrInvalidCommand.Error()+": "))
}
