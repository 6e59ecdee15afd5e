package node

import (
	"fmt"
	"slices"
	"time"

	"github.com/braidml/braid/coordinator"
	"github.com/braidml/braid/transport"
)

// Who may send each control operation. A peer's name is its verified
// certificate's (controlRequest.Peer): a valid certificate proves only that
// the CA issued it, not that its holder belongs to the cluster, so every
// operation also needs a role in the committed state. A certificate of a
// node that was never admitted, or that has left, gets nothing.

// controlRole is what a peer must be to send an operation.
type controlRole int

const (
	// roleMember: a member of the cluster in the committed state, alive or
	// suspected failed but not left (an API node forwarding a user's
	// request, a holder asking about objects).
	roleMember controlRole = iota
	// roleEpochMember: a member of the committed epoch, the ring of the
	// running job, or a member syncing in a newer epoch this node has not
	// applied yet (job state, gradients and weights go only to them).
	roleEpochMember
)

func (r controlRole) String() string {
	return [...]string{"a member of the cluster", "a member of the job's ring (the committed epoch)"}[r]
}

// maxBenchHopTimeout bounds the hop timeout a peer may ask a benchmark ring for.
const maxBenchHopTimeout = time.Minute

// authorizeFrom names req's sender as its certificate does (never as the
// request says) and checks it may send req.
func (n *Node) authorizeFrom(req *controlRequest, peer transport.PeerID) error {
	req.Peer = string(peer)
	return n.authorizeControl(*req)
}

// authorizeControl checks that req's sender may send it, and the limits of
// what it asks; the error names the peer and what it lacks.
func (n *Node) authorizeControl(req controlRequest) error {
	op, ok := controlOps[req.Op]
	if !ok {
		return fmt.Errorf("%s: operation %q has no declared sender", req.Peer, truncate(req.Op, 40))
	}
	st := n.coord.State()
	if m, ok := st.Member(req.Peer); !ok || m.State == coordinator.MemberLeft {
		n.controlRefused.Add(1)
		return fmt.Errorf("refused %s from %s: not a member of this cluster (a valid certificate is not enough; a node that left must join again)", req.Op, req.Peer)
	}
	if op.role == roleEpochMember && !st.Epoch.Has(req.Peer) && !(req.epoch() > st.Epoch.ID) {
		n.controlRefused.Add(1)
		return fmt.Errorf("refused %s from %s: it must come from %s", req.Op, req.Peer, op.role)
	}
	if op.authorize != nil {
		return op.authorize(n, st, req)
	}
	return nil
}

// epoch is the epoch a job request says its sender is in (0 if none),
// read from the field of its own operation only.
func (req controlRequest) epoch() uint64 {
	switch {
	case req.Op == opJobSync && req.JobSync != nil:
		return req.JobSync.Epoch
	case (req.Op == opJobGrad || req.Op == opJobSnapshot || req.Op == opJobProgress) && req.JobObject != nil:
		return req.JobObject.Epoch
	case req.Op == opRenewEpoch && req.Renew != nil:
		return req.Renew.Epoch
	}
	return 0
}

// authorizeApply checks the commands a member may have applied on its
// behalf beyond being a member: a checkpoint, or the epoch that served a
// job's steps, is recorded by a member of the job's ring; a local
// (federated) dataset is deleted only by the node that registered it; a
// job is deleted or resumed only by the node that submitted it, cancelled
// only by it or a member whose local data it trains on, and completed only
// by a member of the ring (the leader's own API applies them without
// forwarding).
func authorizeApply(st coordinator.State, peer string, cmd coordinator.Command) error {
	switch c := cmd.(type) {
	case coordinator.RecordCheckpoint:
		if !st.Epoch.Has(peer) {
			return fmt.Errorf("refused %s from %s: checkpoints are recorded by a member of the job's ring", cmd.Type(), peer)
		}
	case coordinator.RecordJobEpoch:
		if !st.Epoch.Has(peer) || !slices.Contains(c.Epoch.Members, peer) {
			return fmt.Errorf("refused %s from %s: an epoch's service is recorded by a member of that epoch's ring", cmd.Type(), peer)
		}
		// The committed epoch with its own ring (the FSM checks it again):
		// no future epoch, no invented members (validated: no duplicates).
		if c.Epoch.Epoch != st.Epoch.ID || len(c.Epoch.Members) != len(st.Epoch.Members) || slices.ContainsFunc(c.Epoch.Members, func(m string) bool { return !st.Epoch.Has(m) }) {
			return fmt.Errorf("refused %s from %s: epoch %d with members %v is not the committed epoch %d", cmd.Type(), peer, c.Epoch.Epoch, c.Epoch.Members, st.Epoch.ID)
		}
	case coordinator.DeleteJob:
		if j, ok := st.Job(c.ID); ok && j.SubmittedBy != peer {
			return fmt.Errorf("refused %s of %s from %s: a job is deleted through %s, which submitted it, or the leader's own API", cmd.Type(), c.ID, peer, j.SubmittedBy)
		}
	case coordinator.ResumeJob:
		if j, ok := st.Job(c.ID); ok && j.SubmittedBy != peer {
			return fmt.Errorf("refused %s of %s from %s: a job is resumed through %s, which submitted it, or the leader's own API", cmd.Type(), c.ID, peer, j.SubmittedBy)
		}
	case coordinator.SetJobState:
		j, ok := st.Job(c.ID)
		if !ok {
			break
		}
		switch c.State {
		case coordinator.JobCancelled:
			// The submitter, or a unit whose local data the job trains on
			// (it may withdraw its data), never a bystander.
			if peer != j.SubmittedBy && !holdsJobData(st, j, peer) {
				return fmt.Errorf("refused %s %s of %s from %s: a job is cancelled through %s, which submitted it, a member holding its local data, or the leader's own API",
					cmd.Type(), c.State, c.ID, peer, j.SubmittedBy)
			}
		case coordinator.JobCompleted:
			if !st.Epoch.Has(peer) {
				return fmt.Errorf("refused %s %s of %s from %s: a job is completed by a member of its ring", cmd.Type(), c.State, c.ID, peer)
			}
		case coordinator.JobFailed:
			// Any member's worker may fail (a fetch, a device, a checkpoint).
		default:
			return fmt.Errorf("refused %s %s of %s from %s: only the leader moves a job to %s", cmd.Type(), c.State, c.ID, peer, c.State)
		}
	case coordinator.DeleteDataset:
		if d, ok := st.Dataset(c.ID); ok && d.Local && d.Source != peer {
			return fmt.Errorf("refused %s of %s from %s: a local dataset is deleted only by %s, which holds it", cmd.Type(), d.Name, peer, d.Source)
		}
	}
	return nil
}

// holdsJobData reports whether peer registered one of the local
// (federated) datasets job j trains on.
func holdsJobData(st coordinator.State, j coordinator.Job, peer string) bool {
	ids := j.Spec.Datasets
	if len(ids) == 0 {
		ids = []string{j.Spec.Dataset}
	}
	for _, id := range ids {
		if d, ok := st.Dataset(id); ok && d.Local && d.Source == peer {
			return true
		}
	}
	return false
}
