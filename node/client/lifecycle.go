package client

import (
	"context"
	"net/http"
	"time"

	"github.com/braidml/braid/coordinator"
	"github.com/braidml/braid/node"
)

// The lifecycle operations (node/lifecycle.go): removing datasets and
// jobs, resuming jobs, the members, leaving and force-leave.

// DeleteDataset is DELETE /v1/datasets/{name}: the dataset removed (name
// or ID). A dataset a job trains on is refused (409). Bounded by
// Timeouts.CancelJob.
func (c *Client) DeleteDataset(ctx context.Context, name string) (coordinator.Dataset, error) {
	return call[coordinator.Dataset](ctx, c, c.timeouts.CancelJob, http.MethodDelete, nil, "v1", "datasets", name)
}

// DeleteJob is DELETE /v1/jobs/{id}: the job removed. A running job is
// refused (409) unless force is set. Bounded by Timeouts.CancelJob.
func (c *Client) DeleteJob(ctx context.Context, id string, force bool) (coordinator.Job, error) {
	u := c.endpoint("v1", "jobs", id)
	if force {
		u += "?force=1"
	}
	var j coordinator.Job
	return j, c.callJSON(ctx, c.timeouts.CancelJob, http.MethodDelete, u, nil, &j)
}

// ResumeJob is POST /v1/jobs/{id}/resume: the failed or cancelled job,
// submitted again under its ID to go on from its last checkpoint.
// Bounded by Timeouts.CancelJob.
func (c *Client) ResumeJob(ctx context.Context, id string) (coordinator.Job, error) {
	return call[coordinator.Job](ctx, c, c.timeouts.CancelJob, http.MethodPost, struct{}{}, "v1", "jobs", id, "resume")
}

// Members is GET /v1/members: the members as the node sees them. Bounded
// by Timeouts.Read.
func (c *Client) Members(ctx context.Context) ([]node.MemberInfo, error) {
	return call[[]node.MemberInfo](ctx, c, c.timeouts.Read, http.MethodGet, nil, "v1", "members")
}

// Leave is POST /v1/leave: the node answers, then leaves the cluster
// gracefully and stops. Bounded by Timeouts.Read.
func (c *Client) Leave(ctx context.Context) error {
	_, err := call[map[string]string](ctx, c, c.timeouts.Read, http.MethodPost, struct{}{}, "v1", "leave")
	return err
}

// ForceLeave is POST /v1/members/{name}/force-leave: the member is
// removed from the Raft configuration and the member list. A member that
// is alive is refused (409) unless force is set. Bounded by
// Timeouts.CancelJob plus the leader's wait (40 s in all).
func (c *Client) ForceLeave(ctx context.Context, name string, force bool) error {
	u := c.endpoint("v1", "members", name, "force-leave")
	if force {
		u += "?force=1"
	}
	var out map[string]string
	return c.callJSON(ctx, max(c.timeouts.CancelJob, forceLeaveTimeout), http.MethodPost, u, struct{}{}, &out)
}

// forceLeaveTimeout covers the leader's wait for a removed member to
// leave the epoch and the Raft configuration (node: 30 s).
const forceLeaveTimeout = 40 * time.Second
