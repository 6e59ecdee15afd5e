package coordinator

import (
	"errors"
	"fmt"
)

// Errors. Functions wrap these with %w and the field, member or value at
// fault; test with errors.Is.
var (
	// ErrInvalidConfig: a Config or Deps field is out of range.
	ErrInvalidConfig = errors.New("coordinator: invalid config")
	// ErrInvalidCommand: a command failed to decode or to validate (bad
	// version, unknown type, missing or oversized field).
	ErrInvalidCommand = errors.New("coordinator: invalid command")
	// ErrUnknownMember: a command or an epoch names a member the FSM does
	// not know.
	ErrUnknownMember = errors.New("coordinator: unknown member")
	// ErrMemberNotAlive: an epoch names a member that left or failed.
	ErrMemberNotAlive = errors.New("coordinator: member not alive")
	// ErrStaleEpoch: an epoch's ID is not the current epoch's ID + 1, or its
	// start step is before the current epoch's.
	ErrStaleEpoch = errors.New("coordinator: stale epoch")
	// ErrWrongDevice: an epoch names a member that does not compute on
	// the running job's device.
	ErrWrongDevice = errors.New("coordinator: member on another device than the job's")
	// ErrLimit: applying the command would exceed a bound on the state
	// (MaxMembers, MaxSettings).
	ErrLimit = errors.New("coordinator: state limit reached")
	// ErrUnknownDataset: a command names a dataset the FSM does not hold.
	ErrUnknownDataset = errors.New("coordinator: unknown dataset")
	// ErrConflict: a dataset's ID or name is already registered for
	// something else.
	ErrConflict = errors.New("coordinator: conflicting dataset")
	// ErrUnknownJob: a command names a job the FSM does not hold.
	ErrUnknownJob = errors.New("coordinator: unknown job")
	// ErrJobFinal: a job's state change does not apply to its current
	// state (it has ended, or it is not in one of the expected states).
	ErrJobFinal = errors.New("coordinator: job state change refused")
	// ErrInvalidSnapshot: a snapshot failed to decode or to validate.
	ErrInvalidSnapshot = errors.New("coordinator: invalid snapshot")
	// ErrNotLeader: the operation needs the leader. Returned as a
	// *NotLeaderError, which names the leader when one is known.
	ErrNotLeader = errors.New("coordinator: not leader")
	// ErrHasState: Bootstrap was called on a server that already has Raft
	// state (a log, a term or a snapshot).
	ErrHasState = errors.New("coordinator: server already has raft state")
	// ErrInvalidServers: the Bootstrap server list is empty, has duplicates
	// or invalid entries, or does not include this server.
	ErrInvalidServers = errors.New("coordinator: invalid bootstrap servers")
	// ErrInvalidAddress: a raft server address is not of the form
	// "name@addr" (see ServerAddress).
	ErrInvalidAddress = errors.New("coordinator: invalid raft server address")
	// ErrRaftPeerRefused: a peer opened a raft stream or sent a Raft RPC
	// without the right: its name is not a server of the Raft
	// configuration, or the RPC's header names another server or address.
	ErrRaftPeerRefused = errors.New("coordinator: raft peer refused")
	// ErrCorruptLog: a log entry or stable value on disk failed to decode.
	ErrCorruptLog = errors.New("coordinator: corrupt log store")
	// ErrStateNotCurrent: this server cannot tell that its copy of the
	// state holds every command committed until a moment ago (no leader
	// known, no word from it lately, or committed entries not yet applied).
	ErrStateNotCurrent = errors.New("coordinator: state not known to be current")
	// ErrClosed: the Coordinator has been shut down.
	ErrClosed = errors.New("coordinator: closed")
)

// NotLeaderError is returned by operations that need the leader when this
// server is not it. Leader and Addr name the current leader as this server
// knows it; both are empty while there is none. errors.Is(err, ErrNotLeader)
// holds.
type NotLeaderError struct {
	Leader string // the leader's name (PeerID), "" if unknown
	Addr   string // the leader's transport address, "" if unknown
}

func (e *NotLeaderError) Error() string {
	if e.Leader == "" {
		return ErrNotLeader.Error() + " (no leader known)"
	}
	return fmt.Sprintf("%s (leader is %q at %s)", ErrNotLeader, e.Leader, e.Addr)
}

// Unwrap makes errors.Is(err, ErrNotLeader) true.
func (e *NotLeaderError) Unwrap() error { return ErrNotLeader }
