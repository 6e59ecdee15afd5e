package node

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/braidml/braid/allreduce"
	"github.com/braidml/braid/coordinator"
	"github.com/braidml/braid/shard"
	"github.com/braidml/braid/train"
)

// The sync protocol: how a member enters an epoch in step with the others
// (planSync decides from the statuses every member froze, catchUp carries
// the plan out), and the objects it moves between members: reduced
// gradients and snapshots. The runner's life is in job_runner.go.

// syncStatus is a member's state when it entered an epoch.
type syncStatus struct {
	Ready   bool   `json:"ready"` // false: not in that epoch yet
	Done    int    `json:"done"`
	Reduced int    `json:"reduced"` // step of the reduced gradient kept, -1 if none
	Hash    string `json:"hash"`
	// Placement is the version of the dataset's placement this member
	// froze for the epoch (the batch split depends on it).
	Placement uint64 `json:"placement"`
}

// sync agrees with e's members on the step to start from (see jobRunner).
func (r *jobRunner) sync(ctx context.Context, e coordinator.Epoch) error {
	n := r.n
	r.mu.Lock()
	if r.dl != nil {
		// A DiLoCo round that did not finish is redone from its start.
		r.dl.Rollback()
	}
	d, _ := n.coord.State().Dataset(r.datasetID)
	r.placement = shard.Placement(d.Placement)
	me := syncStatus{Ready: true, Done: r.w.Done, Reduced: -1, Hash: r.w.WeightsHash(), Placement: d.PlacementVersion}
	if r.spec.Federated {
		me.Placement = 0 // each unit its own local dataset: no placement in the split
	}
	if step, _, ok := r.w.LastReduced(); ok && r.dl == nil {
		me.Reduced = step
	}
	r.frozen[e.ID] = me
	for k := range r.frozen {
		if k+8 < e.ID {
			delete(r.frozen, k)
		}
	}
	r.mu.Unlock()
	st := n.coord.State()
	statuses := map[string]syncStatus{n.cfg.Name: me}
	for _, name := range e.Members {
		if name == n.cfg.Name {
			continue
		}
		m, _ := st.Member(name)
		for {
			resp, err := n.callControl(ctx, name, m.Addr, controlRequest{Op: opJobSync, JobSync: &jobSyncRequest{Job: r.id, Epoch: e.ID}})
			if err == nil && resp.JobSync != nil && resp.JobSync.Ready {
				statuses[name] = *resp.JobSync
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("sync of epoch %d: waiting for %s: %w", e.ID, name, ctx.Err())
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	plan, err := planSync(n.cfg.Name, e.Members, statuses)
	if err != nil {
		return fmt.Errorf("sync of epoch %d: %w", e.ID, err)
	}
	if plan.Placement != me.Placement {
		if err := r.adoptPlacement(ctx, plan.Placement); err != nil {
			return fmt.Errorf("sync of epoch %d: %w", e.ID, err)
		}
	}
	return r.catchUp(ctx, e.ID, plan, runnerCatchUp{r})
}

// placementWait bounds how long a member waits for a placement a peer
// already saw to reach its own copy of the state.
const placementWait = 5 * time.Second

// adoptPlacement makes version the placement this member splits batches
// with: a placement committed while the members froze their statuses,
// which a peer saw and this node not yet. It waits for it to arrive; a
// placement newer still is an error (the members resync on a fresh epoch).
func (r *jobRunner) adoptPlacement(ctx context.Context, version uint64) error {
	ctx, cancel := context.WithTimeout(ctx, placementWait)
	defer cancel()
	var d coordinator.Dataset
	err := r.n.awaitState(ctx, func(st coordinator.State) bool {
		d, _ = st.Dataset(r.datasetID)
		return d.PlacementVersion >= version
	})
	if err != nil {
		return fmt.Errorf("a peer saw placement version %d of the dataset, and this node's state has not reached it: %w", version, err)
	}
	if d.PlacementVersion != version {
		return fmt.Errorf("placement version %d, which a peer saw, was replaced by %d while the members synced", version, d.PlacementVersion)
	}
	r.mu.Lock()
	r.placement = shard.Placement(d.Placement)
	r.mu.Unlock()
	return nil
}

// syncPlan is how a member enters an epoch, decided from the statuses every
// member froze for it (planSync).
type syncPlan struct {
	Target  int    // the step every member must have done
	Ref     string // the reference: the first member in ring order at Target
	RefHash string // its weights hash, which every member must end with
	InStep  bool   // this member is at Target with RefHash: nothing to do
	// GradFrom are the members, in ring order, that kept the reduced
	// gradient of step Target−1 and are in step with the reference: when
	// this member is exactly one step behind, applying that gradient
	// catches it up (a step the ring completed while it was cut off).
	GradFrom []string
	// SnapshotFrom are the members in step with the reference, the
	// reference first, whose full snapshot this member can take instead.
	SnapshotFrom []string
	// Placement is the version of the dataset's placement every member
	// splits the batches with: the newest any member saw.
	Placement uint64
}

// planSync decides how member self enters an epoch with members (in ring
// order), given every member's frozen status. Every member reads the same
// statuses, so all pick the same target step and the same reference. Being
// at the target is not enough to be in sync: a member that completed a step
// on an older ring may hold other bytes than members that redid it on a
// newer one; the weights hash decides. The members must also agree on the
// dataset's placement, which the batch split depends on: a placement
// committed while members froze their statuses leaves some at the older
// version, and all take the newest any of them saw (Placement).
func planSync(self string, members []string, statuses map[string]syncStatus) (syncPlan, error) {
	me, ok := statuses[self]
	if !ok {
		return syncPlan{}, fmt.Errorf("no status of this node (%s)", self)
	}
	for _, name := range members {
		if _, ok := statuses[name]; !ok {
			return syncPlan{}, fmt.Errorf("no status of member %s", name)
		}
	}
	var p syncPlan
	for _, name := range members {
		p.Placement = max(p.Placement, statuses[name].Placement)
	}
	for _, name := range members {
		p.Target = max(p.Target, statuses[name].Done)
	}
	for _, name := range members {
		if statuses[name].Done == p.Target {
			p.Ref = name
			break
		}
	}
	p.RefHash = statuses[p.Ref].Hash
	if me.Done == p.Target && me.Hash == p.RefHash {
		p.InStep = true
		return p, nil
	}
	inStep := func(name string) bool {
		s := statuses[name]
		return name != self && s.Done == p.Target && s.Hash == p.RefHash
	}
	if me.Done == p.Target-1 {
		for _, name := range members {
			if inStep(name) && statuses[name].Reduced == p.Target-1 {
				p.GradFrom = append(p.GradFrom, name)
			}
		}
	}
	if inStep(p.Ref) {
		p.SnapshotFrom = append(p.SnapshotFrom, p.Ref)
	}
	for _, name := range members {
		if name != p.Ref && inStep(name) {
			p.SnapshotFrom = append(p.SnapshotFrom, name)
		}
	}
	return p, nil
}

// catchUpper is what catchUp needs of a worker: its position, and the two
// ways to catch up with a peer. The job runner is one (runnerCatchUp);
// tests inject others.
type catchUpper interface {
	Done() int
	Hash() string
	Grad(ctx context.Context, peer string, step int) error // apply peer's reduced gradient of step
	Snapshot(ctx context.Context, peer string) error       // restore peer's snapshot
}

// catchUp carries out plan: the reduced gradient from the first member of
// GradFrom that gives the reference's weights, else the snapshot of the
// first member of SnapshotFrom that does. A source that fails, or leaves
// the weights anywhere but the reference's, is recorded and the next one
// tried; when none is left the error names each.
func (r *jobRunner) catchUp(ctx context.Context, epoch uint64, plan syncPlan, w catchUpper) error {
	if plan.InStep {
		return nil
	}
	var errs []error
	for _, name := range plan.GradFrom {
		if err := w.Grad(ctx, name, plan.Target-1); err != nil {
			errs = append(errs, fmt.Errorf("reduced gradient from %s: %w", name, err))
			continue
		}
		if h := w.Hash(); h != plan.RefHash {
			// Applied to other weights than the reference's: take the
			// reference's state instead.
			errs = append(errs, fmt.Errorf("the gradient from %s gave weights %s, the reference %s has %s", name, short(h), plan.Ref, short(plan.RefHash)))
			break
		}
		r.n.log.Info("caught up with the step the ring completed elsewhere", "job", r.id, "step", plan.Target-1, "from", name)
		return nil
	}
	for _, name := range plan.SnapshotFrom {
		if err := w.Snapshot(ctx, name); err != nil {
			errs = append(errs, fmt.Errorf("snapshot from %s: %w", name, err))
			continue
		}
		if w.Done() != plan.Target || w.Hash() != plan.RefHash {
			errs = append(errs, fmt.Errorf("the snapshot from %s is at step %d, want %d with weights %s", name, w.Done(), plan.Target, short(plan.RefHash)))
			continue
		}
		r.n.log.Info("caught up from a peer's snapshot", "job", r.id, "step", plan.Target, "from", name)
		return nil
	}
	if len(errs) == 0 {
		errs = append(errs, errors.New("no member in step with the reference to copy from"))
	}
	return fmt.Errorf("sync of epoch %d: cannot reach step %d (weights %s of %s) from step %d: %w", epoch, plan.Target, short(plan.RefHash), plan.Ref, w.Done(), errors.Join(errs...))
}

// short is a hash as logs and errors show it.
func short(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

// runnerCatchUp is the job runner's own worker as a catchUpper.
type runnerCatchUp struct{ r *jobRunner }

func (c runnerCatchUp) Done() int    { return c.r.w.Done }
func (c runnerCatchUp) Hash() string { return c.r.w.WeightsHash() }
func (c runnerCatchUp) Grad(ctx context.Context, peer string, step int) error {
	return c.r.catchUpGrad(ctx, peer, step)
}
func (c runnerCatchUp) Snapshot(ctx context.Context, peer string) error {
	return c.r.catchUpSnapshot(ctx, peer)
}

// peerObject asks peer (a member of this epoch, syncing) to put its
// reduced gradient of step (op job-grad) or its snapshot (job-snapshot)
// into its store as an object, fetches that object and returns its bytes.
func (r *jobRunner) peerObject(ctx context.Context, peer, op string, step int) ([]byte, error) {
	resp, err := r.n.callControl(ctx, peer, r.n.memberAddr(peer), controlRequest{Op: op,
		JobObject: &jobObjectRequest{Job: r.id, Step: step, Epoch: r.progress().Epoch}})
	if err != nil {
		return nil, err
	}
	if resp.Object == nil {
		return nil, fmt.Errorf("%s answered %s without an object", peer, op)
	}
	if err := r.n.ensureObject(ctx, resp.Object.Hash, resp.Object.Size, peer); err != nil {
		return nil, err
	}
	return r.readObject(resp.Object.Hash)
}

// catchUpGrad fetches peer's reduced gradient of step and applies it.
func (r *jobRunner) catchUpGrad(ctx context.Context, peer string, step int) error {
	b, err := r.peerObject(ctx, peer, opJobGrad, step)
	if err != nil {
		return err
	}
	gstep, grads, err := decodeGrads(b, r.w.NumTrainable())
	if err != nil {
		return err
	}
	if gstep != step {
		return fmt.Errorf("%s sent the gradient of step %d, want %d", peer, gstep, step)
	}
	if err := r.w.ApplyReduced(step, grads); err != nil {
		return err
	}
	r.mu.Lock()
	r.prog.GradCatchUps++
	r.mu.Unlock()
	return nil
}

// catchUpSnapshot restores peer's full snapshot.
func (r *jobRunner) catchUpSnapshot(ctx context.Context, peer string) error {
	b, err := r.peerObject(ctx, peer, opJobSnapshot, 0)
	if err != nil {
		return err
	}
	return r.restore(b)
}

// snapshot and restore are the worker's, or in DiLoCo mode the outer
// loop's (the state of the last outer step).
func (r *jobRunner) snapshot() ([]byte, error) {
	if r.dl != nil {
		return r.dl.Snapshot()
	}
	return r.w.Snapshot()
}
func (r *jobRunner) restore(b []byte) error {
	var err error
	if r.dl != nil {
		err = r.dl.Restore(b)
	} else {
		err = r.w.Restore(b)
	}
	if err == nil {
		r.mu.Lock()
		r.prog.Restores++
		r.mu.Unlock()
	}
	return err
}

// The reduced-gradient object: "BRDG" | step u64 | n u32 | n float32, all
// little-endian.
func encodeGrads(step int, g []float32) []byte {
	b := make([]byte, 16+4*len(g))
	copy(b, "BRDG")
	binary.LittleEndian.PutUint64(b[4:], uint64(step))
	binary.LittleEndian.PutUint32(b[12:], uint32(len(g)))
	for i, v := range g {
		binary.LittleEndian.PutUint32(b[16+4*i:], math.Float32bits(v))
	}
	return b
}
func decodeGrads(b []byte, n int) (int, []float32, error) {
	if len(b) < 16 || string(b[:4]) != "BRDG" {
		return 0, nil, errors.New("node: not a reduced-gradient object")
	}
	step := binary.LittleEndian.Uint64(b[4:])
	if step > coordinator.MaxJobSteps || int(binary.LittleEndian.Uint32(b[12:])) != n || len(b) != 16+4*n {
		return 0, nil, fmt.Errorf("node: reduced-gradient object of %d bytes for step %d does not hold %d values", len(b), step, n)
	}
	g := make([]float32, n)
	for i := range g {
		g[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[16+4*i:]))
	}
	return int(step), g, nil
}

// awaitNewEpoch asks the leader for a fresh epoch (if membership does not
// bring one first) and waits until it is committed.
func (r *jobRunner) awaitNewEpoch(epoch uint64) {
	asked := false
	deadline := time.Now().Add(renewAfter)
	for r.ctx.Err() == nil {
		st, changed := r.n.coord.Watch()
		if st.Epoch.ID != epoch {
			return
		}
		if j, ok := st.Job(r.id); !ok || j.State != coordinator.JobRunning {
			return
		}
		if !asked && time.Now().After(deadline) {
			r.n.renewEpoch(r.ctx, epoch)
			asked = true
		}
		select {
		case <-r.ctx.Done():
		case <-changed:
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// maxEpochFailures is how many epochs in a row may end in an error on a
// node without any step getting done before the node fails the job.
const maxEpochFailures = 8

// renewAfter is how long a worker whose ring broke waits for membership to
// produce a new epoch before it asks the leader for one (the ring may have
// broken with everyone alive).
const renewAfter = 1500 * time.Millisecond

// epochRing makes epoch e's ring, with the job's wire type, and connects
// it: every member's streams are up when it returns. n.ringMu is held.
func (r *jobRunner) epochRing(ctx context.Context, e coordinator.Epoch) (*allreduce.Ring, error) {
	var members []allreduce.Member
	st := r.n.coord.State()
	for _, name := range e.Members {
		m, ok := st.Member(name)
		if !ok {
			return nil, fmt.Errorf("epoch %d member %s is unknown", e.ID, name)
		}
		members = append(members, allreduce.Member{ID: transportPeer(name), Addr: m.Addr})
	}
	rcfg := allreduce.DefaultConfig()
	if r.spec.Wire != "" {
		dt, err := allreduce.ParseDtype(r.spec.Wire)
		if err != nil {
			return nil, err
		}
		rcfg.Dtype = dt
	}
	ring, err := allreduce.NewRing(rcfg, r.n.tr, members)
	if err != nil {
		return nil, err
	}
	if err := ring.Connect(ctx); err != nil {
		ring.Close()
		return nil, err
	}
	return ring, nil
}

// ringReducer adapts an allreduce.Ring to train.Reducer.
type ringReducer struct{ r *allreduce.Ring }

func (rr ringReducer) Start(ctx context.Context, step uint64) train.ReduceOp {
	return rr.r.Start(ctx, step)
}

func (rr ringReducer) AllReduce(ctx context.Context, step uint64, buf []float32) error {
	return rr.r.AllReduce(ctx, step, buf)
}
