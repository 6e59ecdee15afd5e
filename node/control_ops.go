package node

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/braidml/braid/coordinator"
	"github.com/braidml/braid/node/blobstore"
)

// controlOp is one operation of the control protocol, declared in one
// place: who may send it (its role, checked against the committed state by
// authorizeControl), what its request must hold (check, by
// decodeControlRequest, before anything else looks at it), what it needs
// beyond the role (authorize), and how this node answers it (serve, by
// handleControl). There is no switch over operations anywhere else.
type controlOp struct {
	role      controlRole
	check     func(req controlRequest) error                                                      // nil: nothing beyond JSON
	authorize func(n *Node, st coordinator.State, req controlRequest) error                       // nil: the role is enough
	serve     func(n *Node, ctx context.Context, req controlRequest, resp *controlResponse) error // errors are sent back naming this node
}

// controlOps are the control protocol's operations by name.
var controlOps = map[string]controlOp{
	opBenchAllreduce: {role: roleMember, check: checkBench, authorize: authorizeBench, serve: (*Node).serveBench},
	opApply:          {role: roleMember, check: checkApply, authorize: authorizeApplyOp, serve: (*Node).serveApply},
	opInventory:      {role: roleMember, check: checkInventory, serve: (*Node).serveInventory},
	opFetch:          {role: roleMember, check: checkFetch, serve: (*Node).serveFetch},
	opRenewEpoch:     {role: roleEpochMember, check: checkRenew, serve: (*Node).serveRenewEpoch},
	opJobSync:        {role: roleEpochMember, check: checkJobSync, serve: (*Node).serveJobSync},
	opJobGrad:        {role: roleEpochMember, check: checkJobObject, serve: (*Node).serveJobGrad},
	opJobSnapshot:    {role: roleEpochMember, check: checkJobObject, serve: (*Node).serveJobSnapshot},
	// Progress and hashes, no data: the API node of a job status asks.
	opJobProgress: {role: roleMember, check: checkJobObject, serve: (*Node).serveJobProgress},
	opJobHistory:  {role: roleMember, check: checkJobObject, serve: (*Node).serveJobHistory},
	// An operator's force-leave, forwarded by the API node that took it
	// (with the API's token) to the leader (lifecycle.go).
	opForceLeave: {role: roleMember, check: checkForceLeave, serve: (*Node).serveForceLeave},
}

// The shapes of the requests.

func checkBench(req controlRequest) error {
	if req.Bench == nil {
		return errors.New("node: control request bench-allreduce without its bench field")
	}
	return req.Bench.validate()
}

func checkApply(req controlRequest) error {
	cmd, err := coordinator.DecodeCommand(req.Apply)
	if err != nil {
		return err
	}
	if !forwardable[cmd.Type()] {
		return fmt.Errorf("node: control request: %s is not applied on a peer's behalf", cmd.Type())
	}
	return nil
}

func checkInventory(req controlRequest) error {
	if req.Inventory == nil || len(req.Inventory.Hashes) > coordinator.MaxDatasetShards+1 {
		return errors.New("node: control request inventory without hashes, or with too many")
	}
	return nil
}

func checkFetch(req controlRequest) error {
	if req.Fetch == nil || len(req.Fetch.Hashes) == 0 || len(req.Fetch.Hashes) > 64 || len(req.Fetch.From) == 0 || len(req.Fetch.From) > 64 {
		return errors.New("node: control request fetch needs 1..64 hashes and sources")
	}
	for _, h := range req.Fetch.Hashes {
		if !blobstore.ValidHash(h) {
			return fmt.Errorf("node: control request fetch: bad hash %q", truncate(h, 70))
		}
	}
	return nil
}

func checkRenew(req controlRequest) error {
	if req.Renew == nil {
		return errors.New("node: control request renew-epoch without its epoch")
	}
	return nil
}

func checkJobSync(req controlRequest) error {
	if req.JobSync == nil || req.JobSync.Job == "" {
		return errors.New("node: control request job-sync without a job")
	}
	return nil
}

func checkJobObject(req controlRequest) error {
	if req.JobObject == nil || req.JobObject.Job == "" || req.JobObject.Step < 0 {
		return fmt.Errorf("node: control request %s without a job", req.Op)
	}
	// The ID names files under the data directory (job-history): only
	// one the state would accept, never a path.
	if err := coordinator.ValidJobID(req.JobObject.Job); err != nil {
		return fmt.Errorf("node: control request %s: %v", req.Op, err)
	}
	return nil
}

// What some operations need beyond their sender's role.

// authorizeBench: a benchmark ring has a bounded hop timeout and never
// runs beside a job's ring.
func authorizeBench(n *Node, st coordinator.State, req controlRequest) error {
	if t := req.Bench.Plan.HopTimeout; t > maxBenchHopTimeout {
		return fmt.Errorf("refused a benchmark from %s: hop timeout %s, at most %s", req.Peer, t, maxBenchHopTimeout)
	}
	if j, ok := st.RunningJob(); ok {
		return fmt.Errorf("refused a benchmark from %s: job %s is running, and a benchmark ring would slow its ring down; run it when the job has ended", req.Peer, j.ID)
	}
	return nil
}

// authorizeApplyOp: each forwarded command's own rule (authorizeApply).
func authorizeApplyOp(n *Node, st coordinator.State, req controlRequest) error {
	cmd, err := coordinator.DecodeCommand(req.Apply)
	if err != nil {
		return err
	}
	if err := authorizeApply(st, req.Peer, cmd); err != nil {
		n.controlRefused.Add(1)
		return err
	}
	return nil
}

// The answers.

func (n *Node) serveBench(ctx context.Context, req controlRequest, resp *controlResponse) error {
	rows, err := n.runBench(ctx, *req.Bench, nil)
	if err != nil {
		resp.Error = err.Error() // runBench's errors name this node already
		return nil
	}
	resp.Bench = &benchReply{Rows: rows}
	return nil
}

func (n *Node) serveApply(ctx context.Context, req controlRequest, resp *controlResponse) error {
	cmd, _ := coordinator.DecodeCommand(req.Apply) // checked by checkApply
	err := n.coord.Apply(ctx, cmd)
	resp.NotLeader = errors.Is(err, coordinator.ErrNotLeader)
	return err
}

func (n *Node) serveInventory(_ context.Context, req controlRequest, resp *controlResponse) error {
	inv := n.inventory(*req.Inventory)
	resp.Inventory = &inv
	return nil
}

func (n *Node) serveFetch(ctx context.Context, req controlRequest, _ *controlResponse) error {
	for _, h := range req.Fetch.Hashes {
		if err := n.ensureObject(ctx, h, blobstore.SizeUnknown, req.Fetch.From...); err != nil {
			return err
		}
	}
	return nil
}

func (n *Node) serveRenewEpoch(ctx context.Context, req controlRequest, _ *controlResponse) error {
	return n.renewEpoch(ctx, req.Renew.Epoch)
}

// serveJobSync answers with this worker's status as it entered the asked
// epoch; not ready while it does not run the job (yet) or has not entered
// that epoch.
func (n *Node) serveJobSync(_ context.Context, req controlRequest, resp *controlResponse) error {
	resp.JobSync = &syncStatus{}
	if r := n.currentRunner(req.JobSync.Job); r != nil {
		r.mu.Lock()
		if s, ok := r.frozen[req.JobSync.Epoch]; ok {
			resp.JobSync = &s
		}
		r.mu.Unlock()
	}
	return nil
}

// serveJobProgress answers with this worker's progress, or its last one
// after the job ended here; with Step, the weights hash it had after that
// step.
func (n *Node) serveJobProgress(_ context.Context, req controlRequest, resp *controlResponse) error {
	r := n.currentRunner(req.JobObject.Job)
	if r == nil {
		n.jobMu.Lock()
		p, ok := n.finished[req.JobObject.Job]
		n.jobMu.Unlock()
		if !ok {
			return fmt.Errorf("not running job %s", req.JobObject.Job)
		}
		resp.JobProgress = &p
		return nil
	}
	p := r.progress()
	if step := req.JobObject.Step; step > 0 {
		r.mu.Lock()
		p.WeightsHash = r.hashes[step]
		r.mu.Unlock()
	}
	resp.JobProgress = &p
	return nil
}

// serveJobGrad puts the reduced gradient of the asked step, which this
// worker kept, into the store as an object for the asker to fetch.
func (n *Node) serveJobGrad(_ context.Context, req controlRequest, resp *controlResponse) error {
	r, err := n.syncingRunner(req)
	if err != nil {
		return err
	}
	step, grads, ok := r.w.LastReduced()
	if !ok || step != req.JobObject.Step {
		return fmt.Errorf("no reduced gradient of step %d kept", req.JobObject.Step)
	}
	return n.serveRunnerObject(r, req, encodeGrads(step, grads), resp)
}

// serveJobSnapshot puts this worker's snapshot into the store as an object
// for the asker to fetch.
func (n *Node) serveJobSnapshot(_ context.Context, req controlRequest, resp *controlResponse) error {
	r, err := n.syncingRunner(req)
	if err != nil {
		return err
	}
	b, err := r.snapshot()
	if err != nil {
		return err
	}
	return n.serveRunnerObject(r, req, b, resp)
}

// syncingRunner is the runner of req's job, if the asker is syncing in the
// same epoch with it. The worker is not safe for concurrent use: it is read
// while its own runner may be inside Step. That is sound only while the
// asker is a member of the runner's epoch and syncing: the runner's step
// then waits in the all-reduce for the asker and changes nothing (weights,
// moments, the kept gradient) until it joins.
func (n *Node) syncingRunner(req controlRequest) (*jobRunner, error) {
	r := n.currentRunner(req.JobObject.Job)
	if r == nil {
		return nil, fmt.Errorf("not running job %s", req.JobObject.Job)
	}
	r.mu.Lock()
	same := r.prog.Epoch == req.JobObject.Epoch && slices.Contains(r.prog.Members, req.Peer)
	r.mu.Unlock()
	if !same {
		return nil, fmt.Errorf("not in epoch %d with the asker", req.JobObject.Epoch)
	}
	return r, nil
}

// serveRunnerObject stores b, read from r's worker, as an object and
// answers with it, unless r moved to a newer epoch while b was read (and
// changed the worker: the bytes may be torn).
func (n *Node) serveRunnerObject(r *jobRunner, req controlRequest, b []byte, resp *controlResponse) error {
	if !r.inEpoch(req.JobObject.Epoch) {
		return fmt.Errorf("moved past epoch %d while reading", req.JobObject.Epoch)
	}
	h, size, err := n.store.Put(bytesReader(b))
	if err != nil {
		return err
	}
	resp.Object = &objectRef{Hash: h, Size: size}
	return nil
}
