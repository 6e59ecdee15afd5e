package node

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/braidml/braid/coordinator"
)

// The operator's lifecycle: removing datasets and jobs (their store
// objects then fall to the collector, gc.go), resuming a job that failed
// or was cancelled, listing the members, leaving, and removing a member
// that is gone.
//
// Authorisation: the HTTP API has one bearer token, the operator's (there
// are no lesser API roles), so every route below is an admin operation by
// construction. A force-leave is carried out by the leader; the API node
// forwards it over the control protocol, where (like opApply) it needs the
// sender to be a member of the cluster (roleMember, control_auth.go).

// ErrNotFound: the dataset, job or member named does not exist (404).
var ErrNotFound = errors.New("node: not found")

// DeleteDataset removes the dataset whose name or ID is key from the
// replicated state; its objects are collected on every node after
// Config.GCGrace. A dataset a submitted or running job trains on is
// refused with an error naming the job (coordinator.ErrInUse), and a local
// (federated) dataset is removed only through the API of the node that
// holds it.
func (n *Node) DeleteDataset(ctx context.Context, key string) (coordinator.Dataset, error) {
	st := n.coord.State()
	d, ok := st.Dataset(key)
	if !ok {
		return coordinator.Dataset{}, fmt.Errorf("%w: no dataset %q (braid data ls lists them)", ErrNotFound, key)
	}
	for _, j := range st.Jobs {
		if j.State.Final() || j.Spec.Dataset != d.ID && !slices.Contains(j.Spec.Datasets, d.ID) {
			continue
		}
		return coordinator.Dataset{}, fmt.Errorf("%w: dataset %s: job %s (%s) trains on it; cancel it first (braid job cancel %s)", coordinator.ErrInUse, d.Name, j.ID, j.State, j.ID)
	}
	if d.Local && d.Source != n.cfg.Name {
		return coordinator.Dataset{}, fmt.Errorf("%w: dataset %s is local to %s: remove it through that node's API", coordinator.ErrInUse, d.Name, d.Source)
	}
	if err := n.applyAnywhere(ctx, coordinator.DeleteDataset{ID: d.ID}); err != nil {
		return coordinator.Dataset{}, err
	}
	n.awaitApplied(ctx, func(st coordinator.State) bool { _, ok := st.Dataset(d.ID); return !ok })
	return d, nil
}

// DeleteJob removes job id and its checkpoint records from the replicated
// state; its checkpoints' objects (and its base model's, when no other job
// names them) are collected on every node after Config.GCGrace. A running
// job is refused unless force is set: cancel it first.
func (n *Node) DeleteJob(ctx context.Context, id string, force bool) (coordinator.Job, error) {
	j, ok := n.coord.State().Job(id)
	if !ok {
		return coordinator.Job{}, fmt.Errorf("%w: no job %q (braid job ls lists them)", ErrNotFound, id)
	}
	if j.State == coordinator.JobRunning && !force {
		return coordinator.Job{}, fmt.Errorf("%w: job %s is running: cancel it first (braid job cancel %s), or remove it with --force", coordinator.ErrInUse, id, id)
	}
	if err := n.applyAnywhere(ctx, coordinator.DeleteJob{ID: id, Force: force}); err != nil {
		return coordinator.Job{}, err
	}
	n.awaitApplied(ctx, func(st coordinator.State) bool { _, ok := st.Job(id); return !ok })
	return j, nil
}

// ResumeJob moves a failed or cancelled job back to submitted under the
// same ID: when it starts again every worker restores the job's last
// checkpoint and goes on from its step (a job without one starts over).
// It returns the job as resumed.
func (n *Node) ResumeJob(ctx context.Context, id string) (coordinator.Job, error) {
	j, ok := n.coord.State().Job(id)
	if !ok {
		return coordinator.Job{}, fmt.Errorf("%w: no job %q (braid job ls lists them)", ErrNotFound, id)
	}
	if j.State != coordinator.JobFailed && j.State != coordinator.JobCancelled {
		return coordinator.Job{}, fmt.Errorf("%w: job %s is %s: only a failed or cancelled job is resumed", coordinator.ErrJobFinal, id, j.State)
	}
	if err := n.applyAnywhere(ctx, coordinator.ResumeJob{ID: id}); err != nil {
		return coordinator.Job{}, err
	}
	n.awaitApplied(ctx, func(st coordinator.State) bool { j, ok := st.Job(id); return ok && !j.State.Final() })
	n.kickJobs()
	j.State, j.Error = coordinator.JobSubmitted, ""
	return j, nil
}

// awaitApplied waits, briefly, until this node's copy of the state shows
// a change the leader committed, so that a client reading this node next
// sees it (read your writes).
func (n *Node) awaitApplied(ctx context.Context, cond func(coordinator.State) bool) {
	wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	n.awaitState(wctx, cond)
}

// MemberInfo is one member as `braid members` lists it.
type MemberInfo struct {
	Name string `json:"name"`
	// Addr is the member's gossip address (its transport address when
	// gossip no longer knows it).
	Addr string `json:"addr"`
	// State is alive, suspect (this node's gossip suspected it in the last
	// suspectFor and has not heard it since), dead or left.
	State string `json:"state"`
	// Role is leader, voter or nonvoter in the Raft configuration, or
	// none (a member that is not a Raft server).
	Role string `json:"role"`
	// LastSeen is when this node last had word of the member alive (an
	// event of gossip); zero for alive members (now) and for members this
	// node only knows from the replicated state.
	LastSeen time.Time `json:"last_seen,omitzero"`
}

// suspectFor is how long after this node's gossip suspected a member it
// is listed as suspect (a suspicion lasts about two probe intervals before
// the member is declared dead or refutes it).
const suspectFor = 5 * time.Second

// Members lists the members as this node sees them: those gossip knows
// (alive, and departed ones until DefaultReapAfter), then the ones only the
// replicated state still holds, sorted by name.
func (n *Node) Members() []MemberInfo {
	cs := n.coord.Status()
	role := map[string]string{}
	for _, s := range cs.Servers {
		role[s.Name] = "nonvoter"
		if s.Voter {
			role[s.Name] = "voter"
		}
	}
	if cs.Leader != "" {
		role[cs.Leader] = "leader"
	}
	st := n.coord.State()
	var out []MemberInfo
	seen := map[string]bool{}
	for _, m := range n.ml.Members() {
		if _, known := st.Member(m.Name); m.State != "alive" && !known {
			continue // forgotten by the cluster (force-leave, reaped)
		}
		mi := MemberInfo{Name: m.Name, Addr: m.GossipAddr, State: m.State, Role: or2(role[m.Name], "none")}
		if m.State == "alive" {
			if at, ok := n.failures.suspectedAt(m.Name); ok && time.Since(at) < suspectFor { // the clock failures.note uses
				mi.State = "suspect"
			}
		} else {
			mi.LastSeen = n.ml.departedAt(m.Name)
		}
		seen[m.Name] = true
		out = append(out, mi)
	}
	for _, m := range st.Members {
		if seen[m.Name] {
			continue
		}
		state := map[coordinator.MemberState]string{coordinator.MemberAlive: "alive", coordinator.MemberLeft: "left", coordinator.MemberFailed: "dead"}[m.State]
		out = append(out, MemberInfo{Name: m.Name, Addr: m.Addr, State: state, Role: or2(role[m.Name], "none")})
	}
	slices.SortFunc(out, func(a, b MemberInfo) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	return out
}

// suspectedAt is when this node's gossip last began to suspect member
// name, if it has since it last saw the member join.
func (f *memberFailures) suspectedAt(name string) (time.Time, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	at, ok := f.suspected[name]
	return at, ok
}

func or2(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// Leave makes this node leave the cluster gracefully, as on SIGTERM
// (Shutdown: a leader hands leadership over, the node leaves the Raft
// configuration and gossip), in the background; Stopped is closed once it
// has.
func (n *Node) Leave() {
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := n.Shutdown(ctx); err != nil {
			n.log.Warn("leaving the cluster", "err", err)
		}
	}()
}

// Stopped is closed when the node has stopped (Shutdown, Leave, a GPU
// fault): the process that runs it should then exit.
func (n *Node) Stopped() <-chan struct{} { return n.stop }

// forceLeaveRequest asks the leader to remove a member that is gone.
type forceLeaveRequest struct {
	Name  string `json:"name"`
	Force bool   `json:"force,omitempty"`
}

// forceLeaveWait bounds how long the leader waits for a member it removes
// to leave the epoch and the Raft configuration.
const forceLeaveWait = 30 * time.Second

// ForceLeave removes member name from the cluster: from the Raft
// configuration, the epoch and the member list, so that it is no longer
// listed. A member gossip sees alive is refused unless force is set (it
// should leave itself: braid leave on it), and force is honoured only on
// the leader (its own API): a forwarded force-leave never removes a member
// the leader sees alive, since any member may send one. A member forced
// out while still running joins again at its next gossip update, so stop
// it first. This node itself is refused (braid leave). The leader carries
// it out (this node forwards it).
func (n *Node) ForceLeave(ctx context.Context, name string, force bool) error {
	if name == n.cfg.Name {
		return fmt.Errorf("%w: %s is this node: to take it out, run braid leave against it", coordinator.ErrInUse, name)
	}
	alive, known := n.gossipAlive(name), false
	for _, m := range n.ml.Members() {
		if m.Name == name {
			known = true
		}
	}
	if _, ok := n.coord.State().Member(name); ok {
		known = true
	}
	if !known {
		return fmt.Errorf("%w: no member %q (braid members lists them)", ErrNotFound, name)
	}
	if alive && !force {
		return fmt.Errorf("%w: %s is alive: run braid leave against it, or pass --force (a running node forced out joins again)", coordinator.ErrInUse, name)
	}
	req := forceLeaveRequest{Name: name, Force: force}
	ctx, cancel := context.WithTimeout(ctx, forceLeaveWait+5*time.Second)
	defer cancel()
	if n.coord.IsLeader() {
		return n.forceLeaveAsLeader(ctx, req)
	}
	leader, addr := n.coord.Leader()
	if leader == "" {
		return fmt.Errorf("node: force-leave %s: no leader known; try again once one is elected", name)
	}
	if leader == name {
		return fmt.Errorf("node: force-leave %s: it is still the leader; wait for a new leader to be elected", name)
	}
	if alive {
		return fmt.Errorf("%w: %s is alive: --force removes a live member only through the leader's own API (the leader is %s), or run braid leave against it", coordinator.ErrInUse, name, leader)
	}
	_, err := n.callControl(ctx, leader, addr, controlRequest{Op: opForceLeave, ForceLeave: &req})
	if err == nil {
		n.ml.forget(name)
	}
	return err
}

// forceLeaveAsLeader reports the member gone to the coordinator (which
// commits its leave, an epoch without it and its removal from the Raft
// configuration), waits for all three, then forgets it.
func (n *Node) forceLeaveAsLeader(ctx context.Context, req forceLeaveRequest) error {
	if m, ok := n.coord.State().Member(req.Name); ok && m.State == coordinator.MemberAlive {
		n.coord.MemberLeft(req.Name)
	}
	wctx, cancel := context.WithTimeout(ctx, forceLeaveWait)
	defer cancel()
	gone := func() bool {
		st := n.coord.State()
		if m, ok := st.Member(req.Name); ok && (m.State == coordinator.MemberAlive || st.Epoch.Has(req.Name)) {
			return false
		}
		return !slices.ContainsFunc(n.coord.Status().Servers, func(s coordinator.ServerStatus) bool { return s.Name == req.Name })
	}
	for !gone() {
		t := time.NewTimer(50 * time.Millisecond)
		select {
		case <-wctx.Done():
			t.Stop()
			return fmt.Errorf("node: force-leave %s: still in the epoch or the raft configuration after %v: %w", req.Name, forceLeaveWait, wctx.Err())
		case <-t.C:
		}
	}
	if err := n.coord.Apply(ctx, coordinator.RemoveMember{Name: req.Name}); err != nil {
		return err
	}
	n.ml.forget(req.Name)
	n.log.Info("member removed by force-leave", "member", req.Name, "force", req.Force)
	return nil
}

func checkForceLeave(req controlRequest) error {
	if req.ForceLeave == nil || req.ForceLeave.Name == "" {
		return errors.New("node: control request force-leave without a member")
	}
	return nil
}

func (n *Node) serveForceLeave(ctx context.Context, req controlRequest, _ *controlResponse) error {
	if !n.coord.IsLeader() {
		return fmt.Errorf("%w: force-leave goes to the leader", coordinator.ErrNotLeader)
	}
	if req.ForceLeave.Name == n.cfg.Name {
		return fmt.Errorf("%w: %s is the leader: it leaves with braid leave", coordinator.ErrInUse, req.ForceLeave.Name)
	}
	// Whatever the request's Force says: a member may send this operation,
	// and members of other units must not be able to remove a live one. A
	// live member is forced out only through the leader's own API.
	if n.gossipAlive(req.ForceLeave.Name) {
		n.controlRefused.Add(1)
		return fmt.Errorf("%w: refused force-leave of %s from %s: %s is alive to the leader; a forwarded force-leave never removes a live member (run braid leave against it, or braid members force-leave --force against the leader's own API)", coordinator.ErrInUse, req.ForceLeave.Name, req.Peer, req.ForceLeave.Name)
	}
	return n.forceLeaveAsLeader(ctx, *req.ForceLeave)
}

// DefaultReapAfter is how long a member that failed or left stays listed
// (Config.ReapAfter when 0): gossip forgets it then, and the leader removes
// it from the replicated state (once it is out of the epoch and the Raft
// configuration), so that it no longer counts against
// coordinator.MaxMembers. A member that comes back later joins as new.
const DefaultReapAfter = 72 * time.Hour

// memberReaper is ReapMembers' bookkeeping.
type memberReaper struct {
	mu        sync.Mutex
	goneSince map[string]time.Time // when this node first saw each member gone in the state
}

func (n *Node) reapAfter() time.Duration {
	if n.cfg.ReapAfter > 0 {
		return n.cfg.ReapAfter
	}
	return DefaultReapAfter
}

// ReapMembers forgets the members that have been gone (failed or left in
// the replicated state) for longer than reapAfter, as this node measured
// it: gossip's entry everywhere, and on the leader the state's. A member
// is reaped only once it is out of the epoch and the Raft configuration.
// The node runs it every Config.GCInterval; the clock is Deps.Now's.
func (n *Node) ReapMembers(ctx context.Context) {
	st := n.coord.State()
	now := n.now()
	n.reaper.mu.Lock()
	defer n.reaper.mu.Unlock()
	if n.reaper.goneSince == nil {
		n.reaper.goneSince = map[string]time.Time{}
	}
	// Gossip's entries of departed nodes the state no longer holds (removed
	// by the leader, or never admitted) are of no use.
	for _, m := range n.ml.Members() {
		if _, ok := st.Member(m.Name); !ok && m.State != "alive" {
			n.ml.forget(m.Name)
		}
	}
	gone := map[string]bool{}
	for _, m := range st.Members {
		if m.State == coordinator.MemberAlive {
			continue
		}
		gone[m.Name] = true
		if _, ok := n.reaper.goneSince[m.Name]; !ok {
			n.reaper.goneSince[m.Name] = now
		}
	}
	servers := n.coord.Status().Servers
	for name, since := range n.reaper.goneSince {
		if !gone[name] {
			delete(n.reaper.goneSince, name) // back, or removed
			continue
		}
		if now.Sub(since) < n.reapAfter() || st.Epoch.Has(name) ||
			slices.ContainsFunc(servers, func(s coordinator.ServerStatus) bool { return s.Name == name }) {
			continue
		}
		n.ml.forget(name)
		if n.coord.IsLeader() {
			if err := n.coord.Apply(ctx, coordinator.RemoveMember{Name: name}); err != nil {
				n.log.Warn("cannot remove a departed member", "member", name, "err", err)
				continue
			}
			n.log.Info("removed a member gone longer than the reap timeout", "member", name, "gone_since", since, "reap_after", n.reapAfter())
		}
	}
}

// lifecycleRoutes serves the lifecycle endpoints of the HTTP API:
//
//	DELETE /v1/datasets/{name}           remove a dataset → the dataset removed
//	DELETE /v1/jobs/{id}[?force=1]       remove a job → the job removed
//	POST   /v1/jobs/{id}/resume          resume a failed or cancelled job → the job
//	GET    /v1/members                   []MemberInfo
//	POST   /v1/leave                     this node leaves (it stops after answering)
//	POST   /v1/members/{name}/force-leave[?force=1]  remove a member that is gone
//
// Unknown names are 404, what is in use or in the wrong state 409.
func (n *Node) lifecycleRoutes(mux *http.ServeMux) {
	mux.HandleFunc("DELETE /v1/datasets/{name}", func(w http.ResponseWriter, r *http.Request) {
		d, err := n.DeleteDataset(r.Context(), r.PathValue("name"))
		writeResult(w, d, err)
	})
	mux.HandleFunc("DELETE /v1/jobs/{id}", func(w http.ResponseWriter, r *http.Request) {
		j, err := n.DeleteJob(r.Context(), r.PathValue("id"), r.URL.Query().Get("force") == "1")
		writeResult(w, j, err)
	})
	mux.HandleFunc("POST /v1/jobs/{id}/resume", func(w http.ResponseWriter, r *http.Request) {
		if _, ok := n.awaitJob(r.Context(), r.PathValue("id")); !ok {
			writeResult(w, nil, fmt.Errorf("%w: no job %q", ErrNotFound, r.PathValue("id")))
			return
		}
		j, err := n.ResumeJob(r.Context(), r.PathValue("id"))
		writeResult(w, j, err)
	})
	mux.HandleFunc("GET /v1/members", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, n.Members())
	})
	mux.HandleFunc("POST /v1/leave", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"node": n.cfg.Name, "state": "leaving"})
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		n.Leave()
	})
	mux.HandleFunc("POST /v1/members/{name}/force-leave", func(w http.ResponseWriter, r *http.Request) {
		err := n.ForceLeave(r.Context(), r.PathValue("name"), r.URL.Query().Get("force") == "1")
		writeResult(w, map[string]string{"removed": r.PathValue("name")}, err)
	})
}

// writeResult answers v, or err with the status its kind calls for.
func writeResult(w http.ResponseWriter, v any, err error) {
	switch {
	case err == nil:
		writeJSON(w, http.StatusOK, v)
	case errors.Is(err, ErrNotFound), errors.Is(err, coordinator.ErrUnknownJob), errors.Is(err, coordinator.ErrUnknownDataset):
		http.Error(w, "braid: "+err.Error(), http.StatusNotFound)
	case errors.Is(err, coordinator.ErrInUse), errors.Is(err, coordinator.ErrJobFinal):
		http.Error(w, "braid: "+err.Error(), http.StatusConflict)
	default:
		http.Error(w, "braid: "+err.Error(), http.StatusServiceUnavailable)
	}
}
