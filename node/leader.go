package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/braidml/braid/coordinator"
)

// Requests that need the leader: applied here when this node leads, else
// forwarded to it, waiting through elections (bounded).

// applyAnywhere applies cmd on the leader: here when this node leads, else
// forwarded to the leader. While the cluster has no leader, or the leader
// this node knew has stepped down or cannot be reached, it waits for the
// next one and tries again, for at most leaderWait (and never past ctx): an
// election is a normal event in a cluster whose members come and go, and a
// request should not fail because it arrived during one. It retries only
// what was certainly not applied (the leader said it is not the leader, or
// the request never left this node), so a command is never applied twice.
func (n *Node) applyAnywhere(ctx context.Context, cmd coordinator.Command) error {
	ctx, cancel := context.WithTimeout(ctx, leaderWait)
	defer cancel()
	b, err := coordinator.EncodeCommand(cmd)
	if err != nil {
		return err
	}
	backoff := 20 * time.Millisecond
	for {
		err := n.coord.Apply(ctx, cmd)
		var nl *coordinator.NotLeaderError
		if !errors.As(err, &nl) {
			return err
		}
		if nl.Leader != "" {
			_, err = n.callControl(ctx, nl.Leader, nl.Addr, controlRequest{Op: opApply, Apply: b})
			if err == nil || !errors.Is(err, coordinator.ErrNotLeader) && !errors.Is(err, errNotSent) {
				return err
			}
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			if nl.Leader == "" {
				return fmt.Errorf("node: %w; no leader was elected within %v (is a majority of the servers up?)", err, leaderWait)
			}
			return fmt.Errorf("node: no leader applied the command within %v: %w", leaderWait, err)
		case <-t.C:
		}
		backoff = min(2*backoff, 500*time.Millisecond)
	}
}

// leaderWait bounds how long a request that needs the leader waits for one
// (an election takes one to a few seconds).
const leaderWait = 15 * time.Second

// forwardable lists the commands a peer may ask the leader to apply; the
// rest (members, epochs) are the leader's own decisions.
var forwardable = map[coordinator.CommandType]bool{
	coordinator.TypeRegisterDataset:  true,
	coordinator.TypeDeleteDataset:    true,
	coordinator.TypeSubmitJob:        true,
	coordinator.TypeSetJobState:      true,
	coordinator.TypeRecordCheckpoint: true,
	coordinator.TypeRecordJobEpoch:   true,
	coordinator.TypeRevokeCert:       true,
	coordinator.TypeDeleteJob:        true,
	coordinator.TypeResumeJob:        true,
}

// awaitState waits until cond holds for this node's copy of the replicated
// state, or ctx ends.
func (n *Node) awaitState(ctx context.Context, cond func(coordinator.State) bool) error {
	for {
		st, changed := n.coord.Watch()
		if cond(st) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		}
	}
}
