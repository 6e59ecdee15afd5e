package coordinator

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/hashicorp/raft"
)

// loop runs on every server; while this server is the leader it
// reconciles on every report, on gaining leadership, every
// ReconcileInterval, and when the committed state calls for another epoch.
func (c *Coordinator) loop() {
	defer close(c.loopDone)
	tick := time.NewTicker(c.cfg.ReconcileInterval)
	defer tick.Stop()
	var barrierTerm uint64
	for {
		st, changed := c.fsm.watch()
		c.observe(st)
		// The state may have moved the epoch's candidates (a job started
		// or ended) while the last reconcile ran, unseen by changed:
		// reconcile again soon.
		var stale <-chan time.Time
		if c.raft.State() == raft.Leader && epochStale(st) {
			stale = time.After(staleEpochRetry)
		}
		select {
		case <-c.stop:
			return
		case <-changed:
			// Only observe; the state changing does not call for a
			// reconcile by itself, unless it moved the epoch's candidates.
			if c.raft.State() != raft.Leader || !epochStale(c.fsm.state()) {
				continue
			}
		case <-c.raft.LeaderCh():
		case <-c.kick:
		case <-tick.C:
		case <-stale:
		}
		if c.raft.State() != raft.Leader {
			continue
		}
		// A new leader may not have applied everything its predecessor
		// committed; a barrier makes the FSM current before we read it.
		if term := c.raft.CurrentTerm(); term != barrierTerm {
			ctx, cancel := context.WithTimeout(c.stopCtx, c.cfg.ApplyTimeout)
			err := c.wait(ctx, c.raft.Barrier(c.cfg.ApplyTimeout))
			cancel()
			if err != nil {
				c.log.Debug("barrier after election failed", "error", err)
				continue
			}
			barrierTerm = term
			c.observe(c.fsm.state())
		}
		if err := c.reconcile(c.stopCtx); err != nil && c.stopCtx.Err() == nil {
			if errors.Is(err, ErrNotLeader) {
				c.log.Debug("reconcile stopped: lost leadership", "error", err)
			} else {
				c.log.Warn("reconcile failed; will retry", "error", err)
			}
		}
	}
}

// observe lets committed departures supersede older reports. When the FSM
// shows a member going from alive to left or failed (committed by this or
// an earlier leader, or by a leader leaving in Shutdown), an "alive" report
// that arrived before this server applied the departure is stale: it is
// replaced by the committed state, so that this server, should it lead,
// does not bring the member back. A report that arrived after it (a
// rejoin) wins, however late observe runs: the loop may see the departure
// only after the rejoin was reported, and must not undo the rejoin then.
func (c *Coordinator) observe(st State) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range st.Members {
		prev := c.observed[m.Name]
		c.observed[m.Name] = m.State
		if prev != MemberAlive || m.State == MemberAlive || m.Name == c.self {
			continue
		}
		r, ok := c.view[m.Name]
		if !ok || r.State != MemberAlive {
			continue
		}
		if departed := c.fsm.departedAt(m.Name); departed != 0 && c.reported[m.Name] > departed {
			continue // a rejoin reported after the departure was applied
		}
		r.State = m.State
		c.view[m.Name] = r
	}
}

// reconcile makes the committed state and the Raft configuration agree
// with the node layer's reports, in three steps: members, then the epoch,
// then Raft servers. Each step reads what the previous one committed. It
// runs on the leader only, from loop (and so never concurrently with
// itself).
func (c *Coordinator) reconcile(ctx context.Context) error {
	if err := c.reconcileMembers(ctx); err != nil {
		return err
	}
	if err := c.commitEpoch(ctx); err != nil {
		return err
	}
	return c.reconcileServers(ctx)
}

// reconcileMembers commits the difference between the reports and the
// FSM's members. Members nobody reported about are left as they are: only
// an explicit report changes a member.
func (c *Coordinator) reconcileMembers(ctx context.Context) error {
	view := c.viewCopy()
	st := c.fsm.state()
	for _, name := range slices.Sorted(maps.Keys(view)) {
		r := view[name]
		cur, known := st.Member(name)
		var cmd Command
		switch r.State {
		case MemberAlive:
			if !known || cur.State != MemberAlive || cur.Addr != r.Addr || !maps.Equal(cur.Meta, r.Meta) {
				cmd = JoinMember{Name: r.Name, Addr: r.Addr, Meta: r.Meta}
			}
		case MemberLeft:
			if known && cur.State == MemberAlive {
				cmd = LeaveMember{Name: name}
			}
		case MemberFailed:
			if known && cur.State == MemberAlive {
				cmd = FailMember{Name: name}
			}
		}
		if cmd == nil {
			continue
		}
		if err := c.propose(ctx, cmd); err != nil {
			return fmt.Errorf("%s %q: %w", cmd.Type(), name, err)
		}
		c.log.Info("committed member change", "op", cmd.Type(), "member", name)
	}
	return nil
}

// commitEpoch commits a new epoch if the epoch's candidates (the alive
// members, or with a job running those on its device: see
// State.EpochCandidates) differ from the current epoch's ring. With no
// candidate, the current epoch stays: a job whose device has no alive
// member waits.
func (c *Coordinator) commitEpoch(ctx context.Context) error {
	for attempt := 1; ; attempt++ {
		st := c.fsm.state()
		ring := nextRing(st.Epoch.Members, st.EpochCandidates())
		if len(ring) == 0 || slices.Equal(ring, st.Epoch.Members) {
			return nil
		}
		step := st.Epoch.StartStep
		if c.deps.StartStep != nil {
			step = max(step, c.deps.StartStep())
		}
		cmd := CommitEpoch{ID: st.Epoch.ID + 1, Members: ring, StartStep: step}
		err := c.propose(ctx, cmd)
		if errors.Is(err, ErrWrongDevice) && attempt < 3 {
			// A job started between reading the state and committing
			// (the leader's node layer starts jobs concurrently): read
			// the candidates again.
			continue
		}
		if err != nil {
			return fmt.Errorf("%s %d: %w", cmd.Type(), cmd.ID, err)
		}
		c.log.Info("committed epoch", "epoch", cmd.ID, "members", ring, "start_step", step)
		return nil
	}
}

// staleEpochRetry is how soon the leader reconciles again when the
// committed state calls for a new epoch that the last reconcile did not
// commit.
const staleEpochRetry = 100 * time.Millisecond

// epochStale reports whether commitEpoch would commit a new epoch on st.
func epochStale(st State) bool {
	ring := nextRing(st.Epoch.Members, st.EpochCandidates())
	return len(ring) > 0 && !slices.Equal(ring, st.Epoch.Members)
}

// reconcileServers changes the Raft configuration to match the FSM's
// members: servers of members that left or failed are removed, alive
// members are added (voters up to MaxVoters, then non-voters), non-voters
// are promoted while voters are short, and extra voters are demoted. The
// leader never removes or demotes itself. Servers the FSM does not know
// are left alone.
func (c *Coordinator) reconcileServers(ctx context.Context) error {
	servers, err := c.servers()
	if err != nil {
		return err
	}
	st := c.fsm.state()
	conf := make(map[string]raft.Server, len(servers))
	voters := 0
	for _, s := range servers {
		conf[string(s.ID)] = s
		if s.Suffrage == raft.Voter {
			voters++
		}
	}
	change := func(what, name string, f raft.IndexFuture) error {
		wctx, cancel := context.WithTimeout(ctx, c.cfg.ApplyTimeout)
		defer cancel()
		if err := c.wait(wctx, f); err != nil {
			return fmt.Errorf("raft %s %q: %w", what, name, err)
		}
		c.log.Info("changed raft configuration", "op", what, "server", name)
		return nil
	}
	timeout := c.cfg.ApplyTimeout

	// Removals first, so that the voter count below is what remains.
	for _, name := range slices.Sorted(maps.Keys(conf)) {
		m, known := st.Member(name)
		if name == c.self || !known || m.State == MemberAlive {
			continue
		}
		if err := change("remove", name, c.raft.RemoveServer(raft.ServerID(name), 0, timeout)); err != nil {
			return err
		}
		if conf[name].Suffrage == raft.Voter {
			voters--
		}
		delete(conf, name)
	}
	// Additions, and address changes of servers already in.
	for _, m := range st.Members {
		if m.State != MemberAlive || m.Name == c.self {
			continue
		}
		addr := ServerAddress(m.Name, m.Addr)
		s, in := conf[m.Name]
		switch {
		case !in && voters < c.cfg.MaxVoters:
			if err := change("add voter", m.Name, c.raft.AddVoter(raft.ServerID(m.Name), addr, 0, timeout)); err != nil {
				return err
			}
			voters++
			conf[m.Name] = raft.Server{ID: raft.ServerID(m.Name), Address: addr, Suffrage: raft.Voter}
		case !in:
			if err := change("add non-voter", m.Name, c.raft.AddNonvoter(raft.ServerID(m.Name), addr, 0, timeout)); err != nil {
				return err
			}
			conf[m.Name] = raft.Server{ID: raft.ServerID(m.Name), Address: addr, Suffrage: raft.Nonvoter}
		case s.Address != addr && s.Suffrage == raft.Voter:
			if err := change("readdress voter", m.Name, c.raft.AddVoter(raft.ServerID(m.Name), addr, 0, timeout)); err != nil {
				return err
			}
		case s.Address != addr:
			if err := change("readdress non-voter", m.Name, c.raft.AddNonvoter(raft.ServerID(m.Name), addr, 0, timeout)); err != nil {
				return err
			}
		}
	}
	// Promote alive non-voters, in name order, while voters are short.
	for _, name := range slices.Sorted(maps.Keys(conf)) {
		if voters >= c.cfg.MaxVoters {
			break
		}
		s := conf[name]
		if m, ok := st.Member(name); s.Suffrage == raft.Voter || !ok || m.State != MemberAlive {
			continue
		}
		if err := change("promote", name, c.raft.AddVoter(s.ID, s.Address, 0, timeout)); err != nil {
			return err
		}
		voters++
	}
	// Demote extra voters, last names first, never the leader.
	if voters > c.cfg.MaxVoters {
		names := slices.SortedFunc(maps.Keys(conf), func(a, b string) int { return cmp.Compare(b, a) })
		for _, name := range names {
			if voters <= c.cfg.MaxVoters {
				break
			}
			if name == c.self || conf[name].Suffrage != raft.Voter {
				continue
			}
			if err := change("demote", name, c.raft.DemoteVoter(raft.ServerID(name), 0, timeout)); err != nil {
				return err
			}
			voters--
		}
	}
	return nil
}

// RenewEpoch commits a new epoch with the same live members when the
// current epoch is still epoch: the workers' way to rebuild a ring that
// broke although nobody left (a stall, a transient network error), and to
// make everyone resynchronise on a fresh epoch ID. Members that are no
// longer alive are left out as usual, and so are, while a job runs, members
// on another device than the job's. Leader only; a stale epoch is not an
// error (someone else renewed it, membership moved on, a job started).
func (c *Coordinator) RenewEpoch(ctx context.Context, epoch uint64) error {
	st := c.fsm.state()
	if st.Epoch.ID != epoch {
		return nil
	}
	ring := nextRing(st.Epoch.Members, st.EpochCandidates())
	if len(ring) == 0 {
		if j, ok := st.RunningJob(); ok {
			return fmt.Errorf("coordinator: no alive member computes on %s, job %s's device, to renew epoch %d with", j.Spec.DeviceKind(), j.ID, epoch)
		}
		return fmt.Errorf("coordinator: no alive members to renew epoch %d with", epoch)
	}
	cmd := CommitEpoch{ID: epoch + 1, Members: ring, StartStep: st.Epoch.StartStep}
	if err := c.propose(ctx, cmd); err != nil {
		if errors.Is(err, ErrStaleEpoch) || errors.Is(err, ErrWrongDevice) {
			return nil
		}
		return fmt.Errorf("%s %d: %w", cmd.Type(), cmd.ID, err)
	}
	c.log.Info("renewed epoch", "epoch", cmd.ID, "members", ring)
	return nil
}
