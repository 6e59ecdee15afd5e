package node

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/braidml/braid/coordinator"
)

// Readiness (GET /v1/ready): whether this node can serve the cluster's
// state and take part in it now, for a load balancer or a Kubernetes
// readiness probe. Liveness is /v1/health, which answers while the process
// runs; a node that is alive may still be unready while it joins, while
// the cluster has no leader, or while it catches up with the log.

// ErrNotReady is wrapped by Ready's errors.
var ErrNotReady = errors.New("node: not ready")

// Ready returns nil when the node has joined the cluster (it is in the Raft
// configuration), knows a leader, and its state is current: it has
// applied every entry it knows committed and, on a follower, heard from
// the leader within readyContactTimeout heartbeats. Otherwise it returns
// an error wrapping ErrNotReady that says which and why. Safe for
// concurrent use.
func (n *Node) Ready() error {
	select {
	case <-n.stop:
		return fmt.Errorf("%w: shutting down", ErrNotReady)
	default:
	}
	return readiness(n.cfg.Name, n.coord.Status(), n.coord.IsLeader(), n.coord.LastContact(), time.Now(),
		readyContactTimeout*n.cfg.Coordinator.HeartbeatTimeout)
}

// readyContactTimeout is how many heartbeat timeouts a follower may go
// without hearing from its leader and still call its state current: a
// leader is replaced after about one, so three say that this node is cut
// off, not that an election is under way.
const readyContactTimeout = 3

// readiness decides Ready from a coordinator's status.
func readiness(self string, cs coordinator.Status, leader bool, lastContact, now time.Time, maxGap time.Duration) error {
	joined := slices.ContainsFunc(cs.Servers, func(s coordinator.ServerStatus) bool { return s.Name == self })
	switch {
	case !joined:
		return fmt.Errorf("%w: not joined: %s is not in the cluster's Raft configuration yet (it joins once gossip reaches a member and the leader adds it)", ErrNotReady, self)
	case cs.Leader == "":
		return fmt.Errorf("%w: no leader known (an election is under way, or too few voters are reachable for a quorum)", ErrNotReady)
	case cs.AppliedIndex < cs.CommitIndex:
		return fmt.Errorf("%w: catching up: applied %d of %d committed log entries", ErrNotReady, cs.AppliedIndex, cs.CommitIndex)
	case !leader && (lastContact.IsZero() || now.Sub(lastContact) > maxGap):
		since := "never"
		if !lastContact.IsZero() {
			since = now.Sub(lastContact).Round(time.Millisecond).String() + " ago"
		}
		return fmt.Errorf("%w: state not current: last contact from leader %s %s (more than %s)", ErrNotReady, cs.Leader, since, maxGap)
	}
	return nil
}
