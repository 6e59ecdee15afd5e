package coordinator

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/braidml/braid/transport"
)

// Config tunes a Coordinator. Start from DefaultConfig (production, LAN) or
// LocalConfig (in-process clusters and tests) and change fields; Validate
// says which field is out of range.
type Config struct {
	// MaxVoters is how many servers vote in Raft (1..9). Servers beyond it
	// join as non-voters; when a voter leaves or fails, the leader promotes a
	// non-voter.
	MaxVoters int

	// Raft timing, as in raft.Config. LeaderLeaseTimeout <= HeartbeatTimeout
	// <= ElectionTimeout.
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration

	// SnapshotInterval is how often raft checks whether to snapshot, and
	// SnapshotThreshold how many new log entries make it do so.
	// TrailingLogs entries stay in the log after a snapshot (for followers
	// that lag a little). SnapshotRetain snapshots are kept on disk.
	SnapshotInterval  time.Duration
	SnapshotThreshold uint64
	TrailingLogs      uint64
	SnapshotRetain    int

	// RPCTimeout bounds each raft RPC's I/O on a stream (dial, send, wait
	// for the reply; InstallSnapshot gets it scaled by size).
	RPCTimeout time.Duration
	// MaxPool is how many idle raft streams to keep per peer.
	MaxPool int

	// ApplyTimeout bounds Apply (and the leader's own commands) when the
	// context has no earlier deadline.
	ApplyTimeout time.Duration
	// ReconcileInterval is how often the leader re-checks membership, the
	// Raft configuration and the epoch without a new report (and how soon
	// it retries after a failed attempt).
	ReconcileInterval time.Duration
}

// DefaultConfig is for real clusters on a LAN: half raft's own timing
// defaults (500 ms heartbeat and election timeouts, so a follower starts an
// election 0.5–1 s after the leader's last contact, and a 250 ms lease),
// snapshots every 8192 entries, at most 5 voters. A dead leader holds a
// job up until a new one commits the epoch without it, and on a LAN the
// leader's heartbeats (every 50 ms) arrive within a few milliseconds: the
// node's health monitor measures the gaps between them, which stay under
// 400 ms with every core of a 2-core machine training
// (scripts/bench-control-load.sh, docs/BENCHMARKS.md).
func DefaultConfig() Config {
	return Config{
		MaxVoters:          5,
		HeartbeatTimeout:   500 * time.Millisecond,
		ElectionTimeout:    500 * time.Millisecond,
		LeaderLeaseTimeout: 250 * time.Millisecond,
		CommitTimeout:      50 * time.Millisecond,
		SnapshotInterval:   2 * time.Minute,
		SnapshotThreshold:  8192,
		TrailingLogs:       10240,
		SnapshotRetain:     2,
		RPCTimeout:         10 * time.Second,
		MaxPool:            3,
		ApplyTimeout:       10 * time.Second,
		ReconcileInterval:  5 * time.Second,
	}
}

// LocalConfig derives from DefaultConfig for clusters inside one process
// (transport/memnet) and tests: timeouts of a few hundred milliseconds and
// small snapshot thresholds, so elections and snapshots happen quickly.
func LocalConfig() Config {
	c := DefaultConfig()
	c.HeartbeatTimeout = 200 * time.Millisecond
	c.ElectionTimeout = 200 * time.Millisecond
	c.LeaderLeaseTimeout = 100 * time.Millisecond
	c.CommitTimeout = 5 * time.Millisecond
	c.SnapshotInterval = 500 * time.Millisecond
	c.SnapshotThreshold = 64
	c.TrailingLogs = 32
	c.RPCTimeout = 2 * time.Second
	c.ApplyTimeout = 5 * time.Second
	c.ReconcileInterval = 250 * time.Millisecond
	return c
}

// Validate checks every field and the relations between them; the error
// wraps ErrInvalidConfig and names the field and the bound.
func (c Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...)
	}
	switch {
	case c.MaxVoters < 1 || c.MaxVoters > 9:
		return bad("MaxVoters is %d, want 1..9", c.MaxVoters)
	case c.HeartbeatTimeout < 5*time.Millisecond:
		return bad("HeartbeatTimeout is %v, want at least 5ms", c.HeartbeatTimeout)
	case c.ElectionTimeout < c.HeartbeatTimeout:
		return bad("ElectionTimeout (%v) is less than HeartbeatTimeout (%v)", c.ElectionTimeout, c.HeartbeatTimeout)
	case c.LeaderLeaseTimeout < 5*time.Millisecond:
		return bad("LeaderLeaseTimeout is %v, want at least 5ms", c.LeaderLeaseTimeout)
	case c.LeaderLeaseTimeout > c.HeartbeatTimeout:
		return bad("LeaderLeaseTimeout (%v) is more than HeartbeatTimeout (%v)", c.LeaderLeaseTimeout, c.HeartbeatTimeout)
	case c.CommitTimeout < time.Millisecond:
		return bad("CommitTimeout is %v, want at least 1ms", c.CommitTimeout)
	case c.SnapshotInterval < 5*time.Millisecond:
		return bad("SnapshotInterval is %v, want at least 5ms", c.SnapshotInterval)
	case c.SnapshotThreshold < 1:
		return bad("SnapshotThreshold is 0, want at least 1")
	case c.SnapshotRetain < 1:
		return bad("SnapshotRetain is %d, want at least 1", c.SnapshotRetain)
	case c.RPCTimeout <= 0:
		return bad("RPCTimeout is %v, want > 0", c.RPCTimeout)
	case c.MaxPool < 1:
		return bad("MaxPool is %d, want at least 1", c.MaxPool)
	case c.ApplyTimeout <= 0:
		return bad("ApplyTimeout is %v, want > 0", c.ApplyTimeout)
	case c.ReconcileInterval < time.Millisecond:
		return bad("ReconcileInterval is %v, want at least 1ms", c.ReconcileInterval)
	}
	return nil
}

// Deps are the Coordinator's collaborators.
type Deps struct {
	// Transport is this node's endpoint (required). The Coordinator
	// registers the transport.ProtoRaft listener on it and closes that
	// listener on Shutdown; the Transport itself stays its owner's.
	// Transport.Self is this server's name and Transport.Addr its address.
	Transport transport.Transport
	// DataDir holds the Raft log and stable store (raft.db) and snapshots
	// (snapshots/) (required). It is created if missing. One Coordinator
	// per directory: the store is locked while open.
	DataDir string
	// Logger receives raft's and the coordinator's logs; nil discards them.
	Logger *slog.Logger
	// StartStep, if set, returns the job step at which an epoch the leader
	// commits now should start. It is called on the leader only, from its
	// reconcile goroutine, and must not block. Nil means the new epoch
	// starts at the current epoch's StartStep. A value below the current
	// epoch's StartStep is raised to it.
	StartStep func() uint64
}

func (d Deps) validate() error {
	switch {
	case d.Transport == nil:
		return fmt.Errorf("%w: Deps.Transport is nil", ErrInvalidConfig)
	case d.DataDir == "":
		return fmt.Errorf("%w: Deps.DataDir is empty", ErrInvalidConfig)
	}
	if err := validName(string(d.Transport.Self())); err != nil {
		return fmt.Errorf("%w: Transport.Self: %v", ErrInvalidConfig, err)
	}
	if err := validAddr(d.Transport.Addr()); err != nil {
		return fmt.Errorf("%w: Transport.Addr: %v", ErrInvalidConfig, err)
	}
	return nil
}
