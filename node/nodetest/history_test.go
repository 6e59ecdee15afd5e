package nodetest

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/braidml/braid/coordinator"
	"github.com/braidml/braid/node"
	"github.com/braidml/braid/node/client"
)

// historyClient is a client of name's HTTP API.
func historyClient(t *testing.T, c *Cluster, name string) *client.Client {
	t.Helper()
	n := c.Node(name)
	token, err := node.ReadTokenFile(n.APITokenFile())
	if err != nil {
		t.Fatal(err)
	}
	cl, err := client.New(client.Config{URL: "http://" + n.APIAddr(), Token: token})
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// GET /v1/jobs/{id}/history serves every step of a finished two-node job:
// its loss as the worker computed it, the held-out loss of exactly the
// evaluated steps, the learning rate of the schedule, and growing bytes
// on the wire; an unknown job is a 404; after the whole cluster restarts
// the same history is served from the nodes' data directories.
func TestJobHistoryServedAndKept(t *testing.T) {
	c := NewCluster(t, 2, WithAPI())
	c.WaitEpoch(func(e coordinator.Epoch) bool { return len(e.Members) == 2 })
	const steps, evalEvery, warmup, lr = 12, 4, 2, 3e-3
	id := submit(t, c, "n1", node.JobRequest{Steps: steps, GlobalBatch: 6, MicroBatch: 3, LR: lr, Warmup: warmup, EvalEvery: evalEvery})
	js := waitJob(c, "n1", id, final)
	if js.State != coordinator.JobCompleted {
		t.Fatalf("job %s: %s", js.State, js.Error)
	}
	ctx := context.Background()
	h, err := historyClient(t, c, "n2").JobHistory(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if h.Job != id || h.Node == "" || len(h.Points) != steps || h.Thinned != 0 {
		t.Fatalf("history of %s from %q: %d points (%d thinned), want %d", h.Job, h.Node, len(h.Points), h.Thinned, steps)
	}
	if h.BaseHeldoutLoss == nil || *h.BaseHeldoutLoss <= 0 {
		t.Errorf("base held-out loss %v, want the base model's", h.BaseHeldoutLoss)
	}
	losses := c.Node(h.Node).JobLosses(id)
	var prevWire int64
	for i, p := range h.Points {
		if p.Step != i+1 {
			t.Fatalf("point %d is step %d", i, p.Step)
		}
		if p.Loss != losses[i] || !(p.Loss > 0) {
			t.Errorf("step %d: loss %v, the worker's %v", p.Step, p.Loss, losses[i])
		}
		if evaluated := p.Step%evalEvery == 0; evaluated != (p.HeldoutLoss != nil) || evaluated && !(*p.HeldoutLoss > 0) {
			t.Errorf("step %d: held-out loss %v (evaluated every %d steps)", p.Step, p.HeldoutLoss, evalEvery)
		}
		if !(p.LR > 0 && p.LR <= lr*(1+1e-9)) || p.Step == warmup && math.Abs(p.LR-lr) > 1e-12 {
			t.Errorf("step %d: lr %v, peak %v reached at step %d", p.Step, p.LR, lr, warmup)
		}
		if p.TokensPerSec <= 0 || p.WireBytes <= prevWire || p.Time.IsZero() {
			t.Errorf("step %d: %v tokens/s, %d bytes sent (before: %d), time %v", p.Step, p.TokensPerSec, p.WireBytes, prevWire, p.Time)
		}
		prevWire = p.WireBytes
	}
	if last := h.Points[steps-1]; last.HeldoutLoss == nil || *last.HeldoutLoss != js.HeldoutLoss {
		t.Errorf("last held-out loss %v, the job's %v", last.HeldoutLoss, js.HeldoutLoss)
	}
	if _, err := historyClient(t, c, "n1").JobHistory(ctx, "job-nope"); !isNotFound(err) {
		t.Errorf("history of an unknown job: %v, want a 404", err)
	}
	// Both workers wrote theirs into the job's directory.
	for _, name := range []string{"n1", "n2"} {
		b, err := os.ReadFile(filepath.Join(c.DataDir(name), "jobs", id, "history.json"))
		var saved node.JobHistory
		if err == nil {
			err = json.Unmarshal(b, &saved)
		}
		if err != nil || len(saved.Points) != steps || saved.Node != name {
			t.Errorf("%s's saved history: %d points by %q, %v", name, len(saved.Points), saved.Node, err)
		}
	}
	for _, name := range []string{"n1", "n2"} {
		c.Kill(name)
	}
	for _, name := range []string{"n1", "n2"} {
		c.Start(name)
	}
	c.WaitLeader()
	after, err := historyClient(t, c, "n1").JobHistory(ctx, id)
	if err != nil || len(after.Points) != steps || after.Points[steps-1].Loss != h.Points[steps-1].Loss ||
		after.Points[steps-1].HeldoutLoss == nil || *after.Points[steps-1].HeldoutLoss != *h.Points[steps-1].HeldoutLoss {
		t.Fatalf("history after a restart: %d points, %v", len(after.Points), err)
	}
}

func isNotFound(err error) bool {
	e, ok := errors.AsType[*client.APIError](err)
	return ok && e.StatusCode == http.StatusNotFound
}

// A worker's history reaches its disk while the job runs, at every
// checkpoint step, not only when its part ends: a kill -9 loses at most
// one checkpoint interval of points.
func TestJobHistoryOnDiskAtCheckpoints(t *testing.T) {
	c := NewCluster(t, 2)
	c.WaitEpoch(func(e coordinator.Epoch) bool { return len(e.Members) == 2 })
	const every = 3
	id := submit(t, c, "n1", node.JobRequest{Steps: 1_000_000, GlobalBatch: 4, MicroBatch: 2, CheckpointEvery: every})
	waitJob(c, "n1", id, func(js node.JobStatus) bool { return len(js.Checkpoints) >= 2 })
	var saved node.JobHistory
	c.waitFor("n2's history on disk at a checkpoint step", func() bool {
		b, err := os.ReadFile(filepath.Join(c.DataDir("n2"), "jobs", id, "history.json"))
		return err == nil && json.Unmarshal(b, &saved) == nil && len(saved.Points) >= every
	})
	if n := len(saved.Points); n%every != 0 || saved.Points[n-1].Step != n {
		t.Errorf("n2's history on disk, the job running: %d points up to step %d, want a multiple of %d", n, saved.Points[n-1].Step, every)
	}
	if js := waitJob(c, "n1", id, func(node.JobStatus) bool { return true }); js.State.Final() {
		t.Fatalf("the job ended (%s) before the check: the file may be the end's", js.State)
	}
}
