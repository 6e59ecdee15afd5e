package coordinator

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// Coordinator is one server of the Raft cluster: it replicates the FSM,
// and while it is the leader it turns the node layer's membership reports
// into committed members, epochs and Raft configuration changes. All
// methods are safe for concurrent use.
type Coordinator struct {
	cfg  Config
	deps Deps
	log  *slog.Logger
	self string // this server's name (Transport.Self)
	addr string // this server's transport address

	fsm   *fsm
	store *boltStore
	snaps *raft.FileSnapshotStore
	layer *StreamLayer
	raft  *raft.Raft
	// started is raft once NewRaft has returned: the stream layer accepts
	// streams before that and reads it from its own goroutines.
	started atomic.Pointer[raft.Raft]

	mu       sync.Mutex
	view     map[string]Member // the node layer's latest report per member
	reported map[string]uint64 // when (in eventSeq) each report in view arrived
	closing  bool

	// observed is each member's state in the FSM as the loop last saw it
	// (written by the loop only).
	observed map[string]MemberState

	kick     chan struct{} // buffered 1: wakes the reconcile loop
	stop     chan struct{} // closed to stop the reconcile loop
	stopCtx  context.Context
	stopWork context.CancelFunc // ends the loop's waits
	loopDone chan struct{}      // closed when the loop has returned
	done     chan struct{}      // closed when everything is released
}

// Server names a Raft server for Bootstrap: its name (transport.PeerID)
// and transport address.
type Server struct {
	Name string
	Addr string
}

// New opens (or creates) the Raft state in deps.DataDir, registers the
// transport.ProtoRaft listener on deps.Transport and starts Raft. A server
// with state rejoins its cluster; one without waits, taking part in
// nothing, until Bootstrap or until a leader adds it. Shutdown or Close
// releases everything New started.
func New(cfg Config, deps Deps) (*Coordinator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := deps.validate(); err != nil {
		return nil, err
	}
	logger := deps.Logger
	if logger == nil {
		logger = discardLogger
	}
	c := &Coordinator{
		cfg:      cfg,
		deps:     deps,
		log:      logger.With("component", "coordinator"),
		self:     string(deps.Transport.Self()),
		addr:     deps.Transport.Addr(),
		fsm:      newFSM(),
		view:     map[string]Member{},
		observed: map[string]MemberState{},
		reported: map[string]uint64{},
		kick:     make(chan struct{}, 1),
		stop:     make(chan struct{}),
		loopDone: make(chan struct{}),
		done:     make(chan struct{}),
	}
	c.stopCtx, c.stopWork = context.WithCancel(context.Background())
	c.view[c.self] = Member{Name: c.self, Addr: c.addr, State: MemberAlive}

	fail := func(err error) (*Coordinator, error) {
		c.stopWork()
		if c.layer != nil {
			_ = c.layer.Close()
		}
		if c.store != nil {
			_ = c.store.Close()
		}
		return nil, err
	}
	if err := os.MkdirAll(deps.DataDir, 0o700); err != nil {
		return fail(fmt.Errorf("coordinator: data dir: %w", err))
	}
	hlog := newSlogHclog(logger, "raft")
	var err error
	if c.store, err = openBoltStore(filepath.Join(deps.DataDir, storeFile), false, time.Second); err != nil {
		return fail(err)
	}
	if c.snaps, err = raft.NewFileSnapshotStoreWithLogger(deps.DataDir, cfg.SnapshotRetain, hlog.Named("snapshots")); err != nil {
		return fail(fmt.Errorf("coordinator: snapshot store: %w", err))
	}
	if c.layer, err = NewStreamLayer(deps.Transport, c.raftPeer, c.log); err != nil {
		return fail(err)
	}
	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  c.layer,
		MaxPool: cfg.MaxPool,
		Timeout: cfg.RPCTimeout,
		Logger:  hlog.Named("transport"),
	})
	logs, err := raft.NewLogCache(512, c.store)
	if err != nil {
		_ = trans.Close()
		return fail(fmt.Errorf("coordinator: log cache: %w", err))
	}
	rc := c.raftConfig(hlog)
	if err := raft.ValidateConfig(rc); err != nil {
		_ = trans.Close()
		return fail(fmt.Errorf("%w: %v", ErrInvalidConfig, err))
	}
	if c.raft, err = raft.NewRaft(rc, c.fsm, logs, c.store, c.snaps, trans); err != nil {
		_ = trans.Close()
		return fail(fmt.Errorf("coordinator: start raft: %w", err))
	}
	c.started.Store(c.raft)
	go c.loop()
	return c, nil
}

func (c *Coordinator) raftConfig(hlog *slogHclog) *raft.Config {
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(c.self)
	rc.HeartbeatTimeout = c.cfg.HeartbeatTimeout
	rc.ElectionTimeout = c.cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = c.cfg.LeaderLeaseTimeout
	rc.CommitTimeout = c.cfg.CommitTimeout
	rc.SnapshotInterval = c.cfg.SnapshotInterval
	rc.SnapshotThreshold = c.cfg.SnapshotThreshold
	rc.TrailingLogs = c.cfg.TrailingLogs
	// A server the leader removed (say, one gossip declared dead across a
	// partition) keeps running so that it can be added back.
	rc.ShutdownOnRemove = false
	rc.NoLegacyTelemetry = true
	rc.Logger = hlog
	return rc
}

// Name is this server's name (its transport.PeerID).
func (c *Coordinator) Name() string { return c.self }

// HasState reports whether this server has Raft state (a term, a log entry
// or a snapshot). See the package function HasState for use before New.
func (c *Coordinator) HasState() (bool, error) {
	return raft.HasExistingState(c.store, c.store, c.snaps)
}

// Bootstrap starts a new cluster whose servers are servers, per
// bootstrap-expect: the node layer calls it on each of the expected servers,
// with the same list, once gossip shows all of them and none has Raft state.
// The list must include this server. Servers are sorted by name; the first
// Config.MaxVoters vote, the rest join as non-voters. The servers also count
// as alive members until the node layer reports otherwise, so the first
// leader commits them and the first epoch.
//
// It returns ErrHasState (wrapped) if this server already has Raft state:
// then it is part of a cluster already and must not bootstrap.
func (c *Coordinator) Bootstrap(servers []Server) error {
	if c.isClosing() {
		return ErrClosed
	}
	if len(servers) == 0 {
		return fmt.Errorf("%w: no servers", ErrInvalidServers)
	}
	sorted := slices.SortedFunc(slices.Values(servers), func(a, b Server) int { return cmp.Compare(a.Name, b.Name) })
	var conf raft.Configuration
	hasSelf := false
	for i, s := range sorted {
		if err := validName(s.Name); err != nil {
			return fmt.Errorf("%w: server %d: %v", ErrInvalidServers, i, err)
		}
		if err := validAddr(s.Addr); err != nil {
			return fmt.Errorf("%w: server %q: %v", ErrInvalidServers, s.Name, err)
		}
		if i > 0 && sorted[i-1].Name == s.Name {
			return fmt.Errorf("%w: server %q listed twice", ErrInvalidServers, s.Name)
		}
		hasSelf = hasSelf || s.Name == c.self
		suffrage := raft.Voter
		if i >= c.cfg.MaxVoters {
			suffrage = raft.Nonvoter
		}
		conf.Servers = append(conf.Servers, raft.Server{
			Suffrage: suffrage,
			ID:       raft.ServerID(s.Name),
			Address:  ServerAddress(s.Name, s.Addr),
		})
	}
	if !hasSelf {
		return fmt.Errorf("%w: %q is not in the list", ErrInvalidServers, c.self)
	}
	has, err := c.HasState()
	if err != nil {
		return fmt.Errorf("coordinator: bootstrap: %w", err)
	}
	if has {
		return ErrHasState
	}
	if err := c.raft.BootstrapCluster(conf).Error(); err != nil {
		if errors.Is(err, raft.ErrCantBootstrap) {
			return fmt.Errorf("%w: %v", ErrHasState, err)
		}
		return fmt.Errorf("coordinator: bootstrap: %w", err)
	}
	c.mu.Lock()
	for _, s := range sorted {
		if _, ok := c.view[s.Name]; !ok {
			c.view[s.Name] = Member{Name: s.Name, Addr: s.Addr, State: MemberAlive}
		}
	}
	c.mu.Unlock()
	c.poke()
	return nil
}

// MemberJoined reports that gossip sees member m alive (m.State is
// ignored). Call it on every server, for every member including this one,
// whenever gossip reports a join or a metadata update. It does not block:
// the leader commits the member, adds it to Raft (as a voter while there
// are fewer than MaxVoters) and commits a new epoch with it, in the
// background. A later report about the same member replaces this one. It
// returns an error wrapping ErrInvalidCommand, and records nothing, if m's
// name, address or metadata break the bounds of JoinMember.
func (c *Coordinator) MemberJoined(m Member) error {
	if err := (JoinMember{Name: m.Name, Addr: m.Addr, Meta: m.Meta}).validate(); err != nil {
		return err
	}
	m = m.Clone()
	m.State = MemberAlive
	if len(m.Meta) == 0 {
		m.Meta = nil
	}
	c.report(m)
	return nil
}

// MemberLeft reports that member name left gracefully; MemberFailed that
// gossip declared it dead. Call them on every server. They do not block:
// the leader marks the member, commits a new epoch without it and removes
// it from Raft (promoting a non-voter if a voter went). Reports about this
// server itself are ignored: its leaving is Shutdown's business.
func (c *Coordinator) MemberLeft(name string) { c.reportGone(name, MemberLeft) }

// MemberFailed: see MemberLeft.
func (c *Coordinator) MemberFailed(name string) { c.reportGone(name, MemberFailed) }

func (c *Coordinator) reportGone(name string, st MemberState) {
	if name == c.self || validName(name) != nil {
		return
	}
	c.mu.Lock()
	m := c.view[name]
	m.Name, m.State = name, st
	c.view[name] = m
	c.reported[name] = eventSeq.Add(1)
	c.mu.Unlock()
	c.poke()
}

func (c *Coordinator) report(m Member) {
	c.mu.Lock()
	c.view[m.Name] = m
	c.reported[m.Name] = eventSeq.Add(1)
	c.mu.Unlock()
	c.poke()
}

func (c *Coordinator) poke() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// Apply commits cmd through Raft and returns the FSM's verdict: nil once it
// is committed and applied on this server, or the error the FSM returned
// for it (ErrStaleEpoch, ErrUnknownMember, ...). It does not forward: on a
// follower it returns a *NotLeaderError naming the leader, and the caller
// retries there. An invalid command fails before anything is proposed.
// When ctx ends first Apply returns ctx.Err(), and the command may or may
// not commit later; likewise when leadership is lost while it waits.
func (c *Coordinator) Apply(ctx context.Context, cmd Command) error {
	if c.isClosing() {
		return ErrClosed
	}
	b, err := EncodeCommand(cmd)
	if err != nil {
		return err
	}
	return c.applyBytes(ctx, b)
}

func (c *Coordinator) applyBytes(ctx context.Context, b []byte) error {
	if c.raft.State() != raft.Leader {
		return c.notLeader()
	}
	timeout := c.cfg.ApplyTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(dl))
	}
	f := c.raft.Apply(b, timeout)
	if err := c.wait(ctx, f); err != nil {
		return err
	}
	if err, ok := f.Response().(error); ok && err != nil {
		return err
	}
	return nil
}

// wait waits for f or ctx and maps raft's errors to this package's.
func (c *Coordinator) wait(ctx context.Context, f raft.Future) error {
	ch := make(chan error, 1)
	go func() { ch <- f.Error() }()
	var err error
	select {
	case err = <-ch:
	case <-ctx.Done():
		return ctx.Err()
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrNotLeader):
		return c.notLeader()
	case errors.Is(err, raft.ErrLeadershipTransferInProgress):
		// Nothing was applied, and the leader is about to change: callers
		// wait for the next one as for an election.
		return &NotLeaderError{}
	case errors.Is(err, raft.ErrRaftShutdown):
		return ErrClosed
	}
	return fmt.Errorf("coordinator: %w", err)
}

func (c *Coordinator) notLeader() error {
	name, addr := c.Leader()
	if name == c.self {
		// Raft still reports us while stepping down.
		name, addr = "", ""
	}
	return &NotLeaderError{Leader: name, Addr: addr}
}

// Leader returns the leader's name and transport address as this server
// knows them, or "", "" when it knows of none.
func (c *Coordinator) Leader() (name, addr string) {
	a, id := c.raft.LeaderWithID()
	if id == "" {
		return "", ""
	}
	_, addr, err := ParseServerAddress(a)
	if err != nil {
		return string(id), ""
	}
	return string(id), addr
}

// IsLeader reports whether this server is the leader now.
func (c *Coordinator) IsLeader() bool { return c.raft.State() == raft.Leader }

// State returns a copy of the replicated state as this server has applied
// it (a follower may lag the leader by a few entries).
func (c *Coordinator) State() State { return c.fsm.state() }

// CurrentState returns a copy of the state that holds every command
// committed before CurrentState was called, give or take what the leader
// committed in the last HeartbeatTimeout; otherwise it returns
// ErrStateNotCurrent (wrapped with the reason) and no state. It is for
// callers that act on what the state does not name (deleting objects
// nobody references): a server that is partitioned, restarting, or
// catching up must not take its old state for the cluster's.
//
// On the leader it commits a barrier (bounded by ctx and ApplyTimeout),
// which also proves it still leads. On a follower it asks for a leader
// known to this server, a message from it within HeartbeatTimeout (the
// leader sends its commit index at least that often), and every entry
// known to be committed handed to the FSM and applied; entries the leader
// committed since its last message are not seen.
func (c *Coordinator) CurrentState(ctx context.Context) (State, error) {
	if c.IsLeader() {
		timeout := c.cfg.ApplyTimeout
		if d, ok := ctx.Deadline(); ok {
			timeout = min(timeout, time.Until(d))
		}
		if err := c.raft.Barrier(timeout).Error(); err != nil {
			return State{}, fmt.Errorf("%w: barrier: %v", ErrStateNotCurrent, err)
		}
		return c.fsm.state(), nil
	}
	if leader, _ := c.Leader(); leader == "" {
		return State{}, fmt.Errorf("%w: no leader known", ErrStateNotCurrent)
	}
	if since := time.Since(c.raft.LastContact()); since > c.cfg.HeartbeatTimeout {
		return State{}, fmt.Errorf("%w: last heard from the leader %v ago", ErrStateNotCurrent, since.Round(time.Millisecond))
	}
	commit := c.raft.CommitIndex()
	// AppliedIndex counts entries handed to the FSM; fsm_pending those
	// handed and not yet taken. Reading the state after both say "all"
	// leaves at most the batch the FSM is applying this instant.
	if applied := c.raft.AppliedIndex(); applied < commit {
		return State{}, fmt.Errorf("%w: applied %d of %d committed entries", ErrStateNotCurrent, applied, commit)
	}
	if p := c.raft.Stats()["fsm_pending"]; p != "0" {
		return State{}, fmt.Errorf("%w: %s batches of entries not yet applied", ErrStateNotCurrent, p)
	}
	return c.fsm.state(), nil
}

// Member returns the committed member called name, without copying the
// rest of the state (State does): for lookups on every request.
func (c *Coordinator) Member(name string) (Member, bool) {
	m, ok := c.fsm.member(name)
	m.Meta = maps.Clone(m.Meta)
	return m, ok
}

// Watch returns a copy of the state and a channel that is closed when it
// next changes: read the state, act, wait on the channel, repeat.
func (c *Coordinator) Watch() (State, <-chan struct{}) { return c.fsm.watch() }

// Wait blocks until pred holds for the applied state and returns that
// state, or returns ctx.Err() or ErrClosed. pred runs on the caller's
// goroutine and gets a copy it may keep.
func (c *Coordinator) Wait(ctx context.Context, pred func(State) bool) (State, error) {
	for {
		st, changed := c.fsm.watch()
		if pred(st) {
			return st, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return st, ctx.Err()
		case <-c.done:
			return st, ErrClosed
		}
	}
}

// WaitEpoch blocks until pred holds for the current epoch and returns it;
// see Wait.
func (c *Coordinator) WaitEpoch(ctx context.Context, pred func(Epoch) bool) (Epoch, error) {
	st, err := c.Wait(ctx, func(s State) bool { return pred(s.Epoch) })
	return st.Epoch, err
}

// Role is a server's Raft role.
type Role string

// The roles.
const (
	RoleFollower  Role = "follower"
	RoleCandidate Role = "candidate"
	RoleLeader    Role = "leader"
	RoleShutdown  Role = "shutdown"
)

// ServerStatus is one server in the Raft configuration.
type ServerStatus struct {
	Name  string
	Addr  string
	Voter bool
}

// Status is this server's local view of Raft: not replicated, for status
// pages and tests.
type Status struct {
	Name, Addr         string
	Role               Role
	Leader, LeaderAddr string // "" when no leader is known
	Term               uint64
	LastIndex          uint64
	CommitIndex        uint64
	AppliedIndex       uint64
	// Servers is the latest Raft configuration (perhaps not yet
	// committed), sorted by name; nil once shut down.
	Servers []ServerStatus
}

// LastContact is when this server last heard from the leader (zero on the
// leader, and before it first heard from one): what the node's health
// monitor samples to measure the gaps between heartbeats.
func (c *Coordinator) LastContact() time.Time { return c.raft.LastContact() }

// LeaderID is the leader this server knows of, "" when none.
func (c *Coordinator) LeaderID() string {
	_, id := c.raft.LeaderWithID()
	return string(id)
}

// Status returns this server's Raft status.
func (c *Coordinator) Status() Status {
	s := Status{
		Name:         c.self,
		Addr:         c.addr,
		Term:         c.raft.CurrentTerm(),
		LastIndex:    c.raft.LastIndex(),
		CommitIndex:  c.raft.CommitIndex(),
		AppliedIndex: c.raft.AppliedIndex(),
	}
	switch c.raft.State() {
	case raft.Leader:
		s.Role = RoleLeader
	case raft.Candidate:
		s.Role = RoleCandidate
	case raft.Shutdown:
		s.Role = RoleShutdown
	default:
		s.Role = RoleFollower
	}
	s.Leader, s.LeaderAddr = c.Leader()
	if servers, err := c.servers(); err == nil {
		for _, sv := range servers {
			_, addr, _ := ParseServerAddress(sv.Address)
			s.Servers = append(s.Servers, ServerStatus{Name: string(sv.ID), Addr: addr, Voter: sv.Suffrage == raft.Voter})
		}
		slices.SortFunc(s.Servers, func(a, b ServerStatus) int { return cmp.Compare(a.Name, b.Name) })
	}
	return s
}

func (c *Coordinator) servers() ([]raft.Server, error) {
	f := c.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, err
	}
	return f.Configuration().Servers, nil
}

// Shutdown leaves the cluster gracefully and releases everything. On the
// leader, with other voters, it first commits this server's leave and an
// epoch without it, then transfers leadership and waits (until ctx ends)
// for the new leader to remove it from the Raft configuration. A follower
// cannot commit; the node layer should leave gossip first, so that the
// leader sees MemberLeft and removes it. Then Raft stops, the raft listener
// and streams close and the store is closed. Errors of the leave are
// returned (joined with any of the close) but do not stop the close. Later
// calls return nil.
func (c *Coordinator) Shutdown(ctx context.Context) error {
	if !c.beginClose() {
		<-c.done
		return nil
	}
	c.stopLoop()
	var leaveErr error
	if c.raft.State() == raft.Leader {
		leaveErr = c.leaveAsLeader(ctx)
	}
	return errors.Join(leaveErr, c.release())
}

// Close stops this server without leaving: the cluster sees it as down
// until it restarts on the same data dir. Later calls return nil.
func (c *Coordinator) Close() error {
	if !c.beginClose() {
		<-c.done
		return nil
	}
	c.stopLoop()
	return c.release()
}

func (c *Coordinator) beginClose() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return false
	}
	c.closing = true
	return true
}

func (c *Coordinator) isClosing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closing
}

func (c *Coordinator) stopLoop() {
	close(c.stop)
	c.stopWork()
	<-c.loopDone
}

func (c *Coordinator) release() error {
	err := c.raft.Shutdown().Error() // also closes the NetworkTransport and so the StreamLayer
	err = errors.Join(err, c.layer.Close())
	// A connection handler may still be applying a heartbeat, which writes
	// the term to the store: close the store once none can (bounded: a
	// handler stuck elsewhere must not keep the node from stopping).
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	if werr := c.layer.WaitHandlers(ctx); werr != nil {
		c.log.Warn("closing the raft store with connection handlers still running", "err", werr)
	}
	cancel()
	err = errors.Join(err, c.store.Close())
	close(c.done)
	return err
}

// leaveAsLeader commits this server's leave and an epoch without it, hands
// leadership over and waits until the new leader has removed it.
func (c *Coordinator) leaveAsLeader(ctx context.Context) error {
	servers, err := c.servers()
	if err != nil {
		return fmt.Errorf("coordinator: leave: %w", err)
	}
	others := 0
	for _, s := range servers {
		if s.Suffrage == raft.Voter && string(s.ID) != c.self {
			others++
		}
	}
	if others == 0 {
		return nil // the only voter: nobody to hand over to
	}
	st := c.fsm.state()
	if m, ok := st.Member(c.self); ok && m.State == MemberAlive {
		if err := c.propose(ctx, LeaveMember{Name: c.self}); err != nil {
			return fmt.Errorf("coordinator: leave: %w", err)
		}
		if err := c.commitEpoch(ctx); err != nil {
			return fmt.Errorf("coordinator: leave: %w", err)
		}
	}
	if err := c.wait(ctx, c.raft.LeadershipTransfer()); err != nil {
		return fmt.Errorf("coordinator: leave: leadership transfer: %w", err)
	}
	// The new leader removes us once it has reconciled; poll our copy of
	// the configuration until then.
	tick := time.NewTicker(max(c.cfg.HeartbeatTimeout/4, time.Millisecond))
	defer tick.Stop()
	for {
		servers, err := c.servers()
		if err != nil {
			return fmt.Errorf("coordinator: leave: %w", err)
		}
		if !slices.ContainsFunc(servers, func(s raft.Server) bool { return string(s.ID) == c.self }) {
			return nil
		}
		// The leader stops replicating to a server as soon as it removes
		// it, so our copy may never show the removal; when we stop hearing
		// from the leader and start elections (which the others reject:
		// "not in configuration"), we have been removed all the same.
		if c.raft.State() == raft.Candidate {
			return nil
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return fmt.Errorf("coordinator: leave: not yet removed from the raft configuration: %w", ctx.Err())
		}
	}
}

// propose commits one of the leader's own commands.
func (c *Coordinator) propose(ctx context.Context, cmd Command) error {
	b, err := EncodeCommand(cmd)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.ApplyTimeout)
	defer cancel()
	return c.applyBytes(ctx, b)
}

// viewCopy returns the node layer's reports.
func (c *Coordinator) viewCopy() map[string]Member {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]Member, len(c.view))
	for k, m := range c.view {
		out[k] = m.Clone()
	}
	return out
}

// nextRing returns the ring for the alive members: prev's order for those
// still alive, then newcomers sorted by name. Keeping the order keeps ring
// neighbours (and so all-reduce links) stable across epochs.
func nextRing(prev, alive []string) []string {
	live := make(map[string]bool, len(alive))
	for _, a := range alive {
		live[a] = true
	}
	ring := make([]string, 0, len(alive))
	for _, p := range prev {
		if live[p] {
			ring = append(ring, p)
			delete(live, p)
		}
	}
	return append(ring, slices.Sorted(maps.Keys(live))...)
}
