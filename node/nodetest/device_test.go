package nodetest

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/braidml/braid/coordinator"
	"github.com/braidml/braid/node"
)

// registerDataset adds the "legal" dataset on name once for several jobs.
func registerDataset(t *testing.T, c *Cluster, name string) {
	t.Helper()
	dir, _ := prepareDataset(t, "legal", 40)
	if _, err := c.PushDataset(name, dir, node.DatasetOptions{}); err != nil {
		t.Fatal(err)
	}
}

func submitJob(t *testing.T, c *Cluster, name string, req node.JobRequest) string {
	t.Helper()
	req.Dataset = "legal"
	if req.Base.Config == "" {
		req.Base = pushBase(t, c, name)
	}
	j, err := c.Node(name).SubmitJob(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	return j.ID
}

// workersOf lists the nodes that ran the job, sorted, and checks that each
// one's last epoch held only nodes in want.
func workersOf(t *testing.T, js node.JobStatus, want []string) []string {
	t.Helper()
	var out []string
	for _, w := range js.Workers {
		out = append(out, w.Node)
		for _, m := range w.Members {
			if !slices.Contains(want, m) {
				t.Errorf("job %s (%s): %s trained in a ring with %s (%v)", js.ID, js.Spec.Device, w.Node, m, w.Members)
			}
		}
		if w.Device != coordinator.DeviceCPU {
			t.Errorf("%s computed on %q; a node only labelled cuda computes on the CPU", w.Node, w.Device)
		}
	}
	slices.Sort(out)
	return out
}

// A job runs on the members of its own device kind only: in a cluster of
// two cuda and two cpu nodes, a --device cuda job trains on the cuda nodes
// (they compute on the CPU here, being only labelled cuda) and a cpu job on
// the cpu nodes; every node shows its device in the status.
func TestJobsRunOnTheirDeviceOnly(t *testing.T) {
	c := NewCluster(t, 4, WithDeviceLabels("cpu", "cuda", "cpu", "cuda"))
	c.WaitEpoch(func(e coordinator.Epoch) bool { return len(e.Members) == 4 })
	want := map[string]string{"n1": "cpu", "n2": "cuda", "n3": "cpu", "n4": "cuda"}
	c.waitFor("every node's device in every status and in the committed members", func() bool {
		for _, name := range c.Live() {
			n := c.Node(name)
			st := n.Status()
			if len(st.Members) != 4 {
				return false
			}
			for _, m := range st.Members {
				if m.Device != want[m.Name] || m.GPU != nil {
					return false
				}
			}
			if !slices.Equal(n.Coordinator().State().AliveOn(coordinator.DeviceCUDA), []string{"n2", "n4"}) {
				return false
			}
		}
		return true
	})
	registerDataset(t, c, "n1")
	req := node.JobRequest{Steps: 12, GlobalBatch: 8, MicroBatch: 4, LR: 3e-3, Warmup: 2, HashEvery: 4, CheckpointEvery: 12}

	// Submitted to a cpu node, the cuda job runs on n2 and n4.
	req.Device = "cuda"
	gpuJob := submitJob(t, c, "n1", req)
	js := waitJob(c, "n1", gpuJob, final)
	if js.State != coordinator.JobCompleted || js.Spec.Device != "cuda" {
		t.Fatalf("cuda job %s (%s), spec device %q", js.State, js.Error, js.Spec.Device)
	}
	if got := workersOf(t, js, []string{"n2", "n4"}); !slices.Equal(got, []string{"n2", "n4"}) {
		t.Errorf("the cuda job ran on %v, want [n2 n4]", got)
	}
	for _, h := range js.Checkpoints[len(js.Checkpoints)-1].Holders {
		if want[h] != "cuda" {
			t.Errorf("checkpoint held by %s, not a member of the cuda ring", h)
		}
	}

	// The cpu job (the default device) runs on n1 and n3.
	req.Device = ""
	cpuJob := submitJob(t, c, "n2", req)
	js = waitJob(c, "n2", cpuJob, final)
	if js.State != coordinator.JobCompleted || js.Spec.Device != "cpu" {
		t.Fatalf("cpu job %s (%s), spec device %q", js.State, js.Error, js.Spec.Device)
	}
	if got := workersOf(t, js, []string{"n1", "n3"}); !slices.Equal(got, []string{"n1", "n3"}) {
		t.Errorf("the cpu job ran on %v, want [n1 n3]", got)
	}
	// With no job running, the epoch holds every member again.
	c.WaitEpoch(func(e coordinator.Epoch) bool { return len(e.Members) == 4 })

	if _, err := c.Node("n1").SubmitJob(context.Background(), node.JobRequest{Dataset: "legal", Steps: 1, GlobalBatch: 1, Device: "tpu"}); err == nil || !strings.Contains(err.Error(), `"tpu"`) {
		t.Errorf("a tpu job: %v, want an error naming the device", err)
	}
}

// A cuda job in a cluster without a cuda member waits, saying why, and does
// not hold up a cpu job submitted after it; a cuda node that joins then
// runs it alone.
func TestJobWaitsForAMemberOnItsDevice(t *testing.T) {
	c := NewCluster(t, 2)
	c.WaitEpoch(func(e coordinator.Epoch) bool { return len(e.Members) == 2 })
	registerDataset(t, c, "n1")
	req := node.JobRequest{Steps: 8, GlobalBatch: 4, MicroBatch: 2, HashEvery: 4, Device: "cuda"}
	gpuJob := submitJob(t, c, "n1", req)
	req.Device = "cpu"
	cpuJob := submitJob(t, c, "n2", req)
	if js := waitJob(c, "n1", cpuJob, final); js.State != coordinator.JobCompleted {
		t.Fatalf("cpu job %s (%s)", js.State, js.Error)
	}
	js, err := c.Node("n2").JobStatus(context.Background(), gpuJob)
	if err != nil {
		t.Fatal(err)
	}
	if js.State != coordinator.JobSubmitted || !strings.Contains(js.Waiting, "cuda") {
		t.Fatalf("cuda job without a cuda member: %s, waiting %q", js.State, js.Waiting)
	}

	c.SetDeviceLabel("n3", "cuda")
	c.Start("n3")
	js = waitJob(c, "n1", gpuJob, final)
	if js.State != coordinator.JobCompleted || js.Waiting != "" {
		t.Fatalf("cuda job %s (%s), waiting %q", js.State, js.Error, js.Waiting)
	}
	if got := workersOf(t, js, []string{"n3"}); !slices.Equal(got, []string{"n3"}) {
		t.Errorf("the cuda job ran on %v, want [n3]", got)
	}
}
