package nodetest

import (
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/braidml/braid/coordinator"
	"github.com/braidml/braid/kernels/cuda"
	"github.com/braidml/braid/node"
)

// A job on two GPU nodes (two nodes of this process sharing the GPU, each
// with its own device and model, as two processes would) ends every step
// with the loss of the same job on one GPU node (≤ 1e-3 relative), the
// nodes' weights agree, and each worker says it computed on the GPU. It
// skips where there is no GPU.
func TestTwoGPUNodesMatchOneGPUNode(t *testing.T) {
	devs, err := cuda.Devices()
	if err != nil || len(devs) == 0 {
		t.Skipf("no GPU: %v", err)
	}
	const steps = 16
	req := node.JobRequest{Steps: steps, GlobalBatch: 8, MicroBatch: 4, LR: 3e-3, Warmup: 2, HashEvery: 4, Device: coordinator.DeviceCUDA}
	run := func(n int) ([]float64, node.JobStatus) {
		c := NewCluster(t, n, WithGPU(devs[0]))
		c.WaitEpoch(func(e coordinator.Epoch) bool { return len(e.Members) == n })
		id := submit(t, c, "n1", req)
		js := waitJob(c, "n1", id, final)
		if js.State != coordinator.JobCompleted {
			t.Fatalf("%d-node GPU job %s: %s", n, js.State, js.Error)
		}
		var l []float64
		c.waitFor("n1's losses of every step", func() bool {
			l = c.Node("n1").JobLosses(id)
			return len(l) == steps
		})
		for _, w := range js.Workers {
			if !strings.HasPrefix(w.Device, "cuda:") {
				t.Errorf("%s computed on %q, want the GPU", w.Node, w.Device)
			}
			if w.WeightsHash == "" || w.WeightsHash != js.Workers[0].WeightsHash {
				t.Errorf("%s's weights %q differ from %s's %q", w.Node, w.WeightsHash, js.Workers[0].Node, js.Workers[0].WeightsHash)
			}
		}
		return l, js
	}
	one, _ := run(1)
	two, js := run(2)
	if len(js.Workers) != 2 {
		t.Fatalf("the 2-node job had %d workers", len(js.Workers))
	}
	worst := 0.0
	for i := range one {
		d := math.Abs(one[i]-two[i]) / math.Abs(one[i])
		if !(d <= 1e-3) {
			t.Errorf("step %d: loss %.6f on 1 GPU node, %.6f on 2", i, one[i], two[i])
		}
		worst = max(worst, d)
	}
	t.Logf("%d steps: loss %.4f → %.4f on 2 GPU nodes; largest relative difference to 1 node %.1e", steps, two[0], two[steps-1], worst)
}

// A node whose GPU faults mid-job (injected: the step fails with
// cuda.ErrDeviceFault, as an illegal address would) leaves the cluster, and
// the job goes on without it and completes on the others, as after a crash.
func TestGPUFaultNodeLeavesAndTheJobGoesOn(t *testing.T) {
	c := NewCluster(t, 3, WithDeviceFault("n2", func(step int) bool { return step == 6 }))
	c.WaitEpoch(func(e coordinator.Epoch) bool { return len(e.Members) == 3 })
	id := submit(t, c, "n1", node.JobRequest{Steps: 20, GlobalBatch: 12, MicroBatch: 4, HashEvery: 5})
	js := waitJob(c, "n1", id, final)
	if js.State != coordinator.JobCompleted {
		t.Fatalf("job %s after n2's GPU fault: %s", js.State, js.Error)
	}
	for _, w := range js.Workers {
		if w.Node == "n2" && w.Step >= js.Spec.Steps {
			t.Errorf("n2 trained to the end after its GPU faulted")
		}
		if w.Node != "n2" && (w.Step != js.Spec.Steps || slices.Contains(w.Members, "n2")) {
			t.Errorf("%s ended at step %d with members %v", w.Node, w.Step, w.Members)
		}
	}
	// n2 has shut itself down; the survivors' epoch no longer has it.
	c.Kill("n2") // only forgets it here: it is already closed
	c.WaitEpoch(func(e coordinator.Epoch) bool { return !e.Has("n2") })
}
