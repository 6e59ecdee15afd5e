package nodetest

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/braidml/braid/coordinator"
	"github.com/braidml/braid/node"
	"github.com/braidml/braid/transport"
)

// control sends one raw control request from an endpoint of the network
// named as (its certificate's name, in memnet) to node to, and returns the
// error the node answers with ("" if none).
func control(t *testing.T, c *Cluster, as, to string, req map[string]any) string {
	t.Helper()
	tr, err := c.Net.Node(transport.PeerID(as))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := tr.Dial(ctx, transport.PeerID(to), "mem:"+to, transport.ProtoControl, transport.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	b, _ := json.Marshal(req)
	if err := transport.WriteFrame(s, b); err != nil {
		t.Fatal(err)
	}
	b, err = transport.ReadFrame(s, nil, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	var resp struct {
		Error string `json:"error"`
	}
	json.Unmarshal(b, &resp)
	return resp.Error
}

// A peer whose certificate the CA issued but who was never admitted to the
// cluster gets nothing from the control protocol: it cannot have a
// dataset deleted or a job failed through a node, nor read a job's
// progress; the state is unchanged and the refusals are counted.
func TestControlRefusesNonMembers(t *testing.T) {
	c := NewCluster(t, 2)
	c.WaitEpoch(func(e coordinator.Epoch) bool { return len(e.Members) == 2 })
	dir, _ := prepareDataset(t, "legal", 20)
	ds, err := c.PushDataset("n1", dir, node.DatasetOptions{Local: true})
	if err != nil {
		t.Fatal(err)
	}
	del, err := coordinator.EncodeCommand(coordinator.DeleteDataset{ID: ds.ID})
	if err != nil {
		t.Fatal(err)
	}
	for _, req := range []map[string]any{
		{"op": "apply", "apply": del},
		{"op": "job-progress", "job_object": map[string]any{"job": "job-x"}},
		{"op": "job-history", "job_object": map[string]any{"job": "job-x"}},
		{"op": "inventory", "inventory": map[string]any{"dataset": "legal", "hashes": []string{}}},
	} {
		got := control(t, c, "mallory", "n1", req)
		if !strings.Contains(got, "not a member") || !strings.Contains(got, "mallory") {
			t.Errorf("%v from a non-member: %q, want a refusal naming mallory", req["op"], got)
		}
	}
	if _, ok := c.Node("n1").Coordinator().State().Dataset(ds.ID); !ok {
		t.Fatal("the non-member had the dataset deleted")
	}
	// A member may not delete another node's local (federated) dataset
	// either: only n1, which registered it.
	c.Kill("n2")
	got := control(t, c, "n2", "n1", map[string]any{"op": "apply", "apply": del})
	if !strings.Contains(got, "local dataset is deleted only by n1") {
		t.Errorf("n2 deleting n1's local dataset: %q", got)
	}
	if _, ok := c.Node("n1").Coordinator().State().Dataset(ds.ID); !ok {
		t.Fatal("n2 had n1's local dataset deleted")
	}
}

// A member may not delete or resume a job another node submitted: only
// the submitter forwards them (or the leader's own API applies them).
func TestControlRefusesOthersJobDeleteResume(t *testing.T) {
	c := NewCluster(t, 3)
	c.WaitEpoch(func(e coordinator.Epoch) bool { return len(e.Members) == 3 })
	leader, others := c.Followers("n1", "n2", "n3")
	submitter, other := others[0], others[1]
	id := submit(t, c, submitter, node.JobRequest{Steps: 1_000_000, GlobalBatch: 4, MicroBatch: 2})
	waitJob(c, submitter, id, func(js node.JobStatus) bool { return js.State == coordinator.JobRunning })
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	if err := c.Node(submitter).CancelJob(ctx, id); err != nil {
		t.Fatal(err)
	}
	waitJob(c, submitter, id, func(js node.JobStatus) bool { return js.State == coordinator.JobCancelled })
	c.Kill(other) // free its name on memnet; it is still a member
	for _, cmd := range []coordinator.Command{coordinator.ResumeJob{ID: id}, coordinator.DeleteJob{ID: id, Force: true},
		coordinator.SetJobState{ID: id, State: coordinator.JobRunning}} {
		b, err := coordinator.EncodeCommand(cmd)
		if err != nil {
			t.Fatal(err)
		}
		got := control(t, c, other, leader, map[string]any{"op": "apply", "apply": b})
		if !strings.Contains(got, "refused") {
			t.Errorf("%s of %s's job from %s: %q, want a refusal", cmd.Type(), submitter, other, got)
		}
	}
	if j, ok := c.Node(leader).Coordinator().State().Job(id); !ok || j.State != coordinator.JobCancelled {
		t.Fatalf("job after another member's resume and delete: %+v %v, want it cancelled", j, ok)
	}
}

// A member may not cancel a job another node submitted, on data it does
// not hold: the submitter (or a holder of the job's local data, or the
// leader's own API) cancels it; a bystander's cancel is refused and the
// job runs on.
func TestControlRefusesABystandersCancel(t *testing.T) {
	c := NewCluster(t, 3)
	c.WaitEpoch(func(e coordinator.Epoch) bool { return len(e.Members) == 3 })
	leader, others := c.Followers("n1", "n2", "n3")
	submitter, other := others[0], others[1]
	id := submit(t, c, submitter, node.JobRequest{Steps: 1_000_000, GlobalBatch: 4, MicroBatch: 2})
	waitJob(c, submitter, id, func(js node.JobStatus) bool { return js.State == coordinator.JobRunning })
	c.Kill(other) // free its name on memnet; it is still a member
	b, err := coordinator.EncodeCommand(coordinator.SetJobState{ID: id, State: coordinator.JobCancelled})
	if err != nil {
		t.Fatal(err)
	}
	got := control(t, c, other, leader, map[string]any{"op": "apply", "apply": b})
	if !strings.Contains(got, "refused") || !strings.Contains(got, "cancelled through "+submitter) {
		t.Errorf("cancel of %s's job from %s: %q, want a refusal naming the submitter", submitter, other, got)
	}
	if j, ok := c.Node(leader).Coordinator().State().Job(id); !ok || j.State != coordinator.JobRunning {
		t.Fatalf("job after a bystander's cancel: %+v %v, want it running", j.State, ok)
	}
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	if err := c.Node(submitter).CancelJob(ctx, id); err != nil {
		t.Fatalf("the submitter's cancel: %v", err)
	}
	waitJob(c, submitter, id, func(js node.JobStatus) bool { return js.State == coordinator.JobCancelled })
}

// A job object's ID is a job ID, never a path: a member asking for the
// history of job "../../planted" is refused, and the history file planted
// there, outside the data directory, is not read.
func TestControlRefusesJobPaths(t *testing.T) {
	c := NewCluster(t, 2)
	c.WaitEpoch(func(e coordinator.Epoch) bool { return len(e.Members) == 2 })
	planted := filepath.Join(filepath.Dir(c.DataDir("n1")), "planted")
	if err := os.MkdirAll(planted, 0o700); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(node.JobHistory{Job: "job-x", Node: "n1", Points: []node.HistoryPoint{}})
	if err := os.WriteFile(filepath.Join(planted, "history.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	c.Kill("n2")
	for _, op := range []string{"job-history", "job-progress"} {
		got := control(t, c, "n2", "n1", map[string]any{"op": op, "job_object": map[string]any{"job": "../../planted"}})
		if !strings.Contains(got, "job id") {
			t.Errorf("%s of job ../../planted: %q, want it refused as a job id", op, got)
		}
	}
}

// A ring member's answer to job-history is taken as its own: one that
// claims to be another node's history, with steps far beyond the job's,
// neither wins nor appears under the other node's name.
func TestJobHistoryFromPeersIsTheirs(t *testing.T) {
	c := NewCluster(t, 3)
	c.WaitEpoch(func(e coordinator.Epoch) bool { return len(e.Members) == 3 })
	const steps = 6
	id := submit(t, c, "n1", node.JobRequest{Steps: steps, GlobalBatch: 6, MicroBatch: 2})
	if js := waitJob(c, "n1", id, final); js.State != coordinator.JobCompleted {
		t.Fatalf("job %s", js.State)
	}
	// n3 is replaced by a liar that keeps its certificate's name.
	c.Kill("n3")
	tr, err := c.Net.Node("n3")
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	l, err := tr.Listen(transport.ProtoControl)
	if err != nil {
		t.Fatal(err)
	}
	loss := 0.001
	lie, _ := json.Marshal(map[string]any{"job_history": node.JobHistory{Job: id, Node: "n1", Points: []node.HistoryPoint{
		{Step: steps + 1, Loss: loss, HeldoutLoss: &loss}, {Step: 1_000_000, Loss: loss, HeldoutLoss: &loss}}}})
	asked := make(chan struct{}, 16)
	go func() {
		for {
			s, err := l.Accept(context.Background())
			if err != nil {
				return
			}
			go func() {
				defer s.Close()
				if _, err := transport.ReadFrame(s, nil, 1<<20); err != nil {
					return
				}
				asked <- struct{}{}
				transport.WriteFrame(s, lie)
			}()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	h, err := c.Node("n1").JobHistory(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-asked:
	default:
		t.Fatal("the liar (a member of the job's ring) was not asked")
	}
	if len(h.Points) == 0 || h.Points[len(h.Points)-1].Step != steps || h.Node == "n3" {
		t.Fatalf("history by %q with %d points, last %+v: want a worker's %d steps, not the liar's", h.Node, len(h.Points), h.Points[len(h.Points)-1:], steps)
	}
	for _, p := range h.Points {
		if p.Step > steps || p.Loss == loss {
			t.Fatalf("the liar's point %+v is in %s's history", p, h.Node)
		}
	}
}
