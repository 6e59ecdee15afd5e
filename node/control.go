package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/braidml/braid/coordinator"
	"github.com/braidml/braid/transport"
)

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// The control protocol (transport.ProtoControl) carries small requests
// between nodes, one per stream:
//
//	dialer → acceptor: one frame, a JSON controlRequest
//	acceptor → dialer: one frame, a JSON controlResponse
//
// A stream closed before any request is an admission check (see admit): the
// dialer only proves that it can reach this node with valid credentials.
// Both messages are bounded (maxControlFrame) and decoded strictly:
// unknown operations and malformed JSON are answered with an error, never
// acted on.

// maxControlFrame bounds a control request or response.
const maxControlFrame = 1 << 20

// Control operations.
const (
	opBenchAllreduce = "bench-allreduce"
	opApply          = "apply"     // apply a coordinator command (to the leader)
	opInventory      = "inventory" // which of these objects do you hold?
	opFetch          = "fetch"     // copy these objects from these members
	opRenewEpoch     = "renew-epoch"
	opJobSync        = "job-sync"     // your status as you entered this epoch
	opJobGrad        = "job-grad"     // your reduced gradient of this step, as an object
	opJobSnapshot    = "job-snapshot" // your worker's snapshot, as an object
	opJobProgress    = "job-progress" // your progress (and weights hash after a step)
	opJobHistory     = "job-history"  // your worker's history of a job (history.go)
	opForceLeave     = "force-leave"  // remove this gone member (to the leader; lifecycle.go)
)

// controlRequest is one control call. Exactly the field of Op is set.
type controlRequest struct {
	Op         string             `json:"op"`
	Bench      *benchRequest      `json:"bench,omitempty"`
	Apply      []byte             `json:"apply,omitempty"` // an encoded coordinator command
	Inventory  *inventoryRequest  `json:"inventory,omitempty"`
	Fetch      *fetchRequest      `json:"fetch,omitempty"`
	Renew      *renewRequest      `json:"renew,omitempty"`
	JobSync    *jobSyncRequest    `json:"job_sync,omitempty"`
	JobObject  *jobObjectRequest  `json:"job_object,omitempty"`
	ForceLeave *forceLeaveRequest `json:"force_leave,omitempty"`

	// Peer is the asker as its certificate names it, set by the server
	// (never read from the request).
	Peer string `json:"-"`
}

// fetchRequest asks a member to copy objects from the listed members.
type fetchRequest struct {
	Hashes []string `json:"hashes"`
	From   []string `json:"from"`
}

// renewRequest asks the leader to renew an epoch whose ring broke.
type renewRequest struct {
	Epoch uint64 `json:"epoch"`
}

// jobSyncRequest asks for a worker's status as it entered Epoch.
type jobSyncRequest struct {
	Job   string `json:"job"`
	Epoch uint64 `json:"epoch"`
}

// jobObjectRequest names a job and a step (for job-grad, job-progress),
// and for job-grad and job-snapshot the epoch the asker is syncing in.
type jobObjectRequest struct {
	Job   string `json:"job"`
	Step  int    `json:"step,omitempty"`
	Epoch uint64 `json:"epoch,omitempty"`
}

// objectRef is an object in the answering node's store.
type objectRef struct {
	Hash string `json:"hash"`
	Size int64  `json:"size"`
}

// controlResponse answers a controlRequest: Error, or the result of Op.
type controlResponse struct {
	Error string `json:"error,omitempty"`
	// NotLeader: an opApply was refused because the node is not (or no
	// longer) the leader; nothing was applied and the caller may retry.
	NotLeader   bool            `json:"not_leader,omitempty"`
	Bench       *benchReply     `json:"bench,omitempty"`
	Inventory   *inventoryReply `json:"inventory,omitempty"`
	JobSync     *syncStatus     `json:"job_sync,omitempty"`
	Object      *objectRef      `json:"object,omitempty"`
	JobProgress *JobProgress    `json:"job_progress,omitempty"`
	JobHistory  *JobHistory     `json:"job_history,omitempty"`
}

// decodeControlRequest parses and validates a request frame.
func decodeControlRequest(b []byte) (controlRequest, error) {
	var req controlRequest
	if err := json.Unmarshal(b, &req); err != nil {
		return req, fmt.Errorf("node: control request: %w", err)
	}
	op, ok := controlOps[req.Op]
	if !ok {
		return req, fmt.Errorf("node: control request: unknown operation %q", truncate(req.Op, 40))
	}
	if op.check != nil {
		if err := op.check(req); err != nil {
			return req, err
		}
	}
	return req, nil
}

// serveControl accepts control streams and answers each in its own
// goroutine; a stream closed without a request is an admission check.
func (n *Node) serveControl(l transport.Listener) {
	defer n.wg.Done()
	ctx, cancel := n.stopContext()
	defer cancel()
	for {
		s, err := l.Accept(ctx)
		if err != nil {
			return
		}
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			defer s.Close()
			n.handleControl(ctx, s)
		}()
	}
}

// controlReadTimeout bounds the wait for a request on an accepted stream.
const controlReadTimeout = 10 * time.Second

func (n *Node) handleControl(ctx context.Context, s transport.Stream) {
	s.SetReadDeadline(time.Now().Add(controlReadTimeout))
	b, err := transport.ReadFrame(s, nil, maxControlFrame)
	if err == io.EOF {
		return // admission check
	}
	var resp controlResponse
	if err != nil {
		resp.Error = fmt.Sprintf("node %s: reading the control request from %s: %v", n.cfg.Name, s.Peer(), err)
	} else if req, err := decodeControlRequest(b); err != nil {
		resp.Error = fmt.Sprintf("node %s: %v", n.cfg.Name, err)
	} else if err := n.authorizeFrom(&req, s.Peer()); err != nil {
		n.log.Warn("control request refused", "peer", req.Peer, "op", req.Op, "err", err)
		resp.Error = fmt.Sprintf("node %s: %v", n.cfg.Name, err)
	} else {
		// Close the stream when the node stops, so a long operation's
		// caller hears of it.
		stop := context.AfterFunc(ctx, func() { s.Close() })
		defer stop()
		if err := controlOps[req.Op].serve(n, ctx, req, &resp); err != nil {
			resp.Error = fmt.Sprintf("node %s: %v", n.cfg.Name, err)
		}
	}
	out, _ := json.Marshal(resp)
	s.SetWriteDeadline(time.Now().Add(controlReadTimeout))
	transport.WriteFrame(s, out)
}

// callControl sends req to peer at addr and returns its response; it
// returns when ctx ends, closing the stream. A response with Error set is
// returned as an error naming the peer.
func (n *Node) callControl(ctx context.Context, peer, addr string, req controlRequest) (controlResponse, error) {
	var resp controlResponse
	s, err := n.tr.Dial(ctx, transport.PeerID(peer), addr, transport.ProtoControl, transport.DialOptions{})
	if err != nil {
		return resp, fmt.Errorf("node: control %s to %s: %w: %w", req.Op, peer, errNotSent, err)
	}
	defer s.Close()
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()
	b, err := json.Marshal(req)
	if err != nil {
		return resp, err
	}
	s.SetWriteDeadline(time.Now().Add(controlReadTimeout))
	if err := transport.WriteFrame(s, b); err != nil {
		return resp, fmt.Errorf("node: control %s to %s: %w", req.Op, peer, err)
	}
	s.SetWriteDeadline(time.Time{})
	b, err = transport.ReadFrame(s, nil, maxControlFrame)
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return resp, fmt.Errorf("node: control %s to %s: reading the response: %w", req.Op, peer, err)
	}
	if err := json.Unmarshal(b, &resp); err != nil {
		return resp, fmt.Errorf("node: control %s to %s: response: %w", req.Op, peer, err)
	}
	if resp.NotLeader {
		return resp, fmt.Errorf("node: %s failed %s: %s: %w", peer, req.Op, resp.Error, coordinator.ErrNotLeader)
	}
	if resp.Error != "" {
		return resp, fmt.Errorf("node: %s failed %s: %s", peer, req.Op, resp.Error)
	}
	return resp, nil
}

// errNotSent marks a control call that failed before its request left this
// node (the peer could not be reached): retrying it cannot do anything
// twice.
var errNotSent = errors.New("request not sent")
